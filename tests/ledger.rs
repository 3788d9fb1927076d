//! The ledger without a model: price arithmetic against hand-computed examples, price files,
//! both stores (a SQLite file and a real PostgreSQL server: migrations, rows, summaries, the same
//! answers from each), a database outage that loses and doubles no row, instances of a fleet, and
//! startup errors that name the file.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::pg::Pg;
use hearth::ledger::{Billed, Filter, GroupBy, Ledger, LedgerError, Outcome, PriceTable, PromptText, Record, Target};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 + 1e-9 * b.abs()
}

fn entry(id: &str, model: &str, prompt: u64, cached: u64, generated: u64) -> Record {
    Record {
        id: id.into(),
        endpoint: "/v1/completions".into(),
        model: model.into(),
        quantization: "Q4_1".into(),
        device: "Cpu".into(),
        outcome: Outcome::Ok,
        finish_reason: Some("stop".into()),
        prompt_tokens: prompt,
        cached_tokens: cached,
        generated_tokens: generated,
        queue_ms: 1.0,
        ttft_ms: Some(20.0),
        total_ms: 100.0,
        energy_j: 3.6e6,
        energy_method: "estimate".into(),
        busy_s: 3600.0,
        api_key_hash: None,
        tool_calls: 0,
        asked_model: None,
    }
}

#[test]
fn cloud_cost_counts_cached_tokens_at_their_own_price() {
    let p = PriceTable::built_in();
    let m = p.model("gpt-4.1-mini").unwrap();
    // 600 uncached × 0.40 + 400 cached × 0.10 + 200 out × 1.60, per million.
    assert!(close(m.cost(Billed { prompt: 1000, cached: 400, completion: 200 }), 6.0e-4));
    // More cached than prompt cannot make the input cheaper than all-cached.
    assert!(close(m.cost(Billed { prompt: 100, cached: 500, completion: 0 }), 100.0 * 0.10 / 1e6));
}

#[test]
fn long_context_tiers_price_the_whole_request() {
    let p = PriceTable::built_in();
    let m = p.model("claude-sonnet-4-5").unwrap();
    // At the threshold the base rates apply; above it every token is at the tier's.
    assert!(close(m.cost(Billed { prompt: 200_000, cached: 0, completion: 1000 }), 0.6 + 0.015));
    assert!(close(m.cost(Billed { prompt: 250_000, cached: 50_000, completion: 1000 }), (200_000.0 * 6.0 + 50_000.0 * 0.6 + 1000.0 * 22.5) / 1e6));
}

#[test]
fn cny_prices_convert_at_the_stated_rate() {
    let p = PriceTable::built_in();
    let m = p.model("hunyuan-2.0").unwrap();
    assert_eq!(m.currency, "CNY");
    let cny = m.cost(Billed { prompt: 1_000_000, cached: 500_000, completion: 1_000_000 });
    assert!(close(cny, 0.5 * 2.815 + 0.5 * 1.0 + 6.5));
    assert!(close(p.to_display("CNY"), 0.14));
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&tmp.path().join("l.sqlite"), p).unwrap();
    let cost = ledger.record(entry("a", "m", 1_000_000, 500_000, 1_000_000), None, "").unwrap();
    let hy = cost.cloud.iter().find(|c| c.model == "hunyuan-2.0").unwrap();
    assert_eq!(hy.currency, "CNY");
    let conv = hy.converted.as_ref().unwrap();
    assert!(close(conv.amount, cny * 0.14) && conv.currency == "USD" && close(conv.rate, 0.14));
    assert!(hy.estimate, "no public tokenizer for HY: hearth's own counts");
}

