"""Latency benchmark: cold start, median and p90 seconds per question.

One run measures, on the same questions (a fixed list on the demo database and a
seeded sample of Spider dev when ../shared/benchmarks/spider is present):

* cold start: a fresh process that imports slimsql, opens the database, loads the
  (already assembled) model and answers one question;
* per-question latency of the whole road (schema, generation, execution) with the
  llama.cpp backend and with the transformers backend on the same weights;

and writes ``benchmarks/results/latency-<model>.json`` (plus a Markdown table on stdout).

    python benchmarks/latency.py                      # both backends, 0.5B, the default preset
    python benchmarks/latency.py --backends llama-cpp --preset fast --spider-dbs 10 --per-db 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import slimsql
import slimsql.infer
from slimsql.demo import DEMO_QUESTIONS, build_demo
from slimsql.errors import SlimsqlError

ROOT = Path(__file__).resolve().parents[1]
SPIDER = ROOT.parent / "shared" / "benchmarks" / "spider"
DEMO_EXTRA = (
    "What are the names of the 3 most expensive products?",
    "How many customers are there in each country?",
    "What is the average salary of employees by title?",
    "Which payment method is used most often?",
    "How many orders were placed online in 2024?",
    "List the categories that have no parent category.",
    "What is the total stock of discontinued products?",
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summarize(seconds: list[float]) -> dict:
    return {"n": len(seconds), "median_s": round(statistics.median(seconds), 3),
            "p90_s": round(percentile(seconds, 0.9), 3), "mean_s": round(statistics.fmean(seconds), 3),
            "max_s": round(max(seconds), 3)}


def spider_sample(dbs: int, per_db: int, seed: int) -> list[tuple[Path, str]]:
    """``per_db`` dev questions (in dev order) from each of ``dbs`` seeded databases,
    as a user asks several questions of one database."""
    if dbs <= 0 or not (SPIDER / "dev.json").exists():
        return []
    examples = json.loads((SPIDER / "dev.json").read_text())
    path = lambda db_id: SPIDER / "database" / db_id / f"{db_id}.sqlite"  # noqa: E731
    by_db: dict[str, list[str]] = {}
    for e in examples:
        if path(e["db_id"]).exists():
            by_db.setdefault(e["db_id"], []).append(e["question"])
    chosen = random.Random(seed).sample(sorted(db for db, qs in by_db.items() if len(qs) >= per_db), dbs)
    return [(path(db), q) for db in chosen for q in by_db[db][:per_db]]


def cold_start(db: Path, question: str, model: str, backend: str, preset: str) -> float:
    code = ("import time, sys; t = time.perf_counter(); import slimsql; "
            f"a = slimsql.connect({str(db)!r}, model={model!r}, backend={backend!r}, preset={preset!r})"
            f".ask({question!r}); "
            "print(time.perf_counter() - t)")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"cold start run failed: {out.stderr.strip().splitlines()[-1:]}")
    return round(wall, 3)


def run_backend(name: str, model: str, suites: dict[str, list[tuple[Path, str]]], threads: int | None,
                preset: str) -> dict:
    from slimsql.backends import load_backend

    options = {"n_threads": threads} if threads else {}
    start = time.perf_counter()
    backend = load_backend(name, model=model, **options)
    load = time.perf_counter() - start
    report = {"backend": name, "model": backend.model_name, "load_s": round(load, 3), "suites": {}}
    connections: dict[Path, slimsql.Connection] = {}
    for suite, questions in suites.items():
        rows = []
        for db, question in questions:
            conn = connections.get(db) or connections.setdefault(db, slimsql.connect(db, backend=backend,
                                                                                       preset=preset))
            start = time.perf_counter()
            try:
                answer = conn.ask(question)
                status, timings, tokens = "ok", answer.timings, answer.tokens
            except SlimsqlError as err:
                status, timings, tokens = type(err).__name__, {}, {}
            first = not any(r["db"] == db.stem for r in rows)
            rows.append({"db": db.stem, "question": question, "seconds": round(time.perf_counter() - start, 3),
                         "first_on_db": first, "status": status, "timings": timings, "tokens": tokens})
            print(f"  [{name}] {suite}: {rows[-1]['seconds']:.2f}s {status}  {question[:60]}", file=sys.stderr)
        report["suites"][suite] = {
            "summary": summarize([r["seconds"] for r in rows]),
            # first question on a database: the whole schema prompt is evaluated (cold);
            # later ones reuse it where the backend can (llama.cpp's KV prefix reuse)
            "first_on_db": summarize([r["seconds"] for r in rows if r["first_on_db"]]),
            "later_on_db": summarize([r["seconds"] for r in rows if not r["first_on_db"]])
            if any(not r["first_on_db"] for r in rows) else None,
            "answered": sum(r["status"] == "ok" for r in rows), "questions": rows}
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--backends", default="llama-cpp,transformers")
    parser.add_argument("--db", type=Path, help="demo database (built in a temp folder if omitted)")
    parser.add_argument("--spider-dbs", type=int, default=4, help="Spider dev databases to sample (0: none)")
    parser.add_argument("--per-db", type=int, default=5, help="questions per Spider database")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--preset", default="default", help="answer preset (fast, default, accurate)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory()
    db = args.db or build_demo(Path(tmp.name) / "shop.sqlite")
    suites = {"demo": [(db, q) for q in DEMO_QUESTIONS + DEMO_EXTRA]}
    if spider := spider_sample(args.spider_dbs, args.per_db, args.seed):
        suites["spider-dev-sample"] = spider

    results = {
        "benchmark": "slimsql latency", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
                    "python": platform.python_version()},
        "model": args.model, "preset": args.preset,
        "settings": slimsql.infer.resolve(args.preset).describe(),
        "command": "python " + " ".join(sys.argv),
        "questions": {k: len(v) for k, v in suites.items()},
        "cold_start_s": {},
        "backends": [],
    }
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        results["cold_start_s"][name] = cold_start(db, DEMO_QUESTIONS[0], args.model, name, args.preset)
        results["backends"].append(run_backend(name, args.model, suites, args.threads, args.preset))

    medians = {b["backend"]: {s: v["summary"]["median_s"] for s, v in b["suites"].items()} for b in results["backends"]}
    if {"llama-cpp", "transformers"} <= set(medians):
        results["speedup_llama_over_transformers"] = {
            s: round(medians["transformers"][s] / medians["llama-cpp"][s], 2) for s in medians["llama-cpp"]}

    out = args.out or ROOT / "benchmarks" / "results" / f"latency-{args.model}-{args.preset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")

    print("| backend | suite | questions | answered | median s | p90 s | first on a db: median s "
          "| later: median s | model load s | cold start s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for b in results["backends"]:
        for suite, data in b["suites"].items():
            s, first, later = data["summary"], data["first_on_db"], data["later_on_db"] or {}
            print(f"| {b['backend']} | {suite} | {s['n']} | {data['answered']} | {s['median_s']} | {s['p90_s']} "
                  f"| {first['median_s']} (n={first['n']}) | {later.get('median_s', '-')} "
                  f"| {b['load_s']} | {results['cold_start_s'][b['backend']]} |")
    if "speedup_llama_over_transformers" in results:
        print(f"\nllama.cpp speed-up over transformers (median): {results['speedup_llama_over_transformers']}")
    print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
