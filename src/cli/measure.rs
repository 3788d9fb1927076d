//! The measuring subcommands: `speed`, `perplexity`, `quantize` and `bench`: their arguments and bodies.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::bench::compare::{self, Settings, SpeedRun, Step};
use crate::catalog;
use crate::model::quantize::{quantize as write_quantized, Target};
use crate::model::{GgufFile, Model};

use super::{ModelArgs, PriceArgs};

#[derive(Args)]
pub struct QuantizeArgs {
    /// The source: a catalog id, hf:OWNER/REPO/FILE.gguf or a .gguf path.
    input: String,
    /// The file to write.
    output: PathBuf,
    /// F16, Q8_0, Q6_K, Q5_K_M, Q5_1, Q5_0, Q4_K_M, Q4_1 or Q4_0 (llama.cpp's per-tensor choices).
    #[arg(long = "type", short = 't')]
    ty: Target,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct SpeedArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    shape: Shape,
    /// Sequences generated side by side, one token each per batched step (as the server
    /// batches streams; llama-batched-bench's -npl); the generation speed counts all of them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Also generate under this JSON Schema (constrained decoding) and report its cost against
    /// the same loop unconstrained; both pick tokens greedily from the logits.
    #[arg(long, value_name = "FILE")]
    json_schema: Option<PathBuf>,
}

#[derive(Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The text file to score.
    #[arg(long)]
    file: PathBuf,
    /// Tokens per window.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Tokens per forward pass within a window (llama.cpp's -b); the figure does not depend on it.
    #[arg(long, default_value_t = 512)]
    batch: usize,
}

/// llama-bench's shapes.
#[derive(Args)]
pub struct Shape {
    /// Prompt tokens processed in one batch (0 skips).
    #[arg(short = 'p', long, default_value_t = 512)]
    pub pp: usize,
    /// Tokens generated one at a time (0 skips).
    #[arg(short = 'n', long, default_value_t = 128)]
    pub tg: usize,
    /// Repetitions; the median is reported.
    #[arg(short = 'r', long, default_value_t = 3)]
    pub reps: usize,
}

#[derive(Args)]
pub struct BenchArgs {
    /// A variant to compare (repeatable): catalog id, hf: reference or .gguf path.
    #[arg(long = "model", short = 'm', required = true)]
    models: Vec<String>,
    /// The variant the others are compared with (one of the --model values); default: the one
    /// with the most bits per weight.
    #[arg(long)]
    reference: Option<String>,
    /// Text to score quality on; default: the built-in corpus of source code (corpus/).
    #[arg(long)]
    corpus: Option<PathBuf>,
    #[command(flatten)]
    shape: Shape,
    /// Tokens per quality window (second half scored, as llama.cpp's perplexity does).
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// At most this many quality windows; default: as many as the corpus fills.
    #[arg(long)]
    chunks: Option<usize>,
    /// Also write bench.csv, bench.json and SVG charts into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Coding benchmarks to run on each variant (comma-separated): humaneval. Completions run
    /// with the problems' tests in a sandbox; pass@1 and the cost per solved problem are reported.
    #[arg(long, value_delimiter = ',')]
    tasks: Vec<crate::bench::tasks::Task>,
    /// Run only --tasks, not the speed and quality comparison.
    #[arg(long, requires = "tasks")]
    tasks_only: bool,
    /// Completions per problem: 1 is greedy; more are sampled at --temperature and pass@k is
    /// reported with the unbiased estimator.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    samples: u16,
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Only the first N problems of each task (all by default).
    #[arg(long)]
    problems: Option<usize>,
    /// The most tokens one completion may take.
    #[arg(long, default_value_t = 512)]
    task_max_tokens: usize,
    /// Problems generated at once (the engine batches them; the answers are the same as alone).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    task_parallel: u16,
    /// humaneval-infill's problems (human-eval-infilling's JSON lines, e.g.
    /// HumanEval-SingleLineInfilling.jsonl), which no package registry carries.
    #[arg(long)]
    infill_data: Option<PathBuf>,
    /// Seconds each problem's tests may run in the sandbox.
    #[arg(long, default_value_t = 10)]
    task_timeout: u64,
    /// Where to compute: auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto", env = "HEARTH_DEVICE")]
    device: crate::model::device::DeviceChoice,
    #[command(flatten)]
    prices: PriceArgs,
}

