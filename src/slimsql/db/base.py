"""What every database engine is: its rules as data, and the interface it implements.

As sqlglot has one class per dialect that overrides a few declared flags, an engine
here is one class whose :class:`EngineRules` say everything the layers above need to
know about it: how sqlglot reads its SQL, which functions and statements the
allow-list refuses on it, and how its error messages read. Code above ``db/``
asks for rules by dialect (:func:`slimsql.db.rules_for`) and never names an engine.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from ..errors import InputError
from ..schema import Schema

#: The eval's error categories an engine's messages may map to (``eval.metrics.CATEGORIES``
#: holds these and the engine-neutral ones: correct, wrong result, timeout, format, other error).
ERROR_CATEGORIES = ("unknown column", "unknown table", "syntax")


_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def url_scheme(target: str | Path) -> str | None:
    """The scheme of a ``scheme://...`` URL (lower case); None for a file path."""
    found = _URL.match(target) if isinstance(target, str) else None
    return found.group(1).lower() if found else None


def shown_target(target) -> str:
    """A database target (or several) as one line for messages, passwords in URLs hidden."""
    if isinstance(target, (list, tuple)):
        return ", ".join(shown_target(t) for t in target)
    return hide_passwords(str(target))


def hide_passwords(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` in it replaced by ``***``."""
    return _PASSWORD.sub(r"\1:***@", text)


_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*):[^@/\s]*@")


@dataclass(frozen=True)
class Result:
    """Rows of one query, cut at the row cap or the byte cap (``truncated`` says so,
    ``truncated_by`` says which: ``"rows"`` or ``"bytes"``)."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    truncated: bool = False
    seconds: float = 0.0
    truncated_by: str = ""


@dataclass(frozen=True)
class EngineRules:
    """One engine's rules, as data. Checked when made, so a plugin's mistake shows at import."""

    #: the registry name (``slimsql.engines`` entry point), e.g. ``"sqlite"``.
    name: str
    #: how people call it, for messages: ``"SQLite"``.
    display_name: str
    #: the sqlglot dialect its SQL is read and written in (also ``Schema.dialect``).
    dialect: str
    #: one line: how a query's time limit is enforced on this engine.
    time_limit: str
    #: functions the allow-list refuses anywhere in a query (lower case): those that reach
    #: outside the database or load code.
    denied_functions: frozenset[str] = frozenset()
    #: sqlglot expression class names refused on top of the engine-neutral list in ``slimsql.sql``.
    denied_statements: frozenset[str] = frozenset()
    #: ``(regex, category)`` pairs, tried in order on the lower-cased error message; the first
    #: that matches gives the eval's category (one of :data:`ERROR_CATEGORIES`).
    error_categories: tuple[tuple[str, str], ...] = ()
    #: regex for "this column does not exist"; its group ``name`` is the missing column.
    missing_column: str = ""
    #: regex for "this table does not exist"; its group ``name`` is the missing table.
    missing_table: str = ""
    #: the sqlglot Dialect class the allow-list parses with, when it must read stricter than
    #: ``dialect`` (None: ``dialect`` itself).
    check_dialect: Any = None

    def __post_init__(self) -> None:
        from sqlglot import exp
        from sqlglot.dialects.dialect import Dialect

        for name in ("name", "display_name", "dialect", "time_limit"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip() or "\n" in value:
                raise InputError(f"engine rules: {name} must be one non-empty line, got {value!r}")
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", self.name):
            raise InputError(f"engine rules: name must be lower-case letters, digits, '-' or '_', got {self.name!r}")
        try:
            Dialect.get_or_raise(self.dialect)
        except ValueError:
            raise InputError(f"engine {self.name}: {self.dialect!r} is not a sqlglot dialect") from None
        for kind in ("denied_functions", "denied_statements"):
            value = getattr(self, kind)
            if not isinstance(value, frozenset) or not all(isinstance(v, str) and v for v in value):
                raise InputError(f"engine {self.name}: {kind} must be a frozenset of names")
        if any(f != f.lower() for f in self.denied_functions):
            raise InputError(f"engine {self.name}: denied_functions must be lower case")
        for node in self.denied_statements:
            if not (isinstance(getattr(exp, node, None), type) and issubclass(getattr(exp, node), exp.Expression)):
                raise InputError(f"engine {self.name}: {node!r} is not a sqlglot expression class")
        for pattern, category in self.error_categories:
            _compile(self.name, pattern)
            if category not in ERROR_CATEGORIES:
                raise InputError(f"engine {self.name}: {category!r} is not one of {', '.join(ERROR_CATEGORIES)}")
        for kind in ("missing_column", "missing_table"):
            pattern = getattr(self, kind)
            if pattern and "name" not in _compile(self.name, pattern).groupindex:
                raise InputError(f"engine {self.name}: {kind} needs a group named 'name'")

    def category(self, error: str) -> str | None:
        """The eval category of a (lower-cased) error message, when one of the patterns knows it."""
        for pattern, category in self.error_categories:
            if re.search(pattern, error):
                return category
        return None

    def missing(self, kind: str, error: str) -> re.Match | None:
        """The match of ``missing_column`` or ``missing_table`` (``kind``: column/table) in ``error``."""
        pattern = self.missing_column if kind == "column" else self.missing_table
        return re.search(pattern, error) if pattern else None


def _compile(engine: str, pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except (re.error, TypeError) as err:
        raise InputError(f"engine {engine}: bad pattern {pattern!r}: {err}") from None


def execute_checked(engine, sql: str, *, max_rows: int | None = None, timeout: float | None = None) -> Result:
    """What every engine's ``execute`` is: the allow-list (``slimsql.sql.check_read_only`` with
    the engine's rules), then ``engine._run`` with what is left of the time limit (the parse
    counts against it; it is bounded by ``MAX_SQL_CHARS``, not interruptible)."""
    from ..errors import QueryTimeout
    from ..sql import check_read_only  # sql imports db: late, to keep the import graph a tree
    from .limits import check_timeout

    limit = engine.timeout if timeout is None else check_timeout(timeout)
    start = time.monotonic()
    check_read_only(sql, engine.dialect)
    left = limit - (time.monotonic() - start)
    if left <= 0:
        raise QueryTimeout(f"query stopped after the {limit:g} s time limit (checking it took the time)")
    return engine._run(sql, max_rows=max_rows, timeout=left, shown_limit=limit)


class Database(Protocol):
    """What the question's road needs of a database (an engine, or e.g. the server's pool)."""

    dialect: str

    def schema(self, samples: int = 3) -> Schema: ...

    def execute(self, sql: str, *, max_rows: int | None = None, timeout: float | None = None) -> Result: ...

    def close(self) -> None: ...


@runtime_checkable
class Engine(Protocol):
    """A read-only database engine: opened by :func:`slimsql.db.open_database`.

    ``execute`` checks the SQL against the allow-list (``slimsql.sql.check_read_only``)
    and runs it with the time limit and the row cap; ``_run`` skips the allow-list and is
    only for slimsql's own trusted reads (introspection, value samples, the value index).
    """

    rules: ClassVar[EngineRules]
    dialect: str

    @classmethod
    def opens(cls, target: str | Path) -> bool:
        """Whether this engine opens ``target`` (by its URL scheme or its file name)."""
        ...

    def __init__(self, target: str | Path, *, timeout: float = 10.0, max_rows: int = 1000) -> None: ...

    def schema(self, samples: int = 3) -> Schema: ...

    def execute(self, sql: str, *, max_rows: int | None = None, timeout: float | None = None) -> Result: ...

    def _run(self, sql: str, params: tuple = (), *, max_rows: int | None = None,
             timeout: float | None = None) -> Result: ...

    def close(self) -> None: ...
