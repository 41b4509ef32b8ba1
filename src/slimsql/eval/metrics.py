"""Per-example checks and run-level aggregation, as pure functions.

Execution accuracy lives in ``execution``, exact match and hardness in ``exact``;
this module adds the schema check, the error categories and the summaries that
``metrics.json`` and the report show.
"""

from __future__ import annotations

import statistics
from typing import Any, Iterable

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.scope import traverse_scope

from ..db import EngineRules, rules_for
from ..schema import Schema
from .store import Record

HARDNESS = ("easy", "medium", "hard", "extra")
SQLITE_ROWID = ("rowid", "oid", "_rowid_")  # every ordinary SQLite table has these, unlisted
CATEGORIES = ("correct", "wrong result", "unknown column", "unknown table", "syntax", "timeout", "format",
              "other error")


def _outputs(source) -> set[str] | None:
    """Column names a derived table or CTE provides (None: unknown, e.g. SELECT *)."""
    select = source.expression
    if any(isinstance(e, exp.Star) or (isinstance(e, exp.Column) and isinstance(e.this, exp.Star))
           for e in getattr(select, "expressions", [])):
        return None
    return {name.lower() for name in getattr(select, "named_selects", [])}


def _scopes(sql: str, dialect: str) -> list | None:
    """sqlglot's scopes of ``sql`` (None when it does not parse)."""
    try:
        tree = sqlglot.parse_one(sql, read=dialect)
        return traverse_scope(tree) if tree is not None else []
    except Exception:
        return None


def _unfound_columns(scopes, schema: Schema):
    """Each column (not ``*``) that names nothing where it stands, checked in its own scope."""
    for scope in scopes:
        aliases = {e.alias.lower() for e in getattr(scope.expression, "expressions", []) if isinstance(e, exp.Alias)}
        for column in scope.columns:
            if isinstance(column.this, exp.Star):
                continue
            if column.find_ancestor(exp.Select) is not scope.expression and isinstance(scope.expression, exp.Select):
                continue  # sqlglot also lists a subquery's unresolved columns here; checked in their own scope
            if not _column_found(column, scope, schema, aliases):
                yield column


def schema_adherence(sql: str, schema: Schema) -> bool:
    """True when every table and column the query names exists where SQL looks for it.

    Scopes come from sqlglot's optimizer: a column must belong to a source of its own
    SELECT or of an enclosing one (correlated subqueries), where a source is a schema
    table, a CTE or a derived table (its output columns); select aliases count too.
    """
    scopes = _scopes(sql, schema.dialect)
    if not scopes:
        return False
    if any(isinstance(source, exp.Table) and schema.table(source.name) is None
           for scope in scopes for source in scope.sources.values()):
        return False
    return next(_unfound_columns(scopes, schema), None) is None


def string_spans(sql: str, schema: Schema) -> list[tuple[int, int, str]]:
    """Where ``sql`` has a double-quoted name that names no column where it stands:
    ``(start, end, name)`` of each such token (``end`` inclusive), in order.

    SQLite reads such a name as a string literal (its own documented misfeature, on which
    much of Spider's gold SQL leans: ``WHERE country = "france"``); every other engine, and
    :func:`schema_adherence`, reads it as an unknown column. Only SQLite has the fallback, so
    for any other dialect, or SQL that does not parse, there are none.
    """
    if schema.dialect != "sqlite":
        return []
    spans = set()
    for column in _unfound_columns(_scopes(sql, schema.dialect) or [], schema):
        name = column.this
        if column.table or not isinstance(name, exp.Identifier) or not name.quoted:
            continue
        start, end = name.meta.get("start"), name.meta.get("end")
        if start is not None and end is not None and sql[start] == '"' and sql[end] == '"':
            spans.add((start, end, column.name))  # (no position to rewrite at: left alone)
    return sorted(spans)


def single_quoted(sql: str, schema: Schema) -> str:
    """``sql`` with each token of :func:`string_spans` written as the single-quoted string
    SQLite takes it for; nothing else changes, byte for byte (a table, alias or column of the
    same spelling elsewhere keeps its quotes)."""
    pieces, last = [], 0
    for start, end, name in string_spans(sql, schema):
        pieces += [sql[last:start], "'" + name.replace("'", "''") + "'"]
        last = end + 1
    return "".join(pieces) + sql[last:]


