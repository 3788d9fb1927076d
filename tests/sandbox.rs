//! The sandbox against hostile programs, with real processes: endless loops, huge allocations,
//! fork bombs and escapees, writes outside the work directory, sockets; each must fail within its
//! timeout, leave no process of the sandbox uid behind and leave the next run unaffected.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use hearth::bench::sandbox::{Confinement, Limits, RunResult, Sandbox};

fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let s = Sandbox::new().unwrap_or_else(|e| panic!("no sandbox: {e}"));
        eprintln!("{}", s.isolation());
        s
    })
}

/// Tests one at a time, so that "no process of the sandbox uids" is checked against one run.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn short() -> Limits {
    Limits { timeout: Duration::from_secs(3), ..Limits::default() }
}

/// Processes (zombies included) whose real uid is one of the sandbox's.
fn sandbox_processes(s: &Sandbox) -> Vec<String> {
    let Some(uids) = s.sandbox_uids() else { return Vec::new() };
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else { continue };
        let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok());
        if uid.is_some_and(|u| uids.contains(&u)) {
            let name = status.lines().next().unwrap_or("").to_owned();
            let state = status.lines().filter(|l| l.starts_with("State:") || l.starts_with("PPid:") || l.starts_with("NSpid:")).collect::<Vec<_>>().join(" ");
            found.push(format!("pid {} uid {} {name} {state}", entry.file_name().to_string_lossy(), uid.unwrap()));
        }
    }
    found
}

/// Runs a hostile program and checks what every hostile run must satisfy (under [`serial`]).
fn hostile(what: &str, program: &str, limits: &Limits) -> RunResult {
    let s = sandbox();
    let t = Instant::now();
    let r = s.run_python(program, limits);
    let took = t.elapsed();
    eprintln!("{what}: {} in {:.2} s", r.summary(), took.as_secs_f64());
    assert!(r.sandbox_error.is_none(), "{what}: {r:?}");
    assert!(!r.passed, "{what} passed: {r:?}");
    assert!(took < limits.timeout + Duration::from_millis(1500), "{what} took {took:?} (timeout {:?})", limits.timeout);
    let left = sandbox_processes(s);
    assert!(left.is_empty(), "{what} left processes behind: {left:#?}");
    let next = s.run_python("assert 1 + 1 == 2\n", &short());
    assert!(next.passed, "the run after {what} failed: {next:?}");
    r
}

#[test]
fn isolation_is_reported_as_probed() {
    let _one = serial();
    let s = sandbox();
    let i = s.isolation();
    println!("{i}");
    match i.confinement {
        Confinement::Namespaces => assert!(i.network && i.private_tmp && i.own_user && i.own_processes, "{i}"),
        Confinement::UserNamespace => assert!(i.network && i.private_tmp && !i.own_user && i.own_processes, "{i}"),
        Confinement::OwnUser => assert!(!i.network && !i.private_tmp && i.own_user && !i.own_processes, "{i}"),
        Confinement::LimitsOnly => assert!(!i.network && !i.private_tmp && !i.own_user && !i.own_processes, "{i}"),
    }
    if i.confinement != Confinement::Namespaces {
        assert!(i.notes.iter().any(|n| n.contains("refused")), "a weaker sandbox must say why: {i}");
    }
    assert!(i.python.contains('3'), "{i}");
    assert_eq!(s.sandbox_uids().is_some(), i.own_user);
}

#[test]
fn a_correct_program_passes_and_a_failing_assert_fails_with_its_traceback() {
    let _one = serial();
    let s = sandbox();
    let ok = s.run_python("assert 1 + 1 == 2\n", &short());
    assert!(ok.passed && !ok.timed_out && ok.exit_code == Some(0), "{ok:?}");
    let bad = s.run_python("def f():\n    return 1 + 1\n\nassert f() == 3, 'one plus one'\n", &short());
    assert!(!bad.passed && !bad.timed_out && bad.exit_code == Some(1), "{bad:?}");
    assert!(bad.stderr_tail.contains("Traceback") && bad.stderr_tail.contains("AssertionError: one plus one"), "{bad:?}");
    assert!(bad.summary().contains("AssertionError"), "{}", bad.summary());
    // Its own directory is writable; stdout is drained.
    let files = s.run_python("open('x.txt', 'w').write('x' * 1000)\nprint('y' * 100000)\nassert open('x.txt').read() == 'x' * 1000\n", &short());
    assert!(files.passed, "{files:?}");
}

#[test]
fn an_endless_loop_times_out() {
    let _one = serial();
    let limits = short();
    let r = hostile("endless loop", "while True:\n    pass\n", &limits);
    assert!(r.timed_out && r.signal == Some(libc::SIGKILL), "{r:?}");
    assert!(r.wall >= limits.timeout, "{r:?}");
}

#[test]
fn huge_allocations_fail() {
    let _one = serial();
    let r = hostile("bytearray(10**10)", "x = bytearray(10**10)\n", &short());
    assert!(r.stderr_tail.contains("MemoryError") && !r.timed_out, "{r:?}");
    let r = hostile("a growing list", "x = []\nwhile True:\n    x.append(bytearray(10**7))\n", &short());
    assert!(r.stderr_tail.contains("MemoryError") && !r.timed_out, "{r:?}");
}

