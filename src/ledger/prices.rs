//! The cloud price catalog and local cost settings: the embedded `prices.toml`, merged with a
//! user's file, validated once into a [`PriceTable`]; and the arithmetic of a cloud equivalent.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::LedgerError;

const BUILT_IN: &str = include_str!("prices.toml");

/// A tokenizer a provider publishes, used to re-count tokens the way it bills them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudTokenizer {
    O200k,
    Cl100k,
}

/// Prices per 1M tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub input: f64,
    pub cached_input: f64,
    pub output: f64,
    /// Recorded for reference; hearth cannot know whether a client would have paid to write a
    /// cache, so it never charges it.
    pub cache_write: Option<f64>,
}

/// Prices that apply to a whole request whose prompt is longer than `above` tokens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub above: u64,
    pub input: f64,
    pub cached_input: f64,
    pub output: f64,
    #[serde(default)]
    pub cache_write: Option<f64>,
}

impl Tier {
    pub fn rates(&self) -> Rates {
        Rates { input: self.input, cached_input: self.cached_input, output: self.output, cache_write: self.cache_write }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudPrice {
    pub id: String,
    pub provider: String,
    pub currency: String,
    pub input: f64,
    pub cached_input: f64,
    pub output: f64,
    #[serde(default)]
    pub cache_write: Option<f64>,
    #[serde(default)]
    pub tiers: Vec<Tier>,
    #[serde(default)]
    pub tokenizer: Option<CloudTokenizer>,
    /// When the price was taken, and where from.
    pub taken: String,
    pub source: String,
    /// Published scores on coding benchmarks, for `hearth bench --tasks`' cost per solved problem.
    #[serde(default)]
    pub scores: Vec<Score>,
}

/// A benchmark score a provider published for its model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Score {
    /// `humaneval`, as `--tasks` names it.
    pub benchmark: String,
    /// The fraction of problems solved at the first try (0.872 for 87.2%).
    pub pass_at_1: f64,
    pub source: String,
    /// When it was published.
    pub published: String,
}

/// Token counts as a provider would bill them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Billed {
    pub prompt: u64,
    pub cached: u64,
    pub completion: u64,
}

impl CloudPrice {
    /// Its published score on `benchmark`, if the table has one.
    pub fn score(&self, benchmark: &str) -> Option<&Score> {
        self.scores.iter().find(|s| s.benchmark == benchmark)
    }

    pub fn base_rates(&self) -> Rates {
        Rates { input: self.input, cached_input: self.cached_input, output: self.output, cache_write: self.cache_write }
    }

    /// The rates that apply to a request with this many prompt tokens.
    pub fn rates_for(&self, prompt_tokens: u64) -> Rates {
        self.tiers.iter().filter(|t| prompt_tokens > t.above).max_by_key(|t| t.above).map_or(self.base_rates(), Tier::rates)
    }

    /// (prompt − cached) × input + cached × cached-input + completion × output, in `currency`.
    pub fn cost(&self, b: Billed) -> f64 {
        let r = self.rates_for(b.prompt);
        let cached = b.cached.min(b.prompt);
        ((b.prompt - cached) as f64 * r.input + cached as f64 * r.cached_input + b.completion as f64 * r.output) / 1e6
    }
}

/// What running here costs: electricity and hardware amortization.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSettings {
    pub currency: String,
    pub electricity_per_kwh: f64,
    #[serde(default)]
    pub watts_per_core: Option<f64>,
    pub tdp_watts: f64,
    pub tdp_cores: u32,
    pub hardware_price: f64,
    pub hardware_lifetime_hours: f64,
}

impl LocalSettings {
    /// Watts one busy core draws, for the CPU-time estimate.
    pub fn watts_per_core(&self) -> f64 {
        self.watts_per_core.unwrap_or(self.tdp_watts / self.tdp_cores.max(1) as f64)
    }

