//! Running untrusted Python (generated code) in a separate, confined process: the probe of what
//! isolation this machine allows ([`Isolation`], reported in bench output), the limits of a run
//! and its result. Linux only; elsewhere [`Sandbox::new`] says so.

#[cfg(target_os = "linux")]
mod confine;
#[cfg(target_os = "linux")]
mod host;
#[cfg(target_os = "linux")]
mod process;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Limits of one run. `memory_bytes` is address space per process (RLIMIT_AS), `processes` the
/// number of processes the sandbox user may have, `file_bytes` the largest file it may write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    pub memory_bytes: u64,
    pub processes: u64,
    pub file_bytes: u64,
}

impl Default for Limits {
    /// 10 s, 1 GiB of address space, 32 processes, 16 MiB per file.
    fn default() -> Self {
        Limits { timeout: Duration::from_secs(10), memory_bytes: 1 << 30, processes: 32, file_bytes: 16 << 20 }
    }
}

/// How much confinement a run gets; [`Sandbox::new`] picks the strongest the machine allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confinement {
    /// Root with CAP_SYS_ADMIN: new network, mount, PID, IPC and UTS namespaces, a private tmpfs
    /// over every world-writable directory, its own /proc, and a dedicated unused uid.
    Namespaces,
    /// An unprivileged user namespace: the same namespaces, but the code runs as this user.
    UserNamespace,
    /// Root without namespaces: a dedicated unused uid and resource limits.
    OwnUser,
    /// Resource limits and a session of its own only.
    LimitsOnly,
}

impl Confinement {
    /// Strongest first: the order the probe tries them in.
    pub const ALL: [Confinement; 4] = [Confinement::Namespaces, Confinement::UserNamespace, Confinement::OwnUser, Confinement::LimitsOnly];

    fn namespaces(self) -> bool {
        matches!(self, Confinement::Namespaces | Confinement::UserNamespace)
    }

    fn own_user(self) -> bool {
        matches!(self, Confinement::Namespaces | Confinement::OwnUser)
    }
}

impl fmt::Display for Confinement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Confinement::Namespaces => "namespaces + own uid",
            Confinement::UserNamespace => "user namespace",
            Confinement::OwnUser => "own uid",
            Confinement::LimitsOnly => "limits only",
        })
    }
}

/// What isolation this machine allowed, probed once; reported in bench output.
#[derive(Debug, Clone)]
pub struct Isolation {
    pub confinement: Confinement,
    /// A network namespace of its own (only a loopback that is down): no network at all.
    pub network: bool,
    /// Private size-limited tmpfs mounts, owned by root, over /tmp, /var/tmp, /dev/shm and every
    /// other world-writable directory; its work directory (`$HOME`, `$TMPDIR`) is in the new /tmp.
    pub private_tmp: bool,
    /// Runs as a dedicated unused uid: with `private_tmp`, its work directory is the only place
    /// it can write.
    pub own_user: bool,
    /// A PID namespace of its own: it sees only its processes, and all of them die with it.
    pub own_processes: bool,
    /// The interpreter used, with its version.
    pub python: String,
    /// What was not achieved and why, and other limits of the isolation.
    pub notes: Vec<String>,
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes = |b: bool, y: &'static str, n: &'static str| if b { y } else { n };
        writeln!(
            f,
            "sandbox: {}, python {}; network: {}; /tmp: {}; user: {}; processes: {}",
            self.confinement,
            self.python,
            yes(self.network, "none (own namespace)", "NOT isolated"),
            yes(self.private_tmp, "private tmpfs", "shared"),
            yes(self.own_user, "dedicated uid", "this user"),
            yes(self.own_processes, "own PID namespace", "shared"),
        )?;
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        Ok(())
    }
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Exited with status 0 before the timeout.
    pub passed: bool,
    pub timed_out: bool,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The last ~2 KiB of stderr (a failing test's traceback).
    pub stderr_tail: String,
    pub wall: Duration,
    /// The sandbox itself failed (could not start the process, …): not the program's fault.
    pub sandbox_error: Option<String>,
}

