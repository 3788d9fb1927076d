//! What a ledger database does, whichever it is (a SQLite file on this machine, PostgreSQL for a
//! fleet): store a row once, list rows, sum them by day, model or instance. The filters and
//! groupings are written here once; each back-end turns them into its SQL.

use super::record::{Row, Totals};

/// Which rows to list or sum.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub model: Option<String>,
    /// Rows written by this server (`--instance-id`).
    pub instance: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Day,
    Model,
    /// The server that answered; rows from before fleets have an empty key.
    Instance,
    All,
}

/// Sums of one group, costs still in their own currencies.
#[derive(Debug, Clone, Default)]
pub struct RawGroup {
    pub key: String,
    pub totals: Totals,
    /// (currency, amount)
    pub local: Vec<(String, f64)>,
    /// (comparator, currency, amount)
    pub cloud: Vec<(String, String, f64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Postgres(#[from] postgres::Error),
    /// No connection to the database (it is down, or refused us).
    #[error("cannot reach the database: {0}")]
    Unreachable(String),
}

impl StoreError {
    /// Whether the write may succeed later: the database busy, locked, down or out of space. A
    /// row refused for such a reason waits in the spool; any other refusal is final.
    pub fn transient(&self) -> bool {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                use rusqlite::ErrorCode::*;
                matches!(f.code, DatabaseBusy | DatabaseLocked | DiskFull | SystemIoFailure | CannotOpen | ReadOnly)
            }
            StoreError::Sqlite(_) => false,
            // SQLSTATE classes 08 (connection), 40 (rolled back), 53 (resources), 57 (shutting
            // down); an error without a SQLSTATE is the connection's (closed, I/O, timeout).
            StoreError::Postgres(e) => e.as_db_error().is_none_or(|d| ["08", "40", "53", "57"].iter().any(|c| d.code().code().starts_with(c))),
            StoreError::Unreachable(_) => true,
        }
    }
}

/// A ledger database. Every method returns when the database has answered.
pub trait Store: Send + Sync {
    /// Where it is, for messages (a path, or a URL without its password).
    fn describe(&self) -> String;
    /// Writes a request and its cloud equivalents in one transaction; `false` (nothing written)
    /// when a row with its id is already there, so a replayed row is never stored twice.
    fn insert(&self, r: &Row) -> Result<bool, StoreError>;
    /// Rows matching `f`, newest first.
    fn rows(&self, f: &Filter, limit: usize, offset: usize) -> Result<Vec<Row>, StoreError>;
    fn get(&self, id: &str) -> Result<Option<Row>, StoreError>;
    fn count(&self, f: &Filter) -> Result<u64, StoreError>;
    /// Sums per group, in key order.
    fn groups(&self, f: &Filter, by: GroupBy) -> Result<Vec<RawGroup>, StoreError>;
}

/// `WHERE …` for `f` with placeholders from `slot(n)` (1-based), and the arguments in order:
/// `Ok` a number, `Err` a text.
pub(super) fn where_clause(f: &Filter, slot: impl Fn(usize) -> String) -> (String, Vec<Result<i64, String>>) {
    let mut parts = Vec::new();
    let mut args = Vec::new();
    let mut add = |column: &str, op: &str, v: Result<i64, String>| {
        args.push(v);
        parts.push(format!("{column} {op} {}", slot(args.len())));
    };
    if let Some(s) = f.since_ms {
        add("ts_ms", ">=", Ok(s));
    }
    if let Some(u) = f.until_ms {
        add("ts_ms", "<", Ok(u));
    }
    if let Some(m) = &f.model {
        add("model", "=", Err(m.clone()));
    }
    if let Some(i) = &f.instance {
        add("instance_id", "=", Err(i.clone()));
    }
    let clause = if parts.is_empty() { String::new() } else { format!("WHERE {}", parts.join(" AND ")) };
    (clause, args)
}
