//! The SQLite ledger file: WAL mode, schema migrations by `user_version`, one row per finished
//! request with its cloud equivalents, and the queries behind listings and summaries.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::LedgerError;

/// Schema steps; `user_version` says how many have run.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE requests (
    id               TEXT PRIMARY KEY,
    ts_ms            INTEGER NOT NULL,
    endpoint         TEXT NOT NULL,
    model            TEXT NOT NULL,
    quantization     TEXT NOT NULL,
    device           TEXT NOT NULL,
    outcome          TEXT NOT NULL,
    finish_reason    TEXT,
    prompt_tokens    INTEGER NOT NULL,
    cached_tokens    INTEGER NOT NULL,
    generated_tokens INTEGER NOT NULL,
    queue_ms         REAL NOT NULL,
    ttft_ms          REAL,
    total_ms         REAL NOT NULL,
    busy_s           REAL NOT NULL,
    energy_j         REAL NOT NULL,
    energy_method    TEXT NOT NULL,
    local_cost       REAL NOT NULL,
    local_currency   TEXT NOT NULL,
    price_version    TEXT NOT NULL,
    api_key_hash     TEXT
);
CREATE INDEX requests_ts ON requests (ts_ms);
CREATE TABLE cloud_costs (
    request_id        TEXT NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    comparator        TEXT NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    cached_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    amount            REAL NOT NULL,
    currency          TEXT NOT NULL,
    estimate          INTEGER NOT NULL,
    PRIMARY KEY (request_id, comparator)
);
"#];

/// One comparator's price for one request, in its own currency.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CloudRow {
    pub comparator: String,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    pub amount: f64,
    pub currency: String,
    /// Token counts are hearth's own, not the provider's tokenizer's.
    pub estimate: bool,
}

/// One finished request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub id: String,
    pub time_ms: i64,
    pub endpoint: String,
    pub model: String,
    pub quantization: String,
    pub device: String,
    pub outcome: String,
    pub finish_reason: Option<String>,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub generated_tokens: u64,
    pub queue_ms: f64,
    pub ttft_ms: Option<f64>,
    pub total_ms: f64,
    pub busy_s: f64,
    pub energy_j: f64,
    pub energy_method: String,
    pub local_cost: f64,
    pub local_currency: String,
    pub price_version: String,
    pub api_key_hash: Option<String>,
    pub cloud: Vec<CloudRow>,
}

/// Which rows to list or sum.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub model: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Day,
    Model,
    All,
}

/// Sums of one group, costs still in their own currencies.
#[derive(Debug, Clone, Default)]
pub struct RawGroup {
    pub key: String,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub generated_tokens: u64,
    pub energy_j: f64,
    pub busy_s: f64,
    /// (currency, amount)
    pub local: Vec<(String, f64)>,
    /// (comparator, currency, amount)
    pub cloud: Vec<(String, String, f64)>,
}

pub struct Store {
    conn: Mutex<Connection>,
}

