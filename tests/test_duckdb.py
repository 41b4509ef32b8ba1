"""DuckDB files and CSV/Parquet files: found by the registry, introspected, bounded, worded."""

import builtins
import json
import time

import pytest

import slimsql.db as db
from slimsql import cli
from slimsql.backends.scripted import ScriptedBackend
from slimsql.db.duckdb import DENIED_FUNCTIONS, LOCKED_SETTINGS, DuckDBDatabase, FilesDatabase, table_names
from slimsql.errors import InputError, QueryError, QueryTimeout, UnsafeSQLError
from slimsql.infer.repair import error_hint
from slimsql.sql import check_read_only

duckdb = pytest.importorskip("duckdb")

#: Table functions that only read the database's own catalog or make values.
SAFE_TABLE_FUNCTIONS = {
    "generate_series", "range", "unnest", "json_each", "json_tree", "repeat", "repeat_row", "summary",
    "histogram", "histogram_values", "test_all_types", "test_vector_types", "icu_calendar_names",
    "pg_timezone_names", "seq_scan", "duckdb_columns", "duckdb_constraints", "duckdb_tables", "duckdb_views",
    "duckdb_schemas", "duckdb_types", "duckdb_functions", "duckdb_keywords", "duckdb_indexes",
    "duckdb_sequences", "duckdb_dependencies", "duckdb_optimizers", "duckdb_dialects", "duckdb_triggers",
    "duckdb_coordinate_systems", "duckdb_table_sample", "duckdb_variables", "duckdb_prepared_statements",
    "duckdb_approx_database_count", "duckdb_connection_count", "duckdb_available_metrics",
    "duckdb_profiling_settings", "duckdb_live_query_metrics", "duckdb_eviction_queues", "duckdb_memory",
    "duckdb_secret_types", "duckdb_secret_type_parameters", "duckdb_external_resource_types",
    "duckdb_external_resources", "duckdb_grammar_extensions", "pragma_table_info", "pragma_show",
    "pragma_version", "pragma_collations", "pragma_database_size", "pragma_metadata_info",
    "pragma_storage_info", "pragma_platform", "pragma_user_agent",
}


def make_duckdb(path):
    conn = duckdb.connect(str(path))
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL, city VARCHAR)")
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers (id), "
                 "total DECIMAL(10, 2), placed DATE)")
    conn.execute("CREATE SCHEMA sales")
    conn.execute("CREATE TABLE sales.targets (region VARCHAR, goal INTEGER)")
    conn.execute("CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100")
    conn.execute("COMMENT ON TABLE customers IS 'people who bought something'")
    conn.execute("COMMENT ON COLUMN customers.city IS 'where they live'")
    conn.execute("INSERT INTO customers VALUES (1, 'Ann', 'Paris'), (2, 'Bob', 'Oslo'), (3, 'Cy', NULL)")
    conn.execute("INSERT INTO orders VALUES (1, 1, 120.50, '2024-01-02'), (2, 1, 8, '2024-02-03'), "
                 "(3, 2, 300, '2024-03-04')")
    conn.execute("INSERT INTO sales.targets VALUES ('north', 10)")
    conn.close()
    return path


def make_files(folder):
    (folder / "orders.csv").write_text("id,customer_id,total,placed\n1,1,120.5,2024-01-02\n2,1,8,2024-02-03\n"
                                       "3,2,300,2024-03-04\n")
    (folder / "notes.tsv").write_text("id\tnote\n1\tfirst\n2\tsecond\n")
    parquet = folder / "customers.parquet"
    conn = duckdb.connect()
    conn.execute(f"COPY (SELECT * FROM (VALUES (1, 'Ann', 'Paris'), (2, 'Bob', 'Oslo')) t(id, name, city)) "
                 f"TO '{parquet}' (FORMAT parquet)")
    conn.close()
    return [folder / "orders.csv", parquet, folder / "notes.tsv"]


@pytest.fixture
def shop(tmp_path):
    path = make_duckdb(tmp_path / "shop.duckdb")
    with DuckDBDatabase(path, timeout=2.0, max_rows=50) as opened:
        yield opened


@pytest.fixture
def files(tmp_path):
    with FilesDatabase(make_files(tmp_path), timeout=2.0, max_rows=50) as opened:
        yield opened


# -- the registry ------------------------------------------------------------------

