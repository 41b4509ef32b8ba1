"""The first answer of a new process: ``slimsql ask`` wall time, first ever on a database vs seen before.

Every question is its own ``slimsql ask --json`` process, as a command-line user runs
it: the 12 demo-database questions and the 20 Spider dev questions (5 each from 4
seeded databases) of benchmarks/latency.py. Measured twice on a
fresh, private prefix cache: with the cache (the first process on each database
evaluates and saves the schema prompt, later ones load it) and without it
(``SLIMSQL_PREFIX_CACHE=0``: every process evaluates the whole prompt). Besides the
wall time, each process's own timings split the road (prefix, generation,
execution); the rest of the wall time is process start (imports, model load, opening
the database, exit), of which the process reports its model load. Also
recorded: the time a new process takes to import slimsql's CLI and llama-cpp-python,
and the entries and bytes the cache kept.

    python benchmarks/first_answer.py   # -> benchmarks/results/first-answer-<model>-<preset>.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from latency import DEMO_EXTRA, ROOT, spider_sample, summarize

from slimsql.demo import DEMO_QUESTIONS, build_demo


DEFAULT_COMMAND = str(Path(sys.executable).parent / "slimsql")


def ask(db: Path, question: str, model: str, preset: str, env: dict, slimsql: str) -> dict:
    command = [slimsql, "ask", "--db", str(db), "--json", "--model", model,
               "--preset", preset, question]
    start = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    row = {"db": db.stem, "question": question, "wall_s": round(wall, 3), "exit": out.returncode}
    try:
        data = json.loads(out.stdout)
        timings = row["timings"] = data["timings"]
        row["start_s"] = round(wall - timings["total"], 3)  # imports, model load, opening the database, exit
        # the model's load; with the preload (slimsql.launch), only the wait for it after the imports
        row["model_load_s"] = data.get("process", {}).get("model_load")  # absent before it was reported
        row["preloaded"] = data.get("process", {}).get("preloaded")  # absent before the preload existed
    except (ValueError, KeyError):
        row["error"] = (out.stderr.strip().splitlines() or [""])[-1][:200]
    return row


def import_seconds(module: str, repeats: int = 3) -> float:
    """Median wall time of a new Python process that only imports ``module``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 3)


def _median(values) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


def run(suites: dict[str, list[tuple[Path, str]]], model: str, preset: str, cache: bool, slimsql: str,
        repeats: int = 1) -> dict:
    """Every suite's questions in order, ``repeats`` times, each time on a fresh, empty cache
    (so each repeat has its first question on each database); the summaries pool the repeats."""
    from slimsql.backends import prefix_cache

    report, rows_of = {}, {suite: [] for suite in suites}
    for repeat in range(repeats):
        folder = tempfile.mkdtemp(prefix="slimsql-bench-prefix-")
        env = {**os.environ, "SLIMSQL_PREFIX_DIR": folder, "SLIMSQL_PREFIX_CACHE": "1" if cache else "0"}
        for suite, questions in suites.items():
            seen = set()
            for db, question in questions:
                row = ask(db, question, model, preset, env, slimsql)
                row["first_on_db"] = db not in seen
                row["repeat"] = repeat
                seen.add(db)
                rows_of[suite].append(row)
                print(f"  cache={'on' if cache else 'off'} {suite} #{repeat}: {row['wall_s']:.2f}s "
                      f"{'first' if row['first_on_db'] else 'seen '} {question[:50]}", file=sys.stderr)
    for suite, rows in rows_of.items():
        first = [r["wall_s"] for r in rows if r["first_on_db"]]
        later = [r["wall_s"] for r in rows if not r["first_on_db"]]
        starts = [r["start_s"] for r in rows if "start_s" in r]
        parts = {k: round(statistics.median(r["timings"].get(k, 0.0) for r in rows if "timings" in r), 3)
                 for k in ("prefix", "generation", "execution")}
        report[suite] = {"all": summarize([r["wall_s"] for r in rows]), "first_on_db": summarize(first),
                         "seen_before": summarize(later) if later else None,
                         "median_parts_s": {"process_start": round(statistics.median(starts), 3),
                                            "of_which_model_load": _median(r.get("model_load_s") for r in rows),
                                            **parts}
                         if starts else None,
                         "answered": sum(r["exit"] == 0 for r in rows), "questions": rows}
        if repeats > 1:  # how far a repeat's own median moves with the machine
            report[suite]["seen_before_median_by_repeat"] = [
                _median(r["wall_s"] for r in rows if r["repeat"] == k and not r["first_on_db"]) for k in range(repeats)]
    report["store"] = prefix_cache.summary(Path(folder))  # entries and bytes the last repeat's cache kept
    return report


