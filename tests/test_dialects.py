"""The model's SQL carried into the engine's dialect (sqlglot), and the road that does it."""

import slimsql
from slimsql.backends.scripted import ScriptedBackend
from slimsql.infer import dialects
from slimsql.schema import Column, Schema, Table, quote, render_create


def test_another_dialects_functions_are_transpiled():
    sql, source = dialects.foreign("SELECT strftime('%Y', d) FROM t", "postgres")
    assert source == "sqlite" and "TO_CHAR" in sql and "'YYYY'" in sql
    sql, source = dialects.foreign("SELECT to_char(d, 'YYYY') FROM t", "duckdb") or (None, None)
    assert source is None or "STRFTIME" in sql.upper()


def test_sql_of_the_engines_own_dialect_is_left_alone():
    assert dialects.foreign("SELECT name, count(*) FROM t GROUP BY name", "postgres") is None
    assert dialects.foreign("SELECT strftime('%Y', d) FROM t", "sqlite") is None
    assert dialects.foreign("SELECT my_udf(x) FROM t", "postgres") is None  # no dialect knows it: kept
    assert dialects.foreign("not sql at all ((", "postgres") is None


def test_rewrites_offer_sqlglots_spelling_for_the_engine_first():
    spellings = dialects.rewrites("SELECT IFNULL(a, 0), GROUP_CONCAT(b) FROM t", "postgres")
    assert spellings[0] == ("SELECT COALESCE(a, 0), STRING_AGG(b, ',') FROM t", "rewritten by sqlglot for postgres")
    sql, note = dialects.rewrites("SELECT * FROM t WHERE a ILIKE '%x%'", "sqlite")[0]
    assert "LIKE LOWER" in sql and "ILIKE" not in sql
    assert dialects.rewrites("SELECT a FROM t", "sqlite") == []  # nothing to change


def test_a_refused_candidate_runs_as_sqlglot_writes_it_and_the_trace_says_so(demo_db):
    backend = ScriptedBackend(["SELECT count(*) FROM customers WHERE city ILIKE 'lyon'"])
    conn = slimsql.connect(demo_db, backend=backend, preset="fast")
    answer = conn.ask("How many customers live in Lyon?")
    trial = answer.trace.winner
    assert "ILIKE" not in answer.sql and "LOWER(city) LIKE LOWER('lyon')" in answer.sql
    assert trial.extracted.endswith("ILIKE 'lyon'") and trial.repairs == ("rewritten by sqlglot for sqlite",)
    assert answer.rows[0][0] > 0


def test_a_query_that_runs_is_never_rewritten(demo_db):
    backend = ScriptedBackend(["select count(*) from customers where city = 'Lyon'"])
    answer = slimsql.connect(demo_db, backend=backend, preset="fast").ask("How many in Lyon?")
    assert answer.sql == "select count(*) from customers where city = 'Lyon'" and answer.trace.winner.repairs == ()


def test_without_fixes_a_refused_candidate_stays_refused(demo_db):
    import pytest

    from slimsql.errors import QueryError

    backend = ScriptedBackend(["SELECT count(*) FROM customers WHERE city ILIKE 'lyon'"])
    with pytest.raises(QueryError):
        slimsql.connect(demo_db, backend=backend, preset="fast", fix=False).ask("How many in Lyon?")


def test_prompt_names_are_quoted_as_the_engine_needs():
    assert quote("CustomerId") == "CustomerId"  # SQLite: names are case-insensitive
    assert quote("CustomerId", "postgres") == '"CustomerId"'  # PostgreSQL folds unquoted names
    assert quote("user", "postgres") == '"user"' and quote("user") == '"user"'  # reserved in PostgreSQL
    schema = Schema(tables=(Table("Orders", (Column("Id", "integer", primary_key=True),
                                              Column("total", "numeric", comment="in euros"))),),
                    dialect="postgres")
    text = render_create(schema)
    assert 'CREATE TABLE "Orders"' in text and '"Id" integer PRIMARY KEY' in text and "-- in euros" in text
