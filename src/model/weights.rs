//! Loading a model's tensors out of a validated GGUF file into quantized weights on a device,
//! checking every shape against the [`ModelSpec`] so a mismatched file fails at load, not mid-forward.

use std::sync::Arc;

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, GgmlType, QMatMul, QStorage, QTensor};
use candle_core::{Device, Tensor};

use super::arch::ModelSpec;
use super::kernels::packed::Packed;
use super::gguf::{GgufFile, TensorInfo};
use super::ModelError;

/// A weight matrix as the model multiplies by it: in panels where this CPU has the panel
/// kernels for its type (see `kernels::packed`), else candle's `QMatMul`, which hearth's AVX2
/// kernels and f32 prompt path serve where they apply (`kernels::forward`).
pub enum Matrix {
    Panels(Arc<Packed>),
    Candle(QMatMul),
}

impl Matrix {
    /// `x` `[.., k]` times the transpose of this `[n, k]` → `[.., n]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Matrix::Panels(p) if x.rank() == 2 => p.matmul(x),
            Matrix::Panels(p) => {
                let (mut dims, k) = (x.dims().to_vec(), p.dims().1);
                let y = p.matmul(&x.reshape((x.elem_count() / k.max(1), k))?)?;
                *dims.last_mut().expect("rank > 2") = p.dims().0;
                y.reshape(dims)
            }
            Matrix::Candle(w) => super::kernels::forward(w, x),
        }
    }
}

/// The token embedding: rows looked up and dequantized, from panels where it is also the
/// (tied) output matrix and went to panels, else from candle's blocks.
pub enum Embedding {
    Panels(Arc<Packed>),
    Candle(Arc<QTensor>),
}

impl Embedding {
    pub fn lookup(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Embedding::Panels(p) => p.rows(ids),
            Embedding::Candle(t) => t.embedding(ids),
        }
    }
}

/// A matrix multiply by a (usually quantized) weight, plus an optional bias.
pub struct Linear {
    w: Matrix,
    b: Option<Tensor>,
}

impl Linear {
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.add_bias(self.w.forward(x)?)
    }

    /// Each of `ls` applied to the same `x` `[m, k]`; those in panels in one pass (activations
    /// quantized once, one call to the worker pool), the others one by one.
    pub fn forward_many<const N: usize>(ls: [&Linear; N], x: &Tensor) -> candle_core::Result<[Tensor; N]> {
        let panels: Vec<&Packed> = ls
            .iter()
            .filter_map(|l| match &l.w {
                Matrix::Panels(p) => Some(&**p),
                Matrix::Candle(_) => None,
            })
            .collect();
        let mut fused = if x.rank() == 2 && !panels.is_empty() { Packed::matmul_many(&panels, x)? } else { Vec::new() }.into_iter();
        let mut ys = Vec::with_capacity(N);
        for l in ls {
            let y = match (&l.w, x.rank()) {
                (Matrix::Panels(_), 2) => fused.next().expect("one result per panel weight"),
                _ => l.w.forward(x)?,
            };
            ys.push(l.add_bias(y)?);
        }
        Ok(ys.try_into().unwrap_or_else(|_| unreachable!("one result per weight")))
    }

    fn add_bias(&self, y: Tensor) -> candle_core::Result<Tensor> {
        match &self.b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    /// The product without the bias (for kernels that add the bias themselves).
    pub fn matmul(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.w.forward(x)
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.b.as_ref()
    }
}

pub enum Attn {
    Separate { q: Linear, k: Linear, v: Linear },
    Fused(Linear),
}

pub enum Ffn {
    Gated { gate: Linear, up: Linear },
    /// Gate and up stacked in one matrix, gate first (Phi-3).
    FusedGateUp(Linear),
}

pub struct Layer {
    pub attn_norm: Tensor,
    pub attn: Attn,
    pub q_norm: Option<Tensor>,
    pub k_norm: Option<Tensor>,
    pub attn_out: Linear,
    pub post_attn_norm: Option<Tensor>,
    pub ffn_norm: Tensor,
    pub ffn: Ffn,
    pub ffn_down: Linear,
    pub post_ffn_norm: Option<Tensor>,
}

