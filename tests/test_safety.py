"""Adversarial suite for the read-only execution layer.

Every case must end in a clear SlimsqlError (or a capped result), and the
database file must be byte-identical afterwards, with no file created beside it.
"""

import os

import pytest

from slimsql.db.sqlite import SQLiteDatabase
from slimsql.errors import QueryError, QueryTimeout, SlimsqlError, UnsafeSQLError

from .conftest import sha256

REJECTED = [
    ("delete", "DELETE FROM orders"),
    ("update", "UPDATE customers SET city = 'x'"),
    ("insert", "INSERT INTO categories VALUES (99, 'x', NULL)"),
    ("upsert", "INSERT INTO categories VALUES (1, 'x', NULL) ON CONFLICT DO NOTHING"),
    ("replace", "REPLACE INTO categories VALUES (1, 'x', NULL)"),
    ("drop", "DROP TABLE orders"),
    ("create", "CREATE TABLE t (x)"),
    ("create temp", "CREATE TEMP TABLE t AS SELECT 1"),
    ("create view", "CREATE VIEW v AS SELECT 1"),
    ("create index", "CREATE INDEX i ON orders (status)"),
    ("create trigger", "CREATE TRIGGER tr AFTER INSERT ON orders BEGIN DELETE FROM orders; END"),
    ("alter", "ALTER TABLE orders ADD COLUMN x INTEGER"),
    ("two statements", "SELECT 1; DELETE FROM orders"),
    ("select then drop", "SELECT * FROM orders; DROP TABLE orders;"),
    ("with delete", "WITH x AS (SELECT 1) DELETE FROM orders"),
    ("with update", "WITH x AS (SELECT 1) UPDATE orders SET status = 'x'"),
    ("with insert", "WITH x AS (SELECT 1) INSERT INTO categories SELECT 99, 'x', NULL"),
    ("attach", "ATTACH DATABASE '{dir}/evil.db' AS evil"),
    ("detach", "DETACH DATABASE main"),
    ("pragma writable_schema", "PRAGMA writable_schema = ON"),
    ("pragma query_only off", "PRAGMA query_only = OFF"),
    ("pragma journal_mode", "PRAGMA journal_mode = WAL"),
    ("vacuum", "VACUUM"),
    ("vacuum into", "VACUUM INTO '{dir}/copy.db'"),
    ("load_extension", "SELECT load_extension('{dir}/evil.so')"),
    ("readfile", "SELECT readfile('/etc/passwd')"),
    ("writefile", "SELECT writefile('{dir}/x.txt', 'data')"),
    ("transaction", "BEGIN; DELETE FROM orders; COMMIT"),
    ("begin", "BEGIN IMMEDIATE"),
    ("savepoint", "SAVEPOINT s1"),
    ("select into", "SELECT * INTO backup FROM orders"),
    ("reindex", "REINDEX"),
    ("analyze", "ANALYZE"),
    ("explain delete", "EXPLAIN DELETE FROM orders"),
    ("comment hides semicolon", "SELECT 1 /* ; */ ; DELETE FROM orders -- "),
    ("line comment then statement", "SELECT 1 -- trailing\n; DROP TABLE orders"),
    ("fullwidth semicolon", "SELECT 1\uff1b DELETE FROM orders"),
    ("zero-width space", "SELECT 1;\u200bDELETE FROM orders"),
    ("fullwidth keyword", "\uff24\uff25\uff2c\uff25\uff34\uff25 FROM orders"),
    ("nested too deep", "SELECT " + "(" * 3000 + "1" + ")" * 3000),
    ("empty", "   "),
    ("not sql", "please delete everything"),
]

RUNTIME_LIMITS = [
    ("recursive CTE bomb", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
     QueryTimeout),
    ("cross join bomb", "SELECT count(*) FROM order_items a, order_items b, order_items c", QueryTimeout),
    ("huge blob", "SELECT length(randomblob(1000000000))", QueryError),
    ("huge zeroblob", "SELECT zeroblob(2000000000)", QueryError),
    ("string bomb", "WITH RECURSIVE s(x) AS (SELECT 'a' UNION ALL SELECT x || x FROM s) SELECT max(length(x)) FROM s",
     QueryError),
]


@pytest.fixture
def guarded(demo_db):
    before = sha256(demo_db), sorted(os.listdir(demo_db.parent)), demo_db.stat().st_mtime_ns
    db = SQLiteDatabase(demo_db, timeout=0.5, max_rows=50)
    yield db
    db.close()
    after = sha256(demo_db), sorted(os.listdir(demo_db.parent)), demo_db.stat().st_mtime_ns
    assert after == before, "database file or its folder changed"


@pytest.mark.parametrize("sql", [c[1] for c in REJECTED], ids=[c[0] for c in REJECTED])
def test_rejected_with_clear_error(guarded, demo_db, sql):
    with pytest.raises(UnsafeSQLError) as info:
        guarded.execute(sql.replace("{dir}", str(demo_db.parent)))
    message = str(info.value)
    assert message.startswith("not run:") and "\n" not in message


@pytest.mark.parametrize("sql,error", [c[1:] for c in RUNTIME_LIMITS], ids=[c[0] for c in RUNTIME_LIMITS])
def test_runtime_limits(guarded, sql, error):
    with pytest.raises(error) as info:
        guarded.execute(sql)
    assert "\n" not in str(info.value)


def test_unbounded_rows_are_capped_not_materialised(guarded):
    result = guarded.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c")
    assert len(result.rows) == 50 and result.truncated
    assert result.rows[-1] == (50,)


def test_result_under_cap_is_not_truncated(guarded):
    result = guarded.execute("SELECT name FROM categories ORDER BY category_id")
    assert not result.truncated and result.rows[0] == ("Electronics",)


# The layers below the allow-list must hold on their own: bypass it and try again.
BYPASS = [
    "DELETE FROM orders",
    "UPDATE customers SET city = 'x'",
    "INSERT INTO categories VALUES (99, 'x', NULL)",
    "DROP TABLE orders",
    "CREATE TEMP TABLE t (x)",
    "ATTACH DATABASE '{dir}/evil.db' AS evil",
    "VACUUM INTO '{dir}/copy.db'",
    "VACUUM",
    "PRAGMA writable_schema = ON",
    "PRAGMA query_only = OFF",
    "PRAGMA journal_mode = DELETE",
    "SELECT load_extension('{dir}/evil.so')",
    "SELECT readfile('/etc/passwd')",
    "BEGIN IMMEDIATE",
    "WITH x AS (SELECT 1) DELETE FROM orders",
]


@pytest.mark.parametrize("sql", BYPASS)
def test_connection_layers_deny_without_allow_list(guarded, demo_db, sql):
    with pytest.raises(SlimsqlError):
        guarded._run(sql.replace("{dir}", str(demo_db.parent)))


def test_extension_loading_is_disabled(guarded):
    with pytest.raises(QueryError, match="not authorized|not enabled|no such function"):
        guarded._run("SELECT load_extension('x')")


def test_query_only_is_on(guarded):
    guarded._conn.set_authorizer(None)  # look underneath the authorizer
    assert guarded._conn.execute("PRAGMA query_only").fetchone() == (1,)


def test_read_only_open_refuses_writes_even_without_query_only(demo_db):
    before = sha256(demo_db)
    db = SQLiteDatabase(demo_db)
    db._conn.set_authorizer(None)
    db._conn.execute("PRAGMA query_only = OFF")
    with pytest.raises(Exception, match="readonly"):
        db._conn.execute("DELETE FROM orders")
    db.close()
    assert sha256(demo_db) == before
