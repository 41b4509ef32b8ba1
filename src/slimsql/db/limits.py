"""The bounds every query runs under, as data, and the checks on caller-given limits.

One :class:`Limits` value travels from the caller to the query worker
(``slimsql.db.worker``), which applies it with ``sqlite3.Connection.setlimit``,
``PRAGMA hard_heap_limit`` and ``resource.setrlimit``; the parent process
enforces the wall-clock deadline. Values were chosen far above what ordinary
text-to-SQL queries need (Spider's largest gold query is under 1 KB of SQL).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import InputError
from ..sql import MAX_SQL_CHARS

MiB = 1024 * 1024
#: Largest time limit accepted (seconds); finite so a deadline always exists.
MAX_TIMEOUT = 24 * 3600.0
#: Largest row cap accepted; the byte cap bounds memory long before this.
MAX_ROWS = 10_000_000

#: ``sqlite3.SQLITE_LIMIT_<name>`` -> value, applied to every worker connection.
SQLITE_LIMITS = {
    "LENGTH": 16 * MiB,  # any one string or blob
    "SQL_LENGTH": 4 * MAX_SQL_CHARS,  # bytes; a UTF-8 character is at most 4
    "COLUMN": 2000,
    "EXPR_DEPTH": 500,
    "COMPOUND_SELECT": 100,
    "VDBE_OP": 1_000_000,
    "FUNCTION_ARG": 100,
    "ATTACHED": 0,
    "LIKE_PATTERN_LENGTH": 10_000,
    "VARIABLE_NUMBER": 1000,
    "TRIGGER_DEPTH": 10,
    "WORKER_THREADS": 0,
}


@dataclass(frozen=True)
class Limits:
    """Per-connection resource bounds of the query worker.

    ``max_bytes`` caps one result (values plus a per-row and per-value overhead);
    ``memory`` is the worker's address space (``RLIMIT_AS``), ``heap`` SQLite's own
    hard heap limit inside it, ``temp_file`` the largest file the worker may write
    (SQLite's temporary sort files).
    """

    max_bytes: int = 64 * MiB
    memory: int = 1024 * MiB
    heap: int = 512 * MiB
    temp_file: int = 1024 * MiB
    sqlite: dict = field(default_factory=lambda: dict(SQLITE_LIMITS))

    def __post_init__(self) -> None:
        for name in ("max_bytes", "memory", "heap", "temp_file"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"limit {name} must be a positive integer, got {value!r}")


def check_timeout(value, flag: str = "timeout") -> float:
    """A time limit must be a finite number of seconds in (0, MAX_TIMEOUT]."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise InputError(f"--{flag} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_TIMEOUT:
        raise InputError(f"--{flag} must be more than 0 and at most {MAX_TIMEOUT:g} seconds, got {value!r}")
    return seconds


def check_max_rows(value, flag: str = "max-rows") -> int:
    """A row cap must be an integer in [1, MAX_ROWS]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"--{flag} must be a whole number, got {value!r}")
    if not 1 <= value <= MAX_ROWS:
        raise InputError(f"--{flag} must be between 1 and {MAX_ROWS:,}, got {value:,}")
    return value
