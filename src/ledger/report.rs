//! Ledger summaries in the display currency, and their terminal forms (table, CSV, JSON); also
//! reading `--since` values such as `7d`, `12h` or `2026-11-01`.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::prices::PriceTable;
use super::record::Totals;
use super::store::RawGroup;
use super::LedgerError;

/// Sums of one group, every amount in the display currency.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub key: String,
    #[serde(flatten)]
    pub totals: Totals,
    pub local: f64,
    /// Cloud equivalent per comparator, in `compare` order.
    pub cloud: Vec<ModelAmount>,
    /// Against the first comparator.
    pub saved: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelAmount {
    pub model: String,
    pub amount: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub currency: String,
    /// Display-currency units per unit of each other currency used.
    pub rates: BTreeMap<String, f64>,
    /// The comparator `saved` is measured against.
    pub vs: Option<String>,
    pub groups: Vec<Group>,
    pub total: Group,
}

impl Summary {
    pub(crate) fn new(p: &PriceTable, groups: Vec<RawGroup>, total: RawGroup) -> Self {
        let mut used: Vec<String> = Vec::new();
        let mut convert = |currency: &str, amount: f64| {
            if currency != p.currency.display && !used.iter().any(|u| u == currency) {
                used.push(currency.to_owned());
            }
            amount * p.to_display(currency)
        };
        let mut group = |g: RawGroup| {
            let local = g.local.iter().map(|(c, a)| convert(c, *a)).sum::<f64>();
            let cloud: Vec<ModelAmount> = p
                .compare
                .iter()
                .map(|id| ModelAmount { model: id.clone(), amount: g.cloud.iter().filter(|(m, _, _)| m == id).map(|(_, c, a)| convert(c, *a)).sum() })
                .collect();
            let saved = cloud.first().map_or(0.0, |c| c.amount - local);
            Group {
                key: g.key,
                totals: g.totals,
                local,
                cloud,
                saved,
            }
        };
        let groups = groups.into_iter().map(&mut group).collect();
        let total = group(RawGroup { key: "total".into(), ..total });
        let rates = used.into_iter().map(|c| (c.clone(), p.to_display(&c))).collect();
        Summary { currency: p.currency.display.clone(), rates, vs: p.compare.first().cloned(), groups, total }
    }

    /// Comparator names, in column order.
    fn comparators(&self) -> Vec<&str> {
        self.total.cloud.iter().map(|c| c.model.as_str()).collect()
    }

    pub fn to_table(&self) -> String {
        let mut head = vec!["group".to_owned(), "requests".into(), "prompt".into(), "cached".into(), "generated".into(), "energy kJ".into(), "local".into()];
        head.extend(self.comparators().iter().map(|m| m.to_string()));
        head.push(format!("saved vs {}", self.vs.as_deref().unwrap_or("-")));
        let cells = |g: &Group| {
            let t = &g.totals;
            let mut c = vec![g.key.clone(), t.requests.to_string(), t.prompt_tokens.to_string(), t.cached_tokens.to_string(), t.generated_tokens.to_string(), format!("{:.2}", t.energy_j / 1e3), money(g.local)];
            c.extend(g.cloud.iter().map(|c| money(c.amount)));
            c.push(money(g.saved));
            c
        };
        let mut lines: Vec<Vec<String>> = vec![head];
        lines.extend(self.groups.iter().map(cells));
        lines.push(cells(&self.total));
        let widths: Vec<usize> = (0..lines[0].len()).map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0)).collect();
        let mut out = String::new();
        for (n, l) in lines.iter().enumerate() {
            if n == lines.len() - 1 {
                let _ = writeln!(out, "{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
            }
            let row: Vec<String> = l.iter().zip(&widths).enumerate().map(|(i, (c, w))| if i == 0 { format!("{c:<w$}") } else { format!("{c:>w$}") }).collect();
            let _ = writeln!(out, "{}", row.join("  ").trim_end());
        }
        let _ = write!(out, "amounts in {}", self.currency);
        for (c, r) in &self.rates {
            let _ = write!(out, "; 1 {c} = {r} {}", self.currency);
        }
        out.push('\n');
        out
    }

    pub fn to_csv(&self) -> String {
        let mut out = String::from("group,requests,prompt_tokens,cached_tokens,generated_tokens,energy_j,busy_s,local");
        for m in self.comparators() {
            let _ = write!(out, ",{m}");
        }
        let _ = writeln!(out, ",saved,currency");
        for g in self.groups.iter().chain([&self.total]) {
            let t = &g.totals;
            let _ = write!(out, "{},{},{},{},{},{:.3},{:.3},{:.8}", g.key, t.requests, t.prompt_tokens, t.cached_tokens, t.generated_tokens, t.energy_j, t.busy_s, g.local);
            for c in &g.cloud {
                let _ = write!(out, ",{:.8}", c.amount);
            }
            let _ = writeln!(out, ",{:.8},{}", g.saved, self.currency);
        }
        out
    }
}

/// Small amounts keep their significant digits.
fn money(x: f64) -> String {
    if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else if x == 0.0 {
        "0".into()
    } else {
        format!("{x:.6}")
    }
}

/// Milliseconds since the epoch of `s`: a span back from `now_ms` (`30m`, `12h`, `7d`, `2w`) or
/// a date (`2026-11-01`, UTC) or RFC 3339 time.
pub fn parse_since(s: &str, now_ms: i64) -> Result<i64, LedgerError> {
    let bad = || LedgerError::Query(format!("`since` must be a span such as 7d, 12h or 30m, a date such as 2026-11-01, or an RFC 3339 time; got `{s}`"));
    let s = s.trim();
    let span = s.chars().last().filter(char::is_ascii_alphabetic).and_then(|u| Some((u, s[..s.len() - 1].parse::<f64>().ok()?)));
    if let Some((unit, n)) = span {
        let secs = match unit {
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86400.0,
            'w' => 7.0 * 86400.0,
            _ => return Err(bad()),
        };
        if !(n.is_finite() && n >= 0.0) {
            return Err(bad());
        }
        return Ok(now_ms - (n * secs * 1e3) as i64);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| bad())?;
    Ok(d.and_hms_opt(0, 0, 0).ok_or_else(bad)?.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_spans_dates_and_times() {
        let now = 1_000_000_000_000;
        assert_eq!(parse_since("7d", now).unwrap(), now - 7 * 86_400_000);
        assert_eq!(parse_since("30m", now).unwrap(), now - 1_800_000);
        assert_eq!(parse_since("2026-11-01", now).unwrap(), 1_793_491_200_000);
        assert_eq!(parse_since("2026-11-01T01:00:00Z", now).unwrap(), 1_793_494_800_000);
        for bad in ["", "7y", "-1d", "yesterday", "2026-13-01"] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }
}