impl RunResult {
    fn not_started(message: String) -> RunResult {
        RunResult {
            passed: false,
            timed_out: false,
            exit_code: None,
            signal: None,
            stderr_tail: String::new(),
            wall: Duration::ZERO,
            sandbox_error: Some(message),
        }
    }

    /// One line: "passed", "timed out after 10.0 s", "exit code 1: AssertionError", …
    pub fn summary(&self) -> String {
        let last = self.stderr_tail.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        let how = match (&self.sandbox_error, self.timed_out, self.exit_code, self.signal) {
            (Some(e), ..) => return format!("sandbox error: {e}"),
            (None, true, ..) => format!("timed out after {:.1} s", self.wall.as_secs_f64()),
            (None, false, Some(0), _) => return "passed".into(),
            (None, false, Some(c), _) => format!("exit code {c}"),
            (None, false, None, Some(s)) => format!("killed by signal {s}"),
            (None, false, None, None) => "no exit status".into(),
        };
        if last.is_empty() {
            how
        } else {
            format!("{how}: {last}")
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the sandbox needs Linux (namespaces, setrlimit); this is {0}")]
    Unsupported(&'static str),
    #[error("no python3 that the sandbox ({confinement}) can run; tried: {tried}. Install python3 under a world-readable path (e.g. /usr/bin/python3) or set HEARTH_PYTHON")]
    NoPython { confinement: Confinement, tried: String },
    #[error("the sandbox with {confinement} was refused at {step}: {source}")]
    Refused { confinement: Confinement, step: String, source: std::io::Error },
    #[error("no sandbox could be set up on this machine: {0}")]
    Unavailable(String),
}

/// Runs Python programs confined as well as this machine allows. `Sync`: runs may go on from
/// several threads at once (each gets its own uid).
#[derive(Debug)]
pub struct Sandbox {
    isolation: Isolation,
    python: PathBuf,
    /// Directories covered with a private tmpfs in each run.
    tmpfs: Vec<PathBuf>,
}

impl Sandbox {
    /// Probes the strongest confinement this machine allows (namespaces + own uid, then a user
    /// namespace, then own uid, then limits only) and a python3 that runs inside it.
    pub fn new() -> Result<Sandbox, SandboxError> {
        let mut refused = Vec::new();
        for &c in Self::candidates() {
            match Sandbox::with_confinement(c) {
                Ok(mut s) => {
                    refused.append(&mut s.isolation.notes);
                    s.isolation.notes = refused;
                    return Ok(s);
                }
                Err(e @ SandboxError::Refused { .. }) => refused.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        if cfg!(not(target_os = "linux")) {
            return Err(SandboxError::Unsupported(std::env::consts::OS));
        }
        Err(SandboxError::Unavailable(refused.join("; ")))
    }

    fn candidates() -> &'static [Confinement] {
        if cfg!(target_os = "linux") {
            &Confinement::ALL
        } else {
            &[]
        }
    }

    /// Exactly this confinement, or the reason it is refused (for tests and `--sandbox` choices).
    #[cfg(not(target_os = "linux"))]
    pub fn with_confinement(_: Confinement) -> Result<Sandbox, SandboxError> {
        Err(SandboxError::Unsupported(std::env::consts::OS))
    }

    pub fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    /// The interpreter the runs use.
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// The uids this process's runs get, when they get their own (to look for leftovers).
    pub fn sandbox_uids(&self) -> Option<Range<u32>> {
        #[cfg(target_os = "linux")]
        if self.isolation.own_user {
            return Some(process::uids_of_this_process());
        }
        None
    }

    /// Runs `program` with `python3 -I -B -` (program on stdin) under `limits`. Never panics: a
    /// sandbox failure shows in [`RunResult::sandbox_error`].
    pub fn run_python(&self, program: &str, limits: &Limits) -> RunResult {
        #[cfg(target_os = "linux")]
        return self.run(program, limits).unwrap_or_else(|e| RunResult::not_started(describe_spawn_error(&e)));
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (program, limits);
            RunResult::not_started(SandboxError::Unsupported(std::env::consts::OS).to_string())
        }
    }
}

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux::describe_spawn_error;
