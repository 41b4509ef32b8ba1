"""Parent side of the query worker: spawn once, reuse, kill at the deadline, respawn.

One :class:`Worker` per database connection object. Calls are serialised by a
lock, so many threads may share one connection; each call waits on the pipe
with ``select`` until its deadline and, past it, kills the child (SIGKILL) and
reports a timeout. The next call starts a fresh child. A child that dies for
any other reason (memory limit, crash) is reported as a QueryError, never a hang.
"""

from __future__ import annotations

import io
import os
import pickle
import select
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

from ..errors import DatabaseError, QueryError, QueryTimeout
from . import worker as _worker
from .base import Result

WORKER_SCRIPT = str(Path(_worker.__file__).resolve())
#: Time a fresh worker gets to start and open its database.
START_SECONDS = 15.0
#: The parent waits this long past a query's own deadline (where SQLite's progress
#: handler stops ordinary queries cleanly) before it kills the worker.
KILL_GRACE = 0.25
#: Idle workers beyond this many are stopped, least recently used first (they
#: restart on their next query), so a caller holding many connections, as the
#: evaluation of a test suite with hundreds of database files does, holds few processes.
MAX_LIVE_WORKERS = 16
_live: "OrderedDict[int, Worker]" = OrderedDict()
_live_lock = threading.RLock()  # re-entrant: a collected connection stops its worker from inside _touch


def _touch(worker: "Worker") -> None:
    with _live_lock:
        _live.pop(id(worker), None)
        _live[id(worker)] = worker
        extra = [w for w in _live.values() if w is not worker][: max(0, len(_live) - MAX_LIVE_WORKERS)]
    for other in extra:
        if other.lock.acquire(blocking=False):  # busy ones are left alone
            try:
                other.stop()
            finally:
                other.lock.release()


def _forget(worker: "Worker") -> None:
    with _live_lock:
        _live.pop(id(worker), None)


class Deadline(Exception):
    """The worker did not answer in time (it has been killed)."""


class WorkerDied(Exception):
    """The worker exited or closed its pipe mid-request."""

    def __init__(self, returncode: int | None):
        super().__init__(returncode)
        self.returncode = returncode


class _PlainUnpickler(pickle.Unpickler):
    """Replies are tuples of plain values; refuse anything that names a class."""

    def find_class(self, module, name):  # pragma: no cover - only a broken worker gets here
        raise pickle.UnpicklingError(f"worker reply named {module}.{name}")


class Worker:
    """The parent side of one worker process. ``command`` starts the child (by default the
    SQLite worker script); ``start_seconds`` bounds its start and the open; ``failed`` is the
    message of the DatabaseError raised when it does not start."""

    def __init__(self, config: dict, max_reply: int, *, command: list[str] | None = None,
                 start_seconds: float = START_SECONDS, failed: str = "could not start the query worker process"):
        self.config = config
        self.max_reply = max_reply
        self.command = command or [sys.executable, "-I", "-S", WORKER_SCRIPT]
        self.start_seconds, self.failed = start_seconds, failed
        self.lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self.killed = 0  # how many times a deadline killed the child (tests read it)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Spawn and open the database; _OpenFailed if the engine refuses it."""
        proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, close_fds=True)
        self._proc = proc
        _touch(self)
        try:
            reply = self._call(("open", {**self.config, "parent": os.getpid()}),
                               time.monotonic() + self.start_seconds)
        except (Deadline, WorkerDied):
            self.stop()
            raise DatabaseError(self.failed) from None
        if reply[0] != "ok":
            self.stop()
            raise _OpenFailed(reply[1], reply[2])

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        _forget(self)
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _kill(self) -> int | None:
        proc = self._proc
        if proc is not None:
            proc.kill()
            proc.wait()
        self.stop()
        return proc.returncode if proc else None

    # -- requests ----------------------------------------------------------------

    def request(self, message: tuple, seconds: float) -> tuple:
        """Send ``message``; the reply, or Deadline / WorkerDied (the child is then gone)."""
        with self.lock:
            if self._proc is not None and self._proc.poll() is not None:
                self.stop()  # it died while idle (a crash, or the thread that started it ended): start anew
            if self._proc is None:
                self.start()
            else:
                _touch(self)
            return self._call(message, time.monotonic() + seconds)

    def _call(self, message: tuple, deadline: float) -> tuple:
        proc = self._proc
        body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            proc.stdin.write(_worker.HEADER.pack(len(body)) + body)
            proc.stdin.flush()
            size = _worker.HEADER.unpack(self._read(_worker.HEADER.size, deadline))[0]
            if size > self.max_reply:
                self._kill()
                raise WorkerDied(None)
            return _PlainUnpickler(io.BytesIO(self._read(size, deadline))).load()
        except Deadline:
            self._kill()
            self.killed += 1
            raise
        except (OSError, EOFError, pickle.UnpicklingError, ValueError):
            raise WorkerDied(self._kill()) from None

    def _read(self, size: int, deadline: float) -> bytes:
        fd = self._proc.stdout.fileno()
        chunks, got = [], 0
        while got < size:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise Deadline()
            chunk = os.read(fd, min(size - got, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)


class _OpenFailed(Exception):
    """The worker could not open the database: (kind, message)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def describe_death(returncode: int | None) -> str:
    """One line for a worker that died during a query."""
    if returncode == _worker.EXIT_NO_MEMORY or returncode is None:
        return "the query needed more memory than allowed and was stopped"
    if returncode < 0:
        return f"the query worker was stopped by signal {-returncode} (likely its memory limit)"
    return f"the query worker exited unexpectedly (status {returncode})"


def query(worker: "Worker", request: tuple, limit: float, shown_limit: float, memory_mib: int) -> Result:
    """Send one query ``request`` to ``worker`` with ``limit`` seconds, and turn the reply into a
    Result or the one-line error it reports (``shown_limit``: the limit the caller was given;
    ``memory_mib``: the memory bound a "memory" reply names)."""
    try:
        reply = worker.request(request, limit + KILL_GRACE)
    except Deadline:
        raise QueryTimeout(f"query stopped after the {shown_limit:g} s time limit") from None
    except WorkerDied as died:
        raise QueryError(describe_death(died.returncode)) from None
    if reply[0] == "ok":
        _, columns, rows, cut_by, seconds = reply
        return Result(columns=columns, rows=rows, truncated=bool(cut_by), seconds=seconds, truncated_by=cut_by)
    kind, message = reply[1], reply[2]
    if kind == "timeout":
        raise QueryTimeout(f"query stopped after the {shown_limit:g} s time limit")
    if kind == "memory":
        raise QueryError(f"the query needed more memory than allowed ({memory_mib} MiB) and was stopped")
    if kind == "busy":
        raise QueryError(f"the database is locked by another process (waited {shown_limit:g} s)")
    if kind == "refused":
        raise QueryError(f"not run: {message}")
    raise QueryError(f"the database refused the query: {message}")
