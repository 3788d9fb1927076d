//! Rows the ledger database would not take (a SQLite file locked by another process past the busy
//! timeout, a PostgreSQL server that is down, a full disk): kept in a small local SQLite file,
//! committed with `synchronous = FULL`, and written to the database at the next chance, oldest
//! first. The database's inserts are idempotent by request id, so a row replayed after a crash
//! between its insert and its removal here is still stored once: every answered request ends as
//! exactly one row.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension};

use super::record::Row;
use super::store::Store;

pub struct Spool {
    path: PathBuf,
    /// Opened at the first row spooled (or found), so a ledger that never spools leaves no file.
    conn: Mutex<Option<Connection>>,
}

impl Spool {
    pub fn new(path: PathBuf) -> Spool {
        Spool { path, conn: Mutex::new(None) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the spool's connection, opening (and creating) the file first when `create`.
    fn with<T>(&self, create: bool, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<Option<T>> {
        let mut held = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_none() {
            if !create && !self.path.exists() {
                return Ok(None);
            }
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                let _ = std::fs::create_dir_all(dir);
            }
            let conn = Connection::open(&self.path)?;
            conn.execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;
                 CREATE TABLE IF NOT EXISTS spooled (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, row TEXT NOT NULL);",
            )?;
            *held = Some(conn);
        }
        f(held.as_ref().expect("opened above")).map(Some)
    }

    /// Keeps `row` until the database takes it; returns once it is committed to disk.
    pub fn push(&self, row: &Row) -> rusqlite::Result<()> {
        let json = serde_json::to_string(row).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        self.with(true, |c| c.execute("INSERT OR IGNORE INTO spooled (id, row) VALUES (?1, ?2)", [&row.record.id, &json]).map(drop))?;
        Ok(())
    }

    /// Rows waiting (0 when the spool cannot be read; that is logged).
    pub fn len(&self) -> usize {
        match self.with(false, |c| c.query_row("SELECT count(*) FROM spooled", [], |r| r.get::<_, i64>(0))) {
            Ok(n) => n.unwrap_or(0) as usize,
            Err(e) => {
                tracing::error!("cannot read the ledger spool {}: {e}", self.path.display());
                0
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes waiting rows to `store`, oldest first, stopping at the first the database cannot
    /// take for now (kept for next time). Returns how many left the spool.
    pub fn drain(&self, store: &dyn Store) -> usize {
        let mut done = 0;
        loop {
            let next = self.with(false, |c| c.query_row("SELECT seq, row FROM spooled ORDER BY seq LIMIT 1", [], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))).optional());
            let (seq, text) = match next {
                Ok(Some(Some(next))) => next,
                Ok(_) => return done,
                Err(e) => {
                    tracing::error!("cannot read the ledger spool {}: {e}", self.path.display());
                    return done;
                }
            };
            match serde_json::from_str::<Row>(&text) {
                Err(e) => tracing::error!("dropping an unreadable spooled ledger row ({e}): {text}"),
                Ok(row) => match store.insert(&row) {
                    Ok(_) => {}
                    Err(e) if e.transient() => return done,
                    // A row the database will never take must not hold up the ones behind it.
                    Err(e) => tracing::error!("dropping a spooled ledger row the database rejects ({e}): {text}"),
                },
            }
            if let Err(e) = self.with(false, |c| c.execute("DELETE FROM spooled WHERE seq = ?1", [seq])) {
                tracing::error!("cannot update the ledger spool {}: {e}", self.path.display());
                return done;
            }
            done += 1;
        }
    }
}
