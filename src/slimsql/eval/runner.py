"""Run a model over a dataset: the question's road, scored, resumable, overlapped.

The main thread renders prompts and generates; one worker thread executes the
prediction and the gold query (read-only, time limit, row cap: the core's
execution layer) and scores them, while the model already generates the next
example. Each scored example is appended to ``predictions.jsonl`` at once, so an
interrupted run resumes where it stopped. No single example (a crash, a timeout,
odd bytes in a value) can stop the run.

With ``parallel > 1`` and a backend that takes concurrent calls (a server:
``--backend openai``), that many examples are generated at once, each in its
own thread with its own database connections; records are then written in the
order they finish.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .. import infer
from ..backends import Backend, is_concurrent
from ..db import Engine, open_database
from ..errors import InputError, SlimsqlError
from ..knowledge import Knowledge
from ..schema import Schema
from . import exact, metrics
from .datasets import Dataset, Example
from .scoring import EVAL_MAX_ROWS, Scorer  # noqa: F401  (Scorer: part of this module's API)
from .store import Record, RunFolder, load_records  # noqa: F401  (load_records: part of this module's API)

#: How results are compared: Spider's test-suite rule, BIRD's set rule, defog sql-eval's subset rule.
SEMANTICS = ("spider", "bird", "sqleval")


@dataclass(frozen=True)
class RunConfig:
    """What a run evaluates; written to config.json so a resume cannot mix runs.

    ``settings`` is :meth:`slimsql.infer.Settings.describe`: every setting that shapes
    an answer (preset, strategy, n, temperature, max tokens, sample values, ...).
    Runs made before it was recorded have ``settings = None``.
    """

    dataset: str
    split: str
    model: str
    backend: str
    style: str
    semantics: str = "spider"
    temperature: float = 0.0
    candidates: int = 1
    timeout: float = 30.0
    limit: int | None = None
    seed: int = 0
    preset: str | None = None
    settings: dict[str, Any] | None = None
    db_ids: list[str] | None = None
    knowledge: str | None = None  # what was taught (--teach N, --knowledge-dir): see slimsql.eval.taught

    def __post_init__(self) -> None:
        if self.semantics not in SEMANTICS:
            raise InputError(f"--semantics must be one of {', '.join(SEMANTICS)}, got {self.semantics!r}")

    @classmethod
    def for_settings(cls, settings: infer.Settings, **fields: Any) -> "RunConfig":
        return cls(style=settings.style, temperature=settings.generation.temperature,
                   candidates=settings.generation.n, timeout=settings.timeout, settings=settings.describe(),
                   **fields)


class Databases:
    """Read-only connections of the generating threads, one per database file and thread, and
    their schemas. Per thread because a connection serialises its callers: a query waiting for
    another thread's would lose part of its time limit to the wait."""

    def __init__(self, settings: infer.Settings):
        self.settings = settings
        self._local = threading.local()
        self._every: list[Engine] = []  # of all threads, for close()
        self._lock = threading.Lock()

    def get(self, path: Path) -> Engine:
        mine: dict[Path, Engine] | None = getattr(self._local, "open", None)
        if mine is None:
            mine = self._local.open = {}
        if path not in mine:
            mine[path] = open_database(path, timeout=self.settings.timeout, max_rows=self.settings.max_rows)
            with self._lock:
                self._every.append(mine[path])
        return mine[path]

    def schema(self, path: Path, samples: int | None = None) -> Schema:
        return self.get(path).schema(self.settings.samples if samples is None else samples)

    def close(self) -> None:
        with self._lock:
            every, self._every = self._every, []
            self._local = threading.local()
        for db in every:
            db.close()


