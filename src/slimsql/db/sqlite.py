"""SQLite, read-only by construction, every query bounded in time and memory.

Threat model
============
Model output (and hand-written SQL, and the database file itself) is untrusted.
The user's database file must never change, and no query, value or database
file may escape the database, hang the caller or exhaust the machine.

Covered, each by its own layer (so one bug does not open the door):

1. Allow-list (``slimsql.sql.check_read_only``): SQL text over
   ``MAX_SQL_CHARS`` (100,000) is refused before it is parsed; otherwise exactly
   one statement that parses as SELECT / set operation / WITH ... SELECT /
   VALUES, with no INSERT, UPDATE, DELETE, DDL, PRAGMA, ATTACH, VACUUM,
   transaction or SELECT INTO node anywhere, and none of the file/extension
   functions (load_extension, readfile, ...). Its parse time counts against the
   query's time limit.
2. Worker process (``slimsql.db.worker``, parent side ``slimsql.db.process``):
   every statement, introspection included, runs in a child process, one per
   connection object, reused across queries (calls from many threads are
   serialised). The parent waits on the pipe until the deadline and then kills
   the child (SIGKILL) and reports ``QueryTimeout``; the next call starts a new
   one. So the time limit also covers statement preparation (query planning)
   and single expensive steps (``printf('%.*c', 2e9, 'x')``, quadratic
   ``replace``, generated columns), which SQLite's progress handler never sees.
   A worker that dies (memory limit, crash) is a ``QueryError``, never a hang;
   workers die with their parent (Linux) and at most 16 idle ones stay alive.
3. Operating-system limits in the worker (POSIX): address space
   (``RLIMIT_AS``, 1 GiB), largest file written (``RLIMIT_FSIZE``: SQLite's
   temporary sort files, 1 GiB), no core files. SQLite limits on top:
   ``hard_heap_limit`` (512 MiB) and ``setlimit`` caps on string/blob length
   (16 MiB), SQL length, expression depth, compound selects, program size,
   function arguments, LIKE pattern length, variables, ATTACH (0).
4. Read-only open: ``file:...?mode=ro`` URI, so SQLite itself refuses writes to
   the file; ``PRAGMA query_only = ON`` on top.
5. Authorizer: at prepare time only SELECT, READ, RECURSIVE, ordinary FUNCTION
   calls and the pragmas that only read the schema (``READ_PRAGMAS``, as
   statements or as ``pragma_*`` table functions) are allowed, plus the
   ``sqlite_master`` bookkeeping eponymous table functions (``json_each``,
   ``pragma_table_info``...) announce inside a SELECT; everything else
   (writes, ATTACH - which VACUUM INTO uses to create a file even on a
   read-only connection -, state-changing pragmas, transactions, the denied
   functions) is SQLITE_DENY.
6. Extension loading stays disabled (Python's default, asserted by a test).
7. Bounded results: rows are fetched in small batches up to the row cap and a
   byte cap (``Limits.max_bytes``, 64 MiB by default, counting every value plus
   a per-row and per-value overhead); a cut result says so (``truncated``,
   ``truncated_by``) and never materialises in full. The CLI shows at most 500
   characters of a cell, with a marker of the size left out, and escapes
   terminal control characters in values, names, errors and schema output.
8. Locks: SQLite's busy timeout is the query's own time limit (the driver's
   default of 5 s is never used), at open too.
9. Limits given by callers are checked: time limits finite, positive and at
   most a day; row caps whole numbers from 1 to 10,000,000.
10. Only one statement per call: ``sqlite3.Cursor.execute`` refuses a second.
11. Files beside the database. This process never opens the database file
    itself (closing a descriptor would drop every POSIX lock the process holds
    on it, unlocking a writer connection it may have); the worker reads the
    header. What SQLite writes:

    * rollback-journal databases (the default): nothing, anywhere. A leftover
      hot ``-journal`` is refused with a clear error (recovering it is a write).
    * WAL databases with no ``-wal`` file or an empty one (every WAL database
      whose last writer closed cleanly): opened ``immutable=1``, so SQLite
      creates no ``-wal`` or ``-shm`` and takes no lock. The price: a writer
      that starts while we read is not seen, and if it checkpoints meanwhile a
      query may fail or return stale rows; the writer loses nothing, as we
      never write.
    * WAL databases with WAL content (a writer is active, or crashed): opened
      ``mode=ro``; the main file and the ``-wal`` are never written (a reader
      neither appends to nor checkpoints the WAL), but SQLite creates the
      ``-shm`` file if it is missing and writes to it (the wal-index: a hash of
      which pages are in the -wal, rebuilt from the -wal whenever it is missing
      or stale, and the readers' marks). It holds nothing that is not in the
      -wal, so no committed data can be lost.

Not covered:

* Reading: any table or view in the file can be read; do not point slimsql at a
  database whose content the asker may not see.
* The allow-list parse runs in the calling process: it is bounded by the size
  cap (about 0.3 s for 85 KB of ``IN`` list), not interruptible by the deadline.
* Platforms without ``resource`` (Windows): no address-space or file-size
  limits (the deadline and SQLite's heap limit still hold), and the worker pipe
  protocol uses ``select`` on pipes, which is POSIX only.
* Temporary files: a big sort may write up to the file-size limit in the
  temporary directory until the deadline.
* Another process writing the file while we read it (results may be stale).
* Denial of service shorter than the deadline, repeated by a caller; the
  machine's memory if many connections each hold a worker at its limits.
* SQLite's own bugs; keep the library up to date.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from sqlglot.dialects.sqlite import SQLite

from ..errors import DatabaseError, QueryError, QueryTimeout
from ..schema import Column, ForeignKey, Schema, Table
from .base import EngineRules, Result, execute_checked, url_scheme
from .limits import SQLITE_LIMITS, MiB, Limits, check_max_rows, check_timeout
from .process import Deadline, Worker, WorkerDied, _OpenFailed, describe_death, query
from .worker import guarded_connection

#: Pragmas the authorizer lets through, as statements (introspection) or as
#: table-valued functions (``pragma_table_info(...)``): they only read the schema.
READ_PRAGMAS = frozenset({
    "table_info", "table_xinfo", "table_list", "foreign_key_list", "index_list", "index_info", "index_xinfo",
    "collation_list", "function_list", "module_list", "pragma_list",
})
#: File names :meth:`SQLiteDatabase.opens` claims without asking other engines (any other
#: file still opens as SQLite when no engine claims it).
SUFFIXES = (".sqlite", ".sqlite3", ".db", ".db3", ".s3db", ".sl3")
#: Introspection: time for the catalog (all tables' columns and keys), and per table for samples.
CATALOG_SECONDS, SAMPLE_SECONDS = 10.0, 2.0


def shown(path) -> str:
    """A path as one printable line: undecodable bytes escaped, long names shortened."""
    text = str(path).encode("utf-8", "backslashreplace").decode("utf-8")
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= 160 else text[:80] + "..." + text[-60:]


def _check_file(path: Path) -> bytes:
    """``path`` resolved, as bytes, or DatabaseError. Only ``stat``: this process never
    opens the file itself (see ``worker.uri_for`` on POSIX locks)."""
    try:
        if not path.exists():
            raise DatabaseError(f"database not found: {shown(path)}")
        if not path.is_file():
            raise DatabaseError(f"not a file: {shown(path)}")
        return os.fsencode(path.resolve())
    except OSError as err:
        raise DatabaseError(f"cannot read {shown(path)}: {err.strerror or err}") from None


def _open_error(path: Path, kind: str, message: str) -> DatabaseError:
    if kind == "format":
        return DatabaseError(f"not a SQLite database: {shown(path)}")
    if kind == "read":
        return DatabaseError(f"cannot read {shown(path)}: {message}")
    if "locked" in message:
        return DatabaseError(f"cannot open {shown(path)}: it is locked by another process")
    journal = Path(str(path) + "-journal")
    if ("readonly" in message or "read-only" in message) and journal.exists():
        return DatabaseError(f"cannot open {shown(path)}: an interrupted write left {shown(journal.name)} beside it; "
                             "slimsql never writes, so open it once with the sqlite3 tool to finish the recovery")
    return DatabaseError(f"cannot open {shown(path)} as SQLite: {message}")


def ddl_comments(create_sql: str) -> dict[str, str]:
    """column -> comment of a CREATE TABLE text (``-- ...`` or ``/* ... */`` after a column)."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(create_sql, read="sqlite")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError, ValueError, RecursionError):
        return {}
    return {c.name: " ".join(" ".join(c.comments).split()) for c in tree.find_all(exp.ColumnDef) if c.comments}


