"""Official-compatible Spider exact match: the verdict of Spider's own evaluation script.

The normalized matcher in ``exact`` reads every query sqlglot parses. The official
``evaluation.py`` (taoyds/test-suite-sql-eval, with ``process_sql.py``) reads a narrower
grammar with its own tokenizer, and scores a prediction it cannot read as an empty query,
so as no match. It cannot read, among others: ``INNER``/``LEFT JOIN``, comma joins,
column aliases (``count(*) AS n``), functions other than the five aggregates, ``IS NULL``,
``IN (1, 2)``, ``<>``, ``a=b`` without spaces, aliases without ``AS``. This module reads a
query the way that script does, into ``exact.Query`` components, and compares them with
the same component matcher, keeping the script's other quirks:

* table aliases are global to the query, the last ``AS`` wins (``scan_alias``);
* an unqualified column belongs to the first table of its own FROM that has it;
* DISTINCT is dropped in the outer query and its set operations, inside aggregates too,
  and foreign-key columns count as one there, only for tables of the outer FROM
  (``rebuild_sql_col``); nested queries compare as written, item order included;
* values are masked, except inside FROM subqueries (``rebuild_sql_val``);
* ``value`` in a prediction is replaced by ``1`` before reading (``evaluate``).

A gold query the script cannot read stops the script; :func:`verdict` returns None then.
"""

from __future__ import annotations

import re
from dataclasses import replace

from ..schema import Schema
from .exact import Cond, Query, exact_match_queries, key_map_from_schema

_CLAUSES = frozenset(("select", "from", "where", "group", "order", "limit", "intersect", "union", "except"))
_JOIN_WORDS = frozenset(("join", "on", "as"))
_COND_OPS = frozenset(("not", "between", "=", ">", "<", ">=", "<=", "!=", "in", "like", "is", "exists"))
_UNIT_OPS = frozenset(("none", "-", "+", "*", "/"))
_AGGS = frozenset(("none", "max", "min", "count", "sum", "avg"))
_SET_OPS = {"intersect": "intersect", "union": "union", "except": "except_"}


class Refused(ValueError):
    """The official parser fails on this query."""


# -- tokenizer: nltk's word_tokenize (no sentence splitting) on the query with its strings held out --

_FINAL_PERIOD = re.compile(r"([^.])\.([\])}> \u00bb\u201d\u2019]*)\s*$")
_COMMA = re.compile(r"([:,])(\D)")  # nltk splits ',' and ':' unless a digit follows
_PAD = re.compile(r"`+|\.{2,}|--|[;@#$%&?!*()\[\]{}<>\u00ab\u201c\u2018\u201e\u00bb\u201d\u2019\u2012-\u2015]")
_CONTRACTIONS = re.compile(r"(?i)\b(can)(not)\b|\b(gim|lem)(me)\b|\b(gon)(na)\b|\b(got)(ta)\b|\b(wan)(na)(?=\s)")


def tokenize(sql: str) -> list[str]:
    """Lower-cased tokens as the official tokenizer makes them; string literals whole."""
    text = sql.replace("'", '"')
    quotes = [i for i, ch in enumerate(text) if ch == '"']
    if len(quotes) % 2:
        raise Refused("unbalanced quotes")
    strings = {}
    for n in range(len(quotes) - 1, 0, -2):  # pairs from the end, as the official tokenizer
        start, end = quotes[n - 1], quotes[n]
        key = f"__str{start}__"
        strings[key] = text[start:end + 1]
        text = text[:start] + key + text[end + 1:]
    text = _FINAL_PERIOD.sub(r"\1 . \2", text)
    text = _COMMA.sub(r" \1 \2", text + " ")
    text = _PAD.sub(r" \g<0> ", text)
    text = _CONTRACTIONS.sub(lambda m: " " + " ".join(g for g in m.groups() if g) + " ", f" {text} ")
    tokens = [strings.get(tok, tok) for tok in text.lower().split()]
    merged: list[str] = []
    for tok in tokens:  # '!=', '>=', '<=' come out of nltk in two pieces
        if tok == "=" and merged and merged[-1] in ("!", ">", "<"):
            merged[-1] += "="
        else:
            merged.append(tok)
    return merged


