//! Tool calls in prompts: how each model family writes a call (Hermes/Qwen `<tool_call>` JSON,
//! Llama 3.x bare JSON with `parameters`, Mistral `[TOOL_CALLS]` arrays), read from the chat
//! template, and, for templates without a tool section (SmolLM2's, Gemma's), a rewrite of the
//! conversation that states the tools and writes calls and results as plain turns.

use serde_json::Value;

use super::prompt::ChatMessage;
use super::tokenizer::Vocab;

/// The families of call syntax hearth knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStyle {
    /// `<tool_call>\n{"name": …, "arguments": …}\n</tool_call>`, one block per call (Qwen 2.5,
    /// Hermes, and hearth's own form for templates without tools).
    Hermes,
    /// `{"name": …, "parameters": …}` (Llama 3.1–3.3's JSON tool calling).
    Llama3,
    /// `[TOOL_CALLS][{"name": …, "arguments": …}, …]` (Mistral).
    Mistral,
}

/// How a model writes tool calls, and whether its template renders tools itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolFormat {
    pub style: CallStyle,
    /// The template has its own tool section (takes `tools`, `tool_calls` and `tool` turns).
    pub native: bool,
}

/// One piece of the call syntax: text, or a control token the model emits (invisible in the
/// decoded text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Token(u32),
}

impl ToolFormat {
    /// The format a chat template implies. Templates that take `tools` without a known call
    /// syntax get the Hermes form with our own rendering.
    pub fn detect(source: &str) -> Self {
        let takes_tools = source.contains("tools");
        let style = if source.contains("[TOOL_CALLS]") {
            CallStyle::Mistral
        } else if source.contains("<tool_call>") {
            CallStyle::Hermes
        } else if source.contains("<|python_tag|>") || (source.contains("<|eot_id|>") && source.contains("\"parameters\"")) {
            CallStyle::Llama3
        } else {
            return Self { style: CallStyle::Hermes, native: false };
        };
        Self { style, native: takes_tools }
    }

    /// The key under which a call's arguments are written.
    pub fn arguments_key(&self) -> &'static str {
        match self.style {
            CallStyle::Llama3 => "parameters",
            _ => "arguments",
        }
    }

    /// What opens the list of calls, what opens and closes each call, what goes between two
    /// calls and what closes the list. `[TOOL_CALLS]` is the vocabulary's control token when it
    /// has one.
    pub fn syntax(&self, vocab: &Vocab) -> Syntax {
        let text = |s: &str| Piece::Text(s.to_owned());
        match self.style {
            CallStyle::Hermes => Syntax { list_open: vec![], open: "<tool_call>\n", close: "\n</tool_call>", between: "\n", list_close: "" },
            CallStyle::Llama3 => Syntax { list_open: vec![], open: "", close: "", between: "\n", list_close: "" },
            CallStyle::Mistral => {
                let marker = vocab.token_id("[TOOL_CALLS]").map_or_else(|| text("[TOOL_CALLS]"), Piece::Token);
                Syntax { list_open: vec![marker, text("[")], open: "", close: "", between: ", ", list_close: "]" }
            }
        }
    }

    /// Calls as the model would have written them, for assistant turns in the history.
    pub fn write_calls(&self, vocab: &Vocab, calls: &[(String, Value)]) -> String {
        let s = self.syntax(vocab);
        let mut out: String = s.list_open.iter().map(|p| match p {
            Piece::Text(t) => t.clone(),
            Piece::Token(id) => vocab.tokens[*id as usize].clone(),
        }).collect();
        for (i, (name, args)) in calls.iter().enumerate() {
            if i > 0 {
                out.push_str(s.between);
            }
            let name = serde_json::to_string(name).unwrap_or_default();
            out.push_str(&format!("{}{{\"name\": {name}, \"{}\": {}}}{}", s.open, self.arguments_key(), spaced_json(args), s.close));
        }
        out.push_str(s.list_close);
        out
    }

    /// The conversation rewritten for a template without tools: the tools and how to call them
    /// join the system message, assistant calls become text, and tool results become user turns
    /// (consecutive ones merged, so templates that insist on alternating roles accept them).
    pub fn fallback_messages(&self, vocab: &Vocab, messages: &[ChatMessage], tools: &[Value]) -> Vec<ChatMessage> {
        let list: Vec<&Value> = tools.iter().map(|t| t.get("function").unwrap_or(t)).collect();
        let example = self.write_calls(vocab, &[("function_name".into(), serde_json::json!({"argument": "value"}))]);
        let instructions = vocab.escape_controls(&format!(
            "You can call functions. Their signatures, as JSON Schema:\n{}\n\nTo call functions, answer with calls written exactly like this, and nothing else:\n{example}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        ));
        let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len() + 1);
        match messages.first() {
            Some(m) if m.role == "system" => out.push(ChatMessage::new("system", &format!("{}\n\n{instructions}", m.content))),
            _ => out.push(ChatMessage::new("system", &instructions)),
        }
        let skip = usize::from(messages.first().is_some_and(|m| m.role == "system"));
        for m in &messages[skip..] {
            let (role, content) = match m.role.as_str() {
                "tool" => ("user", format!("<tool_response>\n{}\n</tool_response>", m.content)),
                "assistant" if m.tool_calls.is_some() => {
                    let calls: Vec<(String, Value)> = m
                        .tool_calls
                        .iter()
                        .flat_map(|c| c.as_array().into_iter().flatten())
                        .map(|c| (c["function"]["name"].as_str().unwrap_or_default().to_owned(), c["function"]["arguments"].clone()))
                        .collect();
                    let calls: Vec<(String, Value)> = calls.into_iter().map(|(n, a)| (n, escaped(vocab, &a))).collect();
                    let calls = self.write_calls(vocab, &calls);
                    let text = if m.content.is_empty() { calls } else { format!("{}\n{calls}", m.content) };
                    ("assistant", text)
                }
                role => (role, m.content.clone()),
            };
            match out.last_mut() {
                Some(last) if last.role == role && role == "user" => {
                    last.content.push('\n');
                    last.content.push_str(&content);
                }
                _ => out.push(ChatMessage::new(role, &content)),
            }
        }
        out
    }
}

