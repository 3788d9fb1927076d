//! The SQLite ledger file: WAL mode, schema migrations by `user_version`, one row per finished
//! request with its cloud equivalents, and the queries behind listings and summaries.

use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

use rusqlite::{Connection, OptionalExtension, ToSql};

use super::record::{CloudRow, Priced, Record, Row, Totals};
use super::store::{self, Filter, GroupBy, RawGroup, Store, StoreError};
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
"#, r#"
ALTER TABLE requests ADD COLUMN tool_calls INTEGER NOT NULL DEFAULT 0;
"#, r#"
ALTER TABLE requests ADD COLUMN asked_model TEXT;
"#, r#"
ALTER TABLE requests ADD COLUMN instance_id TEXT;
CREATE INDEX requests_instance ON requests (instance_id);
"#];

pub struct Sqlite {
    conn: Mutex<Connection>,
    path: PathBuf,
}

fn db(path: &Path) -> impl Fn(rusqlite::Error) -> LedgerError + '_ {
    move |e| LedgerError::Db { at: path.display().to_string(), source: e.into() }
}

impl Sqlite {
    pub fn open(path: &Path) -> Result<Sqlite, LedgerError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| LedgerError::Io { path: dir.to_owned(), source: e })?;
        }
        let conn = Connection::open(path).map_err(db(path))?;
        // WAL with synchronous=NORMAL: a committed row survives the process being killed.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(db(path))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!("the ledger {} could not switch to WAL (mode {mode})", path.display());
        }
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 2000;").map_err(db(path))?;
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
        Ok(Sqlite { conn: Mutex::new(conn), path: path.to_owned() })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn rows_where(&self, f: &Filter, limit: usize, offset: usize) -> rusqlite::Result<Vec<Row>> {
        let conn = self.conn();
        let (clause, args) = where_clause(f);
        let sql = format!("SELECT * FROM requests {clause} ORDER BY ts_ms DESC, rowid DESC LIMIT {limit} OFFSET {offset}");
        let mut stmt = conn.prepare(&sql)?;
        let read = |r: &rusqlite::Row<'_>| Ok(Row { record: Record::read(r)?, priced: Priced::read(r)?, cloud: Vec::new() });
        let mut rows: Vec<Row> = stmt.query_map(rusqlite::params_from_iter(args), read)?.collect::<Result<_, _>>()?;
        let mut cloud = conn.prepare("SELECT * FROM cloud_costs WHERE request_id = ?1 ORDER BY rowid")?;
        for r in &mut rows {
            r.cloud = cloud.query_map([&r.record.id], CloudRow::read)?.collect::<Result<_, _>>()?;
        }
        Ok(rows)
    }

    fn groups_where(&self, f: &Filter, by: GroupBy) -> rusqlite::Result<Vec<RawGroup>> {
        let key = match by {
            GroupBy::Day => "strftime('%Y-%m-%d', ts_ms / 1000, 'unixepoch')",
            GroupBy::Model => "model",
            GroupBy::Instance => "coalesce(instance_id, '')",
            GroupBy::All => "'all'",
        };
        let conn = self.conn();
        let (clause, args) = where_clause(f);
        let sql = format!(
            "SELECT {key} AS k, local_currency, sum(local_cost), {}
             FROM requests {clause} GROUP BY k, local_currency ORDER BY k",
            Totals::SELECT
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
            g.totals.add(r, 3)?;
            g.local.push((r.get(1)?, r.get(2)?));
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

impl Store for Sqlite {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn insert(&self, r: &Row) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let values: Vec<&dyn ToSql> = r.record.values().into_iter().chain(r.priced.values()).collect();
        if tx.execute(&INSERT_REQUEST, values.as_slice())? == 0 {
            return Ok(false);
        }
        for c in &r.cloud {
            let values: Vec<&dyn ToSql> = [&r.record.id as &dyn ToSql].into_iter().chain(c.values()).collect();
            tx.execute(&INSERT_CLOUD, values.as_slice())?;
        }
        tx.commit()?;
        Ok(true)
    }

    fn rows(&self, f: &Filter, limit: usize, offset: usize) -> Result<Vec<Row>, StoreError> {
        Ok(self.rows_where(f, limit, offset)?)
    }

    fn get(&self, id: &str) -> Result<Option<Row>, StoreError> {
        let found = self.conn().query_row("SELECT ts_ms FROM requests WHERE id = ?1", [id], |r| r.get::<_, i64>(0)).optional()?;
        let Some(ts) = found else { return Ok(None) };
        let rows = self.rows_where(&Filter { since_ms: Some(ts), until_ms: Some(ts + 1), ..Filter::default() }, 1000, 0)?;
        Ok(rows.into_iter().find(|r| r.record.id == id))
    }

    fn count(&self, f: &Filter) -> Result<u64, StoreError> {
        let (clause, args) = where_clause(f);
        let sql = format!("SELECT count(*) FROM requests {clause}");
        Ok(self.conn().query_row(&sql, rusqlite::params_from_iter(args), |r| r.get::<_, i64>(0)).map(|n| n as u64)?)
    }

    fn groups(&self, f: &Filter, by: GroupBy) -> Result<Vec<RawGroup>, StoreError> {
        Ok(self.groups_where(f, by)?)
    }
}

fn where_clause(f: &Filter) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let (clause, args) = store::where_clause(f, |i| format!("?{i}"));
    let args = args.into_iter().map(|a| a.map_or_else(Value::Text, Value::Integer)).collect();
    (clause, args)
}

/// The `requests` columns a [`Row`] writes: its record's, then its price's.
pub(super) fn request_columns() -> Vec<&'static str> {
    Record::COLUMNS.iter().chain(Priced::COLUMNS).copied().collect()
}

/// The `cloud_costs` columns: the request's id, then a [`CloudRow`]'s.
pub(super) fn cloud_columns() -> Vec<&'static str> {
    ["request_id"].iter().chain(CloudRow::COLUMNS).copied().collect()
}

static INSERT_REQUEST: LazyLock<String> = LazyLock::new(|| insert_sql("requests", &request_columns()));
static INSERT_CLOUD: LazyLock<String> = LazyLock::new(|| insert_sql("cloud_costs", &cloud_columns()));

/// `INSERT OR IGNORE INTO table (columns…) VALUES (?1, …)`: a row whose id is there is skipped.
fn insert_sql(table: &str, columns: &[&str]) -> String {
    let slots: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
    format!("INSERT OR IGNORE INTO {table} ({}) VALUES ({})", columns.join(", "), slots.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The columns the migrations create, in order.
    fn table_columns(conn: &Connection, table: &str) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})")).unwrap();
        stmt.query_map([], |r| r.get::<_, String>("name")).unwrap().collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn the_records_columns_are_the_migrated_tables_columns() {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(&dir.path().join("l.sqlite")).unwrap();
        let conn = store.conn();
        let mut have = table_columns(&conn, "requests");
        have.sort();
        let mut want: Vec<String> = request_columns().iter().map(|c| c.to_string()).collect();
        want.sort();
        assert_eq!(have, want);
        assert_eq!(table_columns(&conn, "cloud_costs"), cloud_columns());
    }
}
