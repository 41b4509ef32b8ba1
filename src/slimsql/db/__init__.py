"""Database engines behind one small interface; read-only by construction.

An engine (:class:`~slimsql.db.base.Engine`) opens a target read-only, introspects it
into a :class:`~slimsql.schema.Schema` and runs one checked query with a time limit and
a row cap, returning a :class:`Result`; its :class:`~slimsql.db.base.EngineRules` say
the rest as data. Engines are found by name through the ``slimsql.engines`` entry-point
group, the same way a third-party package registers one::

    [project.entry-points."slimsql.engines"]
    my-engine = "my_package:MyEngine"

:func:`open_database` picks the engine whose ``opens(target)`` accepts the target: a URL
(``scheme://...``) or a file, where SQLite stays the default.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .base import Database, Engine, EngineRules, Result, url_scheme

__all__ = ["Database", "Engine", "EngineRules", "Result", "open_database", "engine_class", "rules_for",
           "available", "DEFAULT_ENGINE"]

#: The engines slimsql ships (also registered as entry points, so ``available`` lists them).
#: Loading one of these skips the scan of every installed package's metadata.
BUILTIN = {"sqlite": "slimsql.db.sqlite:SQLiteDatabase", "postgres": "slimsql.db.postgres:PostgresDatabase",
           "duckdb": "slimsql.db.duckdb:DuckDBDatabase", "files": "slimsql.db.duckdb:FilesDatabase"}
#: The engine for a file no other engine claims, and for rules asked of no dialect.
DEFAULT_ENGINE = "sqlite"


def available() -> dict[str, object]:
    """Entry points of every installed engine, by name."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group="slimsql.engines")}


def _builtin(name: str) -> type:
    from importlib.metadata import EntryPoint

    return EntryPoint(name=name, value=BUILTIN[name], group="slimsql.engines").load()


def _installed() -> list[type]:
    """Every engine class: the built-in ones first, then the plugins'."""
    return [_builtin(n) for n in BUILTIN] + [ep.load() for n, ep in sorted(available().items()) if n not in BUILTIN]


def _names() -> str:
    return ", ".join(sorted(set(BUILTIN) | set(available())))


def engine_class(name: str = DEFAULT_ENGINE) -> type:
    """The engine class registered as ``name`` (built-in or a plugin's entry point)."""
    if name in BUILTIN:
        return _builtin(name)
    found = available()
    if name not in found:
        raise InputError(f"unknown database engine {name!r}; installed engines: {_names()}")
    return found[name].load()


def rules_for(dialect: str = DEFAULT_ENGINE) -> EngineRules:
    """The rules of the engine named ``dialect``, or else of the engine whose sqlglot dialect it is."""
    if dialect in BUILTIN:
        return _builtin(dialect).rules
    for engine in _installed():
        if dialect in (engine.rules.name, engine.rules.dialect):
            return engine.rules
    raise InputError(f"no database engine for dialect {dialect!r}; installed engines: {_names()}")


def engine_for(target: str | Path | list | tuple) -> type:
    """The engine class that opens ``target``: by URL scheme, else by file (SQLite by default).

    A built-in engine that claims a file is chosen without scanning the installed plugins.
    A list or tuple of files opens only with an engine that claims all of them as one database.
    """
    if isinstance(target, (list, tuple)):
        for engine in _installed():
            try:
                if engine.opens(target):
                    return engine
            except (TypeError, ValueError):  # an engine that only knows single targets
                continue
        raise InputError(f"no database engine opens these {len(target)} files as one database")
    scheme = url_scheme(target)
    if scheme is None:
        for name in BUILTIN:
            if _builtin(name).opens(target):
                return _builtin(name)
    for engine in _installed():
        if engine.opens(target):
            return engine
    if scheme is None:
        return engine_class(DEFAULT_ENGINE)
    # only the scheme is shown: the rest of a URL may hold a password
    raise InputError(f"no database engine opens {scheme}:// URLs; installed engines: {_names()}")


def open_database(target: str | Path | list | tuple, *, timeout: float = 10.0, max_rows: int = 1000) -> Engine:
    """Open ``target`` read-only with the engine that fits it."""
    return engine_for(target)(target, timeout=timeout, max_rows=max_rows)
