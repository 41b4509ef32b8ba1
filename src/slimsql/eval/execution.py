"""Execution accuracy: do two queries return the same result?

Pure functions over result rows, pinned down by golden tests.

Spider semantics (the test-suite evaluation's ``result_eq``): results are compared
as multisets of rows, in order only when the gold query has ORDER BY, and the
predicted columns may come in any order (a permutation of columns that makes the
results equal is accepted). BIRD semantics: results compared as sets of rows.
Values are compared exactly, as both official scripts do.
"""

from __future__ import annotations

from collections import Counter
from itertools import islice
from typing import Any, Iterator, Sequence

import sqlglot

Rows = Sequence[tuple[Any, ...]]
MAX_PERMUTATIONS = 20_000


def gold_orders_rows(gold_sql: str) -> bool:
    """True when the gold query's outermost result is ordered (ORDER BY at the top)."""
    try:
        tree = sqlglot.parse_one(gold_sql, read="sqlite")
    except Exception:  # fall back to the official scripts' textual test
        return "order by" in gold_sql.lower()
    return tree is not None and tree.args.get("order") is not None


def _column_permutations(gold: Rows, pred: Rows) -> Iterator[tuple[int, ...]]:
    """Permutations p with pred column p[i] a candidate for gold column i.

    A candidate has the same multiset of values as the gold column (necessary
    for any match), which keeps the search tiny in practice.
    """
    width = len(gold[0])
    gold_cols = [Counter(row[i] for row in gold) for i in range(width)]
    pred_cols = [Counter(row[j] for row in pred) for j in range(width)]
    options = [[j for j in range(width) if pred_cols[j] == gold_cols[i]] for i in range(width)]

    def search(i: int, used: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
        if i == width:
            yield used
            return
        for j in options[i]:
            if j not in used:
                yield from search(i + 1, used + (j,))

    return islice(search(0, ()), MAX_PERMUTATIONS)


def spider_result_eq(gold: Rows, pred: Rows, order_matters: bool) -> bool:
    if len(gold) == 0 and len(pred) == 0:
        return True
    if len(gold) != len(pred) or len(gold[0]) != len(pred[0]):
        return False
    gold_rows = [tuple(r) for r in gold]
    for perm in _column_permutations(gold_rows, pred):
        permuted = [tuple(row[j] for j in perm) for row in pred]
        if order_matters:
            if permuted == gold_rows:
                return True
        elif Counter(permuted) == Counter(gold_rows):
            return True
    return False


def bird_result_eq(gold: Rows, pred: Rows) -> bool:
    return set(map(tuple, gold)) == set(map(tuple, pred))


def results_match(gold: Rows, pred: Rows, *, gold_sql: str, semantics: str = "spider") -> bool:
    if semantics == "bird":
        return bird_result_eq(gold, pred)
    if semantics != "spider":
        raise ValueError(f"unknown semantics {semantics!r}")
    return spider_result_eq(gold, pred, gold_orders_rows(gold_sql))


def test_suite_match(pairs: Sequence[tuple[Rows, Rows]], *, gold_sql: str, semantics: str = "spider") -> bool:
    """Correct on every database of a test suite (each pair: gold rows, predicted rows)."""
    return bool(pairs) and all(results_match(g, p, gold_sql=gold_sql, semantics=semantics) for g, p in pairs)
