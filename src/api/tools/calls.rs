//! Reading tool calls out of generated text as it streams: text before the first call is the
//! answer's content; each call yields its name once known and its arguments piece by piece. The
//! grammar guarantees the shape (`{"name": "…", "<key>": <json>}` in the model's syntax), so the
//! reader only has to find the name and the end of the arguments' JSON.

use serde_json::Value;

/// One finished call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments' JSON text, as generated.
    pub arguments: String,
}

/// What a piece of text added to the calls.
#[derive(Debug, Clone, PartialEq)]
pub enum CallDelta {
    /// Call `index` began: its id and function name.
    Begin { index: usize, id: String, name: String },
    /// More of call `index`'s arguments.
    Arguments { index: usize, fragment: String },
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    /// Before the first call: text is content.
    Content,
    /// Inside `"name": "…`.
    Name,
    /// Between the name and the arguments (`", "arguments": `).
    Key,
    /// Inside the arguments: JSON nesting depth, inside a string, after a backslash.
    Arguments { depth: usize, string: bool, escape: bool },
    /// After a call: looking for the next one.
    Between,
}

/// Reads one choice's text.
#[derive(Debug, Clone)]
pub struct CallParser {
    /// The decoded text a call list starts with (ends with `{"name": "`).
    start: String,
    held: String,
    state: State,
    content: String,
    calls: Vec<ToolCall>,
    id_prefix: String,
}

const NAME_OPEN: &str = "{\"name\": \"";

impl CallParser {
    /// `start`: the visible opening of a call list; `id_prefix`: what call ids start with.
    pub fn new(start: String, id_prefix: String) -> Self {
        Self { start, held: String::new(), state: State::Content, content: String::new(), calls: Vec::new(), id_prefix }
    }

    /// The content before the first call.
    pub fn content(&self) -> &str {
        &self.content
    }

    /// Calls read so far (the last may be unfinished when generation was cut short).
    pub fn calls(&self) -> &[ToolCall] {
        &self.calls
    }

    /// Takes more text; returns the content it releases and what it did to the calls.
    pub fn push(&mut self, text: &str) -> (String, Vec<CallDelta>) {
        self.held.push_str(text);
        let mut content = String::new();
        let mut deltas = Vec::new();
        loop {
            match self.state.clone() {
                State::Content => {
                    if let Some(at) = self.held.find(&self.start) {
                        content.push_str(&self.held[..at]);
                        self.held.drain(..at + self.start.len());
                        self.state = State::Name;
                        continue;
                    }
                    // Hold back a tail that may grow into the opening.
                    let keep = (1..self.start.len().min(self.held.len() + 1))
                        .rev()
                        .find(|&n| self.held.is_char_boundary(self.held.len() - n) && self.start.starts_with(&self.held[self.held.len() - n..]))
                        .unwrap_or(0);
                    let cut = self.held.len() - keep;
                    content.push_str(&self.held[..cut]);
                    self.held.drain(..cut);
                    break;
                }
                State::Name => {
                    let Some(end) = self.held.find('"') else { break };
                    let name = self.held[..end].to_owned();
                    self.held.drain(..end + 1);
                    let index = self.calls.len();
                    let id = format!("{}_{index}", self.id_prefix);
                    self.calls.push(ToolCall { id: id.clone(), name: name.clone(), arguments: String::new() });
                    deltas.push(CallDelta::Begin { index, id, name });
                    self.state = State::Key;
                }
                State::Key => {
                    // `, "arguments": ` then the value.
                    let Some(colon) = self.held.find(':') else { break };
                    let rest = &self.held[colon + 1..];
                    let Some(value) = rest.find(|c: char| !c.is_whitespace()) else { break };
                    self.held.drain(..colon + 1 + value);
                    self.state = State::Arguments { depth: 0, string: false, escape: false };
                }
                State::Arguments { mut depth, mut string, mut escape } => {
                    let mut end = None;
                    for (i, c) in self.held.char_indices() {
                        if string {
                            match (escape, c) {
                                (true, _) => escape = false,
                                (false, '\\') => escape = true,
                                (false, '"') => string = false,
                                _ => {}
                            }
                        } else {
                            match c {
                                '"' => string = true,
                                '{' | '[' => depth += 1,
                                '}' | ']' => depth = depth.saturating_sub(1),
                                _ => {}
                            }
                            if depth == 0 && !string && matches!(c, '}' | ']' | '"') {
                                end = Some(i + c.len_utf8());
                                break;
                            }
                        }
                    }
                    let taken = end.unwrap_or(self.held.len());
                    let fragment: String = self.held.drain(..taken).collect();
                    let index = self.calls.len() - 1;
                    if !fragment.is_empty() {
                        self.calls[index].arguments.push_str(&fragment);
                        deltas.push(CallDelta::Arguments { index, fragment });
                    }
                    if end.is_none() {
                        self.state = State::Arguments { depth, string, escape };
                        break;
                    }
                    self.state = State::Between;
                }
                State::Between => {
                    let Some(at) = self.held.find(NAME_OPEN) else { break };
                    self.held.drain(..at + NAME_OPEN.len());
                    self.state = State::Name;
                }
            }
        }
        self.content.push_str(&content);
        (content, deltas)
    }

