"""Matmul rate of this CPU in float32 and bfloat16, at the shape ``train plan`` benchmarks
(a [512 x 896] x [896 x 4864] linear layer of the 0.5B), one thread and all threads, and
whether torch sees bfloat16 arithmetic (AVX512-BF16 or AMX). On a CPU without it torch
emulates bfloat16, which is why a bfloat16 recipe trains in float32 there
(``slimsql.train.model.training_dtype``).

    python benchmarks/cpu_dtypes.py --out benchmarks/results/cpu-dtypes.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch

from slimsql.train.model import cpu_has_bfloat16
from slimsql.train.plan import BENCH_ROWS, measure_throughput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu-dtypes.json"))
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per measurement")
    args = parser.parse_args()
    rates = {}
    for threads in (1, os.cpu_count() or 1):
        torch.set_num_threads(threads)
        for dtype in ("float32", "bfloat16"):
            rate = measure_throughput.__wrapped__(dtype, BENCH_ROWS, 896, 4864, "cpu", args.seconds)  # uncached
            rates[f"{dtype}, {threads} thread(s)"] = round(rate / 1e9, 2)
            print(f"{dtype:9} {threads} thread(s): {rate / 1e9:7.2f} GFLOP/s", flush=True)
    result = {"benchmark": "CPU matmul rate by dtype", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python benchmarks/cpu_dtypes.py --out " + str(args.out), "machine": platform.processor() or
              platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "bfloat16_arithmetic": cpu_has_bfloat16(),
              "shape": f"[{BENCH_ROWS} x 896] x [896 x 4864]", "gflops": rates}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
