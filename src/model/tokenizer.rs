//! The vocabulary read from `tokenizer.ggml.*` metadata, built into a tokenizer (gpt2-style
//! byte-level BPE through `tokenizers`, SentencePiece BPE with byte fallback through our own
//! [`Spm`]), plus the special token ids hearth needs and a streaming detokenizer that never
//! splits a UTF-8 character.

use tokenizers::models::bpe::{Vocab as BpeVocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, DecoderWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use super::gguf::{GgufError, GgufFile, Value};

use super::spm::{Spm, TYPE_BYTE, TYPE_CONTROL, TYPE_NORMAL, TYPE_USER};

/// Texts of control tokens that end a turn, besides the ids the metadata names (as llama.cpp).
const END_OF_GENERATION: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "<|return|>",
    "<|file_separator|>",
];

const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The tokenizer a file names: gpt2-style byte-level BPE through `tokenizers`, or SentencePiece
/// BPE through our own [`Spm`].
enum Engine {
    Bpe(Box<Tokenizer>),
    Spm(Spm),
}

/// Breaks a control token's text inside chat content (see [`Vocab::escape_controls`]); removed
/// again after special tokens are found, before the text is split into pieces.
pub const ESCAPE: char = '\u{E000}';

/// The tokenizer could not encode a text (the library's own reason inside).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the tokenizer failed: {0}")]
pub struct EncodeError(pub String);

/// A model's vocabulary: the tokenizer and the special ids that drive generation.
pub struct Vocab {
    engine: Engine,
    pub tokens: Vec<String>,
    /// Each token's GGUF type (normal, control, user-defined, byte, …).
    types: Vec<i8>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    /// Every token that ends generation.
    pub end_of_generation: Vec<u32>,
    /// Control and user-defined tokens' texts (both are cut out of text as whole tokens), their lengths (longest first) and first bytes, to find them in text.
    controls: std::collections::HashSet<String>,
    control_lens: Vec<usize>,
    control_first: [bool; 256],
    /// The most text bytes one token stands for (its piece's length bounds it).
    pub max_token_bytes: usize,
}

impl Vocab {
    pub fn from_gguf(file: &GgufFile) -> Result<Self, GgufError> {
        let strings = |key: &str| -> Result<Vec<String>, GgufError> {
            let arr = file.get(key).and_then(Value::as_array).ok_or_else(|| file.error(format!("metadata {key} is missing")))?;
            arr.iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| file.error(format!("metadata {key} must hold strings"))))
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let n = tokens.len();
        let types: Vec<i64> = match file.get("tokenizer.ggml.token_type").and_then(Value::as_array) {
            Some(a) if a.len() == n => a.iter().map(|v| v.as_f64().unwrap_or(1.0) as i64).collect(),
            Some(_) => return Err(file.error("tokenizer.ggml.token_type length differs from tokenizer.ggml.tokens")),
            None => vec![TYPE_NORMAL; n],
        };
        let id = |key: &str| -> Result<Option<u32>, GgufError> {
            match file.get(key).and_then(Value::as_u64) {
                Some(i) if (i as usize) < n => Ok(Some(i as u32)),
                Some(i) => Err(file.error(format!("{key} = {i} is outside the vocabulary of {n} tokens"))),
                None => Ok(None),
            }
        };
        let flag = |key: &str| file.get(key).and_then(Value::as_bool);
        let model = file.get("tokenizer.ggml.model").and_then(Value::as_str).unwrap_or("");
        let engine = match model {
            "gpt2" => {
                let merges = strings("tokenizer.ggml.merges")?;
                let pre = file.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap_or("default");
                let mut tokenizer = gpt2_tokenizer(&tokens, &merges, pre).map_err(|e| file.error(format!("building the tokenizer: {e}")))?;
                let added: Vec<AddedToken> = tokens
                    .iter()
                    .zip(&types)
                    .filter(|(_, &t)| t == TYPE_CONTROL || t == TYPE_USER)
                    .map(|(s, &t)| AddedToken::from(s.clone(), t == TYPE_CONTROL).normalized(false))
                    .collect();
                tokenizer.add_special_tokens(&added);
                Engine::Bpe(Box::new(tokenizer))
            }
            "llama" => {
                let scores: Vec<f32> = match file.get("tokenizer.ggml.scores").and_then(Value::as_array) {
                    Some(a) if a.len() == n => a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect(),
                    _ => return Err(file.error("tokenizer.ggml.scores is missing or differs in length from the tokens")),
                };
                let unk = id("tokenizer.ggml.unknown_token_id")?;
                let space_prefix = flag("tokenizer.ggml.add_space_prefix").unwrap_or(true);
                Engine::Spm(Spm::new(&tokens, &scores, &types, unk, space_prefix))
            }
            other => return Err(file.error(format!("tokenizer model \"{other}\" is not supported (gpt2 and llama are)"))),
        };

