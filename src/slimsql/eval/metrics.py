"""Per-example checks and run-level aggregation, as pure functions.

Execution accuracy lives in ``execution``, exact match and hardness in ``exact``;
this module adds the schema check, the error categories and the summaries that
``metrics.json`` and the report show.
"""

from __future__ import annotations

import statistics
from typing import Any, Iterable

import sqlglot
from sqlglot import exp

from ..schema import Schema

HARDNESS = ("easy", "medium", "hard", "extra")
CATEGORIES = ("correct", "wrong result", "unknown column", "unknown table", "syntax", "timeout", "format",
              "other error")


def schema_adherence(sql: str, schema: Schema) -> bool:
    """True when every table and column the query names exists in ``schema``.

    Names the query defines itself (CTEs, table and column aliases, derived
    tables) are allowed; a qualified column must exist in the table it names.
    """
    try:
        tree = sqlglot.parse_one(sql, read=schema.dialect)
    except Exception:
        return False
    if tree is None:
        return False
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    defined = {a.alias.lower() for a in tree.find_all(exp.Alias) if a.alias}
    for alias in tree.find_all(exp.TableAlias):
        defined.update(c.name.lower() for c in alias.columns)
    aliases: dict[str, str | None] = {}  # table alias -> real table (None: derived)
    for table in tree.find_all(exp.Table):
        name = table.name.lower()
        if name in ctes:
            aliases[(table.alias or table.name).lower()] = None
            continue
        if schema.table(name) is None:
            return False
        aliases[(table.alias or table.name).lower()] = name
    for sub in tree.find_all(exp.Subquery):
        if sub.alias:
            aliases[sub.alias.lower()] = None
    all_columns = {c.name.lower() for t in schema.tables for c in t.columns}
    for column in tree.find_all(exp.Column):
        if isinstance(column.this, exp.Star):
            continue
        name = column.name.lower()
        if column.table:
            target = aliases.get(column.table.lower(), column.table.lower())
            if target is None:
                continue  # a CTE or derived table: its columns are the query's own
            table = schema.table(target)
            if table is None or all(c.name.lower() != name for c in table.columns):
                return False
        elif name not in all_columns and name not in defined:
            return False
    return True


def categorize(record: dict[str, Any]) -> str:
    """One error category per example, from its scored record."""
    if record.get("ex"):
        return "correct"
    if record.get("extract_error") or record.get("unsafe"):
        return "format"
    error = (record.get("exec_error") or "").lower()
    if not error:
        return "wrong result"
    if "time limit" in error:
        return "timeout"
    if "no such column" in error or "ambiguous column" in error:
        return "unknown column"
    if "no such table" in error:
        return "unknown table"
    if "syntax error" in error or "incomplete input" in error or "could not be parsed" in error:
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


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Run-level metrics over scored records (one per example)."""
    scored = [r for r in records if r.get("executable") and not r.get("gold_error")]
    parsed_gold = [r for r in records if r.get("em") is not None]
    by_hardness = {}
    for level in HARDNESS:
        group = [r for r in scored if r.get("hardness") == level]
        em_group = [r for r in parsed_gold if r.get("hardness") == level]
        by_hardness[level] = {"count": len(group), "ex": _rate(r["ex"] for r in group),
                              "em": _rate(r["em"] for r in em_group)}
    categories = {c: sum(categorize(r) == c for r in scored) for c in CATEGORIES}
    generation = [r["gen_s"] for r in records if r.get("gen_s") is not None]
    return {
        "examples": len(records),
        "executable": sum(bool(r.get("executable")) for r in records),
        "scored": len(scored),
        "gold_errors": sum(bool(r.get("gold_error")) for r in records),
        "missing_db": sum(not r.get("executable") for r in records),
        "ex": _rate(r["ex"] for r in scored),
        "test_suite": _rate(r["ts"] for r in scored if r.get("ts") is not None),
        "em": _rate(r["em"] for r in parsed_gold),
        "valid_sql": _rate(r["valid"] for r in scored),
        "schema_adherence": _rate(r["schema_ok"] for r in scored if r.get("schema_ok") is not None),
        "strict_format": _rate(r["strict"] for r in records),
        "by_hardness": by_hardness,
        "categories": categories,
        "latency_s": {"generation": _seconds(generation),
                      "scoring": _seconds([r["score_s"] for r in records if r.get("score_s") is not None])},
        "tokens": {"prompt_mean": round(statistics.fmean([r.get("prompt_tokens", 0) for r in records]), 1)
                   if records else None,
                   "completion_mean": round(statistics.fmean([r.get("completion_tokens", 0) for r in records]), 1)
                   if records else None},
    }
