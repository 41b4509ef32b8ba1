"""Issue 8: every query bounded in time and memory, every harmless query works.

Each hostile case checks that the database file (and its folder) is unchanged,
that the call returned within its time limit plus a small margin, and, where it
matters, that this process's memory did not grow (the work happened in the
worker, which its own limits stop).
"""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest

from slimsql.db.limits import Limits
from slimsql.db.sqlite import SQLiteDatabase
from slimsql.errors import DatabaseError, InputError, QueryError, QueryTimeout, UnsafeSQLError

from .conftest import sha256

TIMEOUT = 1.0
MARGIN = 2.0  # start-up of a fresh worker, the kill grace, a loaded CI machine
MiB = 1024 * 1024


def rss() -> int:
    with open("/proc/self/status") as handle:
        return int(handle.read().split("VmRSS:")[1].split()[0]) * 1024


def cli(*args):
    return subprocess.run([sys.executable, "-m", "slimsql.cli", *args], capture_output=True, timeout=60)


def snapshot(path):
    folder = path.parent
    return {name: sha256(folder / name) for name in sorted(os.listdir(folder))}


@contextmanager
def bounded(path, seconds=TIMEOUT + MARGIN, memory=150 * MiB):
    before, grown, start = snapshot(path), rss(), time.monotonic()
    yield
    assert time.monotonic() - start < seconds, "took longer than its bound"
    assert rss() - grown < memory, "this process's memory grew"
    assert snapshot(path) == before, "a file changed or appeared"


@pytest.fixture
def db(demo_db):
    with SQLiteDatabase(demo_db, timeout=TIMEOUT, max_rows=1000) as database:
        yield database


def _cte_chain(depth, materialized=""):
    parts = ["a0(x) AS (SELECT 1)"]
    parts += [f"a{i}(x) AS {materialized}(SELECT p.x FROM a{i - 1} p, a{i - 1} q)" for i in range(1, depth + 1)]
    return "WITH " + ", ".join(parts) + f" SELECT count(*) FROM a{depth}"


HOSTILE = [
    ("planning: self-joined CTE chain", _cte_chain(30)),
    ("planning: NOT MATERIALIZED chain", _cte_chain(30, "NOT MATERIALIZED ")),
    ("one step: printf width", "SELECT printf('%.*c', 2000000000, 'x')"),
    ("one step: quadratic replace",
     "SELECT length(replace(printf('%.*c', 8000000, 'x'), 'x', printf('%.*c', 2, 'y')))"),
    ("one step: quadratic instr",
     "WITH s(v) AS (SELECT printf('%.*c', 8000000, 'a')) "
     "SELECT instr(v || 'b', printf('%.*c', 4000000, 'a') || 'b') FROM s"),
    ("one step: trim", "SELECT length(trim(printf('%.*c', 8000000, 'x'), printf('%.*c', 8000000, 'y')))"),
    ("rows of big cells", "SELECT printf('%.*c', 16000000, 'x') FROM orders"),
]


