//! The official `ollama` Python package (pinned, from PyPI) against hearth: list, show, ps,
//! generate (raw, and `suffix` on a synthetic model with fill-in-the-middle tokens), chat,
//! streaming equal to whole answers, `format` schemas, tools, and errors in Ollama's shape.

mod common;

use common::server::Server;
use common::synth::{self, Synth};
use hearth::api::ServeConfig;
use hearth::engine::EngineConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_ollama_client_works_against_hearth() {
    let engine = EngineConfig { prefix_cache: 0, ..EngineConfig::default() };
    let smol = Server::smollm2_with(engine.clone(), ServeConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fim.gguf");
    synth::write(&path, &Synth { context: 512, ..Synth::new("qwen2") });
    let fim = Server::start(&path, "synth-fim", engine, ServeConfig::default()).await;
    common::run_python("ollama_client.py", vec![smol.url.clone(), fim.url.clone()], &["ollama==0.6.3", "jsonschema==4.26.0"]).await;
    let rows = smol.ledger.rows(&Default::default(), 100, 0).unwrap().0;
    assert!(rows.iter().any(|r| r.record.endpoint == "/api/chat") && rows.iter().any(|r| r.record.endpoint == "/api/generate"));
}
