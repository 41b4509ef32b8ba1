"""defog sql-eval: gold alternatives, its comparison rule, the dumps as SQLite files."""

import sqlite3
from pathlib import Path

import pytest

from slimsql.db import open_database
from slimsql.db.sqlite import ddl_comments
from slimsql.eval import sqleval
from slimsql.eval.datasets import Example
from slimsql.eval.execution import sqleval_match, sqleval_ordered
from slimsql.eval.scoring import Scorer
from slimsql.schema import render_create

SQLEVAL = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "sql-eval"
needs_data = pytest.mark.skipif(not (SQLEVAL / "questions").is_dir(), reason=f"sql-eval data not found at {SQLEVAL}")


# -- gold alternatives ---------------------------------------------------------------------

def test_braces_expand_to_every_non_empty_choice_and_group_by_follows():
    gold = "SELECT {a.id, a.name}, COUNT(*) FROM a GROUP BY {}"
    assert sqleval.expand_gold(gold) == [
        "SELECT a.id, COUNT(*) FROM a GROUP BY a.id",
        "SELECT a.name, COUNT(*) FROM a GROUP BY a.name",
        "SELECT a.id, a.name, COUNT(*) FROM a GROUP BY a.id, a.name",
    ]


def test_semicolons_separate_alternatives_and_empty_parts_are_dropped():
    assert sqleval.expand_gold("SELECT 1;  SELECT 2 ;;") == ["SELECT 1", "SELECT 2"]
    assert sqleval.expand_gold("SELECT x FROM t") == ["SELECT x FROM t"]


# -- the comparison rule -------------------------------------------------------------------

def test_extra_predicted_columns_are_allowed_in_any_position():
    gold = [("Ann",), ("Bob",)]
    pred = [(1, "Bob", 9.5), (2, "Ann", 3.0)]
    assert sqleval_match(gold, pred, ordered=False)


def test_a_missing_gold_column_or_a_different_value_is_wrong():
    gold = [("Ann", 3), ("Bob", 4)]
    assert not sqleval_match(gold, [("Ann",), ("Bob",)], ordered=False)
    assert not sqleval_match(gold, [("Ann", 3), ("Bob", 5)], ordered=False)


def test_columns_matched_one_to_one():
    # both gold columns hold the same values: one predicted column cannot stand for both
    assert not sqleval_match([(1, 1), (2, 2)], [(1,), (2,)], ordered=False)
    assert sqleval_match([(1, 1), (2, 2)], [(1, 1), (2, 2)], ordered=False)


def test_rows_must_pair_up_not_only_columns():
    gold = [("Ann", 1), ("Bob", 2)]
    pred = [("Ann", 2), ("Bob", 1)]  # each column matches as a multiset, the rows do not
    assert not sqleval_match(gold, pred, ordered=False)


def test_duplicate_rows_do_not_count():
    assert sqleval_match([(1,), (2,)], [(1,), (1,), (2,)], ordered=False)  # DISTINCT or not
    assert sqleval_match([(1,), (1,), (2,)], [(2,), (1,)], ordered=False)
    assert not sqleval_match([(1,), (2,)], [(1,), (1,)], ordered=False)


def test_numbers_with_tolerance():
    assert sqleval_match([(0.333333,)], [(1 / 3,)], ordered=False)
    assert not sqleval_match([(0.33,)], [(1 / 3,)], ordered=False)
    assert sqleval_match([(2,)], [(2.0,)], ordered=False)


def test_order_counts_only_when_the_question_asks_for_it():
    gold = [("b", 2), ("a", 1)]
    pred = [("a", 1), ("b", 2)]
    assert sqleval_match(gold, pred, ordered=False)
    assert not sqleval_match(gold, pred, ordered=True)
    assert sqleval_ordered("List them in order of year", "table_join")
    assert not sqleval_ordered("List them, ordered by year", "table_join")  # sql-eval's whole words only
    assert sqleval_ordered("Which ones?", "order_by")
    assert not sqleval_ordered("Which border states?", "group_by")  # a word, not a substring


def test_empty_gold_matches_only_an_empty_prediction():
    assert sqleval_match([], [], ordered=False)
    assert not sqleval_match([], [(1,)], ordered=False)
    assert not sqleval_match([(1,)], [], ordered=False)


# -- the dumps in SQLite ---------------------------------------------------------------------