/// The threads candle computes with (`RAYON_NUM_THREADS`, pinned at start-up).
pub(super) fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

pub fn speed(args: &SpeedArgs) -> Result<()> {
    let Shape { pp, tg, reps } = args.shape;
    let (parallel, json) = (usize::from(args.parallel), args.json);
    let start = Instant::now();
    let model = args.model.load()?;
    let load_s = start.elapsed().as_secs_f64();
    let ctx = model.decoder.spec.context_length;
    if pp > ctx || tg > ctx {
        bail!("-p {pp} and -n {tg} must each fit the context of {ctx} tokens");
    }
    let s = crate::bench::speed::measure(&model, pp, tg, parallel, reps)?;
    let constrained = match &args.json_schema {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let schema: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
            let spec = crate::engine::GrammarSpec::JsonSchema(schema);
            let grammar = crate::engine::Grammars::new(&model.vocab).and_then(|g| g.compile(&spec)).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Some(crate::bench::speed::measure_constrained(&model, tg.max(1), parallel, reps, &grammar)?)
        }
    };
    let rss = crate::bench::speed::peak_rss();
    if json {
        let threads = threads();
        println!(
            "{}",
            serde_json::json!({ "pp": pp, "tg": tg, "parallel": parallel, "pp_tps": s.pp_tps, "tg_tps": s.tg_tps, "threads": threads, "peak_rss": rss, "reps": reps, "load_s": load_s,
                "cache_type": model.decoder.cache_type().name(),
                "picked_tg_tps": constrained.map(|c| c.0), "constrained_tg_tps": constrained.map(|c| c.1) })
        );
    } else {
        if pp > 0 {
            println!("pp{pp}: {:.1} tok/s", s.pp_tps);
        }
        if tg > 0 && parallel > 1 {
            println!("tg{tg} x {parallel} sequences: {:.1} tok/s in all", s.tg_tps);
        } else if tg > 0 {
            println!("tg{tg}: {:.1} tok/s", s.tg_tps);
        }
        if let Some((free, bound)) = constrained {
            println!("tg{tg} x {parallel} picking greedily: {free:.1} tok/s free, {bound:.1} tok/s under the schema ({:+.1}%)", (bound / free - 1.0) * 100.0);
        }
        println!("threads {}, median of {reps}, {} KV cache, peak RSS {:.1} MiB", threads(), model.decoder.cache_type(), rss as f64 / (1 << 20) as f64);
    }
    Ok(())
}

