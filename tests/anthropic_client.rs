//! The official `anthropic` Python package (pinned, from PyPI) against hearth serving SmolLM2
//! under Claude's model names: messages, streaming equal to whole answers, count_tokens, stop
//! sequences, tool use with tool results, structured output, and errors in Anthropic's shape.

mod common;

use common::server::Server;
use hearth::api::ServeConfig;
use hearth::engine::EngineConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_anthropic_client_works_against_hearth() {
    let config = ServeConfig { api_key: Some("test-key".into()), ..ServeConfig::default() };
    let s = Server::smollm2_with(EngineConfig { prefix_cache: 0, ..EngineConfig::default() }, config).await;
    common::run_python("anthropic_client.py", vec![s.url.clone(), "test-key".into()], &["anthropic==2.17.0", "jsonschema==4.26.0"]).await;
    // Every request the client made is in the ledger, under the served model and the asked name.
    let rows = s.ledger.rows(&Default::default(), 100, 0).unwrap().0;
    assert!(rows.len() >= 8 && rows.iter().all(|r| r.record.endpoint.starts_with("/v1/messages")), "{rows:?}");
    assert!(rows.iter().any(|r| r.record.asked_model.as_deref() == Some("claude-sonnet-4-5")));
}
