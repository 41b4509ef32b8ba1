"""defog sql-eval on PostgreSQL and on SQLite, and the two engines compared.

    python benchmarks/sqleval.py run --engine postgres [--model M] [--preset P] [--limit N]
    python benchmarks/sqleval.py run --engine sqlite ...
    python benchmarks/sqleval.py compare RUN_POSTGRES RUN_SQLITE --out FILE.md
    python benchmarks/sqleval.py schemas [--budget 1024]

``run --engine postgres`` starts a throwaway PostgreSQL cluster (``slimsql.db.pgcluster``, a
Unix socket in a temporary folder), loads the eleven sql-eval dumps with their column
descriptions as comments, and runs ``slimsql eval sql-eval --db postgresql://reader@...``
(a SELECT-only role) into ``benchmarks/results/sql-eval-postgres-<model>-<preset>``;
``--engine sqlite`` runs the SQLite variant (six databases) into ``...-sqlite-...``. A run
folder is resumed if it exists. ``compare`` pairs the two runs' answers to the same
questions (same database and question text: the two CSV files order them differently)
and writes EX on each engine with a paired bootstrap interval of the difference.
``schemas`` measures the prompt of every sql-eval database on both engines (the default
style, in the model's own tokens) and what schema linking (``--prune-tokens``) keeps of it
for each question, into ``benchmarks/results/sql-eval-prompt-tokens.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "benchmarks" / "sql-eval"
RESULTS = ROOT / "benchmarks" / "results"


def run(args: argparse.Namespace) -> int:
    from slimsql import cli, models

    model = args.model or models.DEFAULT_MODEL
    out = Path(args.out or RESULTS / f"sql-eval-{args.engine}-{model}-{args.preset}")
    argv = ["eval", "sql-eval", "--data", str(args.data), "--out", str(out), "--model", model,
            "--preset", args.preset] + (["--limit", str(args.limit)] if args.limit else [])
    argv += [a for db in args.db_id or () for a in ("--db-id", db)]
    argv += ["--prune-tokens", str(args.prune_tokens)] if args.prune_tokens else []
    if args.engine == "sqlite":
        return cli.main(argv)
    from slimsql.db.pgcluster import Cluster, unavailable
    from slimsql.eval import sqleval

    reason = unavailable()
    if reason:
        print(f"error: no PostgreSQL server can be started here: {reason}", file=sys.stderr)
        return 1
    with Cluster() as cluster:
        loaded = sqleval.load_postgres(cluster, args.data)
        print(f"PostgreSQL {cluster.port} on {cluster.host}: loaded {', '.join(loaded)}", flush=True)
        return cli.main(argv + ["--db", cluster.url("postgres", user="reader")])


def _answers(folder: Path) -> dict[tuple[str, str], dict]:
    rows = {}
    for line in (folder / "predictions.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("executable") and not record.get("gold_error"):
            rows[(record["db_id"], " ".join(record["question"].split()))] = record
    return rows


def _interval(diffs: list[int], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng, n = random.Random(seed), len(diffs)
    means = sorted(sum(rng.choice(diffs) for _ in range(n)) / n for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def compare(args: argparse.Namespace) -> int:
    pg, lite = _answers(Path(args.postgres)), _answers(Path(args.sqlite))
    both = sorted(set(pg) & set(lite))
    if not both:
        print("error: the two runs share no question", file=sys.stderr)
        return 1
    diffs = [int(pg[k]["ex"]) - int(lite[k]["ex"]) for k in both]
    low, high = _interval(diffs)
    by_db: dict[str, list[tuple[int, int]]] = {}
    for key in both:
        by_db.setdefault(key[0], []).append((int(pg[key]["ex"]), int(lite[key]["ex"])))
    pct = lambda xs: f"{100 * sum(xs) / len(xs):.1f}%"  # noqa: E731
    config = json.loads((Path(args.postgres) / "config.json").read_text())
    lines = [f"# sql-eval, PostgreSQL vs SQLite: {config['model']}, preset {config.get('preset')}", "",
             f"Runs: `{args.postgres}` (PostgreSQL) and `{args.sqlite}` (SQLite); the questions both ran "
             f"(same database, same question text): {len(both)}.", "",
             "| database | questions | EX PostgreSQL | EX SQLite |", "|---|---|---|---|"]
    for db, pairs in sorted(by_db.items()):
        lines.append(f"| {db} | {len(pairs)} | {pct([a for a, _ in pairs])} | {pct([b for _, b in pairs])} |")
    lines.append(f"| **all** | {len(both)} | {pct([int(pg[k]['ex']) for k in both])} | "
                 f"{pct([int(lite[k]['ex']) for k in both])} |")
    lines += ["", f"PostgreSQL minus SQLite: {100 * sum(diffs) / len(diffs):+.1f} points, paired bootstrap 95% "
              f"interval [{100 * low:+.1f}, {100 * high:+.1f}]; right only on PostgreSQL: {diffs.count(1)}, "
              f"only on SQLite: {diffs.count(-1)}.", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def schemas(args: argparse.Namespace) -> int:
    import statistics

    from llama_cpp import Llama

    from slimsql import infer, models
    from slimsql.db import open_database
    from slimsql.db.pgcluster import Cluster
    from slimsql.eval import sqleval
    from slimsql.infer import linking
    from slimsql.prompts import get_style

    vocab = Llama(model_path=str(models.resolve(args.model or models.DEFAULT_MODEL).path), vocab_only=True,
                  verbose=False)
    count = lambda text: len(vocab.tokenize(text.encode(), add_bos=False, special=False))  # noqa: E731
    settings = infer.resolve("default")
    render = get_style(settings.style).schema_format
    out = {"model": args.model or models.DEFAULT_MODEL, "style": settings.style, "samples": settings.samples,
           "budget_tokens": args.budget, "engines": {}}

    def measure(engine: str, dataset) -> None:
        found = out["engines"][engine] = {}
        for name in sorted({e.db_id for e in dataset.examples if e.executable}):
            questions = [e for e in dataset.examples if e.db_id == name]
            db = open_database(questions[0].db_paths[0])
            try:
                schema = db.schema(settings.samples)
                pruned = [count(render(linking.prune(schema, e.question, budget_tokens=args.budget,
                                                     count_tokens=count, render=render))) for e in questions]
                kept = [len(linking.prune(schema, e.question, budget_tokens=args.budget, count_tokens=count,
                                          render=render).tables) for e in questions]
                prompt = infer.prefix(schema, settings)
                found[name] = {"tables": len(schema.tables), "columns": sum(len(t.columns) for t in schema.tables),
                               "schema_tokens": count(render(schema)),
                               "prompt_tokens": count("".join(m["content"] for m in prompt)),
                               "pruned_schema_tokens_median": statistics.median(pruned),
                               "pruned_schema_tokens_max": max(pruned),
                               "tables_kept_median": statistics.median(kept), "questions": len(questions)}
            finally:
                db.close()
            print(engine, name, found[name], flush=True)

    measure("sqlite", sqleval.load(args.data, engine="sqlite"))
    with Cluster() as cluster:
        sqleval.load_postgres(cluster, args.data)
        measure("postgres", sqleval.load(args.data, engine="postgres", server=cluster.url("postgres", "reader")))
    target = RESULTS / "sql-eval-prompt-tokens.json"
    target.write_text(json.dumps(out, indent=2) + "\n")
    print(f"-> {target}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--engine", choices=("postgres", "sqlite"), required=True)
    r.add_argument("--model")
    r.add_argument("--preset", default="default")
    r.add_argument("--limit", type=int)
    r.add_argument("--db-id", action="append", help="only this database's questions (repeatable)")
    r.add_argument("--prune-tokens", type=int, help="schema linking: prune the schema above this many tokens")
    r.add_argument("--data", type=Path, default=DATA)
    r.add_argument("--out")
    r.set_defaults(func=run)
    c = sub.add_parser("compare")
    c.add_argument("postgres")
    c.add_argument("sqlite")
    c.add_argument("--out", required=True)
    c.set_defaults(func=compare)
    t = sub.add_parser("schemas")
    t.add_argument("--model")
    t.add_argument("--budget", type=int, default=1024)
    t.add_argument("--data", type=Path, default=DATA)
    t.set_defaults(func=schemas)
    args = parser.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
