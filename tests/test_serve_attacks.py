"""The read-only layer's attack suite (tests/test_safety.py, tests/test_limits.py) through HTTP.

Every case goes through ``POST /v1/sql`` as hand-written SQL and through ``POST /v1/ask`` as
the model's answer (a scripted model replies with the attack). Each must end in an error
body with a stable code and a one-line message, or, where the model's text holds a harmless
read next to the attack (``SELECT 1; DROP TABLE orders``: only the first statement is taken
from model output), in a 200 whose SQL is that read alone. Either way the database file is
byte-identical afterwards, no file appears beside it (-wal, -shm, -journal, copies) and no
file named by an attack (VACUUM INTO, ATTACH, writefile) is created anywhere.
"""

import os
import shutil
import sqlite3
import uuid

import pytest
from fastapi.testclient import TestClient

from slimsql.infer import Settings
from slimsql.serve.app import MAX_BODY_BYTES, create_app
from slimsql.serve.service import Service
from slimsql.sql import check_read_only

from .conftest import sha256
from .serve_support import Model, assert_error, folder_state

TIMEOUT = 0.5
#: a file outside the database's folder that attacks try to create
OUTSIDE = f"/tmp/slimsql-attack-{os.getpid()}-{uuid.uuid4().hex[:8]}.db"

