//! Re-counting a request's tokens with a cloud provider's public tokenizer (OpenAI's o200k and
//! cl100k through tiktoken-rs), the way that provider would bill them.

use tiktoken_rs::CoreBPE;

use super::prices::CloudTokenizer;

/// A request's text as a cloud API would have received it.
#[derive(Debug, Clone)]
pub enum PromptText {
    /// Completion prompts, each billed in full.
    Plain(Vec<String>),
    /// Chat messages as (role, content).
    Chat(Vec<(String, String)>),
}

fn bpe(t: CloudTokenizer) -> &'static CoreBPE {
    match t {
        CloudTokenizer::O200k => tiktoken_rs::o200k_base_singleton(),
        CloudTokenizer::Cl100k => tiktoken_rs::cl100k_base_singleton(),
    }
}

/// Tokens of plain text, special-token look-alikes counted as ordinary text.
pub fn count(t: CloudTokenizer, text: &str) -> u64 {
    bpe(t).encode_ordinary(text).len() as u64
}

/// Prompt tokens as billed. Chat follows OpenAI's published accounting: 3 tokens of framing per
/// message plus its role and content, and 3 that prime the reply.
pub fn prompt_tokens(t: CloudTokenizer, p: &PromptText) -> u64 {
    match p {
        PromptText::Plain(texts) => texts.iter().map(|s| count(t, s)).sum(),
        PromptText::Chat(messages) => messages.iter().map(|(role, content)| 3 + count(t, role) + count(t, content)).sum::<u64>() + 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_like_openai() {
        // tiktoken's documented examples.
        assert_eq!(count(CloudTokenizer::Cl100k, "tiktoken is great!"), 6);
        assert_eq!(count(CloudTokenizer::O200k, "hello world"), 2);
        let chat = PromptText::Chat(vec![("user".into(), "hello world".into())]);
        assert_eq!(prompt_tokens(CloudTokenizer::O200k, &chat), 3 + 1 + 2 + 3);
    }
}
