"""Scoring one prediction: (example, predicted SQL, database) -> :class:`Score`.

The one place that decides whether a predicted query is right. ``slimsql eval``
scores every example with it, and the fine-tuning reward calls :func:`score`, so
what is measured and what is optimized cannot drift apart. Execution goes
through the core's read-only layer (allow-list, time limit, row cap).
"""

from __future__ import annotations

import time
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path

from ..db import Engine, open_database, rules_for
from ..errors import QueryError, SlimsqlError, UnsafeSQLError
from ..schema import Schema
from . import exact, execution, metrics, official, sqleval
from .datasets import Example
from .store import Record

EVAL_MAX_ROWS = 100_000


@dataclass(frozen=True)
class Score:
    ex: bool = False  # execution accuracy (Spider or BIRD semantics)
    valid: bool = False  # the prediction ran
    em: bool | None = None  # exact set match (normalized); None when the gold query is outside the matcher
    em_official: bool | None = None  # the official Spider script's exact-match verdict, reproduced
    ts: bool | None = None  # test-suite accuracy, when the example has several databases
    schema_ok: bool | None = None  # every table and column it names exists
    hardness: str | None = None  # Spider hardness of the gold query
    exec_error: str | None = None
    unsafe: str | None = None
    gold_error: str | None = None  # the gold query itself failed: the example is not scored



class Scorer:
    """Executes and scores; owns its read-only connections (one thread at a time)."""

    def __init__(self, semantics: str = "spider", timeout: float = 30.0):
        self.semantics, self.timeout = semantics, timeout
        self._dbs: dict[Path, Engine] = {}
        self._keys: dict[int, tuple[Schema, dict[str, str]]] = {}

    def db(self, path: Path) -> Engine:
        if path not in self._dbs:
            self._dbs[path] = open_database(path, timeout=self.timeout, max_rows=EVAL_MAX_ROWS)
        return self._dbs[path]

    def _key_map(self, schema: Schema) -> dict[str, str]:
        """Foreign-key column map of a schema, computed once per schema."""
        key = id(schema)
        if key not in self._keys:
            self._keys[key] = (schema, exact.key_map_from_schema(schema))  # keep schema alive: id stays unique
        return self._keys[key][1]

    def _rows(self, path: Path, sql: str):
        return self.db(path).execute(sql).rows

    def score_sql(self, example: Example, schema: Schema, pred_sql: str | None) -> Score:
        if self.semantics == "sqleval":
            return self._score_sqleval(example, schema, pred_sql)
        gold_sql, keys = example.gold_sql, self._key_map(schema)
        try:
            gold_query = exact.parse_query(gold_sql, schema, keys)  # parsed once: hardness and EM
            hardness = exact.hardness(gold_query)
        except ValueError:
            gold_query, hardness = None, None
        try:
            gold = [self._rows(p, gold_sql) for p in example.db_paths]
        except SlimsqlError as err:
            return Score(hardness=hardness, gold_error=str(err))
        suite = len(example.db_paths) > 1
        if gold_query is None:
            em = None  # the gold query itself is outside what the matcher parses
        elif pred_sql:
            try:
                em = exact.exact_match_queries(exact.parse_query(pred_sql, schema, keys), gold_query)
            except ValueError:
                em = False
        else:
            em = False
        em_official = official.verdict(pred_sql, gold_sql, schema, keys)
        failed = dict(em=em, em_official=em_official, hardness=hardness, ts=False if suite else None)
        if pred_sql is None:
            return Score(schema_ok=False, **failed)
        schema_ok = metrics.schema_adherence(pred_sql, schema)
        try:
            predicted = [self._rows(p, pred_sql) for p in example.db_paths]
        except UnsafeSQLError as err:
            return Score(schema_ok=schema_ok, unsafe=str(err), **failed)
        except QueryError as err:
            return Score(schema_ok=schema_ok, exec_error=str(err), **failed)
        ex = execution.results_match(gold[0], predicted[0], gold_sql=gold_sql, semantics=self.semantics,
                                     dialect=schema.dialect)
        ts = execution.test_suite_match(list(zip(gold, predicted)), gold_sql=gold_sql, semantics=self.semantics,
                                        dialect=schema.dialect) if suite else None
        return Score(ex=ex, valid=True, em=em, em_official=em_official, ts=ts, schema_ok=schema_ok,
                     hardness=hardness)

    def _score_sqleval(self, example: Example, schema: Schema, pred_sql: str | None) -> Score:
        """sql-eval: right when the result matches that of any of the gold cell's alternatives
        (alternatives that fail to run are skipped; all failing is a gold error). No exact
        match or hardness: those are Spider's."""
        path, golds, error = example.db_paths[0], [], None
        for gold_sql in sqleval.expand_gold(example.gold_sql):
            try:
                golds.append(self._rows(path, gold_sql))
            except SlimsqlError as err:
                error = error or str(err)
        if not golds:
            return Score(gold_error=error or "the gold cell holds no query")
        if pred_sql is None:
            return Score(schema_ok=False)
        schema_ok = metrics.schema_adherence(pred_sql, schema)
        try:
            predicted = self._rows(path, pred_sql)
        except UnsafeSQLError as err:
            return Score(schema_ok=schema_ok, unsafe=str(err))
        except QueryError as err:
            return Score(schema_ok=schema_ok, exec_error=str(err))
        ordered = execution.sqleval_ordered(example.question, example.difficulty)
        ex = any(execution.sqleval_match(gold, predicted, ordered=ordered) for gold in golds)
        return Score(ex=ex, valid=True, schema_ok=schema_ok)

    def score(self, example: Example, schema: Schema, record: Record) -> Record:
        """Fill a run record with the score of its ``pred_sql``."""
        start = time.perf_counter()
        result = self.score_sql(example, schema, record.pred_sql)
        for name, value in asdict(result).items():
            setattr(record, name, value)
        if result.gold_error:  # the example is not scored
            record.ex, record.ts, record.valid, record.em, record.em_official, record.schema_ok = \
                False, None, False, None, None, None
        record.label = example.difficulty or None
        record.score_s = round(time.perf_counter() - start, 4)
        record.category = metrics.categorize(record, rules_for(schema.dialect)) if record.scored else None
        return record

    def close(self) -> None:
        for db in self._dbs.values():
            db.close()
        self._dbs.clear()


def score(example: Example, pred_sql: str | None, *, semantics: str = "spider", timeout: float = 30.0) -> Score:
    """Score one prediction against ``example``'s gold query on its database(s)."""
    if not example.executable:
        raise ValueError(f"example {example.id} has no database")
    with closing(Scorer(semantics, timeout)) as scorer:
        return scorer.score_sql(example, scorer.db(example.db_paths[0]).schema(0), pred_sql)
