// hearth's own CUDA kernels for the steps around the quantized matmuls (compiled at run time by
// NVRTC, see mod.rs). Each replaces a run of candle operations with one launch: the decode step on
// a GPU is bound by launches, not by bytes, at the sizes people run.
//
// Layouts (all f32, row-major):
//   projections  q, k, v rows of a chunk, each with its own row stride (a fused qkv output is the
//                three at offsets 0, q_dim, q_dim + kv_dim of one [n, q_dim + 2 kv_dim] matrix)
//   rope tables  cos, sin: [n, rope_dim / 2], one row per position of the chunk
//   query heads  [n_head, n, hd]
//   KV cache     [n_kv, cap, hd] per layer; positions 0..pos valid before the chunk
//   attention    [n, n_head * hd], the layout the output projection reads

// Rotates (or copies) one head vector of hd values; rope_dim <= hd values are rotated, the rest
// copied. neox: pairs (i, i + rope_dim/2); else interleaved pairs (2i, 2i + 1). Same arithmetic as
// candle's rope / rope_i kernels and the CPU path.
__device__ __forceinline__ void rotate_head(const float* src, const float* bias, float* dst,
                                            const float* cos, const float* sin, int hd,
                                            int rope_dim, int neox, int rotate) {
  const int half = rope_dim / 2;
  for (int i = threadIdx.x; i < hd; i += blockDim.x) {
    float x = src[i] + (bias ? bias[i] : 0.0f);
    if (!rotate || i >= rope_dim) {
      dst[i] = x;
      continue;
    }
    int partner, p;
    float sign;
    if (neox) {
      p = i < half ? i : i - half;
      partner = i < half ? i + half : i - half;
      sign = i < half ? -1.0f : 1.0f;
    } else {
      p = i / 2;
      partner = (i & 1) ? i - 1 : i + 1;
      sign = (i & 1) ? 1.0f : -1.0f;
    }
    float y = src[partner] + (bias ? bias[partner] : 0.0f);
    float c = cos[p], s = sin[p];
    // first of a pair: x*c - y*s; second: y'*s + x'*c with (y', x') = (first, second)
    dst[i] = sign < 0.0f ? x * c - y * s : y * s + x * c;
  }
}

// A step's table (one upload per step, 64-bit entries), for m rows of B sequences:
//   [0, m)        the sequence of each row            [m, 2m)  the position of each row
//   [2m + (layer * B + b) * 3 + {0, 1, 2}]  sequence b's key cache address, value cache address
//                 and capacity in that layer (caches are [n_kv, capacity, hd])
#define ROW_SEQ(t, r) ((int)(t)[r])
#define ROW_POS(t, m, r) ((int)(t)[(m) + (r)])
#define SEQ_ENTRY(t, m, B, layer, b, i) ((t)[2 * (size_t)(m) + ((size_t)(layer) * (B) + (b)) * 3 + (i)])

// grid (n_head + 2 * n_kv, m), block 32..256: for row r of the step (sequence b at position p),
// rotates the query heads into q_out ([n_head, m, hd]), the key heads into b's key cache at p,
// and copies the value heads into b's value cache at p. Biases (or null) are added first.
extern "C" __global__ void rope_store(
    const float* q, const float* k, const float* v, int q_stride, int k_stride, int v_stride,
    const float* q_bias, const float* k_bias, const float* v_bias,
    const float* cos, const float* sin, float* q_out, const long long* step, int layer,
    int m, int n_seq, int n_head, int n_kv, int hd, int rope_dim, int neox) {
  const int h = blockIdx.x, r = blockIdx.y;
  const int b = ROW_SEQ(step, r), p = ROW_POS(step, m, r);
  const int cap = (int)SEQ_ENTRY(step, m, n_seq, layer, b, 2);
  const int half = rope_dim / 2;
  const float* c = cos + (size_t)r * half;
  const float* s = sin + (size_t)r * half;
  if (h < n_head) {
    rotate_head(q + (size_t)r * q_stride + (size_t)h * hd, q_bias ? q_bias + (size_t)h * hd : 0,
                q_out + ((size_t)h * m + r) * hd, c, s, hd, rope_dim, neox, 1);
  } else if (h < n_head + n_kv) {
    const int kh = h - n_head;
    float* kc = (float*)SEQ_ENTRY(step, m, n_seq, layer, b, 0);
    rotate_head(k + (size_t)r * k_stride + (size_t)kh * hd, k_bias ? k_bias + (size_t)kh * hd : 0,
                kc + ((size_t)kh * cap + p) * hd, c, s, hd, rope_dim, neox, 1);
  } else {
    const int vh = h - n_head - n_kv;
    float* vc = (float*)SEQ_ENTRY(step, m, n_seq, layer, b, 1);
    rotate_head(v + (size_t)r * v_stride + (size_t)vh * hd, v_bias ? v_bias + (size_t)vh * hd : 0,
                vc + ((size_t)vh * cap + p) * hd, c, s, hd, rope_dim, neox, 0);
  }
}

#define NEG_INF __int_as_float(0xff800000)
#define ATTN_THREADS 256
#define WARPS (ATTN_THREADS / 32)

__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// Reduces x over the block (max or sum); every thread gets the result.
__device__ float block_reduce(float x, bool is_max, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  x = is_max ? warp_max(x) : warp_sum(x);
  __syncthreads();
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  x = lane < WARPS ? scratch[lane] : (is_max ? NEG_INF : 0.0f);
  x = is_max ? warp_max(x) : warp_sum(x);
  return x;
}

