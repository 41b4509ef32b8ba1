"""The ``slimsql`` command: begin loading the model, then import the rest and run.

A new ``slimsql ask`` process spends about half a second importing Python modules
(sqlglot, rich, the answering road) and about half a second in llama.cpp loading
the model, and each question is a new process. The load is C code that runs
without the GIL, so this entry point starts it in a thread
(:func:`slimsql.backends.llama_cpp.preload`) before it imports the command line,
and the two overlap on a machine's second core. Only the commands that load a
model at once (``ask``, ``chat``) with the default backend and a registry model
do this; ``SLIMSQL_PRELOAD=0`` switches it off.
"""

from __future__ import annotations

import argparse
import os
import sys

#: commands that load the model as soon as their arguments are read
PRELOADED_COMMANDS = ("ask", "chat")


def run() -> None:
    try:
        _preload(sys.argv[1:])
        from .cli import run as run_cli
    except KeyboardInterrupt:  # before the command line's own handler is in place
        os._exit(130)
    run_cli()


class _Malformed(Exception):
    """An option the peek cannot read: the real parser will say what is wrong, once."""


class _Peek(argparse.ArgumentParser):
    def error(self, message: str):
        raise _Malformed(message)


def command_named(argv: list[str]) -> str | None:
    """The subcommand a command line names: its first word that is not an option (the
    top-level parser takes no option with a value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def _preload(argv: list[str]) -> bool:
    """Start the model's load if this command line will want it; True if started."""
    if os.environ.get("SLIMSQL_PRELOAD", "1").lower() in ("0", "off", "no", "false"):
        return False
    if command_named(argv) not in PRELOADED_COMMANDS or "-h" in argv or "--help" in argv:
        return False
    peek = _Peek(add_help=False)  # the options that decide the load; the real parser comes later
    peek.add_argument("--model")
    peek.add_argument("--backend", default="llama-cpp")
    peek.add_argument("--threads", type=int)
    try:
        known, _ = peek.parse_known_args(argv)
    except _Malformed:
        return False
    if known.backend != "llama-cpp" or (known.threads is not None and known.threads < 1):
        return False
    try:
        from .backends import llama_cpp

        return llama_cpp.preload(known.model, known.threads)
    except Exception:  # noqa: BLE001 - not a registry model, no llama-cpp-python...: the command loads as usual
        return False
