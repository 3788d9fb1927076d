//! Constrained decoding over HTTP on the synthetic model (random weights, no download): its text
//! is noise, so whatever valid structure comes back is the grammar's doing. JSON Schema answers,
//! GBNF completions, forced and streamed tool calls, and the 400s that name the field. The real
//! models through the official `openai` client are in `openai_tools.rs`.

mod common;

use common::server::{error_of, Server};
use serde_json::{json, Value};

fn person() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": { "type": "string", "maxLength": 12 },
            "age": { "type": "integer", "minimum": 0, "maximum": 120 },
            "role": { "enum": ["admin", "viewer"] },
            "tags": { "type": "array", "items": { "type": "boolean" }, "maxItems": 3 },
            "home": { "type": "object", "properties": { "zip": { "type": "string", "pattern": "^[0-9]{5}$" } }, "required": ["zip"], "additionalProperties": false }
        },
        "required": ["name", "age", "role", "tags", "home"],
        "additionalProperties": false
    })
}

/// Checks a value against `person()` by hand (the Python test uses the `jsonschema` package).
fn is_person(v: &Value) -> bool {
    let o = v.as_object().unwrap();
    let keys: Vec<&str> = o.keys().map(String::as_str).collect();
    keys.len() == 5
        && o["name"].as_str().is_some_and(|s| s.chars().count() <= 12)
        && o["age"].as_u64().is_some_and(|a| a <= 120)
        && ["admin", "viewer"].contains(&o["role"].as_str().unwrap_or(""))
        && o["tags"].as_array().is_some_and(|t| t.len() <= 3 && t.iter().all(Value::is_boolean))
        && o["home"]["zip"].as_str().is_some_and(|z| z.len() == 5 && z.bytes().all(|b| b.is_ascii_digit()))
        && o["home"].as_object().unwrap().len() == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_answers_follow_the_schema() {
    let s = Server::synth().await;
    let fmt = json!({ "type": "json_schema", "json_schema": { "name": "person", "schema": person(), "strict": true } });
    for (temperature, n) in [(0.0, 1), (1.0, 6)] {
        let body = json!({ "messages": [{ "role": "user", "content": "A person." }], "response_format": fmt, "temperature": temperature, "seed": 5, "n": n, "max_tokens": 400 });
        let (st, _, v) = s.post("/v1/chat/completions", &body).await;
        assert_eq!(st, 200, "{v}");
        for c in v["choices"].as_array().unwrap() {
            assert_eq!(c["finish_reason"], "stop", "{c}");
            let text = c["message"]["content"].as_str().unwrap();
            let parsed: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
            assert!(is_person(&parsed), "does not follow the schema: {text}");
        }
    }
    // llama.cpp's fields on completions: a JSON Schema, and a GBNF grammar.
    let body = json!({ "prompt": "x", "json_schema": person(), "max_tokens": 400, "seed": 1 });
    let (st, _, v) = s.post("/v1/completions", &body).await;
    assert_eq!(st, 200, "{v}");
    assert!(is_person(&serde_json::from_str(v["choices"][0]["text"].as_str().unwrap()).unwrap()), "{v}");
    let gbnf = "root ::= answer \"!\"\nanswer ::= \"yes\" | \"no\" | [0-9]{2}";
    let body = json!({ "prompt": "x", "grammar": gbnf, "max_tokens": 20, "temperature": 1.0, "n": 8, "seed": 2 });
    let (st, _, v) = s.post("/v1/completions", &body).await;
    assert_eq!(st, 200, "{v}");
    for c in v["choices"].as_array().unwrap() {
        let t = c["text"].as_str().unwrap();
        let body = t.strip_suffix('!').unwrap_or_else(|| panic!("`{t}`"));
        assert!(body == "yes" || body == "no" || (body.len() == 2 && body.bytes().all(|b| b.is_ascii_digit())), "`{t}`");
        assert_eq!(c["finish_reason"], "stop");
    }
    // llama.cpp's own /completion route takes the same fields and answers in llama.cpp's shape.
    let body = json!({ "prompt": "x", "n_predict": 400, "json_schema": person(), "seed": 3 });
    let (st, _, v) = s.post("/completion", &body).await;
    assert_eq!(st, 200, "{v}");
    assert!(is_person(&serde_json::from_str(v["content"].as_str().unwrap()).unwrap()), "{v}");
    assert!(v["stop"] == true && v["timings"]["predicted_n"].as_u64().is_some(), "{v}");
    assert!(s.metric("hearth_constrained_requests_total").await >= 5.0);
}

fn tools() -> Value {
    json!([
        { "type": "function", "function": { "name": "get_weather", "description": "Weather", "parameters": {
            "type": "object", "properties": { "city": { "type": "string", "maxLength": 10 }, "unit": { "enum": ["c", "f"] } },
            "required": ["city", "unit"], "additionalProperties": false } } },
        { "type": "function", "function": { "name": "now", "parameters": {} } }
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_tool_calls_are_valid_and_stream_the_same() {
    let s = Server::synth_fresh().await;
    let ask = |choice: Value, stream: bool| {
        json!({ "messages": [{ "role": "user", "content": "Weather in Oslo?" }], "tools": tools(), "tool_choice": choice,
                "temperature": 0, "max_tokens": 200, "stream": stream, "parallel_tool_calls": false })
    };
    for choice in [json!("required"), json!({ "type": "function", "function": { "name": "get_weather" } })] {
        let (st, _, v) = s.post("/v1/chat/completions", &ask(choice.clone(), false)).await;
        assert_eq!(st, 200, "{v}");
        let c = &v["choices"][0];
        assert_eq!(c["finish_reason"], "tool_calls", "{v}");
        let calls = c["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 1, "{v}");
        let f = &calls[0]["function"];
        let name = f["name"].as_str().unwrap();
        assert!(name == "get_weather" || (name == "now" && choice == "required"), "{v}");
        let args: Value = serde_json::from_str(f["arguments"].as_str().unwrap()).unwrap();
        if name == "get_weather" {
            assert!(args["city"].as_str().is_some_and(|c| c.chars().count() <= 10) && ["c", "f"].contains(&args["unit"].as_str().unwrap()), "{args}");
            assert_eq!(args.as_object().unwrap().len(), 2);
        }
        assert!(calls[0]["id"].as_str().is_some_and(|id| !id.is_empty()) && calls[0]["type"] == "function");

        // Streamed: the deltas rebuild the same call.
        let frames = s.stream("/v1/chat/completions", &ask(choice, true)).await;
        let (mut sname, mut sargs, mut finish, mut ids) = (String::new(), String::new(), Value::Null, 0);
        for f in frames.iter().filter(|f| *f != "[DONE]") {
            let v: Value = serde_json::from_str(f).unwrap();
            let ch = &v["choices"][0];
            if !ch["finish_reason"].is_null() {
                finish = ch["finish_reason"].clone();
            }
            for d in ch["delta"]["tool_calls"].as_array().into_iter().flatten() {
                assert_eq!(d["index"], 0);
                ids += usize::from(d.get("id").is_some());
                sname.push_str(d["function"]["name"].as_str().unwrap_or(""));
                sargs.push_str(d["function"]["arguments"].as_str().unwrap_or(""));
            }
        }
        assert_eq!((sname.as_str(), sargs.as_str(), finish, ids), (name, f["arguments"].as_str().unwrap(), json!("tool_calls"), 1));
    }
    assert!(s.metric("hearth_tool_calls_total").await >= 4.0);
    // The ledger counts them too.
    let (_, body) = s.get("/v1/ledger?limit=100").await;
    let rows: Value = serde_json::from_str(&body).unwrap();
    let calls: u64 = rows["data"].as_array().unwrap_or_else(|| panic!("{rows}")).iter().map(|r| r["tool_calls"].as_u64().unwrap()).sum();
    assert_eq!(calls, 4, "{rows}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_history_renders_and_bad_tools_name_the_field() {
    let s = Server::synth().await;
    let history = json!([
        { "role": "user", "content": "Weather in Oslo?" },
        { "role": "assistant", "content": null, "tool_calls": [{ "id": "call_1", "type": "function", "function": { "name": "get_weather", "arguments": "{\"city\": \"Oslo\", \"unit\": \"c\"}" } }] },
        { "role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 3}" }
    ]);
    let body = json!({ "messages": history, "tools": tools(), "max_tokens": 5, "temperature": 0 });
    let (st, _, v) = s.post("/v1/chat/completions", &body).await;
    assert_eq!(st, 200, "{v}");
    // The tool declarations count as prompt tokens, as the cloud bills them.
    let (_, _, without) = s.post("/v1/chat/completions", &json!({ "messages": [history[0]], "max_tokens": 5 })).await;
    assert!(v["usage"]["prompt_tokens"].as_u64() > without["usage"]["prompt_tokens"].as_u64(), "{v}\n{without}");

    let msgs = json!([{ "role": "user", "content": "hi" }]);
    let cases = [
        (json!({ "messages": msgs, "tools": [{ "type": "web_search" }] }), "tools[0].type"),
        (json!({ "messages": msgs, "tools": [{ "type": "function", "function": { "name": "has space" } }] }), "tools[0].function.name"),
        (json!({ "messages": msgs, "tools": [{ "type": "function", "function": { "name": "f", "parameters": { "type": "object", "properties": { "a": { "type": "bogus" } } } } }] }), "tools"),
        (json!({ "messages": msgs, "tools": tools(), "tool_choice": { "type": "function", "function": { "name": "missing" } } }), "tool_choice"),
        (json!({ "messages": msgs, "tool_choice": "required" }), "tool_choice"),
        (json!({ "messages": [{ "role": "user", "content": "hi" }, { "role": "tool", "tool_call_id": "nope", "content": "x" }] }), "messages[1].tool_call_id"),
        (json!({ "messages": [{ "role": "assistant", "content": null, "tool_calls": [{ "id": "a", "type": "function", "function": { "name": "f", "arguments": "{not json" } }] }] }), "messages[0].tool_calls[0].function.arguments"),
        (json!({ "messages": msgs, "response_format": { "type": "json_schema", "json_schema": { "name": "x", "schema": { "type": "object", "properties": { "a": { "type": "nope" } } } } } }), "response_format"),
        (json!({ "messages": msgs, "response_format": { "type": "yaml" } }), "response_format.type"),
    ];
    for (body, param) in cases {
        let (st, _, v) = s.post("/v1/chat/completions", &body).await;
        assert_eq!(error_of(st, &v, 400)["param"], param, "{body}: {v}");
    }
    let (st, _, v) = s.post("/v1/completions", &json!({ "prompt": "x", "grammar": "root ::= \"unterminated" })).await;
    assert_eq!(error_of(st, &v, 400)["param"], "grammar", "{v}");
    let (st, _, v) = s.post("/v1/completions", &json!({ "prompt": "x", "json_schema": 5 })).await;
    assert_eq!(error_of(st, &v, 400)["param"], "json_schema", "{v}");
}
