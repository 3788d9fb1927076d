//! Re-encoding a GGUF file's weights at another precision (`hearth quantize`), with llama.cpp's
//! per-tensor choices: the output and tied embeddings kept at 6 or 8 bits, the _M mixes giving some
//! attention-value and feed-forward-down layers 6 bits, and 256-block types falling back to a
//! 32-block type where a row is not a multiple of 256. Metadata and tokenizer are kept as they are.

use std::path::Path;

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::gguf::{GgufFile, TensorInfo, TensorType, Value};
use super::gguf_write::{GgufWriter, PlannedTensor};
use super::ModelError;

/// What `--type` asks for: a base type, or a llama.cpp mix of types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    F16,
    Q8_0,
    Q6K,
    Q5KM,
    Q5_1,
    Q5_0,
    Q4KM,
    Q4_1,
    Q4_0,
}

impl Target {
    pub const ALL: [Target; 9] =
        [Target::F16, Target::Q8_0, Target::Q6K, Target::Q5KM, Target::Q5_1, Target::Q5_0, Target::Q4KM, Target::Q4_1, Target::Q4_0];

    /// The type most weights get: a row of the tensor-type table.
    fn base(self) -> TensorType {
        match self {
            Target::F16 => TensorType::F16,
            Target::Q8_0 => TensorType::Q8_0,
            Target::Q6K => TensorType::Q6_K,
            Target::Q5KM => TensorType::Q5_K,
            Target::Q5_1 => TensorType::Q5_1,
            Target::Q5_0 => TensorType::Q5_0,
            Target::Q4KM => TensorType::Q4_K,
            Target::Q4_1 => TensorType::Q4_1,
            Target::Q4_0 => TensorType::Q4_0,
        }
    }

    /// llama.cpp's name and `general.file_type` for the _M mixes, which give some layers more
    /// bits; `None` for a target that is one type.
    fn mix(self) -> Option<(&'static str, u32)> {
        let name = match self {
            Target::Q4KM => "Q4_K_M",
            Target::Q5KM => "Q5_K_M",
            _ => return None,
        };
        super::tensor_type::MIXES.iter().find(|(_, n)| *n == name).map(|&(file_type, name)| (name, file_type))
    }

    pub fn name(self) -> &'static str {
        self.mix().map_or_else(|| self.base().name(), |(name, _)| name)
    }

    /// llama.cpp's `general.file_type` for this target.
    pub fn file_type(self) -> u32 {
        match self.mix() {
            Some((_, file_type)) => file_type,
            None => self.base().info().and_then(|t| t.file_type).expect("a one-type target has a file type"),
        }
    }
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Target::ALL.into_iter().find(|t| t.name().eq_ignore_ascii_case(s)).ok_or_else(|| {
            let names: Vec<_> = Target::ALL.iter().map(|t| t.name()).collect();
            format!("unknown quantization type {s:?}; expected one of {}", names.join(", "))
        })
    }
}

/// The type chosen for one tensor.
#[derive(Debug, Clone)]
pub struct Choice {
    pub name: String,
    pub dims: Vec<usize>,
    pub from: TensorType,
    pub to: TensorType,
    /// The mix asked for a 256-block type that this tensor's rows do not fit.
    pub fallback: bool,
}

impl Choice {
    /// A quantized source re-encoded as another type: precision lost before can only stay lost.
    pub fn requantized(&self) -> bool {
        self.from.is_quantized() && self.from != self.to
    }
}

/// llama.cpp quantizes only 2-D weights, and never norms or a few small special tensors.
fn allows_quantization(t: &TensorInfo) -> bool {
    let n = t.name.as_str();
    t.dims.len() >= 2
        && n.ends_with("weight")
        && !n.contains("_norm.weight")
        && !n.contains("ffn_gate_inp.weight")
        && !n.contains("ssm_conv1d")
        && !n.contains("position_embd")
        && !n.contains("token_types")
}

/// llama.cpp's layers that get more bits in the _M mixes: the first and last eighth, and every
/// third layer in between.
fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i as isize - (n / 8) as isize).rem_euclid(3) == 2
}