# -- parser: process_sql's grammar, failing where it fails --------------------------------

_STOP = _CLAUSES | {")", ";"}


class _Reader:
    def __init__(self, tokens: list[str], tables: dict[str, frozenset[str]]):
        self.toks, self.tables = tokens, tables
        aliases = {}
        for i, tok in enumerate(tokens):  # every 'x AS y' anywhere in the query, the last one wins
            if tok == "as":
                aliases[self.at(i + 1)] = tokens[i - 1]
        if any(name in aliases for name in tables):
            raise Refused("an alias is named like a table")
        self.aliases = {**aliases, **{name: name for name in tables}}

    def on(self, tokens: list[str]) -> "_Reader":
        view = object.__new__(_Reader)
        view.toks, view.tables, view.aliases = tokens, self.tables, self.aliases
        return view

    def at(self, i: int) -> str:
        if i >= len(self.toks):
            raise Refused("unexpected end of query")
        return self.toks[i]

    def peek(self, i: int) -> str | None:
        return self.toks[i] if i < len(self.toks) else None

    def expect(self, i: int, token: str) -> int:
        if self.at(i) != token:
            raise Refused(f"expected {token!r}, found {self.toks[i]!r}")
        return i + 1

    def column(self, i: int, default: list[str]) -> tuple[int, str]:
        tok = self.at(i)
        if tok == "*":
            return i + 1, "*"
        if "." in tok:
            alias, _, name = tok.partition(".")
            table = self.aliases.get(alias)
            if "." in name or table not in self.tables or name not in self.tables[table]:
                raise Refused(f"unknown column {tok!r}")
            return i + 1, f"{table}.{name}"
        for table in default:  # the first table of this FROM that has the column
            if tok in self.tables[table]:
                return i + 1, f"{table}.{tok}"
        raise Refused(f"unknown column {tok!r}")

    def col_unit(self, i: int, default: list[str]) -> tuple[int, tuple]:
        block = self.at(i) == "("
        i += block
        if self.at(i) in _AGGS:
            agg = self.toks[i]
            i = self.expect(i + 1, "(")
            distinct = self.at(i) == "distinct"
            i, key = self.column(i + distinct, default)
            return self.expect(i, ")"), (agg, key, distinct)  # the official parser leaves a '(' before it open
        distinct = self.at(i) == "distinct"
        i, key = self.column(i + distinct, default)
        return (self.expect(i, ")") if block else i), ("none", key, distinct)

    def val_unit(self, i: int, default: list[str]) -> tuple[int, tuple]:
        block = self.at(i) == "("
        i, left = self.col_unit(i + block, default)
        op, right = "none", None
        if self.peek(i) in _UNIT_OPS:
            op = self.toks[i]
            i, right = self.col_unit(i + 1, default)
        return (self.expect(i, ")") if block else i), (op, left, right)

    def value(self, i: int, default: list[str]):
        start, block = i, self.at(i) == "("
        i += block
        tok = self.at(i)
        if tok == "select":
            i, val = self.query(i)
        elif '"' in tok:
            val, i = tok, i + 1
        else:
            try:
                val, i = float(tok), i + 1
            except ValueError:  # a column: read from the tokens up to the next delimiter
                end = i
                while end < len(self.toks) and self.toks[end] not in _CLAUSES | _JOIN_WORDS | {",", ")", "and"}:
                    end += 1
                val, i = self.on(self.toks[start:end]).col_unit(0, default)[1], end
        return (self.expect(i, ")") if block else i), val

    def conditions(self, i: int, default: list[str]) -> tuple[int, tuple[Cond, ...], tuple[str, ...]]:
        conds, connectors = [], []
        while i < len(self.toks):
            i, left = self.val_unit(i, default)
            negated = self.at(i) == "not"
            op = self.at(i + negated)
            if op not in _COND_OPS:
                raise Refused(f"unknown operator {op!r}")
            i, low = self.value(i + negated + 1, default)
            high = None
            if op == "between":
                i, high = self.value(self.expect(i, "and"), default)
            conds.append(Cond(negated, op, left, low, high))
            nxt = self.peek(i)
            if nxt is None or nxt in _STOP or nxt in _JOIN_WORDS:
                break
            if nxt not in ("and", "or"):  # the official parser would misalign its condition list here
                raise Refused(f"unexpected {nxt!r} after a condition")
            connectors.append(nxt)
            i += 1
        return i, tuple(conds), tuple(connectors)

    def table_unit(self, i: int) -> tuple[int, str]:
        name = self.aliases.get(self.at(i))
        if name not in self.tables:
            raise Refused(f"unknown table {self.toks[i]!r}")
        return i + (3 if self.peek(i + 1) == "as" else 1), name

    def from_clause(self, start: int):
        if "from" not in self.toks[start:]:
            raise Refused("no FROM")
        i = self.toks.index("from", start) + 1
        default: list[str] = []
        units: list = []
        conds: tuple[Cond, ...] = ()
        connectors: tuple[str, ...] = ()
        while i < len(self.toks):
            block = self.toks[i] == "("
            i += block
            if self.at(i) == "select":
                i, sub = self.query(i)
                units.append(sub)
            else:
                i, name = self.table_unit(i + (self.peek(i) == "join"))
                units.append(name)
                default.append(name)
            if self.peek(i) == "on":
                i, more, links = self.conditions(i + 1, default)
                connectors += (("and",) if conds else ()) + links
                conds += more
            if block:
                i = self.expect(i, ")")
            if self.peek(i) in _STOP:
                break
        return i, tuple(units), conds, connectors, default

    def select(self, i: int, default: list[str]) -> tuple[bool, tuple]:
        i = self.expect(i, "select")
        distinct = self.peek(i) == "distinct"
        i += distinct
        items = []
        while i < len(self.toks) and self.toks[i] not in _CLAUSES:
            agg = self.toks[i] if self.toks[i] in _AGGS else "none"
            i, unit = self.val_unit(i + (self.toks[i] in _AGGS), default)
            items.append((agg, unit))
            i += self.peek(i) == ","
        return distinct, tuple(items)

    def keyword_conditions(self, i: int, word: str, default: list[str]):
        if self.peek(i) != word:
            return i, (), ()
        return self.conditions(i + 1, default)

    def group_by(self, i: int, default: list[str]) -> tuple[int, tuple]:
        if self.peek(i) != "group":
            return i, ()
        i, units = self.expect(i + 1, "by"), []
        while i < len(self.toks) and self.toks[i] not in _STOP:
            i, unit = self.col_unit(i, default)
            units.append(unit)
            if self.peek(i) != ",":
                break
            i += 1
        return i, tuple(units)

    def order_by(self, i: int, default: list[str]):
        if self.peek(i) != "order":
            return i, None
        i, units, direction = self.expect(i + 1, "by"), [], "asc"
        while i < len(self.toks) and self.toks[i] not in _STOP:
            i, unit = self.val_unit(i, default)
            units.append(unit)
            if self.peek(i) in ("asc", "desc"):
                direction, i = self.toks[i], i + 1
            if self.peek(i) != ",":
                break
            i += 1
        return i, (direction, tuple(units))

    def skip_semicolons(self, i: int) -> int:
        while self.peek(i) == ";":
            i += 1
        return i

    def query(self, start: int) -> tuple[int, Query]:
        block = self.at(start) == "("
        end, units, join_conds, join_connectors, default = self.from_clause(start)
        distinct, select = self.select(start + block, default)
        i, where, connectors = self.keyword_conditions(end, "where", default)
        i, group = self.group_by(i, default)
        i, having, having_connectors = self.keyword_conditions(i, "having", default)
        i, order = self.order_by(i, default)
        limit = self.peek(i) == "limit"
        i = self.skip_semicolons(i + 2 * limit)  # the limit value is skipped unread
        if block:
            i = self.skip_semicolons(self.expect(i, ")"))
        query = Query(select=select, tables=units, join_conds=join_conds, join_connectors=join_connectors,
                      where=where, connectors=connectors, group=group, having=having,
                      having_connectors=having_connectors, order=order, limit=limit, distinct=distinct)
        op = self.peek(i)
        if op in _SET_OPS:  # the rest of the chain nests to the right: A op (B op C)
            i, rest = self.query(i + 1)
            query = replace(query, **{_SET_OPS[op]: rest})
        return i, query