#[test]
fn local_cost_is_energy_plus_amortized_hardware() {
    let p = PriceTable::built_in();
    // 1 kWh at 0.20; one busy hour of a 1000 USD machine over 26280 hours.
    let (electricity, hardware) = p.local.cost(3.6e6, 3600.0);
    assert!(close(electricity, 0.20));
    assert!(close(hardware, 1000.0 / 26280.0));
    assert!(close(p.local.watts_per_core(), 65.0 / 8.0));
    // The engine's default estimate assumes the same machine as the built-in table.
    assert!(close(p.local.watts_per_core(), hearth::energy::DEFAULT_WATTS_PER_CORE));
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&tmp.path().join("l.sqlite"), p).unwrap();
    let cost = ledger.record(entry("a", "m", 1000, 0, 1000), None, "").unwrap();
    assert!(close(cost.local.amount, 0.20 + 1000.0 / 26280.0));
    assert_eq!(cost.local.energy_method, "estimate");
    let first = &cost.cloud[0];
    let saved = cost.saved.unwrap();
    assert_eq!(saved.vs, first.model);
    assert!(close(saved.amount, first.amount - cost.local.amount));
}

#[test]
fn openai_comparators_recount_with_their_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&tmp.path().join("l.sqlite"), PriceTable::built_in()).unwrap();
    let prompt = PromptText::Chat(vec![("user".into(), "hello world".into())]);
    ledger.record(entry("r", "m", 10, 5, 7), Some(&prompt), "hello world").unwrap();
    let row = ledger.row("r").unwrap().unwrap();
    let gpt = row.cloud.iter().find(|c| c.comparator == "gpt-4o-mini").unwrap();
    // 3 framing + "user" + "hello world" + 3 priming; cached scaled from 5 of 10 to 5 of 9.
    assert_eq!((gpt.prompt_tokens, gpt.cached_tokens, gpt.completion_tokens, gpt.estimate), (9, 5, 2, false));
    assert!(close(gpt.amount, (4.0 * 0.15 + 5.0 * 0.075 + 2.0 * 0.60) / 1e6));
    let claude = row.cloud.iter().find(|c| c.comparator == "claude-haiku-4-5").unwrap();
    assert_eq!((claude.prompt_tokens, claude.cached_tokens, claude.completion_tokens, claude.estimate), (10, 5, 7, true));
}

#[test]
fn a_user_file_overrides_extends_and_picks_comparators() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("mine.toml");
    std::fs::write(
        &f,
        r#"
version = "team-1"
compare = ["in-house", "gpt-4.1"]
[currency]
display = "EUR"
[local]
electricity_per_kwh = 0.35
currency = "EUR"
[[model]]
id = "gpt-4.1"
provider = "OpenAI"
currency = "USD"
input = 1.0
cached_input = 0.25
output = 4.0
taken = "2026-12-01"
source = "our contract"
[[model]]
id = "in-house"
provider = "us"
currency = "EUR"
input = 0.1
cached_input = 0.1
output = 0.1
taken = "2026-12-01"
source = "finance"
"#,
    )
    .unwrap();
    let p = PriceTable::with_file(&f).unwrap();
    assert_eq!(p.version, "2026-11-23+team-1");
    assert_eq!(p.compare, ["in-house", "gpt-4.1"]);
    assert_eq!(p.model("gpt-4.1").unwrap().input, 1.0);
    assert!(p.model("gpt-4o-mini").is_some(), "untouched entries stay");
    assert_eq!(p.local.electricity_per_kwh, 0.35);
    assert_eq!(p.local.hardware_price, 1000.0, "unset local settings keep their defaults");
    assert!(close(p.to_display("USD"), 1.0 / 1.16));
    let p = p.comparing(&["gpt-4o-mini".into()]).unwrap();
    assert_eq!(p.compare, ["gpt-4o-mini"]);
    assert!(p.comparing(&["gpt-9".into()]).unwrap_err().to_string().contains("gpt-9"));
}

fn prices_error(text: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("bad-prices.toml");
    std::fs::write(&f, text).unwrap();
    let e = PriceTable::with_file(&f).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, LedgerError::Prices { .. }) && msg.contains("bad-prices.toml"), "{msg}");
    msg
}