/// The 32-block type llama.cpp uses when a row does not fit a 256-block type, or F16.
fn fit(ty: TensorType, cols: usize) -> (TensorType, bool) {
    if cols.is_multiple_of(ty.block_size()) {
        return (ty, false);
    }
    let smaller = match ty {
        TensorType::Q4_K => TensorType::Q5_0,
        TensorType::Q5_K => TensorType::Q5_1,
        TensorType::Q6_K => TensorType::Q8_0,
        TensorType::Q2_K | TensorType::Q3_K => TensorType::Q4_0,
        other => other,
    };
    (if cols.is_multiple_of(smaller.block_size()) { smaller } else { TensorType::F16 }, true)
}

/// The layer a tensor belongs to (`blk.N.…`).
fn layer(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// The type of every tensor of a file under `target`, in file order. llama.cpp visits tensors
/// sorted by layer, so its per-layer counters are the layer number, which is what is used here.
pub fn plan(tensors: &[TensorInfo], target: Target) -> Vec<Choice> {
    let tied = !tensors.iter().any(|t| t.name == "output.weight");
    let is_attn_v = |n: &str| n.contains("attn_v.weight") || n.contains("attn_qkv.weight");
    let n_attn_v = tensors.iter().filter(|t| is_attn_v(&t.name)).count();
    let n_ffn_down = tensors.iter().filter(|t| t.name.contains("ffn_down")).count();
    let (mut i_attn_v, mut i_ffn_down) = (0, 0);
    let base = target.base();
    let mix = target.mix().is_some();
    tensors
        .iter()
        .map(|t| {
            let cols = *t.dims.last().expect("tensors have dimensions");
            let mut to = None;
            if allows_quantization(t) {
                let n = t.name.as_str();
                let mut ty = base;
                if base != TensorType::F16 {
                    let more_bits = |counter: &mut usize, total| {
                        *counter += 1;
                        mix && use_more_bits(layer(n).unwrap_or(*counter - 1), total)
                    };
                    if n == "output.weight" || (tied && n == "token_embd.weight") {
                        if !cols.is_multiple_of(base.block_size()) {
                            ty = TensorType::Q8_0;
                        } else if base != TensorType::Q8_0 {
                            ty = TensorType::Q6_K;
                        }
                    } else if is_attn_v(n) {
                        if more_bits(&mut i_attn_v, n_attn_v) {
                            ty = TensorType::Q6_K;
                        }
                    } else if n.contains("ffn_down") && more_bits(&mut i_ffn_down, n_ffn_down) {
                        ty = TensorType::Q6_K;
                    }
                }
                to = Some(fit(ty, cols));
            }
            let (to, fallback) = to.unwrap_or((t.ty, false));
            Choice { name: t.name.clone(), dims: t.dims.clone(), from: t.ty, to, fallback }
        })
        .collect()
}

/// What a quantization did.
#[derive(Debug, Clone)]
pub struct Report {
    pub choices: Vec<Choice>,
    pub in_bytes: usize,
    pub out_bytes: usize,
}

impl Report {
    pub fn requantized(&self) -> usize {
        self.choices.iter().filter(|c| c.requantized()).count()
    }

    pub fn fallbacks(&self) -> usize {
        self.choices.iter().filter(|c| c.fallback).count()
    }

    /// Tensor count per output type, e.g. `Q8_0 ×1, Q5_0 ×120, F32 ×61`.
    pub fn type_counts(&self) -> String {
        let mut counts: Vec<(&'static str, usize)> = Vec::new();
        for c in &self.choices {
            match counts.iter_mut().find(|(n, _)| *n == c.to.name()) {
                Some((_, k)) => *k += 1,
                None => counts.push((c.to.name(), 1)),
            }
        }
        counts.iter().map(|(n, k)| format!("{n} ×{k}")).collect::<Vec<_>>().join(", ")
    }
}

fn candle(ctx: &str, e: candle_core::Error) -> ModelError {
    ModelError::candle(ctx.to_string(), e)
}

/// Decodes a tensor of `file` to f32, whatever its type.
pub fn dequantize(file: &GgufFile, info: &TensorInfo) -> Result<Tensor, ModelError> {
    let dtype = info.ty.ggml_dtype().ok_or_else(|| file.error(format!("tensor {}: unsupported type {}", info.name, info.ty)))?;
    qtensor_from_ggml(dtype, file.tensor_bytes(info), info.dims.clone(), &Device::Cpu)
        .and_then(|q| q.dequantize(&Device::Cpu))
        .map_err(|e| candle(&format!("decoding {}", info.name), e))
}

fn encode_part(values: &[f32], cols: usize, dtype: GgmlDType) -> Result<Vec<u8>, ModelError> {
    Ok(match dtype {
        // candle 0.11 sizes an F16 `QTensor::quantize` buffer as if each value took one byte, and
        // panics; plain float types need no quantizer anyway.
        GgmlDType::F16 => values.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
        GgmlDType::F32 => values.iter().flat_map(|x| x.to_le_bytes()).collect(),
        _ => {
            // A tensor of its own: candle's quantize reads the storage from its start, ignoring
            // the offset of a narrowed view.
            let t = Tensor::from_slice(values, (values.len() / cols, cols), &Device::Cpu).map_err(|e| candle("encoding", e))?;
            QTensor::quantize(&t, dtype).and_then(|q| q.data().map(|d| d.into_owned())).map_err(|e| candle("encoding", e))?
        }
    })
}

/// Encodes rows of `cols` f32 values as `dtype` with candle's reference quantizers, rows split
/// over `threads` threads (blocks never cross a row, so the bytes are those of one call).
pub fn encode(values: &[f32], cols: usize, dtype: GgmlDType, threads: usize) -> Result<Vec<u8>, ModelError> {
    let rows = values.len() / cols;
    let per = rows.div_ceil(threads.max(1)).max(1);
    let parts: Vec<Result<Vec<u8>, ModelError>> = std::thread::scope(|s| {
        let handles: Vec<_> = values
            .chunks(per * cols)
            .map(|part| s.spawn(move || encode_part(part, cols, dtype)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(ModelError::Input("a quantizing thread panicked".into())))).collect()
    });
    let mut out = Vec::new();
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

/// Writes `file` re-encoded under `target` to `out`. `progress` sees (done, total, tensor name).
pub fn quantize(
    file: &GgufFile,
    out: &Path,
    target: Target,
    threads: usize,
    progress: impl FnMut(usize, usize, &str),
) -> Result<Report, ModelError> {
    let choices = plan(&file.tensors, target);
    let out_bytes = write(out, &file.metadata, target, &choices, progress, |i, c| {
        let info = &file.tensors[i];
        if c.to == c.from {
            return Ok(file.tensor_bytes(info).to_vec());
        }
        let values = dequantize(file, info)?.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(|e| candle("decoding", e))?;
        encode(&values, *c.dims.last().expect("tensors have dimensions"), c.to.ggml_dtype().expect("planned types are supported"), threads)
    })?;
    let in_bytes = file.tensors.iter().map(|t| t.size).sum();
    Ok(Report { choices, in_bytes, out_bytes })
}

/// Writes a GGUF file of `metadata` (stamped with `target`'s file type) and the planned tensors,
/// whose bytes `data` gives one at a time in plan order; returns the bytes of tensor data written.
pub fn write(
    out: &Path,
    metadata: &std::collections::BTreeMap<String, Value>,
    target: Target,
    choices: &[Choice],
    mut progress: impl FnMut(usize, usize, &str),
    mut data: impl FnMut(usize, &Choice) -> Result<Vec<u8>, ModelError>,
) -> Result<usize, ModelError> {
    let planned: Vec<PlannedTensor> =
        choices.iter().map(|c| PlannedTensor { name: c.name.clone(), dims: c.dims.clone(), ty: c.to }).collect();
    let mut metadata = metadata.clone();
    metadata.insert("general.file_type".into(), Value::U32(target.file_type()));
    metadata.insert("general.quantization_version".into(), Value::U32(2));
    let io = |e: std::io::Error| ModelError::Input(format!("writing {}: {e}", out.display()));
    let mut w = GgufWriter::create(out, &metadata, &planned).map_err(io)?;
    let mut out_bytes = 0;
    for (i, c) in choices.iter().enumerate() {
        progress(i, choices.len(), &c.name);
        let bytes = data(i, c)?;
        out_bytes += bytes.len();
        w.tensor(&bytes).map_err(io)?;
    }
    progress(choices.len(), choices.len(), "");
    w.finish().map_err(io)?;
    Ok(out_bytes)
}
