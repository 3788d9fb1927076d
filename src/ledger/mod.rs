//! The cost ledger: what each request cost to run here (energy, hardware time) against what the
//! same tokens would have cost on paid cloud APIs, written to SQLite. Depends on nothing of ours.
//!
//! [`Ledger::record`] prices one finished request and stores it before returning, so a response
//! that reports a cost is already durable. Listings and summaries read the same file.

pub mod prices;
mod recount;
mod record;
pub mod report;
mod spool;
mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use prices::{Billed, CloudPrice, PriceTable};
pub use recount::PromptText;
pub use record::{CloudRow, Outcome, Priced, Record, Row, Totals};
pub use store::{Filter, GroupBy};

/// Builds the providers' tokenizers ahead of the first request that needs them.
pub fn warm_up() {
    for t in [prices::CloudTokenizer::O200k, prices::CloudTokenizer::Cl100k] {
        recount::count(t, "warm up");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("price file {path}: {message}")]
    Prices { path: PathBuf, message: String },
    #[error("ledger {path}: {source}")]
    Db { path: PathBuf, source: rusqlite::Error },
    #[error("ledger directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("ledger {path} has schema version {found}, newer than this hearth knows ({known}); upgrade hearth")]
    Schema { path: PathBuf, found: usize, known: usize },
    #[error("{0}")]
    Query(String),
}