@pytest.mark.parametrize("sql", [c[1] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_queries_are_bounded(db, demo_db, sql):
    with bounded(demo_db):
        try:
            result = db.execute(sql)
        except QueryError as err:  # QueryTimeout included
            assert "\n" not in str(err)
        else:  # a result is allowed, but only a small one
            assert sum(len(str(v)) for row in result.rows for v in row) <= db.limits.max_bytes
    assert db.execute("SELECT count(*) FROM categories").rows  # the connection still works afterwards


def test_generated_column_bomb(tmp_path):
    path = tmp_path / "gen.sqlite"
    with sqlite3.connect(path) as conn:  # added after the insert, so building the file computes nothing
        conn.execute("CREATE TABLE t (a INTEGER)")
        conn.execute("INSERT INTO t (a) VALUES (1)")
        conn.execute("ALTER TABLE t ADD COLUMN b TEXT GENERATED ALWAYS AS (printf('%.*c', 2000000000, 'x')) VIRTUAL")
    conn.close()
    with bounded(path, seconds=2 * TIMEOUT + 2 * MARGIN), SQLiteDatabase(path, timeout=TIMEOUT) as database:
        with pytest.raises(QueryError):
            database.execute("SELECT b FROM t")
        schema = database.schema()  # samples of t time out; the schema still answers
        assert schema.table("t") is not None


def test_result_byte_cap_truncates_with_reason(demo_db):
    with bounded(demo_db, memory=120 * MiB), SQLiteDatabase(demo_db, limits=Limits(max_bytes=40 * MiB)) as database:
        result = database.execute("SELECT zeroblob(16000000) FROM orders")
        assert result.truncated and result.truncated_by == "bytes" and len(result.rows) == 2
        small = database.execute("SELECT order_id FROM orders", max_rows=10)
        assert small.truncated and small.truncated_by == "rows"


def test_parse_size_is_capped_before_the_allow_list(db, demo_db):
    huge_in = "SELECT * FROM orders WHERE order_id IN (" + ",".join(map(str, range(150_000))) + ")"
    with bounded(demo_db, seconds=1.0):
        with pytest.raises(UnsafeSQLError, match="characters long"):
            db.execute(huge_in)


def test_lock_wait_is_within_the_time_limit(demo_db):
    database = SQLiteDatabase(demo_db, timeout=TIMEOUT)
    writer = sqlite3.connect(demo_db)
    writer.execute("BEGIN EXCLUSIVE")
    try:
        start = time.monotonic()
        with pytest.raises(QueryError, match="locked"):
            database.execute("SELECT count(*) FROM orders")
        assert time.monotonic() - start < TIMEOUT + MARGIN
        database.close()
        start = time.monotonic()
        with pytest.raises(DatabaseError, match="locked"):
            SQLiteDatabase(demo_db, timeout=TIMEOUT)
        assert time.monotonic() - start < TIMEOUT + MARGIN
    finally:
        writer.rollback()
        writer.close()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0, -1, 1e12])
def test_time_limits_must_be_finite_and_positive(demo_db, value):
    with pytest.raises(InputError):
        SQLiteDatabase(demo_db, timeout=value)
    with SQLiteDatabase(demo_db) as database, pytest.raises(InputError):
        database.execute("SELECT 1", timeout=value)


def test_cli_rejects_unbounded_limits(demo_db):
    for flag, value in (("--timeout", "nan"), ("--timeout", "inf"), ("--max-rows", "99999999999999999999")):
        out = cli("sql", "--db", str(demo_db), flag, value, "SELECT 1")
        assert out.returncode == 2 and out.stderr.decode().startswith("error:"), out.stderr


def test_worker_killed_at_deadline_is_replaced(db):
    with pytest.raises(QueryTimeout):
        db.execute("SELECT printf('%.*c', 2000000000, 'x')")
    assert db._worker.killed == 1
    assert db.execute("SELECT 1 + 1").rows == [(2,)]


def test_many_threads_share_one_connection(db):
    results, errors = [], []

    def work(i):
        try:
            results.append(db.execute(f"SELECT {i} + count(*) FROM categories").rows[0][0])
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    count = db.execute("SELECT count(*) FROM categories").rows[0][0]
    assert not errors and sorted(results) == [i + count for i in range(16)]


# -- harmless queries -------------------------------------------------------------

HARMLESS = [
    ("SELECT name FROM pragma_table_info('orders') WHERE pk", [("order_id",)]),
    ("SELECT count(*) > 0 FROM pragma_index_list('orders')", None),
    ("SELECT \"table\" FROM pragma_foreign_key_list('orders') ORDER BY 1", None),
    ("SELECT name FROM pragma_table_list WHERE name = 'orders'", [("orders",)]),
    ("SELECT value FROM json_each('[1, 2]')", [(1,), (2,)]),
    ("SELECT key FROM json_tree('{\"a\": 1}') WHERE key = 'a'", [("a",)]),
    ("VALUES (1), (2)", [(1,), (2,)]),
    ("SELECT ~~1", [(1,)]),
    ("SELECT o.order_id FROM orders o JOIN pragma_table_info('orders') p ON p.cid = o.order_id LIMIT 1", None),
]


