"""Per-example checks and run-level aggregation, as pure functions.

Execution accuracy lives in ``execution``, exact match and hardness in ``exact``;
this module adds the schema check, the error categories and the summaries that
``metrics.json`` and the report show.
"""

from __future__ import annotations

import statistics
from typing import Any, Iterable

from sqlglot import exp

from ..db import EngineRules, rules_for
from ..infer.names import scopes, single_quoted, string_spans, unfound_columns  # noqa: F401 (re-exported)
from ..schema import Schema
from .store import Record

HARDNESS = ("easy", "medium", "hard", "extra")
CATEGORIES = ("correct", "wrong result", "unknown column", "unknown table", "syntax", "timeout", "format",
              "other error")


def schema_adherence(sql: str, schema: Schema) -> bool:
    """True when every table and column the query names exists where SQL looks for it.

    Scopes come from sqlglot's optimizer: a column must belong to a source of its own
    SELECT or of an enclosing one (correlated subqueries), where a source is a schema
    table, a CTE or a derived table (its output columns); select aliases count too.
    """
    found = scopes(sql, schema.dialect)
    if not found:
        return False
    if any(isinstance(source, exp.Table) and schema.table(source.name) is None
           for scope in found for source in scope.sources.values()):
        return False
    return next(unfound_columns(found, schema), None) is None


def categorize(record: Record, rules: EngineRules | None = None) -> str:
    """One error category per example, from its scored record; ``rules`` (the default
    engine's when None) say how the engine's error messages map to categories."""
    if record.ex:
        return "correct"
    if record.extract_error or record.unsafe:
        return "format"
    error = (record.exec_error or "").lower()
    if not error:
        return "wrong result"
    if "time limit" in error:  # slimsql's own messages (db/, sql.py), on every engine
        return "timeout"
    found = (rules or rules_for()).category(error)
    if found:
        return found
    if "could not be parsed" in error:
        return "syntax"
    return "other error"


def _rate(values: Iterable[bool]) -> float | None:
    values = list(values)
    return round(sum(values) / len(values), 4) if values else None


def _seconds(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {"median": round(statistics.median(ordered), 3), "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 3),
            "mean": round(statistics.fmean(ordered), 3)}


def _cleaning(records: list[Record]) -> dict[str, int]:
    """How often model output needed each clean-up, or could not be reduced to SQL."""
    generated = [r for r in records if r.generated]
    counts = {"outputs": len(generated), "rejected": sum(r.extract_error is not None for r in generated)}
    for record in generated:
        for fix in record.fixes:
            counts[fix] = counts.get(fix, 0) + 1
    return counts


def summarize(records: list[Record], rules: EngineRules | None = None) -> dict[str, Any]:
    """Run-level metrics over scored records (one per example); ``rules`` as for :func:`categorize`."""
    scored = [r for r in records if r.scored]
    parsed_gold = [r for r in records if r.em is not None]
    official_gold = [r for r in records if r.em_official is not None]  # absent before rescoring
    by_hardness = {}
    for level in HARDNESS:
        group = [r for r in scored if r.hardness == level]
        em_group = [r for r in parsed_gold if r.hardness == level]
        official_group = [r for r in official_gold if r.hardness == level]
        by_hardness[level] = {"count": len(group), "ex": _rate(r.ex for r in group),
                              "em": _rate(r.em for r in em_group),
                              "em_official": _rate(r.em_official for r in official_group)}
    by_label = {label: {"count": len(group), "ex": _rate(r.ex for r in group)}
                for label in sorted({r.label for r in scored if r.label})
                for group in [[r for r in scored if r.label == label]]}
    # a record keeps the category its engine's rules gave it when scored; older records get one here
    categories = {c: sum((r.category or categorize(r, rules)) == c for r in scored) for c in CATEGORIES}
    generation = [r.gen_s for r in records if r.gen_s is not None]
    return {
        "examples": len(records),
        "executable": sum(r.executable for r in records),
        "scored": len(scored),
        "gold_errors": sum(bool(r.gold_error) for r in records),
        "missing_db": sum(not r.executable for r in records),
        "ex": _rate(r.ex for r in scored),
        "test_suite": _rate(r.ts for r in scored if r.ts is not None),
        "em": _rate(r.em for r in parsed_gold),  # exact match, normalized (exact.py)
        "em_official": _rate(r.em_official for r in official_gold),  # as Spider's evaluation.py (official.py)
        "valid_sql": _rate(r.valid for r in scored),
        "schema_adherence": _rate(r.schema_ok for r in scored if r.schema_ok is not None),
        "strict_format": _rate(r.strict for r in records if r.generated),
        "cleaning": _cleaning(records),
        "by_hardness": by_hardness,
        "by_label": by_label,  # the benchmark's own labels (BIRD difficulty, sql-eval category)
        "categories": categories,
        "latency_s": {"generation": _seconds(generation),
                      "scoring": _seconds([r.score_s for r in records if r.score_s is not None])},
        "tokens": {"prompt_mean": round(statistics.fmean([r.prompt_tokens for r in records]), 1)
                   if records else None,
                   "completion_mean": round(statistics.fmean([r.completion_tokens for r in records]), 1)
                   if records else None},
    }
