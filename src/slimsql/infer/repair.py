"""Repairing a failed candidate: first on the parse tree, then by asking the model.

:func:`fix_identifiers` is deterministic and works on sqlglot's parse tree (never
on the text): a column that does not exist in the table its qualifier names, but
exists in exactly one other table of the same SELECT, gets that table's
qualifier; a SELECT over a single table that names columns the table lacks reads
from the one table that has them all instead; a near-miss name (case,
underscores, a plural, a small edit distance) becomes the schema's name when
exactly one name is that close. A query whose names all resolve is never changed.

:func:`repair_messages` builds the model round: the conversation so far, the
failed query as the model's turn, and a user turn with the database's error and
the columns of the tables the query uses.
"""

from __future__ import annotations

import difflib
from typing import Sequence

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.scope import Scope, traverse_scope

from ..backends import Message
from ..db import EngineRules, rules_for
from ..schema import Schema, quote, quote_table


def _norm(name: str) -> str:
    return name.lower().replace("_", "").replace(" ", "")


def _singular(name: str) -> str:
    for suffix in ("ies", "es", "s"):
        if name.endswith(suffix) and len(name) > len(suffix) + 2:
            return name[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return name


def _distance(a: str, b: str, bound: int) -> int:
    """Levenshtein distance, or bound + 1 once it is certain to exceed ``bound``."""
    if abs(len(a) - len(b)) > bound:
        return bound + 1
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if min(current) > bound:
            return bound + 1
        previous = current
    return previous[-1]


def closest(name: str, options: Sequence[str]) -> str | None:
    """The one option that is a near miss of ``name``, or None (none, or several equally near)."""
    tests = (
        lambda o: o.lower() == name.lower(),
        lambda o: _norm(o) == _norm(name),
        lambda o: _singular(_norm(o)) == _singular(_norm(name)),
    )
    for test in tests:
        found = {o for o in options if test(o)}
        if found:
            return found.pop() if len(found) == 1 else None
    bound = 1 if len(name) < 8 else 2
    if len(name) < 4:
        return None
    scored = [(_distance(_norm(name), _norm(o), bound), o) for o in options]
    best = min((d for d, _ in scored), default=bound + 1)
    found = {o for d, o in scored if d == best and d <= bound}
    return found.pop() if len(found) == 1 else None


class _Names:
    """The schema's names, case-insensitively."""

    def __init__(self, schema: Schema):
        self.tables = {t.name.lower(): t.name for t in schema.tables}
        self.columns = {t.name.lower(): {c.name.lower(): c.name for c in t.columns} for t in schema.tables}
        self.dialect = schema.dialect

    def identifier(self, real: str) -> exp.Identifier:
        """``real`` (one name, not schema.table) as an identifier, quoted where the dialect needs it."""
        return exp.to_identifier(real, quoted=quote(real, self.dialect) != real)


def _scope_tables(scope: Scope, names: _Names) -> dict[str, str]:
    """Source alias (as written, lower-cased) -> schema table (lower-cased), base tables only."""
    out = {}
    for alias, source in scope.sources.items():
        if isinstance(source, exp.Table) and source.name.lower() in names.tables:
            out[alias.lower()] = source.name.lower()
    return out


def _visible_columns(scope: Scope | None, names: _Names) -> set[str]:
    """Column names visible from enclosing scopes (correlated subqueries)."""
    seen: set[str] = set()
    while scope is not None:
        for table in _scope_tables(scope, names).values():
            seen.update(names.columns[table])
        if isinstance(scope.expression, exp.Select):  # names the query itself gives its outputs
            seen.update(s.alias.lower() for s in scope.expression.selects if isinstance(s, exp.Alias))
        scope = scope.parent
    return seen


def _fix_tables(tree: exp.Expression, names: _Names, changes: list[str]) -> None:
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        name = table.name
        if not name or name.lower() in names.tables or name.lower() in ctes or table.args.get("db"):
            continue
        real = closest(name, list(names.tables.values()))
        if real:
            # outside SQLite a table of another schema is named schema.table
            where, _, base = real.rpartition(".") if names.dialect != "sqlite" else ("", "", real)
            table.set("this", names.identifier(base))
            if where:
                table.set("db", names.identifier(where))
            changes.append(f"{name} -> {real}")


def _fix_column(column: exp.Column, scope: Scope, tables: dict[str, str], names: _Names,
                changes: list[str]) -> None:
    name, qualifier = column.name, column.table
    low = name.lower()
    if qualifier:
        table = tables.get(qualifier.lower())
        if table is None:
            # the table's own name where the query gave it an alias: use the alias
            aliases = [a for a, t in tables.items() if t == qualifier.lower()]
            if len(aliases) == 1 and qualifier.lower() not in scope.sources:
                column.set("table", exp.to_identifier(_written(scope, aliases[0])))
                changes.append(f"{qualifier}.{name} -> {_written(scope, aliases[0])}.{name}")
                _fix_column(column, scope, tables, names, changes)
            return
        if low in names.columns[table]:
            return
        owners = sorted({a for a, t in tables.items() if low in names.columns[t]})
        if len({tables[a] for a in owners}) == 1 and owners:
            column.set("table", exp.to_identifier(_written(scope, owners[0])))
            changes.append(f"{qualifier}.{name} -> {_written(scope, owners[0])}.{name}")
            return
        real = closest(name, list(names.columns[table].values()))
        if real:
            column.set("this", names.identifier(real))
            changes.append(f"{qualifier}.{name} -> {qualifier}.{real}")
        return
    if any(low in names.columns[t] for t in tables.values()):
        return
    if any(not isinstance(s, exp.Table) for s in scope.sources.values()):
        return  # a derived table or CTE may provide it; we cannot tell cheaply
    if low in _visible_columns(scope, names):
        return
    options = {real: t for t in set(tables.values()) for real in names.columns[t].values()}
    real = closest(name, list(options))
    if real:
        column.set("this", names.identifier(real))
        changes.append(f"{name} -> {real}")


def _fix_single_table(scope: Scope, names: _Names, changes: list[str]) -> None:
    """A single-table SELECT naming columns its table lacks: the one table that has all of them."""
    if len(scope.sources) != 1:
        return
    (alias, source), = scope.sources.items()
    if not isinstance(source, exp.Table) or source.name.lower() not in names.tables:
        return
    outputs = {s.alias.lower() for s in scope.expression.selects if isinstance(s, exp.Alias)} \
        if isinstance(scope.expression, exp.Select) else set()
    wanted = {c.name.lower() for c in scope.columns
              if isinstance(c, exp.Column) and c.name and not isinstance(c.this, exp.Star)
              and (not c.table or c.table.lower() == alias.lower())} - outputs
    if not wanted or wanted <= set(names.columns[source.name.lower()]):
        return
    if wanted & _visible_columns(scope.parent, names):
        return  # may be correlated with an enclosing query
    owners = [t for t, cols in names.columns.items() if wanted <= set(cols)]
    if len(owners) == 1:
        real = names.tables[owners[0]]
        changes.append(f"{source.name} -> {real}")
        source.set("this", names.identifier(real))


def _written(scope: Scope, alias_lower: str) -> str:
    for alias in scope.sources:
        if alias.lower() == alias_lower:
            return alias
    return alias_lower


def fix_identifiers(sql: str, schema: Schema, dialect: str = "sqlite") -> tuple[str, tuple[str, ...]] | None:
    """``sql`` with unknown table/column names repaired, and what changed; None when nothing could be."""
    try:
        tree = sqlglot.parse_one(sql, read=dialect)
    except Exception:
        return None
    if tree is None:
        return None
    names, changes = _Names(schema), []
    try:
        _fix_tables(tree, names, changes)
        for scope in traverse_scope(tree):
            _fix_single_table(scope, names, changes)
            tables = _scope_tables(scope, names)
            for column in scope.columns:
                if isinstance(column, exp.Column) and column.name and not isinstance(column.this, exp.Star):
                    _fix_column(column, scope, tables, names, changes)
    except Exception:  # sqlglot's scope analysis can fail on odd trees; a fix is only ever optional
        return None
    if not changes:
        return None
    return tree.sql(dialect=dialect), tuple(changes)


def _tables_used(sql: str, schema: Schema, dialect: str) -> list[str]:
    try:
        tree = sqlglot.parse_one(sql, read=dialect)
    except Exception:
        return []
    seen = []
    for table in tree.find_all(exp.Table) if tree is not None else ():
        found = schema.table(table.name)
        if found and found.name not in seen:
            seen.append(found.name)
    return seen


def _join_keys(schema: Schema, table: str) -> list[str]:
    keys = []
    for t in schema.tables:
        for key in t.foreign_keys:
            if table.lower() in (t.name.lower(), key.ref_table.lower()):
                target = schema.table(key.ref_table)
                refs = key.ref_columns or (target.primary_key if target else ())
                d = schema.dialect
                keys += [f"{quote_table(t.name, d)}.{quote(a, d)} = {quote_table(key.ref_table, d)}.{quote(b, d)}"
                         for a, b in zip(key.columns, refs)]
    return keys


def error_hint(error: str, schema: Schema, rules: EngineRules | None = None) -> list[str]:
    """Where the name the database did not find actually is, from the schema; ``rules`` (those
    of ``schema.dialect`` when None) say how the engine words a missing column or table."""
    rules = rules or rules_for(schema.dialect)
    found = rules.missing("column", error)
    if found:
        name = found.group("name")
        owners = [t for t in schema.tables if any(c.name.lower() == name.lower() for c in t.columns)]
        if owners:
            lines = [f"The column {name} is in table {', '.join(quote_table(t.name, schema.dialect) for t in owners)}."]
            keys = [k for t in owners[:2] for k in _join_keys(schema, t.name)]
            return lines + ([f"Join keys: {'; '.join(dict.fromkeys(keys))}."] if keys else [])
        every = [(t.name, c.name) for t in schema.tables for c in t.columns]
        near = difflib.get_close_matches(name.lower(), [c.lower() for _, c in every], n=3, cutoff=0.6)
        similar = [f"{t}.{c}" for t, c in every if c.lower() in near][:3]
        return [f"No table has a column {name}." + (f" Similar columns: {', '.join(similar)}." if similar else "")]
    found = rules.missing("table", error)
    if found:
        missing = found.group("name")
        near = difflib.get_close_matches(missing.lower(), [t.name.lower() for t in schema.tables], n=3)
        names = [t.name for t in schema.tables if t.name.lower() in near]
        return [f"There is no table {missing}." + (f" Similar tables: {', '.join(names)}." if names else "")]
    return []


def repair_messages(messages: Sequence[Message], failed_sql: str, error: str, schema: Schema,
                    dialect: str = "sqlite") -> list[Message]:
    """The conversation for one model repair round: the error, where the missing name really is,
    and the columns of the tables the query uses."""
    lines = []
    for name in _tables_used(failed_sql, schema, dialect):
        table = schema.table(name)
        lines.append(f"{quote_table(table.name, dialect)}({', '.join(quote(c.name, dialect) for c in table.columns)})")
    hint = "".join("\n" + line for line in error_hint(error, schema, rules_for(dialect)))
    hint += ("\nColumns of the tables it uses:\n" + "\n".join(lines)) if lines else ""
    return [*messages, {"role": "assistant", "content": failed_sql},
            {"role": "user", "content": f"That query failed: {error}{hint}\n"
                                        "Write a corrected query. Answer with a single query and nothing else."}]


def _preview(columns: Sequence[str], rows: Sequence[tuple], limit: int = 5) -> str:
    head = " | ".join(str(c) for c in columns)
    body = ["  " + " | ".join("NULL" if v is None else str(v)[:40] for v in row) for row in rows[:limit]]
    more = [f"  ... ({len(rows)} rows)"] if len(rows) > limit else []
    return "\n".join([f"  {head}", *body, *more]) if rows else "  (no rows)"


def merge_messages(messages: Sequence[Message], a: tuple[str, Sequence[str], Sequence[tuple]],
                   b: tuple[str, Sequence[str], Sequence[tuple]]) -> list[Message]:
    """The conversation for a merge revision: two candidate queries with a preview of their results."""
    parts = []
    for name, (sql, columns, rows) in (("A", a), ("B", b)):
        parts.append(f"Query {name}:\n{sql}\nIts result:\n{_preview(columns, rows)}")
    return [*messages, {"role": "user", "content": "Two queries give different results.\n\n" + "\n\n".join(parts)
                        + "\n\nWhich one answers the question? Write the correct query (A, B, or a corrected one). "
                          "Answer with a single query and nothing else."}]
