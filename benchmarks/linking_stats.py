"""Value linking and schema pruning on Spider dev, with no model.

* schema size: ``render_create`` of each dev database (3 sample values per text column,
  as the default settings show it) in estimated tokens (characters / 4); which exceed
  1500 and 2000 tokens;
* the value index of the ``--largest`` biggest dev database files: build time (fresh, no
  cache), values, columns, size of the cache file, mean and max match time per dev question;
* value recall: the dev questions whose gold query has a text literal (``= 'x'``; LIKE patterns
  aside), and how
  many of those literals :meth:`ValueIndex.match` finds (case aside);
* pruning recall: for each budget, the dev questions whose database is over it, and how
  many keep every table their gold query uses.

    .venv/bin/python benchmarks/linking_stats.py   # -> benchmarks/results/linking-stats.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import sqlglot
from sqlglot import exp

from slimsql.db.sqlite import SQLiteDatabase
from slimsql.infer import linking
from slimsql.schema import render_create

SPIDER = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "spider"
OUT = Path(__file__).resolve().parent / "results" / "linking-stats.json"


def tokens(text: str) -> int:
    return len(text) // 4


def gold_parts(sql: str) -> tuple[set[str], set[str]]:
    """Lower-cased table names and text literals of a gold query ({} when it does not parse)."""
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except sqlglot.errors.ParseError:
        return set(), set()
    tables = {t.name.lower() for t in tree.find_all(exp.Table)}
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    literals = {lit.this.lower() for lit in tree.find_all(exp.Literal)  # LIKE patterns are not values
                if lit.is_string and "%" not in lit.this and not lit.this.strip().isdigit() and len(lit.this) >= 2}
    return tables - ctes, literals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spider", type=Path, default=SPIDER)
    ap.add_argument("--largest", type=int, default=5)
    ap.add_argument("--budgets", type=int, nargs="+", default=[500, 1000, 1500, 2000])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    examples = json.loads((args.spider / "dev.json").read_text())
    files = {}
    for db_id in sorted({e["db_id"] for e in examples}):
        path = args.spider / "database" / db_id / f"{db_id}.sqlite"
        if path.exists():
            files[db_id] = path
    schemas, sizes = {}, {}
    for db_id, path in files.items():
        with SQLiteDatabase(path) as db:
            schemas[db_id] = db.schema(3)
        sizes[db_id] = tokens(render_create(schemas[db_id]))

    # Value indexes: built fresh for every database (recall), timed on the largest files.
    largest = sorted(files, key=lambda d: -files[d].stat().st_size)[: args.largest]
    indexes, builds = {}, []
    for db_id, path in files.items():
        with SQLiteDatabase(path) as db:
            start = time.perf_counter()
            indexes[db_id] = linking.ValueIndex.build(db)
            seconds = time.perf_counter() - start
        if db_id in largest:
            index = indexes[db_id]
            payload = json.dumps({"version": index.VERSION, "values": [[t, c, v] for (t, c), v in index.values.items()]},
                                 ensure_ascii=False)
            index.match("warm up")  # the first call imports rapidfuzz
            laps = []
            for e in examples:
                if e["db_id"] == db_id:
                    t0 = time.perf_counter()
                    index.match(e["question"])
                    laps.append(time.perf_counter() - t0)
            builds.append({"db_id": db_id, "file_mb": round(path.stat().st_size / 2**20, 2),
                           "build_s": round(seconds, 3), "values": len(index), "columns": len(index.values),
                           "cache_kb": round(len(payload.encode()) / 1024, 1), "questions": len(laps),
                           "match_ms_mean": round(1000 * statistics.mean(laps), 2) if laps else None,
                           "match_ms_max": round(1000 * max(laps), 2) if laps else None})

    with_literal = found = 0
    matched_questions = matches_total = 0
    recall = {b: {"questions_over_budget": 0, "all_gold_tables_kept": 0, "tables_kept_mean": 0.0}
              for b in args.budgets}
    for e in examples:
        if e["db_id"] not in files:
            continue
        tables, literals = gold_parts(e["query"])
        matches = indexes[e["db_id"]].match(e["question"])
        matched_questions += bool(matches)
        matches_total += len(matches)
        if literals:
            with_literal += 1
            found += literals <= {m.value.lower() for m in matches}
        schema = schemas[e["db_id"]]
        for budget in args.budgets:
            if sizes[e["db_id"]] <= budget:
                continue
            kept = linking.prune(schema, e["question"], budget_tokens=budget, count_tokens=tokens, matches=matches)
            r = recall[budget]
            r["questions_over_budget"] += 1
            r["all_gold_tables_kept"] += tables <= {n.lower() for n in kept.names()}
            r["tables_kept_mean"] += len(kept.tables)
    for r in recall.values():
        if r["questions_over_budget"]:
            r["tables_kept_mean"] = round(r["tables_kept_mean"] / r["questions_over_budget"], 1)

    # The worst case the bounds allow: 200,000 values (100 columns x 2,000), a 20-word question.
    rng = random.Random(0)
    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november".split()
    big = linking.ValueIndex({("t", f"c{j}"): [f"{rng.choice(words)}{i} {rng.choice(words)}{i}" for i in range(2000)]
                              for j in range(100)})
    question = "What is the total amount of orders shipped to customers living in New York by the sales team in 2023?"
    big.match("warm up")
    start = time.perf_counter()
    big.match(question)
    synthetic_ms = round(1000 * (time.perf_counter() - start), 1)

    counted = [e for e in examples if e["db_id"] in files]
    result = {
        "spider_dev": {"databases": len(files), "missing": sorted({e["db_id"] for e in examples} - set(files)),
                       "questions": len(counted)},
        "schema_tokens": {"estimate": "len(render_create(schema with 3 samples)) // 4",
                          "per_database": dict(sorted(sizes.items(), key=lambda kv: -kv[1])),
                          "over_1500": sorted(d for d, s in sizes.items() if s > 1500),
                          "over_2000": sorted(d for d, s in sizes.items() if s > 2000),
                          "questions_over_1500": sum(sizes[e["db_id"]] > 1500 for e in counted),
                          "questions_over_2000": sum(sizes[e["db_id"]] > 2000 for e in counted)},
        "value_index_largest": builds,
        "match_ms_200k_values_20_words": synthetic_ms,
        "value_matches": {"questions_with_a_match": matched_questions, "matches_mean": round(matches_total / len(counted), 2),
                          "gold_with_text_literal": with_literal, "all_literals_found": found},
        "prune_recall": recall,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "schema_tokens"}, indent=1))
    print({k: v for k, v in result["schema_tokens"].items() if k != "per_database"})


if __name__ == "__main__":
    main()
