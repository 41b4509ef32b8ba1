"""The query worker: a child process that owns one guarded, read-only SQLite connection.

Run as ``python -I -S worker.py`` by :mod:`slimsql.db.process`; standard library
only, so it starts in a few tens of milliseconds and imports nothing of the
parent's. It caps its own address space, temporary file size and SQLite heap
first, then serves requests on stdin/stdout, one at a time: 4-byte length +
pickle of plain tuples. The parent kills it at a query's deadline; whatever
happens inside one SQLite step or while preparing a statement cannot outlive that.

:func:`guarded_connection` is also importable, so tests can inspect the layers
the worker runs under.
"""

from __future__ import annotations

import os
import pickle
import signal
import sqlite3
import struct
import sys
import time
from urllib.parse import quote

try:
    import resource
except ImportError:  # not POSIX: no operating-system limits, the deadline still holds
    resource = None

HEADER = struct.Struct("<I")
SQLITE_HEADER = b"SQLite format 3\x00"
_PROGRESS_STEPS = 1000
ROW_OVERHEAD, VALUE_OVERHEAD = 64, 16
EXIT_NO_MEMORY = 3


def _decode(value: bytes) -> str:
    # Databases in the wild hold invalid UTF-8; never let one value stop a query.
    return value.decode("utf-8", errors="replace")


#: Pragmas virtual-table constructors query (never assign) while connecting: FTS5
#: reads data_version, FTS3/4 page_size.
QUERIED_PRAGMAS = frozenset({"data_version", "page_size"})
_WRITES = (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE)


class Guard:
    """The authorizer: at prepare time only reading is allowed.

    Every writing statement's first authorizer action is its write (INSERT,
    UPDATE, DELETE, CREATE..., checked for each statement kind by a test), and a
    reading one starts with SELECT or a schema-reading pragma. Inside a reading
    statement, write actions can only come from what virtual-table modules
    prepare for themselves while connecting (eponymous tables such as
    ``json_each`` declare their columns through ``sqlite_master``; R*Tree
    prepares its shadow-table writes): those are allowed, as they never run in
    a read query, and the read-only open and ``query_only`` refuse them if they did.
    """

    def __init__(self, denied_functions, read_pragmas):
        self.denied = frozenset(denied_functions)
        self.pragmas = frozenset(read_pragmas)
        self.first = None
        self.reading = False

    def __call__(self, action, arg1, arg2, _db, _source):
        if self.first is None:
            self.first = action
            self.reading = action == sqlite3.SQLITE_SELECT or (
                action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in self.pragmas)
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION:
            return sqlite3.SQLITE_DENY if (arg2 or "").lower() in self.denied else sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            ok = name in self.pragmas or (name in QUERIED_PRAGMAS and arg2 is None)
            return sqlite3.SQLITE_OK if ok else sqlite3.SQLITE_DENY
        if action in _WRITES and self.reading:
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY


class NotSQLite(Exception):
    pass


def uri_for(path: bytes) -> str:
    """The read-only URI of ``path``: ``mode=ro``, plus ``immutable=1`` for a WAL database
    with no WAL content (then SQLite creates no -wal or -shm file and takes no lock).

    The header is read here, in the worker, never in the parent: closing any file
    descriptor on a database drops every POSIX lock its process holds on it, which
    would silently unlock a writer connection the parent process may have open.
    """
    with open(path, "rb") as handle:
        header = handle.read(100)
    if header[: len(SQLITE_HEADER)] != SQLITE_HEADER:
        raise NotSQLite()
    params = "mode=ro"
    if header[18:20] == b"\x02\x02":  # file format versions 2: WAL
        try:
            wal = os.stat(path + b"-wal").st_size
        except FileNotFoundError:
            wal = 0
        if wal == 0:
            params += "&immutable=1"
    return "file:" + quote(path) + "?" + params


def guarded_connection(config: dict) -> tuple[sqlite3.Connection, Guard]:
    """Open ``config['path']`` read-only with every connection-level layer on."""
    conn = sqlite3.connect(uri_for(config["path"]), uri=True, check_same_thread=False, isolation_level=None,
                           timeout=config.get("busy_seconds", 5.0))
    conn.execute("PRAGMA query_only = ON")
    heap = config.get("heap")
    if heap:
        conn.execute(f"PRAGMA hard_heap_limit = {int(heap)}")
        conn.execute(f"PRAGMA soft_heap_limit = {int(heap) // 2}")
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    conn.text_factory = _decode
    for name, value in config.get("sqlite_limits", {}).items():
        conn.setlimit(getattr(sqlite3, "SQLITE_LIMIT_" + name), int(value))
    guard = Guard(config.get("denied", ()), config.get("read_pragmas", ()))
    conn.set_authorizer(guard)
    return conn, guard


def value_size(value) -> int:
    """What one value counts against a result's byte cap (every engine counts the same way):
    its text or bytes plus an overhead; a list or a map, its parts."""
    if isinstance(value, str):
        return VALUE_OVERHEAD + (len(value) if value.isascii() else len(value.encode("utf-8", "replace")))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return VALUE_OVERHEAD + len(value)
    if isinstance(value, (list, tuple)):
        return VALUE_OVERHEAD + sum(map(value_size, value))
    if isinstance(value, dict):
        return VALUE_OVERHEAD + sum(value_size(k) + value_size(v) for k, v in value.items())
    return VALUE_OVERHEAD