#[test]
fn bad_price_files_are_refused_naming_the_file_and_the_fault() {
    assert!(prices_error("compare = [").contains("price file"));
    assert!(prices_error("colour = 1").contains("colour"));
    assert!(prices_error("compare = [\"gpt-9\"]").contains("gpt-9"));
    let model = |extra: &str| format!("[[model]]\nid = \"x\"\nprovider = \"p\"\ncurrency = \"USD\"\ninput = 1.0\ncached_input = 1.0\noutput = 1.0\ntaken = \"t\"\nsource = \"s\"\n{extra}");
    assert!(prices_error(&model("").replace("input = 1.0\ncached", "input = -1.0\ncached")).contains("not negative"));
    assert!(prices_error(&model("").replace("USD", "XYZ")).contains("XYZ"));
    assert!(prices_error(&format!("{}{}", model(""), model(""))).contains("twice"));
    assert!(prices_error("[local]\nhardware_lifetime_hours = 0.0").contains("hardware_lifetime_hours"));
    let missing = PriceTable::with_file(Path::new("/nonexistent/prices.toml")).unwrap_err().to_string();
    assert!(missing.contains("/nonexistent/prices.toml"), "{missing}");
}

/// Writes three rows, checks what reads back, and returns the ledger reopened.
fn rows_filters_and_summaries(open: &dyn Fn() -> Ledger) -> Ledger {
    let ledger = open();
    ledger.record(entry("1", "a", 100, 0, 10), None, "").unwrap();
    ledger.record(entry("2", "b", 200, 50, 20), None, "").unwrap();
    let mut cancelled = entry("3", "a", 300, 0, 0);
    cancelled.outcome = Outcome::Cancelled;
    cancelled.finish_reason = None;
    ledger.record(cancelled, None, "").unwrap();
    let e = ledger.record(entry("1", "a", 1, 1, 1), None, "").unwrap_err();
    assert!(matches!(e, LedgerError::Duplicate { .. }), "ids are unique: {e}");
    drop(ledger);
    // Reopening runs no migration twice and keeps the rows.
    let ledger = open();
    let (rows, total) = ledger.rows(&Filter::default(), 2, 0).unwrap();
    assert_eq!(total, 3);
    assert_eq!(rows.len(), 2);
    let (a, n) = ledger.rows(&Filter { model: Some("a".into()), ..Filter::default() }, 10, 0).unwrap();
    assert_eq!((n, a.iter().map(|r| r.record.outcome.as_str()).collect::<Vec<_>>()), (2, vec!["cancelled", "ok"]));
    let future = Filter { since_ms: Some(chrono::Utc::now().timestamp_millis() + 60_000), ..Filter::default() };
    assert_eq!(ledger.rows(&future, 10, 0).unwrap().1, 0);
    let by_model = ledger.summary(&Filter::default(), GroupBy::Model).unwrap();
    let keys: Vec<&str> = by_model.groups.iter().map(|g| g.key.as_str()).collect();
    assert_eq!(keys, ["a", "b"]);
    assert_eq!((by_model.groups[0].totals.requests, by_model.groups[0].totals.prompt_tokens, by_model.groups[0].totals.generated_tokens), (2, 400, 10));
    assert_eq!((by_model.total.totals.requests, by_model.total.totals.cached_tokens), (3, 50));
    let vs = by_model.vs.clone().unwrap();
    let cloud_total: f64 = by_model.groups.iter().map(|g| g.cloud[0].amount).sum();
    assert_eq!(by_model.total.cloud[0].model, vs);
    assert!(close(by_model.total.cloud[0].amount, cloud_total));
    assert!(close(by_model.total.saved, by_model.total.cloud[0].amount - by_model.total.local));
    let by_day = ledger.summary(&Filter::default(), GroupBy::Day).unwrap();
    assert_eq!(by_day.groups.len(), 1);
    assert_eq!(by_day.groups[0].key, chrono::Utc::now().format("%Y-%m-%d").to_string());
    let table = by_model.to_table();
    assert!(table.contains("total") && table.contains("amounts in USD") && table.contains("1 CNY = 0.14 USD"), "{table}");
    assert_eq!(by_model.to_csv().lines().count(), 4);
    ledger
}

#[test]
fn rows_filters_and_summaries_read_back_what_was_written() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("deep/dir/ledger.sqlite");
    rows_filters_and_summaries(&|| Ledger::open(&path, PriceTable::built_in()).unwrap());
}

