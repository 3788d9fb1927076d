//! Wire types only: the JSON bodies of OpenAI's completions and chat endpoints and llama.cpp's
//! `/infill`, `/tokenize` and `/detokenize`, as clients send and expect them. No logic here.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    pub model: Option<String>,
    /// A string, an array of strings, an array of token ids, or an array of such arrays.
    pub prompt: Value,
    pub suffix: Option<String>,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub n: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub logprobs: Option<i64>,
    pub echo: Option<bool>,
    /// A string or an array of strings.
    pub stop: Option<Value>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub best_of: Option<i64>,
    pub logit_bias: Option<HashMap<String, f32>>,
    pub user: Option<String>,
    pub seed: Option<i64>,
    /// Sampling knobs beyond OpenAI's, under llama.cpp's names.
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    /// Structured output: OpenAI's `response_format`, llama.cpp's `json_schema` and GBNF `grammar`.
    pub response_format: Option<Value>,
    pub json_schema: Option<Value>,
    pub grammar: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<Message>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub n: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub stop: Option<Value>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub logit_bias: Option<HashMap<String, f32>>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    pub user: Option<String>,
    pub store: Option<bool>,
    pub metadata: Option<Value>,
    pub service_tier: Option<String>,
    /// Tools and structured output (see `tools/` and `validate/structured.rs`).
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
    pub functions: Option<Value>,
    pub function_call: Option<Value>,
    pub response_format: Option<Value>,
    pub parallel_tool_calls: Option<Value>,
    /// Known OpenAI parameters hearth does not implement; rejected when set.
    pub modalities: Option<Value>,
    pub audio: Option<Value>,
    pub prediction: Option<Value>,
    pub reasoning_effort: Option<Value>,
    pub web_search_options: Option<Value>,
    /// Sampling knobs beyond OpenAI's, under llama.cpp's names.
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub role: String,
    /// A string, or an array of content parts.
    #[serde(default)]
    pub content: Value,
    pub name: Option<String>,
    pub tool_calls: Option<Value>,
    pub tool_call_id: Option<String>,
    pub refusal: Option<Value>,
}

/// llama.cpp's `/infill`, as llama.vim and llama.vscode send it. Unknown llama.cpp tuning fields
/// are accepted and ignored, as llama.cpp itself does.
#[derive(Debug, Deserialize)]
pub struct InfillRequest {
    #[serde(default)]
    pub input_prefix: String,
    #[serde(default)]
    pub input_suffix: String,
    #[serde(default)]
    pub input_extra: Vec<ExtraChunk>,
    /// Text appended to the prefix (the current line up to the cursor, in llama.vim).
    #[serde(default)]
    pub prompt: String,
    pub n_predict: Option<i64>,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_k: Option<i64>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<Value>,
    pub stream: Option<bool>,
    pub model: Option<String>,
}

/// llama.cpp's `/completion` (its native completion route): a prompt and llama.cpp's knob names,
/// with `json_schema` / `grammar` for structured output. Unknown tuning fields are ignored.
#[derive(Debug, Deserialize)]
pub struct LlamaCompletionRequest {
    pub prompt: Value,
    pub n_predict: Option<i64>,
    pub temperature: Option<f32>,
    pub top_k: Option<i64>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<Value>,
    pub stream: Option<bool>,
    pub json_schema: Option<Value>,
    pub grammar: Option<String>,
    pub model: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ExtraChunk {
    #[serde(default)]
    pub filename: String,
    #[serde(default)]
    pub text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    pub content: String,
    #[serde(default)]
    pub add_special: bool,
    #[serde(default)]
    pub with_pieces: bool,
    pub model: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetokenizeRequest {
    pub tokens: Vec<i64>,
    pub model: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
    /// hearth's addition: what the request cost here and on the cloud comparators.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::ledger::Cost>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

/// Completions-style logprobs of one choice.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<Option<f32>>,
    pub top_logprobs: Vec<Option<HashMap<String, f32>>>,
    pub text_offset: Vec<usize>,
}

/// Chat-style logprob of one token.
#[derive(Debug, Clone, Serialize)]
pub struct ChatTokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<ChatTopLogprob>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatTopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}
