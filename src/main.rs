//! The `hearth` binary: parse the command line, run the subcommand, exit non-zero on error.

use clap::Parser;

fn main() {
    hearth::model::device::pin_thread_count();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("HEARTH_LOG"))
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = hearth::cli::run(hearth::cli::Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
