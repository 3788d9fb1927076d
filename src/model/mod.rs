//! Models: GGUF files, architectures, the decoder, KV caches, tokenizers and prompt formats.
//! Depends only on candle, tokenizers and minijinja; knows nothing of requests or the ledger.

pub mod arch;
pub mod decoder;
pub mod device;
pub mod fim;
mod finite;
pub mod gguf;
pub mod gguf_write;
mod gpu;
pub mod kernels;
pub mod kv_cache;
pub mod prompt;
pub mod quantize;
pub mod tensor_type;
pub mod spm;
pub mod synth;
pub mod tokenizer;
pub mod tools;
pub mod weights;

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;

use tensor_type::TypeInfo;

pub use arch::{Arch, ModelSpec};
pub use decoder::{Chunk, Decoder, Logits};
pub use fim::{ContextFile, Fim};
pub use gguf::{GgufError, GgufFile};
pub use kv_cache::{CacheType, KvCache};
pub use prompt::{ChatMessage, PromptFormat, TemplateError};
pub use tokenizer::{EncodeError, StreamDecoder, Vocab};
pub use tools::{CallStyle, Piece, Syntax, ToolFormat};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{context}: {source}")]
    Candle { context: String, source: candle_core::Error },
    #[error("the context holds {limit} tokens, {needed} needed")]
    ContextFull { needed: usize, limit: usize },
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Device(String),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl ModelError {
    pub fn candle(context: impl Into<String>, source: candle_core::Error) -> Self {
        Self::Candle { context: context.into(), source }
    }
}

/// Everything needed to run one GGUF file: decoder, vocabulary and prompt format.
pub struct Model {
    pub name: String,
    pub decoder: Decoder,
    /// Shared read-only with request handlers, which tokenize off the engine thread.
    pub vocab: Arc<Vocab>,
    pub prompt: Arc<PromptFormat>,
    /// Fill-in-the-middle tokens, when the model has them.
    pub fim: Option<Fim>,
    pub file_size: usize,
    /// The quantization type most of the weights use, e.g. "Q4_K".
    pub quantization: String,
}

impl Model {
    pub fn load(path: &Path, device: &Device) -> Result<Self, ModelError> {
        let file = GgufFile::open(path)?;
        Self::from_gguf(&file, device)
    }

    pub fn from_gguf(file: &GgufFile, device: &Device) -> Result<Self, ModelError> {
        let spec = ModelSpec::from_gguf(file)?;
        let vocab = Vocab::from_gguf(file)?;
        if vocab.len() < spec.vocab_size {
            return Err(file.error(format!("the vocabulary has {} tokens but the embedding {} rows", vocab.len(), spec.vocab_size)).into());
        }
        let prompt = PromptFormat::from_gguf(file, spec.arch, &vocab)?;
        let fim = Fim::from_gguf(file, &vocab);
        let weights = weights::Weights::load(file, &spec, device)?;
        let name = file
            .get("general.name")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| path_stem(&file.path));
        Ok(Self {
            name,
            decoder: Decoder::new(spec, weights, device.clone()),
            vocab: Arc::new(vocab),
            prompt: Arc::new(prompt),
            fim,
            file_size: file.file_size(),
            quantization: dominant_type(file),
        })
    }
}

fn path_stem(p: &Path) -> String {
    p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The quantization named by `general.file_type` (llama.cpp's ftype), else the type holding
/// most weight bytes outside the embedding.
pub fn dominant_type(file: &GgufFile) -> String {
    let file_type = file.get("general.file_type").and_then(|v| v.as_u64());
    // One type throughout (the tensor-type table's file types), or one of llama.cpp's mixes.
    let named = match file_type.map(|f| (f, TypeInfo::of_file_type(f))) {
        Some((_, Some(t))) => t.name,
        Some((f, None)) => tensor_type::MIXES.iter().find(|(id, _)| u64::from(*id) == f).map_or("", |&(_, name)| name),
        None => "",
    };
    if !named.is_empty() {
        return named.to_owned();
    }
    let mut by_type: Vec<(&'static str, usize)> = Vec::new();
    for t in file.tensors.iter().filter(|t| t.dims.len() == 2 && t.name != "token_embd.weight") {
        match by_type.iter_mut().find(|(n, _)| *n == t.ty.name()) {
            Some((_, s)) => *s += t.size,
            None => by_type.push((t.ty.name(), t.size)),
        }
    }
    by_type.into_iter().max_by_key(|&(_, s)| s).map(|(n, _)| n.to_owned()).unwrap_or_default()
}
