"""What the server does, without HTTP: one model behind many clients, the same road as the CLI.

:class:`Service` holds the databases named at start (only those: a request names a
database, never a path) and one backend. Every question runs :func:`slimsql.infer.ask`,
exactly as ``slimsql ask`` does; every hand-written query runs through the same read-only
layer as ``slimsql sql``.

Concurrency
===========
* **One model user at a time.** Each request gets a :class:`GatedBackend`: a view of the
  shared backend whose ``generate`` / ``remember`` take the model gate, so the model
  object is never used from two threads at once (a backend that declares
  ``concurrent = True``, such as a remote OpenAI-compatible server, gets as many
  slots as it asks for).
* **A bounded queue.** At most ``max_queue`` questions are admitted (running or
  waiting for the model); one more is refused at once with :class:`Busy` (HTTP 503 with
  Retry-After), never left hanging. A question that waits longer than ``queue_seconds``
  for the model is refused the same way.
* **A connection per query.** Each served database keeps a small pool of read-only
  connections (each with its own worker process); every query checks one out for
  that query alone, so one request's time limit can never apply to another's query
  and a slow query holds no model slot.
* **Cancellation.** Each question carries a :class:`threading.Event`; the HTTP layer sets
  it when the client disconnects. The question then stops at its next step (waiting
  for the model, before a generation, before a query): a model call already running
  finishes within its token limit, a query within its time limit, and nothing is
  left running after that.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from urllib.parse import unquote, urlsplit
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from .. import infer
from .. import knowledge as kn
from ..backends import Backend, GenerationConfig, Message, is_concurrent
from ..db import Result, open_database
from ..db.base import shown_target, url_scheme
from ..db.limits import check_max_rows, check_timeout
from ..errors import InputError, Interrupted
from ..infer import Settings
from ..prompts import MAX_HISTORY, Turn
from ..schema import Schema, render_create


def json_rows(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Result rows as JSON can carry them: BLOBs as hex (as ``slimsql ask --json`` prints them),
    infinite floats (``SELECT 1e999``) as the text JavaScript reads back with ``Number()``."""
    def cell(value: Any) -> Any:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value).hex()
        if isinstance(value, float) and not math.isfinite(value):
            return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return value
    return [[cell(v) for v in row] for row in rows]


class Busy(Interrupted):
    """The server has no room for this request now; ``retry_after`` says when to try again."""

    exit_code = 8

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class Cancelled(Interrupted):
    """The client went away; the question stopped at its next step."""

    exit_code = 130


class UnknownDatabase(InputError):
    """A request named a database the server was not started with."""


class ModelGate:
    """The model's lock and its bounded waiting line."""

    def __init__(self, slots: int = 1, max_queue: int = 8, queue_seconds: float = 120.0):
        if max_queue < 1:
            raise InputError(f"--max-queue must be at least 1, got {max_queue}")
        self.slots, self.max_queue, self.queue_seconds = slots, max_queue, queue_seconds
        self._slots = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self.admitted = 0  # questions admitted and not finished (running or waiting)
        self.in_use = 0  # model calls running now (the tests check it never exceeds ``slots``)
        self.peak_in_use = 0
        self._recent: deque[float] = deque(maxlen=20)  # seconds per finished question

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the recent time per question times the line."""
        per = sum(self._recent) / len(self._recent) if self._recent else 5.0
        return max(1, round(per * max(1, self.admitted) / self.slots))

    @contextmanager
    def admit(self) -> Iterator[None]:
        with self._lock:
            if self.admitted >= self.max_queue:
                raise Busy(f"the server is busy ({self.admitted} questions in line); try again shortly",
                           self.retry_after())
            self.admitted += 1
        start = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self.admitted -= 1
                self._recent.append(time.monotonic() - start)

    @contextmanager
    def hold(self, cancelled: threading.Event | None) -> Iterator[None]:
        """Use the model: wait for a slot, giving up when the request is cancelled or waited too long."""
        deadline = time.monotonic() + self.queue_seconds
        while not self._slots.acquire(timeout=0.05):
            if cancelled is not None and cancelled.is_set():
                raise Cancelled("the client went away")
            if time.monotonic() > deadline:
                raise Busy(f"waited {self.queue_seconds:.0f}s for the model; try again shortly", self.retry_after())
        try:
            if cancelled is not None and cancelled.is_set():
                raise Cancelled("the client went away")
            with self._lock:
                self.in_use += 1
                self.peak_in_use = max(self.peak_in_use, self.in_use)
            try:
                yield
            finally:
                with self._lock:
                    self.in_use -= 1
        finally:
            self._slots.release()


class GatedBackend:
    """One request's view of the shared backend: every model call goes through the gate."""

    def __init__(self, backend: Backend, gate: ModelGate, cancelled: threading.Event | None = None):
        self._backend, self._gate, self._cancelled = backend, gate, cancelled
        self.name, self.model_name = backend.name, backend.model_name
        # the road looks these up with getattr: offer them only where the backend has them
        if hasattr(backend, "remember"):
            self.remember = self._remember
        if hasattr(backend, "count_tokens"):  # tokenizing reads the vocabulary only: no model slot needed
            self.count_tokens = backend.count_tokens

    def generate(self, messages: Sequence[Message], config: GenerationConfig):
        with self._gate.hold(self._cancelled):
            return self._backend.generate(messages, config)

    def _remember(self, messages: Sequence[Message]) -> None:
        with self._gate.hold(self._cancelled):
            self._backend.remember(messages)


