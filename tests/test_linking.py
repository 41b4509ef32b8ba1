"""Value linking and schema pruning (slimsql.infer.linking), on databases built here."""

import sqlite3
import time

import pytest

import slimsql
from slimsql.backends.scripted import ScriptedBackend
from slimsql.db.sqlite import SQLiteDatabase
from slimsql.infer import linking
from slimsql.infer.linking import ValueIndex, ValueMatch, content_key, prune, render_values
from slimsql.schema import render_compact, render_create

from .conftest import sha256


def _write(path, script, rows=()):
    """Create a database in one transaction (fast), then fill tables from ``rows``: (sql, params)."""
    with sqlite3.connect(path) as c:
        c.executescript("BEGIN;" + script + "COMMIT;")
        for sql, params in rows:
            c.executemany(sql, params)
    return path


@pytest.fixture(autouse=True)
def _fresh_memory():
    linking._MEMORY.clear()


@pytest.fixture
def city_db(tmp_path):
    return _write(tmp_path / "city.sqlite", """
        CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, city VARCHAR(40), age INTEGER, code TEXT);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id), status TEXT);
        CREATE TABLE bands (id INTEGER PRIMARY KEY, name TEXT);
        CREATE VIEW open_orders AS SELECT id, status || ' order' AS label FROM orders;
    """, [
        ("INSERT INTO customers VALUES (?, ?, ?, ?, ?)",
         [(1, "Ada Byron", "New York", 30, "2024"), (2, "Alan Kay", "Boston", 40, "A"),
          (3, "Bo Li", "Paris", 22, "x1")]),
        ("INSERT INTO orders VALUES (?, ?, ?)",
         [(i, 1 + i % 3, ("cancelled", "shipped", "pending")[i % 3]) for i in range(30)]),
        ("INSERT INTO bands VALUES (?, ?)", [(1, "The Beatles"), (2, "O'Brien & Sons"), (3, "The Who")]),
    ])


def test_values_the_question_mentions_land_on_their_columns(city_db):
    with SQLiteDatabase(city_db) as db:
        index = ValueIndex.build(db)
    found = {(m.table, m.column, m.value): m.score for m in index.match("How many orders were canceled?")}
    assert set(found) == {("orders", "status", "cancelled")} and 88 <= found[("orders", "status", "cancelled")] < 100
    matches = index.match("List the customers from new york")
    assert matches == [ValueMatch("customers", "city", "New York", 100.0)]  # exact, case aside
    # a value starting with a stop word, a quoted value, punctuation aside
    assert [m.value for m in index.match("songs by the beatles")] == ["The Beatles"]
    assert [m.value for m in index.match("members of O'Brien & Sons")] == ["O'Brien & Sons"]
    assert index.match("which are still pendings?") == [ValueMatch("orders", "status", "pending", 95.0)]  # singular
    assert index.match("songs by the who") == [] and [m.value for m in index.match('songs by "the Who"')] == [
        "The Who"]  # only stop words: found only when quoted
    assert render_values(index.match("customers from Boston or new york, orders pending")).splitlines() == [
        "customers.city: 'Boston', 'New York'", "orders.status: 'pending'"]


def test_numbers_and_stop_words_match_nothing(city_db):
    with SQLiteDatabase(city_db) as db:
        index = ValueIndex.build(db)
    assert index.match("How many are there in 2024?") == []
    assert index.match("What is the name of the one with the most?") == []
    assert ("customers", "age") not in index.values  # numbers are not indexed
    assert index.values[("customers", "code")] == ["x1"]  # nor digit-only or one-letter text
    assert not any(t == "open_orders" for t, _ in index.values)  # views are skipped


def test_render_values_quotes_names_and_escapes_values():
    matches = [ValueMatch("order", "status", "it's", 100.0), ValueMatch("t", "first name", "Ann", 90.0),
               ValueMatch("order", "status", "done", 90.0)]
    assert render_values(matches) == "\"order\".status: 'it''s', 'done'\nt.\"first name\": 'Ann'"
    assert render_values([]) == ""


def test_match_order_is_deterministic_and_capped(tmp_path):
    path = _write(tmp_path / "m.sqlite", "CREATE TABLE b (c TEXT); CREATE TABLE a (c TEXT, d TEXT);",
                  [("INSERT INTO b VALUES (?)", [("red",)]), ("INSERT INTO a VALUES (?, ?)", [("red", "red")])])
    with SQLiteDatabase(path) as db:
        index = ValueIndex.build(db)
    assert [(m.table, m.column) for m in index.match("red ones")] == [("a", "c"), ("a", "d"), ("b", "c")]
    assert len(index.match("red ones", limit=2)) == 2


