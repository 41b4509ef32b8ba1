"""slimsql: ask your own database questions in plain language, with a small local model.

    >>> import slimsql
    >>> db = slimsql.connect("shop.sqlite")
    >>> print(db.ask("How many products?"))

The names below load on first use (PEP 562), so that ``import slimsql.X`` of a small
module (the command's entry point, the model registry) does not import the whole
answering road (sqlglot, the pipeline) first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "Candidate": ".backends", "GenerationConfig": ".backends",
    "Connection": ".connection", "connect": ".connection",
    "Result": ".db", "open_database": ".db",
    "DatabaseError": ".errors", "InputError": ".errors", "ModelError": ".errors", "NoSQLError": ".errors",
    "QueryError": ".errors", "QueryTimeout": ".errors", "SlimsqlError": ".errors", "UnsafeSQLError": ".errors",
    "Answer": ".infer", "Settings": ".infer",
}

if TYPE_CHECKING:
    from .backends import Candidate, GenerationConfig
    from .connection import Connection, connect
    from .db import Result, open_database
    from .errors import (DatabaseError, InputError, ModelError, NoSQLError, QueryError, QueryTimeout,
                         SlimsqlError, UnsafeSQLError)
    from .infer import Answer, Settings


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'slimsql' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # once: later lookups find it directly
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


def ask(database: str, question: str, **options) -> Answer:
    """One-shot: open ``database``, answer ``question``, close."""
    from .connection import connect

    with connect(database, **options) as conn:
        return conn.ask(question)


__all__ = [
    "connect", "ask", "Connection", "Answer", "Settings", "GenerationConfig", "Candidate", "Result",
    "open_database", "SlimsqlError", "InputError", "DatabaseError", "UnsafeSQLError", "QueryError",
    "QueryTimeout", "NoSQLError", "ModelError",
]