def question_options(doc: str) -> argparse.ArgumentParser:
    """The options of the benchmarks that ask the demo and Spider questions (this one, serve_latency.py)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--spider-dbs", type=int, default=4)
    parser.add_argument("--per-db", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    return parser


def taught_examples(db: Path, count: int) -> list[tuple[str, str]]:
    """``count`` question/SQL pairs on the demo database, from templates over its tables, columns
    and values: a knowledge file of a size a user may teach (their wording matters less here
    than their number: this measures what a file of that size costs a question)."""
    import sqlite3

    pairs: list[tuple[str, str]] = []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        for table in tables:
            pairs.append((f"How many {table.replace('_', ' ')} are there?", f"SELECT count(*) FROM {table}"))
        for table in tables:
            for _, column, kind, *_ in con.execute(f"PRAGMA table_info({table})"):
                words = f"{column.replace('_', ' ')} of the {table.replace('_', ' ')}"
                pairs.append((f"List the {words}.", f"SELECT {column} FROM {table}"))
                if kind == "TEXT":
                    for (value,) in con.execute(f"SELECT DISTINCT {column} FROM {table} WHERE {column} IS NOT NULL "
                                                f"ORDER BY {column} LIMIT 12"):
                        quoted = str(value).replace("'", "''")
                        pairs.append((f"How many {table.replace('_', ' ')} have {column.replace('_', ' ')} {value}?",
                                      f"SELECT count(*) FROM {table} WHERE {column} = '{quoted}'"))
                elif kind in ("REAL", "INTEGER") and not column.endswith("_id"):
                    pairs += [(f"What is the average {words}?", f"SELECT avg({column}) FROM {table}"),
                              (f"What is the largest {words}?", f"SELECT max({column}) FROM {table}")]
    if len(pairs) < count:
        raise SystemExit(f"the templates give {len(pairs)} examples, fewer than {count}")
    return pairs[:count]


def write_knowledge(db: Path, count: int) -> Path:
    """The demo's own knowledge file, with ``count`` examples in all (its three, then templated ones)."""
    from slimsql import knowledge as kn
    from slimsql.demo import demo_knowledge

    shipped = demo_knowledge()
    extra = [kn.Example(kn.entry_id("e", q, sql), q, sql)
             for q, sql in taught_examples(db, max(0, count - len(shipped.examples)))]
    path = kn.default_path(db)
    kn.update(path, lambda _: kn.Knowledge(notes=shipped.notes, descriptions=shipped.descriptions,
                                           examples=shipped.examples + tuple(extra)))
    return path


def question_suites(args: argparse.Namespace, folder: Path) -> dict[str, list[tuple[Path, str]]]:
    """The questions those benchmarks ask: the demo database's (built in ``folder``), and the
    seeded Spider dev sample where Spider is present."""
    demo = build_demo(folder / "shop.sqlite")
    if getattr(args, "knowledge", 0):
        write_knowledge(demo, args.knowledge)
    suites = {"demo": [(demo, q) for q in DEMO_QUESTIONS + DEMO_EXTRA]}
    if spider := spider_sample(args.spider_dbs, args.per_db, args.seed):
        suites["spider-dev-sample"] = spider
    return suites


def main() -> int:
    parser = question_options(__doc__)
    parser.add_argument("--repeats", type=int, default=1,
                        help="ask every question this many times with the cache (each time on a fresh cache); "
                             "the summaries pool them")
    parser.add_argument("--slimsql", default=DEFAULT_COMMAND,
                        help="the slimsql command to time (e.g. a script running another checkout)")
    parser.add_argument("--knowledge", type=int, default=0, metavar="N",
                        help="give the demo database a knowledge file of N examples (its notes, descriptions "
                             "and three examples, then templated ones) and ask with it")
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory()
    suites = question_suites(args, Path(tmp.name))
    results = {"benchmark": "slimsql first answer (a new process per question)",
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
               "model": args.model, "preset": args.preset, "command": "python " + " ".join(sys.argv),
               "knowledge_examples": args.knowledge or None,  # the demo database's taught examples
               "SLIMSQL_PRELOAD": os.environ.get("SLIMSQL_PRELOAD"),  # 0: the model loads after the imports
               # this checkout's imports; not measured when timing another command
               "import_s": {m: import_seconds(m) for m in ("slimsql.cli", "llama_cpp")}
               if args.slimsql == DEFAULT_COMMAND else None,
               "slimsql": args.slimsql,
               "repeats": args.repeats,
               "with_cache": run(suites, args.model, args.preset, True, args.slimsql, args.repeats),
               "without_cache": run(suites, args.model, args.preset, False, args.slimsql)}
    taught = f"-knowledge{args.knowledge}" if args.knowledge else ""
    out = args.out or ROOT / "benchmarks" / "results" / f"first-answer-{args.model}-{args.preset}{taught}.json"
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print("| suite | prefix cache | first on a database: median s | seen before: median s | p90 s | answered |")
    print("|---|---|---|---|---|---|")
    for mode in ("with_cache", "without_cache"):
        for suite, data in results[mode].items():
            if suite == "store":
                continue
            seen = data["seen_before"] or {}
            print(f"| {suite} | {'on' if mode == 'with_cache' else 'off'} | {data['first_on_db']['median_s']} "
                  f"(n={data['first_on_db']['n']}) | {seen.get('median_s', '-')} | {seen.get('p90_s', '-')} "
                  f"| {data['answered']}/{len(data['questions'])} |")
    for suite, data in results["with_cache"].items():
        if suite != "store":
            print(f"{suite}, cache on, median parts (s): {data['median_parts_s']}")
    print(f"imports (s): {results['import_s']}; cache kept: {results['with_cache']['store']}")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
