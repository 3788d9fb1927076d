//! A real PostgreSQL server for a test: Debian's package (installed by scripts/test.sh), a new
//! cluster in a temporary directory on a free loopback port, trusted local logins, stopped when
//! dropped. Run as the `postgres` user when the tests run as root (PostgreSQL refuses root).

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

/// The folder with `initdb` and `pg_ctl`: $HEARTH_PG_BIN, Debian's newest
/// /usr/lib/postgresql/N/bin, or the PATH.
fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("HEARTH_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql").into_iter().flatten().flatten().map(|e| e.path().join("bin")).filter(|b| b.join("initdb").exists()).collect();
    versions.sort_by_key(|p| p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok()));
    if let Some(b) = versions.pop() {
        return b;
    }
    let found = Command::new("sh").args(["-c", "command -v initdb"]).output().ok().filter(|o| o.status.success());
    match found {
        Some(o) => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).parent().unwrap().to_owned(),
        None => panic!("PostgreSQL is not installed (no initdb): scripts/test.sh installs Debian's package, or run `apt-get install postgresql`"),
    }
}

fn as_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// `program args…`, as the `postgres` user when we are root.
fn run(program: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let out = cmd.args(args).output().unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    assert!(out.status.success(), "{} {args:?} failed: {}{}", program.display(), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

impl Pg {
    pub fn start() -> Pg {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        if as_root() {
            let chown = Command::new("chown").args(["-R", "postgres"]).arg(dir.path()).status().unwrap();
            assert!(chown.success());
        }
        let data = dir.path().join("data");
        run(&bin.join("initdb"), &["-D", data.to_str().unwrap(), "-U", "hearth", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pg = Pg { dir, bin, port };
        pg.resume();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_str().unwrap().to_owned()
    }

    /// A new, empty database on this server; its URL.
    pub fn database(&self, name: &str) -> String {
        let mut c = postgres::Client::connect(&format!("host=127.0.0.1 port={} user=hearth dbname=postgres", self.port), postgres::NoTls).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        self.url(name)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://hearth@127.0.0.1:{}/{db}", self.port)
    }

    /// Stops the server (fast shutdown: connections are cut).
    pub fn pause(&self) {
        run(&self.bin.join("pg_ctl"), &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// Starts the server again on the same port and data.
    pub fn resume(&self) {
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", self.port, self.dir.path().display());
        let log = self.dir.path().join("log").to_str().unwrap().to_owned();
        run(&self.bin.join("pg_ctl"), &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"]);
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = Command::new(if as_root() { "runuser" } else { "sh" })
            .args(if as_root() { vec!["-u", "postgres", "--"] } else { vec!["-c", "exec \"$0\" \"$@\""] })
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}
