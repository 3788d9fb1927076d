//! Structured output fields → grammars: OpenAI's `response_format` (`text`, `json_object`,
//! `json_schema`), llama.cpp's `json_schema` and `grammar` (GBNF), compiled over the model's
//! vocabulary; a schema or grammar llguidance refuses is a 400 naming the field.

use serde_json::{json, Value};

use crate::engine::{Grammar, GrammarSpec, ModelInfo};

use super::super::error::ApiError;
use super::super::tools::compact;
use super::gbnf;

/// The grammar `response_format` asks for (`None` for plain text).
pub fn response_format(v: Option<&Value>) -> Result<Option<GrammarSpec>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(None) };
    let kind = v.get("type").and_then(Value::as_str);
    match kind {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(GrammarSpec::JsonSchema(compact(&json!({ "type": "object" }))))),
        Some("json_schema") => {
            let spec = v.get("json_schema").filter(|s| s.is_object()).ok_or_else(|| {
                ApiError::invalid("response_format.json_schema", "`response_format.json_schema` must be an object with `name` and `schema`")
            })?;
            match spec.get("schema") {
                None | Some(Value::Null) => Ok(Some(GrammarSpec::JsonSchema(compact(&json!({ "type": "object" }))))),
                Some(s @ Value::Object(_)) => Ok(Some(GrammarSpec::JsonSchema(compact(s)))),
                Some(Value::Bool(true)) => Ok(Some(GrammarSpec::JsonSchema(compact(&json!({}))))),
                Some(other) => Err(ApiError::invalid("response_format.json_schema.schema", format!("`response_format.json_schema.schema` must be a JSON Schema object, got {other}"))),
            }
        }
        Some(other) => Err(ApiError::invalid("response_format.type", format!("`response_format.type` must be text, json_object or json_schema, got `{other}`"))),
        None => Err(ApiError::invalid("response_format.type", "`response_format` needs a `type`: text, json_object or json_schema")),
    }
}

/// llama.cpp's completion fields: `json_schema` (a schema object) or `grammar` (GBNF), beside
/// `response_format`; at most one of them.
pub fn completion_grammar(response_format_v: Option<&Value>, schema: Option<&Value>, grammar: Option<&str>) -> Result<Option<(GrammarSpec, &'static str)>, ApiError> {
    let from_format = response_format(response_format_v)?.map(|g| (g, "response_format"));
    let from_schema = match schema.filter(|s| !s.is_null()) {
        None => None,
        Some(s @ Value::Object(_)) => Some((GrammarSpec::JsonSchema(compact(s)), "json_schema")),
        Some(other) => return Err(ApiError::invalid("json_schema", format!("`json_schema` must be a JSON Schema object, got {other}"))),
    };
    let from_grammar = match grammar.filter(|g| !g.trim().is_empty()) {
        None => None,
        Some(g) => Some((GrammarSpec::Lark(gbnf::to_lark(g).map_err(|e| ApiError::invalid("grammar", format!("`grammar` is not valid GBNF: {e}")))?), "grammar")),
    };
    let mut all: Vec<_> = [from_format, from_schema, from_grammar].into_iter().flatten().collect();
    if all.len() > 1 {
        return Err(ApiError::invalid(all[1].1, format!("`{}` and `{}` both constrain the output; send one", all[0].1, all[1].1)));
    }
    Ok(all.pop())
}

/// Compiles `spec` over the model's vocabulary; a refusal is a 400 on `field`.
pub fn compile(info: &ModelInfo, spec: &GrammarSpec, field: &str) -> Result<Grammar, ApiError> {
    info.grammar(spec).map_err(|e| ApiError::invalid(field, format!("`{field}` cannot be used: {e}")))
}
