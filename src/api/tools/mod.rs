//! OpenAI tools on chat: `tools` / `functions`, `tool_choice` / `function_call` and
//! `parallel_tool_calls` validated into one [`ToolPlan`], and the grammar that makes a call valid
//! by construction: the model's own call syntax around each function's JSON Schema, forced with
//! `required` or a named choice, offered beside free text with `auto`.

pub mod calls;

use serde_json::{json, Map, Value};

use crate::engine::{GrammarSpec, ModelInfo};
use crate::model::{Piece, Syntax, ToolFormat};

use super::error::ApiError;

pub use calls::{CallDelta, CallParser};

/// Most tools one request may declare (OpenAI's limit).
pub const MAX_TOOLS: usize = 128;

/// One declared function.
#[derive(Debug, Clone)]
pub struct ToolDef {
    pub name: String,
    /// Its `parameters` JSON Schema (an object schema when none was given).
    pub schema: Value,
    /// The tool as OpenAI writes it (`{type: "function", function: {…}}`), for the prompt.
    pub wire: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    None,
    Auto,
    Required,
    /// This function, once.
    Named(usize),
}

/// A request's tools, validated.
#[derive(Debug, Clone)]
pub struct ToolPlan {
    pub tools: Vec<ToolDef>,
    pub choice: ToolChoice,
    /// More than one call per answer.
    pub parallel: bool,
    /// The field tools came from (`tools`, or the older `functions`), for errors.
    pub field: &'static str,
}

/// Reads `tools` (or the deprecated `functions`), the choice and `parallel_tool_calls`. No tools
/// and no forcing choice is `None`.
pub fn plan(tools: Option<&Value>, functions: Option<&Value>, choice: Option<&Value>, function_call: Option<&Value>, parallel: Option<&Value>) -> Result<Option<ToolPlan>, ApiError> {
    fn set(v: Option<&Value>) -> Option<&Value> {
        v.filter(|v| !v.is_null())
    }
    let (list, field, legacy) = match (set(tools), set(functions)) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("functions", "send `tools` or the older `functions`, not both")),
        (Some(t), None) => (t, "tools", false),
        (None, Some(f)) => (f, "functions", true),
        (None, None) => (&Value::Null, "tools", false),
    };
    let defs = match list {
        Value::Null => Vec::new(),
        Value::Array(a) if a.len() > MAX_TOOLS => return Err(ApiError::invalid(field, format!("`{field}` holds at most {MAX_TOOLS} functions, got {}", a.len()))),
        Value::Array(a) => a.iter().enumerate().map(|(i, t)| tool_def(t, &format!("{field}[{i}]"), legacy)).collect::<Result<Vec<_>, _>>()?,
        other => return Err(ApiError::invalid(field, format!("`{field}` must be an array of tools, got {other}"))),
    };
    for (i, d) in defs.iter().enumerate() {
        if defs[..i].iter().any(|e| e.name == d.name) {
            return Err(ApiError::invalid(&format!("{field}[{i}]"), format!("`{field}[{i}]` declares `{}` a second time", d.name)));
        }
    }
    let (choice_field, choice) = match (set(choice), set(function_call)) {
        (Some(c), _) => ("tool_choice", Some(c)),
        (None, Some(c)) => ("function_call", Some(c)),
        (None, None) => ("tool_choice", None),
    };
    let named = |name: Option<&str>| -> Result<ToolChoice, ApiError> {
        let name = name.ok_or_else(|| ApiError::invalid(choice_field, format!("`{choice_field}` names no function")))?;
        let i = defs.iter().position(|d| d.name == name).ok_or_else(|| {
            ApiError::invalid(choice_field, format!("`{choice_field}` names `{name}`, which is not among the declared functions"))
        })?;
        Ok(ToolChoice::Named(i))
    };
    let choice = match choice {
        None if defs.is_empty() => ToolChoice::None,
        None => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" | "any" => ToolChoice::Required,
            other => return Err(ApiError::invalid(choice_field, format!("`{choice_field}` must be none, auto, required or a function, got `{other}`"))),
        },
        Some(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("function") => named(o.get("function").and_then(|f| f.get("name")).and_then(Value::as_str))?,
        Some(Value::Object(o)) if o.get("type").is_none() && o.contains_key("name") => named(o.get("name").and_then(Value::as_str))?,
        Some(other) => return Err(ApiError::invalid(choice_field, format!("`{choice_field}` must be none, auto, required or {{\"type\": \"function\", \"function\": {{\"name\": …}}}}, got {other}"))),
    };
    if defs.is_empty() && matches!(choice, ToolChoice::Required) {
        return Err(ApiError::invalid(choice_field, format!("`{choice_field}` requires a call, but no `tools` were declared")));
    }
    let parallel = match set(parallel) {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(ApiError::invalid("parallel_tool_calls", format!("`parallel_tool_calls` must be true or false, got {other}"))),
    };
    if defs.is_empty() {
        return Ok(None);
    }
    Ok(Some(ToolPlan { tools: defs, choice, parallel, field }))
}

