//! hearth's own CUDA kernels for a step (`decode.cu`, compiled by NVRTC on first use): rotary
//! embedding with the bias add and the KV-cache store, causal attention read from the cache, the
//! gated activation, and the residual add with the RMS norm after it. On a GPU a small model's
//! step is bound by launches, not bytes: these replace about twenty candle operations per layer
//! (head reshapes, copies, bias adds, RoPE, cache writes, two batched matmuls, scaling, softmax,
//! activation, add, norm) with four launches, whatever the number of sequences. Without the
//! `cuda` feature, or with `HEARTH_CUDA_KERNELS=0`, [`available`] is false and the decoder keeps
//! candle's operations.

use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{Device, Module, Result, Tensor};

use crate::model::arch::Activation;

/// What [`rope_store`] needs besides its tensors.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub n_head: usize,
    pub n_kv: usize,
    pub hd: usize,
    pub rope_dim: usize,
    pub neox: bool,
}

/// The most keys one query row may see for [`attend`]: its scores live in shared memory.
pub const MAX_KEYS: usize = 10_000;

/// Whether the kernels serve tensors on `device`.
pub fn available(device: &Device) -> bool {
    #[cfg(feature = "cuda")]
    if device.is_cuda() {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        return *ON.get_or_init(|| std::env::var("HEARTH_CUDA_KERNELS").map_or(true, |v| v != "0"));
    }
    let _ = device;
    false
}

/// A step's rows and caches as the kernels read them: an `i64` table uploaded once per step
/// (see `decode.cu`): each row's sequence and position, and for every layer and sequence the
/// addresses and capacity of its key and value caches.
pub struct Step {
    pub table: Tensor,
    /// Rows (tokens) in the step, all sequences together.
    pub rows: usize,
    pub seqs: usize,
    /// The most keys any row sees.
    pub max_keys: usize,
}

/// Rows per quantized matmul on CUDA. candle's mat-vec kernel (llama.cpp's mmvq) sums every
/// row in the same order for 1 to 4 rows (4 warps); from 5 rows it uses 2 warps, and past 8 a
/// tiled kernel takes over, each summing in another order. Running every matmul in groups of at
/// most 4 rows makes a token's logits independent of what else is in the step: the same request
/// gives the same tokens alone, batched with others, or after a cached prefix. Prompts pay dearly
/// for it (each group reads all the weights again: pp512 on a 1B model fell from about 27,000 to
/// 3,700 tok/s on an H200), so it is off unless `HEARTH_CUDA_INVARIANT=1`.
pub const GROUP: usize = 4;

/// Whether a quantized weight of type `ty` multiplies `x` in groups of [`GROUP`] rows.
pub fn in_groups(ty: GgmlDType, x: &Tensor) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let mmvq = matches!(
        ty,
        GgmlDType::Q4_0
            | GgmlDType::Q4_1
            | GgmlDType::Q5_0
            | GgmlDType::Q5_1
            | GgmlDType::Q8_0
            | GgmlDType::Q2K
            | GgmlDType::Q3K
            | GgmlDType::Q4K
            | GgmlDType::Q5K
            | GgmlDType::Q6K
    );
    mmvq && x.rank() == 2
        && x.dim(0).is_ok_and(|m| m > GROUP)
        && available(x.device())
        && *ON.get_or_init(|| std::env::var("HEARTH_CUDA_INVARIANT").is_ok_and(|v| v == "1"))
}

/// `w` times each group of [`GROUP`] rows of `x` (`[m, k]`), the results stacked.
pub fn by_groups(w: &QMatMul, x: &Tensor) -> Result<Tensor> {
    let m = x.dim(0)?;
    let parts = (0..m).step_by(GROUP).map(|i| w.forward(&x.narrow(0, i, GROUP.min(m - i))?)).collect::<Result<Vec<_>>>()?;
    Tensor::cat(&parts, 0)
}

