"""What llama.cpp's parts of an answer cost on this machine: the model load, the context, a decoding step.

For the first answer of a new process (README, Speed): the model's weights by tensor type, how
long llama.cpp takes to load the model (and, separately, its tokenizer alone: a ``vocab_only``
load), to build the decoding context at several sizes, and one decoding step as a function of the rows in the batch (each
distinct token of the candidates decoded together is a row), with and without the rows' logits.
The steps run after a prompt the size of the demo database's (748 tokens), through the
backend as ``slimsql ask`` runs them (for a LoRA export, with its adapter applied at run time).
Each number is the median of ``--repeats`` runs.

    python benchmarks/llama_costs.py   # -> benchmarks/results/llama-costs-<model>.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from slimsql import models
from slimsql.backends import llama_cpp as backend

PROMPT_TOKENS = 748  # the demo database's schema prompt
ROWS = (1, 2, 3, 4, 6, 8, 16)


def median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def weights_by_type(path: str) -> dict | None:
    """Millions of weights per tensor type in the GGUF file (the ``gguf`` package, from the
    transformers extra; None without it)."""
    try:
        import gguf
    except ImportError:
        return None
    counts: dict[str, int] = {}
    for tensor in gguf.GGUFReader(path).tensors:
        counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + int(tensor.n_elements)
    return {name: round(count / 1e6, 1) for name, count in sorted(counts.items(), key=lambda kv: -kv[1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=models.DEFAULT_MODEL)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    path = str(models.resolve(args.model).path)
    lib = backend._bindings()
    backend._quiet_logs()
    backend._finish_import()

    def load_model(**params) -> float:
        model_params = lib.llama_model_default_params()
        for name, value in params.items():
            setattr(model_params, name, value)
        start = time.perf_counter()
        handle = lib.llama_model_load_from_file(path.encode(), model_params)
        seconds = time.perf_counter() - start
        lib.llama_model_free(handle)
        return seconds

    load = {"model_ms": median_ms([load_model() for _ in range(args.repeats)]),
            "tokenizer_alone_ms": median_ms([load_model(vocab_only=True) for _ in range(args.repeats)])}
    handle = lib.llama_model_load_from_file(path.encode(), lib.llama_model_default_params())
    contexts = {}
    for n_ctx in (2048, 4096, 8192):
        times = []
        for _ in range(args.repeats):
            params = backend._context_params(lib, args.threads, n_ctx, backend.N_BATCH, backend.MAX_SEQUENCES)
            start = time.perf_counter()
            made = lib.llama_init_from_model(handle, params)
            times.append(time.perf_counter() - start)
            lib.llama_free(made)
        contexts[n_ctx] = median_ms(times)
    lib.llama_model_free(handle)
    load["context_ms_by_size"] = contexts

    # the decoding steps through the backend itself, as `slimsql ask` runs them (a LoRA export: with its adapter)
    llama = backend.LlamaCppBackend(args.model, n_threads=args.threads, prefix_cache=False)
    memory = llama._ctx.memory

    def submit(items: list[tuple[int, int, int, bool]]) -> float:
        start = time.perf_counter()
        llama._submit([(token, pos, (seq,), logits) for token, pos, seq, logits in items])
        return time.perf_counter() - start

    vocab = llama.model.n_vocab()
    prompt = [(1000 + 37 * i) % vocab for i in range(PROMPT_TOKENS)]
    prefill = 0.0
    for start in range(0, PROMPT_TOKENS, backend.N_BATCH):
        chunk = prompt[start:start + backend.N_BATCH]
        prefill += submit([(t, start + i, 0, start + i == PROMPT_TOKENS - 1) for i, t in enumerate(chunk)])
    for seq in range(1, backend.MAX_SEQUENCES):
        lib.llama_memory_seq_cp(memory, 0, seq, -1, -1)
    positions = [PROMPT_TOKENS] * backend.MAX_SEQUENCES

    def step(rows: int, logits: bool) -> float:
        items = [(300 + seq, positions[seq], seq, logits) for seq in range(rows)]
        for seq in range(rows):
            positions[seq] += 1
        return submit(items)

    steps = {rows: {"with_logits_ms": median_ms([step(rows, True) for _ in range(args.repeats)]),
                    "without_logits_ms": median_ms([step(rows, False) for _ in range(args.repeats)])}
             for rows in ROWS}
    results = {"benchmark": "llama.cpp costs: model load, context, decoding step by batch rows",
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
               "threads": args.threads, "model": args.model, "lora": str(llama.lora) if llama.lora else None,
               "command": "python " + " ".join(sys.argv),
               "weights_millions_by_type": weights_by_type(path), "load": load, "prompt_tokens": PROMPT_TOKENS,
               "prefill_tokens_per_s": round(PROMPT_TOKENS / prefill, 1), "decoding_step": steps}
    out = args.out or Path(__file__).parent / "results" / f"llama-costs-{args.model}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: results[k] for k in ("load", "prefill_tokens_per_s", "decoding_step")}, indent=1))
    print(f"wrote {out}")
    os._exit(0)  # llama.cpp's objects are freed with the process


if __name__ == "__main__":
    sys.exit(main())
