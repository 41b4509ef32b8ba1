"""Run a model over a dataset: the question's road, scored, resumable, overlapped.

The main thread renders prompts and generates; one worker thread executes the
prediction and the gold query (read-only, time limit, row cap: the core's
execution layer) and scores them, while the model already generates the next
example. Each scored example is appended to ``predictions.jsonl`` at once, so an
interrupted run resumes where it stopped. No single example (a crash, a timeout,
odd bytes in a value) can stop the run.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .. import pipeline
from ..backends import Backend
from ..db.sqlite import SQLiteDatabase
from ..errors import InputError, NoSQLError, QueryError, SlimsqlError, UnsafeSQLError
from ..schema import Schema
from ..sql import extract
from . import exact, execution, metrics, official
from .datasets import Dataset, Example

EVAL_MAX_ROWS = 100_000


@dataclass(frozen=True)
class RunConfig:
    """What a run evaluates; written to config.json so a resume cannot mix runs."""

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

    def __post_init__(self) -> None:
        if self.semantics not in ("spider", "bird"):
            raise InputError(f"--semantics must be spider or bird, got {self.semantics!r}")


def _question(example: Example) -> str:
    return f"{example.question}\nHint: {example.evidence}" if example.evidence else example.question


class Scorer:
    """Executes and scores on the worker thread; owns that thread's connections."""

    def __init__(self, semantics: str, timeout: float):
        self.semantics, self.timeout = semantics, timeout
        self._dbs: dict[Path, SQLiteDatabase] = {}
        self._keys: dict[int, tuple[Schema, dict[str, str]]] = {}

    def db(self, path: Path) -> SQLiteDatabase:
        if path not in self._dbs:
            self._dbs[path] = SQLiteDatabase(path, timeout=self.timeout, max_rows=EVAL_MAX_ROWS)
        return self._dbs[path]

    def _key_map(self, schema: Schema) -> dict[str, str]:
        """Foreign-key column map of a schema, computed once per schema."""
        key = id(schema)
        if key not in self._keys:
            self._keys[key] = (schema, exact.key_map_from_schema(schema))  # keep schema alive: id stays unique
        return self._keys[key][1]

    def _rows(self, path: Path, sql: str):
        return self.db(path).execute(sql).rows

    def score(self, example: Example, schema: Schema, record: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        gold_sql = example.gold_sql
        keys = self._key_map(schema)
        try:
            gold_query = exact.parse_query(gold_sql, schema, keys)  # parsed once: hardness and EM
            record["hardness"] = exact.hardness(gold_query)
        except ValueError:
            gold_query, record["hardness"] = None, None
        try:
            gold = [self._rows(p, gold_sql) for p in example.db_paths]
        except SlimsqlError as err:
            record.update(gold_error=str(err), ex=False, ts=None, valid=False, em=None, em_official=None,
                          schema_ok=None)
            return self._finish(record, start)
        pred_sql = record.get("pred_sql")
        record.update(valid=False, ex=False, ts=False if len(example.db_paths) > 1 else None, schema_ok=False)
        if gold_query is None:
            record["em"] = None  # the gold query itself is outside what the matcher parses
        elif pred_sql:
            try:
                record["em"] = exact.exact_match_queries(exact.parse_query(pred_sql, schema, keys), gold_query)
            except ValueError:
                record["em"] = False
        else:
            record["em"] = False
        record["em_official"] = official.verdict(pred_sql, gold_sql, schema, keys)
        if pred_sql is None:
            return self._finish(record, start)
        record["schema_ok"] = metrics.schema_adherence(pred_sql, schema)
        try:
            predicted = [self._rows(p, pred_sql) for p in example.db_paths]
        except UnsafeSQLError as err:
            record.update(unsafe=str(err))
            return self._finish(record, start)
        except QueryError as err:
            record.update(exec_error=str(err))
            return self._finish(record, start)
        record["valid"] = True
        record["ex"] = execution.results_match(gold[0], predicted[0], gold_sql=gold_sql, semantics=self.semantics)
        if len(example.db_paths) > 1:
            record["ts"] = execution.test_suite_match(list(zip(gold, predicted)), gold_sql=gold_sql,
                                                      semantics=self.semantics)
        return self._finish(record, start)

    @staticmethod
    def _finish(record: dict[str, Any], start: float) -> dict[str, Any]:
        record["score_s"] = round(time.perf_counter() - start, 4)
        record["category"] = metrics.categorize(record) if record.get("executable") and not record.get(
            "gold_error") else None
        return record

    def close(self) -> None:
        for db in self._dbs.values():
            db.close()


def load_records(path: Path) -> list[dict[str, Any]]:
    """Scored records of a run; a torn last line (a crash mid-write) is ignored."""
    records = []
    if path.exists():
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
    return records


def _check_config(out: Path, config: RunConfig) -> None:
    path = out / "config.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved != asdict(config):
            differs = sorted(k for k in saved if saved.get(k) != asdict(config).get(k))
            raise InputError(f"{out} holds a different run (differs in: {', '.join(differs)}); "
                             "use another --out folder")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(config), indent=2) + "\n")


def _schema(path: Path, samples: int, schemas: dict[Path, Schema]) -> Schema:
    """Introspect each database once per run (a short-lived read-only connection)."""
    if path not in schemas:
        with SQLiteDatabase(path) as db:
            schemas[path] = db.schema(samples)
    return schemas[path]


