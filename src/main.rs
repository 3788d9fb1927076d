//! The `hearth` command line: parse, then one function per subcommand.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use hearth::api::{router, AppState, ServeConfig};
use hearth::catalog;
use hearth::engine::{generate, Engine, EngineConfig, GenerateParams, Penalties, SamplerConfig};
use hearth::ledger::{report, Filter, GroupBy, Ledger, PriceTable};
use hearth::model::device::DeviceChoice;
use hearth::model::{ChatMessage, Model};

#[path = "cli/measure.rs"]
mod measure;

#[derive(Parser)]
#[command(name = "hearth", version, about = "Local inference for small quantized models, with a cost ledger against cloud APIs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a completion for a prompt and stream it to stdout.
    Run(RunArgs),
    /// Serve the model over an OpenAI-compatible HTTP API (plus llama.cpp's /infill).
    Serve(ServeArgs),
    /// Fetch models into the local cache ($HEARTH_HOME/models) and verify them.
    Pull {
        /// Catalog ids or hf:OWNER/REPO/FILE.gguf references.
        #[arg(required = true)]
        models: Vec<String>,
    },
    /// List catalog models and whether they are downloaded.
    List,
    /// Prompt-processing and generation speed, measured as llama.cpp's llama-bench does.
    Speed {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        shape: measure::Shape,
        /// Sequences generated side by side, one token each per batched step (as the server
        /// batches streams; llama-batched-bench's -npl); the generation speed counts all of them.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        parallel: u16,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// What requests cost here against the cloud, from the ledger.
    Costs {
        /// Only requests since then: a span (30m, 12h, 7d, 2w), a date (2026-11-01) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, value_enum, default_value = "day")]
        by: By,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        #[command(flatten)]
        ledger: LedgerArgs,
    },
    /// Perplexity of a text file (llama.cpp's method: windows of --ctx tokens, second half scored).
    Perplexity {
        #[command(flatten)]
        model: ModelArgs,
        /// The text file to score.
        #[arg(long)]
        file: PathBuf,
        /// Tokens per window.
        #[arg(long, default_value_t = 512)]
        ctx: usize,
    },
    /// Write a GGUF file's weights at another precision, with llama.cpp's per-tensor choices.
    Quantize(measure::QuantizeArgs),
    /// Compare variants of a model: size, speed, memory, quality against the highest-precision
    /// one, and local cost per 1M generated tokens against cloud prices.
    Bench(measure::BenchArgs),
}

#[derive(Args)]
struct ModelArgs {
    /// Catalog id, hf:OWNER/REPO/FILE.gguf, or a path to a .gguf file. Defaults to the catalog's default.
    #[arg(long, short, env = "HEARTH_MODEL")]
    model: Option<String>,
    /// Where to compute: auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto", env = "HEARTH_DEVICE")]
    device: DeviceChoice,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    prompt: String,
    /// Apply the model's chat template to the prompt as a user message.
    #[arg(long)]
    chat: bool,
    /// System message (with --chat).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// 0 means greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    #[arg(long)]
    top_p: Option<f32>,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    min_p: Option<f32>,
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
    /// Makes sampling reproducible.
    #[arg(long)]
    seed: Option<u64>,
    /// Stop when this text is generated (repeatable).
    #[arg(long)]
    stop: Vec<String>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on; loopback by default.
    #[arg(long, default_value = "127.0.0.1", env = "HEARTH_HOST")]
    host: String,
    #[arg(long, default_value_t = 8080, env = "HEARTH_PORT")]
    port: u16,
    /// Require `Authorization: Bearer KEY` on every route but /health.
    #[arg(long, env = "HEARTH_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Allow browser requests from this origin (repeatable); no CORS without it.
    #[arg(long = "cors-origin")]
    cors_origin: Vec<String>,
    /// Sequences generated together in one batch.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    parallel: u16,
    /// Requests that may wait for a batch slot; more are refused with 429.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    queue: u16,
    /// Tokens per batched step (decode tokens plus prompt chunks).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u16).range(1..))]
    batch_tokens: u16,
    /// Finished sequences whose KV caches are kept for prefix reuse (0 turns reuse off).
    #[arg(long, default_value_t = 8)]
    prefix_cache: usize,
    #[command(flatten)]
    ledger: LedgerArgs,
}

