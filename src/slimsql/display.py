"""How the CLI shows things to people: rich tables, highlighted SQL, progress.

Results go to stdout; progress and errors go to stderr so ``--json`` output
stays machine-readable.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


#: Longest cell shown in a table; the rest is replaced by a marker with its size.
#: ``--json`` prints full values (within the engine's byte cap).
MAX_CELL_CHARS = 500
# C0 and C1 controls (tab and newline are kept), DEL, and the bidirectional
# overrides that can make text read differently from what it is.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with terminal control characters shown as escapes (``\\x1b``), never sent raw."""
    return _CONTROL.sub(_escape, text)


def human_bytes(size: int) -> str:
    for unit in ("bytes", "KB", "MB"):
        if size < 1000 or unit == "MB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} MB"  # pragma: no cover


def shorten(text: str, limit: int = MAX_CELL_CHARS) -> str:
    """Cut ``text`` at ``limit`` characters with a visible marker of what was left out."""
    if len(text) <= limit:
        return text
    rest = len(text[limit:].encode("utf-8", "replace"))
    return text[:limit] + f"…[+{human_bytes(rest)}]"


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"<blob {len(value)} bytes>"
    return visible(shorten(str(value)))


def json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def print_json(data: Any) -> None:
    print(json.dumps(data, default=json_default, ensure_ascii=False, indent=2))


def show_sql(sql: str) -> None:
    from rich.syntax import Syntax  # with pygments: imported only when SQL is shown, not for --json

    out.print(Syntax(visible(sql), "sql", theme="ansi_dark", word_wrap=True, background_color="default"))


def show_rows(columns: Sequence[str], rows: Iterable[Sequence[Any]], truncated: bool, footer: str = "",
              truncated_by: str = "rows") -> None:
    """A table of ``rows``; long cells are cut with a marker and control characters escaped."""
    rows = list(rows)
    table = Table(show_edge=True, header_style="bold")
    for i, name in enumerate(columns):
        table.add_column(Text(visible(shorten(str(name), 200)) if name else "?"), overflow="fold",
                         no_wrap=i == 0 and len(columns) > 1)
    for row in rows:
        table.add_row(*(Text(_cell(v)) for v in row))
    out.print(table)
    note = f"{len(rows)} row{'s' * (len(rows) != 1)}"
    if truncated and truncated_by == "bytes":
        note += f" (truncated at {len(rows)}: the result reached its size cap)"
    elif truncated:
        note += f" (truncated at {len(rows)}; raise --max-rows to see more)"
    out.print(Text(note + ("  " + visible(footer) if footer else ""), style="dim"))


def timings_line(timings: dict[str, float]) -> str:
    return "  ".join(f"{name} {seconds:.2f}s" for name, seconds in timings.items())


class ModelProgress:
    """Progress bar for assembling/verifying a model file; appears only when used."""

    def __init__(self, label: str = "Preparing model") -> None:
        self.label = label
        self._progress = None  # a rich Progress, made (and imported) only when a file is prepared
        self._task = None

    def __call__(self, done: int, total: int) -> None:
        if self._progress is None:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn(self.label), BarColumn(), DownloadColumn(),
                                      TimeRemainingColumn(), console=err, transient=True)
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=total)
        self._progress.update(self._task, completed=done)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class ModelLoading:
    """First a bar while a model file is assembled or verified, then a spinner while it loads.

    rich allows one live display at a time, so the two never overlap: backends call
    ``progress`` while resolving the file and ``on_load`` once it is resolved.
    """

    def __init__(self) -> None:
        self.progress = ModelProgress("Preparing model file (first use)")
        self._status = None

    def on_load(self, resolved) -> None:
        self.progress.close()
        self._status = err.status(f"Loading {resolved.name}...")
        self._status.start()

    def done(self) -> None:
        self.progress.close()
        if self._status is not None:
            self._status.stop()
            self._status = None

    def options(self) -> dict:
        return {"progress": self.progress, "on_load": self.on_load}


def show_trace(trace: Any) -> None:
    """Every candidate of one question: where it came from, what running it gave, its votes."""
    table = Table(show_edge=True, header_style="bold", title=f"{trace.strategy}: {trace.note}", title_justify="left")
    for name in ("#", "from", "result", "votes", "SQL"):
        table.add_column(name, overflow="fold")
    for t in trace.trials:
        mark = "*" if t.index == trace.chosen else ""
        origin = t.origin + (f" {t.round}" if t.round else "")
        result = f"{t.rows} rows" if t.ran else (t.error_kind or "error")
        sql = " ".join((t.sql or t.raw or "").split())
        if t.repairs:
            sql += "  [fixed: " + "; ".join(t.repairs) + "]"
        if t.error and not t.ran:
            sql += f"  [{t.error}]"
        table.add_row(f"{t.index}{mark}", origin, result, str(t.votes or ""), Text(sql))
    err.print(table)
    if trace.examples or trace.notes:  # what was taught and shown with the question (slimsql teach)
        taught = [f"examples {', '.join(trace.examples)}" if trace.examples else "",
                  f"notes {', '.join(trace.notes)}" if trace.notes else ""]
        err.print(Text("taught: " + "; ".join(p for p in taught if p), style="dim"))