impl LedgerError {
    fn prices(path: &Path, message: impl Into<String>) -> Self {
        LedgerError::Prices { path: path.to_owned(), message: message.into() }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LocalCost {
    pub amount: f64,
    pub currency: String,
    pub electricity: f64,
    pub hardware: f64,
    pub energy_j: f64,
    pub energy_method: String,
    pub busy_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Converted {
    pub amount: f64,
    pub currency: String,
    /// Display-currency units per unit of the comparator's currency.
    pub rate: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CloudCost {
    pub model: String,
    pub amount: f64,
    pub currency: String,
    /// Counted with hearth's tokenizer, not the provider's.
    pub estimate: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub converted: Option<Converted>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Saved {
    pub vs: String,
    pub amount: f64,
    pub currency: String,
}

/// What one request cost, here and on the comparators shown.
#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    pub local: LocalCost,
    pub cloud: Vec<CloudCost>,
    pub saved: Option<Saved>,
    pub price_version: String,
}

pub struct Ledger {
    store: store::Store,
    spool: spool::Spool,
    /// When the database last refused a row: for a moment after, rows go straight to the spool
    /// instead of each waiting out the busy timeout.
    refused_at: std::sync::Mutex<Option<std::time::Instant>>,
    prices: PriceTable,
    path: PathBuf,
}

/// Whether a failed write may succeed later: the database busy or locked, the disk full or failing.
pub(crate) fn transient(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::*;
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if matches!(f.code, DatabaseBusy | DatabaseLocked | DiskFull | SystemIoFailure | CannotOpen | ReadOnly))
}

/// How long after a refused write rows go straight to the spool.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

impl Ledger {
    pub fn open(path: &Path, prices: PriceTable) -> Result<Ledger, LedgerError> {
        let ledger = Ledger { store: store::Store::open(path)?, spool: spool::Spool::beside(path), refused_at: Default::default(), prices, path: path.to_owned() };
        let replayed = ledger.spool.drain(&ledger.store);
        if replayed > 0 {
            tracing::info!("wrote {replayed} spooled rows to the ledger {}", path.display());
        }
        Ok(ledger)
    }

    /// `ledger.sqlite` under hearth's home directory.
    pub fn default_path(home: &Path) -> PathBuf {
        home.join("ledger.sqlite")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    /// Prices `r` and stores it; returns once the row is committed. `prompt` and `completion`
    /// are the request's texts, re-counted with the cloud providers' tokenizers (not stored).
    pub fn record(&self, r: Record, prompt: Option<&PromptText>, completion: &str) -> Result<Cost, LedgerError> {
        let (row, cost) = self.price(r, prompt, completion);
        let recently_refused = self.refused_at.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| t.elapsed() < RETRY_AFTER);
        let waiting = !self.spool.is_empty();
        let written = match (recently_refused, waiting) {
            (true, _) => Err("the database refused a row a moment ago".to_owned()),
            (false, true) if self.spool.drain(&self.store) == 0 && !self.spool.is_empty() => Err("spooled rows still wait".to_owned()),
            _ => match self.store.insert(&row) {
                Ok(()) => Ok(()),
                // A row the database rejects (a duplicate id) is an error, not something to retry.
                Err(e) if !transient(&e) => return Err(LedgerError::Db { path: self.path.clone(), source: e }),
                Err(e) => Err(e.to_string()),
            },
        };
        if let Err(e) = written {
            // Busy past the timeout, or failing: the row waits in the spool, durably, in order.
            *self.refused_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
            tracing::warn!("the ledger {} did not take request {} ({e}); spooled to {}", self.path.display(), row.record.id, self.spool.path().display());
            self.spool.push(&row).map_err(|io| LedgerError::Io { path: self.spool.path().to_owned(), source: io })?;
        } else if waiting {
            *self.refused_at.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        Ok(cost)
    }

    /// Rows waiting in the spool for the database.
    pub fn spooled(&self) -> usize {
        self.spool.len()
    }

    /// The row to store and the cost to show for `e`.
    pub fn price(&self, e: Record, prompt: Option<&PromptText>, completion: &str) -> (Row, Cost) {
        let p = &self.prices;
        let (electricity, hardware) = p.local.cost(e.energy_j, e.busy_s);
        let to_display = p.to_display(&p.local.currency);
        let local_amount = electricity + hardware;
        let mut counts: BTreeMap<prices::CloudTokenizer, (u64, u64)> = BTreeMap::new();
        let cloud_rows: Vec<CloudRow> = p
            .models
            .iter()
            .map(|m| {
                let recounted = m.tokenizer.zip(prompt).map(|(t, text)| {
                    *counts.entry(t).or_insert_with(|| (recount::prompt_tokens(t, text), recount::count(t, completion)))
                });
                let billed = match recounted {
                    Some((prompt, completion)) => {
                        let cached = if e.prompt_tokens == 0 { 0 } else { (e.cached_tokens as f64 * prompt as f64 / e.prompt_tokens as f64).round() as u64 };
                        Billed { prompt, cached: cached.min(prompt), completion }
                    }
                    None => Billed { prompt: e.prompt_tokens, cached: e.cached_tokens, completion: e.generated_tokens },
                };
                CloudRow {
                    comparator: m.id.clone(),
                    prompt_tokens: billed.prompt,
                    cached_tokens: billed.cached,
                    completion_tokens: billed.completion,
                    amount: m.cost(billed),
                    currency: m.currency.clone(),
                    estimate: recounted.is_none(),
                }
            })
            .collect();
        let display = p.currency.display.clone();
        // A client that asked for a priced cloud model by name (Claude Code asking for
        // `claude-sonnet-4-5-20250929`) is compared with that model first.
        let asked = e.asked_model.as_deref().and_then(|a| cloud_rows.iter().map(|c| &c.comparator).filter(|id| a.starts_with(id.as_str())).max_by_key(|id| id.len()));
        let mut compare: Vec<&String> = asked.into_iter().collect();
        compare.extend(p.compare.iter().filter(|id| Some(*id) != asked));
        let cloud: Vec<CloudCost> = compare
            .into_iter()
            .filter_map(|id| cloud_rows.iter().find(|c| &c.comparator == id))
            .map(|c| CloudCost {
                model: c.comparator.clone(),
                amount: c.amount,
                currency: c.currency.clone(),
                estimate: c.estimate,
                converted: (c.currency != display).then(|| {
                    let rate = p.to_display(&c.currency);
                    Converted { amount: c.amount * rate, currency: display.clone(), rate }
                }),
            })
            .collect();
        let local_display = local_amount * to_display;
        let saved = cloud.first().map(|c| Saved {
            vs: c.model.clone(),
            amount: c.converted.as_ref().map_or(c.amount, |x| x.amount) - local_display,
            currency: display.clone(),
        });
        let cost = Cost {
            local: LocalCost {
                amount: local_display,
                currency: display.clone(),
                electricity: electricity * to_display,
                hardware: hardware * to_display,
                energy_j: e.energy_j,
                energy_method: e.energy_method.clone(),
                busy_s: e.busy_s,
            },
            cloud,
            saved,
            price_version: p.version.clone(),
        };
        let priced = Priced {
            ts_ms: chrono::Utc::now().timestamp_millis(),
            local_cost: local_amount,
            local_currency: p.local.currency.clone(),
            price_version: p.version.clone(),
        };
        let row = Row { record: e, priced, cloud: cloud_rows };
        (row, cost)
    }

    fn db(&self) -> impl Fn(rusqlite::Error) -> LedgerError + '_ {
        |s| LedgerError::Db { path: self.path.clone(), source: s }
    }

    /// Rows matching `f`, newest first, and how many match in all.
    pub fn rows(&self, f: &Filter, limit: usize, offset: usize) -> Result<(Vec<Row>, u64), LedgerError> {
        let rows = self.store.rows(f, limit, offset).map_err(self.db())?;
        Ok((rows, self.store.count(f).map_err(self.db())?))
    }

    pub fn row(&self, id: &str) -> Result<Option<Row>, LedgerError> {
        self.store.get(id).map_err(self.db())
    }

    /// Totals per group and overall, in the display currency.
    pub fn summary(&self, f: &Filter, by: GroupBy) -> Result<report::Summary, LedgerError> {
        let groups = self.store.groups(f, by).map_err(self.db())?;
        let total = self.store.groups(f, GroupBy::All).map_err(self.db())?;
        Ok(report::Summary::new(&self.prices, groups, total.into_iter().next().unwrap_or_default()))
    }
}
