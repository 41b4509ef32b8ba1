import sqlite3

import pytest
import sqlglot

from slimsql.db.sqlite import SQLiteDatabase
from slimsql.schema import quote, render_compact, render_create


@pytest.fixture
def odd_db(tmp_path):
    path = tmp_path / "odd.sqlite"
    conn = sqlite3.connect(path)
    wide = ", ".join(f"c{i} INTEGER" for i in range(300))
    conn.executescript(f"""
        CREATE TABLE "order items" ("order" INTEGER, "select" TEXT, "we""ird" TEXT, "café" REAL,
                                    PRIMARY KEY ("order", "select"));
        CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
        CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent,
                            a INT, b INT, FOREIGN KEY (a, b) REFERENCES "order items" ("order", "select"));
        CREATE TABLE empty_table (x TEXT);
        CREATE TABLE wide ({wide});
        CREATE VIEW named_parents AS SELECT id, name FROM parent WHERE name IS NOT NULL;
        INSERT INTO parent VALUES (1, 'Ana'), (2, 'Bo'), (3, 'Cy'), (4, 'Di');
        INSERT INTO "order items" VALUES (1, 'x', 'it''s', 1.5);
    """)
    conn.close()
    return path


def test_introspection_of_odd_identifiers(odd_db):
    schema = SQLiteDatabase(odd_db).schema()
    assert schema.names() == ["order items", "parent", "child", "empty_table", "wide", "named_parents"]
    items = schema.table("ORDER ITEMS")
    assert [c.name for c in items.columns] == ["order", "select", 'we"ird', "café"]
    assert items.primary_key == ("order", "select")
    child = schema.table("child")
    assert {(fk.columns, fk.ref_table, fk.ref_columns) for fk in child.foreign_keys} == {
        (("parent_id",), "parent", ()), (("a", "b"), "order items", ("order", "select"))}
    assert schema.table("named_parents").kind == "view"
    assert schema.table("parent").columns[1].samples == ("Ana", "Bo", "Cy")
    assert schema.table("empty_table").columns[0].samples == ()
    assert len(schema.table("wide").columns) == 300


def test_create_rendering_is_valid_sqlite_for_tables(odd_db):
    text = render_create(SQLiteDatabase(odd_db).schema())
    assert 'CREATE TABLE "order items" (' in text
    assert '"we""ird" TEXT' in text and '"select" TEXT' in text
    assert "PRIMARY KEY (\"order\", \"select\")" in text
    assert "FOREIGN KEY (parent_id) REFERENCES parent (id)" in text  # implicit key resolved
    assert "-- e.g. 'Ana', 'Bo', 'Cy'" in text
    # Every rendered table statement (without sample comments) builds a real table.
    conn = sqlite3.connect(":memory:")
    for block in text.split("\n\n"):
        if block.startswith("CREATE TABLE"):
            conn.execute(block)
    assert len(conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()) == 5


def test_compact_rendering(odd_db):
    text = render_compact(SQLiteDatabase(odd_db).schema())
    assert 'parent(id INTEGER PK, name TEXT)' in text
    assert 'child.parent_id = parent.id' in text
    assert 'child.a = "order items"."order"' in text


def test_quote():
    assert quote("customers") == "customers"
    assert quote("order") == '"order"'
    assert quote("my col") == '"my col"'
    assert quote('a"b') == '"a""b"'
    assert sqlglot.parse_one(f"SELECT {quote('from')} FROM t", read="sqlite")


def test_demo_schema(demo_db):
    schema = SQLiteDatabase(demo_db).schema()
    assert {"customers", "orders", "order_items", "products", "categories", "employees"} <= set(schema.names())
    orders = schema.table("orders")
    assert {fk.ref_table for fk in orders.foreign_keys} == {"customers", "employees"}
    assert "cancelled" in render_create(schema) or "delivered" in render_create(schema)
