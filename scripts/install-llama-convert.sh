#!/usr/bin/env bash
# Install llama.cpp's own model converters (convert_hf_to_gguf.py, convert_lora_to_gguf.py)
# for `slimsql train export`, matching the llama-cpp-python installed in PYTHON's environment.
#
# The converters are not in llama-cpp-python's wheel, only in its source distribution, under
# vendor/llama.cpp/: the two scripts, the conversion/ package they import (one module per
# model family), gguf-py/ (the gguf writer of that same llama.cpp revision, put first on
# PYTHONPATH by slimsql) and models/templates/ (chat templates a few families read). We take
# the sdist of exactly the installed version from the package index with pip and keep only
# those parts, in ${SLIMSQL_HOME:-$HOME/.cache/slimsql}/llama.cpp-convert/<version>/.
# Idempotent: nothing is fetched when that folder is complete.
#
# The converters' own Python needs beyond what slimsql[train] brings (torch, transformers,
# safetensors, numpy): sentencepiece, which the Qwen2 converter imports before it falls back
# to the BPE tokenizer. torch, numpy and transformers are deliberately not re-pinned here.
#
# LLAMA_CPP_SDIST=/path/llama_cpp_python-<version>.tar.gz uses a tarball already at hand.
set -euo pipefail
PY=${1:?usage: install-llama-convert.sh PYTHON}
VERSION=$("$PY" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))' 2>/dev/null) || {
  echo "llama-cpp-python is not installed in $PY's environment (make setup installs it)" >&2; exit 1; }
DEST="${SLIMSQL_HOME:-$HOME/.cache/slimsql}/llama.cpp-convert/$VERSION"

if [ -f "$DEST/.complete" ]; then
  echo "llama.cpp converters $VERSION: already in $DEST"
else
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  if [ -n "${LLAMA_CPP_SDIST:-}" ]; then
    SDIST=$LLAMA_CPP_SDIST
  else
    echo "fetching the llama-cpp-python $VERSION source distribution for its converters..."
    "$PY" -m pip download -q --no-deps --no-binary :all: -d "$WORK" "llama-cpp-python==$VERSION"
    SDIST=$(ls "$WORK"/llama_cpp_python-*.tar.gz)
  fi
  TOP="llama_cpp_python-$VERSION/vendor/llama.cpp"
  tar -xzf "$SDIST" -C "$WORK" \
    "$TOP/convert_hf_to_gguf.py" "$TOP/convert_lora_to_gguf.py" "$TOP/conversion" \
    "$TOP/gguf-py/gguf" "$TOP/gguf-py/pyproject.toml" "$TOP/gguf-py/LICENSE" \
    "$TOP/models/templates" "$TOP/requirements" "$TOP/LICENSE"
  mkdir -p "$(dirname "$DEST")"
  rm -rf "$DEST.tmp" && mv "$WORK/$TOP" "$DEST.tmp"
  printf '%s\n' "$VERSION" > "$DEST.tmp/.complete"
  rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
  echo "llama.cpp converters $VERSION: installed in $DEST"
fi

# sentencepiece, as llama.cpp's converter requirements pin it
SPEC=$(grep -h -m1 '^sentencepiece' "$DEST/requirements/requirements-convert_legacy_llama.txt" 2>/dev/null \
       || echo 'sentencepiece>=0.1.98,<0.3.0')
if ! "$PY" -c 'import sentencepiece' 2>/dev/null; then
  "$PY" -m pip install -q "$SPEC"
fi
