"""Showing the model the right values and the right part of the schema.

* :class:`ValueIndex`: the distinct text values of a database, per column; built
  once per database file (bounded in count, length and time), cached on disk by
  a hash of the file's content. :meth:`ValueIndex.match` finds the values a
  question mentions (its words and n-grams, exactly or with fuzzy matching by
  rapidfuzz); :func:`render_values` turns them into lines such as
  ``orders.status: 'cancelled'`` that prompt styles show after the schema.
* :func:`prune`: above a token budget, keep the tables (and the join tables
  between them) that the question names or whose values it mentions.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..errors import SlimsqlError
from ..schema import Schema, Table, quote, render_create

TEXT_TYPES = ("CHAR", "CLOB", "TEXT", "")  # SQLite's text affinity, and untyped columns
_WORD = re.compile(r"[^\W_]+(?:['’.-][^\W_]+)*", re.UNICODE)
_QUOTED = re.compile(r"[\"“'‘]([^\"”'’]{2,80})[\"”'’]")
STOP = frozenset("""a an the of in on at to for from by with and or not no is are was were be been what which who whom
whose when where how many much does do did have has had list show give find return get all each every their its
his her them they it this that these those there than more most less least number count total average name names
id ids as per between into over under any some one two three""".split())


@dataclass(frozen=True)
class ValueMatch:
    table: str
    column: str
    value: str
    score: float  # 100 = the same text, case aside


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


class ValueIndex:
    """Distinct text values per (table, column) of one database."""

    VERSION = 1

    def __init__(self, values: dict[tuple[str, str], list[str]]):
        self.values = values
        self._by_text: dict[str, list[tuple[str, str, str]]] = {}
        for (table, column), items in values.items():
            for value in items:
                self._by_text.setdefault(_norm(value), []).append((table, column, value))
        self._texts = list(self._by_text)

    def __len__(self) -> int:
        return len(self._by_text)

    # -- building --------------------------------------------------------------------

    @classmethod
    def build(cls, db, *, max_values_per_column: int = 2000, max_total: int = 200_000, max_chars: int = 80,
              seconds: float = 5.0) -> "ValueIndex":
        """Read the text values of every table column, within the bounds given."""
        deadline = time.monotonic() + seconds
        values: dict[tuple[str, str], list[str]] = {}
        total = 0
        for table in db.schema(0).tables:
            if table.kind != "table":
                continue
            for column in table.columns:
                if total >= max_total or time.monotonic() > deadline:
                    return cls(values)
                if not any(t in column.type.upper() for t in TEXT_TYPES if t) and column.type:
                    continue
                name, col = quote(table.name), quote(column.name)
                sql = (f"SELECT DISTINCT {col} FROM {name} WHERE typeof({col}) = 'text' "
                       f"AND length({col}) BETWEEN 2 AND ? LIMIT ?")
                limit = min(max_values_per_column, max_total - total)
                try:
                    rows = db._run(sql, (max_chars, limit), max_rows=limit,
                                   timeout=max(0.05, min(1.0, deadline - time.monotonic()))).rows
                except SlimsqlError:  # a slow or unreadable table: no values from it
                    continue
                found = [r[0] for r in rows if isinstance(r[0], str) and any(ch.isalpha() for ch in r[0])]
                if found:
                    values[(table.name, column.name)] = found
                    total += len(found)
        return cls(values)

    @classmethod
    def for_database(cls, db, cache_dir: Path | None = None) -> "ValueIndex":
        """The index of ``db``, from the disk cache when the file's content is unchanged."""
        path = getattr(db, "path", None)
        if path is None:
            return cls.build(db)
        key = content_key(Path(path))
        if key in _MEMORY:
            return _MEMORY[key]
        folder = cache_dir or _cache_dir()
        cached = folder / f"{key}.json"
        index = _load(cached)
        if index is None:
            index = cls.build(db)
            _save(index, cached)
        _MEMORY[key] = index
        return index

    # -- matching --------------------------------------------------------------------

    def match(self, question: str, *, limit: int = 8, per_column: int = 3, threshold: float = 88.0) -> list[ValueMatch]:
        """Values the question mentions, best first."""
        from rapidfuzz import fuzz, process

        found: dict[tuple[str, str, str], float] = {}
        for phrase in _phrases(question):
            for table, column, value in self._by_text.get(phrase, ()):
                found[(table, column, value)] = 100.0
            if len(phrase) < 4 or not self._texts:
                continue
            for text, score, _ in process.extract(phrase, self._texts, scorer=fuzz.ratio, score_cutoff=threshold,
                                                  limit=5):
                for entry in self._by_text[text]:
                    found[entry] = max(found.get(entry, 0.0), round(score, 1))
        ranked = sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))
        out, per = [], {}
        for (table, column, value), score in ranked:
            if per.get((table, column), 0) >= per_column:
                continue
            per[(table, column)] = per.get((table, column), 0) + 1
            out.append(ValueMatch(table, column, value, score))
            if len(out) >= limit:
                break
        return out


