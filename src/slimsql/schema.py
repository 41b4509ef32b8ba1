"""Schema values (tables, columns, keys, sample values) and their renderings.

Engines in ``slimsql.db`` produce a :class:`Schema`; prompt styles render it as
CREATE TABLE text (:func:`render_create`, the form most models were trained on)
or as one line per table (:func:`render_compact`, for small context windows).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import partial
from typing import Any

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# SQLite's keywords (https://www.sqlite.org/lang_keywords.html) and PostgreSQL's reserved ones
# (its documentation's SQL Key Words appendix); quoting only these keeps
# ordinary names like ``date`` or ``year`` unquoted in prompts.
_KEYWORDS = frozenset("""
ABORT ACTION ADD AFTER ALL ALTER ALWAYS ANALYZE AND AS ASC ATTACH AUTOINCREMENT BEFORE BEGIN BETWEEN BY
CASCADE CASE CAST CHECK COLLATE COLUMN COMMIT CONFLICT CONSTRAINT CREATE CROSS CURRENT CURRENT_DATE
CURRENT_TIME CURRENT_TIMESTAMP DATABASE DEFAULT DEFERRABLE DEFERRED DELETE DESC DETACH DISTINCT DO DROP
EACH ELSE END ESCAPE EXCEPT EXCLUDE EXCLUSIVE EXISTS EXPLAIN FAIL FILTER FIRST FOLLOWING FOR FOREIGN FROM
FULL GENERATED GLOB GROUP GROUPS HAVING IF IGNORE IMMEDIATE IN INDEX INDEXED INITIALLY INNER INSERT
INSTEAD INTERSECT INTO IS ISNULL JOIN KEY LAST LEFT LIKE LIMIT MATCH MATERIALIZED NATURAL NO NOT NOTHING
NOTNULL NULL NULLS OF OFFSET ON OR ORDER OTHERS OUTER OVER PARTITION PLAN PRAGMA PRECEDING PRIMARY QUERY
RAISE RANGE RECURSIVE REFERENCES REGEXP REINDEX RELEASE RENAME REPLACE RESTRICT RETURNING RIGHT ROLLBACK
ROW ROWS SAVEPOINT SELECT SET TABLE TEMP TEMPORARY THEN TIES TO TRANSACTION TRIGGER UNBOUNDED UNION
UNIQUE UPDATE USING VACUUM VALUES VIEW VIRTUAL WHEN WHERE WINDOW WITH WITHOUT
""".split()) | frozenset("""
ANALYSE ANY ARRAY ASYMMETRIC AUTHORIZATION BINARY BOTH COLLATION CONCURRENTLY CURRENT_CATALOG CURRENT_ROLE
CURRENT_SCHEMA CURRENT_USER FALSE FETCH FREEZE GRANT ILIKE LATERAL LEADING LOCALTIME LOCALTIMESTAMP ONLY
OVERLAPS PLACING SESSION_USER SIMILAR SOME SYMMETRIC SYSTEM_USER TABLESAMPLE TRAILING TRUE USER VARIADIC
VERBOSE
""".split())  # PostgreSQL's reserved key words not reserved in SQLite


@dataclass(frozen=True)
class Column:
    name: str
    type: str = ""
    nullable: bool = True
    primary_key: bool = False
    default: Any = None
    samples: tuple[Any, ...] = ()
    comment: str = ""  # the database's own description of the column (e.g. PostgreSQL COMMENT ON)


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...] = ()  # empty: the referenced table's primary key


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    foreign_keys: tuple[ForeignKey, ...] = ()
    kind: str = "table"  # or "view"
    comment: str = ""  # the database's own description of the table

    @property
    def primary_key(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.primary_key)


@dataclass(frozen=True)
class Schema:
    tables: tuple[Table, ...]
    dialect: str = "sqlite"
    _index: dict = field(default=None, init=False, repr=False, compare=False)

    def table(self, name: str) -> Table | None:
        """Case-insensitive lookup, as SQLite resolves names."""
        if self._index is None:
            object.__setattr__(self, "_index", {t.name.lower(): t for t in self.tables})
        return self._index.get(name.lower())

    def names(self) -> list[str]:
        return [t.name for t in self.tables]


def quote(name: str, dialect: str = "sqlite") -> str:
    """Quote an identifier only where SQL needs it: odd characters, keywords (SQLite's and
    PostgreSQL's reserved words, so a prompt reads the same for every engine), and on
    PostgreSQL, which folds unquoted names to lower case, any upper-case letter."""
    if _PLAIN.match(name) and name.upper() not in _KEYWORDS and not (dialect == "postgres" and name != name.lower()):
        return name
    return '"' + name.replace('"', '""') + '"'


def quote_table(name: str, dialect: str = "sqlite") -> str:
    """A table's name as SQL: outside SQLite, engines name a table outside the default schema
    ``schema.table`` (:class:`Table` names hold the dot), so each part is quoted on its own."""
    if dialect != "sqlite" and "." in name:
        return ".".join(quote(part, dialect) for part in name.split(".", 1))
    return quote(name, dialect)


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''").replace("\n", " ") + "'"
    return repr(value)


def _one_line(text: str, limit: int = 200) -> str:
    """A description as one short line (it sits in a SQL comment of the prompt)."""
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ref_columns(schema: Schema, key: ForeignKey) -> tuple[str, ...]:
    if key.ref_columns:
        return key.ref_columns
    target = schema.table(key.ref_table)
    return target.primary_key if target else ()


def render_create(schema: Schema, *, samples: bool = True) -> str:
    """CREATE TABLE statements, sample values as trailing comments."""
    q, qt = partial(quote, dialect=schema.dialect), partial(quote_table, dialect=schema.dialect)
    blocks = []
    for table in schema.tables:
        pk = table.primary_key
        lines = []
        for col in table.columns:
            text = f"  {q(col.name)}"
            if col.type:
                text += f" {col.type}"
            if col.primary_key and len(pk) == 1:
                text += " PRIMARY KEY"
            elif not col.nullable:
                text += " NOT NULL"
            example = "e.g. " + ", ".join(_literal(v) for v in col.samples) if samples and col.samples else ""
            lines.append([text, "; ".join(p for p in (_one_line(col.comment), example) if p)])
        if len(pk) > 1:
            lines.append([f"  PRIMARY KEY ({', '.join(q(c) for c in pk)})", ""])
        for key in table.foreign_keys:
            refs = _ref_columns(schema, key)
            target = qt(key.ref_table) + (f" ({', '.join(q(c) for c in refs)})" if refs else "")
            lines.append([f"  FOREIGN KEY ({', '.join(q(c) for c in key.columns)}) REFERENCES {target}", ""])
        body = []
        for i, (text, example) in enumerate(lines):
            comma = "," if i < len(lines) - 1 else ""
            body.append(f"{text}{comma}" + (f" -- {example}" if example else ""))
        kind = "VIEW" if table.kind == "view" else "TABLE"
        about = f"-- {_one_line(table.comment)}\n" if table.comment.strip() else ""
        blocks.append(f"{about}CREATE {kind} {qt(table.name)} (\n" + "\n".join(body) + "\n);")
    return "\n\n".join(blocks)


def render_compact(schema: Schema, *, samples: bool = False) -> str:
    """One line per table: ``name(col TYPE PK, ...)``, then the join keys."""
    q, qt = partial(quote, dialect=schema.dialect), partial(quote_table, dialect=schema.dialect)
    lines, joins = [], []
    for table in schema.tables:
        cols = []
        for col in table.columns:
            text = q(col.name) + (f" {col.type}" if col.type else "") + (" PK" if col.primary_key else "")
            if samples and col.samples:
                text += " e.g. " + "/".join(_literal(v) for v in col.samples)
            cols.append(text)
        lines.append(f"{qt(table.name)}({', '.join(cols)})")
        for key in table.foreign_keys:
            for src, dst in zip(key.columns, _ref_columns(schema, key)):
                joins.append(f"{qt(table.name)}.{q(src)} = {qt(key.ref_table)}.{q(dst)}")
    if joins:
        lines.append("Joins: " + "; ".join(joins))
    return "\n".join(lines)
