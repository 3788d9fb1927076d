#!/usr/bin/env bash
# The CUDA build of hearth on a machine without a GPU, reproducibly: the CUDA 13.0 toolkit from pip
# packages (nvcc, crt, nvvm, runtime, cccl, nvrtc, cuBLAS, cuRAND) unpacked under target/, a
# link-time stub libcuda.so (the real driver library is loaded at run time on the GPU machine),
# RUSTFLAGS=-C target-cpu=x86-64-v3 so the binary runs on another x86-64 host, and kernels for
# CUDA_COMPUTE_CAP (default 90: Hopper). Writes target/cuda/release/hearth and a compressed,
# stripped copy, target/cuda-dist/hearth.xz, small enough to carry to the GPU machine
# (scripts/check-cuda.sh unpacks and checks it there). About 26 minutes cold on 2 cores.
#
# Environment: CUDA_COMPUTE_CAP (90), HEARTH_CUDA_TOOLKIT (target/cuda-toolkit), and any cargo
# arguments after `--` (e.g. `-- --bench llamacpp`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tk=${HEARTH_CUDA_TOOLKIT:-$root/target/cuda-toolkit}
cu=$tk/site/nvidia/cu13
packages=(
  "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-nvvm==13.0.*"
  "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-nvrtc==13.0.*"
  "nvidia-cublas==13.*" "nvidia-curand==10.*"
)
if [ ! -x "$cu/bin/nvcc" ] || [ ! -e "$cu/lib/libcublasLt.so.13" ]; then
  echo "build-cuda: installing the CUDA 13.0 toolkit from pip packages into $tk/site" >&2
  python3 -m pip install -q --disable-pip-version-check --no-deps --no-compile --target "$tk/site" "${packages[@]}"
fi

# nvcc looks for cicc and libdevice under ../nvvm; the pip layout keeps them in nvvm/ beside bin/.
# The linker wants unversioned names; the binary records the versioned sonames.
for lib in cudart.so.13 cublas.so.13 cublasLt.so.13 curand.so.10 nvrtc.so.13; do
  ln -sf "lib$lib" "$cu/lib/lib${lib%.so.*}.so"
done

# cudarc (dynamic-linking) links -lcuda. The driver library comes with the GPU's driver, not with
# the toolkit: link against a stub exporting every driver entry point cudarc declares, with the real
# library's soname, so the binary loads the GPU machine's libcuda.so.1 at start.
stub=$tk/stub
if [ ! -e "$stub/libcuda.so" ]; then
  mkdir -p "$stub"
  sys=$(cargo metadata --format-version 1 2>/dev/null | python3 -c '
import json, sys, os
m = json.load(sys.stdin)
p = [q for q in m["packages"] if q["name"] == "cudarc"]
print(os.path.join(os.path.dirname(p[0]["manifest_path"]), "src/driver/sys/mod.rs") if p else "")')
  if [ -z "$sys" ] || [ ! -f "$sys" ]; then
    cargo fetch -q
    sys=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -path '*cudarc-*/src/driver/sys/mod.rs' | sort -V | tail -n 1)
  fi
  grep -oE '^\s+fn cu[A-Za-z0-9_]+\(' "$sys" | sed -E 's/^\s+fn ([A-Za-z0-9_]+)\(/\1/' | sort -u \
    | awk '{ print "void " $1 "(void) {}" }' >"$stub/libcuda.c"
  cc -shared -fPIC -o "$stub/libcuda.so" -Wl,-soname,libcuda.so.1 "$stub/libcuda.c"
fi

export CUDA_HOME=$cu CUDA_PATH=$cu CUDA_ROOT=$cu
export PATH=$cu/bin:$PATH
export LIBRARY_PATH=$stub:$cu/lib${LIBRARY_PATH:+:$LIBRARY_PATH}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export RUSTFLAGS="-C target-cpu=x86-64-v3 -L native=$stub -L native=$cu/lib"
[ "${1:-}" = "--" ] && shift
cargo build --release --features cuda --target-dir "$root/target/cuda" --bin hearth "$@"

dist=$root/target/cuda-dist
mkdir -p "$dist"
strip -o "$dist/hearth" "$root/target/cuda/release/hearth"
xz -T0 -6 -f -k "$dist/hearth"
ls -l "$root/target/cuda/release/hearth" "$dist/hearth" "$dist/hearth.xz" >&2
