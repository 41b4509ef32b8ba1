"""Database engines behind one small interface; read-only by construction.

An engine opens a target read-only, introspects it into a :class:`~slimsql.schema.Schema`
and runs one checked query with a time limit and a row cap, returning a :class:`Result`.
SQLite is the only engine so far; others plug in through :func:`open_database`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..schema import Schema


@dataclass(frozen=True)
class Result:
    """Rows of one query, cut at the row cap or the byte cap (``truncated`` says so,
    ``truncated_by`` says which: ``"rows"`` or ``"bytes"``)."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    truncated: bool = False
    seconds: float = 0.0
    truncated_by: str = ""


class Database(Protocol):
    dialect: str

    def schema(self, samples: int = 3) -> Schema: ...

    def execute(self, sql: str, *, max_rows: int | None = None, timeout: float | None = None) -> Result: ...

    def close(self) -> None: ...


def open_database(target: str | Path, *, timeout: float = 10.0, max_rows: int = 1000) -> Database:
    """Open ``target`` read-only with the engine that fits it."""
    from .sqlite import SQLiteDatabase

    return SQLiteDatabase(target, timeout=timeout, max_rows=max_rows)
