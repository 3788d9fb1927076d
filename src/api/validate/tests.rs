//! Validation on a synthetic model (a metadata-only GGUF: SentencePiece byte vocabulary, ChatML
//! template, FIM tokens; no weights, no download): every refused parameter is named by the
//! request's own field.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value as Json};

use crate::engine::ModelInfo;
use crate::energy::EnergyMethod;
use crate::model::gguf::Value;
use crate::model::gguf_write::GgufWriter;
use crate::model::{Arch, Fim, GgufFile, PromptFormat, Vocab};

const CONTEXT: usize = 64;
const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

pub(crate) fn info() -> ModelInfo {
    let specials = ["<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"];
    let mut tokens = vec!["<unk>".to_owned(), "<s>".to_owned(), "</s>".to_owned()];
    let mut types = vec![2, 3, 3];
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    types.extend([6; 256]);
    tokens.extend(specials.iter().map(|s| s.to_string()));
    types.extend([3; 5]);
    let n = tokens.len();
    let mut md = BTreeMap::new();
    let mut put = |k: &str, v: Value| md.insert(k.to_owned(), v);
    put("general.architecture", Value::String("llama".into()));
    put("tokenizer.ggml.model", Value::String("llama".into()));
    put("tokenizer.ggml.tokens", Value::Array(tokens.into_iter().map(Value::String).collect()));
    put("tokenizer.ggml.token_type", Value::Array(types.into_iter().map(Value::I32).collect()));
    put("tokenizer.ggml.scores", Value::Array(vec![Value::F32(0.0); n]));
    put("tokenizer.ggml.bos_token_id", Value::U32(1));
    put("tokenizer.ggml.eos_token_id", Value::U32(2));
    put("tokenizer.ggml.unknown_token_id", Value::U32(0));
    put("tokenizer.chat_template", Value::String(CHATML.into()));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("synthetic.gguf");
    GgufWriter::create(&path, &md, &[]).unwrap().finish().unwrap();
    let file = GgufFile::open(&path).unwrap();
    let vocab = Vocab::from_gguf(&file).unwrap();
    let prompt = PromptFormat::from_gguf(&file, Arch::Llama, &vocab).unwrap();
    let fim = Fim::from_gguf(&file, &vocab);
    assert!(fim.is_some() && prompt.from_file, "the synthetic model has FIM tokens and its own template");
    ModelInfo {
        id: "synthetic".into(),
        name: "synthetic".into(),
        vocab_size: vocab.len(),
        vocab: Arc::new(vocab),
        prompt: Arc::new(prompt),
        fim,
        context_length: CONTEXT,
        quantization: "F32".into(),
        file_size: 0,
        arch: "llama".into(),
        device: "Cpu".into(),
        energy_method: EnergyMethod::Estimate,
        grammars: Default::default(),
    }
}

/// The `param` a request is refused with, checked to be a field the request itself holds.
fn refused<R: serde::de::DeserializeOwned>(info: &ModelInfo, body: Json, check: impl Fn(R, &ModelInfo) -> Result<super::Plan, super::ApiError>) -> String {
    let req: R = serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{body}: {e}"));
    let Err(e) = check(req, info) else { panic!("accepted: {body}") };
    assert!(e.status.is_client_error(), "{body}: status {}", e.status);
    let param = e.param.unwrap_or_else(|| panic!("{body}: no param in `{}`", e.message));
    let top = param.split(['[', '.']).next().unwrap();
    assert!(body.get(top).is_some(), "{body}: `{param}` is not a field of the request ({})", e.message);
    assert!(e.message.contains(top), "{body}: the message `{}` does not name `{top}`", e.message);
    param
}

fn with(base: &Json, extra: Json) -> Json {
    let mut b = base.clone();
    b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    b
}

/// Sampling fields every endpoint shares, with a bad value, and the field that must be named.
fn sampling_cases() -> Vec<(Json, &'static str)> {
    vec![
        (json!({ "repeat_penalty": 0 }), "repeat_penalty"),
        (json!({ "repeat_penalty": 11 }), "repeat_penalty"),
        (json!({ "top_k": -1 }), "top_k"),
        (json!({ "temperature": 3 }), "temperature"),
        (json!({ "temperature": -0.5 }), "temperature"),
        (json!({ "top_p": 0 }), "top_p"),
        (json!({ "top_p": 1.5 }), "top_p"),
        (json!({ "min_p": 2 }), "min_p"),
        (json!({ "stop": [1, 2] }), "stop"),
        (json!({ "stop": 5 }), "stop"),
        (json!({ "stop": vec!["x"; super::MAX_STOPS + 1] }), "stop"),
    ]
}

#[test]
fn completion_errors_name_the_request_field() {
    let info = info();
    let base = json!({ "prompt": "hello" });
    let mut cases = sampling_cases();
    cases.extend([
        (json!({ "presence_penalty": 3 }), "presence_penalty"),
        (json!({ "frequency_penalty": -3 }), "frequency_penalty"),
        (json!({ "n": 0 }), "n"),
        (json!({ "n": super::MAX_N + 1 }), "n"),
        (json!({ "logprobs": 6 }), "logprobs"),
        (json!({ "max_tokens": 0 }), "max_tokens"),
        (json!({ "max_tokens": CONTEXT }), "max_tokens"),
        (json!({ "best_of": 2 }), "best_of"),
        (json!({ "logit_bias": { "x": 1 } }), "logit_bias"),
        (json!({ "logit_bias": { "1": 101 } }), "logit_bias"),
        (json!({ "logit_bias": { "999999": 1 } }), "logit_bias"),
        (json!({ "suffix": "}", "echo": true }), "echo"),
        (json!({ "prompt": "y".repeat(CONTEXT * 2) }), "prompt"),
        (json!({ "prompt": 5 }), "prompt"),
        (json!({ "prompt": [] }), "prompt"),
        (json!({ "prompt": [999999] }), "prompt"),
        (json!({ "prompt": [-1] }), "prompt"),
        (json!({ "prompt": vec!["a"; super::MAX_PROMPTS + 1] }), "prompt"),
    ]);
    for (extra, field) in cases {
        let body = with(&base, extra);
        assert_eq!(refused(&info, body.clone(), super::completion), field, "{body}");
    }
    // The same request without the bad field is accepted.
    assert!(super::completion(serde_json::from_value(base).unwrap(), &info).is_ok());
}

