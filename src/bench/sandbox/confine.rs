//! The child side of the sandbox: what runs between `fork` and `exec` (new namespaces, private
//! tmpfs mounts, its own /proc, resource limits, dropping to the sandbox user), written with
//! async-signal-safe libc calls only: no allocation, no locks.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

use super::Confinement;

/// The step of [`confine`] that failed, carried in the spawn error as `STEP_BASE * step + errno`
/// (the child cannot allocate a message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Step {
    Setsid = 1,
    Unshare,
    UserMap,
    PrivateMounts,
    Tmpfs,
    WorkDir,
    Fork,
    Proc,
    Chdir,
    Rlimit,
    DropUser,
    NoNewPrivs,
}

const STEP_BASE: i32 = 10_000;
const STEPS: [Step; 12] = [
    Step::Setsid,
    Step::Unshare,
    Step::UserMap,
    Step::PrivateMounts,
    Step::Tmpfs,
    Step::WorkDir,
    Step::Fork,
    Step::Proc,
    Step::Chdir,
    Step::Rlimit,
    Step::DropUser,
    Step::NoNewPrivs,
];

impl Step {
    /// Splits a spawn error into the step that failed and the plain OS error.
    pub fn decode(e: &io::Error) -> Option<(Step, io::Error)> {
        let raw = e.raw_os_error()?;
        let step = STEPS.into_iter().find(|s| *s as i32 == raw / STEP_BASE)?;
        Some((step, io::Error::from_raw_os_error(raw % STEP_BASE)))
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Setsid => "setsid",
            Step::Unshare => "unshare (new namespaces)",
            Step::UserMap => "writing the user namespace's uid/gid map",
            Step::PrivateMounts => "making mounts private",
            Step::Tmpfs => "mounting a private tmpfs",
            Step::WorkDir => "creating the work directory",
            Step::Fork => "fork (PID namespace init)",
            Step::Proc => "mounting its own /proc",
            Step::Chdir => "chdir to the work directory",
            Step::Rlimit => "setrlimit",
            Step::DropUser => "dropping to the sandbox uid",
            Step::NoNewPrivs => "PR_SET_NO_NEW_PRIVS",
        })
    }
}

/// Everything the child needs, prepared (allocated) by the parent before the fork.
pub struct ChildSetup {
    pub confinement: Confinement,
    /// The sandbox uid/gid (own-user confinements) or this user's (the others).
    pub uid: u32,
    pub gid: u32,
    /// `/proc/self/uid_map` and `gid_map` lines (user namespace only).
    pub uid_map: Vec<u8>,
    pub gid_map: Vec<u8>,
    /// Directories to cover with a private tmpfs (namespaces only).
    pub tmpfs: Vec<CString>,
    pub tmpfs_options: CString,
    /// The work directory: created in the private /tmp (namespaces) or already made by the parent.
    pub work: CString,
    pub rlimits: Vec<(i32, u64)>,
}

fn fail(step: Step) -> io::Error {
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL);
    io::Error::from_raw_os_error(step as i32 * STEP_BASE + errno.min(STEP_BASE - 1))
}

fn check(rc: libc::c_long, step: Step) -> io::Result<()> {
    if rc < 0 {
        Err(fail(step))
    } else {
        Ok(())
    }
}

/// Runs in the forked child before `exec`. With namespaces it forks once more: the new PID
/// namespace's init (which goes on to exec python) and a supervisor that waits for it and exits
/// the same way, so that every process the code starts dies with it.
pub fn confine(s: &ChildSetup) -> io::Result<()> {
    unsafe {
        check(libc::setsid() as libc::c_long, Step::Setsid)?;
        if s.confinement.namespaces() {
            enter_namespaces(s)?;
        }
        check(libc::chdir(s.work.as_ptr()) as libc::c_long, Step::Chdir)?;
        for &(resource, value) in &s.rlimits {
            let lim = libc::rlimit { rlim_cur: value, rlim_max: value };
            check(libc::setrlimit(resource as _, &lim) as libc::c_long, Step::Rlimit)?;
        }
        if s.confinement.own_user() {
            drop_to(s.uid, s.gid).map_err(|_| fail(Step::DropUser))?;
        }
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) as libc::c_long, Step::NoNewPrivs)?;
        // After the uid change, which clears it: die with the supervisor (or with hearth).
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong);
    }
    Ok(())
}