def _propose(example: Example, backend: Backend, settings: infer.Settings, dbs: Databases,
             record: Record, knowledge: dict[str, Knowledge] | None = None) -> Schema:
    """The question's road for one example (a generating thread): exactly what ``slimsql ask`` runs,
    with what was taught about its database (``knowledge``, by db_id)."""
    path = example.db_paths[0]
    try:
        schema = dbs.schema(path)
        start = time.perf_counter()
        solution = infer.solve(dbs.get(path), backend, example.asked, settings, schema=schema,
                               knowledge=(knowledge or {}).get(example.db_id))
    except SlimsqlError as err:  # e.g. an unreadable database or a prompt too long
        record.extract_error = f"{type(err).__name__}: {err}"
        return Schema(tables=())
    trace = solution.trace
    shown = trace.winner or next((t for t in trace.trials if t.sql is not None), None) or trace.trials[0]
    timings = solution.timings
    record.gen_s = round(timings.get("generation", 0.0) + timings.get("repair", 0.0), 4)
    record.road_s = round(time.perf_counter() - start, 4)
    record.raw, record.prompt_tokens = shown.raw, shown.prompt_tokens
    record.completion_tokens, record.candidates = solution.tokens()["completion"], len(trace.trials)
    record.trace = trace.to_dict()
    if shown.sql is not None:
        record.pred_sql, record.fixes, record.repairs = shown.sql, list(shown.fixes), list(shown.repairs)
        record.strict = not (set(shown.fixes) - {"semicolon"})
    else:
        record.extract_error = shown.error
    return schema


def _new_record(example: Example) -> Record:
    record = Record(id=example.id, db_id=example.db_id, question=example.question,
                    gold_sql=example.gold_sql, executable=example.executable)
    if not example.executable:
        record.missing_db = True
        try:
            record.hardness = exact.hardness(example.gold_sql)
        except ValueError:
            record.hardness = None
    return record


def _generate_parallel(todo: list[Example], parallel: int, propose: Callable[[Example, Record], Schema],
                       scoring: ThreadPoolExecutor, write: Callable[[Record], None],
                       score_and_write: Callable[[Example, Schema, Record], None], timing: dict[str, float]) -> None:
    """Generate ``parallel`` examples at once; each goes to the one scoring thread (``scoring``)
    as soon as it is done, which writes it. Every record is written by that thread, so the
    file sees one writer; at most ``parallel`` generated examples wait for scoring at a time."""
    queued: list[Future] = []  # scoring jobs, oldest first
    running: set[Future] = set()

    def generate(example: Example, record: Record) -> tuple[Example, Schema, Record]:
        return example, propose(example, record), record

    def hand_over(future: Future) -> None:
        example, schema, record = future.result()
        timing["generation_s"] += record.gen_s or 0.0
        queued.append(scoring.submit(score_and_write, example, schema, record))
        while len(queued) > parallel:  # scoring lags behind: wait for it, memory stays bounded
            queued.pop(0).result()

    def collect(until: int) -> None:
        while len(running) > until:
            for future in wait(running, return_when=FIRST_COMPLETED).done:
                running.discard(future)
                hand_over(future)

    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="slimsql-generate") as pool:
        try:
            for example in todo:
                record = _new_record(example)
                if not example.executable:
                    queued.append(scoring.submit(write, record))
                    continue
                collect(parallel - 1)  # a free slot: every submitted example starts at once
                running.add(pool.submit(generate, example, record))
            collect(0)
            for future in queued:
                future.result()
        finally:  # on Ctrl-C or an error too: the examples being generated are finished, scored and saved
            wait(running)
            for future in running:
                if future.exception() is None:
                    hand_over(future)
            for future in queued:
                if not future.cancelled():
                    future.exception()  # waits; an error here was raised above already


def check_parallel(backend: Backend, parallel: int) -> None:
    """``parallel > 1`` needs a backend whose ``generate`` may run in several threads at once."""
    if parallel > 1 and not is_concurrent(backend):
        raise InputError(f"--parallel {parallel} needs a backend that takes concurrent calls, such as openai; "
                         f"the {getattr(backend, 'name', type(backend).__name__)} backend generates one "
                         "example at a time (use --parallel 1)")