    /// Electricity and hardware cost of `joules` over `busy_s` seconds, in `currency`.
    pub fn cost(&self, joules: f64, busy_s: f64) -> (f64, f64) {
        let electricity = joules / 3.6e6 * self.electricity_per_kwh;
        let hardware = self.hardware_price / self.hardware_lifetime_hours * busy_s / 3600.0;
        (electricity, hardware)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurrencySettings {
    pub display: String,
    /// Value of one unit of each currency in USD.
    pub rates: BTreeMap<String, f64>,
}

/// The validated catalog and settings.
#[derive(Debug, Clone)]
pub struct PriceTable {
    pub version: String,
    pub models: Vec<CloudPrice>,
    /// Ids of the comparators shown, in order.
    pub compare: Vec<String>,
    pub currency: CurrencySettings,
    pub local: LocalSettings,
}

/// A price file as written: every part optional, so a user's file may hold only what it changes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    version: Option<String>,
    compare: Option<Vec<String>>,
    currency: Option<RawCurrency>,
    local: Option<toml::Table>,
    #[serde(default)]
    model: Vec<CloudPrice>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCurrency {
    display: Option<String>,
    #[serde(default)]
    rates: BTreeMap<String, f64>,
}

impl PriceTable {
    /// The built-in table.
    pub fn built_in() -> Self {
        Self::build(&[(Path::new("built-in prices.toml"), BUILT_IN)]).expect("the built-in price table is valid")
    }

    /// The built-in table with a user's file laid over it.
    pub fn with_file(path: &Path) -> Result<Self, LedgerError> {
        let text = std::fs::read_to_string(path).map_err(|e| LedgerError::prices(path, format!("cannot read it: {e}")))?;
        Self::build(&[(Path::new("built-in prices.toml"), BUILT_IN), (path, &text)])
    }

    fn build(files: &[(&Path, &str)]) -> Result<Self, LedgerError> {
        let mut version = Vec::new();
        let mut models: Vec<CloudPrice> = Vec::new();
        let mut compare = None;
        let mut display = None;
        let mut rates = BTreeMap::new();
        let mut local = toml::Table::new();
        for &(path, text) in files {
            let raw: RawFile = toml::from_str(text).map_err(|e| LedgerError::prices(path, e.to_string()))?;
            let mut seen = Vec::new();
            for m in raw.model {
                if seen.contains(&m.id) {
                    return Err(LedgerError::prices(path, format!("model `{}` is listed twice", m.id)));
                }
                seen.push(m.id.clone());
                match models.iter_mut().find(|x| x.id == m.id) {
                    Some(x) => *x = m,
                    None => models.push(m),
                }
            }
            version.extend(raw.version);
            compare = raw.compare.or(compare);
            if let Some(c) = raw.currency {
                display = c.display.or(display);
                rates.extend(c.rates);
            }
            local.extend(raw.local.unwrap_or_default());
        }
        let last = files.last().map_or(Path::new(""), |f| f.0);
        let local: LocalSettings = toml::Value::Table(local).try_into().map_err(|e| LedgerError::prices(last, format!("[local]: {e}")))?;
        let table = PriceTable {
            version: version.join("+"),
            compare: compare.unwrap_or_else(|| models.iter().map(|m| m.id.clone()).collect()),
            models,
            currency: CurrencySettings { display: display.unwrap_or_else(|| "USD".into()), rates },
            local,
        };
        table.check().map_err(|m| LedgerError::prices(last, m))?;
        Ok(table)
    }

    fn check(&self) -> Result<(), String> {
        let bad = |x: f64| !x.is_finite() || x < 0.0;
        for m in &self.models {
            let mut all = vec![m.base_rates()];
            all.extend(m.tiers.iter().map(Tier::rates));
            for r in all {
                if [r.input, r.cached_input, r.output, r.cache_write.unwrap_or(0.0)].into_iter().any(bad) {
                    return Err(format!("model `{}`: prices must be finite and not negative", m.id));
                }
            }
            self.rate(&m.currency).map_err(|e| format!("model `{}`: {e}", m.id))?;
            if let Some(sc) = m.scores.iter().find(|sc| !(sc.pass_at_1 > 0.0 && sc.pass_at_1 <= 1.0)) {
                return Err(format!("model `{}`: score `{}` must have a pass_at_1 in (0, 1], got {}", m.id, sc.benchmark, sc.pass_at_1));
            }
        }
        for id in &self.compare {
            if self.model(id).is_none() {
                return Err(format!("`compare` names `{id}`, which no [[model]] entry defines"));
            }
        }
        let l = &self.local;
        if [l.electricity_per_kwh, l.tdp_watts, l.hardware_price, l.watts_per_core.unwrap_or(0.0)].into_iter().any(bad) {
            return Err("[local]: prices and watts must be finite and not negative".into());
        }
        if !(l.hardware_lifetime_hours > 0.0 && l.hardware_lifetime_hours.is_finite()) {
            return Err("[local]: `hardware_lifetime_hours` must be positive".into());
        }
        self.rate(&l.currency).map_err(|e| format!("[local]: {e}"))?;
        self.rate(&self.currency.display).map_err(|e| format!("[currency]: {e}"))?;
        if self.currency.rates.values().any(|&r| bad(r) || r == 0.0) {
            return Err("[currency]: rates must be positive".into());
        }
        Ok(())
    }

    /// The same table showing `ids`, in that order.
    pub fn comparing(mut self, ids: &[String]) -> Result<Self, LedgerError> {
        if let Some(id) = ids.iter().find(|id| self.model(id).is_none()) {
            let known: Vec<&str> = self.models.iter().map(|m| m.id.as_str()).collect();
            return Err(LedgerError::Query(format!("--compare: no price for `{id}`; known: {}", known.join(", "))));
        }
        self.compare = ids.to_vec();
        Ok(self)
    }

    pub fn model(&self, id: &str) -> Option<&CloudPrice> {
        self.models.iter().find(|m| m.id == id)
    }

    /// Value of one unit of `currency` in USD.
    fn rate(&self, currency: &str) -> Result<f64, String> {
        self.currency.rates.get(currency).copied().ok_or_else(|| format!("currency `{currency}` has no rate in [currency.rates]"))
    }

    /// How many display-currency units one unit of `currency` is worth.
    pub fn to_display(&self, currency: &str) -> f64 {
        match (self.rate(currency), self.rate(&self.currency.display)) {
            (Ok(from), Ok(to)) => from / to,
            _ => f64::NAN,
        }
    }
}
