#!/usr/bin/env bash
# Install llama-cpp-python into the given Python's environment, built from source once.
#
# Why not a plain `pip install`: a -march=native build of ggml turns on AMX / AVX-512
# kernels wherever the CPU advertises them, and on some virtual machines that advertise
# AMX those kernels crash on the first batched prompt (seen on this project's CI
# machines). On x86_64 we therefore build for the portable AVX2/FMA/F16C level. pip's
# wheel cache ignores CMAKE_ARGS, so we keep our own cache keyed by version and flags.
set -euo pipefail
PY=${1:?usage: install-llama.sh PYTHON}
VERSION=${LLAMA_CPP_VERSION:-0.3.36}
if [ "$(uname -m)" = "x86_64" ]; then
  FLAGS=${SLIMSQL_LLAMA_CMAKE_ARGS:-"-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"}
else
  FLAGS=${SLIMSQL_LLAMA_CMAKE_ARGS:-""}
fi
KEY=$(printf '%s %s %s' "$VERSION" "$FLAGS" "$("$PY" -c 'import sys; print(sys.version_info[:2])')" | sha256sum | cut -c1-16)
WHEELS="${SLIMSQL_HOME:-$HOME/.cache/slimsql}/wheels/llama-cpp-python-$KEY"
if ! ls "$WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $VERSION from source (several minutes, once per machine)..."
  mkdir -p "$WHEELS.tmp"
  CMAKE_ARGS="$FLAGS" "$PY" -m pip wheel --no-cache-dir --no-deps "llama-cpp-python==$VERSION" -w "$WHEELS.tmp"
  rm -rf "$WHEELS" && mv "$WHEELS.tmp" "$WHEELS"
fi
# --force-reinstall: a same-version native build may already be installed
"$PY" -m pip install -q --force-reinstall --no-deps "$WHEELS"/llama_cpp_python-*.whl
