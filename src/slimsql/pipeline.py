"""One question's road, as small steps a reader can see at once::

    database --introspect--> Schema --render--> messages --generate--> candidates
      --extract--> SQL --check + execute (read-only)--> Answer

Each step is a function of typed values; :func:`ask` only sequences them and
times them. Evaluation runs the same steps over a benchmark.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .backends import Backend, Candidate, GenerationConfig, Message
from .db import Database, Result
from .errors import InputError, NoSQLError, SlimsqlError
from .prompts import DEFAULT_STYLE, get_style
from .schema import Schema
from .sql import Extraction, ExtractionStats, extract

MAX_QUESTION_CHARS = 2000


@dataclass(frozen=True)
class Settings:
    """Everything that shapes an answer besides the database and the model."""

    style: str = DEFAULT_STYLE
    samples: int = 3  # example values per text column in the schema
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    max_rows: int = 1000
    timeout: float = 10.0

    def __post_init__(self) -> None:
        get_style(self.style)
        if self.max_rows < 1:
            raise InputError(f"--max-rows must be at least 1, got {self.max_rows}")
        if self.timeout <= 0:
            raise InputError(f"--timeout must be positive, got {self.timeout}")


@dataclass
class Answer:
    question: str
    sql: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    truncated: bool
    model: str
    timings: dict[str, float]
    fixes: tuple[str, ...] = ()  # clean-ups the model output needed
    raw: str = ""  # the chosen candidate's text as the model wrote it
    tokens: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["columns"] = list(self.columns)
        data["rows"] = [list(r) for r in self.rows]
        return data

    def __str__(self) -> str:
        return self.sql + "\n\n" + format_table(self.columns, self.rows, self.truncated)


def format_table(columns: tuple[str, ...], rows: list[tuple], truncated: bool = False) -> str:
    """A plain-text table (the CLI draws a richer one)."""
    cells = [[str(c) for c in columns]] + [["NULL" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    lines.append(f"({len(rows)} row{'s' * (len(rows) != 1)}{', truncated' if truncated else ''})")
    return "\n".join(lines)


# -- the steps -----------------------------------------------------------------

def check_question(question: str) -> str:
    if question is None or not question.strip():
        raise InputError("the question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise InputError(f"the question is too long ({len(question)} characters; at most {MAX_QUESTION_CHARS})")
    return question.strip()


def render(schema: Schema, question: str, settings: Settings) -> list[Message]:
    return get_style(settings.style).messages(schema, question, schema.dialect)


def extract_all(candidates: list[Candidate], dialect: str) -> list[Extraction | NoSQLError]:
    out: list[Extraction | NoSQLError] = []
    for candidate in candidates:
        try:
            out.append(extract(candidate.text, dialect))
        except NoSQLError as err:
            out.append(err)
    return out


def execute_first(db: Database, candidates: list[Candidate], extractions: list[Extraction | NoSQLError],
                  settings: Settings) -> tuple[int, Result]:
    """Run candidates in order; the first that passes the checks and runs wins.

    Raises the first candidate's error when none runs (with ``.sql`` set when
    there was SQL), so a single greedy answer reports exactly what went wrong.
    """
    first_error: SlimsqlError | None = None
    tried: set[str] = set()
    for index, extraction in enumerate(extractions):
        if isinstance(extraction, NoSQLError):
            first_error = first_error or extraction
            continue
        if extraction.sql in tried:  # identical candidates (greedy n > 1) fail identically
            continue
        tried.add(extraction.sql)
        try:
            return index, db.execute(extraction.sql, max_rows=settings.max_rows, timeout=settings.timeout)
        except SlimsqlError as err:
            err.sql = extraction.sql
            first_error = first_error or err
    assert first_error is not None
    raise first_error


def ask(db: Database, backend: Backend, question: str, settings: Settings = Settings(),
        stats: ExtractionStats | None = None) -> Answer:
    """Answer one question: the whole road, timed per stage."""
    question = check_question(question)
    clock = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 4)
        clock = now

    schema = db.schema(settings.samples)
    lap("schema")
    messages = render(schema, question, settings)
    candidates = backend.generate(messages, settings.generation)
    lap("generation")
    extractions = extract_all(candidates, schema.dialect)
    if stats is not None:
        for extraction in extractions:
            stats.record(None if isinstance(extraction, NoSQLError) else extraction)
    index, result = execute_first(db, candidates, extractions, settings)
    lap("execution")
    timings["total"] = round(sum(timings.values()), 4)
    chosen, extraction = candidates[index], extractions[index]
    return Answer(question=question, sql=extraction.sql, columns=result.columns, rows=result.rows,
                  truncated=result.truncated, model=backend.model_name, timings=timings,
                  fixes=extraction.fixes, raw=chosen.text,
                  tokens={"prompt": chosen.prompt_tokens, "completion": chosen.completion_tokens})