pub struct Weights {
    /// Token embedding, kept quantized: only looked-up rows are dequantized.
    pub embed: Embedding,
    pub layers: Vec<Layer>,
    pub output_norm: Tensor,
    pub output: Matrix,
}

/// Every tensor's scales (or float values) checked to be finite, once, before any is loaded: a
/// few MiB at a time, released after, so a large tensor is not held resident twice (loading
/// reads it again from the page cache).
fn check_finite(file: &GgufFile) -> Result<(), ModelError> {
    for info in &file.tensors {
        let block = info.ty.info().map_or(1, |t| t.bytes);
        let step = (8 << 20) / block * block;
        for (i, chunk) in file.tensor_bytes(info).chunks(step).enumerate() {
            let bad = super::finite::first_non_finite(info.ty, chunk);
            file.release(info.offset + i * step, chunk.len());
            if let Some(at) = bad {
                let at = (i * step) / block + at;
                let problem = if info.ty.is_quantized() { format!("block {at} has a NaN or infinite scale") } else { format!("value {at} is NaN or infinite") };
                return Err(file.error(format!("tensor {}: {problem}", info.name)).into());
            }
        }
    }
    Ok(())
}

struct Loader<'a> {
    file: &'a GgufFile,
    device: &'a Device,
}

impl Loader<'_> {
    fn info(&self, name: &str) -> Result<&TensorInfo, ModelError> {
        self.file.tensor(name).ok_or_else(|| self.file.error(format!("tensor {name} is missing")).into())
    }

    fn qtensor(&self, name: &str, dims: &[usize]) -> Result<QTensor, ModelError> {
        let info = self.info(name)?;
        if info.dims != dims {
            return Err(self.file.error(format!("tensor {name} has shape {:?}, expected {dims:?}", info.dims)).into());
        }
        let dtype = info.ty.ggml_dtype().expect("types were checked at open");
        let t = if self.device.is_cpu() { cpu_blocks(self.file, info, dtype) } else { None };
        let t = match t {
            Some(t) => t,
            None => {
                let t = qtensor_from_ggml(dtype, self.file.tensor_bytes(info), info.dims.clone(), self.device);
                self.file.release(info.offset, info.size);
                t
            }
        };
        t.map_err(|e| ModelError::candle(format!("loading {name}"), e))
    }

    fn vector(&self, name: &str, len: usize) -> Result<Tensor, ModelError> {
        let q = self.qtensor(name, &[len])?;
        q.dequantize(self.device).map_err(|e| ModelError::candle(format!("loading {name}"), e))
    }

    fn opt_vector(&self, name: &str, len: usize) -> Result<Option<Tensor>, ModelError> {
        match self.file.tensor(name) {
            Some(_) => self.vector(name, len).map(Some),
            None => Ok(None),
        }
    }

    /// Weight `name` `[n, k]` in panels, read straight from the file, where the CPU has the panel
    /// kernels for its type; `None` otherwise.
    fn panels(&self, name: &str, n: usize, k: usize) -> Result<Option<Packed>, ModelError> {
        let info = self.info(name)?;
        if info.dims != [n, k] {
            return Err(self.file.error(format!("tensor {name} has shape {:?}, expected {:?}", info.dims, [n, k])).into());
        }
        let dtype = info.ty.ggml_dtype().expect("types were checked at open");
        if !self.device.is_cpu() || !super::kernels::packed::available() {
            return Ok(None);
        }
        let mut released = 0;
        let packed = Packed::new(dtype, n, k, self.file.tensor_bytes(info), |done| {
            if done - released >= 8 << 20 || done == info.size {
                self.file.release(info.offset + released, done - released);
                released = done;
            }
        });
        Ok(packed)
    }

    fn matrix(&self, name: &str, n: usize, k: usize) -> Result<Matrix, ModelError> {
        if let Some(p) = self.panels(name, n, k)? {
            return Ok(Matrix::Panels(Arc::new(p)));
        }
        let w = QMatMul::from_qtensor(self.qtensor(name, &[n, k])?).map_err(|e| ModelError::candle(format!("loading {name}"), e))?;
        Ok(Matrix::Candle(w))
    }

    fn linear(&self, name: &str, out: usize, inp: usize) -> Result<Linear, ModelError> {
        let w = self.matrix(&format!("{name}.weight"), out, inp)?;
        let b = self.opt_vector(&format!("{name}.bias"), out)?;
        Ok(Linear { w, b })
    }

    /// On a CUDA device, weights that multiply the same input (a layer's q, k and v; gate and
    /// up) stacked row-wise into one matrix, biases likewise, when they share a type and all or
    /// none have a bias: one matmul launch instead of several, the step's bottleneck on a GPU.
    /// `None` where they cannot be stacked (the caller loads them one by one).
    fn stacked(&self, names: &[&str], outs: &[usize], k: usize) -> Result<Option<Linear>, ModelError> {
        if !self.device.is_cuda() {
            return Ok(None);
        }
        let infos = names.iter().map(|n| self.info(&format!("{n}.weight"))).collect::<Result<Vec<_>, _>>()?;
        for ((name, info), &n) in names.iter().zip(&infos).zip(outs) {
            if info.dims != [n, k] {
                return Err(self.file.error(format!("tensor {name}.weight has shape {:?}, expected {:?}", info.dims, [n, k])).into());
            }
        }
        let biased: Vec<bool> = names.iter().map(|n| self.file.tensor(&format!("{n}.bias")).is_some()).collect();
        if infos.iter().any(|i| i.ty != infos[0].ty) || biased.iter().any(|&b| b != biased[0]) {
            return Ok(None);
        }
        let dtype = infos[0].ty.ggml_dtype().expect("types were checked at open");
        let mut bytes = Vec::with_capacity(infos.iter().map(|i| i.size).sum());
        for info in &infos {
            bytes.extend_from_slice(self.file.tensor_bytes(info));
            self.file.release(info.offset, info.size);
        }
        let rows = outs.iter().sum::<usize>();
        let w = qtensor_from_ggml(dtype, &bytes, vec![rows, k], self.device)
            .and_then(QMatMul::from_qtensor)
            .map_err(|e| ModelError::candle(format!("loading {} stacked", names.join(", ")), e))?;
        let b = if biased[0] {
            let parts = names.iter().zip(outs).map(|(n, &len)| self.vector(&format!("{n}.bias"), len)).collect::<Result<Vec<_>, _>>()?;
            Some(Tensor::cat(&parts, 0).map_err(|e| ModelError::candle("stacking biases", e))?)
        } else {
            None
        };
        Ok(Some(Linear { w: Matrix::Candle(w), b }))
    }
}