# -- the script's rewriting before it compares (rebuild_sql_val, rebuild_sql_col) ----------

def _masked(query: Query) -> Query:
    """Values masked in conditions, recursively through nested queries; FROM subqueries untouched."""
    def cond(c: Cond) -> Cond:
        return replace(c, right=_masked(c.right) if isinstance(c.right, Query) else None,
                       right2=_masked(c.right2) if isinstance(c.right2, Query) else None)
    return replace(query, join_conds=tuple(map(cond, query.join_conds)), where=tuple(map(cond, query.where)),
                   having=tuple(map(cond, query.having)),
                   **{k: _masked(getattr(query, k)) for k in _SET_OPS.values() if getattr(query, k)})


def _canonical(query: Query, tables: set[str], key_map: dict[str, str]) -> Query:
    """DISTINCT dropped and foreign keys mapped (columns of ``tables`` only), in the outer
    query and its set operations; nested queries in conditions stay as written."""
    def col(unit):
        if unit is None:
            return None
        agg, key, _ = unit
        return (agg, key_map.get(key, key) if key.split(".")[0] in tables else key, False)

    def val(unit):
        return (unit[0], col(unit[1]), col(unit[2]))

    def cond(c: Cond) -> Cond:
        return replace(c, left=val(c.left))

    return replace(
        query, distinct=False, select=tuple((agg, val(unit)) for agg, unit in query.select),
        join_conds=tuple(map(cond, query.join_conds)), where=tuple(map(cond, query.where)),
        having=tuple(map(cond, query.having)), group=tuple(map(col, query.group)),
        order=query.order and (query.order[0], tuple(map(val, query.order[1]))),
        **{k: _canonical(getattr(query, k), tables, key_map) for k in _SET_OPS.values() if getattr(query, k)})


