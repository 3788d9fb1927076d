//! The cost ledger: what each request cost to run here (energy, hardware time) against what the
//! same tokens would have cost on paid cloud APIs, written to a SQLite file or, for a fleet, to
//! PostgreSQL. Depends on nothing of ours.
//!
//! [`Ledger::record`] prices one finished request and stores it before returning, so a response
//! that reports a cost is already durable (in the database, or in the local spool while the
//! database cannot take it). Listings and summaries read the same database.

mod postgres;
pub mod prices;
mod recount;
mod record;
pub mod report;
mod spool;
mod sqlite;
mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use prices::{Billed, CloudPrice, PriceTable};
pub use recount::PromptText;
pub use record::{CloudRow, Outcome, Priced, Record, Row, Totals};
pub use store::{Filter, GroupBy, StoreError};

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
    #[error("ledger {at}: {source}")]
    Db { at: String, source: StoreError },
    #[error("ledger spool {path}: {source}")]
    Spool { path: PathBuf, source: rusqlite::Error },
    #[error("ledger {at}: request id `{id}` is already recorded")]
    Duplicate { at: String, id: String },
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

/// Where the ledger lives: a SQLite file, or a PostgreSQL database shared by a fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    File(PathBuf),
    Postgres(String),
}

impl Target {
    /// `postgres://…` or `postgresql://…` is a database; anything else a file path.
    pub fn parse(s: &str) -> Target {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Target::Postgres(s.to_owned())
        } else {
            Target::File(PathBuf::from(s))
        }
    }

    /// For messages: the path, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Target::File(p) => p.display().to_string(),
            Target::Postgres(url) => postgres::redact(url),
        }
    }
}

pub struct Ledger {
    store: Arc<dyn store::Store>,
    spool: Arc<spool::Spool>,
    /// When the database last refused a row: for a moment after, rows go straight to the spool
    /// instead of each waiting out the busy timeout.
    refused_at: Arc<Mutex<Option<Instant>>>,
    prices: PriceTable,
    instance: Option<String>,
    /// Tells the thread that drains the spool in the background to stop.
    stop: Arc<AtomicBool>,
    /// Rows being written by [`Ledger::record_detached`], for [`Ledger::flush`] to wait on.
    detached: Arc<(Mutex<usize>, std::sync::Condvar)>,
}

/// How long after a refused write rows go straight to the spool.
const RETRY_AFTER: Duration = Duration::from_secs(2);

impl Drop for Ledger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Ledger {
    /// The SQLite ledger at `path`; its spool is `path` + `.spool.sqlite`.
    pub fn open(path: &Path, prices: PriceTable) -> Result<Ledger, LedgerError> {
        Ledger::open_target(&Target::File(path.to_owned()), None, prices)
    }

    /// The ledger at `target`. Rows the database cannot take wait in `spool` (default: beside a
    /// SQLite ledger; required for PostgreSQL) and are written when it can.
    pub fn open_target(target: &Target, spool: Option<&Path>, prices: PriceTable) -> Result<Ledger, LedgerError> {
        let (store, spool): (Arc<dyn store::Store>, PathBuf) = match target {
            Target::File(path) => {
                let mut beside = path.as_os_str().to_owned();
                beside.push(".spool.sqlite");
                (Arc::new(sqlite::Sqlite::open(path)?), spool.map_or_else(|| PathBuf::from(beside), Path::to_owned))
            }
            Target::Postgres(url) => {
                let spool = spool.ok_or_else(|| LedgerError::Query("a PostgreSQL ledger needs a local spool file".into()))?;
                (Arc::new(postgres::Postgres::open(url)?), spool.to_owned())
            }
        };
        let spool = Arc::new(spool::Spool::new(spool));
        if let Target::File(path) = target {
            import_line_spool(path, &spool)?;
        }
        let ledger = Ledger { store, spool, refused_at: Default::default(), prices, instance: None, stop: Default::default(), detached: Default::default() };
        let replayed = ledger.spool.drain(&*ledger.store);
        if replayed > 0 {
            tracing::info!("wrote {replayed} spooled rows to the ledger {}", ledger.describe());
        }
        ledger.drain_in_background();
        Ok(ledger)
    }

    /// Rows written from now on name `id` as the server that answered.
    pub fn with_instance(mut self, id: impl Into<String>) -> Self {
        self.instance = Some(id.into());
        self
    }

