"""How much correct SQL the schema grammar lets through, with no generation.

For every Spider dev example, the decoding grammar of its database
(:func:`slimsql.infer.grammar.build`) is asked, through llama.cpp's own grammar
sampler and the model's tokenizer, whether the gold query is a sentence of it.
A gold query the grammar refuses is a correct answer that constrained decoding
could never write, so this is the grammar's recall on correct SQL; the reasons
are listed for the refused ones (first 40). The other direction: each gold query
with its first column name misspelled (``name`` -> ``name_x``, a name the
database lacks) must be refused. Also reported: the size of each
database's grammar and the time to build it. With ``--runs``, the failed queries of
those eval runs are sorted by the name the database refused: a real table or column
of the schema used in the wrong place (which a lexical grammar cannot prevent), a
name the schema lacks, or another error.

    .venv/bin/python benchmarks/grammar_coverage.py   # -> benchmarks/results/grammar-coverage.json
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

import sqlglot
from sqlglot import exp

from slimsql.backends.llama_cpp import LlamaCppBackend
from slimsql.db.sqlite import SQLiteDatabase
from slimsql.eval.datasets import load_spider
from slimsql.eval.report import load_run
from slimsql.infer import grammar

SPIDER = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "spider"
OUT = Path(__file__).resolve().parent / "results" / "grammar-coverage.json"


def misspelled(sql: str, names: set[str]) -> str | None:
    """``sql`` with its first column renamed to a name the schema lacks (None if it has no column)."""
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except sqlglot.errors.ParseError:
        return None
    for column in tree.find_all(exp.Column):
        if column.name and column.name.lower() in names:
            column.this.replace(exp.to_identifier(column.name + "_x"))
            return tree.sql(dialect="sqlite")
    return None


def failures(run: Path, names: dict[str, set[str]]) -> dict[str, int]:
    """The run's failed queries by the kind of name the database refused."""
    counts = {"real name, wrong place": 0, "name the schema lacks": 0, "other error": 0}
    for record in load_run(run)[1]:
        if not record.scored or not record.exec_error:
            continue
        refused = re.search(r"no such (?:column|table): (\S+)", record.exec_error)
        if refused is None:
            counts["other error"] += 1
        elif refused.group(1).split(".")[-1].lower() in names[record.db_id]:
            counts["real name, wrong place"] += 1
        else:
            counts["name the schema lacks"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SPIDER)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b", help="whose tokenizer cuts the text")
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="eval run folders whose failures to sort")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    backend = LlamaCppBackend(args.model, n_threads=1)
    examples = load_spider(args.data, "dev").examples
    grammars: dict[str, str] = {}
    build_s: list[float] = []
    accepted, refused = 0, []
    wrong, wrong_refused = 0, 0
    names: dict[str, set[str]] = {}
    for example in examples:
        if not example.db_paths:
            continue
        if example.db_id not in grammars:
            schema = SQLiteDatabase(example.db_paths[0]).schema(0)
            start = time.perf_counter()
            grammars[example.db_id] = grammar.build(schema)
            build_s.append(time.perf_counter() - start)
            names[example.db_id] = {n.lower() for t in schema.tables for n in [t.name, *(c.name for c in t.columns)]}
        if backend.grammar_accepts(grammars[example.db_id], example.gold_sql):
            accepted += 1
        else:
            refused.append({"id": example.id, "db_id": example.db_id, "gold_sql": example.gold_sql})
        bad = misspelled(example.gold_sql, names[example.db_id])
        if bad is not None:
            wrong += 1
            wrong_refused += not backend.grammar_accepts(grammars[example.db_id], bad)
    total = accepted + len(refused)
    result = {
        "benchmark": "spider dev (examples whose database exists)",
        "model_tokenizer": backend.model_name,
        "examples": total,
        "accepted": accepted,
        "accepted_share": round(accepted / total, 4),
        "misspelled": wrong,
        "misspelled_refused": wrong_refused,
        "grammar_chars": {"median": statistics.median(map(len, grammars.values())),
                          "max": max(map(len, grammars.values()))},
        "build_ms": {"median": round(1000 * statistics.median(build_s), 2), "max": round(1000 * max(build_s), 2)},
        "run_failures": {str(run): failures(run, names) for run in args.runs},
        "refused": refused[:40],
        "command": "python " + " ".join(sys.argv),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"grammar accepts {accepted}/{total} gold queries ({result['accepted_share']:.1%}) and refuses "
          f"{wrong_refused}/{wrong} with a misspelled column; -> {args.out}")


if __name__ == "__main__":
    main()
