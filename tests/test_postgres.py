"""The PostgreSQL engine: registry, introspection, limits, errors, read-only sessions."""

import json
import subprocess
import sys
import threading
import time

import pytest

from slimsql.db import engine_class, open_database
from slimsql.db.limits import Limits
from slimsql.db.postgres import PostgresDatabase
from slimsql.errors import DatabaseError, InputError, QueryError, QueryTimeout, SlimsqlError
from slimsql.schema import render_create

from .pg_support import pg_cluster, pg_shop  # noqa: F401  (fixtures)

SECRET = "s3cretPW"


@pytest.fixture
def db(pg_shop):
    with PostgresDatabase(pg_shop.url(), timeout=5, max_rows=100) as database:
        yield database


@pytest.fixture
def reader_db(pg_shop):
    with PostgresDatabase(pg_shop.url(pg_shop.reader), timeout=5) as database:
        yield database


def test_opens_postgres_urls_only():
    cls = engine_class("postgres")
    assert cls is PostgresDatabase
    assert cls.opens("postgresql://u@host/db") and cls.opens("postgres://u@host/db")
    assert cls.opens("POSTGRESQL://u@host/db")
    assert not cls.opens("shop.sqlite") and not cls.opens("mysql://u@h/db") and not cls.opens("postgresql.db")


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_open_database_picks_postgres(pg_shop, scheme):
    url = pg_shop.url().replace("postgresql://", f"{scheme}://", 1)
    with open_database(url, timeout=3, max_rows=7) as database:
        assert isinstance(database, PostgresDatabase)
        assert database.max_rows == 7 and database.timeout == 3
        assert database.execute("SELECT count(*) FROM orders").rows == [(4,)]


def test_importing_the_module_does_not_import_psycopg():
    code = "import sys, slimsql.db.postgres; print('psycopg' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_missing_psycopg_is_an_input_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg -> ImportError
    with pytest.raises(InputError, match=r"pip install 'slimsql\[postgres\]'"):
        PostgresDatabase("postgresql://u@/db?host=/nonexistent")


def test_schema_has_tables_views_types_keys_and_comments(db):
    schema = db.schema()
    assert schema.dialect == "postgres"
    names = schema.names()
    assert names[:6] == ["big_orders", "city_totals", "customers", "order_lines", "orders", "returns"]
    assert "sales.regions" in names  # not in the first search_path schema: qualified
    customers = schema.table("customers")
    assert [c.name for c in customers.columns] == ["id", "name", "city"]
    assert customers.primary_key == ("id",) and customers.comment == "People who placed at least one order"
    city = customers.columns[2]
    assert city.comment == "City of the billing address" and city.type == "text"
    assert set(city.samples) <= {"Paris", "Oslo", "Lima"} and len(city.samples) == 3
    assert customers.columns[0].default.startswith("nextval(")
    orders = schema.table("orders")
    assert [(c.name, c.type, c.nullable) for c in orders.columns] == [
        ("id", "integer", False), ("customer_id", "integer", False), ("status", "text", False),
        ("total", "numeric(10,2)", True), ("placed", "date", True)]
    assert orders.columns[3].samples == ()  # numbers say little: no samples
    assert [(k.columns, k.ref_table, k.ref_columns) for k in orders.foreign_keys] == [
        (("customer_id",), "customers", ("id",))]
    lines = schema.table("order_lines")
    assert lines.primary_key == ("order_id", "line_no") and lines.columns[2].type == "character varying(40)"
    returns = schema.table("returns")
    assert [(k.columns, k.ref_table, k.ref_columns) for k in returns.foreign_keys] == [
        (("order_id", "line_no"), "order_lines", ("order_id", "line_no"))]
    assert schema.table("big_orders").kind == "view" and schema.table("city_totals").kind == "view"
    text = render_create(schema)
    assert "-- People who placed at least one order\nCREATE TABLE customers (" in text
    assert "  city text -- City of the billing address; e.g. '" in text
    assert "PRIMARY KEY (order_id, line_no)" in text
    assert "FOREIGN KEY (order_id, line_no) REFERENCES order_lines (order_id, line_no)" in text


def test_schema_skips_what_the_role_cannot_read(pg_shop):
    pg_shop.cluster.sql("CREATE TABLE IF NOT EXISTS payroll (who text, salary int); "
                        "REVOKE ALL ON payroll FROM reader", dbname=pg_shop.dbname)
    with PostgresDatabase(pg_shop.url(pg_shop.reader)) as reader:
        schema = reader.schema(samples=0)
        assert "payroll" not in schema.names() and "customers" in schema.names()
        assert ("payroll", "no SELECT privilege") in reader.skipped
        assert all(not c.samples for t in schema.tables for c in t.columns)
    with PostgresDatabase(pg_shop.url(), schemas=("sales",)) as only_sales:
        assert only_sales.schema().names() == ["sales.regions"]


def test_row_cap_truncates(db):
    result = db.execute("SELECT g FROM generate_series(1, 5000) g", max_rows=1200)
    assert len(result.rows) == 1200 and result.rows[-1] == (1200,)
    assert result.truncated and result.truncated_by == "rows"
    exact = db.execute("SELECT g FROM generate_series(1, 100) g")
    assert len(exact.rows) == 100 and not exact.truncated and exact.truncated_by == ""


def test_byte_cap_truncates(pg_shop):
    with PostgresDatabase(pg_shop.url(), limits=Limits(max_bytes=20_000)) as small:
        result = small.execute("SELECT repeat('x', 1000) FROM generate_series(1, 100)")
    assert result.truncated and result.truncated_by == "bytes"
    assert 10 <= len(result.rows) < 20