/// Projections `q`, `k`, `v` of every row of `step` (`[rows, ..]`, views of one fused output
/// allowed) plus optional biases, with RoPE tables `cos`, `sin` (`[rows, rope_dim / 2]`, one
/// row per row of the step): the keys (rotated) and values go into each row's sequence's caches
/// of layer `layer` at the row's position, and the rotated query heads are returned as
/// `[n_head, rows, hd]`.
#[allow(clippy::too_many_arguments)]
pub fn rope_store(qkv: [&Tensor; 3], bias: [Option<&Tensor>; 3], cos: &Tensor, sin: &Tensor, step: &Step, layer: usize, h: Heads) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    return imp::rope_store(qkv, bias, cos, sin, step, layer, h);
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (qkv, bias, cos, sin, step, layer, h);
        candle_core::bail!("hearth was built without CUDA")
    }
}

/// Query heads `q` (`[n_head, rows, hd]`) against the keys and values layer `layer`'s caches hold
/// up to each row's position (causal; within `window` when set) → `[rows, n_head * hd]`.
pub fn attend(q: &Tensor, step: &Step, layer: usize, h: Heads, divisor: f32, window: Option<usize>) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    return imp::attend(q, step, layer, h, divisor, window);
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (q, step, layer, h, divisor, window);
        candle_core::bail!("hearth was built without CUDA")
    }
}

/// The device address of a CUDA f32 tensor's first element (for a [`Step`] table).
pub fn address(t: &Tensor) -> Result<u64> {
    #[cfg(feature = "cuda")]
    return imp::addr(t).map(|(a, _)| a);
    #[cfg(not(feature = "cuda"))]
    {
        let _ = t;
        candle_core::bail!("hearth was built without CUDA")
    }
}

/// The residual add and the RMS norm after it in one pass: `x + a` and its norm times `w`, for
/// `[n, d]` tensors (contiguous).
pub fn add_rms_norm(x: &Tensor, a: &Tensor, w: &Tensor, eps: f32) -> Result<(Tensor, Tensor)> {
    #[cfg(feature = "cuda")]
    return imp::add_rms_norm(x, a, w, eps);
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (x, a, w, eps);
        candle_core::bail!("hearth was built without CUDA")
    }
}

