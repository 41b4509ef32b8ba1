"""Adversarial suite for the DuckDB engines (a DuckDB file, and CSV + Parquet files).

Every case ends in a one-line SlimsqlError (or a capped result); every file in the
folder is byte-identical afterwards (sha256 and mtime), no file appears there or in
the engine's private temporary folder, and nothing outside the database is read.
"""

import os

import pytest

from slimsql.db.duckdb import DuckDBDatabase, FilesDatabase, locked_connection
from slimsql.errors import QueryError, QueryTimeout, SlimsqlError, UnsafeSQLError

from .conftest import sha256
from .test_duckdb import make_duckdb, make_files

duckdb = pytest.importorskip("duckdb")

ATTACKS = [
    ("read_csv secret", "SELECT * FROM read_csv('{dir}/secret.csv')"),
    ("read_csv_auto secret", "SELECT * FROM read_csv_auto('{dir}/secret.csv')"),
    ("replacement scan string", "SELECT * FROM '{dir}/secret.csv'"),
    ("replacement scan identifier", 'SELECT * FROM "{dir}/secret.csv"'),
    ("bare FROM replacement scan", "FROM '{dir}/secret.csv'"),
    ("read_text passwd", "SELECT * FROM read_text('/etc/passwd')"),
    ("read_blob secret", "SELECT content FROM read_blob('{dir}/secret.txt')"),
    ("glob", "SELECT * FROM glob('{dir}/*')"),
    ("read_parquet", "SELECT * FROM read_parquet('{dir}/*.parquet')"),
    ("read_json", "SELECT * FROM read_json_auto('{dir}/secret.txt')"),
    ("sniff_csv", "SELECT * FROM sniff_csv('{dir}/secret.csv')"),
    ("read_duckdb other", "SELECT * FROM read_duckdb('{dir}/other.duckdb')"),
    ("lateral read", "SELECT * FROM orders o, LATERAL read_csv('{dir}/secret.csv')"),
    ("copy from", "COPY orders FROM '{dir}/secret.csv'"),
    ("copy to file", "COPY orders TO '{dir}/out.csv'"),
    ("copy select to file", "COPY (SELECT 1) TO '{dir}/out.parquet' (FORMAT parquet)"),
    ("attach", "ATTACH '{dir}/other.duckdb' AS other"),
    ("attach memory", "ATTACH ':memory:' AS scratch"),
    ("detach", "DETACH other"),
    ("install", "INSTALL httpfs"),
    ("force install", "FORCE INSTALL httpfs"),
    ("load", "LOAD httpfs"),
    ("set external access", "SET enable_external_access = true"),
    ("set global", "SET GLOBAL enable_external_access = true"),
    ("reset", "RESET enable_external_access"),
    ("set variable", "SET VARIABLE x = 1"),
    ("pragma", "PRAGMA enable_profiling"),
    ("call", "CALL pragma_version()"),
    ("export database", "EXPORT DATABASE '{dir}/dump'"),
    ("import database", "IMPORT DATABASE '{dir}/dump'"),
    ("create secret", "CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 'v')"),
    ("create table", "CREATE TABLE t AS SELECT 1 AS x"),
    ("create temp table", "CREATE TEMP TABLE t AS SELECT 1 AS x"),
    ("create view", "CREATE VIEW v AS SELECT * FROM read_csv('{dir}/secret.csv')"),
    ("create macro", "CREATE MACRO m(a) AS a + 1"),
    ("create temp macro", "CREATE TEMP MACRO m(a) AS a + 1"),
    ("drop", "DROP TABLE orders"),
    ("insert", "INSERT INTO orders (id) VALUES (99)"),
    ("update", "UPDATE orders SET total = 0"),
    ("delete", "DELETE FROM orders"),
    ("alter", "ALTER TABLE orders ADD COLUMN x INTEGER"),
    ("truncate", "TRUNCATE orders"),
    ("comment on", "COMMENT ON TABLE orders IS 'x'"),
    ("data-modifying cte", "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d"),
    ("select into", "SELECT * INTO backup FROM orders"),
    ("two statements", "SELECT 1; DELETE FROM orders"),
    ("comment hides statement", "SELECT 1 /* ; */ ; COPY orders TO '{dir}/out.csv' -- "),
    ("line comment then statement", "SELECT 1 -- x\n; DROP TABLE orders"),
    ("quote trick", "SELECT 'a'';DROP TABLE orders;--' ; DROP TABLE orders"),
    ("getenv", "SELECT getenv('HOME')"),
    ("current_setting", "SELECT current_setting('temp_directory')"),
    ("duckdb_settings", "SELECT * FROM duckdb_settings()"),
    ("duckdb_secrets", "SELECT * FROM duckdb_secrets()"),
    ("duckdb_databases paths", "SELECT path FROM duckdb_databases()"),
    ("query delete", "SELECT * FROM query('DELETE FROM orders')"),
    ("query read", "SELECT * FROM query('SELECT * FROM read_csv(''{dir}/secret.csv'')')"),
    ("query_table", "SELECT * FROM query_table('orders')"),
    ("serialized sql", "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT 1'))"),
    ("arrow pointer scan", "SELECT * FROM arrow_scan(1, 2, 3)"),
    ("checkpoint statement", "CHECKPOINT"),
    ("force checkpoint", "FORCE CHECKPOINT"),
    ("checkpoint function", "SELECT * FROM checkpoint()"),
    ("vacuum", "VACUUM"),
    ("use", "USE other"),
    ("begin", "BEGIN TRANSACTION"),
    ("nextval", "SELECT nextval('s')"),
    ("enable_logging", "SELECT * FROM enable_logging()"),
    ("write_log", "SELECT write_log('x')"),
    ("explain analyze", "EXPLAIN ANALYZE SELECT 1"),
    ("summarize", "SUMMARIZE orders"),
    ("prepare", "PREPARE p AS SELECT 1"),
    ("empty", "   "),
]

