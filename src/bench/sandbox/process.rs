//! The parent side of one sandboxed run: spawning with the child setup, feeding the program on
//! stdin, keeping only the tails of its output, the wall-clock deadline, and killing whatever is
//! left afterwards. Also hands out the per-run sandbox uids.

use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::confine::{self, ChildSetup};
use super::RunResult;

/// Sandbox uids: `UID_BASE + (pid << 6) + slot`, unused by any real account, distinct per hearth
/// process (pids are below 2^22) and per concurrent run within it.
pub const UID_BASE: u32 = 0x4000_0000;
const SLOTS: u32 = 64;
/// Bytes of stderr kept.
pub const TAIL: usize = 2048;

/// One bit per uid slot in use by a run of this process.
static IN_USE: AtomicU64 = AtomicU64::new(0);

/// A uid reserved for one run; released on drop.
pub struct UidSlot(u32);

impl UidSlot {
    /// Waits while all 64 slots are busy (64 runs at once).
    pub fn acquire() -> UidSlot {
        loop {
            let cur = IN_USE.load(Ordering::Acquire);
            if cur != u64::MAX {
                let bit = (!cur).trailing_zeros();
                if IN_USE.compare_exchange(cur, cur | (1 << bit), Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    return UidSlot(bit);
                }
                continue;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn uid(&self) -> u32 {
        uids_of_this_process().start + self.0
    }
}

/// The 64 uids of this process's runs.
pub fn uids_of_this_process() -> std::ops::Range<u32> {
    let first = UID_BASE + (std::process::id() & 0x3F_FFFF) * SLOTS;
    first..first + SLOTS
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        IN_USE.fetch_and(!(1u64 << self.0), Ordering::AcqRel);
    }
}

/// Spawns `cmd` with piped stdio, confined by `setup` between fork and exec.
pub fn spawn(cmd: &mut Command, setup: ChildSetup) -> io::Result<Child> {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: `confine` makes only async-signal-safe libc calls and allocates nothing.
    unsafe {
        cmd.pre_exec(move || confine::confine(&setup));
    }
    cmd.spawn()
}

/// Feeds `program`, waits until `timeout` after `start`, kills the process group (and, with
/// `own_uid`, every process of that uid), and collects the result. `supervised`: the child is the
/// supervisor of a PID namespace, which a timeout asks (SIGTERM) to kill the namespace.
pub fn finish(mut child: Child, program: &str, start: Instant, timeout: Duration, own_uid: Option<u32>, supervised: bool) -> RunResult {
    let pid = child.id() as libc::pid_t;
    if let Some(mut stdin) = child.stdin.take() {
        let program = program.as_bytes().to_vec();
        // Detached: a program that never reads must not hold us; EPIPE once it is gone.
        thread::spawn(move || {
            let _ = stdin.write_all(&program);
        });
    }
    let (done_tx, done_rx) = mpsc::channel();
    let _stdout = child.stdout.take().map(|r| keep_tail(r, done_tx.clone()));
    let stderr = child.stderr.take().map(|r| keep_tail(r, done_tx));

    let (exit_tx, exit_rx) = mpsc::channel();
    thread::spawn(move || {
        wait_exited(pid);
        let _ = exit_tx.send(());
    });
    let timed_out = match exit_rx.recv_timeout(timeout.saturating_sub(start.elapsed())) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => false,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let stopped = supervised && {
                unsafe { libc::kill(pid, libc::SIGTERM) };
                exit_rx.recv_timeout(Duration::from_secs(1)).is_ok()
            };
            if !stopped {
                kill_group(pid);
                let _ = exit_rx.recv();
            }
            true
        }
    };
    let wall = start.elapsed();
    // The leader is a zombie until `wait` below, so its group id cannot have been reused.
    kill_group(pid);
    let status = child.wait();
    if let Some(uid) = own_uid {
        confine::kill_uid(uid);
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    for _ in 0..2 {
        if done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_err() {
            break;
        }
    }
    let stderr_tail = stderr.map(|t| tail_string(&t.lock().unwrap_or_else(|e| e.into_inner()))).unwrap_or_default();
    let (exit_code, signal) = match &status {
        Ok(s) => (s.code(), s.signal()),
        Err(_) => (None, None),
    };
    RunResult {
        passed: !timed_out && exit_code == Some(0),
        timed_out,
        exit_code,
        signal,
        stderr_tail,
        wall,
        sandbox_error: status.err().map(|e| format!("waiting for the sandboxed process: {e}")),
    }
}

fn kill_group(pid: libc::pid_t) {
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Blocks until `pid` has exited, leaving it unreaped (`WNOWAIT`).
fn wait_exited(pid: libc::pid_t) {
    loop {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// Reads `r` to its end on a thread, keeping only the last [`TAIL`] bytes or so; signals `done`.
fn keep_tail(mut r: impl Read + Send + 'static, done: mpsc::Sender<()>) -> Arc<Mutex<Vec<u8>>> {
    let tail = Arc::new(Mutex::new(Vec::with_capacity(2 * TAIL)));
    let keep = Arc::clone(&tail);
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let mut t = keep.lock().unwrap_or_else(|e| e.into_inner());
                    t.extend_from_slice(&buf[..n]);
                    if t.len() > 4 * TAIL {
                        let cut = t.len() - TAIL;
                        t.drain(..cut);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = done.send(());
    });
    tail
}

/// The last [`TAIL`] bytes as text, starting on a character boundary.
pub fn tail_string(bytes: &[u8]) -> String {
    let mut s = &bytes[bytes.len().saturating_sub(TAIL)..];
    while let [b, rest @ ..] = s {
        if b & 0xC0 != 0x80 {
            break;
        }
        s = rest;
    }
    String::from_utf8_lossy(s).into_owned()
}
