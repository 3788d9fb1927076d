//! `hearth synth`: random-weight GGUF files with the exact shapes and metadata of real models,
//! quantized as users' files are, for speed and memory measurements at real sizes.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;

use crate::model::quantize::Target;
use crate::model::synth::{self, SHAPES};

#[derive(Args)]
pub struct SynthArgs {
    /// The model whose shapes to copy (`--list` shows them), e.g. qwen2.5-coder-1.5b.
    #[arg(required_unless_present = "list")]
    shape: Option<String>,
    /// The file to write.
    #[arg(required_unless_present = "list")]
    output: Option<PathBuf>,
    /// F16, Q8_0, Q6_K, Q5_K_M, Q5_1, Q5_0, Q4_K_M, Q4_1 or Q4_0 (llama.cpp's per-tensor choices).
    #[arg(long = "type", short = 't', default_value = "Q4_K_M")]
    ty: Target,
    /// Fewer layers than the real model (tests).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    layers: Option<u16>,
    /// Seed of the weights; the same seed writes the same file.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    force: bool,
    /// List the shapes and exit.
    #[arg(long)]
    list: bool,
}

pub fn synth(args: &SynthArgs) -> Result<()> {
    if args.list {
        println!("| shape | arch | d_model | layers | ffn | heads | kv heads | head size | vocabulary | parameters |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for s in SHAPES {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2}B |",
                s.name, s.arch, s.d_model, s.layers, s.ff, s.heads, s.kv_heads, s.head_dim, s.vocab,
                s.params() as f64 / 1e9
            );
        }
        return Ok(());
    }
    let (Some(name), Some(output)) = (&args.shape, &args.output) else { bail!("SHAPE and OUTPUT are required") };
    let shape = synth::find(name)?;
    if output.exists() && !args.force {
        bail!("{} exists; pass --force to replace it", output.display());
    }
    let start = Instant::now();
    let progress = super::measure::bar(0, "{bar:40} {pos}/{len} tensors {msg}");
    let layers = args.layers.map(usize::from);
    let report = synth::write(&shape, layers, args.ty, args.seed, output, super::measure::threads(), |done, total, name| {
        progress.set_length(total as u64);
        progress.set_position(done as u64);
        progress.set_message(name.to_string());
    })?;
    progress.finish_and_clear();
    println!(
        "wrote {} (random-weight {}, {} layers, {}): {:.1} MiB in {:.1}s; {}",
        output.display(),
        shape.name,
        layers.unwrap_or(shape.layers),
        args.ty.name(),
        report.out_bytes as f64 / (1 << 20) as f64,
        start.elapsed().as_secs_f64(),
        report.type_counts()
    );
    Ok(())
}
