//! Tool calls and structured output through the official `openai` Python package (pinned, from
//! PyPI) on both catalog models: forced calls valid 50 of 50 (greedy and at temperature 1.0),
//! streamed calls equal to whole ones, a full call → result → answer round trip, JSON Schema
//! answers valid 50 of 50, and `chat.completions.parse` with a pydantic model.

mod common;

use std::process::Command;

use common::server::Server;
use hearth::api::ServeConfig;
use hearth::engine::EngineConfig;

const OPENAI: &str = "openai==3.54.0";
const JSONSCHEMA: &str = "jsonschema==4.26.0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_client_gets_valid_tool_calls_and_json() {
    let deps = tokio::task::spawn_blocking(|| [common::python_package(OPENAI), common::python_package(JSONSCHEMA)]).await.unwrap();
    let config = ServeConfig::default;
    // Without prefix reuse, a streamed request computes exactly what the same whole one did.
    let engine = EngineConfig { prefix_cache: 0, ..EngineConfig::default() };
    let smollm2 = Server::smollm2_with(engine.clone(), config()).await;
    let gemma = Server::start(&common::model_path("gemma3-270m-q4_k_m"), "gemma3-270m-q4_k_m", engine, config()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/openai_tools.py");
    let (a, b) = (smollm2.url.clone(), gemma.url.clone());
    let path = std::env::join_paths(deps.iter()).unwrap();
    let out = tokio::task::spawn_blocking(move || Command::new("python3").args([script, &a, &b, "test-key"]).env("PYTHONPATH", path).output().unwrap())
        .await
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.trim() == "ok", "the openai client's tool checks failed:\n{stdout}\n{stderr}");
    assert!(smollm2.metric("hearth_tool_calls_total").await >= 100.0);
}
