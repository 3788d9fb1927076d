//! The official `openai` Python package (installed from PyPI by this test, pinned) completes,
//! chats and streams against a real hearth server: a real client, not our own.

mod common;

use std::process::Command;

use common::server::Server;
use hearth::api::ServeConfig;
use hearth::engine::EngineConfig;

const OPENAI: &str = "openai==3.54.0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_client_works_against_hearth() {
    let deps = tokio::task::spawn_blocking(|| common::python_package(OPENAI)).await.unwrap();
    let config = ServeConfig { api_key: Some("test-key".into()), cors_origins: vec![], ..ServeConfig::default() };
    let s = Server::smollm2_with(EngineConfig { prefix_cache: 0, ..EngineConfig::default() }, config).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/openai_client.py");
    let url = s.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3").arg(script).arg(url).arg("test-key").env("PYTHONPATH", deps).output().unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.trim() == "ok", "the openai client failed:\n{stdout}\n{stderr}");
}
