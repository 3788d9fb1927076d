//! The `openai` Python package's Responses API (pinned, from PyPI) against hearth serving SmolLM2
//! under a name of the client's choosing: plain and streamed answers equal, a forced function
//! call and its output sent back, ignored tool types named, `text.format`, and stateless refusals.

mod common;

use common::server::Server;
use hearth::api::ServeConfig;
use hearth::engine::EngineConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_responses_api_works_against_hearth() {
    let s = Server::smollm2_with(EngineConfig { prefix_cache: 0, ..EngineConfig::default() }, ServeConfig::default()).await;
    common::run_python("openai_responses.py", vec![s.url.clone()], &["openai==3.54.0", "jsonschema==4.26.0"]).await;
    let rows = s.ledger.rows(&Default::default(), 100, 0).unwrap().0;
    assert!(rows.len() >= 6 && rows.iter().filter(|r| r.record.endpoint == "/v1/responses").count() >= 6, "{rows:?}");
}
