//! `hearth bench` results as a markdown report, CSV and JSON.

use std::fmt::Write;

use super::MIB;
use super::compare::{Bench, BreakEven};


/// An amount with three significant digits at most, two decimals at least.
fn money(x: f64) -> String {
    if x >= 1.0 || x == 0.0 {
        format!("{x:.2}")
    } else {
        let decimals = (2 - x.log10().floor() as i32).clamp(2, 8) as usize;
        format!("{x:.decimals$}")
    }
}

fn tokens(t: f64) -> String {
    if t >= 1e9 {
        format!("{:.1} B tok", t / 1e9)
    } else {
        format!("{:.0} M tok", t / 1e6)
    }
}

fn break_even(b: &Option<BreakEven>) -> String {
    match b {
        None => "never".into(),
        Some(b) => {
            let life = if b.within_lifetime { "" } else { ", beyond its lifetime" };
            format!("{} · {:.0} h{life}", tokens(b.tokens), b.hours)
        }
    }
}

/// CSV field quoting: quoted when it holds a comma, quote or line break.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

impl Bench {
    fn reference(&self) -> &str {
        self.variants.iter().find(|v| v.reference).map_or("", |v| v.name.as_str())
    }

    pub fn to_markdown(&self) -> String {
        let mut o = String::new();
        let scored = self.variants.first().map_or(0, |v| v.quality.scored_tokens);
        let _ = writeln!(
            o,
            "hearth bench · {} · {} threads · {}\n\nSpeed: llama-bench's pp{} / tg{} shapes, median of {}. Quality: {scored} tokens of `{}` scored in windows of {}, against **{}** (highest bits per weight). Prices: table {} in {}.\n",
            self.cpu, self.threads, self.date, self.pp, self.tg, self.reps, self.corpus, self.ctx, self.reference(), self.price_version, self.currency
        );
        let _ = writeln!(
            o,
            "| variant | type | size MiB | bits/weight | load s | peak RSS MiB | pp{} tok/s | tg{} tok/s | perplexity | KL mean | KL p99 | same top | local {}/1M tok |",
            self.pp, self.tg, self.currency
        );
        let _ = writeln!(o, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for v in &self.variants {
            let q = &v.quality;
            let (kl, p99, top) = if v.reference {
                ("reference".to_string(), "—".to_string(), "—".to_string())
            } else {
                (format!("{:.5}", q.kl_mean), format!("{:.4}", q.kl_p99), format!("{:.1}%", q.same_top * 100.0))
            };
            let _ = writeln!(
                o,
                "| {} | {} | {:.1} | {:.2} | {:.2} | {:.0} | {:.1} | {:.1} | {:.3} | {kl} | {p99} | {top} | {} |",
                v.name,
                v.file_type,
                v.file_bytes as f64 / MIB,
                v.bits_per_weight,
                v.speed.load_s,
                v.speed.peak_rss as f64 / MIB,
                v.speed.pp_tps,
                v.speed.tg_tps,
                q.perplexity,
                money(v.local_per_1m.total)
            );
        }
        let Some(fastest) = (0..self.variants.len()).max_by(|&a, &b| self.variants[a].speed.tg_tps.total_cmp(&self.variants[b].speed.tg_tps)) else {
            return o;
        };
        let fv = &self.variants[fastest];
        let _ = writeln!(
            o,
            "\nLocal cost of 1M generated tokens = electricity ({:.1} W while generating, an estimate from the price table's TDP) + hardware amortization. Against each cloud API's output price, for the fastest variant ({}, local {} {}/1M tok): how many times dearer the cloud is, and the break-even point — generated tokens after which the hardware's price ({} {}) is saved, and the hours of generation that takes (every variant's figures are in the CSV and JSON).\n",
            self.watts,
            fv.name,
            money(fv.local_per_1m.total),
            self.currency,
            money(self.hardware_price),
            self.currency
        );
        let _ = writeln!(o, "| cloud API | output {}/1M tok | cloud ÷ local | break-even |\n|---|--:|--:|--:|", self.currency);
        for c in &self.cloud {
            let _ = writeln!(
                o,
                "| {} | {} | {:.1}× | {} |",
                c.id,
                money(c.output_per_1m),
                c.output_per_1m / fv.local_per_1m.total,
                break_even(&c.break_even[fastest])
            );
        }
        o
    }

    pub fn to_csv(&self) -> String {
        let mut o = String::from(
            "variant,file_type,file_bytes,bits_per_weight,reference,threads,load_s,peak_rss_bytes,pp_tps,tg_tps,perplexity,kl_mean,kl_p99,kl_max,same_top,local_energy_kwh_per_1m,local_electricity_per_1m,local_hardware_per_1m,local_total_per_1m,currency",
        );
        for c in &self.cloud {
            let _ = write!(o, ",{0}_output_per_1m,{0}_break_even_tokens", field(&c.id));
        }
        o.push('\n');
        for (i, v) in self.variants.iter().enumerate() {
            let (s, q, l) = (&v.speed, &v.quality, &v.local_per_1m);
            let _ = write!(
                o,
                "{},{},{},{:.4},{},{},{:.4},{},{:.3},{:.3},{:.5},{:.6},{:.6},{:.6},{:.5},{:.6},{:.8},{:.8},{:.8},{}",
                field(&v.name),
                v.file_type,
                v.file_bytes,
                v.bits_per_weight,
                v.reference,
                self.threads,
                s.load_s,
                s.peak_rss,
                s.pp_tps,
                s.tg_tps,
                q.perplexity,
                q.kl_mean,
                q.kl_p99,
                q.kl_max,
                q.same_top,
                l.energy_kwh,
                l.electricity,
                l.hardware,
                l.total,
                self.currency
            );
            for c in &self.cloud {
                let be = c.break_even[i].map_or(String::new(), |b| format!("{:.0}", b.tokens));
                let _ = write!(o, ",{:.6},{be}", c.output_per_1m);
            }
            o.push('\n');
        }
        o
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("bench results serialize")
    }
}
