//! Constrained decoding: grammars (JSON Schema, Lark, regex) compiled by llguidance over the
//! model's own vocabulary, and the per-sequence matcher that says which tokens may come next.
//! A sequence with a grammar samples only among the tokens its mask allows, and ends when the
//! grammar does.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;

use crate::model::Vocab;

/// What a request constrains its output to.
#[derive(Debug, Clone, PartialEq)]
pub enum GrammarSpec {
    /// A JSON document following this JSON Schema (`{}` for any JSON object or value the schema allows).
    JsonSchema(Value),
    /// A grammar in llguidance's Lark dialect (which may embed `%json { … }` schemas).
    Lark(String),
    /// Text matching a regular expression.
    Regex(String),
}

/// A grammar llguidance refused (its reason inside).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct GrammarError(pub String);

/// The vocabulary as llguidance sees it: a token trie. Text the grammar forces is split greedily
/// over the trie rather than by our tokenizer, which may add SentencePiece's leading space; the
/// split is then not the canonical one, which llguidance is told.
struct VocabEnv {
    trie: TokTrie,
}

impl TokenizerEnv for VocabEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.greedy_tokenize(s)
    }

    fn tokenize_is_canonical(&self) -> bool {
        false
    }
}

/// Compiles grammars for one model; built once per model (the token trie and llguidance's
/// per-vocabulary tables), shared by every request.
pub struct Grammars {
    factory: ParserFactory,
}

impl Grammars {
    pub fn new(vocab: &Vocab) -> Result<Self, GrammarError> {
        let words = vocab.token_bytes();
        let eos = vocab.eos.or(vocab.end_of_generation.first().copied()).unwrap_or(0);
        let mut info = TokRxInfo::new(words.len() as u32, eos);
        info.tok_bos = vocab.bos;
        let trie = TokTrie::from(&info, &words).with_eos_tokens(&vocab.end_of_generation);
        let env: TokEnv = Arc::new(VocabEnv { trie });
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| GrammarError(e.to_string()))?;
        factory.quiet();
        Ok(Self { factory })
    }

    /// Compiles `spec`; an invalid schema or grammar is an error naming what is wrong.
    pub fn compile(&self, spec: &GrammarSpec) -> Result<Grammar, GrammarError> {
        let top = match spec {
            GrammarSpec::JsonSchema(schema) => TopLevelGrammar::from_json_schema(schema.clone()),
            GrammarSpec::Lark(src) => TopLevelGrammar::from_lark(src.clone()),
            GrammarSpec::Regex(rx) => TopLevelGrammar::from_regex(rx),
        };
        let parser = self.factory.create_parser(top).map_err(|e| GrammarError(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        match matcher.get_error() {
            Some(e) => Err(GrammarError(e)),
            None => Ok(Grammar { matcher }),
        }
    }
}

/// One sequence's position in its grammar.
pub struct Grammar {
    matcher: Matcher,
}

impl Clone for Grammar {
    fn clone(&self) -> Self {
        Self { matcher: self.matcher.deep_clone() }
    }
}

impl std::fmt::Debug for Grammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammar").field("stopped", &self.matcher.is_stopped()).finish()
    }
}

/// The tokens a grammar allows next.
pub struct Mask(SimpleVob);

impl Mask {
    /// Sets every logit the mask forbids to −∞ (ids beyond the vocabulary too).
    pub fn apply(&self, logits: &mut [f32]) {
        let n = self.0.len();
        for (i, l) in logits.iter_mut().enumerate() {
            if i >= n || !self.0.is_allowed(i as TokenId) {
                *l = f32::NEG_INFINITY;
            }
        }
    }

    pub fn allows(&self, token: u32) -> bool {
        (token as usize) < self.0.len() && self.0.is_allowed(token)
    }
}

impl Grammar {
    /// The tokens allowed next (end-of-generation tokens only where the grammar may end).
    pub fn mask(&mut self) -> Result<Mask, GrammarError> {
        self.matcher.compute_mask_or_eos().map(Mask).map_err(|e| GrammarError(e.to_string()))
    }

    /// Moves past `token`, which the last mask allowed.
    pub fn accept(&mut self, token: u32) -> Result<(), GrammarError> {
        self.matcher.consume_token(token).map_err(|e| GrammarError(e.to_string()))
    }

    /// The grammar has ended: nothing more may be generated.
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }
}
