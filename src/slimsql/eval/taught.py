"""Evaluating what teaching gives: a benchmark split per database into taught and tested queries.

``slimsql eval spider --teach 10``: for each database, a seeded 10 of its distinct gold queries
are taught, each with every question that has it, as verified examples in a knowledge file
per database (kept in the run folder's ``knowledge/``, so anyone can check that no tested
query is among the taught ones); the examples of the other queries are tested. Queries are
told apart after lower-casing and collapsing white space, since a benchmark asks many a query
twice in other words, and a question whose query was taught would be answered by copying.
``--no-knowledge`` tests the same examples without the knowledge: the paired baseline.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from .. import knowledge as kn
from .datasets import Dataset, Example

FOLDER = "knowledge"


def normalised(sql: str) -> str:
    """A gold query as it is told apart from others: lower case, one space, no final semicolon."""
    return " ".join(sql.lower().replace(";", " ").split())


def split(dataset: Dataset, per_database: int, seed: int = 0) -> tuple[Dataset, dict[str, list[Example]]]:
    """The tested examples, and the taught ones of each database. A database with no more than
    ``per_database`` distinct queries is all taught (nothing of it is tested)."""
    by_db: dict[str, dict[str, list[Example]]] = defaultdict(lambda: defaultdict(list))
    for example in dataset.examples:
        by_db[example.db_id][normalised(example.gold_sql)].append(example)
    taught: dict[str, list[Example]] = {}
    kept: set[str] = set()
    for db_id in sorted(by_db):
        queries = list(by_db[db_id])  # in the order the benchmark first asks them
        chosen = set(random.Random(f"{seed}:{db_id}").sample(queries, min(per_database, len(queries))))
        taught[db_id] = [ex for q in queries if q in chosen for ex in by_db[db_id][q]]
        kept.update(ex.id for q in queries if q not in chosen for ex in by_db[db_id][q])
    tested = [ex for ex in dataset.examples if ex.id in kept]
    missing: dict[str, int] = {}
    for ex in tested:
        if not ex.executable:
            missing[ex.db_id] = missing.get(ex.db_id, 0) + 1
    return Dataset(dataset.name, dataset.split, tested, missing), taught


def write(out: Path, taught: dict[str, list[Example]]) -> dict[str, Path]:
    """Each database's taught examples as its knowledge file in ``out/knowledge/``; the paths."""
    folder = Path(out) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for db_id, examples in taught.items():
        entries = tuple(kn.Example(kn.entry_id("e", ex.question, ex.gold_sql), ex.question, ex.gold_sql)
                        for ex in examples)
        unique = tuple({e.id: e for e in entries}.values())  # a question asked twice with one query
        path = folder / f"{db_id}{kn.SUFFIX}"
        text = kn.dump(kn.Knowledge(examples=unique))
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        paths[db_id] = path
    return paths


def load_folder(folder: Path, db_ids) -> dict[str, kn.Knowledge]:
    """The knowledge file of each database in ``folder`` (``<db_id>.knowledge.yaml``), where there is one."""
    out = {}
    for db_id in sorted(set(db_ids)):
        found = kn.load(Path(folder) / f"{db_id}{kn.SUFFIX}")
        if found:
            out[db_id] = found
    return out
