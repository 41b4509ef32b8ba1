"""What a user teaches slimsql about one database: its knowledge file.

One YAML file per database, plain enough to edit by hand and to keep in version control
(``docs/teaching.md`` documents it)::

    version: 1
    notes:                        # conventions that hold for every question
      - id: n-3f2a9c1b
        text: revenue means sum(quantity * unit_price) over order_items of orders not cancelled
    descriptions:                 # what the schema does not say: table or table.column
      customers.segment:
        text: B2B or B2C
        synonyms: [key account]
    examples:                     # questions and the SQL that answers them
      - id: e-91c0d2aa
        question: Who are our best customers?
        sql: SELECT first_name, last_name FROM customers ...
        source: verified          # verified (taught or confirmed by a person) or generated

Where it joins the road (``slimsql.infer.pipeline``): notes and descriptions hold for every
question, so they go into the schema part of the prompt (:meth:`Knowledge.apply`,
:meth:`Knowledge.note_lines`), which the prefix cache keeps; the examples most like a
question are chosen per question (:mod:`slimsql.infer.recall`) and shown after it.

Where it lives: beside a database file, named after it (``shop.sqlite`` ->
``shop.sqlite.knowledge.yaml``; for CSV / Parquet files, beside the first), or wherever
``--knowledge`` says (the only way for a PostgreSQL URL).

Safety: reading never writes. Every write (:func:`update`) holds an exclusive lock on a
``.lock`` file beside it, reads the file again under the lock, and replaces it atomically
(a temporary file, then ``os.replace``), so two clients saving at once both keep their entry
and a reader never sees half a file. An example's SQL is checked by the engine's allow-list
and run, read-only, before it is stored.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .db.base import url_scheme
from .errors import InputError, SlimsqlError
from .files import locked, replace_text
from .schema import Schema

VERSION = 1
SUFFIX = ".knowledge.yaml"
#: The largest knowledge file read (bytes), and the most entries of each kind: a prompt shows a few
#: of them, and a file past these is a mistake (a log pasted in, a generator run away).
MAX_BYTES = 4 * 1024 * 1024
MAX_ENTRIES = 20_000
MAX_TEXT = 4000
SOURCES = ("verified", "generated")


@dataclass(frozen=True)
class Example:
    """A question and the SQL that answers it."""

    id: str
    question: str
    sql: str
    source: str = "verified"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "sql": _Block(self.sql), "source": self.source}


class _Block(str):
    """A text written as a YAML block (SQL: as it was typed, line breaks and all)."""


@dataclass(frozen=True)
class Note:
    id: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text}


@dataclass(frozen=True)
class Description:
    """What a table or column (``target``: ``table`` or ``table.column``) means, and other words for it."""

    target: str
    text: str = ""
    synonyms: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"text": self.text} if self.text else {}
        if self.synonyms:
            data["synonyms"] = list(self.synonyms)
        return data


def entry_id(kind: str, *parts: str) -> str:
    """A short id from an entry's content: two clients adding different entries never take one id,
    and the same entry added twice is one entry."""
    digest = hashlib.sha256("\x1f".join(" ".join(p.split()).lower() for p in parts).encode()).hexdigest()
    return f"{kind}-{digest[:8]}"


@dataclass(frozen=True)
class Knowledge:
    """The contents of one knowledge file (empty when there is none)."""

    path: Path | None = None
    notes: tuple[Note, ...] = ()
    descriptions: tuple[Description, ...] = ()
    examples: tuple[Example, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.notes or self.descriptions or self.examples)

    # -- reading ---------------------------------------------------------------------

    def apply(self, schema: Schema) -> Schema:
        """``schema`` with the descriptions (and synonyms) as its tables' and columns' comments,
        after any the database has of its own; names that match nothing are left out (``check``
        names them)."""
        if not self.descriptions:
            return schema
        about = {d.target.lower(): d for d in self.descriptions}

        def merged(own: str, key: str) -> str:
            found = about.get(key)
            if found is None:
                return own
            words = found.text + (f" (also: {', '.join(found.synonyms)})" if found.synonyms else "")
            return "; ".join(p for p in (own.strip(), words.strip()) if p)

        tables = []
        for table in schema.tables:
            columns = tuple(replace(c, comment=merged(c.comment, f"{table.name}.{c.name}".lower()))
                            for c in table.columns)
            tables.append(replace(table, columns=columns, comment=merged(table.comment, table.name.lower())))
        return replace(schema, tables=tuple(tables))

    def note_lines(self) -> list[str]:
        return [" ".join(n.text.split()) for n in self.notes]

    def ranked_examples(self) -> tuple[Example, ...]:
        """Verified examples first, then generated ones (the order retrieval breaks ties in)."""
        return tuple(sorted(self.examples, key=lambda e: SOURCES.index(e.source)))

    def find(self, entry: str):
        """The note, example or description with id (or target) ``entry``; None if there is none."""
        for item in (*self.notes, *self.examples):
            if item.id == entry:
                return item
        return next((d for d in self.descriptions if d.target.lower() == entry.lower()), None)

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, "notes": [n.to_dict() for n in self.notes],
                "descriptions": {d.target: d.to_dict() for d in self.descriptions},
                "examples": [e.to_dict() for e in self.examples]}

    def summary(self) -> dict[str, int]:
        generated = sum(e.source == "generated" for e in self.examples)
        return {"notes": len(self.notes), "descriptions": len(self.descriptions),
                "examples": len(self.examples) - generated, "generated": generated}


# -- where it lives -------------------------------------------------------------------

def default_path(target) -> Path | None:
    """The knowledge file beside a database file (the first of several); None for a URL."""
    if isinstance(target, (list, tuple)):
        target = target[0] if target else None
    if target is None or url_scheme(target) is not None:
        return None
    path = Path(target).expanduser()
    return path.with_name(path.name + SUFFIX)


def path_for(target, knowledge: str | Path | None = None) -> Path | None:
    """The knowledge file of ``target``: ``knowledge`` when given, else the one beside it."""
    return Path(knowledge).expanduser() if knowledge else default_path(target)


class Source:
    """A knowledge file as a long-lived reader sees it (a connection, the server): read again
    when it changed on disk (by hand, another process, another client), else kept."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self._stamp: tuple | None = None
        self._knowledge = Knowledge(path=self.path)

    def current(self) -> Knowledge:
        if self.path is None:
            return self._knowledge
        try:
            info = self.path.stat()
            stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        except FileNotFoundError:
            stamp = None
        except OSError as err:
            raise InputError(f"cannot read the knowledge file {self.path}: {err.strerror or err}") from None
        if stamp != self._stamp:
            self._knowledge, self._stamp = load(self.path), stamp
        return self._knowledge

    def update(self, change) -> Knowledge:
        if self.path is None:
            raise InputError("this database has no knowledge file: name one with --knowledge")
        update(self.path, change)
        return self.current()


