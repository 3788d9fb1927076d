//! The Linux sandbox: trying one confinement (`/bin/true`, then the python3 candidates), preparing
//! each run's child setup and work directory, and the notes saying what a confinement leaves open.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::confine::{ChildSetup, Step};
use super::process::{self, UidSlot};
use super::{host, Confinement, Isolation, Limits, RunResult, Sandbox, SandboxError};

/// The work directory, inside the private /tmp (namespaces) or under the host's temp dir.
const NS_WORK: &str = "/tmp/work";
/// The code's uid/gid inside a user namespace when hearth is root: never 0, so that exec drops
/// the namespace's capabilities (it could otherwise unmount its private /tmp).
const INNER_ID: u32 = 1000;
const PATH: &str = "/usr/local/bin:/usr/bin:/bin";
const VERSION_PROGRAM: &str = "import sys\nsys.stderr.write(sys.version.split()[0])\nassert sys.version_info >= (3, 6)\n";

impl Sandbox {
    /// Exactly this confinement, or the reason it is refused (tests use it to check the weaker ones).
    pub fn with_confinement(c: Confinement) -> Result<Sandbox, SandboxError> {
        let scan = host::world_writable();
        let mut sandbox = Sandbox {
            isolation: isolation(c, scan),
            python: PathBuf::new(),
            tmpfs: if c.namespaces() { scan.dirs.clone() } else { Vec::new() },
        };
        if let Some(t) = ["/bin/true", "/usr/bin/true"].into_iter().map(Path::new).find(|p| p.is_file()) {
            let r = sandbox.run_program(t, &[], "", &Limits::default()).map_err(|e| refused(c, e))?;
            if !r.passed {
                let source = io::Error::other(r.summary());
                return Err(SandboxError::Refused { confinement: c, step: format!("running {}", t.display()), source });
            }
        }
        let mut skipped = Vec::new();
        for py in host::python_candidates() {
            sandbox.python = py.clone();
            match sandbox.run(VERSION_PROGRAM, &Limits::default()) {
                Err(e) if Step::decode(&e).is_some() => return Err(refused(c, e)),
                Err(e) => skipped.push(format!("{}: {e}", py.display())),
                Ok(r) if r.passed => {
                    sandbox.isolation.python = format!("{} ({})", py.display(), r.stderr_tail.trim());
                    for s in skipped {
                        sandbox.isolation.notes.push(format!("python {s}: it cannot run in the sandbox"));
                    }
                    return Ok(sandbox);
                }
                Ok(r) => skipped.push(format!("{}: {}", py.display(), r.summary())),
            }
        }
        let tried = if skipped.is_empty() { "no python3 found on PATH or in /usr/bin".into() } else { skipped.join("; ") };
        Err(SandboxError::NoPython { confinement: c, tried })
    }

    pub(super) fn run(&self, program: &str, limits: &Limits) -> io::Result<RunResult> {
        self.run_program(&self.python, &["-I", "-B", "-"], program, limits)
    }

    fn run_program(&self, exe: &Path, args: &[&str], stdin: &str, limits: &Limits) -> io::Result<RunResult> {
        let c = self.isolation.confinement;
        let slot = c.own_user().then(UidSlot::acquire);
        let (uid, gid) = match &slot {
            Some(s) => (s.uid(), s.uid()),
            None => unsafe { (libc::geteuid(), libc::getegid()) },
        };
        let host_work = if c.namespaces() { None } else { Some(WorkDir::create(uid, gid, c.own_user())?) };
        let work = host_work.as_ref().map_or_else(|| PathBuf::from(NS_WORK), |w| w.0.clone());
        let setup = self.setup(limits, uid, gid, &work)?;
        let mut cmd = Command::new(exe);
        cmd.args(args).env_clear().env("PATH", PATH).env("HOME", &work).env("TMPDIR", &work).env("LANG", "C.UTF-8");
        let start = Instant::now();
        let child = process::spawn(&mut cmd, setup)?;
        Ok(process::finish(child, stdin, start, limits.timeout, slot.as_ref().map(UidSlot::uid), c.namespaces()))
    }

