//! Server throughput against llama.cpp's `llama-server` on the same GGUF file and thread count:
//! 1 and 4 concurrent streaming completions, with a short prompt (generation dominates) and a
//! long one (prompt processing dominates), alternating between the two servers, median of
//! several rounds. Prints a markdown table with hearth/llama.cpp ratios.
//!
//!   LLAMA_SERVER=/path/to/llama-server cargo bench --bench serve [-- MODEL_ID_OR_PATH]
//!
//! `scripts/verify-llamacpp.sh` builds llama-server from the llama-cpp-python sdist.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hearth::api::{router, AppState, ServeConfig};
use hearth::engine::{Engine, EngineConfig};
use hearth::model::Model;
use serde_json::json;

const GENERATE: usize = 128;
const ROUNDS: usize = 3;
const THREADS: usize = 2;

struct Run {
    tokens_per_s: f64,
    ttft_ms: f64,
}

/// `c` concurrent streaming requests; aggregate generated tokens per second and median time to
/// first token.
async fn measure(
    client: &reqwest::Client,
    url: &str,
    c: usize,
    numbers: usize,
    llama: bool,
) -> Run {
    let prompt = format!(
        "Continue this list of numbers: {}",
        (1..=numbers)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let start = Instant::now();
    let jobs = (0..c).map(|i| {
        let mut body = json!({ "prompt": format!("{i}. {prompt}"), "max_tokens": GENERATE, "temperature": 0, "stream": true,
                               "logit_bias": { "0": -100, "1": -100, "2": -100 } });
        if llama {
            body["ignore_eos"] = json!(true);
            body["cache_prompt"] = json!(false);
        }
        let req = client.post(format!("{url}/v1/completions")).json(&body).send();
        async move {
            let r = req.await.expect("request");
            assert!(r.status().is_success(), "status {}", r.status());
            let mut stream = r.bytes_stream();
            let mut first = None;
            let mut chunks = 0usize;
            while let Some(b) = stream.next().await {
                let b = b.expect("body");
                let n = String::from_utf8_lossy(&b).matches("\"text\"").count();
                if n > 0 && first.is_none() {
                    first = Some(start.elapsed());
                }
                chunks += n;
            }
            (first.unwrap_or_default(), chunks)
        }
    });
    let results = futures_util::future::join_all(jobs).await;
    let wall = start.elapsed().as_secs_f64();
    let mut ttfts: Vec<f64> = results.iter().map(|r| r.0.as_secs_f64() * 1e3).collect();
    ttfts.sort_by(f64::total_cmp);
    Run {
        tokens_per_s: (c * GENERATE) as f64 / wall,
        ttft_ms: ttfts[ttfts.len() / 2],
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Llama(Child);

impl Drop for Llama {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_healthy(client: &reqwest::Client, url: &str) {
    let start = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{url}/health")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{url} did not become healthy"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::main]
async fn main() {
    hearth::model::device::pin_thread_count();
    let id = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "smollm2-135m-instruct-q4_1".into());
    let path = hearth::catalog::resolve(&id).expect("model (fetch it with `hearth pull`)");
    let llama_bin = std::env::var("LLAMA_SERVER").expect(
        "set LLAMA_SERVER to a llama-server binary (scripts/verify-llamacpp.sh builds one)",
    );

    let model = Model::load(&path, &candle_core::Device::Cpu).expect("loading the model");
    // No prefix reuse, as llama-server runs with `cache_prompt: false`: both compute every prompt.
    let engine = Engine::start(
        model,
        id.clone(),
        EngineConfig {
            prefix_cache: 0,
            ..EngineConfig::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hearth_url = format!("http://{}", listener.local_addr().unwrap());
    let app = router(AppState::with_engine(ServeConfig::default(), engine));
    tokio::spawn(hearth::api::serve(listener, app, hearth::api::Limits::default(), std::future::pending(), || {}));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let llama_url = format!("http://127.0.0.1:{port}");
    let _llama = Llama(
        Command::new(&llama_bin)
            .args([
                "-m",
                path.to_str().unwrap(),
                "-t",
                &THREADS.to_string(),
                "-np",
                "4",
                "-c",
                "8192",
                "--port",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting llama-server"),
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    wait_healthy(&client, &llama_url).await;
    wait_healthy(&client, &hearth_url).await;
    // Warm both up.
    measure(&client, &hearth_url, 1, 3, false).await;
    measure(&client, &llama_url, 1, 3, true).await;

    println!("model {id}, {THREADS} threads, {GENERATE} tokens generated per stream, median of {ROUNDS}; tok/s = all generated tokens / wall time\n");
    println!("| prompt | streams | hearth tok/s | llama.cpp tok/s | ratio | hearth TTFT ms | llama.cpp TTFT ms |");
    println!("|---|---|---|---|---|---|---|");
    for (label, numbers) in [("~15 tokens", 3), ("~400 tokens", 100)] {
        for c in [1, 4] {
            let (mut ours, mut theirs, mut ot, mut tt) = (vec![], vec![], vec![], vec![]);
            for _ in 0..ROUNDS {
                let a = measure(&client, &hearth_url, c, numbers, false).await;
                let b = measure(&client, &llama_url, c, numbers, true).await;
                ours.push(a.tokens_per_s);
                theirs.push(b.tokens_per_s);
                ot.push(a.ttft_ms);
                tt.push(b.ttft_ms);
            }
            let (o, t) = (median(ours), median(theirs));
            println!(
                "| {label} | {c} | {o:.1} | {t:.1} | {:.2} | {:.0} | {:.0} |",
                o / t,
                median(ot),
                median(tt)
            );
        }
    }
}