def _phrases(question: str) -> list[str]:
    """Quoted strings, and the question's 1- to 4-word n-grams that are not all stop words or digits."""
    words = [w.lower() for w in _WORD.findall(question)]
    out = [_norm(q) for q in _QUOTED.findall(question)]
    for size in range(1, 5):
        for i in range(len(words) - size + 1):
            gram = words[i:i + size]
            if all(w in STOP or w.isdigit() for w in gram) or gram[0] in STOP or gram[-1] in STOP:
                continue
            out.append(" ".join(gram))
    return list(dict.fromkeys(p for p in out if len(p) >= 2))


def render_values(matches: Sequence[ValueMatch]) -> str:
    """One line per column: ``orders.status: 'cancelled', 'pending'``."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for m in matches:
        grouped.setdefault((m.table, m.column), []).append("'" + m.value.replace("'", "''") + "'")
    return "\n".join(f"{quote(t)}.{quote(c)}: {', '.join(v)}" for (t, c), v in grouped.items())


# -- the disk cache ----------------------------------------------------------------------

_MEMORY: dict[str, ValueIndex] = {}


def _cache_dir() -> Path:
    from ..models import home

    return home() / "values"


_KEYS: dict[tuple[str, int, int], str] = {}


def content_key(path: Path, full_hash_limit: int = 64 << 20) -> str:
    """A hash of the file's content (for big files: size, mtime and the first and last MiB);
    computed once per process for an unchanged file (same size and mtime)."""
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _KEYS:
        _KEYS[memo] = _hash(path, full_hash_limit)
    return _KEYS[memo]


def _hash(path: Path, full_hash_limit: int) -> str:
    digest = hashlib.sha256(f"v{ValueIndex.VERSION}".encode())
    size = path.stat().st_size
    with path.open("rb") as handle:
        if size <= full_hash_limit:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        else:
            digest.update(f"{size}:{path.stat().st_mtime_ns}".encode())
            digest.update(handle.read(1 << 20))
            handle.seek(-(1 << 20), os.SEEK_END)
            digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:32]


def _load(path: Path) -> ValueIndex | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ValueIndex({(t, c): list(v) for t, c, v in data["values"]})
    except (OSError, ValueError, KeyError, TypeError):  # missing, corrupt or foreign: rebuild
        return None


def _save(index: ValueIndex, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"values": [[t, c, v] for (t, c), v in index.values.items()]}), encoding="utf-8")
        tmp.replace(path)
    except OSError:  # a read-only cache folder only costs the rebuild next time
        pass


# -- schema pruning ------------------------------------------------------------------------

def _split(name: str) -> set[str]:
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name).replace("_", " ").lower()
    words = set(spaced.split())
    return words | {w[:-1] for w in words if w.endswith("s") and len(w) > 3}


def _table_score(table: Table, words: set[str], valued: set[str]) -> float:
    score = 3.0 * len(_split(table.name) & words)
    score += sum(len(_split(c.name) & words - {"id"}) for c in table.columns)
    return score + (2.0 if table.name in valued else 0.0)


def _neighbours(schema: Schema) -> dict[str, set[str]]:
    links: dict[str, set[str]] = {t.name: set() for t in schema.tables}
    for t in schema.tables:
        for key in t.foreign_keys:
            target = schema.table(key.ref_table)
            if target is not None:
                links[t.name].add(target.name)
                links[target.name].add(t.name)
    return links


def _bridges(kept: set[str], links: dict[str, set[str]]) -> set[str]:
    """Tables one hop away that connect two kept tables (join tables)."""
    return {t for t, near in links.items() if t not in kept and len(near & kept) >= 2}


def prune(schema: Schema, question: str, *, budget_tokens: int, count_tokens: Callable[[str], int],
          matches: Iterable[ValueMatch] = (), render: Callable[[Schema], str] = render_create) -> Schema:
    """``schema`` when it fits ``budget_tokens``; else its best-ranked tables (and the join tables
    between them), added in rank order while the rendering fits. The best table always stays;
    kept tables keep all their columns and the original order."""
    if count_tokens(render(schema)) <= budget_tokens:
        return schema
    words = {w.lower() for w in _WORD.findall(question)} - STOP
    words |= {w[:-1] for w in words if w.endswith("s") and len(w) > 3}
    valued = {m.table for m in matches}
    ranked = sorted(schema.tables, key=lambda t: -_table_score(t, words, valued))
    links = _neighbours(schema)
    kept: set[str] = {ranked[0].name}

    def build(names: set[str]) -> Schema:
        return Schema(tables=tuple(t for t in schema.tables if t.name in names), dialect=schema.dialect)

    for table in ranked[1:]:
        if _table_score(table, words, valued) <= 0:
            break
        trial = kept | {table.name}
        trial |= _bridges(trial, links)
        if count_tokens(render(build(trial))) > budget_tokens:
            continue
        kept = trial
    return build(kept)