pub fn perplexity(args: &PerplexityArgs) -> Result<()> {
    let (file, ctx) = (&args.file, args.ctx);
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let model = args.model.load()?;
    let start = Instant::now();
    let p = crate::bench::perplexity::perplexity(&model, &text, ctx, args.batch, |w, v| eprint!("[{w}]{v:.4} "))?;
    eprintln!();
    println!(
        "perplexity: {:.4} ({} windows of {ctx} tokens, {} tokens scored, {:.1}s)",
        p.value,
        p.windows,
        p.scored_tokens,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

pub(super) fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
    bar
}

pub fn quantize(args: &QuantizeArgs) -> Result<()> {
    let input = catalog::resolve(&args.input)?;
    if args.output.exists() && !args.force {
        bail!("{} exists; pass --force to replace it", args.output.display());
    }
    if input.canonicalize().ok() == args.output.canonicalize().ok() {
        bail!("the output would overwrite the input {}", input.display());
    }
    let file = GgufFile::open(&input)?;
    let start = Instant::now();
    let progress = bar(file.tensors.len() as u64, "{bar:40} {pos}/{len} tensors {msg}");
    let report = write_quantized(&file, &args.output, args.ty, threads(), |done, _, name| {
        progress.set_position(done as u64);
        progress.set_message(name.to_string());
    })?;
    progress.finish_and_clear();
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    println!(
        "wrote {} ({}): {:.1} MiB of tensors from {:.1} MiB in {:.1}s; {}",
        args.output.display(),
        args.ty.name(),
        mib(report.out_bytes),
        mib(report.in_bytes),
        start.elapsed().as_secs_f64(),
        report.type_counts()
    );
    if report.fallbacks() > 0 {
        println!("{} tensors have rows that do not fit a 256-block type and use llama.cpp's 32-block fallback", report.fallbacks());
    }
    if report.requantized() > 0 {
        eprintln!(
            "warning: {} tensors were already quantized and were re-encoded: quality can only fall from the source's, never return to the original model's",
            report.requantized()
        );
    }
    Ok(())
}

/// Runs `hearth speed --json` on one file in a child process, so its peak memory is its own.
fn speed_in_child(path: &Path, args: &BenchArgs) -> Result<SpeedRun, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .args(["speed", "--json", "--device", &args.device.to_string()])
        .args(["-p", &args.shape.pp.to_string(), "-n", &args.shape.tg.to_string(), "-r", &args.shape.reps.to_string()])
        .arg("-m")
        .arg(path)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("reading its report: {e}"))?;
    let f = |k: &str| v.get(k).and_then(|x| x.as_f64()).ok_or_else(|| format!("its report lacks {k}"));
    Ok(SpeedRun { load_s: f("load_s")?, pp_tps: f("pp_tps")?, tg_tps: f("tg_tps")?, peak_rss: f("peak_rss")? as u64 })
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    if !args.tasks_only {
        compare_variants(args)?;
    }
    if !args.tasks.is_empty() {
        run_tasks(args)?;
    }
    Ok(())
}

/// `--tasks`: each coding benchmark on each variant, then the table, CSV, JSON and chart.
fn run_tasks(args: &BenchArgs) -> Result<()> {
    use crate::bench::tasks::{self, Item, Task, TaskSettings};
    if !(0.0..=2.0).contains(&args.temperature) {
        bail!("--temperature must be between 0 and 2, got {}", args.temperature);
    }
    let paths = args.models.iter().map(|m| catalog::resolve(m)).collect::<Result<Vec<_>, _>>()?;
    let prices = args.prices.table()?;
    let device = args.device.open()?;
    let sandbox = crate::bench::sandbox::Sandbox::new()?;
    eprintln!("sandbox: {}", sandbox.isolation());
    let limits = crate::bench::sandbox::Limits { timeout: std::time::Duration::from_secs(args.task_timeout), ..Default::default() };
    let settings = TaskSettings {
        samples: usize::from(args.samples),
        temperature: args.temperature,
        seed: 0,
        max_tokens: args.task_max_tokens,
        parallel: usize::from(args.task_parallel),
        limit: args.problems,
        limits,
    };
    let mut results = Vec::new();
    let mut tables = String::new();
    for &task in &args.tasks {
        let items: Vec<Item> = match task {
            Task::HumanEval => crate::bench::humaneval::load()?.into_iter().map(Item::Complete).collect(),
            Task::HumanEvalInfill => match &args.infill_data {
                Some(p) => tasks::load_infill(p).map_err(anyhow::Error::msg)?.into_iter().map(Item::Infill).collect(),
                None => bail!(
                    "humaneval-infill needs --infill-data FILE: the human-eval-infilling package on PyPI holds no data (its wheel is empty); \
                     take HumanEval-SingleLineInfilling.jsonl.gz from github.com/openai/human-eval-infilling and gunzip it"
                ),
            },
        };
        let mut these = Vec::new();
        for (m, path) in args.models.iter().zip(&paths) {
            let model = Model::load(path, &device)?;
            let name = path.file_stem().map_or_else(|| m.clone(), |s| s.to_string_lossy().into_owned());
            if task == Task::HumanEvalInfill && model.fim.is_none() {
                eprintln!("{name}: skipped for humaneval-infill: the model has no fill-in-the-middle tokens");
                continue;
            }
            let progress = bar(0, "{bar:40} {pos}/{len} {msg}");
            let show = |done: usize, total: usize, id: &str| {
                progress.set_length(total as u64);
                progress.set_position(done as u64);
                progress.set_message(format!("{}: {name} {id}", task.name()));
            };
            let r = tasks::run(task, &name, model, &items, &settings, &prices, &sandbox, &show).map_err(|e| anyhow::anyhow!("{} on {name}: {e}", task.name()))?;
            progress.finish_and_clear();
            eprintln!("{name}: {} pass@1 {:.1}% ({}/{}) in {:.0}s", task.name(), r.pass_at_1 * 100.0, r.solved, r.problems, r.wall_s);
            these.push(r);
        }
        if these.is_empty() {
            bail!("no variant could run {}", task.name());
        }
        tables += &tasks::to_markdown(&these);
        results.extend(these);
    }
    println!("{tables}");
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let write = |f: &str, s: String| std::fs::write(dir.join(f), s).with_context(|| format!("writing {}", dir.join(f).display()));
        write("tasks.csv", tasks::to_csv(&results))?;
        write("tasks.json", serde_json::to_string_pretty(&results)? + "\n")?;
        crate::bench::charts::write_tasks(&results, dir).map_err(anyhow::Error::msg)?;
        eprintln!("wrote tasks.csv, tasks.json and pass1_vs_cost.svg to {}", dir.display());
    }
    Ok(())
}

