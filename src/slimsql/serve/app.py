"""The HTTP API and the web page (FastAPI): a thin map from routes to :class:`Service` calls.

Routes (OpenAPI docs at ``/docs``)::

    GET  /v1/health              liveness, the model, the queue
    GET  /v1/databases           the databases named at start
    GET  /v1/databases/{name}    one database's schema
    GET  /v1/models              the model and the answer settings
    POST /v1/ask                 question (+ history) -> SQL, columns, rows, truncated, timings, trace
    POST /v1/sql                 edited SQL -> columns, rows (the same read-only layer)
    GET  /v1/knowledge/{name}    what was taught about a database (slimsql teach)
    POST /v1/knowledge/examples  a question and its SQL (checked and run first) -> saved
    POST /v1/knowledge/notes     a note -> saved;  .../descriptions: a table or column's meaning
    POST /v1/knowledge/remove    an entry's id -> removed
    GET  /                       the page (static files, no CDN)

Every error is JSON ``{"error": {"code": ..., "message": ...}}`` with one line of message
and a stable code, never a stack trace. Security: see :func:`create_app`.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi_offline import FastAPIOffline
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..db.limits import MAX_ROWS, MAX_TIMEOUT
from ..errors import (DatabaseError, InputError, ModelError, NoSQLError, QueryError, QueryTimeout, SlimsqlError,
                      UnsafeSQLError)
from ..infer.pipeline import MAX_QUESTION_CHARS
from ..knowledge import MAX_TEXT
from ..prompts import MAX_HISTORY, Turn
from ..sql import MAX_SQL_CHARS
from .cli import CORS_ANY_NEEDS_KEY
from .service import Busy, Cancelled, Service, UnknownDatabase

STATIC = Path(__file__).with_name("static")
#: Largest request body accepted (a question with its history, or an edited query).
MAX_BODY_BYTES = 256 * 1024
API_KEY_HEADER = "X-API-Key"

#: Error class -> (HTTP status, stable code); the first match wins (subclasses first).
ERRORS: list[tuple[type[SlimsqlError], int, str]] = [
    (Busy, 503, "busy"),
    (Cancelled, 499, "cancelled"),
    (UnknownDatabase, 404, "unknown_database"),
    (InputError, 400, "bad_input"),
    (UnsafeSQLError, 422, "unsafe_sql"),
    (QueryTimeout, 422, "query_timeout"),
    (QueryError, 422, "query_error"),
    (NoSQLError, 422, "no_sql"),
    (DatabaseError, 500, "database_error"),
    (ModelError, 500, "model_error"),
    (SlimsqlError, 500, "error"),
]


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None,
                   **extra: Any) -> JSONResponse:
    body = {"error": {"code": code, "message": " ".join(str(message).split())[:1000], **extra}}
    return JSONResponse(body, status_code=status, headers=headers)


class TurnIn(BaseModel):
    question: str = Field(max_length=MAX_QUESTION_CHARS)
    sql: str = Field(max_length=MAX_SQL_CHARS)


class AskIn(BaseModel):
    db: str = Field(max_length=200, description="a database name from /v1/databases")
    question: str = Field(max_length=MAX_QUESTION_CHARS)
    history: list[TurnIn] = Field(default_factory=list, max_length=20,
                                  description=f"earlier questions and their SQL, oldest first "
                                              f"(the last {MAX_HISTORY} go into the prompt)")
    max_rows: int | None = Field(default=None, ge=1, le=MAX_ROWS, description="at most the server's row cap")
    timeout: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT, description="at most the server's limit")


class SqlIn(BaseModel):
    db: str = Field(max_length=200)
    sql: str = Field(max_length=MAX_SQL_CHARS)
    max_rows: int | None = Field(default=None, ge=1, le=MAX_ROWS)
    timeout: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT)


class ExampleIn(BaseModel):
    db: str = Field(max_length=200)
    question: str = Field(max_length=MAX_QUESTION_CHARS)
    sql: str = Field(max_length=MAX_SQL_CHARS, description="checked by the allow-list and run (read-only) first")


class NoteIn(BaseModel):
    db: str = Field(max_length=200)
    text: str = Field(max_length=MAX_TEXT)


class DescriptionIn(BaseModel):
    db: str = Field(max_length=200)
    target: str = Field(max_length=400, description="table or table.column")
    text: str = Field(default="", max_length=MAX_TEXT)
    synonyms: list[str] = Field(default_factory=list, max_length=50)


class ForgetIn(BaseModel):
    db: str = Field(max_length=200)
    id: str = Field(max_length=400, description="a note's or example's id, or a description's table[.column]")


class BodyLimit:
    """ASGI middleware: refuse a request body over ``limit`` bytes (413), declared or streamed."""

    class TooLarge(StarletteHTTPException):
        """An HTTPException, so that FastAPI passes it on while it reads the body (any other
        exception there becomes a 400 "error parsing the body")."""

        def __init__(self, limit: int):
            super().__init__(413, f"the request body is over {limit // 1024} KiB")

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._refuse(send)
        seen, started = 0, False

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyLimit.TooLarge(self.limit)
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyLimit.TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send):
        response = error_response(413, "too_large", f"the request body is over {self.limit // 1024} KiB")
        await response({"type": "http"}, None, send)


class JSONOnly:
    """ASGI middleware: a POST to ``/v1`` must declare a JSON body (415 otherwise), before it is read.
    A cross-site page can send a form, text or untyped body without a CORS preflight; a JSON one
    it cannot, so nothing a page elsewhere sends is answered (nor run)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("method") == "POST" and _route_path(scope).startswith("/v1/"):
            kind = dict(scope.get("headers") or ()).get(b"content-type", b"").split(b";")[0].strip().lower()
            if kind != b"application/json":
                response = error_response(415, "not_json", "send the body as JSON, with the header "
                                                           "Content-Type: application/json")
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