        let bos = id("tokenizer.ggml.bos_token_id")?;
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let mut eog: Vec<u32> = [eos, id("tokenizer.ggml.eot_token_id")?, id("tokenizer.ggml.eom_token_id")?]
            .into_iter()
            .flatten()
            .collect();
        for (i, (s, &t)) in tokens.iter().zip(&types).enumerate() {
            if t == TYPE_CONTROL && END_OF_GENERATION.contains(&s.as_str()) && !eog.contains(&(i as u32)) {
                eog.push(i as u32);
            }
        }
        let add_bos = flag("tokenizer.ggml.add_bos_token").unwrap_or(model == "llama") && bos.is_some();
        let controls: std::collections::HashSet<String> =
            tokens.iter().zip(&types).filter(|(t, &ty)| (ty == TYPE_CONTROL || ty == TYPE_USER) && !t.is_empty()).map(|(t, _)| t.clone()).collect();
        let mut control_lens: Vec<usize> = controls.iter().map(String::len).collect();
        control_lens.sort_unstable_by(|a, b| b.cmp(a));
        control_lens.dedup();
        let mut control_first = [false; 256];
        for c in &controls {
            control_first[c.as_bytes()[0] as usize] = true;
        }
        let types = types.iter().map(|&t| t.clamp(0, 127) as i8).collect();
        let max_token_bytes = tokens.iter().map(String::len).max().unwrap_or(1).max(1);
        Ok(Self { engine, tokens, types, bos, eos, add_bos, end_of_generation: eog, controls, control_lens, control_first, max_token_bytes })
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Tokenizes `text`; special-token texts in it become their tokens. Prepends BOS when the
    /// model wants one and `add_bos` is set.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, EncodeError> {
        let mut ids = Vec::new();
        if add_bos && self.add_bos {
            ids.extend(self.bos);
        }
        match &self.engine {
            Engine::Bpe(t) => ids.extend_from_slice(t.encode_fast(text, false).map_err(|e| EncodeError(e.to_string()))?.get_ids()),
            Engine::Spm(t) => ids.extend(t.encode(text)),
        }
        Ok(ids)
    }

    /// `text` with every control token's text in it broken by [`ESCAPE`], so that a chat message
    /// saying `<|im_end|>` is read as those characters, not as the end of its turn: only the
    /// chat template's own markers become control tokens.
    pub fn escape_controls(&self, text: &str) -> String {
        let b = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let (mut copied, mut at) = (0, 0);
        while at < b.len() {
            let hit = self.control_first[b[at] as usize]
                && self.control_lens.iter().any(|&n| text.get(at..at + n).is_some_and(|s| self.controls.contains(s)));
            if hit {
                let first = text[at..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&text[copied..at + first]);
                out.push(ESCAPE);
                copied = at + first;
                at += first;
            } else {
                at += 1;
            }
        }
        out.push_str(&text[copied..]);
        out
    }

    /// Text of `ids`, control tokens left out.
    pub fn decode(&self, ids: &[u32]) -> String {
        match &self.engine {
            Engine::Bpe(t) => t.decode(ids, true).unwrap_or_default(),
            Engine::Spm(t) => t.decode(ids),
        }
    }

    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.contains(&id)
    }

    /// The bytes each token stands for, in id order, as constrained decoding matches them against
    /// a grammar: byte-level BPE pieces mapped back to bytes, SentencePiece's `▁` as a space and
    /// `<0xAB>` pieces as that byte; control tokens are their text behind llguidance's 0xFF marker,
    /// so no text grammar can produce them by accident.
    pub fn token_bytes(&self) -> Vec<Vec<u8>> {
        let byte_level = byte_level_chars();
        self.tokens
            .iter()
            .zip(&self.types)
            .map(|(t, &ty)| match (ty as i64, &self.engine) {
                (TYPE_CONTROL, _) => [&[0xFF_u8][..], t.as_bytes()].concat(),
                (TYPE_USER, _) => t.as_bytes().to_vec(),
                (TYPE_BYTE, _) => u8::from_str_radix(t.trim_start_matches("<0x").trim_end_matches('>'), 16).map_or_else(|_| Vec::new(), |b| vec![b]),
                (_, Engine::Bpe(_)) => t.chars().map(|c| byte_level.get(&c).copied()).collect::<Option<Vec<u8>>>().unwrap_or_else(|| t.as_bytes().to_vec()),
                (_, Engine::Spm(_)) => t.replace('\u{2581}', " ").into_bytes(),
            })
            .collect()
    }

    /// Whether the tokenizer is SentencePiece (else byte-level BPE).
    pub fn is_sentencepiece(&self) -> bool {
        matches!(self.engine, Engine::Spm(_))
    }

    /// The id of a token by its exact text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.tokens.iter().position(|t| t == text).map(|i| i as u32)
    }
}

