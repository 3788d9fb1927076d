//! Tool grammars walked byte by byte on the synthetic vocabulary (one token per byte): what each
//! tool choice lets through, for every call style, and the reader agreeing with the writer.

use serde_json::{json, Value};

use super::{plan, CallParser, ToolChoice, ToolPlan};
use crate::api::validate::tests::info;
use crate::engine::{Grammar, ModelInfo};
use crate::model::{CallStyle, ToolFormat};

/// The synthetic vocabulary's byte tokens start at id 3; `</s>` (2) ends generation.
const BYTE0: u32 = 3;
const EOS: u32 = 2;

fn tools() -> Value {
    json!([
        { "type": "function", "function": { "name": "get_weather", "parameters": {
            "type": "object", "properties": { "city": { "type": "string" }, "unit": { "enum": ["c", "f"] } },
            "required": ["city", "unit"], "additionalProperties": false } } },
        { "type": "function", "function": { "name": "now" } }
    ])
}

fn tool_plan(choice: Value, parallel: bool) -> ToolPlan {
    plan(Some(&tools()), None, Some(&choice), None, Some(&json!(parallel))).unwrap().unwrap()
}

fn grammar(p: &ToolPlan, format: ToolFormat, info: &ModelInfo) -> Grammar {
    info.grammar(&p.grammar(format, info).expect("a grammar")).unwrap_or_else(|e| panic!("{e}"))
}

/// Feeds `text` byte by byte; the offset of the first byte the grammar refuses.
fn walk(g: &mut Grammar, text: &str) -> Result<(), usize> {
    for (i, b) in text.bytes().enumerate() {
        if !g.mask().unwrap().allows(BYTE0 + b as u32) {
            return Err(i);
        }
        g.accept(BYTE0 + b as u32).unwrap();
    }
    Ok(())
}

const HERMES: ToolFormat = ToolFormat { style: CallStyle::Hermes, native: false };
const CALL: &str = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", \"unit\": \"c\"}}\n</tool_call>";

#[test]
fn auto_allows_text_or_calls_after_text() {
    let info = info();
    let p = tool_plan(json!("auto"), true);
    let mut g = grammar(&p, HERMES, &info);
    assert_eq!(walk(&mut g, &format!("Let me check.\n{CALL}")), Ok(()));
    assert!(g.mask().unwrap().allows(EOS), "a finished call may end the answer");
    assert_eq!(walk(&mut g, "\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>"), Ok(()), "a second call");
    let mut g = grammar(&p, HERMES, &info);
    assert_eq!(walk(&mut g, "Just words, <b>no</b> call."), Ok(()));
    assert!(g.mask().unwrap().allows(EOS));
    let mut g = grammar(&p, HERMES, &info);
    let opening = "<tool_call>\n{\"name\": \"";
    assert_eq!(walk(&mut g, &format!("{opening}xyz\"")), Err(opening.len()), "only declared functions");
    let mut g = grammar(&p, HERMES, &info);
    let bad = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", \"unit\": \"k";
    assert_eq!(walk(&mut g, bad), Err(bad.len() - 1), "arguments follow the schema");
}

#[test]
fn required_and_named_choices_force_a_call() {
    let info = info();
    let mut g = grammar(&tool_plan(json!("required"), false), HERMES, &info);
    assert_eq!(walk(&mut g, "Hi"), Err(0));
    assert_eq!(walk(&mut g, CALL), Ok(()));
    assert!(g.is_finished() || !g.mask().unwrap().allows(BYTE0 + b'\n' as u32), "one call only without parallel_tool_calls");
    let named = tool_plan(json!({ "type": "function", "function": { "name": "now" } }), true);
    assert_eq!(named.choice, ToolChoice::Named(1));
    let mut g = grammar(&named, HERMES, &info);
    assert_eq!(walk(&mut g, "<tool_call>\n{\"name\": \"get_weather\""), Err("<tool_call>\n{\"name\": \"".len()));
    let mut g = grammar(&named, HERMES, &info);
    assert_eq!(walk(&mut g, "<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>"), Ok(()));
    assert!(tool_plan(json!("none"), true).grammar(HERMES, &info).is_none());
}

#[test]
fn every_style_writes_what_its_grammar_accepts_and_its_reader_reads() {
    let info = info();
    let calls = vec![("get_weather".to_owned(), json!({ "city": "Oslo", "unit": "f" })), ("now".to_owned(), json!({}))];
    for style in [CallStyle::Hermes, CallStyle::Llama3, CallStyle::Mistral] {
        let format = ToolFormat { style, native: true };
        let text = format.write_calls(&info.vocab, &calls);
        for choice in ["required", "auto"] {
            let mut g = grammar(&tool_plan(json!(choice), true), format, &info);
            assert_eq!(walk(&mut g, &text), Ok(()), "{style:?} {choice}: {text}");
            assert!(g.is_finished() || g.mask().unwrap().allows(EOS), "{style:?}");
        }
        let mut reader = CallParser::new(format.syntax(&info.vocab).visible_start(), "c".into());
        let (content, _) = reader.push(&format!("Sure. {text}"));
        assert_eq!(content + &reader.finish(), "Sure. ");
        let read: Vec<(String, Value)> = reader.calls().iter().map(|c| (c.name.clone(), serde_json::from_str(&c.arguments).unwrap())).collect();
        assert_eq!(read, calls, "{style:?}: {text}");
    }
}