RUNTIME = [
    ("cross join bomb", "SELECT count(*) FROM range(100000) a, range(100000) b, range(100000) c", QueryTimeout),
    ("recursive cte", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
     QueryTimeout),
    ("generate_series", "SELECT sum(a.generate_series * b.generate_series) FROM generate_series(1, 100000000) a, "
                        "generate_series(1, 1000) b", QueryTimeout),
    ("sleep", "SELECT sleep_ms(60000)", QueryTimeout),
    ("huge list", "SELECT len(range(0, 100000000))", QueryError),
    ("huge string", "SELECT length(repeat('x', 2000000000))", QueryError),
]

KINDS = ["duckdb-file", "csv+parquet"]


def _snapshot(folder):
    found = {}
    for root, dirs, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            found[path] = (sha256(__import__("pathlib").Path(path)), os.stat(path).st_mtime_ns)
        for name in dirs:
            found[os.path.join(root, name)] = "dir"
    return found


@pytest.fixture(params=KINDS)
def guarded(request, tmp_path):
    (tmp_path / "secret.csv").write_text("token\nTOPSECRET\n")
    (tmp_path / "secret.txt").write_text("TOPSECRET\n")
    other = duckdb.connect(str(tmp_path / "other.duckdb"))
    other.execute("CREATE TABLE stolen AS SELECT 'TOPSECRET' AS x")
    other.close()
    if request.param == "duckdb-file":
        make_duckdb(tmp_path / "shop.duckdb")
        conn = duckdb.connect(str(tmp_path / "shop.duckdb"))
        conn.execute("CREATE SEQUENCE s")
        conn.close()
        db = DuckDBDatabase(tmp_path / "shop.duckdb", timeout=1.0, max_rows=50)
    else:
        db = FilesDatabase(make_files(tmp_path), timeout=1.0, max_rows=50)
    before, private = _snapshot(tmp_path), _snapshot(db.folder)
    yield db, tmp_path
    assert _snapshot(db.folder) == private, "the private temporary folder changed"
    db.close()
    assert _snapshot(tmp_path) == before, "a file in the folder changed, or one appeared"


def _one_line(error):
    assert isinstance(error, SlimsqlError) and "\n" not in str(error) and str(error).strip()
    assert "TOPSECRET" not in str(error) and "root:" not in str(error)


#: Attacks the allow-list cannot see (sqlglot reads a string in FROM as a table name): the
#: locked ``enable_external_access=false`` stops them.
PAST_THE_ALLOW_LIST = {"replacement scan string", "replacement scan identifier", "bare FROM replacement scan"}


@pytest.mark.parametrize("name,sql", ATTACKS, ids=[c[0] for c in ATTACKS])
def test_attack_is_refused_with_one_line(guarded, name, sql):
    db, folder = guarded
    with pytest.raises(SlimsqlError) as info:
        db.execute(sql.replace("{dir}", str(folder)))
    _one_line(info.value)
    if name in PAST_THE_ALLOW_LIST:
        assert isinstance(info.value, QueryError) and "Permission Error" in str(info.value)
    else:
        assert isinstance(info.value, UnsafeSQLError) and str(info.value).startswith("not run:")


