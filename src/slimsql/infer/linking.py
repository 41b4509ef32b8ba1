"""Showing the model the right values and the right part of the schema.

* :class:`ValueIndex`: the distinct text values of a database, per column; built
  once per database file (bounded in count, length and time), cached on disk by
  a hash of the file's content. :meth:`ValueIndex.match` finds the values a
  question mentions (its words and n-grams, exactly or with fuzzy matching by
  rapidfuzz); :func:`render_values` turns them into lines such as
  ``orders.status: 'cancelled'`` that prompt styles show after the schema.
* :func:`prune`: above a token budget, keep the tables the question is about (by
  name, by the values it mentions), the tables on the join paths between them,
  and then whatever else fits; very wide tables keep their keys and the
  columns the question names first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..errors import Interrupted, SlimsqlError
from ..schema import Schema, Table, quote, quote_table, render_create

# Declared types whose values are never text worth indexing (SQLite's INTEGER and REAL
# affinities, and the usual numeric, boolean, binary and time names).
NOT_TEXT = ("INT", "REAL", "FLOA", "DOUB", "DEC", "NUM", "BOOL", "BLOB", "BIT", "DATE", "TIME", "YEAR")
_WORD = re.compile(r"[^\W_]+(?:['’.-][^\W_]+)*", re.UNICODE)
_QUOTED = re.compile(r"""(?:^|(?<=[\s(]))["“'‘]([^"”'’]{2,80})["”'’](?=[\s?.,;:!)]|$)""")
STOP = frozenset("""a an the of in on at to for from by with and or not no is are was were be been what which who whom
whose when where how many much does do did have has had list show give find return get all each every their its
his her them they it this that these those there than more most less least number count total average name names
id ids as per between into over under any some one two three me my our your i we you""".split())
SCAN_ROWS = 500_000  # rows read per column at most: a huge table still gives its first values


@dataclass(frozen=True)
class ValueMatch:
    table: str
    column: str
    value: str
    score: float  # in [0, 100]; 100 = the same text, case and punctuation aside


def _key(text: str) -> str:
    """How values and phrases are compared: lower case, words only."""
    return " ".join(_WORD.findall(text.lower()))


class ValueIndex:
    """Distinct text values per (table, column) of one database file."""

    VERSION = 2

    def __init__(self, values: dict[tuple[str, str], list[str]]):
        self.values = values
        self._by_key: dict[str, list[tuple[str, str, str]]] = {}
        for (table, column), items in values.items():
            for value in items:
                key = _key(value)
                if len(key) >= 2:
                    self._by_key.setdefault(key, []).append((table, column, value))
        self._keys = list(self._by_key)

    def __len__(self) -> int:
        return sum(map(len, self.values.values()))

    # -- building --------------------------------------------------------------------

    @classmethod
    def build(cls, db, *, max_values_per_column: int = 2000, max_total: int = 200_000, max_chars: int = 80,
              seconds: float = 5.0) -> "ValueIndex":
        """Read the text values of every table's text columns, within the bounds given: at most
        ``max_values_per_column`` per column and ``max_total`` in all, each at most ``max_chars``
        long, in about ``seconds`` (every query has its own time limit; a table that is slow or
        fails to read gives what it gave or nothing). Views are skipped."""
        deadline = time.monotonic() + seconds
        values: dict[tuple[str, str], list[str]] = {}
        total = 0
        for table in db.schema(0).tables:
            if table.kind != "table":
                continue
            for column in table.columns:
                left = deadline - time.monotonic()
                if total >= max_total or left <= 0:
                    return cls(values)
                if any(t in column.type.upper() for t in NOT_TEXT):
                    continue
                name, col = quote_table(table.name, db.dialect), quote(column.name, db.dialect)
                # SQLite's columns hold any type whatever they declare; elsewhere the declared type decides
                text = f"typeof({col}) = 'text' AND " if db.dialect == "sqlite" else ""
                limit = min(max_values_per_column, max_total - total)
                sql = (f"SELECT DISTINCT {col} FROM (SELECT {col} FROM {name} LIMIT {SCAN_ROWS}) AS scanned "
                       f"WHERE {text}length({col}) BETWEEN 2 AND {int(max_chars)} LIMIT {int(limit)}")
                try:
                    rows = db._run(sql, max_rows=limit, timeout=max(0.05, min(1.0, left))).rows
                except Interrupted:  # stopped from outside (the server's client went away)
                    raise
                except SlimsqlError:  # a slow or unreadable table: no values from it
                    continue
                found = [r[0] for r in rows if isinstance(r[0], str) and any(ch.isalpha() for ch in r[0])]
                if found:
                    values[(table.name, column.name)] = found
                    total += len(found)
        return cls(values)

    @classmethod
    def for_database(cls, db, cache_dir: Path | None = None) -> "ValueIndex":
        """The index of ``db``: from memory, else from the disk cache (``~/.cache/slimsql/values``)
        when a file with the same content was indexed before, else built and saved."""
        path = getattr(db, "path", None)
        if path is None or not Path(path).is_file():  # a server, or several files: built each time
            return cls.build(db)
        key = content_key(Path(path))
        with _MEMORY_LOCK:  # the server's and eval --parallel's threads share it
            if key in _MEMORY:
                _MEMORY.move_to_end(key)
                return _MEMORY[key]
        cached = (cache_dir or _cache_dir()) / f"{key}.json"
        index = _load(cached)
        if index is None:
            index = cls.build(db)
            _save(index, cached)
        with _MEMORY_LOCK:
            _MEMORY[key] = index
            while len(_MEMORY) > _MEMORY_SIZE:
                _MEMORY.popitem(last=False)
        return index

    # -- matching --------------------------------------------------------------------

    def match(self, question: str, *, limit: int = 8, per_column: int = 3, threshold: float = 88.0) -> list[ValueMatch]:
        """Values the question mentions, best first (score, then table, column, value): exact
        matches of its quoted strings and 1- to 4-word n-grams score 100, of their singular 95; n-grams of 4 characters
        or more also match values at least ``threshold`` similar (rapidfuzz's ``fuzz.ratio``)."""
        from rapidfuzz import fuzz, process

        found: dict[tuple[str, str, str], float] = {}
        exact, fuzzy = _phrases(question)
        for phrase in exact:
            for entry in self._by_key.get(phrase, ()):
                found[entry] = 100.0
            head, _, last = phrase.rpartition(" ")
            singular = f"{head} {_singular(last)}".strip()
            for entry in self._by_key.get(singular, ()) if singular != phrase else ():
                found[entry] = max(found.get(entry, 0.0), 95.0)  # "cats" names 'cat'
        if self._keys:
            for phrase in fuzzy:
                for text, score, _ in process.extract(phrase, self._keys, scorer=fuzz.ratio, score_cutoff=threshold,
                                                      limit=5):
                    for entry in self._by_key[text]:
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


def _phrases(question: str) -> tuple[list[str], list[str]]:
    """The question's phrases to look up exactly (quoted strings, n-grams of 1 to 4 words that
    are not all stop words or digits) and those to match fuzzily (n-grams of 4 characters or more
    that neither start nor end with a stop word)."""
    words = _key(question).split()
    exact = [k for k in map(_key, _QUOTED.findall(question)) if len(k) >= 2]
    fuzzy = list(exact)
    for size in range(1, 5):
        for i in range(len(words) - size + 1):
            gram = words[i:i + size]
            if all(w in STOP or w.isdigit() for w in gram):
                continue
            text = " ".join(gram)
            exact.append(text)
            if gram[0] not in STOP and gram[-1] not in STOP and len(text) >= 4:
                fuzzy.append(text)
    return list(dict.fromkeys(p for p in exact if len(p) >= 2)), list(dict.fromkeys(fuzzy))


def render_values(matches: Sequence[ValueMatch]) -> str:
    """One line per column, in the order of the matches: ``orders.status: 'cancelled', 'pending'``."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for m in matches:
        grouped.setdefault((m.table, m.column), []).append("'" + m.value.replace("'", "''") + "'")
    return "\n".join(f"{quote(t)}.{quote(c)}: {', '.join(v)}" for (t, c), v in grouped.items())


# -- the caches ----------------------------------------------------------------------------

_MEMORY: OrderedDict[str, ValueIndex] = OrderedDict()
_MEMORY_SIZE = 32  # indexes kept in this process, least recently used dropped first
_MEMORY_LOCK = threading.Lock()
_KEYS: dict[tuple[str, int, int], str] = {}


def _cache_dir() -> Path:
    from ..models import home

    return home() / "values"


def content_key(path: Path, full_hash_limit: int = 64 << 20) -> str:
    """A hash of the file's content (for bigger files: size, mtime and the first and last MiB);
    computed once per process for an unchanged file (same size and mtime)."""
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _KEYS:
        _KEYS[memo] = _hash(path, stat.st_size, stat.st_mtime_ns, full_hash_limit)
    return _KEYS[memo]


def _hash(path: Path, size: int, mtime_ns: int, full_hash_limit: int) -> str:
    digest = hashlib.sha256(f"v{ValueIndex.VERSION}".encode())
    with path.open("rb") as handle:
        if size <= full_hash_limit:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        else:
            digest.update(f"{size}:{mtime_ns}".encode())
            digest.update(handle.read(1 << 20))
            handle.seek(-(1 << 20), os.SEEK_END)
            digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:32]


def _load(path: Path) -> ValueIndex | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["version"] != ValueIndex.VERSION:
            return None
        values = {(t, c): list(v) for t, c, v in data["values"]}
        if not all(isinstance(x, str) for items in values.values() for x in items):
            return None
        return ValueIndex(values)
    except (OSError, ValueError, KeyError, TypeError):  # missing, corrupt or foreign: rebuild
        return None


def _save(index: ValueIndex, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        data = {"version": ValueIndex.VERSION, "values": [[t, c, v] for (t, c), v in index.values.items()]}
        tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        tmp.replace(path)
    except OSError:  # a read-only cache folder only costs the rebuild next time
        pass


# -- schema pruning ------------------------------------------------------------------------

def _singular(word: str) -> str:
    if len(word) <= 3 or not word.endswith("s") or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses", "zes")):
        return word[:-2]
    return word[:-1]


def _name_words(name: str) -> set[str]:
    """``employeeSalaries`` / ``employee_salaries`` -> {employee, salary}."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return {_singular(w) for w in _key(spaced).split()} - {"id"}


def _question_words(question: str) -> set[str]:
    words = [w for w in _key(question).split() if w not in STOP and not w.isdigit()]
    joined = {a + b for a, b in zip(words, words[1:])}  # "zip code" names zipcode
    return {_singular(w) for w in words} | joined


def _hits(names: set[str], words: set[str]) -> float:
    """How many of ``names`` the question says: 1 each exactly, less when only similar."""
    from rapidfuzz import fuzz

    score = 0.0
    for name in names:
        if name in words:
            score += 1.0
        elif len(name) >= 4:
            best = max((fuzz.ratio(name, w) for w in words if len(w) >= 4), default=0.0)
            score += 0.5 if best >= 85 else 0.0
    return score


def _scores(schema: Schema, question: str, matches: Iterable[ValueMatch]):
    """Per table and per (table, column): how much the question is about it."""
    words = _question_words(question)
    valued = {(m.table, m.column) for m in matches}
    tables, columns = {}, {}
    for t in schema.tables:
        best = 0.0
        for c in t.columns:
            columns[(t.name, c.name)] = _hits(_name_words(c.name), words) + 2.0 * ((t.name, c.name) in valued)
            best = max(best, columns[(t.name, c.name)])
        covered = sum(columns[(t.name, c.name)] > 0 for c in t.columns)
        tables[t.name] = 3.0 * _hits(_name_words(t.name), words) + best + min(covered, 3) * 0.5
    return tables, columns


def _links(schema: Schema) -> dict[str, set[str]]:
    """The foreign-key graph, both directions."""
    links: dict[str, set[str]] = {t.name: set() for t in schema.tables}
    for t in schema.tables:
        for key in t.foreign_keys:
            target = schema.table(key.ref_table)
            if target is not None and target.name != t.name:
                links[t.name].add(target.name)
                links[target.name].add(t.name)
    return links


def _path(start: str, kept: set[str], links: dict[str, set[str]], hops: int = 3) -> list[str]:
    """The tables between ``start`` and the nearest kept table (shortest join path, at most
    ``hops`` joins); [] when none is that close."""
    back: dict[str, str | None] = {start: None}
    queue = deque([(start, 0)])
    while queue:
        node, depth = queue.popleft()
        if node in kept and node != start:
            between = []
            while back[node] is not None and back[node] != start:
                node = back[node]
                between.append(node)
            return between
        if depth < hops:
            for near in sorted(links[node]):
                if near not in back:
                    back[near] = node
                    queue.append((near, depth + 1))
    return []


def _slim(table: Table, column_scores: dict, referenced: set[tuple[str, str]], max_columns: int) -> Table:
    """A very wide table with its keys and the columns the question names first, then its
    other columns in order, up to ``max_columns`` (keys and named columns are never dropped)."""
    if len(table.columns) <= max_columns:
        return table
    keys = {c for k in table.foreign_keys for c in k.columns} | set(table.primary_key)
    must = [c.name for c in table.columns
            if c.name in keys or (table.name, c.name) in referenced or column_scores[(table.name, c.name)] > 0]
    rest = [c.name for c in table.columns if c.name not in must]
    keep = set(must) | set(rest[:max(0, max_columns - len(must))])
    return replace(table, columns=tuple(c for c in table.columns if c.name in keep))


def prune(schema: Schema, question: str, *, budget_tokens: int, count_tokens: Callable[[str], int],
          matches: Iterable[ValueMatch] = (), render: Callable[[Schema], str] = render_create,
          max_columns: int = 32) -> Schema:
    """``schema`` itself when ``render(schema)`` fits ``budget_tokens``; else a schema of its
    best-ranked tables, each added with the tables on its join path to those kept (at most three
    joins), in rank order while the rendering fits. Rank: the question's words against table and
    column names (snake_case and camelCase split, singular, fuzzy), tables holding a matched
    value; tables the question does not name come last, joined ones first. The best table always
    stays; tables wider than ``max_columns`` keep their key columns and the columns the question
    names first; foreign keys to dropped tables are left out; tables and columns keep their order."""
    if count_tokens(render(schema)) <= budget_tokens or not schema.tables:
        return schema
    matches = list(matches)
    table_scores, column_scores = _scores(schema, question, matches)
    links = _links(schema)
    order = {t.name: i for i, t in enumerate(schema.tables)}
    named = {n for n, s in table_scores.items() if s > 0}
    ranked = sorted(schema.tables, key=lambda t: (-table_scores[t.name], -len(links[t.name] & named), order[t.name]))
    referenced = {(k.ref_table, c) for t in schema.tables for k in t.foreign_keys for c in k.ref_columns}
    referenced = {(schema.table(t).name, c) for t, c in referenced if schema.table(t) is not None}
    slim = {t.name: _slim(t, column_scores, referenced, max_columns) for t in schema.tables}

    def build(names: set[str]) -> Schema:
        tables = []
        for t in schema.tables:
            if t.name in names:
                t = slim[t.name]
                keys = tuple(k for k in t.foreign_keys if (s := schema.table(k.ref_table)) and s.name in names)
                tables.append(t if keys == t.foreign_keys else replace(t, foreign_keys=keys))
        return Schema(tables=tuple(tables), dialect=schema.dialect)

    kept = {ranked[0].name}
    for table in ranked[1:]:
        if table.name in kept:
            continue
        trial = kept | {table.name} | set(_path(table.name, kept, links))
        if count_tokens(render(build(trial))) <= budget_tokens:
            kept = trial
    return build(kept)
