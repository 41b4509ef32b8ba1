"""Paired comparison of two runs on the same examples.

For each metric, the difference (B - A) of the means over the examples both runs
scored, with a paired bootstrap 95% confidence interval (examples resampled with
replacement, the same resample for both runs), and the examples that flipped.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from ..errors import InputError
from .report import load_run
from .store import Record

METRICS = ("ex", "em", "em_official", "valid", "schema_ok", "strict")
LABELS = {"em": "exact match (normalized)", "em_official": "exact match (official-compatible)"}


def paired_bootstrap(a: list[float], b: list[float], *, resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """(mean difference b - a, low, high) of the paired bootstrap interval."""
    if len(a) != len(b) or not a:
        raise ValueError("paired samples must be non-empty and of equal length")
    diffs = [y - x for x, y in zip(a, b)]
    n = len(diffs)
    rng = random.Random(seed)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    low, high = means[int(tail * (resamples - 1))], means[int((1 - tail) * (resamples - 1))]
    return sum(diffs) / n, low, high


def _value(record: Record, metric: str) -> float | None:
    value = getattr(record, metric)
    return None if value is None else float(bool(value))


def compare(run_a: str | Path, run_b: str | Path, *, resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    (_, records_a), (_, records_b) = load_run(run_a), load_run(run_b)
    a = {r.id: r for r in records_a if r.scored}
    b = {r.id: r for r in records_b if r.scored}
    common = sorted(set(a) & set(b), key=lambda i: (len(i), i))
    if not common:
        raise InputError("the two runs share no scored examples")
    out: dict[str, Any] = {"a": str(run_a), "b": str(run_b), "examples": len(common), "metrics": {}}
    for metric in METRICS:
        pairs = [(_value(a[i], metric), _value(b[i], metric)) for i in common]
        pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
        if not pairs:
            continue
        diff, low, high = paired_bootstrap([x for x, _ in pairs], [y for _, y in pairs],
                                           resamples=resamples, seed=seed)
        out["metrics"][metric] = {"n": len(pairs), "a": round(sum(x for x, _ in pairs) / len(pairs), 4),
                                  "b": round(sum(y for _, y in pairs) / len(pairs), 4),
                                  "diff": round(diff, 4), "ci95": [round(low, 4), round(high, 4)]}
    out["fixed"] = [i for i in common if not a[i].ex and b[i].ex]
    out["broken"] = [i for i in common if a[i].ex and not b[i].ex]
    return out


def to_markdown(result: dict[str, Any]) -> str:
    lines = [f"# Comparison: B = {result['b']} vs A = {result['a']}", "",
             f"{result['examples']} examples scored in both runs. Differences are B - A with a paired bootstrap "
             "95% confidence interval.", "", "| metric | A | B | B - A | 95% CI |", "|---|---|---|---|---|"]
    for name, m in result["metrics"].items():
        lines.append(f"| {LABELS.get(name, name)} | {100 * m['a']:.1f}% | {100 * m['b']:.1f}% "
                     f"| {100 * m['diff']:+.1f} pts | [{100 * m['ci95'][0]:+.1f}, {100 * m['ci95'][1]:+.1f}] |")
    lines += ["", f"Fixed by B (EX wrong in A, right in B): {len(result['fixed'])}",
              f"Broken by B (EX right in A, wrong in B): {len(result['broken'])}", ""]
    for title, ids in (("Fixed", result["fixed"]), ("Broken", result["broken"])):
        if ids:
            lines += [f"## {title}", ""] + [f"- {i}" for i in ids] + [""]
    return "\n".join(lines)
