//! Rows the database would not take (locked by another process past the busy timeout, a full
//! disk): appended to a JSON-lines file beside the ledger and synced, then written to the
//! database at the next chance, each once (a row whose id is already there is dropped). So every
//! answered request ends as exactly one row.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::record::Row;
use super::store::Store;

pub struct Spool {
    path: PathBuf,
    lock: Mutex<()>,
}

impl Spool {
    /// The spool of the ledger at `ledger` (`ledger.sqlite.spool`).
    pub fn beside(ledger: &Path) -> Spool {
        let mut name = ledger.as_os_str().to_owned();
        name.push(".spool");
        Spool { path: PathBuf::from(name), lock: Mutex::new(()) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps `row` until the database takes it; returns once it is on disk.
    pub fn push(&self, row: &Row) -> std::io::Result<()> {
        let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut f = OpenOptions::new().create(true).append(true).open(&self.path)?;
        let line = serde_json::to_string(row).map_err(std::io::Error::other)?;
        f.write_all(format!("{line}\n").as_bytes())?;
        f.sync_data()
    }

    /// Rows waiting.
    pub fn len(&self) -> usize {
        let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        std::fs::read_to_string(&self.path).map_or(0, |t| t.lines().filter(|l| !l.trim().is_empty()).count())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes waiting rows to `store`, oldest first, stopping at the first the database refuses
    /// (kept for next time). Returns how many were written.
    pub fn drain(&self, store: &Store) -> usize {
        let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let Ok(text) = std::fs::read_to_string(&self.path) else { return 0 };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut done = 0;
        for line in &lines {
            let row: Row = match serde_json::from_str(line) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("dropping an unreadable spooled ledger row ({e}): {line}");
                    done += 1;
                    continue;
                }
            };
            match store.contains(&row.record.id).and_then(|there| if there { Ok(()) } else { store.insert(&row) }) {
                Ok(()) => done += 1,
                Err(e) if super::transient(&e) => break,
                // A row the database will never take must not hold up the ones behind it.
                Err(e) => {
                    tracing::error!("dropping a spooled ledger row the database rejects ({e}): {line}");
                    done += 1;
                }
            }
        }
        let rest: String = lines[done..].iter().map(|l| format!("{l}\n")).collect();
        let result = if rest.is_empty() {
            std::fs::remove_file(&self.path)
        } else {
            let tmp = self.path.with_extension("spool.tmp");
            std::fs::write(&tmp, rest).and_then(|_| std::fs::rename(&tmp, &self.path))
        };
        if let Err(e) = result {
            tracing::error!("could not rewrite the ledger spool {}: {e}", self.path.display());
        }
        done
    }
}
