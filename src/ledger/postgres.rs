//! The ledger in PostgreSQL, shared by a fleet of servers: the same tables and migration steps as
//! the SQLite file (in PostgreSQL's types), run under an advisory lock so replicas starting together
//! migrate once, and idempotent inserts by request id. One thread owns the connection (the
//! synchronous client must not run inside the async runtime) and reconnects when it drops; callers
//! wait for its answer.

use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use postgres::types::ToSql;
use postgres::{Client, NoTls};

use super::record::{CloudRow, Priced, Record, Row, Totals};
use super::sqlite::{cloud_columns, request_columns};
use super::store::{self, Filter, GroupBy, RawGroup, Store, StoreError};
use super::LedgerError;

/// Schema steps, one for each of the SQLite file's (`hearth_schema.version` says how many ran).
/// `seq` columns keep insertion order, which SQLite's `rowid` gives.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE requests (
    seq              BIGSERIAL,
    id               TEXT PRIMARY KEY,
    ts_ms            BIGINT NOT NULL,
    endpoint         TEXT NOT NULL,
    model            TEXT NOT NULL,
    quantization     TEXT NOT NULL,
    device           TEXT NOT NULL,
    outcome          TEXT NOT NULL,
    finish_reason    TEXT,
    prompt_tokens    BIGINT NOT NULL,
    cached_tokens    BIGINT NOT NULL,
    generated_tokens BIGINT NOT NULL,
    queue_ms         DOUBLE PRECISION NOT NULL,
    ttft_ms          DOUBLE PRECISION,
    total_ms         DOUBLE PRECISION NOT NULL,
    busy_s           DOUBLE PRECISION NOT NULL,
    energy_j         DOUBLE PRECISION NOT NULL,
    energy_method    TEXT NOT NULL,
    local_cost       DOUBLE PRECISION NOT NULL,
    local_currency   TEXT NOT NULL,
    price_version    TEXT NOT NULL,
    api_key_hash     TEXT
);
CREATE INDEX requests_ts ON requests (ts_ms);
CREATE TABLE cloud_costs (
    seq               BIGSERIAL,
    request_id        TEXT NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    comparator        TEXT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    cached_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    amount            DOUBLE PRECISION NOT NULL,
    currency          TEXT NOT NULL,
    estimate          BOOLEAN NOT NULL,
    PRIMARY KEY (request_id, comparator)
);
"#, r#"
ALTER TABLE requests ADD COLUMN tool_calls BIGINT NOT NULL DEFAULT 0;
"#, r#"
ALTER TABLE requests ADD COLUMN asked_model TEXT;
"#, r#"
ALTER TABLE requests ADD COLUMN instance_id TEXT;
CREATE INDEX requests_instance ON requests (instance_id);
"#];

/// Any number; it names hearth's migration lock among the database's advisory locks.
const MIGRATION_LOCK: i64 = 0x6865_6172_7468;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

pub struct Postgres {
    jobs: Mutex<mpsc::Sender<Job>>,
    shown: String,
}

/// The connection thread's state: the settings, and the client while connected.
struct Connection {
    config: postgres::Config,
    client: Option<Client>,
    shown: String,
}

impl Connection {
    /// The client, connecting (and migrating) first when there is none or it closed.
    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            let mut client = self.config.connect(NoTls).map_err(|e| StoreError::Unreachable(format!("{}: {e}", self.shown)))?;
            migrate(&mut client)?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }
}

/// Runs the schema steps this database lacks, one replica at a time.
fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS hearth_schema (version INTEGER NOT NULL)")?;
    let version = match tx.query_opt("SELECT version FROM hearth_schema", &[])? {
        Some(r) => r.get::<_, i32>(0) as usize,
        None => {
            tx.execute("INSERT INTO hearth_schema (version) VALUES (0)", &[])?;
            0
        }
    };
    if version > MIGRATIONS.len() {
        return Err(StoreError::Unreachable(format!("the database has ledger schema version {version}, newer than this hearth knows ({}); upgrade hearth", MIGRATIONS.len())));
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.batch_execute(step)?;
        tx.execute("UPDATE hearth_schema SET version = $1", &[&((i + 1) as i32)])?;
    }
    tx.commit()?;
    Ok(())
}