DUMP = """
CREATE SCHEMA x;
CREATE TABLE public.review (
    rid bigint NOT NULL,
    month text DEFAULT ''::text NOT NULL,
    year bigint
);
INSERT INTO public.review (rid, month, year) VALUES
(1, 'May', 2021),
(2, TO_CHAR(CURRENT_DATE - INTERVAL '2 MONTHS', 'Month'), EXTRACT(YEAR FROM CURRENT_DATE - INTERVAL '2 MONTHS'));
"""


def test_dump_statements_translate_with_descriptions_and_values_of_today(tmp_path):
    from datetime import date

    statements = sqleval.sqlite_statements(DUMP, {"review": {"month": "Month name, e.g. 'May'"}})
    conn = sqlite3.connect(tmp_path / "r.sqlite")
    for statement in statements:
        conn.execute(statement)
    rows = conn.execute("SELECT rid, month, year FROM review ORDER BY rid").fetchall()
    assert rows[0] == (1, "May", 2021)
    month = (date.today().month - 3) % 12 + 1
    assert rows[1][1] == date(2000, month, 1).strftime("%B")  # unpadded, as the SQLite gold queries expect
    assert rows[1][2] in (date.today().year, date.today().year - 1)
    conn.commit()
    conn.close()
    db = open_database(tmp_path / "r.sqlite")
    try:
        text = render_create(db.schema(0))
    finally:
        db.close()
    assert "month TEXT NOT NULL, -- Month name, e.g. 'May'" in text


def test_ddl_comments_of_either_kind():
    sql = "CREATE TABLE t (a INTEGER, -- the id\n b TEXT /* a name */, c TEXT)"
    assert ddl_comments(sql) == {"a": "the id", "b": "a name"}
    assert ddl_comments("CREATE TABLE (((") == {}


@needs_data
def test_sqlite_variant_has_the_six_databases_and_every_gold_query_runs(tmp_path):
    dataset = sqleval.load(SQLEVAL, engine="sqlite", cache=tmp_path)
    assert len(dataset.examples) == 210
    runnable = [e for e in dataset.examples if e.executable]
    assert {e.db_id for e in runnable} == set(sqleval.SQLITE_DATABASES) and len(runnable) == 160
    assert set(dataset.missing_dbs) == {"advising", "broker", "car_dealership", "derm_treatment", "ewallet"}
    scorer = Scorer("sqleval", 10)
    try:
        for example in runnable:
            schema = scorer.db(example.db_paths[0]).schema(0)
            verdict = scorer.score_sql(example, schema, sqleval.expand_gold(example.gold_sql)[0])
            assert verdict.gold_error is None and verdict.ex, example.id
    finally:
        scorer.close()


@needs_data
def test_postgres_variant_names_one_database_per_question_on_the_server():
    dataset = sqleval.load(SQLEVAL, engine="postgres", server="postgresql://reader@/postgres?host=%2Ftmp%2Fs&port=5999")
    assert len(dataset.examples) == 210 and len({e.db_id for e in dataset.examples}) == 11
    first = dataset.examples[0]
    assert first.db_paths == (f"postgresql://reader@/{first.db_id}?host=%2Ftmp%2Fs&port=5999",)
    assert sqleval.database_url("postgresql:///postgres?host=/tmp/x", "atis") == "postgresql:///atis?host=/tmp/x"
    assert sqleval.database_url("postgres://u@h:5433/db", "a b") == "postgres://u@h:5433/a%20b"
    with pytest.raises(Exception, match="needs --db"):
        sqleval.load(SQLEVAL, engine="postgres")


def test_scoring_takes_any_gold_alternative_and_skips_the_ones_that_fail(tmp_path):
    path = tmp_path / "t.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE a (id INTEGER, name TEXT); INSERT INTO a VALUES (1, 'x'), (2, 'y');")
    conn.close()
    example = Example(id="e", question="names?", db_id="t", db_paths=(path,), difficulty="group_by",
                      gold_sql="SELECT nosuch FROM a;SELECT {a.id, a.name} FROM a")
    scorer = Scorer("sqleval", 5)
    try:
        schema = scorer.db(path).schema(0)
        assert scorer.score_sql(example, schema, "SELECT name FROM a").ex
        assert scorer.score_sql(example, schema, "SELECT name, id FROM a ORDER BY id DESC").ex
        assert not scorer.score_sql(example, schema, "SELECT name FROM a WHERE id = 1").ex
        broken = Example(id="b", question="?", db_id="t", db_paths=(path,), gold_sql="SELECT nosuch FROM a")
        assert "no such column" in scorer.score_sql(broken, schema, "SELECT 1").gold_error
    finally:
        scorer.close()