def _generate(example: Example, backend: Backend, settings: pipeline.Settings, schemas: dict[Path, Schema],
              record: dict[str, Any]) -> Schema:
    """The road up to extraction for one example (main thread); fills ``record``."""
    path = example.db_paths[0]
    try:
        schema = _schema(path, settings.samples, schemas)
        messages = pipeline.render(schema, _question(example), settings)
        start = time.perf_counter()
        candidate = backend.generate(messages, settings.generation)[0]
        record.update(gen_s=round(time.perf_counter() - start, 4), raw=candidate.text,
                      prompt_tokens=candidate.prompt_tokens, completion_tokens=candidate.completion_tokens)
        extraction = extract(candidate.text, schema.dialect)
        record.update(pred_sql=extraction.sql, fixes=list(extraction.fixes), strict=extraction.strict)
    except NoSQLError as err:
        record["extract_error"] = str(err)
    except SlimsqlError as err:  # e.g. an unreadable database or a prompt too long
        record["extract_error"] = f"{type(err).__name__}: {err}"
    return schemas.get(path) or Schema(tables=())


def run(dataset: Dataset, backend: Backend, out: Path, config: RunConfig,
        settings: pipeline.Settings, show_progress: bool = True) -> dict[str, Any]:
    out = Path(out)
    _check_config(out, config)
    predictions = out / "predictions.jsonl"
    records = load_records(predictions)
    done = {r["id"] for r in records}
    todo = [ex for ex in dataset.examples if ex.id not in done]
    scorer = Scorer(config.semantics, config.timeout)
    schemas: dict[Path, Schema] = {}
    timing = {"generation_s": 0.0, "scoring_s": 0.0}
    wall_start = time.perf_counter()
    state = {"ex": sum(bool(r.get("ex")) for r in records if r.get("executable")),
             "n": sum(bool(r.get("executable")) for r in records)}

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), disable=not show_progress, transient=False)

    def describe() -> str:
        return f"EX {100 * state['ex'] / state['n']:.1f}%" if state["n"] else "EX  -  "

    with progress, ThreadPoolExecutor(max_workers=1) as pool, predictions.open("a", encoding="utf-8") as sink:
        task = progress.add_task(describe(), total=len(dataset.examples), completed=len(done))

        def write(record: dict[str, Any]) -> None:
            sink.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            sink.flush()
            records.append(record)
            timing["scoring_s"] += record.get("score_s") or 0.0
            if record.get("executable"):
                state["n"] += 1
                state["ex"] += bool(record.get("ex"))
            progress.update(task, advance=1, description=describe())

        def score_and_write(example: Example, schema: Schema, record: dict[str, Any]) -> None:
            try:
                record = scorer.score(example, schema, record)
            except Exception as err:  # never let one example end the run
                record.update(score_error=f"{type(err).__name__}: {err}", ex=False, valid=False)
            write(record)

        pending: Future | None = None
        try:
            for example in todo:
                record: dict[str, Any] = {"id": example.id, "db_id": example.db_id, "question": example.question,
                                          "gold_sql": example.gold_sql, "executable": example.executable,
                                          "strict": False}
                if not example.executable:
                    record["missing_db"] = True
                    try:
                        record["hardness"] = exact.hardness(example.gold_sql)
                    except ValueError:
                        record["hardness"] = None
                    if pending:
                        pending.result()
                    write(record)
                    continue
                schema = _generate(example, backend, settings, schemas, record)
                timing["generation_s"] += record.get("gen_s") or 0.0
                if pending:
                    pending.result()  # keep one example in flight: order kept, memory bounded
                pending = pool.submit(score_and_write, example, schema, record)
        finally:
            if pending:  # on Ctrl-C too: the example in flight is scored and saved first
                pending.result()
            scorer.close()

    wall = time.perf_counter() - wall_start
    order = {ex.id: i for i, ex in enumerate(dataset.examples)}
    records.sort(key=lambda r: order.get(r["id"], len(order)))
    summary = metrics.summarize(records)
    summary["dataset"] = {"name": dataset.name, "split": dataset.split, "missing_dbs": dataset.missing_dbs}
    summary["config"] = asdict(config)
    summary["timing"] = {"wall_s": round(wall, 2), "generation_s": round(timing["generation_s"], 2),
                         "scoring_s": round(timing["scoring_s"], 2), "examples_this_session": len(todo)}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


#: What generation produced; everything else in a record is scoring, redone by rescore().
GENERATED = ("id", "db_id", "question", "gold_sql", "executable", "missing_db", "strict", "raw", "pred_sql",
             "fixes", "extract_error", "gen_s", "prompt_tokens", "completion_tokens")


def rescore(dataset: Dataset, out: Path, config: RunConfig) -> dict[str, Any]:
    """Execute and score a run's stored predictions again with the current metric code.

    No generation: for when a metric changes after a run. The records keep what the
    model wrote; ``predictions.jsonl`` and ``metrics.json`` are rewritten.
    """
    out = Path(out)
    records = load_records(out / "predictions.jsonl")
    if not records:
        raise InputError(f"{out} has no predictions to rescore")
    examples = {ex.id: ex for ex in dataset.examples}
    scorer, schemas, rescored = Scorer(config.semantics, config.timeout), {}, []
    try:
        for record in records:
            example = examples.get(record["id"])
            if example is None or not example.executable:
                rescored.append(record)
                continue
            base = {k: record[k] for k in GENERATED if k in record}
            rescored.append(scorer.score(example, _schema(example.db_paths[0], 0, schemas), base))
    finally:
        scorer.close()
    tmp = out / "predictions.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rescored), encoding="utf-8")
    tmp.replace(out / "predictions.jsonl")
    metrics_path = out / "metrics.json"
    summary = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    summary.update(metrics.summarize(rescored))
    metrics_path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary
