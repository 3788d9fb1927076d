//! `hearth bench`: variants of one model side by side — file size, load time, peak memory, speed,
//! quality against the highest-precision variant, and local cost per 1M generated tokens next to
//! cloud prices, with the point where buying the hardware has paid for itself.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::Serialize;

use super::kl::{evaluate, Quality};
use crate::ledger::PriceTable;
use crate::model::{dominant_type, GgufFile, Model, ModelError};

/// The built-in quality corpus (`corpus/`, real code in five languages, with its licences): its
/// name for reports, and its text.
pub fn builtin_corpus() -> (&'static str, String) {
    let files = [
        include_str!("../../corpus/sqlite_atoi64.c"),
        include_str!("../../corpus/llama_grammar_parse.cpp"),
        include_str!("../../corpus/mdbook_playground.js"),
        include_str!("../../corpus/textwrap_functions.py"),
        include_str!("../../corpus/smallvec_insert.rs"),
    ];
    ("built-in corpus", files.join("\n\n"))
}

/// One variant's speed, measured in a process of its own so that peak memory is its alone.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SpeedRun {
    pub load_s: f64,
    pub pp_tps: f64,
    pub tg_tps: f64,
    pub peak_rss: u64,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// llama-bench's shapes: prompt tokens in one batch, tokens generated one at a time.
    pub pp: usize,
    pub tg: usize,
    pub reps: usize,
    /// Threads the speed runs use (the quality runs use the same pool).
    pub threads: usize,
    /// Tokens per quality window, and at most this many windows.
    pub ctx: usize,
    pub windows: Option<usize>,
    /// Index into the paths of the variant the others are compared with; default: the one with
    /// the most bits per weight.
    pub reference: Option<usize>,
}

/// Local cost of 1M generated tokens at the measured speed, in the display currency.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CostPerMillion {
    pub busy_hours: f64,
    pub energy_kwh: f64,
    pub electricity: f64,
    pub hardware: f64,
    pub total: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    pub name: String,
    pub path: PathBuf,
    pub file_type: String,
    pub file_bytes: u64,
    pub bits_per_weight: f64,
    pub reference: bool,
    pub speed: SpeedRun,
    pub quality: Quality,
    pub local_per_1m: CostPerMillion,
}