    /// Every few seconds, writes spooled rows to a database that takes them again, so they
    /// arrive without waiting for the next request.
    fn drain_in_background(&self) {
        let (store, spool, refused_at, stop) = (self.store.clone(), self.spool.clone(), self.refused_at.clone(), self.stop.clone());
        let _ = std::thread::Builder::new().name("ledger-spool".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                let recently = refused_at.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| t.elapsed() < RETRY_AFTER);
                if recently || spool.is_empty() {
                    continue;
                }
                let n = spool.drain(&*store);
                if spool.is_empty() {
                    *refused_at.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    tracing::info!("wrote {n} spooled rows to the ledger {}", store.describe());
                } else {
                    *refused_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                }
            }
        });
    }

    /// `ledger.sqlite` under hearth's home directory.
    pub fn default_path(home: &Path) -> PathBuf {
        home.join("ledger.sqlite")
    }

    /// The database, for messages (a path, or a URL without its password).
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    /// Prices `r` and stores it; returns once the row is committed (to the database, or to the
    /// spool while the database cannot take it). `prompt` and `completion` are the request's
    /// texts, re-counted with the cloud providers' tokenizers (not stored).
    pub fn record(&self, r: Record, prompt: Option<&PromptText>, completion: &str) -> Result<Cost, LedgerError> {
        let (row, cost) = self.price(r, prompt, completion);
        let recently_refused = self.refused_at.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| t.elapsed() < RETRY_AFTER);
        let waiting = !self.spool.is_empty();
        let written = match (recently_refused, waiting) {
            (true, _) => Err("the database refused a row a moment ago".to_owned()),
            (false, true) if self.spool.drain(&*self.store) == 0 && !self.spool.is_empty() => Err("spooled rows still wait".to_owned()),
            _ => match self.store.insert(&row) {
                Ok(true) => Ok(()),
                Ok(false) => return Err(LedgerError::Duplicate { at: self.describe(), id: row.record.id }),
                // A row the database rejects for good is an error, not something to retry.
                Err(e) if !e.transient() => return Err(LedgerError::Db { at: self.describe(), source: e }),
                Err(e) => Err(e.to_string()),
            },
        };
        if let Err(e) = written {
            // Busy past the timeout, down or failing: the row waits in the spool, durably, in order.
            *self.refused_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            tracing::warn!("the ledger {} did not take request {} ({e}); spooled to {}", self.describe(), row.record.id, self.spool.path().display());
            self.spool.push(&row).map_err(|source| LedgerError::Spool { path: self.spool.path().to_owned(), source })?;
        } else if waiting {
            *self.refused_at.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        Ok(cost)
    }

    /// [`Ledger::record`] on a thread of its own, for callers that cannot wait (a reply dropped
    /// because its client left); [`Ledger::flush`] waits for it.
    pub fn record_detached(self: &Arc<Self>, r: Record, prompt: Option<PromptText>, completion: String) {
        *self.detached.0.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        let ledger = self.clone();
        let write = move || {
            if let Err(e) = ledger.record(r, prompt.as_ref(), &completion) {
                tracing::error!("could not record a request in the ledger: {e}");
            }
            let (count, done) = &*ledger.detached;
            *count.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
            done.notify_all();
        };
        if let Err(e) = std::thread::Builder::new().name("ledger-write".into()).spawn(write) {
            tracing::error!("could not start a ledger write: {e}");
        }
    }

    /// Waits (up to `timeout`) for rows being written by [`Ledger::record_detached`]; then, if
    /// the database takes them, writes spooled rows. Returns the rows still spooled.
    pub fn flush(&self, timeout: Duration) -> usize {
        let (count, done) = &*self.detached;
        let held = count.lock().unwrap_or_else(|p| p.into_inner());
        drop(done.wait_timeout_while(held, timeout, |n| *n > 0).unwrap_or_else(|p| p.into_inner()));
        if !self.spool.is_empty() {
            self.spool.drain(&*self.store);
        }
        self.spool.len()
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
            instance_id: self.instance.clone(),
        };
        let row = Row { record: e, priced, cloud: cloud_rows };
        (row, cost)
    }

    fn db(&self) -> impl Fn(StoreError) -> LedgerError + '_ {
        |source| LedgerError::Db { at: self.describe(), source }
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

/// Moves the rows of the JSON-lines spool that earlier versions kept (`ledger.sqlite.spool`) into
/// the spool file, so an upgrade loses none.
fn import_line_spool(ledger: &Path, spool: &spool::Spool) -> Result<(), LedgerError> {
    let mut old = ledger.as_os_str().to_owned();
    old.push(".spool");
    let old = PathBuf::from(old);
    let Ok(text) = std::fs::read_to_string(&old) else { return Ok(()) };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Row>(line) {
            Ok(row) => spool.push(&row).map_err(|source| LedgerError::Spool { path: spool.path().to_owned(), source })?,
            Err(e) => tracing::error!("dropping an unreadable spooled ledger row ({e}): {line}"),
        }
    }
    std::fs::remove_file(&old).map_err(|source| LedgerError::Io { path: old, source })
}
