//! The cost ledger end to end: real requests to the real server (real HTTP, a small synthetic
//! model: no download), then the rows read straight from the SQLite file, with the counts and
//! costs the responses reported; cancelled and refused requests; `/v1/ledger`,
//! `/v1/ledger/summary` and `/dashboard`.

mod common;

use std::time::{Duration, Instant};

use common::server::{error_of, synth_no_eog, Server, SYNTH, SYNTH_CONTEXT};
use futures_util::StreamExt;
use rusqlite::Connection;
use serde_json::{json, Value};

struct DbRow {
    endpoint: String,
    outcome: String,
    prompt: u64,
    cached: u64,
    generated: u64,
    energy_j: f64,
    busy_s: f64,
    local_cost: f64,
    method: String,
    clouds: u64,
}

fn db(s: &Server) -> Connection {
    Connection::open(s.ledger.describe()).unwrap()
}

fn row(s: &Server, id: &str) -> Option<DbRow> {
    let c = db(s);
    let clouds: u64 = c.query_row("SELECT count(*) FROM cloud_costs WHERE request_id = ?1", [id], |r| r.get(0)).unwrap();
    c.query_row(
        "SELECT endpoint, outcome, prompt_tokens, cached_tokens, generated_tokens, energy_j, busy_s, local_cost, energy_method FROM requests WHERE id = ?1",
        [id],
        |r| {
            Ok(DbRow {
                endpoint: r.get(0)?,
                outcome: r.get(1)?,
                prompt: r.get(2)?,
                cached: r.get(3)?,
                generated: r.get(4)?,
                energy_j: r.get(5)?,
                busy_s: r.get(6)?,
                local_cost: r.get(7)?,
                method: r.get(8)?,
                clouds,
            })
        },
    )
    .ok()
}

