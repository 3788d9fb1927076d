//! Fuzzing on stable Rust, bounded in time: the GGUF reader and model loader on mutated model files,
//! and every protocol's request parsing and validation on mutated JSON bodies over real HTTP. Seeds
//! are the files in `tests/fuzz/gguf/` and `tests/fuzz/requests/` (the latter named after their
//! route), and raw request heads on the socket. A panic, an abort or a 5xx fails the run. `HEARTH_FUZZ_SECS` (default 3 per target)
//! sets how long; `scripts/fuzz.sh` runs it for minutes and prints the executions.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::Device;
use common::server::Server;
use hearth::model::Model;
use serde_json::{json, Value};

fn seconds() -> Duration {
    Duration::from_secs_f64(std::env::var("HEARTH_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0))
}

/// xorshift64*: reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds(dir: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz").join(dir);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// Values that break arithmetic: zero, one, the edges of 32 and 64 bits.
const EDGES: [u64; 8] = [0, 1, 0xFF, 0x7FFF_FFFF, 0xFFFF_FFFF, 0x7FFF_FFFF_FFFF_FFFF, u64::MAX, 0x8000_0000];

fn mutate_bytes(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut b = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            break; // a truncation to nothing leaves nothing to mutate
        }
        let at = rng.below(b.len());
        match rng.below(6) {
            0 => b[at] ^= 1 << rng.below(8),
            1 => b[at] = rng.next() as u8,
            2 if at + 8 <= b.len() => b[at..at + 8].copy_from_slice(&EDGES[rng.below(EDGES.len())].to_le_bytes()),
            3 if at + 4 <= b.len() => b[at..at + 4].copy_from_slice(&(EDGES[rng.below(EDGES.len())] as u32).to_le_bytes()),
            4 => b.truncate(at),
            _ => {
                let len = rng.below(64).min(b.len() - at);
                let chunk = b[at..at + len].to_vec();
                let to = rng.below(b.len());
                b.splice(to..to, chunk);
            }
        }
    }
    b
}

#[test]
fn the_gguf_reader_survives_mutated_files() {
    let seeds = seeds("gguf");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.gguf");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (start, mut runs, mut loaded) = (Instant::now(), 0u64, 0u64);
    while start.elapsed() < seconds() {
        let (name, base) = &seeds[rng.below(seeds.len())];
        let bytes = mutate_bytes(&mut rng, base);
        std::fs::write(&path, &bytes).unwrap();
        let outcome = std::panic::catch_unwind(|| Model::load(&path, &Device::Cpu).is_ok());
        match outcome {
            Ok(ok) => loaded += u64::from(ok),
            Err(_) => {
                let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-crash.gguf");
                std::fs::copy(&path, &keep).unwrap();
                panic!("loading a mutation of {} panicked (run {runs}); the mutant is {}", name.display(), keep.display());
            }
        }
        runs += 1;
    }
    eprintln!("gguf: {runs} executions in {:?}, {loaded} mutants loaded, 0 crashes", start.elapsed());
    assert!(runs > 0);
}

/// A random JSON value, sometimes hostile: huge numbers, control-token text, deep nesting.
fn wild(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth > 3 { 6 } else { 9 }) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(EDGES[rng.below(EDGES.len())] as i64),
        3 => json!(-(rng.below(1000) as i64)),
        4 => json!(f64::from_bits(rng.next()).is_finite().then(|| f64::from_bits(rng.next())).unwrap_or(0.5)),
        5 => json!(["", "<|im_end|>", "\u{0}", &"x".repeat(rng.below(300)), "👍🏽", "{\"a\":", "root ::= \"a\""][rng.below(7)]),
        6 => Value::Array((0..rng.below(4)).map(|_| wild(rng, depth + 1)).collect()),
        7 => Value::Object((0..rng.below(4)).map(|i| (["type", "role", "content", "name", "text", "x"][i % 6].to_owned(), wild(rng, depth + 1))).collect()),
        _ => json!({ "type": "function", "function": { "name": "f", "parameters": wild(rng, depth + 1) } }),
    }
}

