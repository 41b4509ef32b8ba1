"""One small error hierarchy. Every message is a single line a user can act on.

The CLI prints ``error: <message>`` and exits with ``exit_code``; nothing else
in the package decides how errors look.
"""

from __future__ import annotations


class SlimsqlError(Exception):
    """Base class: an expected failure with a one-line, user-facing message."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class InputError(SlimsqlError):
    """The user's input (question, flag, file) is unusable."""

    exit_code = 2


class DatabaseError(SlimsqlError):
    """The database file is missing, unreadable or not SQLite."""

    exit_code = 3


class UnsafeSQLError(SlimsqlError):
    """The statement is not a single read-only query; it was never run."""

    exit_code = 4


class QueryError(SlimsqlError):
    """The database refused or failed the (read-only) query."""

    exit_code = 5


class QueryTimeout(QueryError):
    """The query ran past its time limit and was interrupted."""


class NoSQLError(SlimsqlError):
    """Model output could not be reduced to one SQL statement."""

    exit_code = 6


class Interrupted(SlimsqlError):
    """The work was stopped from outside (the client went away, the server had no room): never a
    verdict on a candidate query, so the road stops instead of voting or repairing with it."""


class ModelError(SlimsqlError):
    """Unknown, missing, corrupt or unloadable model."""

    exit_code = 7