fn db(path: &Path) -> impl Fn(rusqlite::Error) -> LedgerError + '_ {
    move |e| LedgerError::Db { path: path.to_owned(), source: e }
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, LedgerError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| LedgerError::Io { path: dir.to_owned(), source: e })?;
        }
        let conn = Connection::open(path).map_err(db(path))?;
        // WAL with synchronous=NORMAL: a committed row survives the process being killed.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(db(path))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!("the ledger {} could not switch to WAL (mode {mode})", path.display());
        }
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;").map_err(db(path))?;
        let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(db(path))?;
        if version > MIGRATIONS.len() {
            return Err(LedgerError::Schema { path: path.to_owned(), found: version, known: MIGRATIONS.len() });
        }
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.unchecked_transaction().map_err(db(path))?;
            tx.execute_batch(step).map_err(db(path))?;
            tx.pragma_update(None, "user_version", i + 1).map_err(db(path))?;
            tx.commit().map_err(db(path))?;
        }
        Ok(Store { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes one request and its cloud equivalents in one transaction.
    pub fn insert(&self, r: &Row) -> rusqlite::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO requests VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
            params![
                r.id, r.time_ms, r.endpoint, r.model, r.quantization, r.device, r.outcome, r.finish_reason,
                r.prompt_tokens as i64, r.cached_tokens as i64, r.generated_tokens as i64, r.queue_ms, r.ttft_ms, r.total_ms,
                r.busy_s, r.energy_j, r.energy_method, r.local_cost, r.local_currency, r.price_version, r.api_key_hash
            ],
        )?;
        for c in &r.cloud {
            tx.execute(
                "INSERT INTO cloud_costs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![r.id, c.comparator, c.prompt_tokens as i64, c.cached_tokens as i64, c.completion_tokens as i64, c.amount, c.currency, c.estimate],
            )?;
        }
        tx.commit()
    }

    /// Rows matching `f`, newest first.
    pub fn rows(&self, f: &Filter, limit: usize, offset: usize) -> rusqlite::Result<Vec<Row>> {
        let conn = self.conn();
        let (clause, args) = where_clause(f);
        let sql = format!("SELECT * FROM requests {clause} ORDER BY ts_ms DESC, rowid DESC LIMIT {limit} OFFSET {offset}");
        let mut stmt = conn.prepare(&sql)?;
        let mut rows: Vec<Row> = stmt.query_map(rusqlite::params_from_iter(args), row_of)?.collect::<Result<_, _>>()?;
        let mut cloud = conn.prepare("SELECT comparator, prompt_tokens, cached_tokens, completion_tokens, amount, currency, estimate FROM cloud_costs WHERE request_id = ?1 ORDER BY rowid")?;
        for r in &mut rows {
            r.cloud = cloud
                .query_map([&r.id], |c| {
                    Ok(CloudRow {
                        comparator: c.get(0)?,
                        prompt_tokens: c.get::<_, i64>(1)? as u64,
                        cached_tokens: c.get::<_, i64>(2)? as u64,
                        completion_tokens: c.get::<_, i64>(3)? as u64,
                        amount: c.get(4)?,
                        currency: c.get(5)?,
                        estimate: c.get(6)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
        }
        Ok(rows)
    }

    pub fn get(&self, id: &str) -> rusqlite::Result<Option<Row>> {
        let found = self.conn().query_row("SELECT ts_ms FROM requests WHERE id = ?1", [id], |r| r.get::<_, i64>(0)).optional()?;
        let Some(ts) = found else { return Ok(None) };
        let rows = self.rows(&Filter { since_ms: Some(ts), until_ms: Some(ts + 1), model: None }, 1000, 0)?;
        Ok(rows.into_iter().find(|r| r.id == id))
    }

    pub fn count(&self, f: &Filter) -> rusqlite::Result<u64> {
        let (clause, args) = where_clause(f);
        let sql = format!("SELECT count(*) FROM requests {clause}");
        self.conn().query_row(&sql, rusqlite::params_from_iter(args), |r| r.get::<_, i64>(0)).map(|n| n as u64)
    }

    /// Sums per group, in key order.
    pub fn groups(&self, f: &Filter, by: GroupBy) -> rusqlite::Result<Vec<RawGroup>> {
        let key = match by {
            GroupBy::Day => "strftime('%Y-%m-%d', ts_ms / 1000, 'unixepoch')",
            GroupBy::Model => "model",
            GroupBy::All => "'all'",
        };
        let conn = self.conn();
        let (clause, args) = where_clause(f);
        let sql = format!(
            "SELECT {key} AS k, local_currency, count(*), sum(prompt_tokens), sum(cached_tokens), sum(generated_tokens), sum(energy_j), sum(busy_s), sum(local_cost)
             FROM requests {clause} GROUP BY k, local_currency ORDER BY k"
        );
        let mut groups: Vec<RawGroup> = Vec::new();
        let mut stmt = conn.prepare(&sql)?;
        let mut q = stmt.query(rusqlite::params_from_iter(args.iter()))?;
        while let Some(r) = q.next()? {
            let k: String = r.get(0)?;
            if groups.last().is_none_or(|g| g.key != k) {
                groups.push(RawGroup { key: k, ..RawGroup::default() });
            }
            let g = groups.last_mut().expect("just pushed");
            g.requests += r.get::<_, i64>(2)? as u64;
            g.prompt_tokens += r.get::<_, i64>(3)? as u64;
            g.cached_tokens += r.get::<_, i64>(4)? as u64;
            g.generated_tokens += r.get::<_, i64>(5)? as u64;
            g.energy_j += r.get::<_, f64>(6)?;
            g.busy_s += r.get::<_, f64>(7)?;
            g.local.push((r.get(1)?, r.get(8)?));
        }
        let sql = format!(
            "SELECT {key} AS k, c.comparator, c.currency, sum(c.amount) FROM cloud_costs c JOIN requests ON requests.id = c.request_id
             {clause} GROUP BY k, c.comparator, c.currency"
        );
        let mut stmt = conn.prepare(&sql)?;
        let mut q = stmt.query(rusqlite::params_from_iter(args.iter()))?;
        while let Some(r) = q.next()? {
            let k: String = r.get(0)?;
            if let Some(g) = groups.iter_mut().find(|g| g.key == k) {
                g.cloud.push((r.get(1)?, r.get(2)?, r.get(3)?));
            }
        }
        Ok(groups)
    }
}

fn where_clause(f: &Filter) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut parts = Vec::new();
    let mut args = Vec::new();
    if let Some(s) = f.since_ms {
        args.push(Value::Integer(s));
        parts.push(format!("ts_ms >= ?{}", args.len()));
    }
    if let Some(u) = f.until_ms {
        args.push(Value::Integer(u));
        parts.push(format!("ts_ms < ?{}", args.len()));
    }
    if let Some(m) = &f.model {
        args.push(Value::Text(m.clone()));
        parts.push(format!("model = ?{}", args.len()));
    }
    let clause = if parts.is_empty() { String::new() } else { format!("WHERE {}", parts.join(" AND ")) };
    (clause, args)
}

fn row_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        id: r.get("id")?,
        time_ms: r.get("ts_ms")?,
        endpoint: r.get("endpoint")?,
        model: r.get("model")?,
        quantization: r.get("quantization")?,
        device: r.get("device")?,
        outcome: r.get("outcome")?,
        finish_reason: r.get("finish_reason")?,
        prompt_tokens: r.get::<_, i64>("prompt_tokens")? as u64,
        cached_tokens: r.get::<_, i64>("cached_tokens")? as u64,
        generated_tokens: r.get::<_, i64>("generated_tokens")? as u64,
        queue_ms: r.get("queue_ms")?,
        ttft_ms: r.get("ttft_ms")?,
        total_ms: r.get("total_ms")?,
        busy_s: r.get("busy_s")?,
        energy_j: r.get("energy_j")?,
        energy_method: r.get("energy_method")?,
        local_cost: r.get("local_cost")?,
        local_currency: r.get("local_currency")?,
        price_version: r.get("price_version")?,
        api_key_hash: r.get("api_key_hash")?,
        cloud: Vec::new(),
    })
}
