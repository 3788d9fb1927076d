#!/usr/bin/env bash
# The CUDA checks, in one run on a machine with an NVIDIA GPU (a few minutes; no network needed):
# takes the binary scripts/build-cuda.sh made (target/cuda-dist/hearth.xz, carried compressed),
# generates random-weight models with real shapes (`hearth synth`, F16) and quantizes them with
# `hearth quantize`, then
#   1. perplexity on CPU and on CUDA (with hearth's CUDA kernels and without) for every type;
#   2. greedy text on CPU and CUDA;
#   3. `hearth speed` on CUDA at real sizes, kernels on and off, and the 135M shape against the CPU;
#   4. a server on CUDA: 1, 4 and 8 concurrent greedy streams, texts compared with each alone.
# HEARTH_CUDA_INVARIANT=1 rows: matmuls in groups of 4 rows, batch-invariant (kernels/cuda).
# Writes report.txt and logs to $OUT (or target/check-cuda). Needs the CUDA driver, the CUDA 13
# runtime libraries (cuBLAS, cuRAND, NVRTC: the pip packages PyTorch brings are found).
#
#   scripts/check-cuda.sh [quick]     # quick: correctness only, no speed or server runs
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${OUT:-$root/target/check-cuda}
mkdir -p "$out"
report=$out/report.txt
: >"$report"
say() { echo "$*" | tee -a "$report"; }
work=${HEARTH_CHECK_DIR:-/tmp/hearth-check}
mkdir -p "$work"
export HEARTH_HOME=$work/home RUST_LOG=${RUST_LOG:-warn}
t0=$(date +%s)

# The binary, and the libraries it links: the driver's libcuda, and CUDA 13's cuBLAS, cuRAND,
# NVRTC and runtime from the Python packages where there is no system toolkit.
bin=$work/hearth
if [ -f target/cuda-dist/hearth.xz ]; then
  xz -dc target/cuda-dist/hearth.xz >"$bin"
else
  cp target/cuda/release/hearth "$bin"
fi
chmod +x "$bin"
libs=$(python3 - <<'EOF'
import glob, os, site
dirs = set()
for sp in site.getsitepackages():
    for f in glob.glob(os.path.join(sp, "nvidia", "**", "lib*.so*"), recursive=True):
        dirs.add(os.path.dirname(f))
print(":".join(sorted(dirs)))
EOF
)
export LD_LIBRARY_PATH=${libs}:/usr/local/nvidia/lib64:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if ! ldd "$bin" | grep -q "not found"; then :; else ldd "$bin" | grep "not found" | tee -a "$report"; fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader | sed 's/^/gpu: /' | tee -a "$report"
say "cpu: $(nproc) threads, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
python3 - <<'EOF' 2>/dev/null | tee -a "$report"
import torch, time
x = torch.empty(2 << 30, dtype=torch.uint8, device="cuda"); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
torch.cuda.synchronize(); t = time.perf_counter(); n = 10
for _ in range(n): y.copy_(x)
torch.cuda.synchronize(); s = (time.perf_counter() - t) / n
print(f"device copy bandwidth: {2 * x.numel() / s / 1e9:.0f} GB/s (read + write, 2 GiB buffers)")
EOF

# Models: random weights, real shapes; F16 first, then each type by hearth's quantizer.
gen() {  # shape
  [ -f "$work/$1-F16.gguf" ] || "$bin" synth "$1" "$work/$1-F16.gguf" --type F16 >/dev/null
}
quant() {  # shape type
  [ -f "$work/$1-$2.gguf" ] || "$bin" quantize "$work/$1-F16.gguf" "$work/$1-$2.gguf" --type "$2" >/dev/null 2>>"$out/quantize.log" \
    || say "FAIL quantize $1 $2"
}
small=smollm2-135m
big=llama-3.2-1b
for s in $small qwen2.5-coder-0.5b gemma-3-270m $big; do gen $s & done
wait
types="Q4_0 Q4_1 Q5_0 Q8_0 Q4_K_M Q5_K_M Q6_K"
for t in $types; do quant $small $t; done
for t in Q4_0 Q8_0 Q4_K_M; do quant $big $t; done
quant qwen2.5-coder-0.5b Q4_K_M; quant qwen2.5-coder-0.5b Q4_0; quant gemma-3-270m Q4_K_M
say "models ready after $(( $(date +%s) - t0 ))s"

# 1. Perplexity: CPU against CUDA with our kernels and with candle's operations only.
cat src/model/*.rs | head -c 4000 >"$work/text.txt"
ppl() {  # model device [env...]
  local m=$1 d=$2; shift 2
  env "$@" HEARTH_DEVICE="$d" "$bin" perplexity -m "$work/$m.gguf" --file "$work/text.txt" --ctx 256 2>>"$out/ppl.log" \
    | sed -n 's/^perplexity: \([0-9.]*\).*/\1/p'
}
say ""
say "perplexity (random weights, 4000 bytes of source, ctx 256): cpu / cuda / cuda without hearth kernels; relative differences"
for m in $(for t in F16 $types; do echo $small-$t; done) qwen2.5-coder-0.5b-Q4_K_M gemma-3-270m-Q4_K_M $big-Q4_0; do
  c=$(ppl $m cpu); g=$(ppl $m cuda); o=$(ppl $m cuda HEARTH_CUDA_KERNELS=0)
  python3 -c "