def _column_found(column: exp.Column, scope, schema: Schema, aliases: set[str]) -> bool:
    name, qualifier = column.name.lower(), column.table.lower()
    if not qualifier and name in aliases:
        return True
    current = scope
    while current is not None:
        sources = {k.lower(): v for k, v in current.sources.items()}
        named = bool(qualifier) and qualifier in sources  # (an unaliased subquery's key is "")
        candidates = [sources[qualifier]] if named else ([] if qualifier else list(sources.values()))
        for source in candidates:
            if isinstance(source, exp.Table):
                table = schema.table(source.name)
                if table is not None and (any(c.name.lower() == name for c in table.columns)
                                          or (schema.dialect == "sqlite" and name in SQLITE_ROWID)):
                    return True
            else:
                outputs = _outputs(source)
                if outputs is None or name in outputs:
                    return True
        if named:
            return False  # the qualifier names a source that lacks the column
        current = current.parent
    return False


def categorize(record: Record, rules: EngineRules | None = None) -> str:
    """One error category per example, from its scored record; ``rules`` (the default
    engine's when None) say how the engine's error messages map to categories."""
    if record.ex:
        return "correct"
    if record.extract_error or record.unsafe:
        return "format"
    error = (record.exec_error or "").lower()
    if not error:
        return "wrong result"
    if "time limit" in error:  # slimsql's own messages (db/, sql.py), on every engine
        return "timeout"
    found = (rules or rules_for()).category(error)
    if found:
        return found
    if "could not be parsed" in error:
        return "syntax"
    return "other error"


def _rate(values: Iterable[bool]) -> float | None:
    values = list(values)
    return round(sum(values) / len(values), 4) if values else None


def _seconds(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {"median": round(statistics.median(ordered), 3), "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 3),
            "mean": round(statistics.fmean(ordered), 3)}


def _cleaning(records: list[Record]) -> dict[str, int]:
    """How often model output needed each clean-up, or could not be reduced to SQL."""
    generated = [r for r in records if r.generated]
    counts = {"outputs": len(generated), "rejected": sum(r.extract_error is not None for r in generated)}
    for record in generated:
        for fix in record.fixes:
            counts[fix] = counts.get(fix, 0) + 1
    return counts


def summarize(records: list[Record], rules: EngineRules | None = None) -> dict[str, Any]:
    """Run-level metrics over scored records (one per example); ``rules`` as for :func:`categorize`."""
    scored = [r for r in records if r.scored]
    parsed_gold = [r for r in records if r.em is not None]
    official_gold = [r for r in records if r.em_official is not None]  # absent before rescoring
    by_hardness = {}
    for level in HARDNESS:
        group = [r for r in scored if r.hardness == level]
        em_group = [r for r in parsed_gold if r.hardness == level]
        official_group = [r for r in official_gold if r.hardness == level]
        by_hardness[level] = {"count": len(group), "ex": _rate(r.ex for r in group),
                              "em": _rate(r.em for r in em_group),
                              "em_official": _rate(r.em_official for r in official_group)}
    by_label = {label: {"count": len(group), "ex": _rate(r.ex for r in group)}
                for label in sorted({r.label for r in scored if r.label})
                for group in [[r for r in scored if r.label == label]]}
    # a record keeps the category its engine's rules gave it when scored; older records get one here
    categories = {c: sum((r.category or categorize(r, rules)) == c for r in scored) for c in CATEGORIES}
    generation = [r.gen_s for r in records if r.gen_s is not None]
    return {
        "examples": len(records),
        "executable": sum(r.executable for r in records),
        "scored": len(scored),
        "gold_errors": sum(bool(r.gold_error) for r in records),
        "missing_db": sum(not r.executable for r in records),
        "ex": _rate(r.ex for r in scored),
        "test_suite": _rate(r.ts for r in scored if r.ts is not None),
        "em": _rate(r.em for r in parsed_gold),  # exact match, normalized (exact.py)
        "em_official": _rate(r.em_official for r in official_gold),  # as Spider's evaluation.py (official.py)
        "valid_sql": _rate(r.valid for r in scored),
        "schema_adherence": _rate(r.schema_ok for r in scored if r.schema_ok is not None),
        "strict_format": _rate(r.strict for r in records if r.generated),
        "cleaning": _cleaning(records),
        "by_hardness": by_hardness,
        "by_label": by_label,  # the benchmark's own labels (BIRD difficulty, sql-eval category)
        "categories": categories,
        "latency_s": {"generation": _seconds(generation),
                      "scoring": _seconds([r.score_s for r in records if r.score_s is not None])},
        "tokens": {"prompt_mean": round(statistics.fmean([r.prompt_tokens for r in records]), 1)
                   if records else None,
                   "completion_mean": round(statistics.fmean([r.completion_tokens for r in records]), 1)
                   if records else None},
    }
