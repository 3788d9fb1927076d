//! The ledger through the `hearth` binary: a server killed with SIGKILL under load loses no
//! request it had answered and leaves a sound file; `hearth costs` reads it back; SIGTERM lets
//! streams finish or ends them with an error event by the deadline, writes their rows and exits
//! 0; bad price files and unusable ledger paths stop `serve` at startup naming the file. The
//! server serves a small synthetic model (no download).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn hearth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
}

/// Writes the synthetic chat model into `dir`; `hearth serve` names it `synth-chat`.
fn synth_model(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("synth-chat.gguf");
    common::server::write_synth_chat(&path);
    path
}

/// Starts `hearth serve` on a free port with `model` and `ledger`; returns the child and its
/// address once ready.
fn serve(model: &std::path::Path, ledger: &std::path::Path) -> (Child, String) {
    serve_with(model, ledger, &[])
}

fn serve_with(model: &std::path::Path, ledger: &std::path::Path, extra: &[&str]) -> (Child, String) {
    let mut child = hearth().args(["serve", "--port", "0", "-m"]).arg(model).arg("--ledger").arg(ledger).args(extra).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_else(|| panic!("no address in {first:?}"));
    let addr = url.trim_start_matches("http://").to_owned();
    assert!(lines.any(|l| l.unwrap() == "ready"), "the server never became ready");
    // Keep draining its log so that it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}

/// One plain HTTP/1.1 completion; the response id when it answered 200.
fn complete(addr: &str, prompt: &str) -> Option<String> {
    use std::io::{Read, Write};
    let body = format!(r#"{{"prompt": "{prompt}", "max_tokens": 6, "temperature": 0}}"#);
    let request = format!("POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    if !answer.starts_with("HTTP/1.1 200") {
        return None;
    }
    let json = answer.split("\r\n\r\n").nth(1)?;
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v["id"].as_str().map(str::to_owned)
}

#[test]
fn sigkill_under_load_loses_no_answered_request() {
    let dir = tempfile::tempdir().unwrap();
    let model = synth_model(&dir);
    let ledger = dir.path().join("ledger.sqlite");
    let (mut child, addr) = serve(&model, &ledger);
    let answered = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|c| {
            let (addr, answered, stop) = (addr.clone(), answered.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    if let Some(id) = complete(&addr, &format!("Client {c} asks question {i}:")) {
                        answered.lock().unwrap().push(id);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    let start = Instant::now();
    while answered.lock().unwrap().len() < 12 {
        assert!(start.elapsed() < Duration::from_secs(60), "too few requests were answered");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Killed mid-load: other requests are in flight right now.
    child.kill().unwrap();
    child.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    clients.into_iter().for_each(|c| c.join().unwrap());
    let answered = answered.lock().unwrap().clone();

    let db = rusqlite::Connection::open(&ledger).unwrap();
    let check: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    for id in &answered {
        let found: i64 = db.query_row("SELECT count(*) FROM requests WHERE id = ?1 AND outcome IN ('ok', 'stopped')", [id], |r| r.get(0)).unwrap();
        assert_eq!(found, 1, "answered request {id} is missing from the ledger");
    }
    drop(db);

    // A restarted server opens the same file and adds to it; `hearth costs` reads it all back.
    let (mut child, addr) = serve(&model, &ledger);
    assert!(complete(&addr, "After the restart:").is_some());
    child.kill().unwrap();
    child.wait().unwrap();
    let out = hearth().args(["costs", "--format", "json", "--ledger"]).arg(&ledger).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["total"]["requests"].as_u64().unwrap() > answered.len() as u64, "{summary}");
    let table = hearth().args(["costs", "--by", "model", "--since", "1h", "--ledger"]).arg(&ledger).output().unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("synth-chat") && text.contains("saved vs gpt-4.1-mini"), "{text}");
}

#[test]
fn startup_errors_name_the_price_file_or_ledger_path() {
    let dir = tempfile::tempdir().unwrap();
    let model = synth_model(&dir);
    let prices = dir.path().join("team-prices.toml");
    std::fs::write(&prices, "[[model]]\nid = \"x\"\ninput = \"cheap\"\n").unwrap();
    let ledger = dir.path().join("ledger.sqlite");
    let out = hearth().args(["serve", "--port", "0", "-m"]).arg(&model).arg("--prices").arg(&prices).arg("--ledger").arg(&ledger).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("team-prices.toml"), "{err}");

    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let out = hearth().args(["serve", "--port", "0", "-m"]).arg(&model).arg("--ledger").arg(file.join("ledger.sqlite")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not-a-dir"), "{err}");

    let out = hearth().args(["costs", "--ledger"]).arg(dir.path().join("none.sqlite")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("none.sqlite") && err.contains("hearth serve"), "{err}");
    rusqlite::Connection::open(&ledger).unwrap();
    let out = hearth().args(["costs", "--since", "yesterday", "--ledger"]).arg(&ledger).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("since"), "{err}");
}

/// Sends a streamed completion of up to `max_tokens` (end-of-text banned) and reads the whole
/// answer until the server closes the connection.
fn stream(addr: &str, max_tokens: usize) -> String {
    use std::io::{Read, Write};
    let body = format!(r#"{{"prompt": "Count:", "max_tokens": {max_tokens}, "stream": true, "temperature": 0, "logit_bias": {{"256": -100, "258": -100}}}}"#);
    let request = format!("POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn sigterm_ends_streams_cleanly_writes_their_rows_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let model = synth_model(&dir);
    let ledger = dir.path().join("ledger.sqlite");
    let (child, addr) = serve_with(&model, &ledger, &["--shutdown-timeout", "1"]);
    // Two streams short enough to finish inside the deadline, two far too long to.
    let streams: Vec<_> = [4, 4, 8000, 8000].into_iter().map(|n| { let addr = addr.clone(); std::thread::spawn(move || stream(&addr, n)) }).collect();
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let answers: Vec<String> = streams.into_iter().map(|s| s.join().unwrap()).collect();
    let status = child.wait_with_output().unwrap().status;
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(12), "stopping took {:?}", t.elapsed());
    for (i, a) in answers.iter().enumerate() {
        assert!(a.starts_with("HTTP/1.1 200"), "stream {i}: {a:.200}");
        // Every stream ends as a well-formed one: [DONE] after its finish, or an error event.
        assert!(a.ends_with("0\r\n\r\n"), "stream {i} was cut: {:?}", &a[a.len().saturating_sub(200)..]);
        let finished = a.contains("data: [DONE]");
        let ended = a.contains("shutting down");
        assert!(finished || ended, "stream {i}: {:?}", &a[a.len().saturating_sub(300)..]);
        if i < 2 {
            assert!(finished && !ended, "short stream {i} should finish");
        }
    }
    assert!(answers[2..].iter().all(|a| a.contains("shutting down")), "long streams end with the shutdown error");
    // Every stream has its row, written before the process exited.
    let db = rusqlite::Connection::open(&ledger).unwrap();
    let outcomes: Vec<String> = db.prepare("SELECT outcome FROM requests ORDER BY outcome").unwrap().query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| *o == "stopped" || *o == "ok").count(), 2, "{outcomes:?}");
}
