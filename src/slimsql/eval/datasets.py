"""Benchmark loaders, one per format, all into :class:`Example`.

* Spider: ``dev.json`` / ``train_spider.json``, ``tables.json``, ``database/<db_id>/*.sqlite``
* BIRD: ``dev.json`` with question, evidence, db_id, SQL, difficulty; ``dev_databases/<db_id>/<db_id>.sqlite``
* sql-create-context style: CREATE TABLE context + question + answer, no database; the
  harness builds an empty in-memory database from the context so validity still executes
* generic JSONL: ``{"question", "sql"|"query", "db"|"db_id", ...}`` one object a line

An example whose database is missing is kept, with ``db_paths == ()``, so runs can
count and report it instead of silently dropping it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError


@dataclass(frozen=True)
class Example:
    id: str
    question: str
    gold_sql: str
    db_id: str
    db_paths: tuple[Path, ...] = ()  # several files: test-suite evaluation
    evidence: str = ""  # BIRD's external knowledge
    difficulty: str = ""  # as labelled by the benchmark (BIRD), if any
    context: str = ""  # CREATE TABLE text for databases built from context

    @property
    def executable(self) -> bool:
        return bool(self.db_paths)

    @property
    def asked(self) -> str:
        """The question as the model is asked it (BIRD's evidence as a hint): evaluation and
        fine-tuning both use this."""
        return f"{self.question}\nHint: {self.evidence}" if self.evidence else self.question


@dataclass
class Dataset:
    name: str
    split: str
    examples: list[Example]
    missing_dbs: dict[str, int] = field(default_factory=dict)  # db_id -> examples without a database

    def only(self, db_ids: list[str] | None) -> "Dataset":
        """The examples of the databases named (all when none are)."""
        if not db_ids:
            return self
        unknown = set(db_ids) - {ex.db_id for ex in self.examples}
        if unknown:
            raise InputError(f"no examples for database(s): {', '.join(sorted(unknown))}")
        picked = [ex for ex in self.examples if ex.db_id in db_ids]
        missing = {d: n for d, n in self.missing_dbs.items() if d in db_ids}
        return Dataset(self.name, self.split, picked, missing)

    def sample(self, limit: int | None, seed: int = 0) -> "Dataset":
        """A reproducible subset (the same examples for the same seed and limit)."""
        if not limit or limit >= len(self.examples):
            return self
        import random

        chosen = sorted(random.Random(seed).sample(range(len(self.examples)), limit))
        picked = [self.examples[i] for i in chosen]
        missing: dict[str, int] = {}
        for ex in picked:
            if not ex.executable:
                missing[ex.db_id] = missing.get(ex.db_id, 0) + 1
        return Dataset(self.name, self.split, picked, missing)


def _read_json(path: Path):
    if not path.exists():
        raise InputError(f"file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise InputError(f"{path} is not valid JSON: {err}") from None


def _db_files(folder: Path, db_id: str) -> tuple[Path, ...]:
    """All SQLite files for one db_id; the one named after it first."""
    directory = folder / db_id
    if not directory.is_dir():
        return ()
    files = sorted(directory.glob("*.sqlite"), key=lambda p: (p.stem != db_id, p.name))
    return tuple(files)


def _finish(name: str, split: str, examples: list[Example]) -> Dataset:
    missing: dict[str, int] = {}
    for ex in examples:
        if not ex.executable:
            missing[ex.db_id] = missing.get(ex.db_id, 0) + 1
    return Dataset(name, split, examples, missing)


SPIDER_SPLITS = {"dev": "dev.json", "train": "train_spider.json"}


def load_spider(root: str | Path, split: str = "dev") -> Dataset:
    root = Path(root)
    if split not in SPIDER_SPLITS:
        raise InputError(f"unknown Spider split {split!r}; splits: {', '.join(SPIDER_SPLITS)}")
    records = _read_json(root / SPIDER_SPLITS[split])
    databases = root / "database"
    examples = [
        Example(id=f"{split}-{i}", question=r["question"], gold_sql=r["query"], db_id=r["db_id"],
                db_paths=_db_files(databases, r["db_id"]))
        for i, r in enumerate(records)
    ]
    return _finish("spider", split, examples)


def load_bird(root: str | Path, split: str = "dev") -> Dataset:
    root = Path(root)
    records = _read_json(root / f"{split}.json")
    databases = next((root / d for d in (f"{split}_databases", "databases", "database") if (root / d).is_dir()),
                     root / f"{split}_databases")
    examples = [
        Example(id=str(r.get("question_id", i)), question=r["question"], gold_sql=r.get("SQL") or r["query"],
                db_id=r["db_id"], db_paths=_db_files(databases, r["db_id"]), evidence=r.get("evidence", ""),
                difficulty=r.get("difficulty", ""))
        for i, r in enumerate(records)
    ]
    return _finish("bird", split, examples)


def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        raise InputError(f"file not found: {path}")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise InputError(f"{path}:{number} is not valid JSON") from None
    return rows


def build_context_db(context: str, folder: Path, key: str) -> Path | None:
    """An empty SQLite database made from CREATE TABLE text, or None if it does not build."""
    path = folder / f"{key}.sqlite"
    if path.exists():
        return path
    conn = sqlite3.connect(path)
    try:
        conn.executescript(context)
        conn.commit()
    except sqlite3.Error:
        conn.close()
        path.unlink(missing_ok=True)
        return None
    conn.close()
    return path


def load_create_context(path: str | Path, workdir: str | Path | None = None) -> Dataset:
    """sql-create-context style records: {"context", "question", "answer"} (JSON list or JSONL)."""
    path = Path(path)
    records = _jsonl(path) if path.suffix == ".jsonl" else _read_json(path)
    folder = Path(workdir or tempfile.mkdtemp(prefix="slimsql-context-"))
    folder.mkdir(parents=True, exist_ok=True)
    examples = []
    for i, r in enumerate(records):
        context = r.get("context", "")
        db = build_context_db(context, folder, hashlib.sha1(context.encode()).hexdigest()[:16]) if context else None
        examples.append(Example(id=str(r.get("id", i)), question=r["question"], gold_sql=r.get("answer") or r["sql"],
                                db_id=f"context-{i}", db_paths=(db,) if db else (), context=context))
    return _finish("create-context", path.stem, examples)


def load_jsonl(path: str | Path, db: str | Path | None = None, db_root: str | Path | None = None) -> Dataset:
    """Generic JSONL: question + sql/query, and a database from ``db``, the record's "db",
    or ``db_root/<db_id>/``."""
    path = Path(path)
    examples = []
    for i, r in enumerate(_jsonl(path)):
        if "question" not in r or not (r.get("sql") or r.get("query")):
            raise InputError(f"{path}: record {i + 1} needs 'question' and 'sql' (or 'query')")
        target = r.get("db") or db
        db_id = r.get("db_id") or (Path(target).stem if target else "")
        if target:
            paths = (Path(target),) if Path(target).exists() else ()
        elif db_root and db_id:
            paths = _db_files(Path(db_root), db_id)
        else:
            paths = ()
        examples.append(Example(id=str(r.get("id", i)), question=r["question"], gold_sql=r.get("sql") or r["query"],
                                db_id=db_id or "?", db_paths=paths, evidence=r.get("evidence", ""),
                                difficulty=r.get("difficulty", "")))
    return _finish("jsonl", path.stem, examples)