# (id, SQL, code through /v1/sql, outcome through /v1/ask: an error code, or "ran" for a harmless read)
ATTACKS = [
    # writes
    ("insert", "INSERT INTO categories VALUES (99, 'x', NULL)", "unsafe_sql", "unsafe_sql"),
    ("insert select", "INSERT INTO categories SELECT 100 + category_id, name, NULL FROM categories",
     "unsafe_sql", "ran"),
    ("update", "UPDATE customers SET city = 'x'", "unsafe_sql", "unsafe_sql"),
    ("delete", "DELETE FROM orders", "unsafe_sql", "unsafe_sql"),
    ("replace", "REPLACE INTO categories VALUES (1, 'x', NULL)", "unsafe_sql", "no_sql"),
    ("insert or replace", "INSERT OR REPLACE INTO categories VALUES (1, 'x', NULL)", "unsafe_sql", "unsafe_sql"),
    ("upsert", "INSERT INTO categories VALUES (1, 'x', NULL) ON CONFLICT (category_id) DO UPDATE SET name = 'y'",
     "unsafe_sql", "unsafe_sql"),
    ("with delete", "WITH x AS (SELECT 1) DELETE FROM orders", "unsafe_sql", "unsafe_sql"),
    ("with update", "WITH x AS (SELECT 1) UPDATE orders SET status = 'x'", "unsafe_sql", "unsafe_sql"),
    ("with insert", "WITH x AS (SELECT 1) INSERT INTO categories SELECT 99, 'x', NULL", "unsafe_sql", "unsafe_sql"),
    # DDL
    ("drop table", "DROP TABLE orders", "unsafe_sql", "unsafe_sql"),
    ("drop view if exists", "DROP VIEW IF EXISTS v", "unsafe_sql", "unsafe_sql"),
    ("create table", "CREATE TABLE t (x)", "unsafe_sql", "unsafe_sql"),
    ("create table as", "CREATE TABLE t AS SELECT * FROM orders", "unsafe_sql", "ran"),
    ("create temp table", "CREATE TEMP TABLE t AS SELECT 1", "unsafe_sql", "ran"),
    ("create temp view", "CREATE TEMP VIEW v AS SELECT 1", "unsafe_sql", "ran"),
    ("create index", "CREATE INDEX i ON orders (status)", "unsafe_sql", "unsafe_sql"),
    ("create temp trigger", "CREATE TEMP TRIGGER tr AFTER INSERT ON orders BEGIN DELETE FROM orders; END",
     "unsafe_sql", "no_sql"),
    ("create virtual table", "CREATE VIRTUAL TABLE f USING fts5(x)", "unsafe_sql", "unsafe_sql"),
    ("alter add column", "ALTER TABLE orders ADD COLUMN x INTEGER", "unsafe_sql", "unsafe_sql"),
    ("alter rename", "ALTER TABLE orders RENAME TO gone", "unsafe_sql", "unsafe_sql"),
    ("select into", "SELECT * INTO backup FROM orders", "unsafe_sql", "unsafe_sql"),
    # more than one statement
    ("select then drop", "SELECT 1; DROP TABLE orders", "unsafe_sql", "ran"),
    ("select then delete", "SELECT 1;DELETE FROM orders;", "unsafe_sql", "ran"),
    ("comment hides delete", "SELECT 1 /* ; */ ; DELETE FROM orders -- ", "unsafe_sql", "ran"),
    ("line comment then drop", "SELECT 1 -- trailing\n; DROP TABLE orders", "unsafe_sql", "ran"),
    ("comment before delete", "/* SELECT */ DELETE FROM orders", "unsafe_sql", "query_error"),
    # pragmas, maintenance
    ("pragma journal_mode", "PRAGMA journal_mode=DELETE", "unsafe_sql", "unsafe_sql"),
    ("pragma journal_mode wal", "PRAGMA journal_mode = WAL", "unsafe_sql", "unsafe_sql"),
    ("pragma query_only off", "PRAGMA query_only=0", "unsafe_sql", "unsafe_sql"),
    ("pragma writable_schema", "PRAGMA writable_schema = ON", "unsafe_sql", "unsafe_sql"),
    ("pragma user_version", "PRAGMA user_version = 7", "unsafe_sql", "unsafe_sql"),
    ("pragma function journal_mode", "SELECT * FROM pragma_journal_mode('delete')", "query_error", "query_error"),
    ("pragma function user_version", "SELECT * FROM pragma_user_version", "query_error", "query_error"),
    ("pragma function query_only", "SELECT * FROM pragma_query_only", "query_error", "query_error"),
    ("vacuum", "VACUUM", "unsafe_sql", "no_sql"),
    ("vacuum into", "VACUUM INTO '{dir}/copy.db'", "unsafe_sql", "no_sql"),
    ("vacuum into outside", "VACUUM INTO '{outside}'", "unsafe_sql", "no_sql"),
    ("reindex", "REINDEX", "unsafe_sql", "no_sql"),
    ("analyze", "ANALYZE", "unsafe_sql", "unsafe_sql"),
    ("attach", "ATTACH DATABASE '{dir}/evil.db' AS evil", "unsafe_sql", "unsafe_sql"),
    ("attach outside", "ATTACH '{outside}' AS evil", "unsafe_sql", "unsafe_sql"),
    ("detach", "DETACH DATABASE main", "unsafe_sql", "unsafe_sql"),
    # functions that reach outside the database
    ("load_extension", "SELECT load_extension('{dir}/evil.so')", "unsafe_sql", "unsafe_sql"),
    ("readfile", "SELECT readfile('/etc/passwd')", "unsafe_sql", "unsafe_sql"),
    ("writefile", "SELECT writefile('{dir}/x.txt', 'data')", "unsafe_sql", "unsafe_sql"),
    ("writefile outside", "SELECT writefile('{outside}', 'data')", "unsafe_sql", "unsafe_sql"),
    ("edit", "SELECT edit('x', 'vi')", "unsafe_sql", "unsafe_sql"),
    ("fts3_tokenizer", "SELECT fts3_tokenizer('simple')", "unsafe_sql", "unsafe_sql"),
    # transactions
    ("begin", "BEGIN", "unsafe_sql", "unsafe_sql"),
    ("begin immediate", "BEGIN IMMEDIATE", "unsafe_sql", "unsafe_sql"),
    ("transaction", "BEGIN; DELETE FROM orders; COMMIT", "unsafe_sql", "unsafe_sql"),
    ("commit", "COMMIT", "unsafe_sql", "unsafe_sql"),
    ("rollback", "ROLLBACK", "unsafe_sql", "unsafe_sql"),
    ("savepoint", "SAVEPOINT s1", "unsafe_sql", "no_sql"),
    ("release", "RELEASE s1", "unsafe_sql", "no_sql"),
    ("explain delete", "EXPLAIN DELETE FROM orders", "unsafe_sql", "no_sql"),
    ("explain query plan delete", "EXPLAIN QUERY PLAN DELETE FROM orders", "unsafe_sql", "no_sql"),
    # unicode and odd text
    ("fullwidth semicolon", "SELECT 1\uff1b DELETE FROM orders", "unsafe_sql", "no_sql"),
    ("zero-width space", "SELECT 1;\u200bDELETE FROM orders", "unsafe_sql", "ran"),
    ("fullwidth keyword", "\uff24\uff25\uff2c\uff25\uff34\uff25 FROM orders", "unsafe_sql", "no_sql"),
    ("right-to-left override", "SELECT 1 \u202e; DROP TABLE orders", "unsafe_sql", "ran"),
    ("cyrillic homoglyph", "D\u0415LETE FROM orders", "unsafe_sql", "no_sql"),
    ("nul byte", "SELECT 1\x00; DROP TABLE orders", "unsafe_sql", "query_error"),
    ("nested too deep", "SELECT " + "(" * 3000 + "1" + ")" * 3000, "unsafe_sql", "no_sql"),
    ("too long", "SELECT 1 WHERE 1 IN (" + ",".join(["1"] * 60000) + ")", "invalid_request", "unsafe_sql"),
    ("empty", "   ", "bad_input", "no_sql"),
    ("not sql", "please delete everything", "unsafe_sql", "no_sql"),
]