/// The speed, memory and quality comparison of the variants.
fn compare_variants(args: &BenchArgs) -> Result<()> {
    if args.shape.tg == 0 {
        bail!("hearth bench needs -n above 0: the local cost per token comes from the generation speed");
    }
    let paths = args.models.iter().map(|m| catalog::resolve(m)).collect::<Result<Vec<_>, _>>()?;
    let (name, text) = match &args.corpus {
        Some(p) => (p.display().to_string(), std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
        None => {
            let (n, t) = compare::builtin_corpus();
            (n.to_string(), t)
        }
    };
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let prices = args.prices.table()?;
    let device = args.device.open()?;
    let reference = match &args.reference {
        None => None,
        Some(r) => Some(args.models.iter().position(|m| m == r).with_context(|| format!("--reference {r} is not one of the --model values"))?),
    };
    let settings =
        Settings { pp: args.shape.pp, tg: args.shape.tg, reps: args.shape.reps, threads: threads(), ctx: args.ctx, windows: args.chunks, reference };
    let progress = bar(paths.len() as u64 * 2, "{bar:40} {pos}/{len} {msg}");
    let result = compare::run(&paths, (&name, &text), &settings, &prices, &device, |p| speed_in_child(p, args), |step| match step {
        Step::Speed(name) => {
            progress.inc(1);
            progress.set_message(format!("speed: {name}"));
        }
        Step::Quality { name, window, windows } => {
            if window == windows {
                progress.inc(1);
            }
            progress.set_message(format!("quality: {name} window {window}/{windows}"));
        }
    });
    progress.finish_and_clear();
    let bench = result?;
    println!("{}", bench.to_markdown());
    if let Some(dir) = &args.out {
        let write = |f: &str, s: String| std::fs::write(dir.join(f), s).with_context(|| format!("writing {}", dir.join(f).display()));
        write("bench.csv", bench.to_csv())?;
        write("bench.json", bench.to_json())?;
        crate::bench::charts::write_all(&bench, dir).map_err(anyhow::Error::msg)?;
        eprintln!("wrote bench.csv, bench.json, speed_vs_size.svg, kl_vs_size.svg and cost_per_1m.svg to {}", dir.display());
    }
    Ok(())
}