/// Copies a quantized tensor into block storage a few MiB at a time, letting the kernel drop each
/// copied range of the mapped file, so loading never holds a large tensor twice. `None` for
/// types that are not block-quantized (small norm vectors take the plain path).
fn cpu_blocks(file: &GgufFile, info: &TensorInfo, dtype: GgmlDType) -> Option<candle_core::Result<QTensor>> {
    use candle_core::quantized::k_quants::*;
    Some(match dtype {
        GgmlDType::Q4_0 => chunked::<BlockQ4_0>(file, info),
        GgmlDType::Q4_1 => chunked::<BlockQ4_1>(file, info),
        GgmlDType::Q5_0 => chunked::<BlockQ5_0>(file, info),
        GgmlDType::Q5_1 => chunked::<BlockQ5_1>(file, info),
        GgmlDType::Q8_0 => chunked::<BlockQ8_0>(file, info),
        GgmlDType::Q2K => chunked::<BlockQ2K>(file, info),
        GgmlDType::Q3K => chunked::<BlockQ3K>(file, info),
        GgmlDType::Q4K => chunked::<BlockQ4K>(file, info),
        GgmlDType::Q5K => chunked::<BlockQ5K>(file, info),
        GgmlDType::Q6K => chunked::<BlockQ6K>(file, info),
        _ => return None,
    })
}

fn chunked<T: GgmlType + Send + Sync + 'static>(file: &GgufFile, info: &TensorInfo) -> candle_core::Result<QTensor> {
    let size = std::mem::size_of::<T>();
    let n = info.size / size;
    debug_assert_eq!(n * size, info.size, "sizes were checked at open");
    let src = file.tensor_bytes(info);
    let mut blocks: Vec<T> = Vec::with_capacity(n);
    let step = ((8 << 20) / size).max(1) * size;
    let mut off = 0;
    while off < info.size {
        let len = step.min(info.size - off);
        // SAFETY: `blocks` has capacity for `info.size` bytes; block types are plain old data
        // (integers and f16) for which every bit pattern is valid, and the copy is bytewise so
        // the source needs no alignment.
        unsafe { std::ptr::copy_nonoverlapping(src[off..off + len].as_ptr(), (blocks.as_mut_ptr() as *mut u8).add(off), len) };
        file.release(info.offset + off, len);
        off += len;
    }
    // SAFETY: all `n` blocks were written above.
    unsafe { blocks.set_len(n) };
    QTensor::new(QStorage::Cpu(Box::new(blocks)), info.dims.as_slice())
}

