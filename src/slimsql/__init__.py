"""slimsql: ask your own database questions in plain language, with a small local model.

    >>> import slimsql
    >>> db = slimsql.connect("shop.sqlite")
    >>> print(db.ask("How many products?"))
"""

from .backends import Candidate, GenerationConfig
from .connection import Connection, connect
from .db import Result, open_database
from .errors import (DatabaseError, InputError, ModelError, NoSQLError, QueryError, QueryTimeout,
                     SlimsqlError, UnsafeSQLError)
from .infer import Answer, Settings

__version__ = "0.1.0"


def ask(database: str, question: str, **options) -> Answer:
    """One-shot: open ``database``, answer ``question``, close."""
    with connect(database, **options) as conn:
        return conn.ask(question)


__all__ = [
    "connect", "ask", "Connection", "Answer", "Settings", "GenerationConfig", "Candidate", "Result",
    "open_database", "SlimsqlError", "InputError", "DatabaseError", "UnsafeSQLError", "QueryError",
    "QueryTimeout", "NoSQLError", "ModelError",
]
