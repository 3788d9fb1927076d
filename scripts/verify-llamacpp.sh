#!/usr/bin/env bash
# Cross-checks hearth against llama.cpp on the same GGUF files: perplexity of a real source file
# at the same context, greedy text, and `hearth quantize` + `hearth bench`'s KL divergence against
# llama-quantize + `llama-perplexity --kl-divergence` on the built-in corpus. Builds llama.cpp from the llama-cpp-python source
# distribution (about 8 minutes on 2 cores, plus llama-server for `benches/serve.rs` and
# llama-bench / llama-quantize for `benches/llamacpp.rs`); not part of the test suite.
#   usage: scripts/verify-llamacpp.sh [WORKDIR]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-${TMPDIR:-/tmp}/hearth-llamacpp}"
mkdir -p "$work"
if [ ! -x "$work/bin/llama-bench" ]; then
  python3 -m pip download --no-deps --dest "$work" llama-cpp-python
  tar xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
  src=$(ls -d "$work"/llama_cpp_python-*/vendor/llama.cpp)
  cmake -S "$src" -B "$work/build" -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF -DCMAKE_BUILD_TYPE=Release
  cmake --build "$work/build" -j"$(nproc)" --target llama-perplexity llama-simple llama-server llama-bench llama-quantize
  ln -sfn "$work/build/bin" "$work/bin"
fi
cd "$root"
cargo build --release --quiet
text=src/model/gguf.rs
for id in smollm2-135m-instruct-q4_1 gemma3-270m-q4_k_m; do
  model=$(target/release/hearth pull "$id" 2>/dev/null)
  model=${model#*: }
  ours=$(target/release/hearth perplexity -m "$id" --file "$text" --ctx 512 2>/dev/null)
  theirs=$("$work/bin/llama-perplexity" -m "$model" -f "$text" -c 512 -t "$(nproc)" 2>&1 | grep "Final estimate")
  echo "$id"
  echo "  hearth:    $ours"
  echo "  llama.cpp: $theirs"
  echo "  hearth greedy:    $(target/release/hearth run -m "$id" --temperature 0 --max-tokens 24 'def fibonacci(n):' 2>/dev/null | head -c 200 | tr '\n' '|')"
  echo "  llama.cpp greedy: $("$work/bin/llama-simple" -m "$model" -n 24 'def fibonacci(n):' 2>/dev/null | head -c 220 | tr '\n' '|')"
done

# Quantization and KL divergence: the same source re-quantized by both tools, scored on the corpus.
q="$work/quant"
mkdir -p "$q"
src=$(target/release/hearth pull smollm2-135m-instruct-q4_1 2>/dev/null)
src=${src#*: }
sep=""
for f in sqlite_atoi64.c llama_grammar_parse.cpp mdbook_playground.js textwrap_functions.py smallvec_insert.rs; do
  printf '%b' "$sep"; cat "corpus/$f"; sep='\n\n'
done > "$q/corpus.txt"
for t in F16 Q8_0 Q6_K Q5_K_M Q5_1 Q5_0 Q4_K_M Q4_1 Q4_0; do
  target/release/hearth quantize "$src" "$q/hearth-$t.gguf" --type "$t" --force >/dev/null 2>&1
  "$work/bin/llama-quantize" --allow-requantize "$src" "$q/llamacpp-$t.gguf" "$t" 2 >/dev/null 2>&1
done
[ -x "$work/venv/bin/python" ] || { python3 -m venv "$work/venv" && "$work/venv/bin/pip" install --quiet gguf; }
"$work/venv/bin/python" - "$q" <<'PY'
import sys, gguf, numpy as np
q = sys.argv[1]
for t in ["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_1", "Q5_0", "Q4_K_M", "Q4_1", "Q4_0"]:
    a = {x.name: x for x in gguf.GGUFReader(f"{q}/hearth-{t}.gguf").tensors}
    b = {x.name: x for x in gguf.GGUFReader(f"{q}/llamacpp-{t}.gguf").tensors}
    types = sum(a[n].tensor_type != b[n].tensor_type for n in b)
    same = sum(np.array_equal(np.asarray(a[n].data).view(np.uint8), np.asarray(b[n].data).view(np.uint8)) for n in b)
    print(f"{t:7} {len(b)} tensors ({sorted(a) == sorted(b) and 'same names' or 'NAMES DIFFER'}): {types} type differences, {same} byte-identical")
PY
echo "hearth quantize + bench (reference F16):"
target/release/hearth bench -m "$q/hearth-F16.gguf" -m "$q/hearth-Q8_0.gguf" -m "$q/hearth-Q4_0.gguf" \
  --corpus "$q/corpus.txt" -p 16 -n 4 -r 1 2>/dev/null | grep '^| hearth-' | cut -d'|' -f2,10-13
"$work/bin/llama-perplexity" -m "$q/llamacpp-F16.gguf" -f "$q/corpus.txt" -c 512 -t "$(nproc)" \
  --kl-divergence-base "$q/base.kld" >/dev/null 2>&1
for t in Q8_0 Q4_0; do
  echo "llama-quantize $t + llama-perplexity --kl-divergence:"
  "$work/bin/llama-perplexity" -m "$q/llamacpp-$t.gguf" -f "$q/corpus.txt" -c 512 -t "$(nproc)" \
    --kl-divergence-base "$q/base.kld" --kl-divergence 2>&1 | grep -E "Mean PPL\(Q\) |Mean    KLD|99.0%   KLD|^Same top p"
done