/// `v` with control-token text in its strings escaped (see [`Vocab::escape_controls`]).
fn escaped(vocab: &Vocab, v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(vocab.escape_controls(s)),
        Value::Array(a) => Value::Array(a.iter().map(|x| escaped(vocab, x)).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), escaped(vocab, x))).collect()),
        other => other.clone(),
    }
}

/// JSON with `, ` and `: ` separators, as constrained calls are generated.
pub fn spaced_json(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            let items: Vec<String> = o.iter().map(|(k, v)| format!("{}: {}", Value::String(k.clone()), spaced_json(v))).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(spaced_json).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

/// The fixed parts of a call list (see [`ToolFormat::syntax`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syntax {
    pub list_open: Vec<Piece>,
    pub open: &'static str,
    pub close: &'static str,
    pub between: &'static str,
    pub list_close: &'static str,
}

impl Syntax {
    /// The text a call list starts with once decoded (control tokens are not shown).
    pub fn visible_start(&self) -> String {
        let mut s: String = self.list_open.iter().filter_map(|p| if let Piece::Text(t) = p { Some(t.as_str()) } else { None }).collect();
        s.push_str(self.open);
        s.push_str("{\"name\": \"");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_name_their_call_style() {
        let qwen = "{%- if tools %}…<tool_call>\\n{\"name\": …}</tool_call>{% endif %}";
        assert_eq!(ToolFormat::detect(qwen), ToolFormat { style: CallStyle::Hermes, native: true });
        let mistral = "{% if tools %}[AVAILABLE_TOOLS]{% endif %}[TOOL_CALLS]";
        assert_eq!(ToolFormat::detect(mistral).style, CallStyle::Mistral);
        let llama = "{% if tools %}…\"parameters\": d…<|eot_id|>{% endif %}";
        assert_eq!(ToolFormat::detect(llama), ToolFormat { style: CallStyle::Llama3, native: true });
        let chatml = "{% for m in messages %}<|im_start|>{{ m.role }}…";
        assert_eq!(ToolFormat::detect(chatml), ToolFormat { style: CallStyle::Hermes, native: false });
    }
}
