"""defog sql-eval: its questions, its gold-query alternatives, its databases on two engines.

Layout (``../shared/benchmarks/sql-eval``): ``questions/questions_gen_<dialect>.csv`` (question,
query, db_name, query_category, instructions) and ``databases/<name>/<name>.sql``, a
PostgreSQL dump with data, plus ``<name>.json`` with a description of every column.

* Gold cells hold several acceptable queries: separated by ``;``, and with ``{a, b}`` for
  "any non-empty choice of these columns" (``GROUP BY {}`` repeats the choice).
  :func:`expand_gold` spells out every alternative, as sql-eval's own harness does.
* PostgreSQL: every database is loaded from its dump into a server (:func:`load_postgres`,
  with the column descriptions as ``COMMENT ON COLUMN``); examples name
  ``postgresql://.../<db_name>`` URLs.
* SQLite: the six dumps that carry over (:data:`SQLITE_DATABASES`) are translated statement
  by statement with sqlglot into SQLite files in a cache folder (:func:`build_sqlite`), the
  column descriptions as comments in the CREATE TABLE text, which slimsql's SQLite engine
  reads back into the prompt, so both engines' prompts carry the same descriptions.

Scoring uses sql-eval's rule (``execution.sqleval_match``): the prediction is right when
its result equals the gold's, or holds every gold column (extra columns allowed).
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import sqlite3
from datetime import date
from pathlib import Path
from urllib.parse import quote as url_quote
from urllib.parse import urlsplit

import sqlglot
from sqlglot import exp

from ..errors import InputError
from .datasets import Dataset, Example, _finish

#: The databases whose dumps load into SQLite after translation (the rest need PostgreSQL types).
SQLITE_DATABASES = ("academic", "atis", "geography", "restaurants", "scholar", "yelp")
#: The question sets per engine (``--questions``); ``questions_gen`` is the 210-question set.
QUESTION_SETS = ("questions_gen", "instruct_basic", "instruct_advanced")
ENGINES = ("postgres", "sqlite")
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "slimsql" / "sql-eval"


def expand_gold(query: str) -> list[str]:
    """Every acceptable gold query of one cell: split on ``;``, each ``{a, b, ...}`` replaced by
    every non-empty combination of its columns (in order), ``GROUP BY {}`` by the same choice."""
    out: list[str] = []
    for part in query.split(";"):
        part = part.strip()
        if not part:
            continue
        start = part.find("{")
        end = part.find("}", start + 1)
        if start == -1 or end == -1:
            out.append(part)
            continue
        options = part[start + 1:end].split(",")
        for r in range(1, len(options) + 1):
            for choice in itertools.combinations(options, r):
                columns = ", ".join(c.strip() for c in choice)
                rest = part[end + 1:].replace("GROUP BY {}", f"GROUP BY {columns}")
                out.append(part[:start] + columns + rest)
    return out


def _questions(root: Path, engine: str, questions: str) -> list[dict]:
    if questions not in QUESTION_SETS:
        raise InputError(f"unknown sql-eval question set {questions!r}; sets: {', '.join(QUESTION_SETS)}")
    path = root / "questions" / f"{questions}_{engine}.csv"
    if not path.exists():
        raise InputError(f"file not found: {path} (is --data the sql-eval folder?)")
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def descriptions(root: Path, name: str) -> dict[str, dict[str, str]]:
    """table -> column -> description, from ``databases/<name>/<name>.json`` (empty if absent)."""
    path = root / "databases" / name / f"{name}.json"
    if not path.exists():
        return {}
    meta = json.loads(path.read_text(encoding="utf-8")).get("table_metadata", {})
    return {table: {c["column_name"]: c.get("column_description", "") for c in columns}
            for table, columns in meta.items()}


def database_url(server: str, name: str) -> str:
    """``server`` (a postgresql:// URL) pointing at database ``name`` instead (a URL without a
    host, ``postgresql:///db?host=/socket/dir``, keeps its ``//``)."""
    parts = urlsplit(server)
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{parts.netloc}/{url_quote(name)}{query}"


def load(root: str | Path, *, engine: str = "postgres", server: str | None = None,
         cache: str | Path | None = None, questions: str = "questions_gen") -> Dataset:
    """sql-eval's questions for ``engine``: on PostgreSQL the databases of ``server`` (a URL whose
    database part is replaced by each question's db_name); on SQLite files built in ``cache``."""
    root = Path(root)
    if engine not in ENGINES:
        raise InputError(f"sql-eval runs on {' or '.join(ENGINES)}, not {engine!r}")
    if engine == "postgres" and not server:
        raise InputError("sql-eval on PostgreSQL needs --db postgresql://... (the server holding its databases)")
    rows = _questions(root, engine, questions)
    targets: dict[str, tuple] = {}
    examples = []
    for i, row in enumerate(rows):
        name = row["db_name"]
        if name not in targets:
            if engine == "postgres":
                targets[name] = (database_url(server, name),)
            elif name in SQLITE_DATABASES and (root / "databases" / name / f"{name}.sql").exists():
                targets[name] = (build_sqlite(root, name, Path(cache or DEFAULT_CACHE)),)
            else:
                targets[name] = ()  # counted as a missing database, as for Spider
        examples.append(Example(id=f"{questions}-{i}", question=row["question"], gold_sql=row["query"],
                                db_id=name, db_paths=targets[name], evidence=(row.get("instructions") or "").strip(),
                                difficulty=row.get("query_category", "")))
    return _finish("sql-eval", f"{questions}-{engine}", examples)


# -- SQLite: the dumps, translated -------------------------------------------------------

def _dump(root: Path, name: str) -> str:
    path = root / "databases" / name / f"{name}.sql"
    if not path.exists():
        raise InputError(f"file not found: {path}")
    return path.read_text(encoding="utf-8")


def sqlite_statements(dump: str, notes: dict[str, dict[str, str]]) -> list[str]:
    """A PostgreSQL dump's CREATE TABLE and INSERT statements in SQLite, schema prefixes
    dropped, each column's description as a comment beside it."""
    out = []
    for statement in sqlglot.parse(dump, read="postgres"):
        if not isinstance(statement, (exp.Create, exp.Insert)) or (
                isinstance(statement, exp.Create) and statement.kind != "TABLE"):
            continue  # CREATE SCHEMA, SET, ...: nothing SQLite needs
        for table in statement.find_all(exp.Table):
            table.set("db", None)
        if isinstance(statement, exp.Insert):
            _constants(statement)
        for default in statement.find_all(exp.DefaultColumnConstraint):
            if not isinstance(default.this, (exp.Literal, exp.Null, exp.Boolean, exp.Paren)):
                default.set("this", exp.Paren(this=default.this))  # SQLite wants (expr) there
        if isinstance(statement, exp.Create):
            columns = notes.get(statement.this.name if isinstance(statement.this, exp.Table)
                                else statement.this.this.name, {})
            for column in statement.find_all(exp.ColumnDef):
                note = " ".join(columns.get(column.name, "").split()).replace("*/", "* /")
                if note:
                    column.add_comments([f" {note} "])
        out.append(statement.sql(dialect="sqlite", pretty=isinstance(statement, exp.Create)))
    return out


def _constants(insert: exp.Insert) -> None:
    """Values written as expressions (yelp's rows dated relative to today, e.g.
    ``EXTRACT(YEAR FROM CURRENT_DATE - INTERVAL '9 MONTHS')``) replaced by their value today,
    computed by DuckDB from sqlglot's translation (SQLite has no such date arithmetic)."""
    plain = (exp.Literal, exp.Null, exp.Boolean)
    found = [v for row in insert.find_all(exp.Tuple) for v in row.expressions
             if not isinstance(v, plain) and not (isinstance(v, exp.Neg) and isinstance(v.this, exp.Literal))]
    if not found:
        return
    try:
        import duckdb
    except ImportError:
        raise InputError("building sql-eval's SQLite files needs the duckdb package (its yelp rows are dated "
                         "relative to today): pip install 'slimsql[duckdb]'") from None
    for value in found:  # sqlglot's PostgreSQL format table lacks 'Month' (the month's full name)
        for node in value.find_all(exp.TimeToStr):
            if node.args.get("format") is not None and node.args["format"].name == "Month":
                node.set("format", exp.Literal.string("%B"))
    with duckdb.connect(":memory:") as conn:
        for value in found:
            result = conn.execute("SELECT " + value.sql(dialect="duckdb")).fetchone()[0]
            value.replace(exp.convert(result if isinstance(result, (int, float, str)) or result is None
                                      else str(result)))


def build_sqlite(root: Path, name: str, cache: Path) -> Path:
    """The SQLite file of sql-eval database ``name``, built once per dump and description file."""
    dump = _dump(root, name)
    notes = descriptions(root, name)
    # today's date is part of the key: some rows are dated relative to it (see _constants)
    key = hashlib.sha256((dump + json.dumps(notes, sort_keys=True) + date.today().isoformat()).encode()).hexdigest()[:12]
    path = cache / f"{name}-{key}.sqlite"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    conn = sqlite3.connect(partial)
    try:
        for statement in sqlite_statements(dump, notes):
            conn.execute(statement)
        conn.commit()
    except sqlite3.Error as err:
        conn.close()
        partial.unlink(missing_ok=True)
        raise InputError(f"sql-eval database {name} does not load into SQLite: {err}") from None
    conn.close()
    partial.replace(path)
    return path


# -- PostgreSQL: the dumps, loaded ----------------------------------------------------------

def load_postgres(cluster, root: str | Path, names: list[str] | None = None, reader: str = "reader") -> list[str]:
    """Create and fill every sql-eval database on ``cluster`` (a ``slimsql.db.pgcluster.Cluster``),
    with column descriptions as comments and SELECT-only access for role ``reader``. Returns
    the databases loaded."""
    root = Path(root)
    names = names or sorted(p.name for p in (root / "databases").iterdir() if (p / f"{p.name}.sql").exists())
    for name in names:
        cluster.create_database(name)
        cluster.load_file(name, root / "databases" / name / f"{name}.sql")
        comments = [f"COMMENT ON COLUMN {_ident(table)}.{_ident(column)} IS {_text(note)};"
                    for table, columns in descriptions(root, name).items()
                    for column, note in columns.items() if note]
        if comments:
            cluster.sql(_existing_only(comments), dbname=name)
        cluster.create_reader(reader, name)
    return names


def _ident(name: str) -> str:
    return '"' + name.lower().replace('"', '""') + '"'  # the dumps' names are unquoted, so folded


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _existing_only(comments: list[str]) -> str:
    """The COMMENT statements in one block that skips a column the dump does not have."""
    body = "\n".join(f"BEGIN {c} EXCEPTION WHEN undefined_column OR undefined_table THEN NULL; END;"
                     for c in comments)
    return f"DO $$ BEGIN\n{body}\nEND $$;"