class ConnectionPool:
    """Read-only connections to one database (a file or a URL), checked out one query at a time."""

    def __init__(self, path: str | Path, size: int, settings: Settings, name: str = ""):
        self.path, self.size, self.settings = path, size, settings
        self.name = name or (path.name if isinstance(path, Path) else shown_target(path))
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._made = 0
        self._closed = False
        self._lock = threading.Lock()
        self._idle.put(open_database(path, timeout=settings.timeout, max_rows=settings.max_rows))  # fails early
        self._made = 1

    @contextmanager
    def connection(self, wait: float) -> Iterator[Any]:
        if self._closed:
            raise Busy("the server is shutting down", 5)
        try:
            db = self._idle.get_nowait()
        except queue.Empty:
            with self._lock:
                grow = self._made < self.size
                self._made += grow
            if grow:
                try:
                    db = open_database(self.path, timeout=self.settings.timeout, max_rows=self.settings.max_rows)
                except BaseException:
                    with self._lock:
                        self._made -= 1
                    raise
            else:
                try:
                    db = self._idle.get(timeout=wait)
                except queue.Empty:
                    raise Busy(f"all {self.size} connections to {self.name} are busy; try again shortly",
                               max(1, round(wait))) from None
        try:
            yield db
        finally:
            with self._lock:  # against close(): a connection given back after it is closed, not kept
                closed = self._closed
                if not closed:
                    self._idle.put(db)
            if closed:
                db.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


class PooledDatabase:
    """The Database interface over a pool: each ``execute`` runs on a connection of its own
    (checked out for that query only), after checking that the request is still wanted."""

    def __init__(self, served: "ServedDatabase", cancelled: threading.Event | None, max_rows: int, timeout: float):
        self.path, self.dialect = served.path, served.schema.dialect
        self._served, self._cancelled = served, cancelled
        self._max_rows, self._timeout = max_rows, timeout

    def schema(self, samples: int = 1) -> Schema:
        return self._served.schema

    def execute(self, sql: str, *, max_rows: int | None = None, timeout: float | None = None) -> Result:
        if self._cancelled is not None and self._cancelled.is_set():
            raise Cancelled("the client went away")
        # the request's limits are the ceiling: the road passes the server's settings
        rows = min(max_rows or self._max_rows, self._max_rows)
        seconds = min(timeout or self._timeout, self._timeout)
        with self._served.pool.connection(wait=seconds + 5) as db:
            return db.execute(sql, max_rows=rows, timeout=seconds)

    def _run(self, sql: str, params: tuple = (), *, max_rows: int | None = None,
             timeout: float | None = None) -> Result:
        """slimsql's own reads (value linking's index), on a pooled connection as ``execute``."""
        if self._cancelled is not None and self._cancelled.is_set():
            raise Cancelled("the client went away")
        seconds = min(timeout or self._timeout, self._timeout)
        with self._served.pool.connection(wait=seconds + 5) as db:
            return db._run(sql, params, max_rows=max_rows, timeout=seconds)

    def close(self) -> None:
        pass


@dataclass
class ServedDatabase:
    name: str
    path: str | Path  # a file, or a URL
    schema: Schema
    pool: ConnectionPool
    skipped: list[tuple[str, str]] = field(default_factory=list)
    knowledge: kn.Source = field(default_factory=lambda: kn.Source(None))  # what was taught (slimsql teach)


