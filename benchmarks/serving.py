"""A ``slimsql serve`` process on loopback for the server benchmarks (started, waited for, stopped)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import httpx

SLIMSQL = str(Path(sys.executable).parent / "slimsql")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    """Resident memory of a process (Linux /proc), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def server(dbs: Sequence[Path], args: Sequence[str] = (), *, start_timeout: float = 600.0,
           log: Path | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """``slimsql serve`` on 127.0.0.1 with ``dbs``; yields (base URL, process) once /v1/health answers."""
    port = free_port()
    command = [SLIMSQL, "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    for db in dbs:
        command += ["--db", str(db)]
    sink = open(log, "w") if log else subprocess.DEVNULL
    proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=os.environ.copy())
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"slimsql serve exited with {proc.returncode}" + (f"; see {log}" if log else ""))
            try:
                if httpx.get(base + "/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("slimsql serve did not start in time")
            time.sleep(0.5)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if log:
            sink.close()