/// Equal JSON, numbers equal up to the order of summation (each database adds in its own order).
fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value::*;
    match (a, b) {
        (Number(x), Number(y)) => close(x.as_f64().unwrap(), y.as_f64().unwrap()),
        (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y)),
        (Object(x), Object(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w))),
        _ => a == b,
    }
}

/// A PostgreSQL ledger at `url` with its spool in `dir`, rows named after `instance`.
fn pg_ledger(url: &str, dir: &Path, instance: &str) -> Ledger {
    Ledger::open_target(&Target::Postgres(url.into()), Some(&dir.join("spool.sqlite")), PriceTable::built_in()).unwrap().with_instance(instance)
}

#[test]
fn postgres_reads_back_what_sqlite_does() {
    let pg = Pg::start();
    let url = pg.database("same");
    let tmp = tempfile::tempdir().unwrap();
    let on_pg = rows_filters_and_summaries(&|| pg_ledger(&url, tmp.path(), "i"));
    let on_file = rows_filters_and_summaries(&|| Ledger::open(&tmp.path().join("l.sqlite"), PriceTable::built_in()).unwrap().with_instance("i"));
    // The same rows, field for field (time stamps aside), and the same sums.
    let (mut a, mut b) = (on_pg.rows(&Filter::default(), 10, 0).unwrap().0, on_file.rows(&Filter::default(), 10, 0).unwrap().0);
    for r in a.iter_mut().chain(b.iter_mut()) {
        r.priced.ts_ms = 0;
    }
    a.sort_by(|x, y| x.record.id.cmp(&y.record.id));
    b.sort_by(|x, y| x.record.id.cmp(&y.record.id));
    assert_eq!(a, b);
    assert_eq!(a[0].priced.instance_id.as_deref(), Some("i"));
    for by in [GroupBy::Day, GroupBy::Model, GroupBy::Instance] {
        let (x, y) = (on_pg.summary(&Filter::default(), by).unwrap(), on_file.summary(&Filter::default(), by).unwrap());
        let (x, y) = (serde_json::to_value(&x).unwrap(), serde_json::to_value(&y).unwrap());
        assert!(same_json(&x, &y), "{by:?}: {x} against {y}");
    }
    assert_eq!(on_pg.row("2").unwrap().unwrap().record.model, "b");
    assert!(on_pg.row("none").unwrap().is_none());
    assert!(!on_pg.describe().contains("password"));
}

#[test]
fn replicas_share_one_postgres_ledger_and_migrate_once() {
    let pg = Pg::start();
    let url = pg.database("fleet");
    let tmp = tempfile::tempdir().unwrap();
    // Four replicas start at once on an empty database.
    let ledgers: Vec<Ledger> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|i| s.spawn({ let (url, dir) = (url.clone(), tmp.path().to_owned()); move || pg_ledger(&url, &dir, &format!("replica-{i}")) })).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, l) in ledgers.iter().enumerate() {
        for j in 0..=i {
            l.record(entry(&format!("r{i}-{j}"), "m", 10, 0, 5), None, "").unwrap();
        }
    }
    let by = ledgers[0].summary(&Filter::default(), GroupBy::Instance).unwrap();
    let counts: Vec<(String, u64)> = by.groups.iter().map(|g| (g.key.clone(), g.totals.requests)).collect();
    assert_eq!(counts, (0..4).map(|i| (format!("replica-{i}"), i as u64 + 1)).collect::<Vec<_>>());
    assert_eq!(ledgers[3].rows(&Filter { instance: Some("replica-2".into()), ..Filter::default() }, 100, 0).unwrap().1, 3);
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    assert_eq!(c.query_one("SELECT version FROM hearth_schema", &[]).unwrap().get::<_, i32>(0), 4);
    assert_eq!(c.query_one("SELECT count(*) FROM hearth_schema", &[]).unwrap().get::<_, i64>(0), 1);
}

