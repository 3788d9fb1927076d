//! Tool calls and structured output through the official `openai` Python package (pinned, from
//! PyPI) on both catalog models: forced calls valid 50 of 50 (greedy and at temperature 1.0),
//! streamed calls equal to whole ones, a full call → result → answer round trip, JSON Schema
//! answers valid 50 of 50, and `chat.completions.parse` with a pydantic model.

mod common;

use common::server::Server;
use hearth::api::ServeConfig;
use hearth::engine::EngineConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_client_gets_valid_tool_calls_and_json() {
    // Without prefix reuse, a streamed request computes exactly what the same whole one did.
    let engine = EngineConfig { prefix_cache: 0, ..EngineConfig::default() };
    let smollm2 = Server::smollm2_with(engine.clone(), ServeConfig::default()).await;
    let gemma = Server::start(&common::model_path("gemma3-270m-q4_k_m"), "gemma3-270m-q4_k_m", engine, ServeConfig::default()).await;
    let args = vec![smollm2.url.clone(), gemma.url.clone(), "any-key".into()];
    common::run_python("openai_tools.py", args, &["openai==3.54.0", "jsonschema==4.26.0"]).await;
    assert!(smollm2.metric("hearth_tool_calls_total").await >= 100.0);
}