# -- the file -------------------------------------------------------------------------

def load(path: str | Path | None) -> Knowledge:
    """Read a knowledge file; a missing one is empty knowledge. Never writes."""
    if path is None:
        return Knowledge()
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return Knowledge(path=path)
    except OSError as err:
        raise InputError(f"cannot read the knowledge file {path}: {err.strerror or err}") from None
    if path.is_dir():
        raise InputError(f"the knowledge file {path} is a folder")
    if size > MAX_BYTES:
        raise InputError(f"the knowledge file {path} is {size:,} bytes; at most {MAX_BYTES:,} are read")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read the knowledge file {path}: {err}") from None
    return parse(text, path)


def parse(text: str, path: Path | None = None) -> Knowledge:
    import yaml

    where = str(path or "knowledge")
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"{where}: not valid YAML{at}: {getattr(err, 'problem', None) or err}") from None
    if data is None:
        return Knowledge(path=path)
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping with notes, descriptions and examples")
    unknown = set(data) - {"version", "notes", "descriptions", "examples"}
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    if data.get("version", VERSION) != VERSION:
        raise InputError(f"{where}: version {data.get('version')!r} is not one this slimsql reads ({VERSION})")
    notes = tuple(_note(item, f"{where}: notes[{i}]") for i, item in enumerate(_list(data, "notes", where)))
    examples = tuple(_example(item, f"{where}: examples[{i}]")
                     for i, item in enumerate(_list(data, "examples", where)))
    described = data.get("descriptions") or {}
    if not isinstance(described, dict):
        raise InputError(f"{where}: descriptions must map table or table.column to a text")
    descriptions = tuple(_description(key, value, f"{where}: descriptions[{key!r}]")
                         for key, value in described.items())
    for kind, items in (("notes", notes), ("examples", examples), ("descriptions", descriptions)):
        if len(items) > MAX_ENTRIES:
            raise InputError(f"{where}: {len(items):,} {kind}; at most {MAX_ENTRIES:,}")
    seen: set[str] = set()
    for item in (*notes, *examples):
        if item.id in seen:
            raise InputError(f"{where}: the id {item.id} is used twice")
        seen.add(item.id)
    return Knowledge(path=path, notes=notes, descriptions=descriptions, examples=examples)