#[test]
fn a_postgres_outage_loses_and_doubles_no_row() {
    let pg = Pg::start();
    let url = pg.database("outage");
    let tmp = tempfile::tempdir().unwrap();
    let ledger = pg_ledger(&url, tmp.path(), "a");
    for i in 0..5 {
        ledger.record(entry(&format!("before-{i}"), "m", 10, 0, 5), None, "").unwrap();
    }
    pg.pause();
    // Answered while the database is down: each row is spooled at once, none waits long.
    let t = Instant::now();
    for i in 0..20 {
        ledger.record(entry(&format!("during-{i}"), "m", 10, 0, 5), None, "").unwrap();
    }
    assert!(t.elapsed() < Duration::from_secs(10), "20 spooled rows took {:?}", t.elapsed());
    assert_eq!(ledger.spooled(), 20);
    pg.resume();
    // The spool drains by itself once the database answers, each row once.
    let t = Instant::now();
    while ledger.spooled() > 0 && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(ledger.spooled(), 0);
    ledger.record(entry("after", "m", 10, 0, 5), None, "").unwrap();
    let (rows, total) = ledger.rows(&Filter::default(), 100, 0).unwrap();
    assert_eq!(total, 26);
    let mut ids: Vec<String> = rows.into_iter().map(|r| r.record.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 26);
    // A spooled row replayed again (a crash between insert and removal) is not stored twice.
    let again = ledger.row("during-3").unwrap().unwrap();
    let other = pg_ledger(&url, tmp.path(), "a");
    assert!(matches!(other.record(again.record, None, ""), Err(LedgerError::Duplicate { .. })));
    assert_eq!(other.rows(&Filter::default(), 1, 0).unwrap().1, 26);
}

#[test]
fn a_bad_postgres_url_is_refused_naming_it_without_the_password() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Ledger::open_target(&Target::Postgres("postgres://u:hunter2@host:notaport/db".into()), Some(&tmp.path().join("s")), PriceTable::built_in()).err().unwrap().to_string();
    assert!(e.contains("postgres://u@host:notaport/db") && !e.contains("hunter2"), "{e}");
}

#[test]
fn unusable_ledger_paths_fail_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let under_file = file.join("ledger.sqlite");
    let e = Ledger::open(&under_file, PriceTable::built_in()).err().unwrap().to_string();
    assert!(e.contains("a-file"), "{e}");
    // Not a database.
    let junk = tmp.path().join("junk.sqlite");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();
    let e = Ledger::open(&junk, PriceTable::built_in()).err().unwrap().to_string();
    assert!(e.contains("junk.sqlite"), "{e}");
    // Written by a newer hearth.
    let newer = tmp.path().join("newer.sqlite");
    rusqlite::Connection::open(&newer).unwrap().pragma_update(None, "user_version", 99).unwrap();
    let e = Ledger::open(&newer, PriceTable::built_in()).err().unwrap().to_string();
    assert!(e.contains("newer.sqlite") && e.contains("99"), "{e}");
}

#[test]
fn a_batched_step_is_shared_by_the_tokens_each_sequence_processed() {
    use hearth::engine::{step_shares, Meter};
    // A step of 0.3 s and 6 J: one 100-token prompt chunk and two decoding sequences (1 each).
    let shares = step_shares(&[100, 1, 1], 6.0, 0.3);
    assert!(close(shares[0].0, 6.0 * 100.0 / 102.0) && close(shares[1].0, 6.0 / 102.0));
    assert!(close(shares[2].1, 0.3 / 102.0));
    assert!(close(shares.iter().map(|s| s.0).sum::<f64>(), 6.0), "nothing lost or counted twice");
    assert_eq!(step_shares(&[0, 0], 1.0, 1.0), [(0.0, 0.0), (0.0, 0.0)]);
    // Two choices of one request charge the same meter.
    let m = Meter::default();
    m.add(shares[1].0, shares[1].1);
    m.add(shares[2].0, shares[2].1);
    assert!((m.joules() - 12.0 / 102.0).abs() < 1e-6 && (m.busy_secs() - 0.6 / 102.0).abs() < 1e-9);
}
