//! Fill-in-the-middle prompts: the model's FIM tokens, found in GGUF metadata or by their known
//! texts in the vocabulary, and the prefix/suffix/middle layout (with repository context) built
//! from them the way llama.cpp's `/infill` builds it.

use super::gguf::GgufFile;
use super::tokenizer::{EncodeError, Vocab};

/// Known texts of each FIM token, across model families (Qwen/Gemma, StarCoder/SmolLM,
/// CodeLlama, DeepSeek, Codestral).
const PREFIX: &[&str] = &["<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<PRE>", "▁<PRE>", "<｜fim▁begin｜>", "[PREFIX]"];
const SUFFIX: &[&str] = &["<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<SUF>", "▁<SUF>", "<｜fim▁hole｜>", "[SUFFIX]"];
const MIDDLE: &[&str] = &["<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<MID>", "▁<MID>", "<｜fim▁end｜>", "[MIDDLE]"];
const REPO: &[&str] = &["<|repo_name|>", "<repo-name>", "<reponame>"];
const FILE_SEP: &[&str] = &["<|file_sep|>", "<file-sep>", "<file_sep>"];

/// Separates context files when the model has no file-separator token (as llama.cpp does).
const SNIPPET_SEP: &str = "\n\n--- snippet ---\n\n";

/// A model's FIM tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fim {
    pub prefix: u32,
    pub suffix: u32,
    pub middle: u32,
    pub repo: Option<u32>,
    pub file_sep: Option<u32>,
}

/// One file of extra context for an infill request.
#[derive(Debug, Clone, Default)]
pub struct ContextFile {
    pub filename: String,
    pub text: String,
}

impl Fim {
    /// The FIM tokens named by metadata (`tokenizer.ggml.fim_*_token_id`, or the older
    /// `prefix/suffix/middle_token_id`), else found by text; `None` when the model has none.
    pub fn from_gguf(file: &GgufFile, vocab: &Vocab) -> Option<Fim> {
        let find = |keys: &[&str], texts: &[&str]| -> Option<u32> {
            let by_key = keys
                .iter()
                .filter_map(|k| file.get(&format!("tokenizer.ggml.{k}")).and_then(|v| v.as_u64()))
                .map(|id| id as u32)
                .find(|&id| (id as usize) < vocab.len());
            by_key.or_else(|| texts.iter().find_map(|t| vocab.token_id(t)))
        };
        Some(Fim {
            prefix: find(&["fim_pre_token_id", "prefix_token_id"], PREFIX)?,
            suffix: find(&["fim_suf_token_id", "suffix_token_id"], SUFFIX)?,
            middle: find(&["fim_mid_token_id", "middle_token_id"], MIDDLE)?,
            repo: find(&["fim_rep_token_id"], REPO),
            file_sep: find(&["fim_sep_token_id"], FILE_SEP),
        })
    }

    /// `[BOS] [context files] <prefix> prefix <suffix> suffix <middle>`: the model writes what goes
    /// between `prefix` and `suffix`. Context files come first, each introduced by the file
    /// separator token and its name (or a text separator when the model has no such token).
    pub fn prompt(&self, vocab: &Vocab, prefix: &str, suffix: &str, context: &[ContextFile]) -> Result<Vec<u32>, EncodeError> {
        let mut ids = vocab.encode("", true)?;
        if !context.is_empty() {
            if let (Some(repo), Some(_)) = (self.repo, self.file_sep) {
                ids.push(repo);
                ids.extend(vocab.encode("myproject\n", false)?);
            }
            for f in context {
                let name = if f.filename.is_empty() { "tmp" } else { &f.filename };
                match self.file_sep {
                    Some(sep) => {
                        ids.push(sep);
                        ids.extend(vocab.encode(&format!("{name}\n"), false)?);
                    }
                    None => ids.extend(vocab.encode(SNIPPET_SEP, false)?),
                }
                ids.extend(vocab.encode(&f.text, false)?);
            }
            if let Some(sep) = self.file_sep {
                ids.push(sep);
                ids.extend(vocab.encode("filename\n", false)?);
            }
        }
        ids.push(self.prefix);
        ids.extend(vocab.encode(prefix, false)?);
        ids.push(self.suffix);
        ids.extend(vocab.encode(suffix, false)?);
        ids.push(self.middle);
        Ok(ids)
    }
}
