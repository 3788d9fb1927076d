//! `hearth costs`: what requests cost here against the cloud, read from the ledger.

use anyhow::{bail, Result};
use clap::Args;

use crate::ledger::{report, Filter, GroupBy};

use super::LedgerArgs;

#[derive(Args)]
pub struct CostsArgs {
    /// Only requests since then: a span (30m, 12h, 7d, 2w), a date (2026-11-01) or an RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    #[arg(long, value_enum, default_value = "day")]
    by: By,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    #[command(flatten)]
    ledger: LedgerArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum By {
    Day,
    Model,
    /// The server that answered (`--instance-id`), for a fleet sharing one ledger.
    Instance,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

pub fn costs(args: &CostsArgs) -> Result<()> {
    if let crate::ledger::Target::File(path) = args.ledger.target() {
        if !path.exists() {
            bail!("no ledger at {} yet: `hearth serve` writes one as it answers requests", path.display());
        }
    }
    let ledger = args.ledger.open()?;
    let now = chrono::Utc::now().timestamp_millis();
    let since_ms = args.since.as_deref().map(|s| report::parse_since(s, now)).transpose()?;
    let by = match args.by {
        By::Day => GroupBy::Day,
        By::Model => GroupBy::Model,
        By::Instance => GroupBy::Instance,
    };
    let summary = ledger.summary(&Filter { since_ms, ..Filter::default() }, by)?;
    let out = match args.format {
        Format::Table => summary.to_table(),
        Format::Csv => summary.to_csv(),
        Format::Json => serde_json::to_string_pretty(&summary)? + "\n",
    };
    print!("{out}");
    Ok(())
}
