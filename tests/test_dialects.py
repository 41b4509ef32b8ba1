"""The model's SQL carried into the engine's dialect (sqlglot), and the road that does it."""

import slimsql
from slimsql.backends.scripted import ScriptedBackend
from slimsql.infer import dialects
from slimsql.schema import Column, Schema, Table, quote, quote_table, render_create


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
    assert quote("Unit.Price", "duckdb") == '"Unit.Price"'  # a column name with a dot is one name
    assert quote_table("sales.Regions", "postgres") == 'sales."Regions"' and quote_table("a.b") == '"a.b"'
    schema = Schema(tables=(Table("Orders", (Column("Id", "integer", primary_key=True),
                                              Column("total", "numeric", comment="in euros"))),),
                    dialect="postgres")
    text = render_create(schema)
    assert 'CREATE TABLE "Orders"' in text and '"Id" integer PRIMARY KEY' in text and "-- in euros" in text


# -- on PostgreSQL and DuckDB: the same road, another dialect --------------------------------

from .pg_support import pg_cluster, pg_shop  # noqa: E402,F401  (fixtures)


def test_on_postgresql_sqlite_functions_are_transpiled_and_the_prompt_names_postgresql(pg_shop):
    backend = ScriptedBackend(["SELECT strftime('%Y', placed) AS year, count(*) FROM orders "
                               "WHERE placed IS NOT NULL GROUP BY 1 ORDER BY 1"])
    conn = slimsql.connect(pg_shop.url(pg_shop.reader), backend=backend, preset="fast")
    try:
        answer = conn.ask("How many orders per year?")
    finally:
        conn.close()
    assert "TO_CHAR" in answer.sql and answer.rows == [("2024", 3)]
    assert answer.trace.winner.repairs == ("transpiled from sqlite to postgres",)
    messages, _ = backend.calls[0]
    assert "PostgreSQL expert" in messages[0]["content"] and "-- City of the billing address" in messages[1]["content"]
    assert "sales.regions" in messages[1]["content"]  # outside the default schema, named with it


def test_on_postgresql_value_linking_reads_the_values(pg_shop):
    backend = ScriptedBackend(["SELECT count(*) FROM customers WHERE city = 'Oslo'"])
    conn = slimsql.connect(pg_shop.url(pg_shop.reader), backend=backend, preset="fast", values=True)
    try:
        answer = conn.ask("How many customers are in oslo?")
    finally:
        conn.close()
    assert answer.rows == [(1,)] and "customers.city = 'Oslo'" in answer.trace.values


def test_on_csv_files_the_road_runs_in_duckdb(tmp_path):
    (tmp_path / "orders.csv").write_text("id,city,total\n1,Paris,10.5\n2,Oslo,3\n3,Paris,1\n")
    backend = ScriptedBackend(["SELECT city, IFNULL(SUM(total), 0) AS t FROM orders GROUP BY city ORDER BY t DESC"])
    conn = slimsql.connect([tmp_path / "orders.csv"], backend=backend, preset="fast")
    try:
        answer = conn.ask("Total per city?")
    finally:
        conn.close()
    assert answer.rows == [("Paris", 11.5), ("Oslo", 3.0)]
    messages, _ = backend.calls[0]
    assert "DuckDB expert" in messages[0]["content"]


def test_the_cli_asks_and_refuses_on_postgresql(pg_shop, monkeypatch, capsys):
    import json

    from slimsql import cli

    backend = ScriptedBackend(["SELECT count(*) AS n FROM orders WHERE status = 'new'"])
    monkeypatch.setattr("slimsql.connection.load_backend", lambda name, **kw: backend)
    url = pg_shop.url(pg_shop.reader)
    assert cli.main(["ask", "--db", url, "--json", "How many new orders?"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == [[2]]
    assert cli.main(["sql", "--db", url, "DELETE FROM orders"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "only read-only queries may run" in err


def test_grammar_says_plainly_it_is_sqlite_only(pg_shop):
    import pytest

    from slimsql.errors import InputError

    conn = slimsql.connect(pg_shop.url(pg_shop.reader), backend=ScriptedBackend(["SELECT 1"]), preset="fast",
                           grammar=True)
    try:
        with pytest.raises(InputError, match="only SQLite"):
            conn.ask("anything")
    finally:
        conn.close()


def test_serve_names_a_postgresql_database_by_its_name_and_hides_the_password(pg_shop):
    import pytest

    from slimsql.errors import InputError
    from slimsql.infer import resolve
    from slimsql.serve.service import Service, database_names

    url = pg_shop.url(pg_shop.reader)
    named = database_names([url])
    assert named == {"shop": url}
    with pytest.raises(InputError) as info:
        database_names(["postgresql://u:hunter2@h/shop", "/data/shop.sqlite"])
    assert "hunter2" not in str(info.value) and "u:***@h/shop" in str(info.value)
    service = Service(named, ScriptedBackend(["SELECT 1"]), resolve("fast"), connections=1)
    try:
        assert service.list_databases()[0]["name"] == "shop" and service.list_databases()[0]["dialect"] == "postgres"
        assert service.run_sql("shop", "SELECT count(*) FROM orders")["rows"] == [[4]]
    finally:
        service.close()


def test_a_badly_encoded_password_is_not_echoed():
    import pytest

    from slimsql.db import open_database
    from slimsql.errors import DatabaseError

    with pytest.raises(DatabaseError) as info:
        open_database("postgresql://u:se%zzcret@localhost/db")
    assert "zzcret" not in str(info.value) and "\n" not in str(info.value)