/// `act(gate) * up`, elementwise over `[n, ff]` (views of one fused gate|up output allowed).
pub fn gated(act: Activation, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    return imp::gated(act, gate, up);
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (act, gate, up);
        candle_core::bail!("hearth was built without CUDA")
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use std::sync::OnceLock;

    use candle_core::cuda::cudarc::driver::{DevicePtr, LaunchConfig, PushKernelArg};
    use candle_core::cuda::cudarc::nvrtc;
    use candle_core::op::BackpropOp;
    use candle_core::{CudaDevice, CudaStorage, DType, Result, Shape, Storage, Tensor};

    use super::{Activation, Heads, Step, MAX_KEYS};

    const MODULE: &str = "hearth_decode";
    const SOURCE: &str = include_str!("decode.cu");

    fn ptx() -> Result<&'static str> {
        static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
        PTX.get_or_init(|| nvrtc::compile_ptx(SOURCE).map(|p| p.to_src()).map_err(|e| format!("{e:?}")))
            .as_deref()
            .map_err(|e| candle_core::Error::Msg(format!("compiling hearth's CUDA kernels: {e}")))
    }

    /// A tensor's first element as a device address, and its row stride (elements), for a
    /// 2-D-or-more f32 CUDA tensor whose last dimension is contiguous.
    pub fn addr(t: &Tensor) -> Result<(u64, usize)> {
        if t.dtype() != DType::F32 {
            candle_core::bail!("hearth CUDA kernels take f32, got {:?}", t.dtype());
        }
        let (storage, layout) = t.storage_and_layout();
        let Storage::Cuda(c) = &*storage else { candle_core::bail!("hearth CUDA kernels: tensor is not on a CUDA device") };
        let strides = layout.stride();
        if strides.last() != Some(&1) && t.dims().last() != Some(&1) {
            candle_core::bail!("hearth CUDA kernels: last dimension must be contiguous");
        }
        let row = if strides.len() >= 2 { strides[strides.len() - 2] } else { t.elem_count() };
        let stream = c.device.cuda_stream();
        let (base, _sync) = c.as_cuda_slice::<f32>()?.device_ptr(&stream);
        Ok((base + (layout.start_offset() * 4) as u64, row))
    }

    fn empty(dev: &CudaDevice, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        // SAFETY: every element is written by the kernel the caller launches next.
        let slice = unsafe { dev.alloc::<f32>(shape.elem_count()) }?;
        let storage = CudaStorage::wrap_cuda_slice(slice, dev.clone());
        Ok(Tensor::from_storage(Storage::Cuda(storage), shape, BackpropOp::none(), false))
    }

    fn launch(dev: &CudaDevice, name: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        let func = dev.get_or_load_custom_func(name, MODULE, ptx()?)?;
        let mut b = func.builder();
        for a in args {
            match a {
                Arg::P(p) => b.arg(p),
                Arg::I(i) => b.arg(i),
                Arg::F(f) => b.arg(f),
            };
        }
        // SAFETY: the argument list matches the kernel's signature in decode.cu, and every
        // address points into a live tensor of the size the kernel indexes.
        unsafe { b.launch(cfg) }.map_err(|e| candle_core::Error::Msg(format!("launching {name}: {e:?}")))?;
        Ok(())
    }

    enum Arg {
        P(u64),
        I(i32),
        F(f32),
    }

    fn int(x: usize) -> Arg {
        Arg::I(x as i32)
    }

    fn opt(t: Option<&Tensor>) -> Result<Arg> {
        Ok(Arg::P(match t {
            Some(t) => addr(t)?.0,
            None => 0,
        }))
    }

    pub fn rope_store(qkv: [&Tensor; 3], bias: [Option<&Tensor>; 3], cos: &Tensor, sin: &Tensor, step: &Step, layer: usize, h: Heads) -> Result<Tensor> {
        let dev = qkv[0].device().as_cuda_device()?;
        let m = step.rows;
        if qkv.iter().any(|t| t.dim(0).ok() != Some(m)) || cos.dims2()? != (m, h.rope_dim / 2) || h.rope_dim > h.hd || h.rope_dim % 2 != 0 {
            candle_core::bail!("rope_store: projections {:?}, tables {:?} for {m} rows, rope_dim {} of {}", qkv[0].shape(), cos.shape(), h.rope_dim, h.hd);
        }
        if !cos.is_contiguous() || !sin.is_contiguous() {
            candle_core::bail!("rope_store: the RoPE tables must be contiguous");
        }
        let ((q, qs), (k, ks), (v, vs)) = (addr(qkv[0])?, addr(qkv[1])?, addr(qkv[2])?);
        let out = empty(dev, (h.n_head, m, h.hd))?;
        let args = [
            Arg::P(q),
            Arg::P(k),
            Arg::P(v),
            int(qs),
            int(ks),
            int(vs),
            opt(bias[0])?,
            opt(bias[1])?,
            opt(bias[2])?,
            Arg::P(addr(cos)?.0),
            Arg::P(addr(sin)?.0),
            Arg::P(addr(&out)?.0),
            Arg::P(table(step)?),
            int(layer),
            int(m),
            int(step.seqs),
            int(h.n_head),
            int(h.n_kv),
            int(h.hd),
            int(h.rope_dim),
            Arg::I(h.neox as i32),
        ];
        let cfg = LaunchConfig {
            grid_dim: ((h.n_head + 2 * h.n_kv) as u32, m as u32, 1),
            block_dim: (h.hd.clamp(32, 256) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        launch(dev, "rope_store", cfg, &args)?;
        Ok(out)
    }

    pub fn attend(q: &Tensor, step: &Step, layer: usize, h: Heads, divisor: f32, window: Option<usize>) -> Result<Tensor> {
        let dev = q.device().as_cuda_device()?;
        let m = step.rows;
        if q.dims3()? != (h.n_head, m, h.hd) || step.max_keys > MAX_KEYS || h.n_head % h.n_kv != 0 || !q.is_contiguous() {
            candle_core::bail!("attend: query {:?} for {m} rows, {} keys (at most {MAX_KEYS})", q.shape(), step.max_keys);
        }
        let out = empty(dev, (m, h.n_head * h.hd))?;
        let args = [
            Arg::P(addr(q)?.0),
            Arg::P(table(step)?),
            int(layer),
            Arg::P(addr(&out)?.0),
            int(m),
            int(step.seqs),
            int(h.n_head),
            int(h.n_kv),
            int(h.hd),
            Arg::F(divisor),
            int(window.unwrap_or(0)),
        ];
        const THREADS: usize = 256;
        let cfg = LaunchConfig {
            grid_dim: (h.n_head as u32, m as u32, 1),
            block_dim: (THREADS as u32, 1, 1),
            shared_mem_bytes: ((step.max_keys + h.hd + THREADS) * 4) as u32,
        };
        launch(dev, "attend", cfg, &args)?;
        Ok(out)
    }

    /// The address of a step's `i64` table.
    fn table(step: &Step) -> Result<u64> {
        let t = &step.table;
        let (storage, layout) = t.storage_and_layout();
        let Storage::Cuda(c) = &*storage else { candle_core::bail!("step table is not on a CUDA device") };
        if t.dtype() != DType::I64 || !layout.is_contiguous() {
            candle_core::bail!("step table must be contiguous i64");
        }
        let stream = c.device.cuda_stream();
        let (base, _sync) = c.as_cuda_slice::<i64>()?.device_ptr(&stream);
        Ok(base + (layout.start_offset() * 8) as u64)
    }

    pub fn add_rms_norm(x: &Tensor, a: &Tensor, w: &Tensor, eps: f32) -> Result<(Tensor, Tensor)> {
        let dev = x.device().as_cuda_device()?;
        let (n, d) = x.dims2()?;
        if a.dims2()? != (n, d) || w.dims1()? != d || !x.is_contiguous() || !a.is_contiguous() || !w.is_contiguous() {
            candle_core::bail!("add_rms_norm: {:?} + {:?}, weight {:?} (contiguous, one shape)", x.shape(), a.shape(), w.shape());
        }
        let (sum, normed) = (empty(dev, (n, d))?, empty(dev, (n, d))?);
        let args = [
            Arg::P(addr(x)?.0),
            Arg::P(addr(a)?.0),
            Arg::P(addr(w)?.0),
            Arg::P(addr(&sum)?.0),
            Arg::P(addr(&normed)?.0),
            int(d),
            Arg::F(eps),
        ];
        // 256 threads: the block reduction in decode.cu assumes ATTN_THREADS.
        let cfg = LaunchConfig { grid_dim: (n as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        launch(dev, "add_rms_norm", cfg, &args)?;
        Ok((sum, normed))
    }

    pub fn gated(act: Activation, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        let dev = gate.device().as_cuda_device()?;
        let (n, ff) = gate.dims2()?;
        if up.dims2()? != (n, ff) {
            candle_core::bail!("gated: gate {:?} and up {:?} differ", gate.shape(), up.shape());
        }
        let ((g, gs), (u, us)) = (addr(gate)?, addr(up)?);
        let out = empty(dev, (n, ff))?;
        let act = match act {
            Activation::Silu => 0,
            Activation::GeluTanh => 1,
        };
        let args = [Arg::P(g), Arg::P(u), int(gs), int(us), Arg::P(addr(&out)?.0), int(n), int(ff), Arg::I(act)];
        let total = (n * ff) as u32;
        let cfg = LaunchConfig { grid_dim: (total.div_ceil(256), 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        launch(dev, "gated", cfg, &args)?;
        Ok(out)
    }
}
