//! The `hearth` binary as a user runs it: timing, errors, listing, the hf-hub cache and `serve`,
//! on a small synthetic model (no download). What `hearth run` writes with the real SmolLM2 is
//! in `smollm2_end_to_end.rs`.

mod common;

use std::path::PathBuf;
use std::process::Command;

/// The synthetic chat model, written into `dir`.
fn synth_model(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("synth-chat.gguf");
    common::server::write_synth_chat(&path);
    path
}

/// Runs the binary with extra environment variables: (success, stdout, stderr).
fn hearth_env(args: &[&str], env: &[(&str, &std::path::Path)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn hearth(args: &[&str]) -> (bool, String, String) {
    hearth_env(args, &[])
}

#[test]
fn speed_measures_parallel_generation() {
    let dir = tempfile::tempdir().unwrap();
    let model = synth_model(&dir);
    let m = model.to_str().unwrap();
    let (ok, out, err) = hearth(&["speed", "-m", m, "-p", "0", "-n", "8", "-r", "1", "--parallel", "3", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((&v["parallel"], &v["cache_type"]), (&serde_json::json!(3), &serde_json::json!("f16")), "{v}");
    assert!(v["tg_tps"].as_f64().unwrap() > 0.0 && v["pp_tps"].as_f64() == Some(0.0), "{v}");
    let (ok, out, err) = hearth(&["speed", "-m", m, "-p", "0", "-n", "4", "-r", "1", "--parallel", "2"]);
    assert!(ok && out.contains("tg4 x 2 sequences:") && out.contains("tok/s in all"), "{out}{err}");
    for ty in ["f32", "q8_0"] {
        let (ok, out, err) = hearth(&["speed", "-m", m, "-p", "16", "-n", "4", "-r", "1", "--cache-type", ty, "--json"]);
        assert!(ok, "{err}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()["cache_type"], ty, "{out}");
    }
    let (ok, _, err) = hearth(&["speed", "-m", m, "--parallel", "0"]);
    assert!(!ok && err.contains("--parallel"), "{err}");
    let (ok, _, err) = hearth(&["speed", "-m", m, "-p", "9000"]);
    assert!(!ok && err.contains("context of 8192 tokens"), "{err}");
}

#[test]
fn run_reports_speed_and_a_seed_reproduces_its_text() {
    let dir = tempfile::tempdir().unwrap();
    let model = synth_model(&dir);
    let m = model.to_str().unwrap();
    let (ok, _, err) = hearth(&["run", "-m", m, "--temperature", "0", "--max-tokens", "12", "The capital of France is"]);
    assert!(ok, "{err}");
    assert!(err.contains("loaded synthetic llama") && err.contains("f16 KV cache") && err.contains("tok/s") && err.contains("generation: "), "{err}");
    let (ok, _, err) = hearth_env(&["run", "-m", m, "--temperature", "0", "--max-tokens", "4", "Hi"], &[("HEARTH_CACHE_TYPE", std::path::Path::new("f32"))]);
    assert!(ok && err.contains("f32 KV cache"), "{err}");
    let args = ["run", "-m", m, "--chat", "--seed", "11", "--temperature", "0.9", "--max-tokens", "16", "Tell me a story."];
    let (first, second, other) = (hearth(&args), hearth(&args), hearth(&[&args[..5], &["12"], &args[6..]].concat()));
    assert!(first.0, "{}", first.2);
    assert_eq!(first.1, second.1, "same seed, same text");
    assert_ne!(first.1, other.1, "another seed, other text");
}

#[test]
fn bad_input_gives_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = synth_model(&dir);
    let m = model.to_str().unwrap();
    let (ok, _, err) = hearth(&["run", "-m", m, "--device", "cuda", "hi"]);
    assert!(!ok && err.contains("CUDA was not compiled"), "{err}");
    let (ok, _, err) = hearth(&["run", "-m", m, "--device", "tpu", "hi"]);
    assert!(!ok && err.contains("unknown device"), "{err}");
    let (ok, _, err) = hearth(&["run", "-m", "no-such-model", "hi"]);
    assert!(!ok && err.contains("unknown model \"no-such-model\"") && err.contains("smollm2-135m-instruct-q4_1"), "{err}");
    let (ok, _, err) = hearth(&["run", "-m", "/nonexistent/x.gguf", "hi"]);
    assert!(!ok && err.contains("no such file"), "{err}");
    let (ok, _, err) = hearth(&["run", "-m", m, "--temperature", "5", "hi"]);
    assert!(!ok && err.contains("--temperature must be between 0 and 2, got 5"), "{err}");
    let (ok, _, err) = hearth(&["run", "-m", m, "--repeat-penalty", "0", "hi"]);
    assert!(!ok && err.contains("--repeat-penalty must be in (0, 10], got 0"), "{err}");
    let (ok, _, err) = hearth(&["run", "-m", m, "--cache-type", "q4_0", "hi"]);
    assert!(!ok && err.contains("--cache-type") && err.contains("unknown cache type \"q4_0\": f16, q8_0 or f32"), "{err}");
    let (ok, _, err) = hearth(&["pull", "hf:only-owner"]);
    assert!(!ok && err.contains("bad hf reference"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"not a model").unwrap();
    let (ok, _, err) = hearth(&["run", "-m", junk.to_str().unwrap(), "hi"]);
    assert!(!ok && err.contains("junk.gguf") && err.contains("not a GGUF file"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn list_shows_the_catalog_and_missing_models_name_the_pull_command() {
    let (ok, out, _) = hearth(&["list"]);
    assert!(ok && out.contains("smollm2-135m-instruct-q4_1") && out.contains("gemma3-270m-q4_k_m") && out.contains("(default)"), "{out}");
    let empty = tempfile::tempdir().unwrap();
    let (ok, _, err) = hearth_env(&["run", "hi"], &[("HEARTH_HOME", empty.path())]);
    assert!(!ok && err.contains("run `hearth pull smollm2-135m-instruct-q4_1`"), "{err}");
}

/// Users with network pull `hf:` models through hf-hub; here a pre-populated hf-hub cache stands
/// in for the hub, and hearth must find and run the file from it without any network.
#[test]
fn hf_references_resolve_from_the_hf_hub_cache() {
    let hf_home = tempfile::tempdir().unwrap();
    let repo = hf_home.path().join("hub").join("models--someone--tiny-llama");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), commit).unwrap();
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    common::synth::write(&snap.join("tiny.gguf"), &common::synth::Synth::new("llama"));
    let offline = std::path::Path::new("1");
    let run = |args: &[&str]| hearth_env(args, &[("HF_HOME", hf_home.path()), ("HF_HUB_OFFLINE", offline)]);
    let (ok, out, err) = run(&["pull", "hf:someone/tiny-llama/tiny.gguf"]);
    assert!(ok && out.contains(&snap.join("tiny.gguf").display().to_string()), "{out}{err}");
    let (ok, _, err) = run(&["run", "-m", "hf:someone/tiny-llama/tiny.gguf", "--max-tokens", "4", "--temperature", "0", "ab"]);
    assert!(ok && err.contains("synthetic llama"), "{err}");
    let (ok, _, err) = run(&["run", "-m", "hf:someone/tiny-llama/other.gguf", "hi"]);
    assert!(!ok && err.contains("hearth pull hf:someone/tiny-llama/other.gguf"), "{err}");
}

#[test]
fn serve_answers_over_http_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let model = synth_model(&dir);
    let ledger = dir.path().join("ledger.sqlite");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["serve", "--port", "0", "-m"])
        .arg(&model)
        .arg("--ledger")
        .arg(&ledger)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_else(|| panic!("no address in {first:?}")).to_owned();
    assert!(url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"), "binds to loopback on a real port: {url}");
    // Wait for the model, then complete over plain HTTP/1.1.
    assert!(lines.any(|l| l.unwrap() == "ready"), "the server never became ready");
    let addr = url.trim_start_matches("http://").to_owned();
    let body = r#"{"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}"#;
    let request = format!("POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"text_completion\"") && answer.contains("\"model\":\"synth-chat\""), "{answer}");
    // SIGTERM ends it cleanly.
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}
