"""Adversarial suite for the PostgreSQL engine, as the superuser and as the reader role.

Every case must end in a one-line SlimsqlError (or a capped result), and afterwards the
shop's data, the catalog, the server's files and the session's own settings must be as
they were: no table content, relation, role, function, large object, sequence value,
grant, comment, setting or lock changed, and no file created in the cluster's folder.
Statistics counters (pg_stat_user_tables) are not used: they are flushed asynchronously.
"""

import time
from pathlib import Path

import psycopg
import pytest

from slimsql.db.postgres import PostgresDatabase
from slimsql.errors import QueryError, QueryTimeout, SlimsqlError, UnsafeSQLError

from .pg_support import TABLES, pg_cluster, pg_shop  # noqa: F401  (fixtures)

PASSWD = "root:x:0:0"  # what /etc/passwd would show if it were read

ATTACKS = [
    # writes
    ("delete", "DELETE FROM orders"),
    ("update", "UPDATE customers SET city = 'x'"),
    ("insert", "INSERT INTO customers (name) VALUES ('x')"),
    ("upsert", "INSERT INTO orders VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET status = 'x'"),
    ("merge", "MERGE INTO orders o USING customers c ON o.customer_id = c.id WHEN MATCHED THEN DELETE"),
    ("truncate", "TRUNCATE orders CASCADE"),
    ("with delete", "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d"),
    ("with update", "WITH u AS (UPDATE customers SET city = 'x' RETURNING id) SELECT count(*) FROM u"),
    ("with insert", "WITH i AS (INSERT INTO customers (name) VALUES ('x') RETURNING id) SELECT * FROM i"),
    ("nested with delete", "SELECT * FROM (WITH d AS (DELETE FROM returns RETURNING id) SELECT id FROM d) s"),
    ("select into", "SELECT * INTO stolen FROM orders"),
    ("select into temp", "SELECT * INTO TEMP stolen FROM orders"),
    # DDL and catalog changes
    ("drop", "DROP TABLE orders CASCADE"),
    ("create table", "CREATE TABLE t (x int)"),
    ("create table as", "CREATE TABLE stolen AS SELECT * FROM customers"),
    ("create temp table", "CREATE TEMP TABLE t AS SELECT 1"),
    ("create function", "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'DELETE FROM orders; SELECT 1'"),
    ("create role", "CREATE ROLE evil SUPERUSER LOGIN"),
    ("alter table", "ALTER TABLE orders ADD COLUMN x int"),
    ("alter role", "ALTER ROLE reader SUPERUSER"),
    ("alter role set", "ALTER ROLE reader SET default_transaction_read_only = off"),
    ("alter system", "ALTER SYSTEM SET default_transaction_read_only = off"),
    ("grant", "GRANT ALL ON orders TO PUBLIC"),
    ("revoke", "REVOKE SELECT ON orders FROM reader"),
    ("comment", "COMMENT ON TABLE orders IS 'owned'"),
    ("security label", "SECURITY LABEL ON TABLE orders IS 'x'"),
    ("create extension", "CREATE EXTENSION IF NOT EXISTS dblink"),
    ("create extension file_fdw", "CREATE EXTENSION file_fdw"),
    ("refresh matview", "REFRESH MATERIALIZED VIEW city_totals"),
    ("vacuum", "VACUUM FULL orders"),
    ("analyze", "ANALYZE orders"),
    ("cluster", "CLUSTER orders USING orders_pkey"),
    ("reindex", "REINDEX TABLE orders"),
    ("checkpoint", "CHECKPOINT"),
    ("load", "LOAD 'dblink'"),
    # procedural code and commands the parser does not know
    ("do block", "DO $$BEGIN DELETE FROM orders; END$$"),
    ("call", "CALL some_procedure()"),
    ("prepare", "PREPARE p AS DELETE FROM orders"),
    ("execute", "EXECUTE p"),
    ("declare", "DECLARE c CURSOR FOR SELECT * FROM orders"),
    ("fetch", "FETCH ALL FROM c"),
    ("lock table", "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE"),
    ("select for update", "SELECT * FROM orders FOR UPDATE"),
    ("select for share in subquery", "SELECT * FROM (SELECT * FROM orders FOR SHARE) s"),
    ("listen", "LISTEN channel"),
    ("notify", "NOTIFY channel, 'x'"),
    ("unlisten", "UNLISTEN *"),
    ("discard", "DISCARD ALL"),
    ("explain analyze delete", "EXPLAIN ANALYZE DELETE FROM orders"),
    ("explain", "EXPLAIN SELECT * FROM orders"),
    ("show", "SHOW data_directory"),
    # settings, roles and transactions
    ("set", "SET default_transaction_read_only = off"),
    ("set session", "SET SESSION statement_timeout = 0"),
    ("set local", "SET LOCAL transaction_read_only = off"),
    ("set transaction", "SET TRANSACTION READ WRITE"),
    ("reset", "RESET ALL"),
    ("set role", "SET ROLE postgres"),
    ("set session authorization", "SET SESSION AUTHORIZATION postgres"),
    ("begin", "BEGIN"),
    ("start transaction", "START TRANSACTION READ WRITE"),
    ("commit", "COMMIT"),
    ("end", "END"),
    ("rollback", "ROLLBACK"),
    ("abort", "ABORT"),
    ("savepoint", "SAVEPOINT s"),
    ("release savepoint", "RELEASE SAVEPOINT s"),
    ("prepare transaction", "PREPARE TRANSACTION 'x'"),
    ("transaction block", "BEGIN; DELETE FROM orders; COMMIT"),
    ("commit then delete", "SELECT 1; COMMIT; DELETE FROM orders"),
    ("read write then delete", "COMMIT; BEGIN READ WRITE; DELETE FROM orders; COMMIT"),
    # several statements, hidden
    ("two statements", "SELECT 1; DELETE FROM orders"),
    ("comment hides semicolon", "SELECT 1 /* ; */ ; DELETE FROM orders -- "),
    ("nested comment", "SELECT 1 /* /* nested */ ; */ ; DELETE FROM orders"),
    ("line comment then statement", "SELECT 1 -- trailing\n; DROP TABLE orders"),
    ("dollar quote", "SELECT $$;$$; DELETE FROM orders"),
    ("tagged dollar quote", "SELECT $q$ $$ ; $q$; DELETE FROM orders"),
    ("fullwidth semicolon", "SELECT 1\uff1b DELETE FROM orders"),
    ("backslash semicolon", "SELECT 1 \\; DELETE FROM orders"),
    # functions with side effects, or that reach outside the database
    ("set_config", "SELECT set_config('default_transaction_read_only', 'off', false)"),
    ("set_config in where", "SELECT * FROM orders WHERE set_config('statement_timeout', '0', false) IS NOT NULL"),
    ("nextval", "SELECT nextval('customers_id_seq')"),
    ("setval", "SELECT setval('customers_id_seq', 1000)"),
    ("txid_current", "SELECT txid_current()"),
    ("pg_current_xact_id", "SELECT pg_current_xact_id()"),
    ("advisory lock", "SELECT pg_advisory_lock(42)"),
    ("try advisory xact lock", "SELECT pg_try_advisory_xact_lock(42)"),
    ("pg_notify", "SELECT pg_notify('channel', 'x')"),
    ("pg_sleep", "SELECT pg_sleep(100)"),
    ("pg_sleep_for", "SELECT pg_sleep_for('100 seconds')"),
    ("pg_read_file", "SELECT pg_read_file('/etc/passwd')"),
    ("pg_read_file qualified", "SELECT pg_catalog.pg_read_file('/etc/passwd')"),
    ("pg_read_file quoted", "SELECT \"pg_read_file\"('/etc/passwd')"),
    ("pg_read_file upper case", "SELECT PG_READ_FILE('/etc/passwd')"),
    ("pg_read_file unicode escape", "SELECT U&\"\\0070g_read_file\"('/etc/passwd')"),
    ("pg_read_file unicode uescape", "SELECT U&\"!0070g_read_file\" UESCAPE '!' ('/etc/passwd')"),
    ("pg_read_file in from", "SELECT * FROM pg_read_file('/etc/passwd') AS f(x)"),
    ("pg_read_file in subquery", "SELECT (SELECT pg_read_file('/etc/passwd')) FROM orders"),
    ("pg_read_file in cte", "WITH f AS (SELECT pg_read_file('/etc/passwd') AS x) SELECT x FROM f"),
    ("pg_read_binary_file", "SELECT pg_read_binary_file('/etc/passwd')"),
    ("pg_ls_dir", "SELECT pg_ls_dir('.')"),
    ("pg_stat_file", "SELECT pg_stat_file('postgresql.conf')"),
    ("lo_import", "SELECT lo_import('/etc/passwd')"),
    ("lo_get of lo_import", "SELECT convert_from(lo_get(lo_import('/etc/passwd')), 'UTF8')"),
    ("lo_export", "SELECT lo_export(lo_from_bytea(0, 'x'), '{dir}/exported')"),
    ("lo_from_bytea", "SELECT lo_from_bytea(0, 'x')"),
    ("dblink", "SELECT * FROM dblink('dbname=shop', 'DELETE FROM orders') AS t(x text)"),
    ("dblink_exec", "SELECT dblink_exec('dbname=shop', 'DELETE FROM orders')"),
    ("query_to_xml", "SELECT query_to_xml('delete from orders', true, true, '')"),
    ("table_to_xml", "SELECT table_to_xml('orders', true, true, '')"),
    ("pg_terminate_backend", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"),
    ("pg_reload_conf", "SELECT pg_reload_conf()"),
    ("pg_file_write", "SELECT pg_file_write('{dir}/x', 'data', false)"),
    ("replication slot", "SELECT pg_create_physical_replication_slot('s')"),
    # COPY
    ("copy to file", "COPY orders TO '{dir}/out.csv'"),
    ("copy from file", "COPY customers FROM '/etc/passwd'"),
    ("copy to program", "COPY orders TO PROGRAM 'touch {dir}/pwned'"),
    ("copy from program", "COPY customers (name) FROM PROGRAM 'id'"),
    ("copy query to file", "COPY (SELECT * FROM orders) TO '{dir}/out.csv'"),
    ("copy to stdout", "COPY orders TO STDOUT"),
    # odd text
    ("empty", "   "),
    ("not sql", "please delete everything"),
    ("nested too deep", "SELECT " + "(" * 3000 + "1" + ")" * 3000),
]

EXPENSIVE = [
    ("generate_series count", "SELECT count(*) FROM generate_series(1, 1000000000)"),
    ("cross join", "SELECT count(*) FROM generate_series(1, 100000) a, generate_series(1, 100000) b"),
    ("recursive cte", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"),
    ("cross join of the tables", "SELECT count(*) FROM orders a, orders b, orders c, orders d, orders e, "
     "orders f, orders g, orders h, orders i, orders j, orders k, orders l, orders m, orders n, orders o"),
    ("string work", "SELECT count(*) FROM generate_series(1, 100000000) g WHERE md5(g::text) = 'x'"),
]

HUGE = [
    ("many rows", "SELECT g FROM generate_series(1, 10000000) g", "rows"),
    ("wide rows", "SELECT repeat('x', 1000000) FROM generate_series(1, 1000)", "bytes"),
]


def _state(shop, dbname: str) -> dict:
    """Everything an attack could change, read as the superuser outside slimsql."""
    with psycopg.connect(shop.cluster.url(dbname), autocommit=True) as conn:
        one = lambda sql: conn.execute(sql).fetchall()  # noqa: E731
        state = {table: one(f"SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')), count(*) "
                            f"FROM {table} t") for table in TABLES}
        state.update(
            relations=one("SELECT c.oid, n.nspname, c.relname, c.relkind, c.relacl::text FROM pg_class c "
                          "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname <> 'pg_toast' ORDER BY 1"),
            roles=one("SELECT rolname, rolsuper, rolcanlogin FROM pg_roles ORDER BY 1"),
            role_settings=one("SELECT setrole, setdatabase, setconfig::text FROM pg_db_role_setting ORDER BY 1, 2"),
            functions=one("SELECT count(*), max(oid::bigint) FROM pg_proc"),
            large_objects=one("SELECT count(*) FROM pg_largeobject_metadata"),
            extensions=one("SELECT extname FROM pg_extension ORDER BY 1"),
            comments=one("SELECT objoid, objsubid, description FROM pg_description WHERE objoid >= 16384 ORDER BY 1, 2"),
            sequence=one("SELECT last_value, is_called FROM customers_id_seq"),
            prepared=one("SELECT count(*) FROM pg_prepared_xacts"),
            slots=one("SELECT count(*) FROM pg_replication_slots"),
            advisory_locks=one("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"),
            open_transactions=one("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'slimsql' "
                                  "AND state <> 'idle'"),
            auto_conf=one("SELECT pg_read_file('postgresql.auto.conf')"),
        )
    folder = Path(shop.cluster.folder)
    state["files"] = sorted(str(p.relative_to(folder)) for p in folder.iterdir())
    return state


def _session(db: PostgresDatabase) -> list:
    """The attacked connection's own state (its settings, role, channels)."""
    return db._run("SELECT current_user, session_user, current_setting('default_transaction_read_only'), "
                   "current_setting('transaction_read_only'), current_setting('search_path'), "
                   "array(SELECT pg_listening_channels())").rows


@pytest.fixture(scope="module", params=["superuser", "reader"])
def target(request, pg_shop):
    user = None if request.param == "superuser" else pg_shop.reader
    with PostgresDatabase(pg_shop.url(user), timeout=2, max_rows=1000) as db:
        yield db, pg_shop


def _refused(db, sql: str) -> SlimsqlError:
    with pytest.raises(SlimsqlError) as caught:
        db.execute(sql)
    message = str(caught.value)
    assert message and "\n" not in message and PASSWD not in message
    return caught.value


@pytest.mark.parametrize("name, sql", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_attack_is_refused_and_changes_nothing(target, name, sql):
    db, shop = target
    sql = sql.replace("{dir}", str(shop.cluster.folder))
    before, session = _state(shop, shop.dbname), _session(db)
    start = time.monotonic()
    error = _refused(db, sql)
    assert time.monotonic() - start < 1.5  # refused, not run until the time limit
    # the allow-list refuses every one of them before the server sees it
    assert isinstance(error, UnsafeSQLError), f"{name}: {error}"
    assert _state(shop, shop.dbname) == before
    assert _session(db) == session


@pytest.mark.parametrize("name, sql", EXPENSIVE, ids=[e[0] for e in EXPENSIVE])
def test_expensive_query_stops_at_the_time_limit(target, name, sql):
    db, shop = target
    before = _state(shop, shop.dbname)
    start = time.monotonic()
    with pytest.raises(QueryTimeout) as caught:
        db.execute(sql, timeout=1)
    assert time.monotonic() - start < 2.5
    assert str(caught.value) == "query stopped after the 1 s time limit"
    assert _state(shop, shop.dbname) == before


@pytest.mark.parametrize("name, sql, cut", HUGE, ids=[h[0] for h in HUGE])
def test_huge_result_is_truncated(target, name, sql, cut):
    db, _ = target
    result = db.execute(sql, timeout=10)
    assert result.truncated and result.truncated_by == cut
    assert len(result.rows) <= 1000


@pytest.mark.parametrize("sql, value", [
    ("SELECT E'\\'; DELETE FROM orders; --'", "'; DELETE FROM orders; --"),
    ("SELECT 'a\\'; DELETE FROM orders; --'", None),
    ("SELECT $a$$a$; DELETE FROM orders; --$a$", None),
])
def test_string_quoting_reads_the_same_to_both_layers(target, sql, value):
    """A string the allow-list and the server might split differently: either both read one
    harmless string, or one of the layers refuses; the data never changes."""
    db, shop = target
    before = _state(shop, shop.dbname)
    if value is None:
        _refused(db, sql)
    else:
        assert db.execute(sql).rows == [(value,)]
    assert _state(shop, shop.dbname) == before


# -- the server layers alone (the allow-list bypassed through _run) ----------------

SERVER_REFUSES = [
    ("delete", "DELETE FROM orders", "syntax error"),  # DECLARE ... CURSOR FOR takes only a query
    ("two statements", "SELECT 1; DELETE FROM orders", "multiple commands"),
    ("commit then delete", "SELECT 1; COMMIT; DELETE FROM orders", "multiple commands"),
    ("with delete", "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d", "data-modifying"),
    ("with insert", "WITH i AS (INSERT INTO customers (name) VALUES ('x') RETURNING id) SELECT * FROM i",
     "data-modifying"),
    ("select into", "SELECT * INTO stolen FROM orders", "INTO is not allowed"),
    # the reader may not even use the sequence
    ("nextval", "SELECT nextval('customers_id_seq')", "read-only transaction|permission denied"),
    ("setval", "SELECT setval('customers_id_seq', 1000)", "read-only transaction|permission denied"),
    ("for update", "SELECT * FROM orders FOR UPDATE", "read-only transaction"),
    ("query_to_xml", "SELECT query_to_xml('delete from orders', true, true, '')", "not allowed in a non-volatile"),
]


@pytest.mark.parametrize("name, sql, why", SERVER_REFUSES, ids=[s[0] for s in SERVER_REFUSES])
def test_server_layers_alone_refuse_writes(target, name, sql, why):
    db, shop = target
    before = _state(shop, shop.dbname)
    with pytest.raises(QueryError, match=why) as caught:
        db._run(sql)
    assert "\n" not in str(caught.value)
    assert _state(shop, shop.dbname) == before


def test_server_layers_alone_undo_what_they_let_run(pg_shop):
    """As the superuser, without the allow-list: what runs is rolled back with the transaction."""
    with PostgresDatabase(pg_shop.url(), timeout=2) as db:
        before = _state(pg_shop, pg_shop.dbname)
        assert db._run("SELECT set_config('default_transaction_read_only', 'off', false)").rows == [("off",)]
        assert db._run("SELECT current_setting('default_transaction_read_only')").rows == [("on",)]
        (oid,), = db._run("SELECT lo_from_bytea(0, 'x')").rows  # large objects are transactional
        assert isinstance(oid, int)
        db._run("SELECT pg_notify('channel', 'x')")  # sent only at commit: never
        assert _state(pg_shop, pg_shop.dbname) == before


def test_server_layers_alone_do_not_stop_session_advisory_locks(pg_shop):
    """Documented gap of the server layer (the allow-list refuses these functions):
    a session-level advisory lock outlives the rolled-back transaction until close()."""
    held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
    with psycopg.connect(pg_shop.url(), autocommit=True) as watcher:
        with PostgresDatabase(pg_shop.url(pg_shop.reader), timeout=2) as db:
            db._run("SELECT pg_advisory_lock(4242)")
            assert watcher.execute(held).fetchone() == (1,)
        deadline = time.monotonic() + 5
        while watcher.execute(held).fetchone() != (0,) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watcher.execute(held).fetchone() == (0,)


def test_reader_role_cannot_read_server_files(pg_shop):
    """The least-privilege role: file functions are refused by its privileges too."""
    with PostgresDatabase(pg_shop.url(pg_shop.reader), timeout=2) as db:
        for sql in ("SELECT pg_read_file('/etc/passwd')", "SELECT lo_import('/etc/passwd')",
                    "SELECT pg_ls_dir('.')"):
            with pytest.raises(QueryError, match="permission denied") as caught:
                db._run(sql)
            assert PASSWD not in str(caught.value)