#[test]
fn fork_bombs_and_escapees_are_contained() {
    let _one = serial();
    let bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n";
    let r = hostile("fork bomb", bomb, &short());
    assert!(r.timed_out, "{r:?}");
    // A grandchild that leaves the session and outlives the program, holding stdout and stderr.
    let escape = "import os, sys, time\n\
                  if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(60)\n        os._exit(0)\n    os._exit(0)\n\
                  os.wait()\ntime.sleep(0.2)\nsys.exit('escaped')\n";
    let r = hostile("double fork + setsid", escape, &short());
    assert!(!r.timed_out && r.exit_code == Some(1) && r.stderr_tail.contains("escaped"), "{r:?}");
    assert!(r.wall < Duration::from_secs(2), "{r:?}");
    // Past the process limit.
    let many = "import subprocess, sys\nps = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']) for _ in range(100)]\n";
    let r = hostile("100 subprocesses", many, &short());
    assert!(r.stderr_tail.contains("BlockingIOError") || r.stderr_tail.contains("Resource temporarily unavailable") || r.timed_out, "{r:?}");
}

#[test]
fn writes_outside_the_work_directory_fail_and_leave_nothing() {
    let _one = serial();
    let s = sandbox();
    let name = format!("hearth-sandbox-test-{}", std::process::id());
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(&name);
    let mut targets: Vec<PathBuf> = ["/root", "/etc", "/tmp", "/var/tmp", "/dev/shm"].iter().map(|d| PathBuf::from(d).join(&name)).collect();
    targets.push(repo);
    if !s.isolation().private_tmp {
        // Without a private /tmp the world-writable directories are writable: nothing to check there.
        targets.retain(|p| !["/tmp", "/var/tmp", "/dev/shm"].iter().any(|d| p.starts_with(d)));
    }
    if !s.isolation().own_user {
        eprintln!("not checking writes: the sandbox runs as this user ({})", s.isolation());
        return;
    }
    for t in &targets {
        let program = format!("open({:?}, 'w').write('x')\n", t.display().to_string());
        hostile(&format!("write {}", t.display()), &program, &short());
        let exists = t.exists();
        let _ = std::fs::remove_file(t);
        assert!(!exists, "the sandbox wrote {}", t.display());
    }
    if s.isolation().private_tmp {
        hostile("write ../x", &format!("open('../{name}', 'w').write('x')\n"), &short());
        hostile("mkdir /tmp/d", &format!("import os\nos.mkdir('/tmp/{name}')\n"), &short());
        assert!(!PathBuf::from("/tmp").join(&name).exists());
    }
    let big = Limits { file_bytes: 1 << 20, ..short() };
    let r = hostile("a file over the size limit", "open('big', 'wb').write(b'x' * (4 << 20))\n", &big);
    assert!(r.signal == Some(libc::SIGXFSZ) || r.stderr_tail.contains("File too large"), "{r:?}");
}

#[test]
fn sockets_reach_nothing() {
    let _one = serial();
    let s = sandbox();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let local = format!("import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hi')\n");
    let r = if s.isolation().network {
        hostile("connect to a local listener", &local, &short())
    } else {
        s.run_python(&local, &short())
    };
    let accepted = listener.accept().is_ok();
    if s.isolation().network {
        assert!(!accepted, "the sandbox reached 127.0.0.1:{port}: {r:?}");
        hostile("connect to 1.1.1.1:53", "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)\n", &short());
        hostile("resolve a name", "import socket\nsocket.getaddrinfo('example.com', 443)\n", &short());
    } else {
        eprintln!("no network isolation here: the connection {}", if accepted { "got through" } else { "failed" });
    }
}

#[test]
fn concurrent_runs_do_not_disturb_each_other() {
    let _one = serial();
    let s = sandbox();
    let t = Instant::now();
    std::thread::scope(|scope| {
        let slow = scope.spawn(|| s.run_python("while True:\n    pass\n", &Limits { timeout: Duration::from_secs(2), ..Limits::default() }));
        let quick: Vec<_> = (0..4)
            .map(|i| scope.spawn(move || s.run_python(&format!("import os\nassert os.getcwd()\nassert {i} + 1 == {}\n", i + 1), &short())))
            .collect();
        for q in quick {
            let r = q.join().unwrap();
            assert!(r.passed, "{r:?}");
        }
        assert!(slow.join().unwrap().timed_out);
    });
    assert!(t.elapsed() < Duration::from_secs(4));
    assert!(sandbox_processes(s).is_empty());
}

/// The weaker confinements the probe falls back to, forced (where this machine allows them):
/// they must still run, fail and time out programs correctly, and say what they lack.
#[test]
fn weaker_confinements_still_run_programs() {
    let _one = serial();
    for c in [Confinement::UserNamespace, Confinement::OwnUser, Confinement::LimitsOnly] {
        let s = match Sandbox::with_confinement(c) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{c}: not available here: {e}");
                continue;
            }
        };
        eprintln!("{}", s.isolation());
        assert_eq!(s.isolation().confinement, c);
        assert!(!s.isolation().notes.is_empty());
        let ok = s.run_python("assert 1 + 1 == 2\n", &short());
        assert!(ok.passed, "{c}: {ok:?}");
        let bad = s.run_python("assert 1 + 1 == 3\n", &short());
        assert!(!bad.passed && bad.stderr_tail.contains("AssertionError"), "{c}: {bad:?}");
        let t = Instant::now();
        let slow = s.run_python("while True:\n    pass\n", &Limits { timeout: Duration::from_secs(1), ..Limits::default() });
        assert!(slow.timed_out && !slow.passed && t.elapsed() < Duration::from_secs(3), "{c}: {slow:?}");
        if s.isolation().network {
            let net = s.run_python("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)\n", &short());
            assert!(!net.passed, "{c}: {net:?}");
        }
    }
}