def test_time_limit_stops_the_query_and_the_connection_stays_usable(db):
    start = time.monotonic()
    with pytest.raises(QueryTimeout, match=r"^query stopped after the 1 s time limit$"):
        db.execute("SELECT count(*) FROM generate_series(1, 100000000)", timeout=1)
    assert time.monotonic() - start < 3
    assert db.execute("SELECT 1").rows == [(1,)]


def test_time_limit_covers_all_fetches_together(db):
    # each row costs 0.2 s of a 1 s limit: the fetches together stop, not each one
    start = time.monotonic()
    with pytest.raises(QueryTimeout):
        db._run("SELECT g, pg_sleep(0.2) FROM generate_series(1, 20) g", max_rows=20, timeout=1)
    assert time.monotonic() - start < 2.5


@pytest.mark.parametrize("sql, category, missing", [
    ("SELECT nope FROM orders", "unknown column", ("column", "nope")),
    ("SELECT o.nope FROM orders o", "unknown column", ("column", "nope")),
    ("SELECT id FROM orders, customers", "unknown column", None),
    ("SELECT * FROM nope", "unknown table", ("table", "nope")),
    ("SELECT * FROM public.nope", "unknown table", ("table", "nope")),
    ("SELECT x.id FROM orders", "unknown table", None),
])
def test_errors_are_categorized(db, sql, category, missing):
    with pytest.raises(QueryError) as caught:
        db.execute(sql)
    message = str(caught.value)
    assert message.startswith("the database refused the query: ") and "\n" not in message
    assert db.rules.category(message.lower()) == category
    if missing:
        assert db.rules.missing(missing[0], message.lower()).group("name") == missing[1]


def test_server_syntax_error_is_categorized(db):
    with pytest.raises(QueryError) as caught:
        db._run("SELEC 1")
    assert db.rules.category(str(caught.value).lower()) == "syntax"


@pytest.mark.parametrize("url", [
    "postgresql://reader:{pw}@/shop?host=/nonexistent-dir&port=5432",
    "postgresql://reader:{pw}@/no_such_db?host={host}&port={port}",
    "postgresql://nobody_here:{pw}@/shop?host={host}&port={port}",
    "postgresql://reader:{pw}@127.0.0.1:1/shop",
    "postgresql://reader:{pw}@[bad/shop",
    "postgres://reader:{pw}@/shop?not_a_parameter=1",
])
def test_connection_errors_are_one_line_without_the_password(pg_shop, url):
    from urllib.parse import quote

    target = url.format(pw=SECRET, host=quote(pg_shop.cluster.host, safe=""), port=pg_shop.cluster.port)
    start = time.monotonic()
    with pytest.raises(DatabaseError) as caught:
        PostgresDatabase(target, timeout=3)
    message = str(caught.value)
    assert SECRET not in message and SECRET.lower() not in message.lower()
    assert "\n" not in message and message
    assert time.monotonic() - start < 10


def test_values_are_json_friendly(db):
    result = db.execute("SELECT 1.50::numeric, 2::numeric, DATE '2024-01-05', TIMESTAMP '2024-01-05 10:00',"
                        " '\\x0102'::bytea, gen_random_uuid() IS NOT NULL, ARRAY[1.5, 2]::numeric[],"
                        " '{\"a\": 1}'::jsonb, INTERVAL '1 day'")
    (row,) = result.rows
    assert row[:6] == (1.5, 2, "2024-01-05", "2024-01-05T10:00:00", b"\x01\x02", True)
    assert row[6] == [1.5, 2] and row[7] == {"a": 1} and isinstance(row[8], str)
    assert isinstance(row[1], int)
    json.dumps([v for v in row if not isinstance(v, bytes)])


def test_session_is_read_only_even_for_the_superuser(db, pg_shop):
    assert db._run("SELECT current_user, current_setting('is_superuser')").rows == [("postgres", "on")]
    assert db._run("SELECT current_setting('default_transaction_read_only')").rows == [("on",)]
    assert db._run("SELECT current_setting('transaction_read_only')").rows == [("on",)]
    assert db._run("SELECT current_setting('application_name')").rows == [("slimsql",)]
    with pytest.raises(QueryError, match="read-only transaction"):
        db._run("SELECT nextval('customers_id_seq')")
    with pytest.raises(QueryError, match="read-only transaction"):
        db._run("SELECT * FROM orders FOR UPDATE")


def test_lost_connection_reconnects_on_the_next_call(db, pg_shop):
    assert db.execute("SELECT 1").rows == [(1,)]
    pg_shop.cluster.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = 'slimsql' AND pid <> pg_backend_pid()")
    with pytest.raises(QueryError, match="lost the connection"):
        db.execute("SELECT 1")
    assert db.execute("SELECT 2").rows == [(2,)]


def test_calls_from_threads_are_serialised(db):
    results, errors = [], []

    def ask(n):
        try:
            results.append(db.execute(f"SELECT {n}, count(*) FROM orders").rows[0])
        except SlimsqlError as err:  # pragma: no cover - the assertion below reports it
            errors.append(err)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(results) == [(n, 4) for n in range(8)]


def test_reader_role_reads_and_close_is_idempotent(reader_db):
    assert reader_db.execute("SELECT name FROM customers ORDER BY id").rows == [("Ada",), ("Bo",), ("Cy",)]
    assert reader_db._run("SELECT current_setting('is_superuser')").rows == [("off",)]
    reader_db.close()
    reader_db.close()
    reader_db.__del__()