/// Replaces a random node of `v` (or adds a key) with a wild value.
fn mutate_json(rng: &mut Rng, v: &mut Value) {
    match v {
        Value::Object(o) if !o.is_empty() && rng.below(4) != 0 => {
            let keys: Vec<String> = o.keys().cloned().collect();
            let k = &keys[rng.below(keys.len())];
            match rng.below(4) {
                0 => {
                    o.remove(k);
                }
                1 => {
                    o.insert(k.clone(), wild(rng, 0));
                }
                _ => mutate_json(rng, o.get_mut(k).unwrap()),
            }
        }
        Value::Array(a) if !a.is_empty() && rng.below(4) != 0 => {
            let i = rng.below(a.len());
            mutate_json(rng, &mut a[i]);
        }
        Value::Object(o) => {
            let keys = ["tools", "tool_choice", "response_format", "stop", "n", "logprobs", "format", "options", "system", "input", "grammar", "json_schema"];
            o.insert(keys[rng.below(keys.len())].to_owned(), wild(rng, 0));
        }
        other => *other = wild(rng, 0),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_survives_mutated_requests() {
    let seeds: Vec<(String, Value)> = seeds("requests")
        .into_iter()
        .map(|(p, b)| {
            let route = p.file_stem().unwrap().to_str().unwrap().split("--").next().unwrap().replace('_', "/");
            (format!("/{route}"), serde_json::from_slice(&b).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        })
        .collect();
    let s = Server::synth().await;
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let (start, mut runs) = (Instant::now(), 0u64);
    let mut statuses = std::collections::BTreeMap::new();
    while start.elapsed() < seconds() {
        let (route, base) = &seeds[rng.below(seeds.len())];
        let mut body = base.clone();
        for _ in 0..1 + rng.below(3) {
            mutate_json(&mut rng, &mut body);
        }
        // Short generations, whatever the mutation asked for.
        if let Some(o) = body.as_object_mut() {
            for k in ["max_tokens", "max_completion_tokens", "max_output_tokens", "n_predict"] {
                if o.get(k).and_then(Value::as_u64).is_some_and(|n| n > 4) {
                    o.insert(k.into(), json!(4));
                }
            }
            if let Some(opts) = o.get_mut("options").and_then(Value::as_object_mut) {
                opts.insert("num_predict".into(), json!(4));
            }
            o.entry("stream").and_modify(|v| *v = json!(false));
        }
        let r = s.client.post(format!("{}{route}", s.url)).json(&body).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert!(status < 500, "{route} answered {status} to {body}: {text}");
        assert!(serde_json::from_str::<Value>(&text).is_ok() || text.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()), "{route}: not JSON: {text}");
        *statuses.entry(status).or_insert(0u64) += 1;
        runs += 1;
    }
    eprintln!("requests: {runs} executions in {:?}, statuses {statuses:?}", start.elapsed());
    assert!(statuses.contains_key(&200), "some mutants must still be valid requests: {statuses:?}");
}

/// Request heads as they arrive on the socket, before any parser: mutated bytes get either an
/// answer (every refusal in JSON, never a 5xx) or, for a head left unfinished, silence until the
/// client gives up; the server keeps answering throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_heads_get_json_refusals() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = r#"{"prompt":"x","max_tokens":1}"#;
    let seeds = [
        "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_string(),
        format!("POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()),
        format!("POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n", body.len()),
        "GET /v1/models?x=1 HTTP/1.0\r\nHost: 127.0.0.1:8080\r\nAccept: */*\r\n\r\n".to_string(),
    ];
    let s = Server::synth().await;
    let addr = s.url.trim_start_matches("http://").to_owned();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (start, mut runs) = (Instant::now(), 0u64);
    let mut statuses = std::collections::BTreeMap::new();
    while start.elapsed() < seconds() {
        let seed = seeds[rng.below(seeds.len())].as_bytes();
        let raw = mutate_bytes(&mut rng, seed);
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let _ = c.write_all(&raw).await;
        let _ = c.shutdown().await;
        let mut answer = Vec::new();
        // An unfinished head gets no answer: the client's own deadline ends it.
        let _ = tokio::time::timeout(Duration::from_millis(500), c.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer);
        if let Some(head) = text.split("\r\n\r\n").next().filter(|h| h.starts_with("HTTP/1.1 ") || h.starts_with("HTTP/1.0 ")) {
            let status: u16 = head[9..12].parse().unwrap();
            let shown = String::from_utf8_lossy(&raw);
            // 505 is the refusal of a version the server does not speak, not a failure.
            assert!(status < 500 || status == 505, "{shown:?} got {text}");
            if status >= 400 {
                assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{shown:?} got {text}");
            }
            *statuses.entry(status).or_insert(0u64) += 1;
        } else {
            assert!(answer.is_empty(), "not HTTP: {text:?}");
            *statuses.entry(0).or_insert(0u64) += 1;
        }
        runs += 1;
    }
    let (st, _, _) = s.post("/v1/completions", &json!({ "prompt": "x", "max_tokens": 1 })).await;
    assert_eq!(st, 200);
    eprintln!("heads: {runs} executions in {:?}, statuses {statuses:?} (0: no answer)", start.elapsed());
    assert!(statuses.contains_key(&200) && statuses.keys().any(|s| (400..500).contains(s)), "{statuses:?}");
}