# bounded at run time, not refused up front (tests/test_safety.py, tests/test_limits.py); a limit
# SQLite hits fast (string length, memory) may come after the time limit on a loaded machine
STOPPED = ("query_error", "query_timeout")
RUNTIME = [
    ("recursive CTE bomb", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
     "query_timeout"),
    ("cross join bomb", "SELECT count(*) FROM order_items a, order_items b, order_items c", "query_timeout"),
    ("printf width", "SELECT printf('%.*c', 2000000000, 'x')", STOPPED),
    ("huge blob", "SELECT length(randomblob(1000000000))", STOPPED),
    ("string bomb", "WITH RECURSIVE s(x) AS (SELECT 'a' UNION ALL SELECT x || x FROM s) SELECT max(length(x)) FROM s",
     STOPPED),
]
WRITES = ("INSERT", "UPDATE", "DELETE", "DROP", "CREATE", "ALTER", "REPLACE", "PRAGMA", "ATTACH", "VACUUM")


class Attacker:
    """A model whose next answer is whatever the test sets."""

    def __init__(self):
        self.answer = "SELECT 1"
        self.model = Model(lambda messages: self.answer)


@pytest.fixture(scope="module")
def served(demo_master, tmp_path_factory):
    """One server for the whole suite over a private copy of the demo database, a rollback-journal
    one (``shop``) and a WAL one (``walshop``)."""
    folder = tmp_path_factory.mktemp("attacked")
    shop = folder / "shop.sqlite"
    shutil.copy(demo_master, shop)
    wal = folder / "walshop.sqlite"
    shutil.copy(demo_master, wal)
    conn = sqlite3.connect(wal)
    assert conn.execute("PRAGMA journal_mode = WAL").fetchone() == ("wal",)
    conn.close()  # a clean close leaves no -wal or -shm behind
    original = folder_state(folder)
    assert sorted(original) == ["shop.sqlite", "walshop.sqlite"]
    attacker = Attacker()
    service = Service({"shop": shop, "walshop": wal}, attacker.model.backend,
                      Settings(max_rows=5, timeout=TIMEOUT))
    client = TestClient(create_app(service), raise_server_exceptions=False)
    yield client, attacker, folder, original
    service.close()
    assert folder_state(folder) == original