    /// Releases content held back at the end (text that only looked like an opening).
    pub fn finish(&mut self) -> String {
        match self.state {
            State::Content => {
                let rest = std::mem::take(&mut self.held);
                self.content.push_str(&rest);
                rest
            }
            _ => String::new(),
        }
    }

    /// The calls as OpenAI's `message.tool_calls`.
    pub fn openai_calls(&self) -> Vec<Value> {
        self.calls
            .iter()
            .map(|c| serde_json::json!({ "id": c.id, "type": "function", "function": { "name": c.name, "arguments": c.arguments } }))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hermes() -> CallParser {
        CallParser::new("<tool_call>\n{\"name\": \"".into(), "call_x".into())
    }

    /// Feeds `text` in pieces of `n` bytes (on char boundaries); returns content and deltas.
    fn feed(p: &mut CallParser, text: &str, n: usize) -> (String, Vec<CallDelta>) {
        let (mut content, mut deltas) = (String::new(), Vec::new());
        let mut rest = text;
        while !rest.is_empty() {
            let mut cut = n.min(rest.len());
            while !rest.is_char_boundary(cut) {
                cut += 1;
            }
            let (c, d) = p.push(&rest[..cut]);
            content.push_str(&c);
            deltas.extend(d);
            rest = &rest[cut..];
        }
        content.push_str(&p.finish());
        (content, deltas)
    }

    #[test]
    fn calls_are_read_whatever_the_pieces() {
        let text = "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Pa}ris\\\"\", \"days\": [1, {\"x\": 2}]}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>";
        for n in [1, 2, 3, 7, 1000] {
            let mut p = hermes();
            let (content, deltas) = feed(&mut p, text, n);
            assert_eq!(content, "Let me look.\n", "pieces of {n}");
            assert_eq!(p.content(), content, "the parser keeps what it released");
            let calls = p.calls();
            assert_eq!(calls.len(), 2);
            assert_eq!((calls[0].name.as_str(), calls[0].arguments.as_str()), ("get_weather", "{\"city\": \"Pa}ris\\\"\", \"days\": [1, {\"x\": 2}]}"));
            assert_eq!((calls[1].name.as_str(), calls[1].arguments.as_str()), ("now", "{}"));
            let joined: String = deltas.iter().filter_map(|d| match d {
                CallDelta::Arguments { index: 0, fragment } => Some(fragment.as_str()),
                _ => None,
            }).collect();
            assert_eq!(joined, calls[0].arguments);
            assert!(matches!(&deltas[0], CallDelta::Begin { index: 0, name, .. } if name == "get_weather"));
        }
    }

    #[test]
    fn text_that_only_looks_like_an_opening_is_content() {
        let mut p = hermes();
        let (content, deltas) = feed(&mut p, "a <tool_ b", 1);
        assert_eq!((content.as_str(), deltas.len(), p.content()), ("a <tool_ b", 0, "a <tool_ b"));
        let mut p = hermes();
        assert_eq!(p.push("x <tool").0, "x ");
        assert_eq!(p.finish(), "<tool");
    }

    #[test]
    fn bare_and_listed_calls() {
        let mut p = CallParser::new("{\"name\": \"".into(), "c".into());
        feed(&mut p, "{\"name\": \"f\", \"parameters\": {\"a\": 1}}\n{\"name\": \"g\", \"parameters\": {}}", 4);
        assert_eq!(p.calls().iter().map(|c| c.arguments.as_str()).collect::<Vec<_>>(), ["{\"a\": 1}", "{}"]);
        let mut p = CallParser::new("[{\"name\": \"".into(), "c".into());
        feed(&mut p, "[{\"name\": \"f\", \"arguments\": {\"a\": [1]}}, {\"name\": \"g\", \"arguments\": {}}]", 3);
        assert_eq!(p.calls().iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["f", "g"]);
    }
}
