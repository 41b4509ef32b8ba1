"""What many candidates cost: n = 1, 4, 8 decoded together vs. 8 completions one after another.

On the same questions (a seeded Spider dev sample: ``--per-db`` questions from each
of ``--spider-dbs`` databases, as in benchmarks/latency.py), each configuration
generates the candidates of every question with the llama.cpp backend. The
schema prompt is evaluated once per question before timing (every
configuration then starts from the same cached prompt), so the numbers are
the cost of decoding the candidates. Writes
``benchmarks/results/candidates-<model>.json`` and prints a Markdown table.

    python benchmarks/candidates.py                       # 0.5B, 20 questions, temperature 0.8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import slimsql
from slimsql.backends import GenerationConfig, load_backend
from slimsql.infer import render, resolve

from latency import ROOT, spider_sample, summarize  # noqa: E402  (same folder)

CONFIGS = (("n=1", 1, True), ("n=4 together", 4, True), ("n=8 together", 8, True), ("n=8 one by one", 8, False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--spider-dbs", type=int, default=4)
    parser.add_argument("--per-db", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    questions = spider_sample(args.spider_dbs, args.per_db, args.seed)
    if not questions:
        raise SystemExit("error: needs ../shared/benchmarks/spider")
    backend = load_backend("llama-cpp", model=args.model)
    settings = resolve("fast")
    seconds: dict[str, list[float]] = {name: [] for name, _, _ in CONFIGS}
    tokens: dict[str, list[int]] = {name: [] for name, _, _ in CONFIGS}
    distinct: dict[str, list[int]] = {name: [] for name, _, _ in CONFIGS}
    for i, (db_path, question) in enumerate(questions):
        with slimsql.open_database(db_path) as db:
            messages = render(db.schema(settings.samples), question, settings)
        backend.parallel = True
        backend.generate(messages, GenerationConfig(max_tokens=1))  # the prompt, evaluated and cached
        for name, n, parallel in CONFIGS:
            backend.parallel = parallel
            config = GenerationConfig(n=n, temperature=0.0 if n == 1 else args.temperature, seed=i)
            start = time.perf_counter()
            out = backend.generate(messages, config)
            seconds[name].append(time.perf_counter() - start)
            tokens[name].append(sum(c.completion_tokens for c in out))
            distinct[name].append(len({c.text for c in out}))
        print(f"{i + 1}/{len(questions)} " + "  ".join(f"{k} {v[-1]:.2f}s" for k, v in seconds.items()), flush=True)
    rows = {name: {**summarize(seconds[name]), "total_s": round(sum(seconds[name]), 2),
                   "completion_tokens": sum(tokens[name]),
                   "distinct_texts_mean": round(statistics.fmean(distinct[name]), 2)} for name in seconds}
    ratio = rows["n=8 together"]["total_s"] / rows["n=8 one by one"]["total_s"]
    result = {"model": args.model, "questions": len(questions), "temperature": args.temperature,
              "cpu_count": os.cpu_count(), "machine": platform.machine(),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "configs": rows,
              "n8_together_over_one_by_one": round(ratio, 3)}
    out = args.out or ROOT / "benchmarks" / "results" / f"candidates-{args.model}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| candidates | median | p90 | total | completion tokens | distinct texts (mean) |\n|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['median_s']:.2f} s | {r['p90_s']:.2f} s | {r['total_s']:.1f} s | "
              f"{r['completion_tokens']} | {r['distinct_texts_mean']} |")
    print(f"\nn=8 together / n=8 one by one (total time): {ratio:.2f}  -> {out}")


if __name__ == "__main__":
    main()