def _list(data: dict, key: str, where: str) -> list:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise InputError(f"{where}: {key} must be a list")
    return value


def _text(item: dict, key: str, where: str, required: bool = True) -> str:
    value = item.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InputError(f"{where}: '{key}' is missing")
        return ""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise InputError(f"{where}: '{key}' must be text")
    value = str(value).strip()
    if len(value) > MAX_TEXT:
        raise InputError(f"{where}: '{key}' is {len(value):,} characters; at most {MAX_TEXT:,}")
    return value


def _mapping(item: Any, where: str, keys: set[str]) -> dict:
    if not isinstance(item, dict):
        raise InputError(f"{where}: expected a mapping")
    unknown = set(item) - keys
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    return item


def _note(item: Any, where: str) -> Note:
    if isinstance(item, str):  # a note may be written by hand as a bare line
        item = {"text": item}
    item = _mapping(item, where, {"id", "text"})
    text = _text(item, "text", where)
    return Note(id=_text(item, "id", where, required=False) or entry_id("n", text), text=text)


def _example(item: Any, where: str) -> Example:
    item = _mapping(item, where, {"id", "question", "sql", "source"})
    question, sql = _text(item, "question", where), _text(item, "sql", where)
    source = _text(item, "source", where, required=False) or "verified"
    if source not in SOURCES:
        raise InputError(f"{where}: source must be one of {', '.join(SOURCES)}, not {source!r}")
    return Example(id=_text(item, "id", where, required=False) or entry_id("e", question, sql),
                   question=question, sql=sql, source=source)


_TARGET = re.compile(r"^[^.\s][^.]*(\.[^.]+)?$")


def _description(key: Any, value: Any, where: str) -> Description:
    if not isinstance(key, str) or not _TARGET.match(key.strip()):
        raise InputError(f"{where}: name a table or table.column")
    if isinstance(value, str):
        value = {"text": value}
    value = _mapping(value, where, {"text", "synonyms"})
    synonyms = value.get("synonyms") or []
    if isinstance(synonyms, str):
        synonyms = [s for s in synonyms.split(",")]
    if not isinstance(synonyms, list) or not all(isinstance(s, str) for s in synonyms):
        raise InputError(f"{where}: synonyms must be a list of words")
    synonyms = tuple(s.strip() for s in synonyms if s.strip())
    text = _text(value, "text", where, required=not synonyms)
    return Description(target=key.strip(), text=text, synonyms=synonyms)