impl Weights {
    pub fn load(file: &GgufFile, spec: &ModelSpec, device: &Device) -> Result<Self, ModelError> {
        check_finite(file)?;
        let l = Loader { file, device };
        let (d, hd) = (spec.d_model, spec.head_dim);
        let (q_dim, kv_dim) = (spec.n_head * hd, spec.n_kv_head * hd);
        let (embed, output) = match file.tensor("output.weight") {
            Some(_) => (
                Embedding::Candle(Arc::new(l.qtensor("token_embd.weight", &[spec.vocab_size, d])?)),
                l.matrix("output.weight", spec.vocab_size, d)?,
            ),
            // Tied: one copy serves the lookups and the output matrix.
            None => match l.panels("token_embd.weight", spec.vocab_size, d)? {
                Some(p) => {
                    let p = Arc::new(p);
                    (Embedding::Panels(p.clone()), Matrix::Panels(p))
                }
                None => {
                    let t = Arc::new(l.qtensor("token_embd.weight", &[spec.vocab_size, d])?);
                    let w = QMatMul::from_arc(t.clone()).map_err(|e| ModelError::candle("loading token_embd.weight", e))?;
                    (Embedding::Candle(t), Matrix::Candle(w))
                }
            },
        };
        let output_norm = l.vector("output_norm.weight", d)?;
        let arch = spec.arch;
        let mut layers = Vec::with_capacity(spec.n_layer);
        for i in 0..spec.n_layer {
            let p = format!("blk.{i}");
            let (q, k, v) = (format!("{p}.attn_q"), format!("{p}.attn_k"), format!("{p}.attn_v"));
            let attn = if arch.fused_qkv() {
                Attn::Fused(l.linear(&format!("{p}.attn_qkv"), q_dim + 2 * kv_dim, d)?)
            } else if let Some(qkv) = l.stacked(&[&q, &k, &v], &[q_dim, kv_dim, kv_dim], d)? {
                Attn::Fused(qkv)
            } else {
                Attn::Separate {
                    q: l.linear(&q, q_dim, d)?,
                    k: l.linear(&k, kv_dim, d)?,
                    v: l.linear(&v, kv_dim, d)?,
                }
            };
            let (gate, up) = (format!("{p}.ffn_gate"), format!("{p}.ffn_up"));
            let ffn = if arch.fused_gate_up() {
                Ffn::FusedGateUp(l.linear(&up, 2 * spec.ff_len, d)?)
            } else if let Some(gu) = l.stacked(&[&gate, &up], &[spec.ff_len, spec.ff_len], d)? {
                Ffn::FusedGateUp(gu)
            } else {
                Ffn::Gated {
                    gate: l.linear(&gate, spec.ff_len, d)?,
                    up: l.linear(&up, spec.ff_len, d)?,
                }
            };
            let gemma = arch.gemma_norms();
            let norm = |n: &str, len| if gemma { l.vector(&format!("{p}.{n}.weight"), len).map(Some) } else { Ok(None) };
            layers.push(Layer {
                attn_norm: l.vector(&format!("{p}.attn_norm.weight"), d)?,
                attn,
                q_norm: norm("attn_q_norm", hd)?,
                k_norm: norm("attn_k_norm", hd)?,
                attn_out: l.linear(&format!("{p}.attn_output"), d, q_dim)?,
                post_attn_norm: norm("post_attention_norm", d)?,
                ffn_norm: l.vector(&format!("{p}.ffn_norm.weight"), d)?,
                ffn,
                ffn_down: l.linear(&format!("{p}.ffn_down"), d, spec.ff_len)?,
                post_ffn_norm: norm("post_ffw_norm", d)?,
            });
        }
        Ok(Self { embed, layers, output_norm, output })
    }
}