#[derive(Args)]
struct LedgerArgs {
    /// The SQLite cost ledger; default $HEARTH_HOME/ledger.sqlite.
    #[arg(long, env = "HEARTH_LEDGER")]
    ledger: Option<PathBuf>,
    #[command(flatten)]
    price: PriceArgs,
}

#[derive(Args)]
struct PriceArgs {
    /// A TOML file that overrides or extends the built-in cloud prices and local cost settings.
    #[arg(long, env = "HEARTH_PRICES")]
    prices: Option<PathBuf>,
    /// Cloud models to compare with, in order (`saved` is against the first); default: the price
    /// table's `compare` list.
    #[arg(long, value_delimiter = ',')]
    compare: Vec<String>,
}

impl LedgerArgs {
    fn path(&self) -> PathBuf {
        self.ledger.clone().unwrap_or_else(|| Ledger::default_path(&catalog::home()))
    }

    fn prices(&self) -> Result<PriceTable> {
        self.price.table()
    }

    fn open(&self) -> Result<Ledger> {
        Ok(Ledger::open(&self.path(), self.prices()?)?)
    }
}

impl PriceArgs {
    fn table(&self) -> Result<PriceTable> {
        let table = match &self.prices {
            Some(f) => PriceTable::with_file(f)?,
            None => PriceTable::built_in(),
        };
        Ok(if self.compare.is_empty() { table } else { table.comparing(&self.compare)? })
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum By {
    Day,
    Model,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

fn main() {
    hearth::model::device::pin_thread_count();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("HEARTH_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Serve(args) => serve(args),
        Command::Pull { models } => pull(&models),
        Command::List => list(),
        Command::Perplexity { model, file, ctx } => measure::perplexity(&model, &file, ctx),
        Command::Speed { model, shape, parallel, json } => measure::speed(&model, &shape, parallel.into(), json),
        Command::Quantize(args) => measure::quantize(&args),
        Command::Bench(args) => measure::bench(&args),
        Command::Costs { since, by, format, ledger } => costs(since.as_deref(), by, format, &ledger),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The model's id as clients name it, and its file.
fn locate(args: &ModelArgs) -> Result<(String, PathBuf)> {
    let builtin = catalog::Catalog::builtin()?;
    let id = args.model.clone().unwrap_or_else(|| builtin.default.clone());
    let path = catalog::resolve(&id)?;
    let known = builtin.models.iter().any(|e| e.id == id);
    let name = if known { id } else { path.file_stem().map_or(id, |s| s.to_string_lossy().into_owned()) };
    Ok((name, path))
}

fn load(args: &ModelArgs) -> Result<Model> {
    let (_, path) = locate(args)?;
    load_path(args, &path)
}

fn load_path(args: &ModelArgs, path: &std::path::Path) -> Result<Model> {
    let device = args.device.open()?;
    let start = Instant::now();
    let model = Model::load(path, &device)?;
    eprintln!(
        "loaded {} ({}, {}, {:.0} MB) in {:.2}s",
        model.name,
        model.decoder.spec.arch.gguf_name(),
        model.quantization,
        model.file_size as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    Ok(model)
}

fn run(args: RunArgs) -> Result<()> {
    let penalties = Penalties {
        repetition: args.repeat_penalty,
        presence: args.presence_penalty,
        frequency: args.frequency_penalty,
        ..Penalties::default()
    };
    let sampler = SamplerConfig::from_params(args.temperature, args.top_k, args.top_p, args.min_p, penalties, args.seed)
        .map_err(anyhow::Error::msg)?;
    let model = load(&args.model)?;
    let (text, add_bos) = if args.chat {
        let mut messages = Vec::new();
        if let Some(s) = &args.system {
            messages.push(ChatMessage::new("system", s));
        }
        messages.push(ChatMessage::new("user", &args.prompt));
        let text = model.prompt.render(&messages, true).map_err(anyhow::Error::msg).context("rendering the chat template")?;
        let bos = !model.prompt.starts_with_bos(&text);
        (text, bos)
    } else {
        (args.prompt.clone(), true)
    };
    let prompt = model.vocab.encode(&text, add_bos).map_err(anyhow::Error::msg)?;
    if prompt.is_empty() {
        bail!("the prompt is empty");
    }
    let params = GenerateParams { max_tokens: args.max_tokens, sampler, stop: args.stop };
    let mut out = std::io::stdout().lock();
    let g = generate(&model, &prompt, &params, |piece| {
        let _ = out.write_all(piece.as_bytes());
        let _ = out.flush();
    })?;
    let _ = writeln!(out);
    eprintln!(
        "prompt: {} tokens, {:.1} tok/s; generation: {} tokens, {:.1} tok/s; finish: {}",
        g.prompt_tokens,
        g.prompt_tps(),
        g.tokens.len(),
        g.generate_tps(),
        g.finish.as_str()
    );
    Ok(())
}

fn serve(args: ServeArgs) -> Result<()> {
    let (id, path) = locate(&args.model)?;
    let config = ServeConfig { api_key: args.api_key.clone(), cors_origins: args.cors_origin.clone() };
    let state = AppState::new(config);
    let ledger = args.ledger.open()?;
    let watts_per_core = ledger.prices().local.watts_per_core();
    let ledger_path = ledger.path().display().to_string();
    state.set_ledger(std::sync::Arc::new(ledger));
    // The providers' tokenizers take a moment to build; do it before the first request needs them.
    std::thread::spawn(hearth::ledger::warm_up);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let addr = format!("{}:{}", args.host, args.port);
    let listener = runtime.block_on(tokio::net::TcpListener::bind(&addr)).with_context(|| format!("listening on {addr}"))?;
    let bound = listener.local_addr().map_or(addr, |a| a.to_string());
    eprintln!("listening on http://{bound} (model {id} loading; /health answers 503 until it is ready)");
    eprintln!("cost ledger: {ledger_path} (see `hearth costs`, /v1/ledger and http://{bound}/dashboard)");
    // Load on another thread so /health can answer while the weights are read.
    let loading = state.clone();
    std::thread::spawn(move || match load_path(&args.model, &path) {
        Ok(model) => {
            let cfg = EngineConfig {
                max_running: args.parallel as usize,
                queue: args.queue as usize,
                step_tokens: args.batch_tokens as usize,
                prefix_cache: args.prefix_cache,
                watts_per_core,
            };
            loading.set_engine(Engine::start(model, id, cfg));
            eprintln!("ready");
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    });
    runtime.block_on(async move {
        axum::serve(listener, router(state))
            .with_graceful_shutdown(shutdown_signal())
            .await
    })?;
    Ok(())
}

fn costs(since: Option<&str>, by: By, format: Format, args: &LedgerArgs) -> Result<()> {
    let path = args.path();
    if !path.exists() {
        bail!("no ledger at {} yet: `hearth serve` writes one as it answers requests", path.display());
    }
    let ledger = args.open()?;
    let now = chrono::Utc::now().timestamp_millis();
    let since_ms = since.map(|s| report::parse_since(s, now)).transpose()?;
    let by = match by {
        By::Day => GroupBy::Day,
        By::Model => GroupBy::Model,
    };
    let summary = ledger.summary(&Filter { since_ms, ..Filter::default() }, by)?;
    let out = match format {
        Format::Table => summary.to_table(),
        Format::Csv => summary.to_csv(),
        Format::Json => serde_json::to_string_pretty(&summary)? + "\n",
    };
    print!("{out}");
    Ok(())
}

/// Ctrl-C, or SIGTERM (what service managers and `docker stop` send).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn pull(models: &[String]) -> Result<()> {
    for m in models {
        let path = catalog::pull(m, |msg| eprintln!("{m}: {msg}"))?;
        println!("{m}: {}", path.display());
    }
    Ok(())
}

fn list() -> Result<()> {
    let default = catalog::Catalog::builtin()?.default;
    println!("{:<28} {:<8} {:<8} {:>9}  {}", "ID", "ARCH", "QUANT", "SIZE", "PATH");
    for (e, path) in catalog::list()? {
        let mark = if e.id == default { " (default)" } else { "" };
        let at = path.map_or("not downloaded".to_string(), |p| p.display().to_string());
        println!("{:<28} {:<8} {:<8} {:>7.0}MB  {at}{mark}", e.id, e.arch, e.quant, e.size as f64 / 1e6);
    }
    Ok(())
}