def test_index_is_bounded_in_size_and_time(tmp_path):
    path = _write(tmp_path / "big.sqlite", "CREATE TABLE t (a TEXT, b TEXT, c TEXT);",
                  [("INSERT INTO t VALUES (?, ?, ?)",
                    ((f"value {i}", "x" * 200, ("open", "closed")[i % 2]) for i in range(100_000)))])
    with SQLiteDatabase(path) as db:
        start = time.perf_counter()
        index = ValueIndex.build(db, max_values_per_column=500)
        assert time.perf_counter() - start < 5
        assert len(index.values[("t", "a")]) == 500 and ("t", "b") not in index.values  # too long to be a value
        assert sorted(index.values[("t", "c")]) == ["closed", "open"]
        assert len(ValueIndex.build(db, max_total=100)) == 100
        start = time.perf_counter()
        assert len(ValueIndex.build(db, seconds=0.0)) == 0  # out of time: what was read so far
        assert time.perf_counter() - start < 1
    assert [m.value for m in index.match("value 17 closed")][:2] == ["value 17", "closed"]


def test_tables_that_fail_to_read_are_skipped(tmp_path):
    path = tmp_path / "odd.sqlite"
    with sqlite3.connect(path) as c:
        c.create_collation("mine", lambda a, b: (a > b) - (a < b))
        c.executescript("CREATE TABLE odd (x TEXT COLLATE mine); CREATE TABLE fine (y TEXT);"
                        "INSERT INTO odd VALUES ('alpha'); INSERT INTO fine VALUES ('beta');")
    with SQLiteDatabase(path) as db:  # "mine" is unknown here: DISTINCT over odd.x fails
        assert ValueIndex.build(db).values == {("fine", "y"): ["beta"]}


def test_disk_cache_by_content(city_db, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    before = sha256(city_db)
    with SQLiteDatabase(city_db) as db:
        first = ValueIndex.for_database(db, cache)
        assert ValueIndex.for_database(db, cache) is first  # the in-process cache
    assert sha256(city_db) == before  # building never writes the database
    assert len(list(cache.glob("*.json"))) == 1 and not list(cache.glob("*.tmp"))
    linking._MEMORY.clear()
    monkeypatch.setattr(ValueIndex, "build", classmethod(lambda cls, db, **kw: pytest.fail("rebuilt")))
    with SQLiteDatabase(city_db) as db:
        assert ValueIndex.for_database(db, cache).values == first.values  # read from disk
    monkeypatch.undo()
    linking._MEMORY.clear()
    with sqlite3.connect(city_db) as c:
        c.execute("INSERT INTO customers VALUES (4, 'Cy Twombly', 'Rome', 50, 'z')")
    with SQLiteDatabase(city_db) as db:
        again = ValueIndex.for_database(db, cache)
    assert "Rome" in again.values[("customers", "city")] and len(list(cache.glob("*.json"))) == 2


@pytest.mark.parametrize("junk", ["{not json", '{"version": 2, "values": [["t", "c", [1]]]}', '{"version": 1}', ""])
def test_a_corrupt_cache_file_is_rebuilt(city_db, tmp_path, junk):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"{content_key(city_db)}.json").write_text(junk)
    with SQLiteDatabase(city_db) as db:
        assert "Boston" in ValueIndex.for_database(db, cache).values[("customers", "city")]
    linking._MEMORY.clear()
    with SQLiteDatabase(city_db) as db:  # and the rebuilt one was saved in its place
        assert linking._load(cache / f"{content_key(city_db)}.json").values == ValueIndex.build(db).values


