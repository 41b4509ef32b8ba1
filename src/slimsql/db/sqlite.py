"""SQLite, read-only by construction.

Threat model
============
Model output is untrusted text. The user's database file must never change,
and a query must not escape the database, hang the process or exhaust memory.

Covered, each by its own layer (so one bug does not open the door):

1. Allow-list (``slimsql.sql.check_read_only``): exactly one statement that
   parses as SELECT / set operation / WITH ... SELECT, with no INSERT, UPDATE,
   DELETE, DDL, PRAGMA, ATTACH, VACUUM, transaction or SELECT INTO node anywhere,
   and none of the file/extension functions (load_extension, readfile, ...).
2. Read-only open: ``file:...?mode=ro`` URI, so SQLite itself refuses writes to
   the file; ``PRAGMA query_only = ON`` on top.
3. Authorizer: at prepare time only SELECT, READ, RECURSIVE, ordinary
   FUNCTION calls and a short list of read-only introspection pragmas are
   allowed; everything else (writes, ATTACH - which VACUUM INTO uses to create a
   file even on a read-only connection -, state-changing pragmas, transactions,
   the denied functions) is SQLITE_DENY.
4. Extension loading stays disabled (Python's default, asserted by a test), and
   ``SQLITE_LIMIT_ATTACHED`` is 0.
5. Resource limits: a progress-handler deadline interrupts long queries
   (cross-join and recursive-CTE bombs); ``SQLITE_LIMIT_LENGTH`` caps the size
   of any one string or blob; rows are fetched with ``fetchmany(cap + 1)`` so a
   cut result says it was truncated and never materialises in full.
6. Only one statement per call: ``sqlite3.Cursor.execute`` refuses a second.

Not covered:

* Reading: any table or view in the file can be read; do not point slimsql at a
  database whose content the asker may not see.
* Memory within the length cap: a query may still use large temporary storage
  (e.g. a big ORDER BY) until the deadline stops it.
* Another process writing the file while we read it (results may be stale).
* Denial of service shorter than the deadline, repeated by a caller.
* SQLite's own bugs; keep the library up to date.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

from ..errors import DatabaseError, QueryError, QueryTimeout
from ..schema import Column, ForeignKey, Schema, Table
from ..sql import DENIED_FUNCTIONS, check_read_only
from . import Result

SQLITE_HEADER = b"SQLite format 3\x00"
#: Pragmas the authorizer lets through (introspection only, never assignment).
READ_PRAGMAS = frozenset({"table_info", "table_xinfo", "foreign_key_list", "index_list", "index_info"})
MAX_VALUE_BYTES = 16 * 1024 * 1024
_PROGRESS_STEPS = 1000
_OK, _DENY = sqlite3.SQLITE_OK, sqlite3.SQLITE_DENY
_ALWAYS_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE}


def _authorize(action: int, arg1, arg2, _db, _source) -> int:
    if action in _ALWAYS_ALLOWED:
        return _OK
    if action == sqlite3.SQLITE_FUNCTION:
        return _DENY if (arg2 or "").lower() in DENIED_FUNCTIONS else _OK
    if action == sqlite3.SQLITE_PRAGMA:
        return _OK if (arg1 or "").lower() in READ_PRAGMAS else _DENY
    return _DENY


def _decode(value: bytes) -> str:
    # Databases in the wild hold invalid UTF-8; never let one value stop a query.
    return value.decode("utf-8", errors="replace")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DatabaseError(f"database not found: {path}")
    if not path.is_file():
        raise DatabaseError(f"not a file: {path}")
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as err:
        raise DatabaseError(f"cannot read {path}: {err.strerror}") from None
    if header != SQLITE_HEADER:
        raise DatabaseError(f"not a SQLite database: {path}")


class SQLiteDatabase:
    """A read-only SQLite connection with a time limit and a row cap."""

    dialect = "sqlite"

    def __init__(self, path: str | Path, *, timeout: float = 10.0, max_rows: int = 1000):
        self.path = Path(path).expanduser()
        self.timeout = timeout
        self.max_rows = max_rows
        _check_file(self.path)
        uri = "file:" + quote(str(self.path.resolve())) + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            conn.execute("PRAGMA query_only = ON")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as err:
            raise DatabaseError(f"cannot open {self.path} as SQLite: {err}") from None
        conn.text_factory = _decode
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
        conn.set_authorizer(_authorize)
        self._conn = conn
        self._schema: dict[int, Schema] = {}

    # -- execution -------------------------------------------------------------

    def execute(self, sql: str, *, max_rows: int | None = None, timeout: float | None = None) -> Result:
        """Check ``sql`` against the allow-list, then run it under every layer."""
        check_read_only(sql, self.dialect)
        return self._run(sql, max_rows=max_rows, timeout=timeout)

    def _run(self, sql: str, params: tuple = (), *, max_rows: int | None = None, timeout: float | None = None) -> Result:
        """Run on the guarded connection without the allow-list (layers 2-6 only)."""
        cap = self.max_rows if max_rows is None else max_rows
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        self._conn.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
        start = time.perf_counter()
        try:
            cursor = self._conn.execute(sql, params)
            rows = cursor.fetchmany(cap + 1)
            columns = tuple(d[0] for d in cursor.description or ())
            cursor.close()
        except sqlite3.OperationalError as err:
            if "interrupted" in str(err):
                raise QueryTimeout(f"query stopped after the {limit:g} s time limit") from None
            raise QueryError(f"the database refused the query: {err}") from None
        except (sqlite3.DatabaseError, sqlite3.Warning, ValueError, OverflowError) as err:
            raise QueryError(f"the database refused the query: {err}") from None
        finally:
            self._conn.set_progress_handler(None, 0)
            if self._conn.in_transaction:  # never expected; never commit
                self._conn.rollback()
        return Result(columns=columns, rows=rows[:cap], truncated=len(rows) > cap,
                      seconds=time.perf_counter() - start)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "SQLiteDatabase":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- introspection -----------------------------------------------------------

    def schema(self, samples: int = 3) -> Schema:
        """Tables and views with columns, keys and up to ``samples`` example text values."""
        if samples not in self._schema:
            self._schema[samples] = self._introspect(samples)
        return self._schema[samples]

    def _introspect(self, samples: int) -> Schema:
        objects = self._run(
            "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid",
            max_rows=100_000,
        ).rows
        tables = [self._table(name, kind, samples) for name, kind in objects]
        return Schema(tables=tuple(tables), dialect=self.dialect)

    def _table(self, name: str, kind: str, samples: int) -> Table:
        quoted = '"' + name.replace('"', '""') + '"'
        # Plain PRAGMA statements: the pragma_* table functions need more than READ.
        info = [row[1:] for row in self._run(f"PRAGMA table_xinfo({quoted})", max_rows=100_000).rows]
        keys = sorted((row[0], row[1], row[2], row[3], row[4]) for row in
                      self._run(f"PRAGMA foreign_key_list({quoted})", max_rows=100_000).rows)
        keys = [(key_id, target, src, dst) for key_id, _seq, target, src, dst in keys]
        values = self._samples(name, [row[0] for row in info if not row[5]], samples)
        columns = tuple(
            Column(name=col, type=(ctype or "").upper(), nullable=not notnull, primary_key=pk > 0,
                   default=default, samples=values.get(col, ()))
            for col, ctype, notnull, default, pk, hidden in info if not hidden
        )
        grouped: dict[int, list[tuple]] = {}
        for key_id, target, src, dst in keys:
            grouped.setdefault(key_id, []).append((target, src, dst))
        foreign_keys = tuple(
            ForeignKey(columns=tuple(src for _, src, _ in parts), ref_table=parts[0][0],
                       ref_columns=tuple(dst for _, _, dst in parts if dst is not None))
            for parts in grouped.values()
        )
        return Table(name=name, columns=columns, foreign_keys=foreign_keys, kind=kind)

    def _samples(self, table: str, columns: list[str], per_column: int) -> dict[str, tuple]:
        if per_column <= 0 or not columns:
            return {}
        quoted = '"' + table.replace('"', '""') + '"'
        try:
            rows = self._run(f"SELECT * FROM {quoted} LIMIT 50", max_rows=50, timeout=min(self.timeout, 2.0)).rows
        except QueryError:  # a slow or broken view: no samples, not a failure
            return {}
        found: dict[str, list] = {c: [] for c in columns}
        for row in rows:
            for col, value in zip(columns, row):
                if not isinstance(value, str) or not value.strip():  # numbers and ids say little
                    continue
                value = value if len(value) <= 40 else value[:37] + "..."
                if value not in found[col] and len(found[col]) < per_column:
                    found[col].append(value)
        return {c: tuple(v) for c, v in found.items()}
