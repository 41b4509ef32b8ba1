#!/usr/bin/env bash
# Install llama-cpp-python into the given Python's environment, built from source once.
#
# Why not a plain `pip install`: a -march=native build of ggml turns on the AMX kernels
# wherever the CPU advertises AMX, and on virtual machines that advertise it without
# enabling it (this project's CI machines) they crash on the first batched prompt. On
# x86_64 we therefore pick the widest SIMD level the CPU reports (AVX-512 or AVX2),
# never AMX. pip's wheel cache ignores CMAKE_ARGS, so we keep our own wheel cache,
# keyed by version, flags and Python version.
set -euo pipefail
PY=${1:?usage: install-llama.sh PYTHON}
VERSION=${LLAMA_CPP_VERSION:-0.3.36}
if [ "$(uname -m)" = "x86_64" ]; then
  FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  cpu=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
  has() { for f in "$@"; do case " $cpu " in *" $f "*) ;; *) return 1 ;; esac; done; }
  if has avx512f avx512bw avx512vl avx512dq avx512cd; then
    FLAGS="$FLAGS -DGGML_AVX512=ON"
    has avx512_vnni && FLAGS="$FLAGS -DGGML_AVX512_VNNI=ON"
    has avx512vbmi && FLAGS="$FLAGS -DGGML_AVX512_VBMI=ON"
    has avx512_bf16 && FLAGS="$FLAGS -DGGML_AVX512_BF16=ON"
  else
    FLAGS="$FLAGS -DGGML_AVX512=OFF"
  fi
  has avx_vnni && FLAGS="$FLAGS -DGGML_AVX_VNNI=ON"
  FLAGS=${SLIMSQL_LLAMA_CMAKE_ARGS:-$FLAGS}
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