@pytest.mark.parametrize("sql,error", [c[1:] for c in RUNTIME], ids=[c[0] for c in RUNTIME])
def test_runtime_limits(guarded, sql, error):
    db, _ = guarded
    with pytest.raises(error) as info:
        db.execute(sql)
    _one_line(info.value)
    assert db.execute("SELECT 42").rows == [(42,)]  # the next query still runs


def test_huge_result_is_truncated(guarded):
    db, _ = guarded
    result = db.execute("SELECT * FROM range(100000000)")
    assert len(result.rows) == 50 and result.truncated and result.truncated_by == "rows"


# Below the allow-list: ``_run`` skips it; DuckDB's parser (one SELECT statement) still holds.
BELOW_ALLOW_LIST = [
    ("copy to", "COPY orders TO '{dir}/out.csv'", "only SELECT statements may run, found COPY"),
    ("attach", "ATTACH '{dir}/other.duckdb' AS other", "only SELECT statements may run, found ATTACH"),
    ("insert", "INSERT INTO orders (id) VALUES (99)", "only SELECT statements may run, found INSERT"),
    ("set", "SET enable_external_access = true", "only SELECT statements may run, found SET"),
    ("create temp", "CREATE TEMP TABLE t AS SELECT 1", "only SELECT statements may run, found CREATE"),
    ("two statements", "SELECT 1; SELECT 2", "exactly one statement may run, found 2"),
    # a SELECT: the locked settings stop it
    ("read_csv", "SELECT * FROM read_csv('{dir}/secret.csv')", "Permission Error"),
    ("replacement scan", "SELECT * FROM '{dir}/secret.csv'", "Permission Error"),
    ("read_text", "SELECT * FROM read_text('/etc/passwd')", "Permission Error"),
    ("read_duckdb", "SELECT * FROM read_duckdb('{dir}/other.duckdb')", "Permission Error"),
    ("query read", "SELECT * FROM query('SELECT * FROM read_text(''/etc/passwd'')')", "Permission Error"),
    ("enable logging", "SELECT * FROM enable_logging()", "the configuration has been locked"),
    # a SELECT that writes: the read-only open stops it
    ("data-modifying cte", "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d", "read-only mode"),
]


@pytest.mark.parametrize("sql,message", [c[1:] for c in BELOW_ALLOW_LIST], ids=[c[0] for c in BELOW_ALLOW_LIST])
def test_layers_below_the_allow_list_hold(guarded, sql, message):
    db, folder = guarded
    with pytest.raises(QueryError, match=message) as info:
        db._run(sql.replace("{dir}", str(folder)))
    _one_line(info.value)


# Below DuckDB's parser check too: the connection as the worker opens it, statements run as they are.
RAW = [
    ("copy to", "COPY orders TO '{dir}/out.csv'", "disabled by configuration"),
    ("copy from", "COPY orders FROM '{dir}/secret.csv'", "disabled by configuration|read-only"),
    ("attach", "ATTACH '{dir}/other.duckdb' AS other", "disabled by configuration"),
    ("read_csv", "SELECT * FROM read_csv('{dir}/secret.csv')", "disabled by configuration"),
    ("export", "EXPORT DATABASE '{dir}/dump'", "disabled by configuration"),
    ("install", "INSTALL httpfs", "disabled by configuration"),
    ("load", "LOAD httpfs", "disabled through configuration"),
    ("unlock", "SET lock_configuration = false", "the configuration has been locked"),
    ("external access", "SET enable_external_access = true", "the configuration has been locked"),
    ("reset", "RESET enable_external_access", "the configuration has been locked"),
    ("insert", "INSERT INTO orders (id) VALUES (99)", "read-only mode"),
    ("delete", "DELETE FROM orders", "read-only mode"),
    ("create", "CREATE TABLE t (x INTEGER)", "read-only mode"),
    ("create macro", "CREATE MACRO m(a) AS a", "read-only mode"),
]


@pytest.mark.parametrize("sql,message", [c[1:] for c in RAW], ids=[c[0] for c in RAW])
def test_the_locked_read_only_connection_holds_alone(guarded, sql, message):
    db, folder = guarded
    conn = locked_connection(db._worker.config)
    try:
        with pytest.raises(duckdb.Error, match=message):
            conn.execute(sql.replace("{dir}", str(folder)))
    finally:
        conn.close()
