"""Choosing among executed candidates: the first that runs, or a vote by result.

Voting rules, written down (and tested in ``tests/test_choose.py``):

1. Candidates that failed (no SQL, refused, database error, timeout) get no vote.
2. The others are grouped by result, with Spider's execution-accuracy semantics:
   the rows as a multiset, or as a sequence when the query orders its output
   (a top-level ORDER BY); column names do not matter, values compare exactly,
   and a result cut at the row cap only equals another cut result.
3. A group whose result is empty (no rows, or only NULLs) ranks after every
   group with a value: people ask questions that have answers, and an empty
   result is far more often a wrong filter than the answer.
4. Then the biggest group wins. Among groups of equal size, the one whose members'
   mean per-token log-probabilities sum higher wins (a backend that reports no
   log-probabilities counts 0); then the group holding the earliest candidate
   (candidate 0 is the greedy one). So the choice is deterministic.
5. The group's representative is its earliest member.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any, Sequence

import sqlglot

from ..db import Result
from .trace import Trace, Trial


def orders_rows(sql: str, dialect: str = "sqlite") -> bool:
    try:
        tree = sqlglot.parse_one(sql, read=dialect)
    except Exception:
        return "order by" in sql.lower()
    return tree is not None and tree.args.get("order") is not None


def _canonical(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 2.0 and 2 are one answer (SQLite's avg() vs count())
    return repr(value)


def is_empty(result: Result) -> bool:
    """No rows, or nothing but NULLs (e.g. an aggregate over no rows)."""
    return all(v is None for row in result.rows for v in row)


def signature(result: Result, ordered: bool) -> str:
    """A short hash that two results share exactly when voting counts them equal."""
    rows = ["\x1f".join(_canonical(v) for v in row) for row in result.rows]
    if not ordered:
        rows = sorted(rows)
    payload = "\x1e".join(["ordered" if ordered else "multiset", str(result.truncated), *rows])
    return hashlib.blake2b(payload.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def _mean_logprob(trial: Trial) -> float:
    if trial.logprob is None or trial.completion_tokens <= 0:
        return 0.0
    return trial.logprob / trial.completion_tokens


def first(trace: Trace, trials: Sequence[Trial]) -> Trial | None:
    """The earliest candidate that ran."""
    winner = next((t for t in trials if t.ran), None)
    if winner is not None:
        trace.note = f"first that ran: candidate {winner.index}"
    return winner


def vote(trace: Trace, trials: Sequence[Trial]) -> Trial | None:
    """Group by result signature; the biggest group wins (rules in the module docstring)."""
    ran = [t for t in trials if t.ran]
    if not ran:
        return None
    sizes = Counter(t.signature for t in ran)
    members: dict[str, list[Trial]] = {}
    for t in ran:
        members.setdefault(t.signature, []).append(t)
    ranked = sorted(members, key=lambda s: (members[s][0].empty, -sizes[s],
                                            -sum(_mean_logprob(t) for t in members[s]), members[s][0].index))
    for number, sig in enumerate(ranked):
        for t in members[sig]:
            t.group, t.votes = number, sizes[sig]
    best = ranked[0]
    tied = len(ranked) > 1 and sizes[ranked[1]] == sizes[best]
    trace.note = f"vote {sizes[best]}/{len(trials)} in {len(ranked)} group{'s' * (len(ranked) != 1)}" + (
        " (tie broken by log-probability, then order)" if tied else "")
    return members[best][0]


def runner_up(trials: Sequence[Trial], margin: int) -> tuple[Trial, Trial] | None:
    """After :func:`vote`: the first two groups' representatives when their votes are within ``margin``."""
    heads = {t.group: t for t in reversed(trials) if t.ran and t.group is not None}
    if 0 not in heads or 1 not in heads or heads[0].votes - heads[1].votes > margin:
        return None
    return heads[0], heads[1]


STRATEGY = {"first": first, "vote": vote}
