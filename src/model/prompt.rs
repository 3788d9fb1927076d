//! Prompt formats: the file's `tokenizer.chat_template` rendered with minijinja, or, for files
//! without one, the architecture's known chat format written as a template of our own.

use minijinja::{context, Environment, Error as JinjaError, ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::arch::{Arch, ChatFormat};
use super::gguf::{GgufError, GgufFile};
use super::tokenizer::Vocab;
use super::tools::ToolFormat;

const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// Gemma has no system role: a system message is folded into the first user turn.
const GEMMA: &str = "{{ bos_token }}{% set ns = namespace(system='') %}\
{% for m in messages %}{% if m.role == 'system' %}{% set ns.system = ns.system + m.content + '\n\n' %}\
{% else %}<start_of_turn>{{ 'model' if m.role == 'assistant' else m.role }}\n\
{% if m.role == 'user' and ns.system %}{{ ns.system }}{% set ns.system = '' %}{% endif %}\
{{ m.content | trim }}<end_of_turn>\n{% endif %}{% endfor %}\
{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}";

const PHI3: &str = "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}\
{% if add_generation_prompt %}<|assistant|>\n{% endif %}";

/// One chat message. Assistant turns may carry tool calls (`[{id, type, function: {name,
/// arguments}}]`, arguments as a JSON value, as Hugging Face templates expect); `tool` turns
/// name the call they answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        Self { role: role.into(), content: content.into(), tool_calls: None, tool_call_id: None, name: None }
    }
}

/// The chat template failed on these messages (minijinja's reason and its causes).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the chat template failed: {0}")]
pub struct TemplateError(pub String);

/// How a model wants its chat prompts written.
pub struct PromptFormat {
    env: Environment<'static>,
    /// True when the template came from the file, false when it is our fallback.
    pub from_file: bool,
    /// How this model writes tool calls, and whether the template renders tools itself.
    pub tools: ToolFormat,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for PromptFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptFormat").field("from_file", &self.from_file).finish()
    }
}

fn raise_exception(msg: String) -> Result<String, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
}

impl PromptFormat {
    pub fn from_gguf(file: &GgufFile, arch: Arch, vocab: &Vocab) -> Result<Self, GgufError> {
        let from_file = file.get("tokenizer.chat_template").and_then(|v| v.as_str());
        let source = from_file.map(str::to_owned).unwrap_or_else(|| {
            match arch.chat_format() {
                ChatFormat::ChatMl => CHATML,
                ChatFormat::Gemma => GEMMA,
                ChatFormat::Phi3 => PHI3,
            }
            .to_owned()
        });
        let text = |id: Option<u32>| id.map(|i| vocab.tokens[i as usize].clone()).unwrap_or_default();
        Self::new(source, from_file.is_some(), text(vocab.bos), text(vocab.eos))
            .map_err(|e| file.error(format!("tokenizer.chat_template does not compile: {e}")))
    }

    pub fn new(source: String, from_file: bool, bos: String, eos: String) -> Result<Self, JinjaError> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        let tools = ToolFormat::detect(&source);
        env.add_template_owned("chat", source)?;
        Ok(Self { env, from_file, tools, bos, eos })
    }

    /// Renders `messages`, ending with the assistant's turn opener when `add_generation_prompt`.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, TemplateError> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// Renders `messages` offering `tools` (OpenAI's `{type, function}` objects): through the
    /// template's own tool section when it has one, else as a rewritten conversation that states
    /// the tools (see [`ToolFormat::fallback_messages`]).
    pub fn render_chat(&self, vocab: &Vocab, messages: &[ChatMessage], tools: &[Value], add_generation_prompt: bool) -> Result<String, TemplateError> {
        let has_calls = messages.iter().any(|m| m.tool_calls.is_some() || m.role == "tool");
        if self.tools.native || (tools.is_empty() && !has_calls) {
            return self.render_with_tools(messages, Some(tools).filter(|t| !t.is_empty()), add_generation_prompt);
        }
        let rewritten = self.tools.fallback_messages(vocab, messages, tools);
        self.render_with_tools(&rewritten, None, add_generation_prompt)
    }

    fn render_with_tools(&self, messages: &[ChatMessage], tools: Option<&[Value]>, add_generation_prompt: bool) -> Result<String, TemplateError> {
        let tmpl = self.env.get_template("chat").map_err(|e| TemplateError(e.to_string()))?;
        let base = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos,
            eos_token => self.eos,
        };
        let ctx = match tools {
            Some(tools) => context! { tools => tools, ..base },
            None => base,
        };
        tmpl.render(ctx)
        .map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            TemplateError(msg)
        })
    }

    /// Whether a rendered prompt already starts with the BOS token (so none must be added).
    pub fn starts_with_bos(&self, rendered: &str) -> bool {
        !self.bos.is_empty() && rendered.starts_with(&self.bos)
    }
}
