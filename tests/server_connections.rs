//! Clients that hold connections without finishing requests: a thousand sockets that say nothing
//! after a line of headers and fifty slowloris clients dribbling theirs do not keep a normal client
//! from its answers, and the listener closes them once their header deadline passes.

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