def test_open_database_picks_the_engine_by_file(tmp_path, demo_db):
    shop_file = make_duckdb(tmp_path / "Shop.DuckDB")
    paths = make_files(tmp_path)
    assert db.engine_for(shop_file) is DuckDBDatabase and db.engine_for("x.ddb") is DuckDBDatabase
    assert db.engine_for(f"duckdb://{shop_file}") is DuckDBDatabase
    assert db.engine_for("a.CSV") is FilesDatabase and db.engine_for("b.pq") is FilesDatabase
    assert db.engine_for(tuple(paths)) is FilesDatabase and db.engine_for([str(p) for p in paths]) is FilesDatabase
    assert db.engine_for(demo_db) is db.engine_class("sqlite") and db.engine_for("x.db") is db.engine_class("sqlite")
    with pytest.raises(InputError, match="no database engine opens these 2 files as one database"):
        db.engine_for(("a.csv", "b.sqlite"))
    with db.open_database(f"duckdb://{shop_file}") as opened:
        assert isinstance(opened, DuckDBDatabase) and opened.execute("SELECT count(*) FROM customers").rows == [(3,)]
    with db.open_database([str(p) for p in paths]) as opened:
        assert isinstance(opened, FilesDatabase) and sorted(opened.tables) == ["customers", "notes", "orders"]
    with db.open_database(paths[0]) as opened:
        assert opened.execute("SELECT sum(total) FROM orders").rows == [(428.5,)]
    assert db.rules_for("duckdb") is DuckDBDatabase.rules and db.rules_for("files") is FilesDatabase.rules


def test_table_names_from_file_stems(tmp_path):
    from pathlib import Path

    names = table_names([Path("a/Orders 2024.csv"), Path("b/orders-2024.parquet"), Path("2024.csv"),
                         Path("x/---.csv"), Path("c/Orders 2024.tsv")])
    assert names == ["orders_2024", "orders_2024_2", "t_2024", "file", "orders_2024_3"]


def test_module_import_leaves_duckdb_for_later():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, slimsql.db.duckdb; print('duckdb' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_driver_is_one_input_error(tmp_path, monkeypatch):
    real = builtins.__import__

    def no_duckdb(name, *args, **kwargs):
        if name == "duckdb":
            raise ImportError("no module named duckdb")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_duckdb)
    with pytest.raises(InputError, match=r"^DuckDB needs the duckdb package: pip install 'slimsql\[duckdb\]'$"):
        DuckDBDatabase(tmp_path / "x.duckdb")
    with pytest.raises(InputError, match="DuckDB needs the duckdb package"):
        FilesDatabase(tmp_path / "x.csv")


def test_bad_files_are_one_line_database_errors(tmp_path):
    with pytest.raises(Exception, match="database not found") as info:
        DuckDBDatabase(tmp_path / "nope.duckdb")
    bogus = tmp_path / "bogus.duckdb"
    bogus.write_text("not a database\n" * 100)
    with pytest.raises(Exception, match="bogus.duckdb") as info:
        DuckDBDatabase(bogus)
    assert "\n" not in str(info.value)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 nonsense")
    with pytest.raises(Exception, match="cannot read .*broken.parquet as a table") as info:
        FilesDatabase(broken)
    assert "\n" not in str(info.value)


# -- introspection -----------------------------------------------------------------

def test_schema_of_a_duckdb_file_has_keys_comments_views_and_schemas(shop):
    schema = shop.schema()
    assert schema.dialect == "duckdb"
    assert schema.names() == ["big_orders", "customers", "orders", "sales.targets"]
    customers, orders = schema.table("customers"), schema.table("orders")
    assert customers.comment == "people who bought something" and customers.primary_key == ("id",)
    assert [(c.name, c.type, c.nullable) for c in customers.columns] == [
        ("id", "INTEGER", False), ("name", "VARCHAR", False), ("city", "VARCHAR", True)]
    assert customers.columns[2].comment == "where they live" and customers.columns[2].samples == ("Paris", "Oslo")
    assert orders.foreign_keys[0].columns == ("customer_id",) and orders.foreign_keys[0].ref_table == "customers"
    assert orders.foreign_keys[0].ref_columns == ("id",)
    assert orders.columns[3].samples == ()  # dates are not text samples
    assert schema.table("big_orders").kind == "view"
    assert shop.execute("SELECT goal FROM sales.targets").rows == [(10,)]