/// `url` without its password.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    match rest.split_once('@') {
        Some((user, host)) => format!("{scheme}://{}@{host}", user.split(':').next().unwrap_or("")),
        None => url.to_owned(),
    }
}

impl Postgres {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`). A database
    /// that is down is not an error here: writes are spooled until it answers.
    pub fn open(url: &str) -> Result<Postgres, LedgerError> {
        let shown = redact(url);
        let mut config: postgres::Config = url.parse().map_err(|e| LedgerError::Query(format!("ledger URL {shown}: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(3));
        }
        // A database gone silent (a cut network rather than a closed socket) fails the write
        // within seconds instead of holding every answer: the row is spooled.
        config.keepalives(true).keepalives_idle(Duration::from_secs(10)).tcp_user_timeout(Duration::from_secs(10));
        config.application_name("hearth");
        let (tx, rx) = mpsc::channel::<Job>();
        let mut conn = Connection { config, client: None, shown: shown.clone() };
        std::thread::Builder::new()
            .name("ledger-postgres".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| LedgerError::Query(format!("starting the ledger's database thread: {e}")))?;
        let pg = Postgres { jobs: Mutex::new(tx), shown };
        if let Err(e) = pg.call(|_| Ok(())) {
            if !e.transient() {
                return Err(LedgerError::Db { at: pg.shown.clone(), source: e });
            }
            tracing::warn!("the ledger database {} is not answering ({e}); rows are spooled until it does", pg.shown);
        }
        Ok(pg)
    }

    /// Runs `f` on the connection thread and waits for its answer. A connection error drops the
    /// client, so the next call reconnects.
    fn call<T: Send + 'static>(&self, f: impl FnOnce(&mut Client) -> Result<T, StoreError> + Send + 'static) -> Result<T, StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |conn: &mut Connection| {
            let result = conn.client().and_then(f);
            if result.as_ref().is_err_and(StoreError::transient) {
                conn.client = None;
            }
            let _ = reply.send(result);
        });
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).send(job).map_err(|_| StoreError::Unreachable("the ledger's database thread stopped".into()))?;
        answer.recv().unwrap_or_else(|_| Err(StoreError::Unreachable("the ledger's database thread stopped".into())))
    }
}

/// `INSERT INTO table (columns…) VALUES ($1, …) ON CONFLICT DO NOTHING`.
fn insert_sql(table: &str, columns: &[&str]) -> String {
    let slots: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
    format!("INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT DO NOTHING", columns.join(", "), slots.join(", "))
}

fn where_clause(f: &Filter) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let (clause, args) = store::where_clause(f, |i| format!("${i}"));
    let args = args
        .into_iter()
        .map(|a| -> Box<dyn ToSql + Sync + Send> {
            match a {
                Ok(n) => Box::new(n),
                Err(t) => Box::new(t),
            }
        })
        .collect();
    (clause, args)
}

fn read_rows(client: &mut Client, f: &Filter, limit: usize, offset: usize) -> Result<Vec<Row>, StoreError> {
    let (clause, args) = where_clause(f);
    let sql = format!("SELECT * FROM requests {clause} ORDER BY ts_ms DESC, seq DESC LIMIT {limit} OFFSET {offset}");
    let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| &**a as &(dyn ToSql + Sync)).collect();
    let mut rows = Vec::new();
    for r in client.query(&sql, &params)? {
        rows.push(Row { record: Record::pg_read(&r)?, priced: Priced::pg_read(&r)?, cloud: Vec::new() });
    }
    let cloud = client.prepare("SELECT * FROM cloud_costs WHERE request_id = $1 ORDER BY seq")?;
    for row in &mut rows {
        row.cloud = client.query(&cloud, &[&row.record.id])?.iter().map(CloudRow::pg_read).collect::<Result<_, _>>()?;
    }
    Ok(rows)
}

impl Store for Postgres {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn insert(&self, r: &Row) -> Result<bool, StoreError> {
        let r = r.clone();
        self.call(move |client| {
            let mut tx = client.transaction()?;
            let values: Vec<Box<dyn ToSql + Sync>> = r.record.pg_values().into_iter().chain(r.priced.pg_values()).collect();
            let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| &**v).collect();
            if tx.execute(&insert_sql("requests", &request_columns()), &params)? == 0 {
                return Ok(false);
            }
            let cloud = tx.prepare(&insert_sql("cloud_costs", &cloud_columns()))?;
            for c in &r.cloud {
                let values: Vec<Box<dyn ToSql + Sync>> = std::iter::once(Box::new(r.record.id.clone()) as Box<dyn ToSql + Sync>).chain(c.pg_values()).collect();
                let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| &**v).collect();
                tx.execute(&cloud, &params)?;
            }
            tx.commit()?;
            Ok(true)
        })
    }

    fn rows(&self, f: &Filter, limit: usize, offset: usize) -> Result<Vec<Row>, StoreError> {
        let f = f.clone();
        self.call(move |client| read_rows(client, &f, limit, offset))
    }

    fn get(&self, id: &str) -> Result<Option<Row>, StoreError> {
        let id = id.to_owned();
        self.call(move |client| {
            let Some(ts) = client.query_opt("SELECT ts_ms FROM requests WHERE id = $1", &[&id])?.map(|r| r.get::<_, i64>(0)) else { return Ok(None) };
            let rows = read_rows(client, &Filter { since_ms: Some(ts), until_ms: Some(ts + 1), ..Filter::default() }, 1000, 0)?;
            Ok(rows.into_iter().find(|r| r.record.id == id))
        })
    }

    fn count(&self, f: &Filter) -> Result<u64, StoreError> {
        let f = f.clone();
        self.call(move |client| {
            let (clause, args) = where_clause(&f);
            let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| &**a as &(dyn ToSql + Sync)).collect();
            Ok(client.query_one(&format!("SELECT count(*) FROM requests {clause}"), &params)?.get::<_, i64>(0).max(0) as u64)
        })
    }

    fn groups(&self, f: &Filter, by: GroupBy) -> Result<Vec<RawGroup>, StoreError> {
        let f = f.clone();
        self.call(move |client| {
            let key = match by {
                GroupBy::Day => "to_char(to_timestamp(ts_ms / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
                GroupBy::Model => "model",
                GroupBy::Instance => "coalesce(instance_id, '')",
                GroupBy::All => "'all'::TEXT",
            };
            let (clause, args) = where_clause(&f);
            let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| &**a as &(dyn ToSql + Sync)).collect();
            let sql = format!("SELECT {key} AS k, local_currency, sum(local_cost), {} FROM requests {clause} GROUP BY k, local_currency ORDER BY k", Totals::PG_SELECT);
            let mut groups: Vec<RawGroup> = Vec::new();
            for r in client.query(&sql, &params)? {
                let k: String = r.try_get(0)?;
                if groups.last().is_none_or(|g| g.key != k) {
                    groups.push(RawGroup { key: k, ..RawGroup::default() });
                }
                let g = groups.last_mut().expect("just pushed");
                g.totals.pg_add(&r, 3)?;
                g.local.push((r.try_get(1)?, r.try_get::<_, Option<f64>>(2)?.unwrap_or(0.0)));
            }
            let sql = format!(
                "SELECT {key} AS k, c.comparator, c.currency, sum(c.amount) FROM cloud_costs c JOIN requests ON requests.id = c.request_id
                 {clause} GROUP BY k, c.comparator, c.currency"
            );
            for r in client.query(&sql, &params)? {
                let k: String = r.try_get(0)?;
                if let Some(g) = groups.iter_mut().find(|g| g.key == k) {
                    g.cloud.push((r.try_get(1)?, r.try_get(2)?, r.try_get::<_, Option<f64>>(3)?.unwrap_or(0.0)));
                }
            }
            Ok(groups)
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(super::redact("postgres://hearth:s3cret@db:5432/ledger"), "postgres://hearth@db:5432/ledger");
        assert_eq!(super::redact("postgresql://db/ledger"), "postgresql://db/ledger");
    }
}