def _described(table: Table, notes: dict[str, str]) -> Table:
    columns = tuple(replace(c, comment=notes[c.name]) if notes.get(c.name) else c for c in table.columns)
    return replace(table, columns=columns)


class _CheckedSQLite(SQLite):
    """SQLite as sqlglot reads it, minus PostgreSQL's ``~~`` (LIKE) operators:
    in SQLite ``~~1`` is two bitwise NOTs."""

    class Tokenizer(SQLite.Tokenizer):
        KEYWORDS = {k: v for k, v in SQLite.Tokenizer.KEYWORDS.items() if "~" not in k}


RULES = EngineRules(
    name="sqlite",
    display_name="SQLite",
    dialect="sqlite",
    time_limit="a worker process per connection, killed (SIGKILL) at the deadline; the busy timeout is the same limit",
    # functions that reach outside the database or load code
    denied_functions=frozenset(
        {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer", "zipfile", "sqlar_compress"}),
    error_categories=(
        ("no such column", "unknown column"), ("ambiguous column", "unknown column"),
        ("no such table", "unknown table"),
        ("syntax error", "syntax"), ("incomplete input", "syntax"),
    ),
    # SQLite's wording of the two errors a repair hint can explain (messages, not SQL: a regex is fine here)
    missing_column=r"no such column: (?:([^\s.]+)\.)?(?P<name>\S+)",
    missing_table=r"no such table: (?:[^\s.]+\.)?(?P<name>\S+)",
    check_dialect=_CheckedSQLite,
)


class SQLiteDatabase:
    """A read-only SQLite connection with a time limit, a row cap and a byte cap.

    Queries run in a worker process (one per object, reused; calls from several
    threads are serialised); ``close()`` ends it.
    """

    rules = RULES
    dialect = RULES.dialect

    @classmethod
    def opens(cls, target: str | Path) -> bool:
        """A file whose name ends like a SQLite database's (``shop.sqlite``, ``x.db``...)."""
        return url_scheme(target) is None and Path(target).suffix.lower() in SUFFIXES

    def __init__(self, path: str | Path, *, timeout: float = 10.0, max_rows: int = 1000,
                 limits: Limits | None = None):
        self.path = Path(path).expanduser()
        self.timeout = check_timeout(timeout)
        self.max_rows = check_max_rows(max_rows)
        self.limits = limits or Limits()
        config = {"path": _check_file(self.path), "busy_seconds": self.timeout,
                  "denied": sorted(self.rules.denied_functions), "read_pragmas": sorted(READ_PRAGMAS),
                  "sqlite_limits": dict(self.limits.sqlite), "memory": self.limits.memory,
                  "heap": self.limits.heap, "temp_file": self.limits.temp_file}
        # A reply holds at most max_bytes of values; pickling adds far less than the same again.
        self._worker = Worker(config, max_reply=2 * self.limits.max_bytes + MiB)
        try:
            self._worker.start()
        except _OpenFailed as err:
            raise _open_error(self.path, err.kind, str(err)) from None
        self._inspect = None
        self._schema: dict[int, Schema] = {}
        #: (name, reason) of each table or view introspection could not read.
        self.skipped: list[tuple[str, str]] = []

    # -- execution -------------------------------------------------------------

    def execute(self, sql: str, *, max_rows: int | None = None, timeout: float | None = None) -> Result:
        """Check ``sql`` against the allow-list, then run it under every layer.

        The time limit covers the allow-list parse too (it is bounded by
        ``limits.MAX_SQL_CHARS``, not interruptible): the worker gets what is left.
        """
        return execute_checked(self, sql, max_rows=max_rows, timeout=timeout)

    def _run(self, sql: str, params: tuple = (), *, max_rows: int | None = None, timeout: float | None = None,
             shown_limit: float | None = None) -> Result:
        """Run in the worker without the allow-list (layers 2 and below only)."""
        cap = self.max_rows if max_rows is None else check_max_rows(max_rows)
        limit = self.timeout if timeout is None else check_timeout(timeout)
        shown_limit = limit if shown_limit is None else shown_limit
        return query(self._worker, ("query", sql, tuple(params), cap, self.limits.max_bytes, limit), limit,
                     shown_limit, self.limits.heap // MiB)

    @property
    def _conn(self):
        """A connection opened in this process exactly as the worker opens its own, for
        tests that look underneath the layers; queries never use it."""
        if self._inspect is None:
            self._inspect = guarded_connection(self._worker.config)[0]
        return self._inspect

    def close(self) -> None:
        if getattr(self, "_inspect", None) is not None:
            self._inspect.close()
            self._inspect = None
        worker = getattr(self, "_worker", None)
        if worker is not None:
            with worker.lock:
                worker.stop()

    def __del__(self) -> None:  # a forgotten close() must not leave a process behind
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> "SQLiteDatabase":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- introspection -----------------------------------------------------------

    def schema(self, samples: int = 3) -> Schema:
        """Tables and views with columns, keys and up to ``samples`` example text values.

        An object SQLite cannot describe (a view over a dropped table or calling a
        missing function, a virtual table whose module is not compiled in) is left
        out and listed in :attr:`skipped` with the reason; the rest is still returned.
        """
        if samples not in self._schema:
            self._schema[samples] = self._introspect(samples)
        return self._schema[samples]

    def _introspect(self, samples: int) -> Schema:
        try:
            reply = self._worker.request(("catalog",), max(self.timeout, CATALOG_SECONDS))
        except Deadline:
            raise QueryTimeout(f"reading the schema of {shown(self.path)} took too long") from None
        except WorkerDied as died:
            raise QueryError(describe_death(died.returncode)) from None
        if reply[0] != "ok":
            raise DatabaseError(f"cannot read the schema of {shown(self.path)}: {reply[2]}")
        tables, skipped = [], []
        notes = self._comments()
        for name, kind, info, keys, problem in reply[1]:
            if problem:
                skipped.append((name, problem))
                continue
            table = self._table(name, kind, info, keys, samples)
            if name in notes:
                table = _described(table, notes[name])
            tables.append(table)
        self.skipped = skipped
        return Schema(tables=tuple(tables), dialect=self.dialect)

    def _comments(self) -> dict[str, dict[str, str]]:
        """table -> column -> the comment written beside it in its CREATE TABLE text ("" for the
        table's own), for the tables whose text has comments (SQLite keeps the text as written)."""
        try:
            rows = self._run("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL "
                             "AND (instr(sql, '--') > 0 OR instr(sql, '/*') > 0)", max_rows=10_000,
                             timeout=min(self.timeout, SAMPLE_SECONDS)).rows
        except QueryError:
            return {}
        return {name: found for name, text in rows if (found := ddl_comments(text))}

    def _table(self, name: str, kind: str, info: list, keys: list, samples: int) -> Table:
        info = [row[1:] for row in info]
        keys = sorted((row[0], row[1], row[2], row[3], row[4]) for row in keys)
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
            rows = self._run(f"SELECT * FROM {quoted} LIMIT 50", max_rows=50,
                             timeout=min(self.timeout, SAMPLE_SECONDS)).rows
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
