//! Clients that hold connections without finishing requests: a thousand sockets that say nothing
//! after a line of headers and fifty slowloris clients dribbling theirs do not keep a normal client
//! from its answers, and the listener closes them once their header deadline passes. Heads the
//! server cannot take (malformed, oversized, HTTP/2) get a JSON error like every other refusal.

mod common;

use std::time::{Duration, Instant};

use common::server::Server;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_do_not_starve_real_clients() {
    hearth::api::raise_file_limit();
    let limits = hearth::api::Limits { header_timeout: Duration::from_secs(3), ..hearth::api::Limits::default() };
    let s = Server::synth_limited(limits).await;
    let addr = s.url.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..1100 {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        idle.push(c);
    }
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"POST /v1/completions HTTP/1.1\r\n").await.unwrap();
        slow.push(c);
    }
    let body = json!({ "prompt": "x", "max_tokens": 2 });
    for i in 0..5 {
        // Slowloris: one more header byte each round.
        for c in &mut slow {
            let _ = c.write_all(b"X").await;
        }
        let t = Instant::now();
        let (st, _, v) = s.post("/v1/completions", &body).await;
        assert_eq!(st, 200, "{v}");
        assert!(t.elapsed() < Duration::from_secs(2), "request {i} took {:?} beside 1,150 stalled connections", t.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Past the header deadline every stalled connection is closed by the server.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for c in idle.iter_mut().take(50).chain(slow.iter_mut()) {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await.expect("the server closes a stalled connection").unwrap_or(0);
        // Closed outright, or told 408 first.
        assert!(n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"), "{}", String::from_utf8_lossy(&buf[..n]));
    }
    let (st, _, _) = s.post("/v1/completions", &body).await;
    assert_eq!(st, 200);
}

/// Sends `raw` on a new connection and reads until the server closes it: (status, JSON body).
async fn raw_exchange(addr: &str, raw: &[u8]) -> (u16, serde_json::Value) {
    let mut c = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before an oversized head is all sent.
    let _ = c.write_all(raw).await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut answer)).await.expect("the server answers and closes").unwrap();
    last_answer(&answer)
}

/// The status and JSON body of the last response in `answer` (responses read one after another
/// by their `content-length`).
fn last_answer(answer: &[u8]) -> (u16, serde_json::Value) {
    let text = String::from_utf8_lossy(answer);
    let mut rest = &text[..];
    let mut last = None;
    while !rest.is_empty() {
        let (head, after) = rest.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head end in {rest:?}"));
        let lower = head.to_ascii_lowercase();
        let len: usize = lower.split("content-length: ").nth(1).and_then(|v| v.split("\r\n").next()).map_or(0, |v| v.parse().unwrap());
        last = Some((head.to_owned(), after[..len].to_owned()));
        rest = &after[len..];
    }
    let (head, body) = last.unwrap_or_else(|| panic!("no response in {text:?}"));
    assert!(head.starts_with("HTTP/1.1 "), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    (head[9..12].parse().unwrap(), serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: body {body:?}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_head_gets_a_json_error() {
    let s = Server::synth().await;
    let addr = s.url.trim_start_matches("http://").to_owned();
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"GET /health HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n".to_vec(), 400, "malformed_request"),
        (b"GET /health HTTP/1.1\r\nHo\x01st: x\r\n\r\n".to_vec(), 400, "malformed_request"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), 400, "malformed_request"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), 505, "http_version_not_supported"),
        (format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000)).into_bytes(), 414, "uri_too_long"),
        (format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n", "b".repeat(200_000)).into_bytes(), 431, "headers_too_large"),
        ((0..150).fold("GET /health HTTP/1.1\r\nHost: x\r\n".to_string(), |h, i| h + &format!("x-{i}: 1\r\n")).into_bytes(), 431, "headers_too_large"),
        (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n".to_vec(), 400, "invalid_content_length"),
        (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(), 400, "invalid_transfer_encoding"),
    ];
    for (raw, status, code) in cases {
        let (st, v) = raw_exchange(&addr, &raw).await;
        let what = String::from_utf8_lossy(&raw[..raw.len().min(40)]).into_owned();
        assert_eq!((st, v["error"]["code"].as_str()), (status, Some(code)), "{what:?}: {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| m.len() > 10), "{v}");
    }
    // On a keep-alive connection, a bad head after good requests (one with a body, one chunked).
    let body = r#"{"prompt":"x","max_tokens":1}"#;
    let raw = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}\
         POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n\
         GET /api/tags HTTP/1.1\r\nHost x\r\n\r\n",
        body.len(),
        body.len()
    );
    let mut c = TcpStream::connect(&addr).await.unwrap();
    c.write_all(raw.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), c.read_to_end(&mut answer)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    // Ollama's path answers in Ollama's shape: {"error": "..."}.
    let (st, v) = last_answer(&answer);
    assert_eq!(st, 400);
    assert!(v["error"].as_str().is_some_and(|m| m.contains("malformed")), "{v}");
}