class NoFraming:
    """ASGI middleware: no response of this server may be shown in another site's frame (clickjacking)."""

    HEADERS = [(b"x-frame-options", b"DENY"), (b"content-security-policy", b"frame-ancestors 'none'")]

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def framed(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.HEADERS]}
            await send(message)

        return await self.app(scope, receive, framed)


def _route_path(scope) -> str:
    """The path the router matches (without a proxy's prefix, ``root_path``)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


class APIKey:
    """ASGI middleware: every ``/v1`` route but health needs ``X-API-Key`` (compared in constant time)."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode("utf-8")

    async def __call__(self, scope, receive, send):
        path = _route_path(scope)
        if scope["type"] == "http" and path.startswith("/v1/") and path != "/v1/health":
            given = next((v for k, v in scope.get("headers") or () if k == API_KEY_HEADER.lower().encode()), b"")
            if not hmac.compare_digest(given, self.key):
                response = error_response(401, "unauthorized", f"a valid {API_KEY_HEADER} header is required")
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


class HostCheck:
    """ASGI middleware: only these Host header names (ports aside) are served; others get a JSON 400."""

    def __init__(self, app, allowed_hosts: list[str]):
        self.app, self.allowed = app, {h.lower() for h in allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            host = dict(scope.get("headers") or ()).get(b"host", b"").decode("latin-1").lower()
            name = host[: host.find("]") + 1] if host.startswith("[") else host.split(":", 1)[0]
            if name not in self.allowed:
                response = error_response(400, "bad_host", "this server does not answer to that Host header")
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def create_app(service: Service, *, api_key: str | None = None, cors_origins: list[str] | None = None,
               allowed_hosts: list[str] | None = None, max_body: int = MAX_BODY_BYTES) -> FastAPI:
    """The API and the page over ``service``.

    ``api_key``: when set, every ``/v1`` route but health needs the header ``X-API-Key``
    with this value (compared in constant time); ``slimsql serve`` requires one when it
    binds to anything but loopback. ``cors_origins``: none by default (browsers then
    refuse cross-origin calls); the page is same-origin and needs none. ``allowed_hosts``:
    the Host headers accepted (``slimsql serve`` on loopback accepts only loopback names, so a
    web page elsewhere cannot reach the server through DNS rebinding).
    """
    if api_key is not None and not api_key:
        raise InputError("the API key is empty; give a key, or None for no key")
    if cors_origins and {"*", "null"} & set(cors_origins) and api_key is None:
        raise InputError(CORS_ANY_NEEDS_KEY)
    # Questions and hand-written queries run on threads of their own: slow queries filling every
    # thread can never keep a question from its at-once 503 when the model's line is full.
    asks = ThreadPoolExecutor(max_workers=service.gate.max_queue + 4, thread_name_prefix="slimsql-ask")
    queries = ThreadPoolExecutor(max_workers=service.max_queries, thread_name_prefix="slimsql-sql")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        for executor in (asks, queries):
            executor.shutdown(wait=False, cancel_futures=True)

    # FastAPIOffline: the API docs at /docs with Swagger UI's files served locally (no CDN)
    app = FastAPIOffline(title="slimsql", version=_version(), lifespan=lifespan,
                  description="Ask your databases questions in plain language: strict, read-only SQL "
                              "from a small local model.")
    app.state.service = service
    # Pure ASGI middlewares only (Starlette's BaseHTTPMiddleware, behind @app.middleware, hides the
    # client's disconnect from request.is_disconnected()). The last added runs first: no framing,
    # body size, Host, CORS (so a preflight, which carries no key, is answered), the key, JSON only.
    app.add_middleware(JSONOnly)
    if api_key is not None:
        app.add_middleware(APIKey, key=api_key)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", API_KEY_HEADER])
    if allowed_hosts:
        app.add_middleware(HostCheck, allowed_hosts=allowed_hosts)
    app.add_middleware(BodyLimit, limit=max_body)
    app.add_middleware(NoFraming)

    @app.exception_handler(SlimsqlError)
    async def on_slimsql_error(request: Request, err: SlimsqlError):
        status, code = next((s, c) for cls, s, c in ERRORS if isinstance(err, cls))
        headers = {"Retry-After": str(err.retry_after)} if isinstance(err, Busy) else None
        extra: dict[str, Any] = {}
        if getattr(err, "sql", None):
            extra["sql"] = err.sql
        if getattr(err, "trace", None) is not None:
            extra["trace"] = err.trace.to_dict()
        return error_response(status, code, str(err), headers, **extra)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error_response(422, "invalid_request", f"{where or 'request'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, err: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(err.status_code, "http_error")
        return error_response(err.status_code, code, str(err.detail))

    @app.exception_handler(Exception)
    async def on_bug(request: Request, err: Exception):  # a bug: one line, no stack trace to the client
        return error_response(500, "internal", f"unexpected {type(err).__name__}")

    async def in_thread(request: Request, executor: ThreadPoolExecutor,
                        work: Callable[[threading.Event], Any]) -> Any:
        """Run ``work`` on one of ``executor``'s threads; if the client disconnects meanwhile, cancel it."""
        cancelled = threading.Event()
        future = asyncio.get_running_loop().run_in_executor(executor, work, cancelled)
        try:
            while not (await asyncio.wait({future}, timeout=0.25))[0]:
                if await request.is_disconnected():
                    raise Cancelled("the client went away")
        except BaseException:  # the client went away, or this task was cancelled (server shutdown)
            cancelled.set()  # the work stops at its next step; nobody waits for its answer
            future.add_done_callback(lambda f: f.cancelled() or f.exception())  # consume its error quietly
            raise
        return future.result()

    @app.get("/v1/health")
    def health() -> dict:
        return service.health()

    @app.get("/v1/databases")
    def databases() -> dict:
        return {"databases": service.list_databases()}

    @app.get("/v1/databases/{name}")
    def schema(name: str) -> dict:
        return service.describe_schema(name)

    @app.get("/v1/models")
    def models() -> dict:
        return {"models": [service.model()]}

    @app.post("/v1/ask")
    async def ask(body: AskIn, request: Request) -> dict:
        history = [Turn(t.question, t.sql) for t in body.history]
        return await in_thread(request, asks, lambda cancelled: service.ask(
            body.db, body.question, history=history, max_rows=body.max_rows, timeout=body.timeout,
            cancelled=cancelled))

    @app.post("/v1/sql")
    async def sql(body: SqlIn, request: Request) -> dict:
        return await in_thread(request, queries, lambda cancelled: service.run_sql(
            body.db, body.sql, max_rows=body.max_rows, timeout=body.timeout, cancelled=cancelled))

    # teaching: the database's knowledge file (slimsql teach); the same key and Host rules as every /v1 route
    @app.get("/v1/knowledge/{name}")
    def knowledge(name: str) -> dict:
        return service.knowledge(name)

    @app.post("/v1/knowledge/examples")
    async def teach_example(body: ExampleIn, request: Request) -> dict:
        return await in_thread(request, queries, lambda cancelled: service.teach(
            body.db, example=(body.question, body.sql)))

    @app.post("/v1/knowledge/notes")
    def teach_note(body: NoteIn) -> dict:
        return service.teach(body.db, note=body.text)

    @app.post("/v1/knowledge/descriptions")
    def teach_description(body: DescriptionIn) -> dict:
        return service.teach(body.db, describe=(body.target, body.text, body.synonyms))

    @app.post("/v1/knowledge/remove")
    def forget(body: ForgetIn) -> dict:
        return service.forget(body.db, body.id)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _version() -> str:
    from .. import __version__

    return __version__
