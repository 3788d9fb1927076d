//! What the sandbox needs to know about this machine: the directories any user may write to
//! (scanned once, then covered with private tmpfs mounts in each run) and the python3
//! interpreters worth trying.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// World-writable directories found on this machine.
#[derive(Debug)]
pub struct Scan {
    pub dirs: Vec<PathBuf>,
    pub notes: Vec<String>,
}

/// Directories always covered, world-writable or not, because the work directory and python's
/// temporary files go there.
const ALWAYS: [&str; 3] = ["/tmp", "/var/tmp", "/dev/shm"];
/// The walk (every file system but /proc and /sys) stops after this many directories or this
/// long; a note then says so.
const MAX_DIRS: usize = 500_000;
const MAX_TIME: Duration = Duration::from_secs(10);

/// The scan, done once per process (a second or two for a few hundred thousand directories).
pub fn world_writable() -> &'static Scan {
    static SCAN: OnceLock<Scan> = OnceLock::new();
    SCAN.get_or_init(scan)
}

fn scan() -> Scan {
    let skip: HashSet<&Path> = ["/proc", "/sys"].iter().map(Path::new).collect();
    let mut found: Vec<PathBuf> = Vec::new();
    let mut stack: Vec<PathBuf> = vec![PathBuf::from("/")];
    let (start, mut visited) = (Instant::now(), 0usize);
    let mut stopped = false;
    while let Some(dir) = stack.pop() {
        visited += 1;
        if visited > MAX_DIRS || start.elapsed() > MAX_TIME {
            stopped = true;
            break;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else { continue };
            if !kind.is_dir() {
                continue;
            }
            let path = entry.path();
            if skip.contains(path.as_path()) {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.permissions().mode() & 0o002 != 0 {
                found.push(path);
            } else {
                stack.push(path);
            }
        }
    }
    for dir in ALWAYS {
        let p = PathBuf::from(dir);
        if p.is_dir() && !p.is_symlink() && !found.contains(&p) {
            found.push(p);
        }
    }
    found.sort();
    let mut notes = Vec::new();
    if stopped {
        notes.push(format!(
            "the scan for world-writable directories stopped after {} directories ({:.1} s): any deeper ones stay writable to the sandbox user",
            visited - 1,
            start.elapsed().as_secs_f64()
        ));
    }
    Scan { dirs: found, notes }
}

/// Interpreters to try, best first: `$HEARTH_PYTHON`, the real binary behind `python3` on PATH
/// (pyenv's shims are scripts under /root), then the system's.
pub fn python_candidates() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut push = |p: PathBuf| {
        let p = std::fs::canonicalize(&p).unwrap_or(p);
        if p.is_file() && !out.contains(&p) {
            out.push(p);
        }
    };
    if let Some(p) = std::env::var_os("HEARTH_PYTHON").filter(|p| !p.is_empty()) {
        if let Some(p) = which(Path::new(&p)) {
            push(real_executable(&p).unwrap_or(p));
        }
    }
    if let Some(p) = which(Path::new("python3")) {
        push(real_executable(&p).unwrap_or(p));
    }
    for p in ["/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"] {
        push(PathBuf::from(p));
    }
    out
}

fn which(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return name.is_file().then(|| name.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Asks an interpreter (trusted: not the generated code) where its binary really is.
fn real_executable(python: &Path) -> Option<PathBuf> {
    let out = Command::new(python).args(["-I", "-c", "import sys; print(sys.executable)"]).output().ok()?;
    let path = String::from_utf8(out.stdout).ok()?;
    let path = PathBuf::from(path.trim());
    (out.status.success() && path.is_absolute()).then_some(path)
}