@pytest.mark.parametrize("sql,rows", HARMLESS, ids=[c[0][:40] for c in HARMLESS])
def test_harmless_queries_run(db, demo_db, sql, rows):
    with bounded(demo_db):
        result = db.execute(sql)
    assert rows is None or result.rows == rows


@pytest.mark.parametrize("sql", ["SELECT * FROM pragma_database_list", "SELECT * FROM pragma_integrity_check",
                                 "SELECT * FROM pragma_writable_schema"])
def test_other_pragma_functions_stay_denied(db, sql):
    with pytest.raises(QueryError, match="not authorized"):
        db.execute(sql)


def test_temp_trigger_is_named(db):
    with pytest.raises(UnsafeSQLError, match="CREATE TEMP TRIGGER"):
        db.execute("CREATE TEMP TRIGGER tr AFTER INSERT ON orders BEGIN DELETE FROM orders; END")


# -- introspection of broken objects ------------------------------------------------

def test_schema_skips_broken_objects_and_answers_about_the_rest(tmp_path):
    path = tmp_path / "broken.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE good (id INTEGER PRIMARY KEY, name TEXT);
        INSERT INTO good VALUES (1, 'alpha');
        CREATE TABLE gone (x);
        CREATE VIEW over_dropped AS SELECT x FROM gone;
        DROP TABLE gone;
        CREATE VIEW calls_missing AS SELECT no_such_function(name) AS y FROM good;
        CREATE VIRTUAL TABLE docs USING fts5(body);
        CREATE VIRTUAL TABLE docs4 USING fts4(body);
        CREATE VIRTUAL TABLE boxes USING rtree(id, x0, x1);
        PRAGMA writable_schema = ON;
        INSERT INTO sqlite_master (type, name, tbl_name, rootpage, sql)
          VALUES ('table', 'alien', 'alien', 0, 'CREATE VIRTUAL TABLE alien USING no_such_module(a)');
    """)
    conn.commit()
    conn.close()
    with bounded(path, seconds=10), SQLiteDatabase(path) as database:
        schema = database.schema()
        assert schema.table("good").columns[1].samples == ("alpha",)
        skipped = dict(database.skipped)
        assert {"over_dropped", "calls_missing", "alien"} <= set(skipped)
        assert "good" not in skipped and schema.table("over_dropped") is None
    out = cli("schema", "--db", str(path))
    assert out.returncode == 0 and b"good" in out.stdout and b"left out 'alien'" in out.stderr


# -- files and names ------------------------------------------------------------------

def test_non_utf8_file_name_works(demo_db):
    odd = os.path.join(os.fsencode(demo_db.parent), b"caf\xe9.sqlite")
    shutil.copy(demo_db, odd)
    with SQLiteDatabase(os.fsdecode(odd)) as database:
        assert database.execute("SELECT count(*) FROM categories").rows
    out = cli("sql", "--db", os.fsdecode(odd), "SELECT 1")
    assert out.returncode == 0, out.stderr


def test_very_long_file_name_is_a_clear_error(tmp_path):
    long = tmp_path / ("x" * 300 + ".sqlite")
    with pytest.raises(DatabaseError, match="cannot read|not found"):
        SQLiteDatabase(long)
    out = cli("sql", "--db", str(long), "SELECT 1")
    assert out.returncode == 3 and out.stderr.decode().count("\n") == 1, out.stderr


def test_leftover_journal_is_explained(tmp_path):
    source = tmp_path / "src" / "live.sqlite"
    source.parent.mkdir()
    conn = sqlite3.connect(source, isolation_level=None)
    conn.executescript("PRAGMA cache_size = 1; CREATE TABLE t (v); INSERT INTO t SELECT randomblob(500) "
                       "FROM (WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000) "
                       "SELECT i FROM c);")
    conn.execute("BEGIN")
    conn.execute("UPDATE t SET v = randomblob(600)")  # spills: a hot journal and half-written pages
    (tmp_path / "copy").mkdir()
    copy = tmp_path / "copy" / "crashed.sqlite"
    shutil.copy(source, copy)
    shutil.copy(str(source) + "-journal", str(copy) + "-journal")
    conn.rollback()
    conn.close()
    before = snapshot(copy)
    with pytest.raises(DatabaseError, match="interrupted write"):
        SQLiteDatabase(copy)
    assert snapshot(copy) == before


def test_terminal_escapes_are_shown_not_sent(demo_db):
    sql = "SELECT 'a' || char(27) || '[2J' || char(7) AS \"n\x1b]0;x\x07\", char(8238) AS bidi"
    out = cli("sql", "--db", str(demo_db), sql)
    assert out.returncode == 0
    assert b"\x1b" not in out.stdout and b"\x07" not in out.stdout and "\u202e".encode() not in out.stdout
    assert b"\\x1b[2J" in out.stdout
    data = json.loads(cli("sql", "--db", str(demo_db), "--json", sql).stdout)
    assert data["rows"][0][0] == "a\x1b[2J\x07"  # JSON escapes control characters itself


def test_big_cell_is_cut_for_display(demo_db):
    start = time.monotonic()
    out = cli("sql", "--db", str(demo_db), "SELECT printf('%.*c', 16000000, 'x') AS big")
    assert out.returncode == 0 and time.monotonic() - start < 20
    assert "…[+16.0 MB]".encode() in out.stdout and len(out.stdout) < 10_000


# -- WAL databases: the promise in the threat model ----------------------------------

def _wal_db(path, keep_writer=False):
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("CREATE TABLE t (v)")
    writer.execute("INSERT INTO t VALUES (1)")
    if keep_writer:
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        writer.execute("INSERT INTO t VALUES (2)")  # only in the -wal file
        return writer
    writer.close()  # last connection: checkpoint, -wal and -shm deleted
    return None


def test_wal_database_at_rest_gets_no_sidecar_files(tmp_path):
    path = tmp_path / "wal.sqlite"
    _wal_db(path)
    assert sorted(os.listdir(tmp_path)) == ["wal.sqlite"]
    with bounded(path), SQLiteDatabase(path) as database:
        assert database.execute("SELECT count(*) FROM t").rows == [(1,)]
        with pytest.raises(UnsafeSQLError):
            database.execute("DELETE FROM t")
        with pytest.raises(QueryError):
            database._run("DELETE FROM t")
    assert sorted(os.listdir(tmp_path)) == ["wal.sqlite"]


def test_wal_database_with_live_wal_keeps_main_and_wal_identical(tmp_path):
    path = tmp_path / "live.sqlite"
    writer = _wal_db(path, keep_writer=True)
    try:
        wal = tmp_path / "live.sqlite-wal"
        before = sha256(path), sha256(wal)
        with SQLiteDatabase(path) as database:
            assert database.execute("SELECT count(*) FROM t").rows == [(2,)]  # reads the -wal
            with pytest.raises(SlimsqlErrors):
                database._run("INSERT INTO t VALUES (3)")
        assert (sha256(path), sha256(wal)) == before
    finally:
        writer.close()



def test_wal_database_of_a_crashed_writer(tmp_path):
    """-wal content but no -shm: SQLite rebuilds the -shm index; main and -wal stay byte-identical."""
    live = tmp_path / "live" / "db.sqlite"
    live.parent.mkdir()
    writer = _wal_db(live, keep_writer=True)
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    shutil.copy(live, crashed / "db.sqlite")
    shutil.copy(str(live) + "-wal", crashed / "db.sqlite-wal")
    writer.close()
    before = sha256(crashed / "db.sqlite"), sha256(crashed / "db.sqlite-wal")
    with SQLiteDatabase(crashed / "db.sqlite") as database:
        assert database.execute("SELECT count(*) FROM t").rows == [(2,)]
    assert (sha256(crashed / "db.sqlite"), sha256(crashed / "db.sqlite-wal")) == before
    assert sorted(os.listdir(crashed)) == ["db.sqlite", "db.sqlite-shm", "db.sqlite-wal"]


SlimsqlErrors = (QueryError, UnsafeSQLError)


def test_idle_workers_are_capped(demo_db, monkeypatch):
    from slimsql.db import process

    monkeypatch.setattr(process, "MAX_LIVE_WORKERS", 2)
    databases = [SQLiteDatabase(demo_db) for _ in range(4)]
    try:
        assert sum(d._worker._proc is not None for d in databases) <= 2
        assert all(d.execute("SELECT 1").rows == [(1,)] for d in databases)  # stopped ones restart
        assert sum(d._worker._proc is not None for d in databases) <= 2
    finally:
        for database in databases:
            database.close()


def test_worker_dies_with_its_parent(demo_db):
    code = ("import sys, time; from slimsql.db.sqlite import SQLiteDatabase; "
            f"d = SQLiteDatabase({str(demo_db)!r}); print(d._worker._proc.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{child}/stat") as handle:
            if handle.read().split(")")[1].split()[0] == "Z":
                return  # a zombie waiting for its (dead) parent's reaper
        time.sleep(0.1)
    pytest.fail("the worker outlived its parent")


WRITES = [
    "INSERT INTO t SELECT 1", "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
    "WITH x AS (SELECT 1) DELETE FROM t WHERE a IN (SELECT * FROM x)",
    "WITH x AS (SELECT 1) UPDATE t SET a = (SELECT * FROM x)", "UPDATE t SET a = u.a FROM (SELECT a FROM t) u",
    "REPLACE INTO t VALUES (1)", "INSERT INTO t VALUES (1) RETURNING *", "CREATE TABLE v AS SELECT 1",
    "CREATE VIEW w AS SELECT 1", "CREATE TEMP TRIGGER tr AFTER INSERT ON t BEGIN DELETE FROM t; END",
    "CREATE TEMP TABLE z AS SELECT 1", "ATTACH ':memory:' AS m", "VACUUM", "ANALYZE", "BEGIN",
    "INSERT INTO boxes VALUES (1, 0, 1)", "DELETE FROM boxes_node", "INSERT INTO docs(docs) VALUES ('optimize')",
    "PRAGMA page_size = 512", "PRAGMA data_version = 1", "UPDATE sqlite_master SET sql = ''",
]


@pytest.mark.parametrize("sql", WRITES)
def test_authorizer_alone_refuses_writes_on_a_writable_connection(tmp_path, sql):
    """The write allowance for virtual-table constructors never lets a writing statement through."""
    from slimsql.db.sqlite import READ_PRAGMAS, RULES
    from slimsql.db.worker import Guard

    conn = sqlite3.connect(tmp_path / "w.sqlite", isolation_level=None)
    conn.executescript("CREATE TABLE t (a); CREATE VIRTUAL TABLE boxes USING rtree(id, x0, x1); "
                       "CREATE VIRTUAL TABLE docs USING fts5(body);")
    guard = Guard(RULES.denied_functions, READ_PRAGMAS)
    conn.set_authorizer(guard)
    assert conn.execute("SELECT count(*) FROM boxes, docs, json_each('[1]')").fetchone() == (0,)
    guard.first = None
    with pytest.raises(sqlite3.DatabaseError, match="not authorized|authorization denied|may not be modified"):
        conn.execute(sql)
    conn.close()


def test_json_output_is_byte_capped(demo_db):
    start = time.monotonic()
    out = cli("sql", "--db", str(demo_db), "--json", "SELECT printf('%.*c', 16000000, 'x') FROM orders")
    assert out.returncode == 0 and time.monotonic() - start < 30
    data = json.loads(out.stdout)
    assert data["truncated"] and data["truncated_by"] == "bytes" and len(data["rows"]) < 5


def test_a_worker_that_died_while_idle_is_restarted_for_the_next_query(demo_db):
    db = SQLiteDatabase(demo_db)
    assert db.execute("SELECT count(*) FROM products").rows == [(46,)]
    proc = db._worker._proc
    proc.kill()  # e.g. the thread that started it ended (PDEATHSIG), or it crashed between queries
    proc.wait()
    assert db.execute("SELECT count(*) FROM products").rows == [(46,)]  # not a "worker died" error
    assert db._worker._proc is not proc
    db.close()