def run(dataset: Dataset, backend: Backend, out: Path, config: RunConfig,
        settings: infer.Settings, show_progress: bool = True, parallel: int = 1,
        knowledge: dict[str, Knowledge] | None = None) -> dict[str, Any]:
    """Evaluate ``dataset``; ``parallel`` examples are generated at once (a concurrent backend only);
    ``knowledge``: what was taught about each database (by db_id)."""
    check_parallel(backend, parallel)
    folder = RunFolder(out)
    folder.start(config)
    records = folder.records()
    done = {r.id for r in records}
    # grouped by database (stable), so each schema prompt is evaluated once and then reused
    todo = sorted((ex for ex in dataset.examples if ex.id not in done), key=lambda ex: ex.db_id)
    scorer = Scorer(config.semantics, config.timeout)
    dbs = Databases(settings)
    timing = {"generation_s": 0.0, "scoring_s": 0.0}
    wall_start = time.perf_counter()
    state = {"ex": sum(r.ex for r in records if r.executable), "n": sum(r.executable for r in records)}

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), disable=not show_progress, transient=False)

    def describe() -> str:
        return f"EX {100 * state['ex'] / state['n']:.1f}%" if state["n"] else "EX  -  "

    with progress, ThreadPoolExecutor(max_workers=1) as pool, folder.appender() as sink:
        task = progress.add_task(describe(), total=len(dataset.examples), completed=len(done))

        def write(record: Record) -> None:
            sink.write(folder.line(record))
            sink.flush()
            records.append(record)
            timing["scoring_s"] += record.score_s or 0.0
            if record.executable:
                state["n"] += 1
                state["ex"] += record.ex
            progress.update(task, advance=1, description=describe())

        def score_and_write(example: Example, schema: Schema, record: Record) -> None:
            try:
                scorer.score(example, schema, record)
            except Exception as err:  # never let one example end the run
                record.score_error, record.ex, record.valid = f"{type(err).__name__}: {err}", False, False
            write(record)

        pending: Future | None = None
        try:
            if parallel > 1:
                _generate_parallel(todo, parallel, lambda ex, rec: _propose(ex, backend, settings, dbs, rec, knowledge),
                                   pool, write, score_and_write, timing)
            for example in todo if parallel == 1 else []:  # one at a time, in order
                record = _new_record(example)
                if not example.executable:
                    if pending:
                        pending.result()
                    write(record)
                    continue
                schema = _propose(example, backend, settings, dbs, record, knowledge)
                timing["generation_s"] += record.gen_s or 0.0
                if pending:
                    pending.result()  # keep one example in flight: order kept, memory bounded
                pending = pool.submit(score_and_write, example, schema, record)
        finally:
            if pending:  # on Ctrl-C too: the example in flight is scored and saved first
                pending.result()
            scorer.close()
            dbs.close()

    wall = time.perf_counter() - wall_start
    order = {ex.id: i for i, ex in enumerate(dataset.examples)}
    records.sort(key=lambda r: order.get(r.id, len(order)))
    summary = metrics.summarize(records)
    summary["dataset"] = {"name": dataset.name, "split": dataset.split, "missing_dbs": dataset.missing_dbs}
    summary["config"] = asdict(config)
    summary["timing"] = {"wall_s": round(wall, 2), "generation_s": round(timing["generation_s"], 2),
                         "scoring_s": round(timing["scoring_s"], 2), "examples_this_session": len(todo)}
    folder.write_metrics(summary)
    return summary


def rescore(dataset: Dataset, out: Path, config: RunConfig) -> dict[str, Any]:
    """Execute and score a run's stored predictions again with the current metric code.

    No generation: for when a metric changes after a run. The records keep what the
    model wrote; ``predictions.jsonl`` and ``metrics.json`` are rewritten.
    """
    folder = RunFolder(out)
    records = folder.records()
    if not records:
        raise InputError(f"{out} has no predictions to rescore")
    examples = {ex.id: ex for ex in dataset.examples}
    scorer, rescored = Scorer(config.semantics, config.timeout), []
    dbs = Databases(infer.Settings(samples=0))
    try:
        for record in records:
            example = examples.get(record.id)
            if example is None or not example.executable:
                rescored.append(record)
                continue
            rescored.append(scorer.score(example, dbs.schema(example.db_paths[0]), record.unscored()))
    finally:
        scorer.close()
        dbs.close()
    folder.replace_records(rescored)
    summary = folder.metrics() if folder.metrics_path.exists() else {}
    summary.update(metrics.summarize(rescored))
    folder.write_metrics(summary)
    return summary
