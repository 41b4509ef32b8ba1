"""Execution-layer overhead: every Spider dev gold query through an old and the current layer.

Each layer runs in its own fresh process (the old one from ``git archive <ref>``
of this repository, imported ahead of the installed package), opening one
``SQLiteDatabase`` per database as the evaluation runner does, and times
``execute`` (allow-list check + execution) per query, best of ``--repeat``
rounds. A second measure times a whole ``slimsql sql`` process end to end.
Writes ``benchmarks/results/execution-overhead.json`` and prints a table.

    python benchmarks/execution_overhead.py                # old = main's 9af6fb7
    python benchmarks/execution_overhead.py --old HEAD~3 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPIDER = ROOT.parent / "shared" / "benchmarks" / "spider"


def measure(spider: Path, repeat: int) -> dict:
    """Runs inside the child: per-query best-of-``repeat`` seconds of ``execute``."""
    import slimsql
    from slimsql.db.sqlite import SQLiteDatabase
    from slimsql.errors import SlimsqlError

    examples = json.loads((spider / "dev.json").read_text())
    dbs, times, errors = {}, [], 0
    opened = time.perf_counter()
    for ex in examples:
        path = spider / "database" / ex["db_id"] / f"{ex['db_id']}.sqlite"
        if path.exists() and path not in dbs:
            dbs[path] = SQLiteDatabase(path, timeout=30.0, max_rows=100_000)
    opened = time.perf_counter() - opened
    for ex in examples:
        db = dbs.get(spider / "database" / ex["db_id"] / f"{ex['db_id']}.sqlite")
        if db is None:
            continue
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            try:
                db.execute(ex["query"])
            except SlimsqlError:
                errors += 1 if _ == 0 else 0
            best = min(best, time.perf_counter() - start)
        times.append(best)
    for db in dbs.values():
        db.close()
    return {"module": slimsql.__file__, "queries": len(times), "errors": errors, "open_all_seconds": opened,
            "times": times}


def summary(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"median_ms": 1000 * statistics.median(ordered), "p90_ms": 1000 * ordered[int(0.9 * (len(ordered) - 1))],
            "total_s": sum(ordered)}


def child(src: Path | None, spider: Path, repeat: int) -> dict:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src) + os.pathsep + env.get("PYTHONPATH", "")
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import execution_overhead as e; "
            f"print(json.dumps(e.measure(__import__('pathlib').Path({str(spider)!r}), {repeat})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def end_to_end(src: Path | None, db: Path, runs: int) -> list[float]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src) + os.pathsep + env.get("PYTHONPATH", "")
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "slimsql.cli", "sql", "--db", str(db), "SELECT count(*) FROM singer"],
                       capture_output=True, env=env, check=True)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="9af6fb7", help="git ref of the layer to compare with")
    parser.add_argument("--spider", type=Path, default=SPIDER)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10, help="end-to-end slimsql sql runs per layer")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "execution-overhead.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.old, "src"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        old_src = Path(tmp) / "src"
        layers = {"old": old_src, "new": None}
        results = {name: child(src, args.spider, args.repeat) for name, src in layers.items()}
        e2e_db = args.spider / "database" / "concert_singer" / "concert_singer.sqlite"
        e2e = {name: end_to_end(src, e2e_db, args.runs) for name, src in layers.items()}
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "old_ref": args.old, "repeat": args.repeat,
        "per_query": {name: {**summary(r["times"]), "queries": r["queries"], "errors": r["errors"],
                             "open_all_seconds": r["open_all_seconds"], "module": r["module"]}
                      for name, r in results.items()},
        "end_to_end_sql": {name: {"median_s": statistics.median(s), "min_s": min(s), "runs": s}
                           for name, s in e2e.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("| layer | queries | errors | median ms | p90 ms | total s | open all dbs s | `slimsql sql` median s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in layers:
        q, e = report["per_query"][name], report["end_to_end_sql"][name]
        print(f"| {name} | {q['queries']} | {q['errors']} | {q['median_ms']:.3f} | {q['p90_ms']:.3f} | "
              f"{q['total_s']:.2f} | {q['open_all_seconds']:.2f} | {e['median_s']:.3f} |")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
