"""Golden tests for execution accuracy semantics (Spider, BIRD, test-suite)."""

import sqlite3

import pytest

from slimsql.eval import execution
from slimsql.eval.execution import gold_orders_rows, results_match, spider_result_eq

A, B = (1, "x"), (2, "y")


@pytest.mark.parametrize("gold,pred,ordered,expected", [
    ([A, B], [A, B], False, True),
    ([A, B], [B, A], False, True),           # row order ignored without ORDER BY
    ([A, B], [B, A], True, False),           # ...and respected with it
    ([A, B], [("x", 1), ("y", 2)], False, True),   # column order permuted
    ([A, B], [("x", 1), ("y", 2)], True, True),    # permuted columns, same row order
    ([A, A, B], [A, B, B], False, False),    # multisets, not sets
    ([A, B], [A], False, False),
    ([A], [(1, "x", 0)], False, False),      # extra column
    ([], [], False, True),
    ([], [A], False, False),
    ([(1,)], [(1.0,)], False, True),         # Python equality: 1 == 1.0, as the official script
    ([(None,)], [(None,)], False, True),
    ([(1, 1)], [(1, 2)], False, False),
    ([(1, 2), (2, 1)], [(2, 1), (1, 2)], False, True),
])
def test_spider_semantics(gold, pred, ordered, expected):
    assert spider_result_eq(gold, pred, ordered) is expected


def test_bird_semantics_are_sets():
    assert results_match([A, A, B], [A, B], gold_sql="SELECT 1", semantics="bird")
    assert not results_match([A, A, B], [A, B], gold_sql="SELECT 1", semantics="spider")
    assert not results_match([A, B], [("x", 1), ("y", 2)], gold_sql="SELECT 1", semantics="bird")


@pytest.mark.parametrize("sql,expected", [
    ("SELECT a FROM t ORDER BY a", True),
    ("SELECT a FROM t", False),
    ("SELECT a FROM t WHERE a = (SELECT max(a) FROM t ORDER BY a LIMIT 1)", False),  # only the outer order counts
    ("SELECT a FROM t UNION SELECT b FROM u ORDER BY 1", True),
])
def test_gold_orders_rows(sql, expected):
    assert gold_orders_rows(sql) is expected


def _db(path, rows):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (a INTEGER, b TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", rows)
    conn.commit()
    conn.close()
    return path


def test_test_suite_needs_every_database(tmp_path):
    """A query that matches on one database but not on another is wrong under test-suite accuracy."""
    from slimsql.db.sqlite import SQLiteDatabase

    dbs = [_db(tmp_path / "one.sqlite", [(1, "x"), (2, "y")]), _db(tmp_path / "two.sqlite", [(1, "x"), (5, "y")])]
    gold, pred = "SELECT b FROM t WHERE a < 3", "SELECT b FROM t WHERE a < 10"
    pairs = []
    for path in dbs:
        with SQLiteDatabase(path) as db:
            pairs.append((db.execute(gold).rows, db.execute(pred).rows))
    assert results_match(*pairs[0], gold_sql=gold)
    assert not execution.test_suite_match(pairs, gold_sql=gold)
    assert execution.test_suite_match([(g, g) for g, _ in pairs], gold_sql=gold)
    assert not execution.test_suite_match([], gold_sql=gold)