def test_schema_of_files_has_inferred_types(files):
    schema = files.schema()
    orders = schema.table("orders")
    assert [(c.name, c.type) for c in orders.columns] == [
        ("id", "BIGINT"), ("customer_id", "BIGINT"), ("total", "DOUBLE"), ("placed", "DATE")]
    assert [(c.name, c.type) for c in schema.table("customers").columns] == [
        ("id", "INTEGER"), ("name", "VARCHAR"), ("city", "VARCHAR")]
    assert schema.table("notes").columns[1].samples == ("first", "second")
    rows = files.execute("SELECT c.name, sum(o.total) FROM orders o JOIN customers c ON c.id = o.customer_id "
                         "GROUP BY 1 ORDER BY 1").rows
    assert rows == [("Ann", 128.5), ("Bob", 300.0)]


# -- execution ---------------------------------------------------------------------

def test_values_become_plain_python(shop):
    row = shop.execute("SELECT 1.5::DECIMAL(4, 2), 3::DECIMAL(10, 0), DATE '2024-01-02', "
                       "TIMESTAMP '2024-01-02 03:04:05', TIME '01:02:03', '00000000-0000-0000-0000-000000000001'::UUID,"
                       " [1, 2], {'a': [DATE '2024-01-01']}, 'ab'::BLOB, NULL, true").rows[0]
    assert row == (1.5, 3, "2024-01-02", "2024-01-02T03:04:05", "01:02:03", "00000000-0000-0000-0000-000000000001",
                   [1, 2], {"a": ["2024-01-01"]}, b"ab", None, True)


def test_row_cap(shop):
    result = shop.execute("SELECT range FROM range(1000000)")
    assert len(result.rows) == 50 and result.truncated and result.truncated_by == "rows"
    assert result.rows[-1] == (49,)
    small = shop.execute("SELECT name FROM customers ORDER BY id", max_rows=3)
    assert small.rows == [("Ann",), ("Bob",), ("Cy",)] and not small.truncated


def test_byte_cap(tmp_path):
    from slimsql.db.limits import Limits

    with DuckDBDatabase(make_duckdb(tmp_path / "s.duckdb"), max_rows=1000, limits=Limits(max_bytes=100_000)) as opened:
        result = opened.execute("SELECT repeat('x', 10000) FROM range(1000)")
    assert result.truncated and result.truncated_by == "bytes" and 5 <= len(result.rows) <= 10


def test_time_limit_stops_a_cross_join_fast(shop):
    start = time.monotonic()
    with pytest.raises(QueryTimeout, match=r"^query stopped after the 0.5 s time limit$"):
        shop.execute("SELECT count(*) FROM range(100000) a, range(100000) b, range(100000) c", timeout=0.5)
    assert time.monotonic() - start < 1.5
    assert shop.execute("SELECT count(*) FROM customers").rows == [(3,)]  # still usable


def test_a_step_too_big_for_memory_is_a_query_error(shop):
    start = time.monotonic()
    with pytest.raises(QueryError, match="more memory than allowed") as info:
        shop.execute("SELECT len(range(0, 100000000))")
    assert time.monotonic() - start < 3 and "\n" not in str(info.value)


ERRORS = [
    ("SELECT nope FROM customers", "unknown column", "nope", None),
    ("SELECT c.nope FROM customers c", "unknown column", "nope", None),
    ("SELECT id FROM customers, orders", "unknown column", None, None),
    ("SELECT * FROM nope", "unknown table", None, "nope"),
    ("SELECT * FROM sales.nope", "unknown table", None, "nope"),
    ("SELECT * FORM customers", "syntax", None, None),
]


@pytest.mark.parametrize("sql,category,column,table", ERRORS, ids=[e[0] for e in ERRORS])
def test_error_categories_and_missing_names_match_duckdb_wording(shop, sql, category, column, table):
    with pytest.raises(QueryError) as info:
        shop._run(sql)  # DuckDB's own message (the allow-list would refuse the syntax error first)
    message = str(info.value)
    assert message.startswith("the database refused the query: ") and "\n" not in message
    assert "LINE 1" not in message
    assert shop.rules.category(message.lower()) == category
    found_column, found_table = shop.rules.missing("column", message), shop.rules.missing("table", message)
    assert (found_column.group("name") if found_column else None) == column
    assert (found_table.group("name") if found_table else None) == table


def test_repair_hint_reads_duckdb_wording(shop):
    schema = shop.schema()
    with pytest.raises(QueryError) as info:
        shop.execute("SELECT city FROM orders")
    assert error_hint(str(info.value), schema)[0] == "The column city is in table customers."