fn tool_def(t: &Value, at: &str, legacy: bool) -> Result<ToolDef, ApiError> {
    let function = if legacy {
        t
    } else {
        match t.get("type").and_then(Value::as_str) {
            Some("function") => t.get("function").ok_or_else(|| ApiError::invalid(&format!("{at}.function"), format!("`{at}.function` is missing")))?,
            Some(other) => return Err(ApiError::invalid(&format!("{at}.type"), format!("`{at}.type` is `{other}`; this server runs only `function` tools"))),
            None => return Err(ApiError::invalid(&format!("{at}.type"), format!("`{at}.type` is missing; use \"function\""))),
        }
    };
    let fat = if legacy { at.to_owned() } else { format!("{at}.function") };
    let name = function.get("name").and_then(Value::as_str).unwrap_or_default();
    let valid = !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        return Err(ApiError::invalid(&format!("{fat}.name"), format!("`{fat}.name` must be 1 to 64 letters, digits, `_` or `-`, got {:?}", function.get("name"))));
    }
    let schema = match function.get("parameters") {
        None | Some(Value::Null) => json!({ "type": "object" }),
        Some(Value::Object(o)) if o.is_empty() => json!({ "type": "object" }),
        Some(s @ Value::Object(o)) if o.get("type").is_none_or(|t| t == "object") => s.clone(),
        Some(Value::Object(_)) => return Err(ApiError::invalid(&format!("{fat}.parameters"), format!("`{fat}.parameters` must describe an object (`\"type\": \"object\"`): a call's arguments are named"))),
        Some(other) => return Err(ApiError::invalid(&format!("{fat}.parameters"), format!("`{fat}.parameters` must be a JSON Schema object, got {other}"))),
    };
    let mut f = Map::new();
    f.insert("name".into(), name.into());
    if let Some(d) = function.get("description").filter(|d| !d.is_null()) {
        f.insert("description".into(), d.clone());
    }
    f.insert("parameters".into(), schema.clone());
    Ok(ToolDef { name: name.to_owned(), schema, wire: json!({ "type": "function", "function": f }) })
}

/// A JSON Schema with llguidance's fixed separators (`, ` and `: `, no free whitespace), so a
/// sampled answer cannot wander off into endless spaces. A schema's own `x-guidance` wins.
pub fn compact(schema: &Value) -> Value {
    let mut s = schema.clone();
    if let Value::Object(o) = &mut s {
        o.entry("x-guidance").or_insert_with(|| json!({ "whitespace_flexible": false, "item_separator": ", ", "key_separator": ": " }));
    }
    s
}

/// A Lark string literal.
fn lit(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// `s` inside a Lark `/…/` regular expression, matched literally.
fn rx(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if "\\.+*?()|[]{}^$#&-~/".contains(c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

impl ToolPlan {
    /// The grammar the answer follows, or `None` when the model answers freely (`none`).
    pub fn grammar(&self, format: ToolFormat, info: &ModelInfo) -> Option<GrammarSpec> {
        let s: Syntax = format.syntax(&info.vocab);
        let key = format.arguments_key();
        let call = |d: &ToolDef| {
            let head = format!("{}\", \"{key}\": ", d.name);
            let tail = format!("}}{}", s.close);
            format!("{} %json {} {}", lit(&head), compact(&d.schema), lit(&tail))
        };
        let mut rules = vec![];
        let calls = match &self.choice {
            ToolChoice::None => return None,
            ToolChoice::Named(i) => call(&self.tools[*i]),
            _ => {
                let alts: Vec<String> = self.tools.iter().map(call).collect();
                rules.push(format!("call: {}", alts.join("\n    | ")));
                let next = format!("{}{}{{\"name\": \"", s.between, s.open);
                if self.parallel { format!("call ({} call)*", lit(&next)) } else { "call".to_owned() }
            }
        };
        let end = if s.list_close.is_empty() { String::new() } else { format!(" {}", lit(s.list_close)) };
        let mut first: Vec<String> = s.list_open.iter().map(|p| match p {
            Piece::Token(id) => format!("<[{id}]>"),
            Piece::Text(t) => lit(t),
        }).collect();
        first.push(lit(&format!("{}{{\"name\": \"", s.open)));
        let first = first.join(" ");
        let start = match self.choice {
            ToolChoice::Auto if matches!(s.list_open.first(), Some(Piece::Token(_))) => {
                // The calls open with a control token text cannot produce; still keep their JSON
                // opening out of free text, so the reader never mistakes prose for a call.
                rules.push(format!("TEXT: /(?s:.+)/ & ~/(?s:.*{}.*)/", rx(&s.visible_start())));
                format!("start: TEXT | TEXT? {first} {calls}{end}")
            }
            ToolChoice::Auto => {
                // Free text that never writes the opening, or text up to the first opening.
                let mark = rx(&s.visible_start());
                rules.push(format!("TEXT: /(?s:.+)/ & ~/(?s:.*{mark}.*)/"));
                rules.push(format!("OPENING: /(?s:.*{mark})/ & ~/(?s:.*{mark}.+)/"));
                format!("start: TEXT | OPENING {calls}{end}")
            }
            _ => format!("start: {first} {calls}{end}"),
        };
        rules.insert(0, start);
        Some(GrammarSpec::Lark(rules.join("\n")))
    }

    /// The tools as the prompt and the cloud's bill see them.
    pub fn wire_tools(&self) -> Vec<Value> {
        self.tools.iter().map(|t| t.wire.clone()).collect()
    }
}

#[cfg(test)]
mod tests;