def dump(knowledge: Knowledge) -> str:
    """The file's text: a fixed order and layout (SQL and long texts as block scalars), so that
    a change reads as a small diff in version control."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value: str):
        block = "\n" in value or (isinstance(value, _Block) and len(value) > 60)
        return dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style="|" if block else None)

    Dumper.add_representer(str, text)
    Dumper.add_representer(_Block, text)
    header = ("# slimsql knowledge: notes, descriptions and examples for one database.\n"
              "# Edit by hand or with `slimsql teach`; `slimsql teach --check` checks it against the database.\n")
    body = yaml.dump(knowledge.to_dict(), Dumper=Dumper, sort_keys=False, allow_unicode=True, width=100)
    return header + body


# -- writing ---------------------------------------------------------------------------

def update(path: str | Path, change) -> Knowledge:
    """Apply ``change`` (Knowledge -> Knowledge) to the file at ``path`` under its lock, reading it
    afresh, and replace the file atomically. Returns what was written."""
    path = Path(path)
    try:
        with locked(path):
            new = change(load(path))
            replace_text(path, dump(new))
    except OSError as err:
        raise InputError(f"cannot write the knowledge file {path}: {err.strerror or err}") from None
    return replace(new, path=path)


def with_note(text: str):
    text = _text({"text": text}, "text", "the note")

    note = Note(entry_id("n", text), text)

    def change(k: Knowledge) -> Knowledge:
        return k if k.find(note.id) else replace(k, notes=k.notes + (note,))
    change.entry = note.id  # what the change adds, by id
    return change


def with_example(question: str, sql: str, source: str = "verified"):
    question, sql = _text({"q": question}, "q", "the question"), _text({"s": sql}, "s", "the SQL")
    example = Example(entry_id("e", question, sql), question, sql, source)

    def change(k: Knowledge) -> Knowledge:
        if k.find(example.id):  # the same pair again: a generated one a person confirms becomes verified
            return replace(k, examples=tuple(replace(e, source="verified") if e.id == example.id and
                                             source == "verified" else e for e in k.examples))
        return replace(k, examples=k.examples + (example,))
    change.entry = example.id
    return change


def with_description(target: str, text: str = "", synonyms: tuple[str, ...] = ()):
    new = _description(target, {"text": text, "synonyms": list(synonyms)}, f"the description of {target!r}")

    def change(k: Knowledge) -> Knowledge:
        kept = tuple(d for d in k.descriptions if d.target.lower() != new.target.lower())
        return replace(k, descriptions=kept + (new,))
    change.entry = new.target
    return change


def without(entry: str):
    def change(k: Knowledge) -> Knowledge:
        if k.find(entry) is None:
            raise InputError(f"no note, example or description {entry!r} in {k.path}")
        return replace(k, notes=tuple(n for n in k.notes if n.id != entry),
                       examples=tuple(e for e in k.examples if e.id != entry),
                       descriptions=tuple(d for d in k.descriptions if d.target.lower() != entry.lower()))
    return change


def checked_example(db, question: str, sql: str) -> str:
    """``sql`` as it will be stored for ``question``: one statement the engine's allow-list takes,
    run read-only; raises the engine's one-line error otherwise."""
    from .sql import extract

    if not question or not question.strip():
        raise InputError("the example's question is empty")
    statement = extract(sql, db.schema(0).dialect).sql
    db.execute(statement, max_rows=1)
    return statement


# -- check -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    entry: str
    message: str


def missing(schema: Schema, target: str) -> str | None:
    """Why ``target`` (``table`` or ``table.column``) names nothing in ``schema``; None if it names something."""
    table_name, _, column = target.partition(".")
    table = schema.table(table_name)
    if table is None:
        return f"no table {table_name!r}"
    if column and column.lower() not in {c.name.lower() for c in table.columns}:
        return f"no column {column!r} in {table.name}"
    return None


def check(knowledge: Knowledge, db) -> list[Problem]:
    """What in ``knowledge`` no longer fits ``db``: examples whose SQL fails or is refused (a
    schema change broke them) and descriptions of tables or columns that are gone."""
    problems = []
    schema = db.schema(0)
    for example in knowledge.examples:
        try:
            db.execute(example.sql, max_rows=1)
        except SlimsqlError as err:
            problems.append(Problem(example.id, f"{example.question!r}: {err}"))
    for described in knowledge.descriptions:
        why = missing(schema, described.target)
        if why:
            problems.append(Problem(described.target, why))
    return problems