# -- the rules ------------------------------------------------------------------------

def test_every_table_function_is_denied_or_known_safe():
    conn = duckdb.connect()
    names = {n for n, in conn.execute("SELECT DISTINCT function_name FROM duckdb_functions() "
                                      "WHERE function_type = 'table'").fetchall()}
    assert names - DENIED_FUNCTIONS - SAFE_TABLE_FUNCTIONS == set()


@pytest.mark.parametrize("name", sorted(DENIED_FUNCTIONS))
def test_every_denied_function_is_refused_as_sqlglot_reads_it(name):
    for sql in (f"SELECT * FROM {name}('x')", f"SELECT {name}('x')", f"SELECT 1 FROM t, LATERAL {name}(t.a)"):
        with pytest.raises(UnsafeSQLError, match=r"not run: function .* is not allowed"):
            check_read_only(sql, "duckdb")


def test_locked_settings_exist_and_hold(shop):
    conn = duckdb.connect()
    known = {n for n, in conn.execute("SELECT name FROM duckdb_settings()").fetchall()}
    assert set(LOCKED_SETTINGS) | {"memory_limit", "threads", "temp_directory", "max_temp_directory_size"} <= known
    from slimsql.db.duckdb import locked_connection

    raw = locked_connection(shop._worker.config)
    try:
        values = dict(raw.execute("SELECT name, value FROM duckdb_settings()").fetchall())
        for name, value in LOCKED_SETTINGS.items():
            assert values[name] == str(value).lower(), name
        assert values["memory_limit"] == "256.0 MiB" and values["temp_directory"] == shop._worker.config["spill"]
    finally:
        raw.close()


# -- the command line -------------------------------------------------------------------

def test_cli_schema_of_several_files(tmp_path, capsys):
    paths = make_files(tmp_path)
    assert cli.main(["schema", "--db", str(paths[0]), "--db", str(paths[1]), "--compact"]) == 0
    out = capsys.readouterr().out
    assert "orders(id BIGINT, customer_id BIGINT, total DOUBLE, placed DATE)" in out
    assert "customers(id INTEGER, name VARCHAR, city VARCHAR)" in out


def test_cli_ask_over_csv_and_parquet(tmp_path, monkeypatch, capsys):
    paths = make_files(tmp_path)
    backend = ScriptedBackend(["SELECT c.name, count(*) AS n FROM orders o JOIN customers c ON c.id = o.customer_id "
                               "GROUP BY c.name ORDER BY c.name"])
    monkeypatch.setattr("slimsql.connection.load_backend", lambda name, **kw: backend)
    assert cli.main(["ask", "--db", str(paths[0]), "--db", str(paths[1]), "--json", "Orders per customer?"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rows"] == [["Ann", 2], ["Bob", 1]]
    prompt = " ".join(m["content"] for m in backend.calls[0][0])
    assert "CREATE TABLE orders" in prompt and "CREATE TABLE customers" in prompt


def test_cli_ask_a_duckdb_file(tmp_path, monkeypatch, capsys):
    path = make_duckdb(tmp_path / "shop.duckdb")
    backend = ScriptedBackend(["SELECT count(*) FROM orders"])
    monkeypatch.setattr("slimsql.connection.load_backend", lambda name, **kw: backend)
    assert cli.main(["ask", "--db", str(path), "--sql-only", "How many orders?"]) == 0
    assert capsys.readouterr().out.strip() == "SELECT count(*) FROM orders"


@pytest.mark.parametrize("args, code, message", [
    (["schema", "--db", "{dir}/orders.csv", "--db", "{dir}/shop.sqlite"], 2,
     "error: several --db values only for CSV/Parquet files"),
    (["sql", "--db", "{dir}/orders.csv", "--db", "{dir}/missing.csv", "SELECT 1"], 3, "error: database not found"),
    (["sql", "--db", "{dir}/orders.csv", "SELECT * FROM read_text('/etc/passwd')"], 4,
     "error: not run: function read_text() is not allowed"),
    (["sql", "--db", "{dir}/orders.csv", "--timeout", "0.5",
      "SELECT count(*) FROM range(100000) a, range(100000) b"], 5, "error: query stopped after the 0.5 s time limit"),
])
def test_cli_bad_input_is_one_line(tmp_path, capsys, args, code, message):
    make_files(tmp_path)
    assert cli.main([a.replace("{dir}", str(tmp_path)) for a in args]) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err
