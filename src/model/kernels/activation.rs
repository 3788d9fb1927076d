//! The gated feed-forward's activation, `act(gate) * up`, in one vectorized pass: candle's SiLU
//! and tanh-GELU call libm's `exp` / `tanh` value by value, which was a sixth of Gemma 3's prompt
//! time. Here `exp` is a polynomial the compiler vectorizes, and big inputs are shared over the
//! worker pool.

use candle_core::{Device, Result, Storage, Tensor};

use super::attention::fma;
use super::OutPtr;
use crate::model::arch::Activation;

/// Values below which the work stays on the calling thread.
const INLINE: usize = 1 << 15;

/// `e^x` within a few ulp of `f32::exp`, for x in −87…88 (clamped there: 0 below, about 1.6e38
/// above): 2^n times a degree-6 polynomial on the remainder r = x − n ln 2, |r| ≤ ln 2 / 2.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let v = x.clamp(-87.0, 88.0);
    let n = (v * std::f32::consts::LOG2_E).round_ties_even();
    let r = fma(n, -0.693_145_75, v);
    let r = fma(n, -1.428_606_8e-6, r);
    let mut p = 1.0 / 720.0;
    p = fma(p, r, 1.0 / 120.0);
    p = fma(p, r, 1.0 / 24.0);
    p = fma(p, r, 1.0 / 6.0);
    p = fma(p, r, 0.5);
    p = fma(p, r, 1.0);
    p = fma(p, r, 1.0);
    let e = p * f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        e
    }
}

/// `x / (1 + e^−x)`.
#[inline(always)]
fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// GELU's tanh form, as candle and llama.cpp compute it: ½x(1 + tanh(√(2/π)(x + 0.044715x³))),
/// with tanh(y) = 1 − 2 / (e^2y + 1).
#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let y = SQRT_2_OVER_PI * x * (1.0 + 0.044715 * x * x);
    0.5 * x * (2.0 - 2.0 / (exp(2.0 * y) + 1.0))
}

fn apply(act: Activation, gate: &[f32], up: &[f32], out: &mut [f32]) {
    match act {
        Activation::Silu => out.iter_mut().zip(gate.iter().zip(up)).for_each(|(o, (&g, &u))| *o = silu(g) * u),
        Activation::GeluTanh => out.iter_mut().zip(gate.iter().zip(up)).for_each(|(o, (&g, &u))| *o = gelu_tanh(g) * u),
    }
}

/// `act(gate) * up` for two CPU f32 tensors of one shape; other devices and types go to candle.
pub fn gated(act: Activation, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let cpu = matches!(gate.device(), Device::Cpu) && gate.dtype() == candle_core::DType::F32 && up.dtype() == gate.dtype();
    if super::cuda::available(gate.device()) && gate.rank() == 2 && gate.shape() == up.shape() {
        return super::cuda::gated(act, gate, up);
    }
    if !cpu || gate.shape() != up.shape() {
        let g = match act {
            Activation::Silu => candle_nn::ops::silu(gate)?,
            Activation::GeluTanh => gate.gelu()?,
        };
        return g * up;
    }
    let (gate, up) = (gate.contiguous()?, up.contiguous()?);
    let n = gate.elem_count();
    let (gs, gl) = gate.storage_and_layout();
    let (us, ul) = up.storage_and_layout();
    let (Storage::Cpu(g), Storage::Cpu(u)) = (&*gs, &*us) else { candle_core::bail!("activation: input is not on the CPU") };
    let g = &g.as_slice::<f32>()?[gl.start_offset()..gl.start_offset() + n];
    let u = &u.as_slice::<f32>()?[ul.start_offset()..ul.start_offset() + n];
    let mut out = vec![0f32; n];
    if n < INLINE {
        apply(act, g, u, &mut out);
    } else {
        let dst = OutPtr(out.as_mut_ptr());
        const CHUNK: usize = 4096;
        candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(CHUNK), |chunks| {
            let r = chunks.start * CHUNK..(chunks.end * CHUNK).min(n);
            // SAFETY: values `r` of `out` are written by this call alone; `out` outlives the call.
            let o = unsafe { std::slice::from_raw_parts_mut(dst.get().add(r.start), r.len()) };
            apply(act, &g[r.clone()], &u[r], o);
        });
    }
    Tensor::from_vec(out, gate.shape(), &Device::Cpu)
}