def database_names(paths: Sequence[str | Path]) -> dict[str, str | Path]:
    """``{name: target}`` for the databases to serve: a file by its stem, a URL
    (``postgresql://.../shop``) by its database name; names must be unique."""
    named: dict[str, str | Path] = {}
    for raw in paths:
        if url_scheme(str(raw)):
            target, name = str(raw), unquote(urlsplit(str(raw)).path.strip("/")) or "database"
        else:
            target = Path(raw).expanduser()
            name = target.stem
        if name in named:
            raise InputError(f"two databases are named {name!r} ({shown_target(named[name])} and "
                             f"{shown_target(target)}); rename one")
        named[name] = target
    if not named:
        raise InputError("name at least one database to serve: --db FILE")
    return named


class Service:
    """The databases named at start, one backend, the road of one question."""

    def __init__(self, databases: dict[str, Path], backend: Backend, settings: Settings, *,
                 max_queue: int = 8, queue_seconds: float = 120.0, connections: int = 4,
                 knowledge: dict[str, str | Path | None] | bool = True):
        """``knowledge``: each database's knowledge file by name (default: the one beside each
        database file; a URL has none unless named here); ``False`` for none."""
        self.settings, self.backend = settings, backend
        # a backend that takes concurrent calls may say how many (``max_in_flight``); others get one
        slots = max(1, int(getattr(backend, "max_in_flight", 1))) if is_concurrent(backend) else 1
        self.gate = ModelGate(slots=slots, max_queue=max_queue, queue_seconds=queue_seconds)
        self.started = time.time()
        #: hand-written queries run at once (the HTTP layer's threads for them): every connection, and a few waiting
        self.max_queries = connections * len(databases) + 4
        self.databases: dict[str, ServedDatabase] = {}
        try:
            for name, path in databases.items():
                pool = ConnectionPool(path, connections, settings, name)
                try:
                    with pool.connection(wait=settings.timeout) as db:
                        schema = db.schema(settings.samples)
                        skipped = list(getattr(db, "skipped", ()))
                except BaseException:
                    pool.close()
                    raise
                named = knowledge.get(name) if isinstance(knowledge, dict) else None
                source = kn.Source(kn.path_for(path, named) if knowledge is not False else None)
                self.databases[name] = ServedDatabase(name, path, schema, pool, skipped, source)
        except BaseException:
            self.close()
            raise

    # -- lookups --------------------------------------------------------------------

    def database(self, name: str) -> ServedDatabase:
        try:
            return self.databases[name]
        except KeyError:
            raise UnknownDatabase(f"no database named {name!r} is served; "
                                  f"served: {', '.join(sorted(self.databases))}") from None

    def limits(self, max_rows: int | None, timeout: float | None) -> tuple[int, float]:
        """The request's limits, never above the server's."""
        rows = self.settings.max_rows if max_rows is None else min(check_max_rows(max_rows), self.settings.max_rows)
        seconds = self.settings.timeout if timeout is None else min(check_timeout(timeout), self.settings.timeout)
        return rows, seconds

    # -- what the API offers ------------------------------------------------------

    def list_databases(self) -> list[dict[str, Any]]:
        return [{"name": d.name, "tables": len(d.schema.tables), "dialect": d.schema.dialect}
                for d in self.databases.values()]

    def describe_schema(self, name: str) -> dict[str, Any]:
        served = self.database(name)
        tables = [{"name": t.name, "kind": t.kind,
                   "columns": [{"name": c.name, "type": c.type, "primary_key": c.primary_key,
                                "nullable": c.nullable} for c in t.columns],
                   "foreign_keys": [{"columns": list(k.columns), "ref_table": k.ref_table,
                                     "ref_columns": list(k.ref_columns)} for k in t.foreign_keys]}
                  for t in served.schema.tables]
        return {"name": served.name, "dialect": served.schema.dialect, "tables": tables,
                "text": render_create(served.schema), "skipped": [list(s) for s in served.skipped]}

    def model(self) -> dict[str, Any]:
        s = self.settings
        return {"name": self.backend.model_name, "backend": self.backend.name, "style": s.style,
                "candidates": s.generation.n, "strategy": s.strategy, "max_rows": s.max_rows, "timeout": s.timeout,
                "max_history": MAX_HISTORY}

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "model": self.backend.model_name, "databases": len(self.databases),
                "queue": {"admitted": self.gate.admitted, "max": self.gate.max_queue},
                "uptime_s": round(time.time() - self.started, 1)}

    def warm(self) -> list[str]:
        """Evaluate (or load from the prefix cache) every served database's schema prompt now,
        so that a question costs only its own tokens. Names of the databases warmed."""
        warmed = []
        for served in self.databases.values():
            if self.settings.values:  # value linking's index of the database's text values, built once
                from ..infer import linking

                linking.ValueIndex.for_database(PooledDatabase(served, None, self.settings.max_rows,
                                                               self.settings.timeout))
            backend = GatedBackend(self.backend, self.gate)
            if infer.warm(backend, served.schema, self.settings, served.knowledge.current()):
                warmed.append(served.name)
        return warmed

    def ask(self, name: str, question: str, *, history: Sequence[Turn] = (), max_rows: int | None = None,
            timeout: float | None = None, cancelled: threading.Event | None = None) -> dict[str, Any]:
        """One question on the road of ``slimsql ask``; the answer, or raises the first candidate's error
        (with ``.trace`` and ``.sql`` attached)."""
        served = self.database(name)
        question = infer.check_question(question)
        history = [Turn(infer.check_question(t.question), t.sql) for t in list(history)[-MAX_HISTORY:]]
        rows, seconds = self.limits(max_rows, timeout)
        settings = replace(self.settings, max_rows=rows, timeout=seconds)
        start = time.perf_counter()
        with self.gate.admit():
            db = PooledDatabase(served, cancelled, rows, seconds)
            backend = GatedBackend(self.backend, self.gate, cancelled)
            answer = infer.ask(db, backend, question, settings, schema=served.schema, history=history,
                               knowledge=served.knowledge.current())
        timings = {**answer.timings, "wall": round(time.perf_counter() - start, 4)}
        return {"db": name, "question": question, "sql": answer.sql, "columns": list(answer.columns),
                "rows": json_rows(answer.rows), "truncated": answer.truncated,
                "truncated_by": answer.truncated_by, "model": answer.model, "timings": timings,
                "tokens": answer.tokens, "trace": answer.trace.to_dict()}

    def run_sql(self, name: str, sql: str, *, max_rows: int | None = None, timeout: float | None = None,
                cancelled: threading.Event | None = None) -> dict[str, Any]:
        """Hand-written (or edited) SQL through the same read-only layer and limits."""
        served = self.database(name)
        rows, seconds = self.limits(max_rows, timeout)
        if not sql or not sql.strip():
            raise InputError("the SQL is empty")
        result = PooledDatabase(served, cancelled, rows, seconds).execute(sql)
        return {"db": name, "sql": sql, "columns": list(result.columns), "rows": json_rows(result.rows),
                "truncated": result.truncated, "truncated_by": result.truncated_by,
                "timings": {"execution": round(result.seconds, 4)}}

    # -- teaching ------------------------------------------------------------------

    def knowledge(self, name: str) -> dict[str, Any]:
        """What was taught about database ``name`` (the file's contents, as JSON)."""
        served = self.database(name)
        return {"db": name, "writable": served.knowledge.path is not None,
                **served.knowledge.current().to_dict(), "summary": served.knowledge.current().summary()}

    def teach(self, name: str, *, note: str | None = None, example: tuple[str, str] | None = None,
              describe: tuple[str, str, Sequence[str]] | None = None) -> dict[str, Any]:
        """Add a note, a checked example (its SQL passes the allow-list and runs, read-only,
        first) or a description to database ``name``'s knowledge file; saved atomically, so
        clients saving at once all keep their entries. The id of what was added."""
        served = self.database(name)
        if served.knowledge.path is None:
            raise InputError(f"{name} has no knowledge file: serve it with --knowledge {name}=FILE")
        if example is not None:
            question, sql = example
            rows, seconds = self.limits(None, None)
            change = kn.with_example(question, kn.checked_example(PooledDatabase(served, None, rows, seconds),
                                                                  question, sql))
        elif note is not None:
            change = kn.with_note(note)
        elif describe is not None:
            target, text, synonyms = describe
            why = kn.missing(served.schema, target)
            if why:
                raise InputError(f"{name} has {why}")
            change = kn.with_description(target, text, tuple(synonyms))
        else:
            raise InputError("nothing to teach: give a note, an example or a description")
        saved = served.knowledge.update(change)
        return {"db": name, "id": change.entry, "summary": saved.summary()}

    def forget(self, name: str, entry: str) -> dict[str, Any]:
        served = self.database(name)
        if served.knowledge.path is None:
            raise InputError(f"{name} has no knowledge file")
        saved = served.knowledge.update(kn.without(entry))
        return {"db": name, "removed": entry, "summary": saved.summary()}

    def close(self) -> None:
        for served in self.databases.values():
            served.pool.close()