/// GPT-2's byte-level alphabet read backwards: the printable character standing for each byte.
fn byte_level_chars() -> std::collections::HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 0x100u32;
    (0..=255u8)
        .map(|b| {
            let c = if printable(b) {
                b as char
            } else {
                next += 1;
                char::from_u32(next - 1).expect("a valid char")
            };
            (c, b)
        })
        .collect()
}

fn gpt2_tokenizer(tokens: &[String], merges: &[String], pre: &str) -> tokenizers::Result<Tokenizer> {
    let vocab: BpeVocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let merges: Vec<(String, String)> = merges
        .iter()
        .filter_map(|m| m.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
        .collect();
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build()?;
    let mut tok = Tokenizer::new(bpe);
    let split = |re: &str| -> tokenizers::Result<PreTokenizerWrapper> {
        Ok(Split::new(SplitPattern::Regex(re.into()), SplitDelimiterBehavior::Isolated, false)?.into())
    };
    let byte_level = ByteLevel::new(false, false, false);
    let pre: PreTokenizerWrapper = match pre {
        // Digits one by one, then GPT-2's split (llama.cpp's starcoder/smollm pre-tokenizer).
        "smollm" | "starcoder" | "refact" | "codeshell" => {
            PreSequence::new(vec![Digits::new(true).into(), split(GPT2_REGEX)?, byte_level.into()]).into()
        }
        "llama3" | "llama-bpe" | "smaug-bpe" | "dbrx" => PreSequence::new(vec![split(LLAMA3_REGEX)?, byte_level.into()]).into(),
        "qwen2" | "deepseek-r1-qwen" => PreSequence::new(vec![split(QWEN2_REGEX)?, byte_level.into()]).into(),
        _ => PreSequence::new(vec![split(GPT2_REGEX)?, byte_level.into()]).into(),
    };
    tok.with_pre_tokenizer(Some(pre));
    // Escape marks are dropped after special tokens were cut out, before the BPE sees the text.
    tok.with_normalizer(Some(tokenizers::normalizers::replace::Replace::new(ESCAPE.to_string(), "")?));
    tok.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    Ok(tok)
}

/// Turns a stream of token ids into text pieces, holding back bytes of an unfinished UTF-8
/// character until the token that completes it arrives.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one token; returns the text it completes, if any.
    pub fn push(&mut self, vocab: &Vocab, id: u32) -> Option<String> {
        self.ids.push(id);
        let before = vocab.decode(&self.ids[self.prefix..self.read]);
        let after = vocab.decode(&self.ids[self.prefix..]);
        if after.len() <= before.len() || after.ends_with('\u{FFFD}') {
            return None;
        }
        let delta = match after.strip_prefix(before.as_str()) {
            Some(d) => d.to_owned(),
            None => after.chars().skip(before.chars().count()).collect(),
        };
        self.prefix = self.read;
        self.read = self.ids.len();
        Some(delta)
    }

    /// Whatever is still held back (an incomplete character decodes as U+FFFD).
    pub fn flush(&mut self, vocab: &Vocab) -> Option<String> {
        let before = vocab.decode(&self.ids[self.prefix..self.read]);
        let after = vocab.decode(&self.ids[self.prefix..]);
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        after.strip_prefix(before.as_str()).filter(|d| !d.is_empty()).map(str::to_owned)
    }
}