def _catalog(schema: Schema) -> dict[str, frozenset[str]]:
    return {t.name.lower(): frozenset(c.name.lower() for c in t.columns) for t in schema.tables if t.kind == "table"}


def read(sql: str, schema: Schema, key_map: dict[str, str] | None = None) -> Query:
    """The query as the official script compares it; raises :class:`Refused` where it fails."""
    tables = _catalog(schema)
    tokens = tokenize(sql)
    try:
        query = _Reader(tokens, tables).query(0)[1]
    except RecursionError:
        raise Refused("nested too deep") from None
    keys = key_map if key_map is not None else key_map_from_schema(schema)
    return _canonical(_masked(query), {t for t in query.tables if isinstance(t, str)}, keys)


def _matches(pred: Query, gold: Query) -> bool:
    if not exact_match_queries(pred, gold):
        return False
    if pred.group and gold.group and pred.having_connectors != gold.having_connectors:
        return False  # the script compares HAVING as a list, its AND/OR included
    return all(_matches(getattr(pred, k), getattr(gold, k)) for k in _SET_OPS.values() if getattr(gold, k))


def official_exact_match(pred_sql: str | None, gold_sql: str, schema: Schema,
                         key_map: dict[str, str] | None = None) -> bool:
    """Exact set match as Spider's ``evaluation.py`` decides it (raises Refused for an unreadable gold)."""
    keys = key_map if key_map is not None else key_map_from_schema(schema)
    gold = read(gold_sql, schema, keys)
    try:
        pred = read((pred_sql or "").replace("value", "1"), schema, keys)  # as the script does to predictions
    except Refused:
        return False  # scored as an empty query, which matches no gold
    return _matches(pred, gold)


def verdict(pred_sql: str | None, gold_sql: str, schema: Schema, key_map: dict[str, str] | None = None) -> bool | None:
    """``official_exact_match``, or None when the official script cannot read the gold query."""
    try:
        return official_exact_match(pred_sql, gold_sql, schema, key_map)
    except Refused:
        return None
