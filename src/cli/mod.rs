//! The `hearth` command line: clap's types for the shared arguments, loading the model a command
//! names, and one file per subcommand (run, serve, costs, catalog, measure, synth).

mod catalog;
mod costs;
mod measure;
mod run;
mod serve;
mod synth;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::ledger::{Ledger, PriceTable};
use crate::model::device::DeviceChoice;
use crate::model::Model;

#[derive(Parser)]
#[command(name = "hearth", version, about = "Local inference for small quantized models, with a cost ledger against cloud APIs")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a completion for a prompt and stream it to stdout.
    Run(run::RunArgs),
    /// Serve the model over an OpenAI-compatible HTTP API (plus llama.cpp's /infill).
    Serve(serve::ServeArgs),
    /// Fetch models into the local cache ($HEARTH_HOME/models) and verify them.
    Pull {
        /// Catalog ids or hf:OWNER/REPO/FILE.gguf references.
        #[arg(required = true)]
        models: Vec<String>,
    },
    /// List catalog models and whether they are downloaded.
    List,
    /// Prompt-processing and generation speed, measured as llama.cpp's llama-bench does.
    Speed(measure::SpeedArgs),
    /// What requests cost here against the cloud, from the ledger.
    Costs(costs::CostsArgs),
    /// Perplexity of a text file (llama.cpp's method: windows of --ctx tokens, second half scored).
    Perplexity(measure::PerplexityArgs),
    /// Write a GGUF file's weights at another precision, with llama.cpp's per-tensor choices.
    Quantize(measure::QuantizeArgs),
    /// Compare variants of a model: size, speed, memory, quality against the highest-precision
    /// one, and local cost per 1M generated tokens against cloud prices.
    Bench(measure::BenchArgs),
    /// Write a random-weight GGUF file with the exact shapes and metadata of a real model
    /// (Qwen2.5-Coder, Llama 3.2, Phi-3, Gemma 3), quantized as users' files are: for speed and
    /// memory measurements at real sizes.
    Synth(synth::SynthArgs),
}

/// Runs the command the line names.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Serve(args) => serve::serve(args),
        Command::Pull { models } => catalog::pull(&models),
        Command::List => catalog::list(),
        Command::Perplexity(args) => measure::perplexity(&args),
        Command::Speed(args) => measure::speed(&args),
        Command::Quantize(args) => measure::quantize(&args),
        Command::Bench(args) => measure::bench(&args),
        Command::Synth(args) => synth::synth(&args),
        Command::Costs(args) => costs::costs(&args),
    }
}

#[derive(Args)]
struct ModelArgs {
    /// Catalog id, hf:OWNER/REPO/FILE.gguf, or a path to a .gguf file. Defaults to the catalog's default.
    #[arg(long, short, env = "HEARTH_MODEL")]
    model: Option<String>,
    /// Where to compute: auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto", env = "HEARTH_DEVICE")]
    device: DeviceChoice,
    /// What the KV cache stores keys and values as: f16 (half of f32's memory, as llama.cpp's
    /// default), q8_0 (8-bit, 17/32 of f16's) or f32. On the CPU; GPUs keep f32.
    #[arg(long, default_value = "f16", env = "HEARTH_CACHE_TYPE", value_name = "f16|q8_0|f32")]
    cache_type: crate::model::CacheType,
}

impl ModelArgs {
    /// The model's id as clients name it, and its file.
    fn locate(&self) -> Result<(String, PathBuf)> {
        let builtin = crate::catalog::Catalog::builtin()?;
        let id = self.model.clone().unwrap_or_else(|| builtin.default.clone());
        let path = crate::catalog::resolve(&id)?;
        let known = builtin.models.iter().any(|e| e.id == id);
        let name = if known { id } else { path.file_stem().map_or(id, |s| s.to_string_lossy().into_owned()) };
        Ok((name, path))
    }

    fn load(&self) -> Result<Model> {
        let (_, path) = self.locate()?;
        self.load_path(&path)
    }

    fn load_path(&self, path: &Path) -> Result<Model> {
        let device = self.device.open()?;
        let start = Instant::now();
        let mut model = Model::load(path, &device)?;
        let cache = model.decoder.set_cache_type(self.cache_type)?;
        eprintln!(
            "loaded {} ({}, {}, {:.0} MB, {cache} KV cache) in {:.2}s",
            model.name,
            model.decoder.spec.arch.gguf_name(),
            model.quantization,
            model.file_size as f64 / 1e6,
            start.elapsed().as_secs_f64()
        );
        Ok(model)
    }
}

#[derive(Args)]
struct LedgerArgs {
    /// The cost ledger: a SQLite file (default $HEARTH_HOME/ledger.sqlite) or a PostgreSQL URL
    /// (`postgres://user:password@host:5432/db`) that a fleet of servers shares.
    #[arg(long, env = "HEARTH_LEDGER", value_name = "PATH|URL")]
    ledger: Option<String>,
    /// Where rows wait while the database cannot take them; default beside a SQLite ledger, or
    /// $HEARTH_HOME/ledger-spool.sqlite for PostgreSQL.
    #[arg(long, env = "HEARTH_LEDGER_SPOOL", value_name = "PATH")]
    ledger_spool: Option<PathBuf>,
    #[command(flatten)]
    price: PriceArgs,
}

impl LedgerArgs {
    fn target(&self) -> crate::ledger::Target {
        match &self.ledger {
            Some(s) => crate::ledger::Target::parse(s),
            None => crate::ledger::Target::File(Ledger::default_path(&crate::catalog::home())),
        }
    }

    fn open(&self) -> Result<Ledger> {
        let target = self.target();
        let spool = match (&self.ledger_spool, &target) {
            (Some(p), _) => Some(p.clone()),
            (None, crate::ledger::Target::Postgres(_)) => Some(crate::catalog::home().join("ledger-spool.sqlite")),
            (None, crate::ledger::Target::File(_)) => None,
        };
        Ok(Ledger::open_target(&target, spool.as_deref(), self.price.table()?)?)
    }
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

impl PriceArgs {
    fn table(&self) -> Result<PriceTable> {
        let table = match &self.prices {
            Some(f) => PriceTable::with_file(f)?,
            None => PriceTable::built_in(),
        };
        Ok(if self.compare.is_empty() { table } else { table.comparing(&self.compare)? })
    }
}