#[test]
fn chat_errors_name_the_request_field() {
    let info = info();
    let base = json!({ "messages": [{ "role": "user", "content": "hi" }] });
    let mut cases = sampling_cases();
    cases.extend([
        (json!({ "messages": [] }), "messages"),
        (json!({ "messages": [{ "role": "wizard", "content": "hi" }] }), "messages[0].role"),
        (json!({ "messages": [{ "role": "user", "content": "hi" }, { "role": "user", "content": 5 }] }), "messages[1].content"),
        (json!({ "messages": [{ "role": "user", "content": [{ "type": "image_url" }] }] }), "messages[0].content"),
        (json!({ "messages": [{ "role": "user", "content": "z".repeat(CONTEXT * 2) }] }), "messages"),
        (json!({ "max_completion_tokens": 0 }), "max_completion_tokens"),
        (json!({ "max_tokens": 0 }), "max_tokens"),
        (json!({ "max_tokens": CONTEXT }), "max_tokens"),
        (json!({ "top_logprobs": 2 }), "top_logprobs"),
        (json!({ "logprobs": true, "top_logprobs": 21 }), "top_logprobs"),
        (json!({ "n": 0 }), "n"),
        (json!({ "presence_penalty": 3 }), "presence_penalty"),
        (json!({ "frequency_penalty": 3 }), "frequency_penalty"),
        (json!({ "logit_bias": { "x": 1 } }), "logit_bias"),
        (json!({ "tools": [{ "type": "function" }] }), "tools[0].function"),
        (json!({ "tools": [{ "type": "code_interpreter" }] }), "tools[0].type"),
        (json!({ "tools": { "type": "function" } }), "tools"),
        (json!({ "tool_choice": "required" }), "tool_choice"),
        (json!({ "tool_choice": "sometimes" }), "tool_choice"),
        (json!({ "parallel_tool_calls": "yes" }), "parallel_tool_calls"),
        (json!({ "functions": [{ "name": "f" }], "tools": [{ "type": "function", "function": { "name": "f" } }] }), "functions"),
        (json!({ "tools": [{ "type": "function", "function": { "name": "f", "parameters": 5 } }] }), "tools[0].function.parameters"),
        (json!({ "tools": [{ "type": "function", "function": { "name": "f" } }, { "type": "function", "function": { "name": "f" } }] }), "tools[1]"),
        (json!({ "messages": [{ "role": "user", "content": "hi", "tool_calls": [] }] }), "messages[0].tool_calls"),
        (json!({ "response_format": { "type": "xml" } }), "response_format.type"),
        (json!({ "response_format": { "type": "json_schema", "json_schema": { "name": "x", "schema": 5 } } }), "response_format.json_schema.schema"),
        (json!({ "modalities": ["audio"] }), "modalities"),
    ]);
    for (extra, field) in cases {
        let body = with(&base, extra);
        assert_eq!(refused(&info, body.clone(), super::chat), field, "{body}");
    }
    assert!(super::chat(serde_json::from_value(base).unwrap(), &info).is_ok());
}

#[test]
fn infill_errors_name_the_request_field() {
    let info = info();
    let base = json!({ "input_prefix": "def f(", "input_suffix": "):" });
    let mut cases = sampling_cases();
    cases.extend([
        (json!({ "n_predict": 0 }), "n_predict"),
        (json!({ "n_predict": CONTEXT }), "n_predict"),
        (json!({ "max_tokens": 0 }), "max_tokens"),
        (json!({ "input_prefix": "q".repeat(CONTEXT * 2) }), "input_prefix"),
    ]);
    for (extra, field) in cases {
        let body = with(&base, extra);
        assert_eq!(refused(&info, body.clone(), super::infill), field, "{body}");
    }
    assert!(super::infill(serde_json::from_value(base).unwrap(), &info).is_ok());
}

#[test]
fn accepted_requests_keep_their_settings() {
    let info = info();
    let req = json!({ "prompt": ["a", "b"], "n": 2, "max_tokens": 5, "stop": "x", "temperature": 0, "seed": 7 });
    let plan = super::completion(serde_json::from_value(req).unwrap(), &info).unwrap();
    assert_eq!((plan.requests.len(), plan.n), (2, 2));
    let r = &plan.requests[0];
    assert_eq!((r.max_tokens, r.stop.clone(), r.sampler.seed), (5, vec!["x".to_owned()], Some(7)));
    assert_eq!(r.sampler.sampling, crate::engine::Sampling::Greedy);
    // With no limit, a chat may use what the context leaves.
    let chat = json!({ "messages": [{ "role": "user", "content": "hi" }] });
    let plan = super::chat(serde_json::from_value(chat).unwrap(), &info).unwrap();
    let r = &plan.requests[0];
    assert_eq!(r.prompt.len() + r.max_tokens, CONTEXT);
}