/// Checks a response's usage against its row, and that the cost is sensible; returns the row.
fn matches_row(s: &Server, id: &str, usage: &Value, endpoint: &str) -> DbRow {
    let r = row(s, id).unwrap_or_else(|| panic!("no ledger row for {id}"));
    assert_eq!(r.endpoint, endpoint);
    assert_eq!(r.prompt, usage["prompt_tokens"].as_u64().unwrap(), "{usage}");
    assert_eq!(r.generated, usage["completion_tokens"].as_u64().unwrap(), "{usage}");
    assert_eq!(r.cached, usage["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap(), "{usage}");
    let cost = &usage["cost"];
    assert!(r.energy_j > 0.0 && r.busy_s > 0.0, "energy {} J over {} s", r.energy_j, r.busy_s);
    assert!(["rapl", "estimate"].contains(&r.method.as_str()));
    assert_eq!(cost["local"]["energy_method"], r.method.as_str());
    assert!((cost["local"]["amount"].as_f64().unwrap() - r.local_cost).abs() < 1e-12, "{cost}");
    let cloud = cost["cloud"].as_array().unwrap();
    assert_eq!(cloud.len() as u64, r.clouds, "every comparator priced and stored");
    assert_eq!(cloud[0]["model"], "gpt-4.1-mini");
    assert!(cloud.iter().all(|c| c["amount"].as_f64().unwrap() > 0.0), "{cost}");
    let hy = cloud.iter().find(|c| c["currency"] == "CNY").expect("a CNY comparator");
    assert_eq!(hy["converted"]["currency"], "USD");
    let saved = &cost["saved"];
    assert_eq!(saved["vs"], "gpt-4.1-mini");
    let want = cloud[0]["amount"].as_f64().unwrap() - r.local_cost;
    assert!((saved["amount"].as_f64().unwrap() - want).abs() < 1e-12, "{cost}");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_a_row_with_the_counts_and_costs_it_reported() {
    let s = Server::synth().await;
    let body = json!({ "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0 });
    let (status, headers, a) = s.post("/v1/completions", &body).await;
    assert_eq!(status, 200, "{a}");
    let r = matches_row(&s, a["id"].as_str().unwrap(), &a["usage"], "/v1/completions");
    let finish = a["choices"][0]["finish_reason"].as_str().unwrap();
    assert_eq!(r.outcome, if finish == "length" { "stopped" } else { "ok" });
    let local: f64 = headers["x-hearth-local-cost"].to_str().unwrap().strip_suffix(" USD").unwrap().parse().unwrap();
    assert!((local - r.local_cost).abs() < 1e-9);
    assert!(headers["x-hearth-cloud-cost"].to_str().unwrap().ends_with("USD; model=gpt-4.1-mini"));

    // The same prompt again reuses its prefix: cached tokens reach the row and the cloud price.
    let (_, _, b) = s.post("/v1/completions", &body).await;
    let rb = matches_row(&s, b["id"].as_str().unwrap(), &b["usage"], "/v1/completions");
    assert!(rb.cached > 0);

    // Streamed chat: the usage chunk carries the cost, and the row exists before it is sent.
    let chat = json!({ "messages": [{ "role": "user", "content": "Say hi." }], "max_tokens": 6, "temperature": 0,
                       "stream": true, "stream_options": { "include_usage": true } });
    let events = s.stream("/v1/chat/completions", &chat).await;
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    matches_row(&s, usage_chunk["id"].as_str().unwrap(), &usage_chunk["usage"], "/v1/chat/completions");

    // A refused request is an error row with nothing charged.
    let (status, _, e) = s.post("/v1/completions", &json!({ "prompt": "hi", "max_tokens": 100000 })).await;
    error_of(status, &e, 400);
    let errors: (u64, u64) = db(&s)
        .query_row("SELECT count(*), coalesce(sum(prompt_tokens + generated_tokens), 0) FROM requests WHERE outcome = 'error'", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!(errors, (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_is_recorded_as_cancelled_with_what_it_used() {
    let s = Server::synth().await;
    // As many tokens as the context leaves, which takes the synthetic model seconds.
    let long = SYNTH_CONTEXT - 100;
    let body = json!({ "prompt": "Write a very long story:", "max_tokens": long, "temperature": 0, "logit_bias": synth_no_eog(), "stream": true });
    let r = s.client.post(format!("{}/v1/completions", s.url)).json(&body).send().await.unwrap();
    let mut stream = r.bytes_stream();
    let mut seen = 0;
    while seen < 4 {
        seen += String::from_utf8_lossy(&stream.next().await.unwrap().unwrap()).matches("data: ").count();
    }
    drop(stream);
    let start = Instant::now();
    let cancelled = loop {
        let found = db(&s)
            .query_row("SELECT generated_tokens, energy_j FROM requests WHERE outcome = 'cancelled'", [], |r| Ok((r.get::<_, u64>(0)?, r.get::<_, f64>(1)?)))
            .ok();
        if let Some(f) = found {
            break f;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no cancelled row");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(cancelled.0 >= 3 && cancelled.0 < long as u64 && cancelled.1 > 0.0, "{cancelled:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_endpoints_list_filter_and_sum_the_rows() {
    let s = Server::synth().await;
    for p in ["One", "Two", "Three"] {
        let (status, _, a) = s.post("/v1/completions", &json!({ "prompt": p, "max_tokens": 3, "temperature": 0 })).await;
        assert_eq!(status, 200, "{a}");
    }
    let (status, text) = s.get("/v1/ledger?limit=2").await;
    assert_eq!(status, 200, "{text}");
    let page: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((page["total"].as_u64(), page["data"].as_array().unwrap().len(), page["has_more"].as_bool()), (Some(3), 2, Some(true)));
    assert_eq!(page["data"][0]["cloud"].as_array().unwrap().len(), 10);
    // One flat object per row: the record's fields, its price and its cloud equivalents.
    let row = &page["data"][0];
    assert!(row["id"].is_string() && row["time_ms"].as_i64().unwrap() > 0 && row["local_cost"].as_f64().unwrap() > 0.0, "{row}");
    assert!(["ok", "stopped"].contains(&row["outcome"].as_str().unwrap()) && row["endpoint"] == "/v1/completions", "{row}");
    assert!(row["cloud"].as_array().unwrap().iter().any(|c| c["comparator"] == "gpt-4.1-mini" && c["amount"].as_f64().unwrap() > 0.0), "{row}");
    let (_, text) = s.get(&format!("/v1/ledger?offset=2&since=1h&model={SYNTH}")).await;
    let rest: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((rest["data"].as_array().unwrap().len(), rest["has_more"].as_bool()), (1, Some(false)));
    let (_, text) = s.get("/v1/ledger?model=other").await;
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["total"], 0);

    let (status, text) = s.get("/v1/ledger/summary?group_by=model").await;
    assert_eq!(status, 200, "{text}");
    let sum: Value = serde_json::from_str(&text).unwrap();
    let prompt: u64 = db(&s).query_row("SELECT sum(prompt_tokens) FROM requests", [], |r| r.get(0)).unwrap();
    assert_eq!(sum["total"]["requests"], 3);
    assert_eq!(sum["total"]["prompt_tokens"].as_u64(), Some(prompt));
    assert_eq!(sum["groups"][0]["key"], SYNTH);
    assert_eq!(sum["vs"], "gpt-4.1-mini");
    assert!(sum["total"]["saved"].as_f64().unwrap() > 0.0, "{sum}");

    for (path, param) in [
        ("/v1/ledger?since=yesterday", "since"),
        ("/v1/ledger?limit=5000", "limit"),
        ("/v1/ledger?colour=red", "colour"),
        ("/v1/ledger/summary?group_by=week", "group_by"),
    ] {
        let (status, text) = s.get(path).await;
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error_of(status, &v, 400)["param"], param, "{path}");
    }

    let (status, html) = s.get("/dashboard").await;
    assert_eq!(status, 200);
    assert_eq!(html.matches("<svg").count(), 3, "three charts");
    assert!(html.contains("Requests per day") && html.contains("gpt-4.1-mini"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_ledger_loses_no_row() {
    let s = Server::synth().await;
    // Another process holds the database's write lock for the length of 20 requests.
    let locker = db(&s);
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let body = json!({ "prompt": "x", "max_tokens": 2 });
    let mut ids = Vec::new();
    for _ in 0..20 {
        let (st, _, v) = s.post("/v1/completions", &body).await;
        assert_eq!(st, 200, "{v}");
        assert!(v["usage"]["cost"]["local"]["amount"].as_f64().is_some(), "the cost is still reported: {v}");
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    assert!(s.metric("hearth_ledger_spooled_rows").await >= 1.0, "rows wait in the spool");
    locker.execute_batch("COMMIT").unwrap();
    drop(locker);
    // The next write after the retry pause finds the database free and writes the waiting rows.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (st, _, v) = s.post("/v1/completions", &body).await;
    assert_eq!(st, 200);
    ids.push(v["id"].as_str().unwrap().to_owned());
    let conn = db(&s);
    for id in &ids {
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM requests WHERE id = ?1", [id], |r| r.get(0)).unwrap();
        assert_eq!(n, 1, "request {id} has {n} rows");
    }
    let total: i64 = conn.query_row("SELECT COUNT(*) FROM requests", [], |r| r.get(0)).unwrap();
    assert_eq!(total, 21);
    assert_eq!(s.metric("hearth_ledger_spooled_rows").await, 0.0);
}
