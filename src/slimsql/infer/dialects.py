"""The model's SQL in the engine's dialect: sqlglot transpilation where the model wrote another.

Small models write the dialect they saw most (SQLite's ``strftime`` and ``julianday``,
PostgreSQL's ``ILIKE``, ``::`` casts and ``date_trunc``) whatever engine the prompt
names. Two steps of the road use sqlglot to carry such SQL over:

* :func:`foreign` before a candidate runs: a function the engine's dialect does not
  know (sqlglot reads it as an anonymous call) that another dialect does know means the
  model wrote that dialect; the statement is read in it and written in the engine's.
* :func:`rewrites` after the engine refused a candidate: the statement read in the
  engine's dialect and written back by sqlglot's generator for it, which replaces what
  the engine lacks (``IFNULL``, ``GROUP_CONCAT``, ``ILIKE`` on SQLite, ``::``...), then
  read in each other dialect and translated. The first spelling that runs is kept; as it
  is only tried on failure, a query the engine ran is never changed.

Each change is recorded in the candidate's trace (``repairs``: "transpiled from sqlite to
postgres"), which ``slimsql ask --trace`` and the web page show.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError, TokenError

#: Dialects a model may have written, most likely first. MySQL is left out on purpose: it
#: reads "name" as a string, so taking it as the source would change what queries mean.
SOURCES = ("sqlite", "postgres", "duckdb")
_ERRORS = (ParseError, TokenError, ValueError, RecursionError)


def _parse(sql: str, dialect: str) -> exp.Expression | None:
    try:
        return sqlglot.parse_one(sql, read=dialect)
    except _ERRORS:
        return None


def _unknown(tree: exp.Expression) -> set[str]:
    """Names of the functions sqlglot did not recognise in ``tree`` (lower case)."""
    return {f.name.lower() for f in tree.find_all(exp.Anonymous)}


def _write(tree: exp.Expression, dialect: str) -> str | None:
    """``tree`` in ``dialect``, or None where the generator cannot express a part of it."""
    try:
        return tree.sql(dialect=dialect, unsupported_level=ErrorLevel.RAISE)
    except (sqlglot.errors.UnsupportedError, *_ERRORS):
        return None


def foreign(sql: str, dialect: str) -> tuple[str, str] | None:
    """``(sql in dialect, source dialect)`` when ``sql`` calls functions of another dialect;
    None when it reads as ``dialect`` already (or no other dialect explains it)."""
    tree = _parse(sql, dialect)
    if tree is None:
        return None
    unknown = _unknown(tree)
    if not unknown:
        return None
    for source in SOURCES:
        if source == dialect:
            continue
        theirs = _parse(sql, source)
        if theirs is None or _unknown(theirs) >= unknown:  # that dialect knows none of them better
            continue
        written = _write(theirs, dialect)
        if written is not None and written != sql:
            return written, source
    return None


def rewrites(sql: str, dialect: str) -> list[tuple[str, str]]:
    """Other spellings of ``sql`` for ``dialect``, to try after the engine refused it, as
    ``(sql, note)``: sqlglot's own writing of it in ``dialect``, then its translation from
    each other dialect it parses in (first that differs, once each)."""
    out: list[tuple[str, str]] = []
    for source in (dialect,) + tuple(d for d in SOURCES if d != dialect):
        tree = _parse(sql, source)
        written = _write(tree, dialect) if tree is not None else None
        if written is None or written.strip() == sql.strip() or any(written == seen for seen, _ in out):
            continue
        note = f"rewritten by sqlglot for {dialect}" if source == dialect else f"transpiled from {source} to {dialect}"
        out.append((written, note))
    return out
