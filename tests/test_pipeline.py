import pytest

import slimsql
from slimsql.backends import GenerationConfig
from slimsql.backends.scripted import ScriptedBackend
from slimsql.errors import InputError, NoSQLError, QueryError, QueryTimeout, UnsafeSQLError
from slimsql.infer import Settings

from .conftest import sha256


def connect(db, replies, **overrides):
    backend = ScriptedBackend(replies)
    overrides.setdefault("preset", "fast")
    return slimsql.connect(db, backend=backend, **overrides), backend


def test_ask_runs_the_whole_road(demo_db):
    conn, backend = connect(demo_db, ["```sql\nSELECT count(*) AS n FROM products;\n```"])
    answer = conn.ask("How many products?")
    assert answer.sql == "SELECT count(*) AS n FROM products"
    assert answer.columns == ("n",) and answer.rows == [(46,)] and not answer.truncated
    assert answer.fixes == ("fence", "semicolon")
    assert set(answer.timings) == {"schema", "generation", "execution", "total"}
    assert answer.model == "scripted"
    messages, config = backend.calls[0]
    assert "CREATE TABLE products" in messages[-1]["content"] + messages[0]["content"]
    assert messages[-1]["content"].endswith("How many products?")
    assert config == GenerationConfig()
    assert conn.stats.as_dict() == {"total": 1, "cleaned": 1, "fence": 1, "semicolon": 1}
    assert "46" in str(answer) and answer.to_dict()["rows"] == [[46]]


def test_first_runnable_candidate_wins(demo_db):
    conn, backend = connect(demo_db, [["no idea", "SELECT nope FROM products", "SELECT 2", "SELECT 3"]])
    answer = conn.ask("q", n=4, temperature=0.7, seed=1)
    assert answer.rows == [(2,)]
    assert backend.calls[0][1] == GenerationConfig(n=4, temperature=0.7, seed=1)
    assert conn.stats.as_dict()["rejected"] == 1


@pytest.mark.parametrize("reply,error", [
    ("I cannot answer that.", NoSQLError),
    ("DELETE FROM orders", UnsafeSQLError),
    ("DROP TABLE orders;", UnsafeSQLError),
    ("WITH x AS (SELECT 1) DELETE FROM orders", UnsafeSQLError),
    ("```sql\nUPDATE orders SET status = 'x'\n```", UnsafeSQLError),
    ("SELECT no_such_column FROM orders", QueryError),
])
def test_failures_are_clear_and_harmless(demo_db, reply, error):
    before = sha256(demo_db)
    conn, _ = connect(demo_db, [reply])
    with pytest.raises(error) as info:
        conn.ask("q")
    assert "\n" not in str(info.value)
    assert sha256(demo_db) == before


def test_unsafe_sql_that_survives_extraction_is_refused(demo_db):
    # extract() takes the first statement; a trailing write never reaches the database.
    conn, _ = connect(demo_db, ["SELECT count(*) FROM orders; DELETE FROM orders"])
    answer = conn.ask("q")
    assert answer.sql == "SELECT count(*) FROM orders" and "extra_statements" in answer.fixes
    assert conn.sql("SELECT count(*) FROM orders").rows == [(2500,)]


def test_query_error_carries_the_sql(demo_db):
    conn, _ = connect(demo_db, ["SELECT nope FROM orders"])
    with pytest.raises(QueryError) as info:
        conn.ask("q")
    assert info.value.sql == "SELECT nope FROM orders"


def test_timeout_and_row_cap_apply_to_answers(demo_db):
    bomb = "SELECT count(*) FROM order_items a, order_items b, order_items c"
    conn, _ = connect(demo_db, [bomb, "SELECT * FROM order_items"], timeout=0.3, max_rows=7)
    with pytest.raises(QueryTimeout):
        conn.ask("q")
    answer = conn.ask("q")
    assert len(answer.rows) == 7 and answer.truncated


@pytest.mark.parametrize("question", ["", "   ", "x" * 2001])
def test_bad_questions(demo_db, question):
    conn, backend = connect(demo_db, ["SELECT 1"])
    with pytest.raises(InputError):
        conn.ask(question)
    assert backend.calls == []


def test_settings_are_checked():
    with pytest.raises(InputError, match="--max-rows"):
        Settings(max_rows=0)
    with pytest.raises(InputError, match="--candidates"):
        GenerationConfig(n=0)
    with pytest.raises(InputError, match="prompt style"):
        Settings(style="nope")


def test_sql_method_uses_the_same_guard(demo_db):
    conn, _ = connect(demo_db, [])
    with pytest.raises(UnsafeSQLError):
        conn.sql("DROP TABLE orders")
    assert conn.sql("SELECT count(*) FROM customers").rows == [(400,)]


def test_style_changes_the_messages(demo_db):
    conn, backend = connect(demo_db, ["SELECT 1"], style="strict-chatml")
    conn.ask("How many?")
    system = backend.calls[0][0][0]
    assert system["role"] == "system" and system["content"].startswith("You are a SQL translation engine.")


def test_identical_failing_candidates_run_once(demo_db, monkeypatch):
    conn, _ = connect(demo_db, [["SELECT nope FROM orders"] * 3])
    runs = []
    original = conn.db.execute
    monkeypatch.setattr(conn.db, "execute", lambda sql, **kw: runs.append(sql) or original(sql, **kw))
    with pytest.raises(QueryError):
        conn.ask("q", n=3)
    assert runs == ["SELECT nope FROM orders"]
