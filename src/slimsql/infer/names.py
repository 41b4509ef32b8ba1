"""Which names in a query resolve against the schema, and SQLite's double-quoted strings.

A column must belong to a source of its own SELECT or of an enclosing one (correlated
subqueries), where a source is a schema table, a CTE or a derived table (its output
columns); select aliases count too. Scopes come from sqlglot's optimizer.

SQLite reads a double-quoted name that names no column where it stands as a string
literal (its documented misfeature, https://sqlite.org/quirks.html#dblquote, on which much
of Spider's gold SQL leans: ``WHERE country = "france"``). Every other engine reads it as
an unknown column. :func:`single_quoted` writes such tokens as the standard strings
SQLite takes them for: the road's answers (``slimsql.infer.pipeline``), the training
data's gold SQL (``slimsql.train.data``) and the evaluation's schema check
(``slimsql.eval.metrics``) all use this one reading.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.scope import traverse_scope

from ..schema import Schema

SQLITE_ROWID = ("rowid", "oid", "_rowid_")  # every ordinary SQLite table has these, unlisted


def _outputs(source) -> set[str] | None:
    """Column names a derived table or CTE provides (None: unknown, e.g. SELECT *)."""
    select = source.expression
    if any(isinstance(e, exp.Star) or (isinstance(e, exp.Column) and isinstance(e.this, exp.Star))
           for e in getattr(select, "expressions", [])):
        return None
    return {name.lower() for name in getattr(select, "named_selects", [])}


def scopes(sql: str, dialect: str) -> list | None:
    """sqlglot's scopes of ``sql`` (None when it does not parse)."""
    try:
        tree = sqlglot.parse_one(sql, read=dialect)
        return traverse_scope(tree) if tree is not None else []
    except Exception:
        return None


def unfound_columns(found_scopes, schema: Schema):
    """Each column (not ``*``) that names nothing where it stands, checked in its own scope."""
    for scope in found_scopes:
        aliases = {e.alias.lower() for e in getattr(scope.expression, "expressions", []) if isinstance(e, exp.Alias)}
        for column in scope.columns:
            if isinstance(column.this, exp.Star):
                continue
            if column.find_ancestor(exp.Select) is not scope.expression and isinstance(scope.expression, exp.Select):
                continue  # sqlglot also lists a subquery's unresolved columns here; checked in their own scope
            if not _column_found(column, scope, schema, aliases):
                yield column


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


def string_spans(sql: str, schema: Schema) -> list[tuple[int, int, str]]:
    """Where ``sql`` has a double-quoted name that names no column where it stands:
    ``(start, end, name)`` of each such token (``end`` inclusive), in order.

    SQLite reads such a name as a string literal (module docstring); every other engine,
    and the evaluation's schema check, read it as an unknown column. Only SQLite has the
    fallback, so for any other dialect, or SQL that does not parse, there are none.
    """
    if schema.dialect != "sqlite":
        return []
    spans = set()
    for column in unfound_columns(scopes(sql, schema.dialect) or [], schema):
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
