#!/usr/bin/env bash
# Cross-checks hearth against llama.cpp on the same GGUF files: perplexity of a real source file
# at the same context, and greedy text. Builds llama.cpp from the llama-cpp-python source
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
