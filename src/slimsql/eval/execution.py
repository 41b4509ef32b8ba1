"""Execution accuracy: do two queries return the same result?

Pure functions over result rows, pinned down by golden tests.

Spider semantics (the test-suite evaluation's ``result_eq``): results are compared
as multisets of rows, in order only when the gold query has ORDER BY, and the
predicted columns may come in any order (a permutation of columns that makes the
results equal is accepted). BIRD semantics: results compared as sets of rows.
Values are compared exactly, as both official scripts do. defog sql-eval's semantics
(:func:`sqleval_match`) are at the end.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from decimal import Decimal
from itertools import islice
from typing import Any, Iterator, Sequence

import sqlglot

Rows = Sequence[tuple[Any, ...]]
MAX_PERMUTATIONS = 20_000


def gold_orders_rows(gold_sql: str, dialect: str = "sqlite") -> bool:
    """True when the gold query's outermost result is ordered (ORDER BY at the top)."""
    try:
        tree = sqlglot.parse_one(gold_sql, read=dialect)
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


def results_match(gold: Rows, pred: Rows, *, gold_sql: str, semantics: str = "spider", dialect: str = "sqlite") -> bool:
    """``dialect``: the one the gold query is written in (Spider's and BIRD's are SQLite)."""
    if semantics == "bird":
        return bird_result_eq(gold, pred)
    if semantics != "spider":
        raise ValueError(f"unknown semantics {semantics!r}")
    return spider_result_eq(gold, pred, gold_orders_rows(gold_sql, dialect))


def test_suite_match(pairs: Sequence[tuple[Rows, Rows]], *, gold_sql: str, semantics: str = "spider",
                     dialect: str = "sqlite") -> bool:
    """Correct on every database of a test suite (each pair: gold rows, predicted rows)."""
    return bool(pairs) and all(results_match(g, p, gold_sql=gold_sql, semantics=semantics, dialect=dialect)
                               for g, p in pairs)


# -- defog sql-eval semantics ------------------------------------------------------------
#
# As defog-ai/sql-eval's eval/eval.py at commit 079e59c (compare_df, subset_df, normalize_table):
# a prediction is right when its result is the gold's (same shape and values, position by
# position, or the same after dropping duplicate rows and putting rows in a canonical order),
# or when it holds every gold column: each gold column equals, as a sorted list
# of values, a different predicted column, and the gold rows then equal the predicted rows
# of those columns after dropping duplicate rows and putting rows in a canonical order
# (all columns sorted, unless the question asks for an order). Extra predicted columns are
# allowed; an empty gold result only matches an empty prediction.
# Numbers are compared with sql-eval's tolerance (relative 1e-5), as pandas does there.

_ORDER_WORDS = re.compile(r"\b(order|sort|arrange)\b", re.IGNORECASE)


def sqleval_ordered(question: str, category: str) -> bool:
    """Whether sql-eval compares rows in order: an order_by question, or one that asks for an order."""
    return category == "order_by" or bool(_ORDER_WORDS.search(question))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if _number(a) and _number(b):
        return math.isclose(float(a), float(b), rel_tol=1e-5, abs_tol=1e-8)
    return a == b


def _key(value: Any) -> tuple:
    """A sort key for any value: None last, numbers before text, other values as text."""
    if value is None:
        return (3, 0.0, "")
    if _number(value):
        return (0, float(value), "")
    if isinstance(value, str):
        return (1, 0.0, value)
    return (2, 0.0, str(value))


def _same_column(a: list, b: list) -> bool:
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(sorted(a, key=_key), sorted(b, key=_key)))


def _canonical(rows: list[tuple], ordered: bool) -> list[tuple]:
    """sql-eval's normalize_table: duplicates dropped; rows sorted by every column unless
    ``ordered``, then only by the columns that already come sorted (and the rest after them)."""
    unique = list(dict.fromkeys(rows))
    if not unique:
        return unique
    width = len(unique[0])
    if not ordered:
        order = list(range(width))
    else:
        presorted = [i for i in range(width) if [r[i] for r in unique] == sorted((r[i] for r in unique), key=_key)]
        if not presorted:
            return unique
        order = presorted + [i for i in range(width) if i not in presorted]
    return sorted(unique, key=lambda r: tuple(_key(r[i]) for i in order))


def _rows_same(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(len(x) == len(y) and all(map(_same, x, y)) for x, y in zip(a, b))


def sqleval_match(gold: Rows, pred: Rows, *, ordered: bool) -> bool:
    """sql-eval's verdict ("correct": exact or subset match) on two results' rows."""
    gold, pred = [tuple(r) for r in gold], [tuple(r) for r in pred]
    if not gold:  # sql-eval: an empty gold is only ever matched exactly (shape and all)
        return not pred
    if len(gold) == len(pred) and all(len(g) == len(p) and g == p for g, p in zip(gold, pred)):
        return True
    if not pred:
        return False
    if len(gold[0]) == len(pred[0]) and _rows_same(_canonical(gold, ordered), _canonical(pred, ordered)):
        return True  # the same rows once duplicates are dropped and rows ordered (sql-eval's compare_df)
    width, free = len(gold[0]), list(range(len(pred[0])))
    matched = []
    for i in range(width):
        column = [r[i] for r in gold]
        found = next((j for j in free if _same_column(column, [r[j] for r in pred])), None)
        if found is None:
            return False
        matched.append(found)
        free.remove(found)
    chosen = [tuple(r[j] for j in matched) for r in pred]
    return _rows_same(_canonical(gold, ordered), _canonical(chosen, ordered))
