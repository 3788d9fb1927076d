#!/usr/bin/env bash
# Fuzzes the GGUF reader and every protocol's request handling for SECONDS each (default 600),
# from the seeds in tests/fuzz/, and prints how many executions ran. A crash, a panic or a 5xx
# fails it; the GGUF mutant that crashed is kept as target/tmp/fuzz-crash.gguf.
# Usage: scripts/fuzz.sh [SECONDS] [gguf|requests|heads]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
filter="${2:-}"
HEARTH_FUZZ_SECS="$secs" cargo test --release --test fuzz -- --nocapture --test-threads 1 $filter 2>&1 | grep -E "executions|test result|panicked|FAILED"