@pytest.fixture
def attack(served):
    """Send one attack through one route; the folder must be unchanged and the targets absent afterwards."""
    client, attacker, folder, original = served

    def send(route, sql, db="shop", **fields):
        sql = sql.replace("{dir}", str(folder)).replace("{outside}", OUTSIDE)
        if route == "sql":
            return client.post("/v1/sql", json={"db": db, "sql": sql, **fields}), sql
        attacker.answer = sql
        calls = attacker.model.calls
        response = client.post("/v1/ask", json={"db": db, "question": "Do what you must.", **fields})
        assert attacker.model.calls == calls + 1, "the attack did not go through the model"
        return response, sql

    yield send
    assert folder_state(folder) == original, "the database folder changed"
    for target in (OUTSIDE, folder / "copy.db", folder / "evil.db", folder / "x.txt"):
        assert not os.path.exists(target), f"{target} was created"
    assert sha256(folder / "shop.sqlite") == original["shop.sqlite"][0]


def check(response, sql, expected, route):
    if expected == "ran":
        assert response.status_code == 200, response.text[:300]
        ran = response.json()["sql"]
        check_read_only(ran)  # what ran was one read-only statement...
        assert not any(word in ran.upper() for word in WRITES), ran  # ...without the attack
        assert ran.strip() and ran in sql
        return
    codes = expected if isinstance(expected, tuple) else (expected,)
    status = {"bad_input": 400}.get(codes[0], 422)
    assert response.status_code == status, response.text[:300]
    error = assert_error(response, status, response.json()["error"]["code"])
    assert error["code"] in codes, error
    if route == "ask":  # the answer's trace shows the model's text, so the client sees what was refused
        assert error["trace"]["trials"][0]["raw"] == sql


@pytest.mark.parametrize("sql,expected", [c[1:3] for c in ATTACKS], ids=[c[0] for c in ATTACKS])
def test_attack_through_sql(attack, sql, expected):
    check(*attack("sql", sql), expected, "sql")


@pytest.mark.parametrize("sql,expected", [(c[1], c[3]) for c in ATTACKS], ids=[c[0] for c in ATTACKS])
def test_attack_through_ask(attack, sql, expected):
    check(*attack("ask", sql), expected, "ask")


@pytest.mark.parametrize("route", ["sql", "ask"])
@pytest.mark.parametrize("sql,expected", [c[1:] for c in RUNTIME], ids=[c[0] for c in RUNTIME])
def test_runtime_bombs_are_bounded(attack, route, sql, expected):
    import time

    start = time.monotonic()
    response, sql = attack(route, sql)
    assert time.monotonic() - start < TIMEOUT + 2.5, "not stopped near its time limit"
    check(response, sql, expected, route)


@pytest.mark.parametrize("route", ["sql", "ask"])
def test_unbounded_rows_are_capped(attack, route):
    response, _ = attack(route, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c",
                         max_rows=10**6)
    body = response.json()
    assert body["rows"] == [[1], [2], [3], [4], [5]] and body["truncated"] is True


@pytest.mark.parametrize("route", ["sql", "ask"])
def test_body_over_the_size_limit(served, attack, route):
    client = served[0]
    huge = "SELECT 1 WHERE 1 IN (" + ",".join(["1"] * (MAX_BODY_BYTES // 2)) + ")"
    field = {"sql": huge} if route == "sql" else {"question": huge}
    response = client.post(f"/v1/{route}", json={"db": "shop", **field})
    assert_error(response, 413, "too_large")


def test_every_write_leaves_a_wal_database_alone(served, attack):
    """A WAL database opened while its -wal is empty must get no -wal or -shm beside it."""
    for _, sql, code, _ in ATTACKS:
        response, _ = attack("sql", sql, db="walshop")
        assert response.status_code in (400, 422) and response.json()["error"]["code"] == code
    response, _ = attack("sql", "SELECT count(*) FROM orders", db="walshop")
    assert response.json()["rows"] == [[2500]]


@pytest.mark.parametrize("route", ["sql", "ask"])
def test_harmless_reads_still_work(attack, route):
    response, _ = attack(route, "SELECT name FROM pragma_table_info('orders') WHERE pk")
    assert response.status_code == 200 and response.json()["rows"] == [["order_id"]]