/// Generated tokens after which the hardware's price is saved against one comparator, and the
/// hours of generation that takes at a variant's speed.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BreakEven {
    pub tokens: f64,
    pub hours: f64,
    pub within_lifetime: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cloud {
    pub id: String,
    pub provider: String,
    /// Price of 1M output tokens, in the display currency.
    pub output_per_1m: f64,
    /// One per variant, in variant order; `None` where local electricity costs more than the cloud.
    pub break_even: Vec<Option<BreakEven>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bench {
    pub date: String,
    pub cpu: String,
    pub threads: usize,
    pub pp: usize,
    pub tg: usize,
    pub reps: usize,
    pub ctx: usize,
    pub corpus: String,
    pub currency: String,
    pub price_version: String,
    /// How energy was estimated: threads × watts per core from the price table's TDP assumption.
    pub watts: f64,
    pub hardware_price: f64,
    pub variants: Vec<Variant>,
    pub cloud: Vec<Cloud>,
}

/// What the bench is doing, for a progress display.
pub enum Step<'a> {
    Speed(&'a str),
    Quality { name: &'a str, window: usize, windows: usize },
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Bits per weight over every tensor of the file.
pub fn bits_per_weight(file: &GgufFile) -> f64 {
    let bytes: usize = file.tensors.iter().map(|t| t.size).sum();
    let elems: usize = file.tensors.iter().map(|t| t.dims.iter().product::<usize>()).sum();
    bytes as f64 * 8.0 / elems.max(1) as f64
}

/// Local cost of 1M tokens generated at `tg_tps` with `threads` busy cores.
pub fn local_per_1m(prices: &PriceTable, tg_tps: f64, threads: usize) -> CostPerMillion {
    let busy_s = 1e6 / tg_tps;
    let joules = prices.local.watts_per_core() * threads as f64 * busy_s;
    let (electricity, hardware) = prices.local.cost(joules, busy_s);
    let k = prices.to_display(&prices.local.currency);
    CostPerMillion {
        busy_hours: busy_s / 3600.0,
        energy_kwh: joules / 3.6e6,
        electricity: electricity * k,
        hardware: hardware * k,
        total: (electricity + hardware) * k,
    }
}

/// The cloud comparators with their break-even points for each variant.
pub fn cloud_rows(prices: &PriceTable, variants: &[Variant]) -> Vec<Cloud> {
    let hw = prices.local.hardware_price * prices.to_display(&prices.local.currency);
    prices
        .compare
        .iter()
        .filter_map(|id| prices.model(id))
        .map(|m| {
            let out = m.output * prices.to_display(&m.currency);
            let break_even = variants
                .iter()
                .map(|v| {
                    let saved_per_token = (out - v.local_per_1m.electricity) / 1e6;
                    (saved_per_token > 0.0).then(|| {
                        let tokens = hw / saved_per_token;
                        let hours = tokens / v.speed.tg_tps / 3600.0;
                        BreakEven { tokens, hours, within_lifetime: hours <= prices.local.hardware_lifetime_hours }
                    })
                })
                .collect();
            Cloud { id: m.id.clone(), provider: m.provider.clone(), output_per_1m: out, break_even }
        })
        .collect()
}

/// Runs the bench over `paths`. `speed` measures one file (in a child process, in the CLI);
/// quality runs here, loading the reference once and each other variant in turn.
#[allow(clippy::too_many_arguments)]
pub fn run(
    paths: &[PathBuf],
    corpus: (&str, &str),
    settings: &Settings,
    prices: &PriceTable,
    device: &Device,
    mut speed: impl FnMut(&Path) -> Result<SpeedRun, String>,
    mut progress: impl FnMut(Step),
) -> Result<Bench, ModelError> {
    let (corpus_name, text) = corpus;
    let mut files = Vec::new();
    for p in paths {
        let f = GgufFile::open(p)?;
        let name = p.file_stem().map_or_else(|| p.display().to_string(), |s| s.to_string_lossy().into_owned());
        files.push((name, dominant_type(&f), f.file_size() as u64, bits_per_weight(&f)));
    }
    let most_bits = (0..files.len()).max_by(|&a, &b| files[a].3.total_cmp(&files[b].3).then(b.cmp(&a))).unwrap_or(0);
    let reference = settings.reference.filter(|&r| r < files.len()).unwrap_or(most_bits);
    let mut speeds = Vec::new();
    for (p, f) in paths.iter().zip(&files) {
        progress(Step::Speed(&f.0));
        speeds.push(speed(p).map_err(|e| ModelError::Input(format!("measuring the speed of {}: {e}", p.display())))?);
    }
    let ref_model = Model::load(&paths[reference], device)?;
    let mut variants = Vec::new();
    for (i, (p, (name, file_type, file_bytes, bpw))) in paths.iter().zip(files).enumerate() {
        let mut on_window = |window, windows| progress(Step::Quality { name: &name, window, windows });
        let quality = if i == reference {
            evaluate(&ref_model, None, text, settings.ctx, settings.windows, &mut on_window)?
        } else {
            let model = Model::load(p, device)?;
            evaluate(&model, Some(&ref_model), text, settings.ctx, settings.windows, &mut on_window)?
        };
        let speed = speeds[i];
        variants.push(Variant {
            local_per_1m: local_per_1m(prices, speed.tg_tps, settings.threads),
            name,
            path: p.clone(),
            file_type,
            file_bytes,
            bits_per_weight: bpw,
            reference: i == reference,
            speed,
            quality,
        });
    }
    Ok(Bench {
        date: chrono::Local::now().format("%Y-%m-%d").to_string(),
        cpu: cpu_name(),
        threads: settings.threads,
        pp: settings.pp,
        tg: settings.tg,
        reps: settings.reps,
        ctx: settings.ctx,
        corpus: corpus_name.to_string(),
        currency: prices.currency.display.clone(),
        price_version: prices.version.clone(),
        watts: prices.local.watts_per_core() * settings.threads as f64,
        hardware_price: prices.local.hardware_price * prices.to_display(&prices.local.currency),
        cloud: cloud_rows(prices, &variants),
        variants,
    })
}
