import sqlite3

import pytest

from slimsql.demo import build_demo
from slimsql.errors import InputError

from .conftest import sha256


def test_deterministic(tmp_path):
    a, b = build_demo(tmp_path / "a.sqlite"), build_demo(tmp_path / "b.sqlite")
    assert sha256(a) == sha256(b)
    assert sha256(build_demo(tmp_path / "c.sqlite", seed=7)) != sha256(a)


def test_realistic_content(demo_master):
    conn = sqlite3.connect(demo_master)
    counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("customers", "orders", "order_items", "products", "categories", "employees", "payments")}
    assert sum(counts.values()) > 5000 and counts["orders"] == 2500
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert conn.execute("SELECT count(*) FROM orders WHERE status = 'cancelled'").fetchone()[0] > 100
    assert conn.execute("SELECT count(*) FROM orders WHERE employee_id IS NULL").fetchone()[0] > 0
    assert conn.execute("SELECT count(*) FROM customers WHERE phone IS NULL").fetchone()[0] > 0
    assert conn.execute("SELECT count(*) FROM employees WHERE manager_id IS NULL").fetchone()[0] == 1
    years = {r[0] for r in conn.execute("SELECT DISTINCT substr(order_date, 1, 4) FROM orders")}
    assert years == {"2023", "2024", "2025"}


def test_refuses_to_overwrite(tmp_path):
    path = build_demo(tmp_path / "shop.sqlite")
    with pytest.raises(InputError, match="--force"):
        build_demo(path)
    build_demo(path, force=True)


def test_the_demo_ships_a_knowledge_file_that_fits_it(tmp_path, capsys):
    from slimsql import cli, knowledge

    db = tmp_path / "shop.sqlite"
    assert cli.main(["demo", "--out", str(db)]) == 0
    path = db.with_name("shop.sqlite.knowledge.yaml")
    assert str(path) in capsys.readouterr().err.replace("\n", "")
    shipped = knowledge.load(path)
    assert shipped.summary() == {"notes": 2, "descriptions": 2, "examples": 3, "generated": 0}
    assert cli.main(["teach", "--db", str(db), "--check"]) == 0  # every example runs, every name exists
    path.write_text(path.read_text() + "# a user's edit\n")
    assert cli.main(["demo", "--out", str(db)]) == 2  # the database exists: nothing is replaced
    assert path.read_text().endswith("# a user's edit\n")
