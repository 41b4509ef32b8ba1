"""Value linking and schema pruning (slimsql.infer.linking), on databases built here."""

import sqlite3

import pytest

import slimsql
from slimsql.backends.scripted import ScriptedBackend
from slimsql.db.sqlite import SQLiteDatabase
from slimsql.infer import linking
from slimsql.infer.linking import ValueIndex, content_key, prune, render_values
from slimsql.schema import render_create

from .conftest import sha256


@pytest.fixture
def city_db(tmp_path):
    path = tmp_path / "city.sqlite"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, city VARCHAR(40), age INTEGER)")
        c.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id), "
                  "status TEXT)")
        c.executemany("INSERT INTO customers VALUES (?, ?, ?, ?)",
                      [(1, "Ada Byron", "New York", 30), (2, "Alan Kay", "Boston", 40), (3, "Bo Li", "Paris", 22)])
        c.executemany("INSERT INTO orders VALUES (?, ?, ?)",
                      [(i, 1 + i % 3, ("cancelled", "shipped", "pending")[i % 3]) for i in range(30)])
    linking._MEMORY.clear()
    return path


def test_values_the_question_mentions_land_on_their_columns(city_db):
    with SQLiteDatabase(city_db) as db:
        index = ValueIndex.build(db)
    matches = index.match("How many orders were canceled by customers from new york?")
    found = {(m.table, m.column, m.value) for m in matches}
    assert ("orders", "status", "cancelled") in found  # fuzzy: one letter off
    assert ("customers", "city", "New York") in found  # exact, case aside
    exact = next(m for m in matches if m.value == "New York")
    assert exact.score == 100.0 and matches[0].score >= matches[-1].score
    assert render_values(matches).splitlines()[0] == "customers.city: 'New York'"
    assert index.match("How many are there in 2024?") == []  # stop words and numbers match nothing
    assert ("customers", "age") not in index.values  # numbers are not indexed


def test_index_is_bounded(tmp_path):
    path = tmp_path / "big.sqlite"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE t (a TEXT, b TEXT)")
        c.executemany("INSERT INTO t VALUES (?, ?)", ((f"value {i}", "x" * 200) for i in range(20_000)))
    with SQLiteDatabase(path) as db:
        index = ValueIndex.build(db, max_values_per_column=500)
        assert len(index.values[("t", "a")]) == 500 and ("t", "b") not in index.values  # too long to be a value
        assert sum(map(len, ValueIndex.build(db, max_total=100).values.values())) == 100


def test_disk_cache_by_content(city_db, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    before = sha256(city_db)
    with SQLiteDatabase(city_db) as db:
        first = ValueIndex.for_database(db, cache)
    assert sha256(city_db) == before and len(list(cache.glob("*.json"))) == 1
    linking._MEMORY.clear()
    monkeypatch.setattr(ValueIndex, "build", classmethod(lambda cls, db, **kw: pytest.fail("rebuilt")))
    with SQLiteDatabase(city_db) as db:
        assert ValueIndex.for_database(db, cache).values == first.values  # read from disk
    monkeypatch.undo()
    linking._MEMORY.clear()
    with sqlite3.connect(city_db) as c:
        c.execute("INSERT INTO customers VALUES (4, 'Cy Twombly', 'Rome', 50)")
    with SQLiteDatabase(city_db) as db:
        again = ValueIndex.for_database(db, cache)
    assert "Rome" in again.values[("customers", "city")] and len(list(cache.glob("*.json"))) == 2
    # a corrupt cache file is ignored and rebuilt
    linking._MEMORY.clear()
    with SQLiteDatabase(city_db) as db:
        (cache / f"{content_key(city_db)}.json").write_text("{not json")
        assert "Rome" in ValueIndex.for_database(db, cache).values[("customers", "city")]


def test_values_reach_the_prompt_after_the_schema(city_db, tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMSQL_HOME", str(tmp_path / "home"))
    backend = ScriptedBackend(["SELECT count(*) FROM orders WHERE status = 'cancelled'"])
    conn = slimsql.connect(city_db, backend=backend, preset="fast", values=True)
    answer = conn.ask("How many orders were canceled?")
    assert answer.rows == [(10,)] and answer.trace.values == ["orders.status = 'cancelled'"]
    prompt = backend.calls[0][0][-1]["content"]
    assert "-- Values in the database that match the question:\n-- orders.status: 'cancelled'\n" in prompt
    assert prompt.index("CREATE TABLE orders") < prompt.index("-- Values")  # the schema prefix stays shared


def _wide_db(path):
    with sqlite3.connect(path) as c:
        for i in range(200):
            c.execute(f"CREATE TABLE t{i:03d} (id INTEGER PRIMARY KEY, code TEXT, amount REAL, note TEXT)")
        c.execute("CREATE TABLE departments (department_id INTEGER PRIMARY KEY, title TEXT)")
        c.execute("CREATE TABLE employees (employee_id INTEGER PRIMARY KEY, full_name TEXT, "
                  "department_id INTEGER REFERENCES departments(department_id))")
        c.execute("CREATE TABLE salaries (employee_id INTEGER REFERENCES employees(employee_id), amount REAL, "
                  "year INTEGER)")
        c.execute("CREATE TABLE employee_projects (employee_id INTEGER REFERENCES employees(employee_id), "
                  "project_id INTEGER REFERENCES projects(project_id))")
        c.execute("CREATE TABLE projects (project_id INTEGER PRIMARY KEY, label TEXT)")
    return path


def test_prune_keeps_the_tables_the_question_is_about(tmp_path):
    with SQLiteDatabase(_wide_db(tmp_path / "wide.sqlite")) as db:
        schema = db.schema(0)
    count = lambda text: len(text) // 4  # noqa: E731
    assert count(render_create(schema)) > 4000
    pruned = prune(schema, "What is the average salary of employees in each department?", budget_tokens=400,
                   count_tokens=count)
    names = pruned.names()
    assert {"employees", "salaries", "departments"} <= set(names)
    assert count(render_create(pruned)) <= 400 and len(names) < 10
    assert names == [t for t in schema.names() if t in names]  # original order
    # the join table between two kept tables comes along
    linked = prune(schema, "Which projects does each employee work on?", budget_tokens=400, count_tokens=count)
    assert {"employees", "projects", "employee_projects"} <= set(linked.names())
    # within budget: unchanged; tiny budget: still the best table
    assert prune(schema, "anything", budget_tokens=10**6, count_tokens=count) is schema
    assert prune(schema, "salaries by year", budget_tokens=1, count_tokens=count).names() == ["salaries"]