// grid (n_head, m), block ATTN_THREADS, dynamic shared memory (keys + hd + ATTN_THREADS) floats
// where keys is the most keys any row sees. Row r of the step (sequence b at position p), head h,
// against the keys b's cache holds up to p (within `window` when window > 0) of its key/value
// head: scores divided by `divisor`, softmax, weighted sum of values into out[r, h * hd ..].
extern "C" __global__ void attend(const float* q, const long long* step, int layer, float* out,
                                  int m, int n_seq, int n_head, int n_kv, int hd, float divisor,
                                  int window) {
  extern __shared__ float smem[];
  __shared__ float scratch[32];
  const int h = blockIdx.x, r = blockIdx.y;
  const int b = ROW_SEQ(step, r), qp = ROW_POS(step, m, r);
  const float* k_cache = (const float*)SEQ_ENTRY(step, m, n_seq, layer, b, 0);
  const float* v_cache = (const float*)SEQ_ENTRY(step, m, n_seq, layer, b, 1);
  const int cap = (int)SEQ_ENTRY(step, m, n_seq, layer, b, 2);
  const int kh = h / (n_head / n_kv);
  const int first = window > 0 && qp + 1 > window ? qp + 1 - window : 0;
  const int keys = qp + 1 - first;
  float* qs = smem;             // hd
  float* part = smem + hd;      // ATTN_THREADS
  float* scores = part + ATTN_THREADS;  // keys
  const float* qrow = q + ((size_t)h * m + r) * hd;
  for (int i = threadIdx.x; i < hd; i += blockDim.x) qs[i] = qrow[i];
  __syncthreads();

  const float* kb = k_cache + ((size_t)kh * cap + first) * hd;
  const float* vb = v_cache + ((size_t)kh * cap + first) * hd;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float local_max = NEG_INF;
  for (int j = warp; j < keys; j += WARPS) {
    const float* kr = kb + (size_t)j * hd;
    float d = 0.0f;
    for (int i = lane; i < hd; i += 32) d += qs[i] * kr[i];
    d = warp_sum(d) / divisor;
    if (lane == 0) scores[j] = d;
    local_max = fmaxf(local_max, d);
  }
  const float mx = block_reduce(local_max, true, scratch);
  float local_sum = 0.0f;
  for (int j = threadIdx.x; j < keys; j += blockDim.x) {
    float e = expf(scores[j] - mx);
    scores[j] = e;
    local_sum += e;
  }
  const float sum = block_reduce(local_sum, false, scratch);  // syncs: every score is written

  // groups of hd threads each sum every groups-th key; the groups' partial sums are added last.
  const int groups = blockDim.x / hd > 0 ? blockDim.x / hd : 1;
  const int g = threadIdx.x / hd, d = threadIdx.x % hd;
  if (g < groups) {
    for (int d0 = d; d0 < hd; d0 += blockDim.x) {  // hd > blockDim: one group, several columns
      float acc = 0.0f;
      for (int j = g; j < keys; j += groups) acc += scores[j] * vb[(size_t)j * hd + d0];
      if (hd <= blockDim.x) part[g * hd + d0] = acc;
      else out[(size_t)r * n_head * hd + (size_t)h * hd + d0] = acc / sum;
    }
  }
  if (hd > blockDim.x) return;
  __syncthreads();
  if (threadIdx.x < hd) {
    float acc = 0.0f;
    for (int gi = 0; gi < groups; gi++) acc += part[gi * hd + threadIdx.x];
    out[(size_t)r * n_head * hd + (size_t)h * hd + threadIdx.x] = acc / sum;
  }
}

// out[r, i] = act(gate[r, i]) * up[r, i] for r < n, i < ff; gate and up rows have their own
// strides (a fused gate|up output is the two at offsets 0 and ff). act 0: SiLU, 1: GELU (tanh).
extern "C" __global__ void gated(const float* gate, const float* up, int g_stride, int u_stride,
                                 float* out, int n, int ff, int act) {
  const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (size_t)n * ff) return;
  const int r = idx / ff, i = idx % ff;
  const float g = gate[(size_t)r * g_stride + i];
  const float u = up[(size_t)r * u_stride + i];
  float a;
  if (act == 0) {
    a = g / (1.0f + expf(-g));
  } else {
    a = 0.5f * g * (1.0f + tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g)));
  }
  out[idx] = a * u;
}

// One block of ATTN_THREADS per row r < n: x_out[r] = x[r] + a[r] (the residual add), and
// h[r] = x_out[r] / sqrt(mean(x_out[r]^2) + eps) * w (the RMS norm that follows it), as one pass.
extern "C" __global__ void add_rms_norm(const float* x, const float* a, const float* w,
                                        float* x_out, float* h, int d, float eps) {
  __shared__ float scratch[32];
  const size_t base = (size_t)blockIdx.x * d;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    const float v = x[base + i] + a[base + i];
    x_out[base + i] = v;
    ss += v * v;
  }
  ss = block_reduce(ss, false, scratch);
  const float scale = rsqrtf(ss / (float)d + eps);
  for (int i = threadIdx.x; i < d; i += blockDim.x) h[base + i] = x_out[base + i] * scale * w[i];
}