    fn setup(&self, limits: &Limits, uid: u32, gid: u32, work: &Path) -> io::Result<ChildSetup> {
        let c = self.isolation.confinement;
        let cpu = (limits.timeout.as_secs_f64().ceil() as u64).saturating_add(1);
        let mut nproc = limits.processes;
        if c == Confinement::LimitsOnly {
            // RLIMIT_NPROC counts all of this user's processes: allow that many more.
            nproc = nproc.saturating_add(count_processes(uid));
        }
        let rlimits = vec![
            (libc::RLIMIT_CPU as i32, cpu),
            (libc::RLIMIT_AS as i32, limits.memory_bytes),
            (libc::RLIMIT_NPROC as i32, nproc),
            (libc::RLIMIT_FSIZE as i32, limits.file_bytes),
            (libc::RLIMIT_NOFILE as i32, 64),
            (libc::RLIMIT_CORE as i32, 0),
        ];
        let inner = |outer: u32| if outer == 0 { INNER_ID } else { outer };
        let tmpfs_size = limits.file_bytes.saturating_mul(4).clamp(8 << 20, 1 << 30);
        Ok(ChildSetup {
            confinement: c,
            uid,
            gid,
            uid_map: format!("{} {uid} 1\n", inner(uid)).into_bytes(),
            gid_map: format!("{} {gid} 1\n", inner(gid)).into_bytes(),
            tmpfs: self.tmpfs.iter().map(|p| c_path(p)).collect::<io::Result<_>>()?,
            tmpfs_options: CString::new(format!("size={tmpfs_size},nr_inodes=4096,mode=0755")).map_err(io::Error::other)?,
            work: c_path(work)?,
            rlimits,
        })
    }
}

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

fn refused(c: Confinement, e: io::Error) -> SandboxError {
    match Step::decode(&e) {
        Some((step, source)) => SandboxError::Refused { confinement: c, step: step.to_string(), source },
        None => SandboxError::Refused { confinement: c, step: "spawn".into(), source: e },
    }
}

/// A spawn error as one line for [`RunResult::sandbox_error`].
pub(super) fn describe_spawn_error(e: &io::Error) -> String {
    match Step::decode(e) {
        Some((step, source)) => format!("confining the process failed at {step}: {source}"),
        None => format!("could not start python: {e}"),
    }
}

fn count_processes(uid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.flatten()
        .filter(|e| e.file_name().as_bytes().iter().all(u8::is_ascii_digit))
        .filter(|e| e.metadata().is_ok_and(|m| m.uid() == uid))
        .count() as u64
}

/// A run's work directory on the host's file system (no private /tmp), removed on drop.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create(uid: u32, gid: u32, chown: bool) -> io::Result<WorkDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("hearth-sandbox-{}-{n}", std::process::id()));
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    let dir = WorkDir(path);
                    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700))?;
                    if chown {
                        std::os::unix::fs::chown(&dir.0, Some(uid), Some(gid))?;
                    }
                    return Ok(dir);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a confinement achieves, and notes on what it leaves open.
fn isolation(c: Confinement, scan: &host::Scan) -> Isolation {
    let (ns, own) = (c.namespaces(), c.own_user());
    let euid = unsafe { libc::geteuid() };
    let mut notes: Vec<String> = Vec::new();
    if !ns {
        notes.push("no network isolation: generated code can reach the network and services on this machine".into());
        notes.push("no private /tmp: generated code can write to /tmp, /dev/shm and other world-writable directories".into());
        notes.push("no PID namespace: generated code sees this machine's processes".into());
    }
    let outside = if ns { " outside its private tmpfs mounts" } else { "" };
    match (own, euid, ns) {
        (true, ..) => {}
        (false, 0, true) => notes.push(format!(
            "no own user: generated code runs as uid 0 without capabilities, and could write what uid 0 owns{outside}"
        )),
        (false, 0, false) => notes.push("no own user: generated code runs as root, with all of root's powers".into()),
        (false, _, _) => notes.push(format!("not root: generated code runs as this user (uid {euid}) and could write where this user can{outside}")),
    }
    if c == Confinement::LimitsOnly {
        notes.push("processes that leave the process group (setsid, double fork) are not killed after a run".into());
    }
    if euid == 0 && !own {
        notes.push("the process limit (RLIMIT_NPROC) does not bind processes of root: a fork bomb is not stopped".into());
    }
    notes.push("memory is limited per process (RLIMIT_AS), not for the sandbox as a whole (no cgroup)".into());
    notes.push("world-readable files stay readable".into());
    if ns {
        let dirs: Vec<String> = scan.dirs.iter().map(|d| d.display().to_string()).collect();
        let owner = if own { " (owned by root: the code can write only in its work directory, /tmp/work)" } else { "" };
        notes.push(format!("private tmpfs mounts{owner} over {}", dirs.join(", ")));
    }
    if ns || own {
        notes.extend(scan.notes.iter().cloned());
    }
    Isolation { confinement: c, network: ns, private_tmp: ns, own_user: own, own_processes: ns, python: String::new(), notes }
}