unsafe fn enter_namespaces(s: &ChildSetup) -> io::Result<()> {
    let user = s.confinement == Confinement::UserNamespace;
    let mut flags = libc::CLONE_NEWNET | libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    if user {
        flags |= libc::CLONE_NEWUSER;
    }
    check(libc::unshare(flags) as libc::c_long, Step::Unshare)?;
    if user {
        write_file(c"/proc/self/setgroups", b"deny").map_err(|_| fail(Step::UserMap))?;
        write_file(c"/proc/self/uid_map", &s.uid_map).map_err(|_| fail(Step::UserMap))?;
        write_file(c"/proc/self/gid_map", &s.gid_map).map_err(|_| fail(Step::UserMap))?;
    }
    // Mounts made from here on must not propagate back to the host.
    let none = std::ptr::null();
    check(libc::mount(none, c"/".as_ptr(), none, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) as libc::c_long, Step::PrivateMounts)?;
    for dir in &s.tmpfs {
        let opts = s.tmpfs_options.as_ptr().cast();
        check(libc::mount(c"tmpfs".as_ptr(), dir.as_ptr(), c"tmpfs".as_ptr(), libc::MS_NOSUID | libc::MS_NODEV, opts) as libc::c_long, Step::Tmpfs)?;
    }
    check(libc::mkdir(s.work.as_ptr(), 0o700) as libc::c_long, Step::WorkDir)?;
    if s.confinement.own_user() {
        check(libc::chown(s.work.as_ptr(), s.uid, s.gid) as libc::c_long, Step::WorkDir)?;
    }
    // The supervisor is a copy of hearth's address space: it must never dump core.
    let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    libc::setrlimit(libc::RLIMIT_CORE, &no_core);
    // SIGTERM stays pending until the supervisor's handler is in place.
    let term = sigset(libc::SIGTERM);
    libc::sigprocmask(libc::SIG_BLOCK, &term, std::ptr::null_mut());
    match libc::fork() {
        -1 => return Err(fail(Step::Fork)),
        0 => {}
        init => supervise(init),
    }
    libc::sigprocmask(libc::SIG_UNBLOCK, &term, std::ptr::null_mut());
    // PID 1 of the new namespace: a /proc that shows only the sandbox's processes.
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    check(libc::mount(c"proc".as_ptr(), c"/proc".as_ptr(), c"proc".as_ptr(), flags, std::ptr::null()) as libc::c_long, Step::Proc)?;
    Ok(())
}

/// The PID namespace's init, in the supervisor (a process of its own: no other thread reads it).
static INIT: AtomicI32 = AtomicI32::new(0);

/// The supervisor's SIGTERM handler: kill the namespace's init, and with it the whole namespace.
extern "C" fn kill_init(_: libc::c_int) {
    let init = INIT.load(Ordering::Relaxed);
    if init > 0 {
        unsafe { libc::kill(init, libc::SIGKILL) };
    }
}

fn sigset(sig: libc::c_int) -> libc::sigset_t {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        set
    }
}

/// The supervisor: closes everything (so that the parent's pipes see EOF and its spawn returns
/// once python is exec'd), waits for the namespace's init and exits with its status. The parent
/// stops a run by sending it SIGTERM: killing the supervisor instead would leave the init a
/// zombie of the host's init, which need not reap it.
unsafe fn supervise(init: libc::pid_t) -> ! {
    if libc::syscall(libc::SYS_close_range, 0 as libc::c_uint, libc::c_uint::MAX, 0 as libc::c_int) != 0 {
        for fd in 0..4096 {
            libc::close(fd);
        }
    }
    INIT.store(init, Ordering::Relaxed);
    let mut act: libc::sigaction = std::mem::zeroed();
    act.sa_sigaction = kill_init as extern "C" fn(libc::c_int) as libc::sighandler_t;
    libc::sigaction(libc::SIGTERM, &act, std::ptr::null_mut());
    libc::sigprocmask(libc::SIG_UNBLOCK, &sigset(libc::SIGTERM), std::ptr::null_mut());
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong);
    let mut status = 0;
    loop {
        let r = libc::waitpid(init, &mut status, 0);
        if r == init {
            break;
        }
        if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            libc::_exit(126);
        }
    }
    if libc::WIFEXITED(status) {
        libc::_exit(libc::WEXITSTATUS(status));
    }
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &act, std::ptr::null_mut());
        libc::sigprocmask(libc::SIG_UNBLOCK, &sigset(sig), std::ptr::null_mut());
        libc::kill(libc::getpid(), sig);
        libc::_exit(128 + sig);
    }
    libc::_exit(127)
}

/// Raw syscalls: glibc's wrappers would try to signal the parent's other threads.
unsafe fn drop_to(uid: u32, gid: u32) -> Result<(), ()> {
    if libc::syscall(libc::SYS_setgroups, 0 as libc::size_t, std::ptr::null::<libc::gid_t>()) != 0 {
        return Err(());
    }
    if libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0 || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0 {
        return Err(());
    }
    Ok(())
}

unsafe fn write_file(path: &std::ffi::CStr, data: &[u8]) -> Result<(), ()> {
    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return Err(());
    }
    let n = libc::write(fd, data.as_ptr().cast(), data.len());
    libc::close(fd);
    if n == data.len() as isize {
        Ok(())
    } else {
        Err(())
    }
}

/// Kills every process of `uid` (stragglers that left the process group): a forked child drops to
/// that uid and signals everything it may, which is only that uid's processes.
pub fn kill_uid(uid: u32) {
    unsafe {
        match libc::fork() {
            -1 => {}
            0 => {
                if drop_to(uid, uid).is_err() {
                    libc::_exit(1);
                }
                // kill(-1) returns ESRCH once nothing is left (zombies still count: bounded).
                for _ in 0..64 {
                    if libc::kill(-1, libc::SIGKILL) != 0 {
                        break;
                    }
                    libc::sched_yield();
                }
                libc::_exit(0);
            }
            pid => {
                let mut status = 0;
                while libc::waitpid(pid, &mut status, 0) < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {}
            }
        }
    }
}