def test_values_reach_the_prompt_after_the_schema(city_db, tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMSQL_HOME", str(tmp_path / "home"))
    backend = ScriptedBackend(["SELECT count(*) FROM orders WHERE status = 'cancelled'"])
    conn = slimsql.connect(city_db, backend=backend, preset="fast", values=True)
    answer = conn.ask("How many orders were canceled?")
    assert answer.rows == [(10,)] and answer.trace.values == ["orders.status = 'cancelled'"]
    prompt = backend.calls[0][0][-1]["content"]
    assert "-- Values in the database that match the question:\n-- orders.status: 'cancelled'\n" in prompt
    assert prompt.index("CREATE TABLE orders") < prompt.index("-- Values")  # the schema prefix stays shared


# -- pruning ---------------------------------------------------------------------------------

def count(text):
    return len(text) // 4


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """200 filler tables t000..t199 around a small company: employees, departments, salaries,
    projects (through employee_projects) and regions (two joins away from employees)."""
    filler = "".join(f"CREATE TABLE t{i:03d} (id INTEGER PRIMARY KEY, code TEXT, amount REAL, note TEXT);"
                     for i in range(200))
    path = _write(tmp_path_factory.mktemp("wide") / "wide.sqlite", filler[: len(filler) // 2] + """
        CREATE TABLE regions (region_id INTEGER PRIMARY KEY, region_name TEXT);
        CREATE TABLE departments (department_id INTEGER PRIMARY KEY, title TEXT,
                                  region_id INTEGER REFERENCES regions(region_id));
        CREATE TABLE employees (employee_id INTEGER PRIMARY KEY, fullName TEXT,
                                department_id INTEGER REFERENCES departments(department_id));
        CREATE TABLE salaries (employee_id INTEGER REFERENCES employees(employee_id), amount REAL, year INTEGER);
        CREATE TABLE employee_projects (employee_id INTEGER REFERENCES employees(employee_id),
                                        project_id INTEGER REFERENCES projects(project_id));
        CREATE TABLE projects (project_id INTEGER PRIMARY KEY, label TEXT);
        CREATE TABLE "order" (id INTEGER PRIMARY KEY, status TEXT);
    """ + filler[len(filler) // 2:], [('INSERT INTO "order" VALUES (?, ?)', [(1, "overdue")])])
    with SQLiteDatabase(path) as db:
        return db.schema(0)


def test_prune_keeps_the_tables_the_question_is_about(wide):
    assert len(wide.tables) == 207 and count(render_create(wide)) > 4000
    pruned = prune(wide, "What is the average salary of employees in each department?", budget_tokens=400,
                   count_tokens=count)
    names = pruned.names()
    assert {"employees", "salaries", "departments"} <= set(names)
    assert count(render_create(pruned)) <= 400
    assert names == [t for t in wide.names() if t in names]  # original order
    assert "regions" in names  # the rest of the budget goes to the tables joined to those first


@pytest.mark.parametrize("question, needed", [
    ("Which projects does each employee work on?", {"employees", "projects", "employee_projects"}),
    ("How many employees are there in each region?", {"employees", "regions", "departments"}),
    ("Salaries of the projects' staff", {"salaries", "projects", "employee_projects", "employees"}),
])
def test_prune_adds_the_tables_on_join_paths(wide, question, needed):
    tight = prune(wide, question, budget_tokens=180, count_tokens=count)
    assert needed <= set(tight.names()), tight.names()
    assert count(render_create(tight)) <= 180


def test_prune_within_budget_and_at_the_edges(wide):
    question = "salaries by year"
    assert prune(wide, question, budget_tokens=10**6, count_tokens=count) is wide  # fits: unchanged
    assert prune(wide, question, budget_tokens=1, count_tokens=count).names() == ["salaries"]  # best table stays
    for budget in (30, 60, 120, 250, 500, 1000, 2000):
        for render in (render_create, render_compact):
            pruned = prune(wide, question, budget_tokens=budget, count_tokens=count, render=render)
            assert "salaries" in pruned.names()
            assert count(render(pruned)) <= budget or pruned.names() == ["salaries"]


def test_prune_ranks_by_names_and_values(wide):
    # "status" is only a column name; the matched value points at "order" (a keyword, quoted)
    value = [ValueMatch("order", "status", "overdue", 100.0)]
    assert prune(wide, "which ones are overdue?", budget_tokens=1, count_tokens=count, matches=value).names() == [
        "order"]
    # camelCase, plural and a typo all point at the same tables
    assert prune(wide, "the full names of all employes", budget_tokens=1, count_tokens=count).names() == [
        "employees"]
    assert prune(wide, "list every departmnt title", budget_tokens=1, count_tokens=count).names() == ["departments"]


def test_prune_leaves_out_foreign_keys_to_dropped_tables(wide):
    pruned = prune(wide, "full names of the employees", budget_tokens=1, count_tokens=count)
    (employees,) = pruned.tables
    assert employees.foreign_keys == () and [c.name for c in employees.columns] == [
        "employee_id", "fullName", "department_id"]  # the key column stays
    assert "REFERENCES" not in render_create(pruned)


def test_prune_slims_very_wide_tables(tmp_path):
    columns = ", ".join(f"metric_{i:02d} REAL" for i in range(60))
    path = _write(tmp_path / "w.sqlite", f"""
        CREATE TABLE stations (station_id INTEGER PRIMARY KEY, station_name TEXT);
        CREATE TABLE readings (reading_id INTEGER PRIMARY KEY, station_id INTEGER REFERENCES stations(station_id),
                               {columns}, rainfall REAL, humidity REAL);
    """)
    with SQLiteDatabase(path) as db:
        schema = db.schema(0)
    pruned = prune(schema, "average rainfall per station name", budget_tokens=200, count_tokens=count,
                   max_columns=10)
    readings = pruned.table("readings")
    names = [c.name for c in readings.columns]
    assert len(names) == 10 and names[:2] == ["reading_id", "station_id"] and "rainfall" in names
    assert "humidity" not in names and names == [c.name for c in schema.table("readings").columns if c.name in names]
    assert pruned.table("stations") is not None and count(render_create(pruned)) <= 200
    # a table no wider than max_columns keeps every column
    assert prune(schema, "rainfall", budget_tokens=1, count_tokens=count, max_columns=100).tables[0].columns == \
        schema.table("readings").columns