import sys
c, g, o = (float(x) if x else float('nan') for x in sys.argv[2:5])
r1, r2 = abs(g - c) / c, abs(o - c) / c
print(f'{sys.argv[1]:32} {c:10.4f} {g:10.4f} {o:10.4f}  {r1:.1e} {r2:.1e}  ' + ('ok' if r1 < 1e-3 and r2 < 1e-3 else 'FAIL'))
" "$m" "$c" "$g" "$o" | tee -a "$report"
done

# 2. Greedy text, CPU against CUDA (48 tokens).
say ""
say "greedy text, cpu vs cuda: equal characters before the first difference"
for m in $small-Q8_0 $small-Q4_K_M qwen2.5-coder-0.5b-Q4_K_M gemma-3-270m-Q4_K_M $big-Q4_0; do
  for d in cpu cuda; do
    HEARTH_DEVICE=$d "$bin" run -m "$work/$m.gguf" --temperature 0 --max-tokens 48 "def fibonacci(n):" >"$work/run-$d.txt" 2>>"$out/run.log"
  done
  python3 -c "
import sys
a, b = (open(f, encoding='utf-8', errors='replace').read() for f in sys.argv[2:4])
n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
print(f'{sys.argv[1]:32} {n}/{max(len(a), len(b))} ' + ('same' if a == b else 'differs'))
" "$m" "$work/run-cpu.txt" "$work/run-cuda.txt" | tee -a "$report"
done
[ "${1:-}" = quick ] && { say "done in $(( $(date +%s) - t0 ))s"; exit 0; }

# 3. Speed: llama-bench's pp512 / tg128, median of 3.
speed() {  # label model args...
  local label=$1 m=$2; shift 2
  local j
  j=$(env "${envs[@]}" "$bin" speed -m "$work/$m.gguf" --json "$@" 2>>"$out/speed.log")
  python3 -c "
import json, sys
j = json.loads(sys.argv[2] or '{}')
print(f\"{sys.argv[1]:44} pp {j.get('pp_tps', 0):9.1f}  tg {j.get('tg_tps', 0):8.1f} tok/s  (x{j.get('parallel', 1)}, load {j.get('load_s', 0):.1f}s)\")
" "$label" "$j" | tee -a "$report"
}
say ""
say "speed (hearth speed -p 512 -n 128)"
for m in $big-Q4_0 $big-Q8_0 $big-Q4_K_M qwen2.5-coder-0.5b-Q4_K_M $small-Q8_0; do
  envs=(HEARTH_DEVICE=cuda); speed "$m cuda" $m -p 512 -n 128
done
envs=(HEARTH_DEVICE=cuda HEARTH_CUDA_INVARIANT=1); speed "$big-Q4_0 cuda, invariant (groups of 4)" $big-Q4_0 -p 512 -n 128
envs=(HEARTH_DEVICE=cuda HEARTH_CUDA_KERNELS=0); speed "$big-Q4_0 cuda, candle ops" $big-Q4_0 -p 512 -n 128
envs=(HEARTH_DEVICE=cpu RAYON_NUM_THREADS=$(nproc)); speed "$small-Q4_0 cpu $(nproc) threads" $small-Q4_0 -p 512 -n 128
envs=(HEARTH_DEVICE=cuda); speed "$small-Q4_0 cuda" $small-Q4_0 -p 512 -n 128
for p in 4 8; do
  envs=(HEARTH_DEVICE=cuda); speed "$big-Q4_0 cuda" $big-Q4_0 -p 0 -n 128 --parallel $p
  envs=(HEARTH_DEVICE=cuda HEARTH_CUDA_INVARIANT=1); speed "$big-Q4_0 cuda, invariant" $big-Q4_0 -p 0 -n 128 --parallel $p
done

# 4. The server on CUDA: concurrent greedy streams against each alone.
say ""
for inv in 0 1; do
  say "serve on cuda ($big-Q4_0, --parallel 8, 64 tokens per request, HEARTH_CUDA_INVARIANT=$inv)"
  HEARTH_CUDA_INVARIANT=$inv HEARTH_DEVICE=cuda "$bin" serve -m "$work/$big-Q4_0.gguf" --port 18080 --parallel 8 \
    --ledger "$work/ledger.db" >>"$out/serve.log" 2>&1 &
  server=$!
  for _ in $(seq 60); do curl -sf localhost:18080/health >/dev/null && break; sleep 1; done
  python3 scripts/serve-streams.py --url http://127.0.0.1:18080 --streams 1,4,8 --max-tokens 64 | tee -a "$report"
  kill $server 2>/dev/null; wait $server 2>/dev/null
done
say "done in $(( $(date +%s) - t0 ))s"