class Session:
    def __init__(self, conn: sqlite3.Connection, guard: Guard):
        self.conn, self.guard = conn, guard
        self.busy_ms = None

    def _busy_timeout(self, seconds: float) -> None:
        ms = max(1, int(seconds * 1000))
        if ms != self.busy_ms:
            self.conn.set_authorizer(None)
            try:
                self.conn.execute(f"PRAGMA busy_timeout = {ms}")
            finally:
                self.conn.set_authorizer(self.guard)
            self.busy_ms = ms

    def query(self, sql: str, params: tuple, max_rows: int, max_bytes: int, timeout: float):
        """Run one statement; ('ok', columns, rows, cut_by, seconds) or ('error', kind, message)."""
        self._busy_timeout(timeout)
        deadline = time.monotonic() + timeout
        self.conn.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
        self.guard.first = None
        start = time.perf_counter()
        rows, used, cut_by, widest = [], 0, "", ROW_OVERHEAD
        try:
            cursor = self.conn.execute(sql, params)
            columns = tuple(d[0] for d in cursor.description or ())
            while not cut_by:
                # Fetch in batches, but never more rows at once than the byte budget
                # left would hold at the widest row seen so far.
                size = max(1, min(512, max_rows + 1 - len(rows), (max_bytes - used) // widest, 2 * len(rows)))
                batch = cursor.fetchmany(size)
                if not batch:
                    break
                for row in batch:
                    width = ROW_OVERHEAD + sum(map(value_size, row))
                    widest = max(widest, width)
                    used += width
                    if used > max_bytes:
                        cut_by = "bytes"
                        break
                    if len(rows) == max_rows:
                        cut_by = "rows"
                        break
                    rows.append(row)
            cursor.close()
        except sqlite3.OperationalError as err:
            text = str(err)
            if "interrupted" in text:
                return ("error", "timeout", text)
            if "locked" in text or "busy" in text:
                return ("error", "busy", text)
            return ("error", "memory" if "out of memory" in text else "query", text)
        except (sqlite3.DatabaseError, sqlite3.Warning, ValueError, OverflowError) as err:
            return ("error", "memory" if "out of memory" in str(err) else "query", str(err))
        finally:
            self.conn.set_progress_handler(None, 0)
            if self.conn.in_transaction:  # never expected; never commit
                self.conn.rollback()
        return ("ok", columns, rows, cut_by, time.perf_counter() - start)

    def catalog(self):
        """Every table and view with its columns and keys, or the error that hid it."""
        self.guard.first = None
        objects = self.conn.execute(
            "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid").fetchall()
        found = []
        for name, kind in objects:
            quoted = '"' + name.replace('"', '""') + '"'
            try:
                self.guard.first = None
                info = self.conn.execute(f"PRAGMA table_xinfo({quoted})").fetchall()
                self.guard.first = None
                keys = self.conn.execute(f"PRAGMA foreign_key_list({quoted})").fetchall()
                found.append((name, kind, info, keys, ""))
            except (sqlite3.DatabaseError, sqlite3.Warning, ValueError) as err:
                found.append((name, kind, [], [], str(err) or type(err).__name__))
        return ("ok", found)


def _die_with_parent(parent: int | None) -> None:
    """Linux: be killed when the parent dies, even in the middle of a long step."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if parent and os.getppid() != parent:  # it died before prctl took effect
        os._exit(0)


def _limit_self(config: dict) -> None:
    if sys.platform.startswith("linux"):
        _die_with_parent(config.get("parent"))
    if resource is None:
        return
    for name, key in (("RLIMIT_AS", "memory"), ("RLIMIT_FSIZE", "temp_file"), ("RLIMIT_CORE", None)):
        limit = getattr(resource, name, None)
        if limit is None:
            continue
        value = config.get(key, 0) if key else 0
        try:
            soft, hard = resource.getrlimit(limit)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(limit, (value, hard))
        except (ValueError, OSError):
            pass
    if hasattr(signal, "SIGXFSZ"):  # an oversized temp file is an I/O error, not a crash
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _read(stream) -> object:
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    return pickle.loads(stream.read(HEADER.unpack(header)[0]))


def _write(stream, message) -> None:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(HEADER.pack(len(body)) + body)
    stream.flush()


def serve() -> int:
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but replies on the pipe
    session = None
    while True:
        request = _read(inp)
        if request is None:
            return 0
        op = request[0]
        try:
            if op == "open":
                _limit_self(request[1])
                try:
                    session = Session(*guarded_connection(request[1]))
                    reply = ("ok",)
                except NotSQLite:
                    reply = ("error", "format", "not a SQLite database")
                except OSError as err:
                    reply = ("error", "read", err.strerror or str(err))
                except sqlite3.Error as err:
                    reply = ("error", "open", str(err) or type(err).__name__)
            elif op == "query":
                reply = session.query(*request[1:])
            elif op == "catalog":
                reply = session.catalog()
            else:
                reply = ("error", "query", f"unknown request {op!r}")
            _write(out, reply)
        except (sqlite3.Error, ValueError, OverflowError) as err:
            _write(out, ("error", "query", str(err) or type(err).__name__))
        except MemoryError:
            try:
                _write(out, ("error", "memory", "out of memory"))
            except MemoryError:
                os._exit(EXIT_NO_MEMORY)


if __name__ == "__main__":
    sys.exit(serve())
