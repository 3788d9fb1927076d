//! The official `openai` Python package (installed from PyPI by this test, pinned) completes,
//! chats and streams against a real hearth server: a real client, not our own.

mod common;

use common::server::Server;
use hearth::api::ServeConfig;
use hearth::engine::EngineConfig;

pub const OPENAI: &str = "openai==3.54.0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_client_works_against_hearth() {
    let config = ServeConfig { api_key: Some("test-key".into()), ..ServeConfig::default() };
    let s = Server::smollm2_with(EngineConfig { prefix_cache: 0, ..EngineConfig::default() }, config).await;
    common::run_python("openai_client.py", vec![s.url.clone(), "test-key".into()], &[OPENAI]).await;
}
