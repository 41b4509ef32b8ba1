"""Shared pieces of the server tests (tests/test_serve_*.py): a scripted model that records
how it is called, a real uvicorn server in a thread, and the checks every error body must pass."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from slimsql.backends.scripted import ScriptedBackend

from .conftest import sha256


class Model:
    """The replies of a scripted model, and a record of its calls.

    ``reply`` is SQL text or a function of the messages. With ``block=True`` every call waits
    until :attr:`release` is set; :attr:`started` counts calls that began (acquire it to wait for
    one). ``max_active`` is the most calls that ever ran at the same time.
    """

    def __init__(self, reply: str | Callable[[list], Any] = "SELECT count(*) AS n FROM products", *,
                 block: bool = False, delay: float = 0.0):
        self.reply, self.delay = reply, delay
        self.release = threading.Event()
        if not block:
            self.release.set()
        self.started = threading.Semaphore(0)
        self.calls = self.active = self.max_active = 0
        self._lock = threading.Lock()
        self.backend = ScriptedBackend(replies=self)

    def __call__(self, messages, config):
        with self._lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        self.started.release()
        try:
            if self.delay:
                time.sleep(self.delay)
            assert self.release.wait(30), "the test never released the model"
            return self.reply(messages) if callable(self.reply) else self.reply
        finally:
            with self._lock:
                self.active -= 1

    def wait_started(self, timeout: float = 5.0) -> None:
        assert self.started.acquire(timeout=timeout), "the model was not called"


def wait_for(condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@contextmanager
def live_server(app):
    """``app`` served by uvicorn on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=3))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), 10, "the server to start")
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def raw_post(base_url: str, path: str, body: bytes) -> socket.socket:
    """Send a POST over a plain socket (so the test can hang up on it); returns the socket."""
    host, port = base_url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=10)
    conn.sendall(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                 % (path.encode(), host.encode(), len(body)) + body)
    return conn


def assert_error(response, status: int, code: str) -> dict:
    """An error is JSON ``{"error": {"code", "message"}}``: this status and code, a one-line
    message, no stack trace anywhere in the body."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert error["code"] == code, error
    message = error["message"]
    assert isinstance(message, str) and message.strip(), error
    assert "\n" not in message and "\r" not in message and len(message) <= 1000, message
    assert "Traceback" not in response.text and 'File "' not in response.text
    return error


def folder_state(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file in ``folder``: its SHA-256 and modification time."""
    return {p.name: (sha256(p), p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()}
