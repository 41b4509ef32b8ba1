"""The engine registry and the engines' rules: found by name, dialect, file or URL scheme;
plugins through the ``slimsql.engines`` entry points; nothing above db/ names an engine."""

import ast
import re
import tomllib
import types
from dataclasses import replace
from pathlib import Path

import pytest

import slimsql.db as db
from slimsql.db.base import Engine, EngineRules, Result
from slimsql.errors import InputError, UnsafeSQLError
from slimsql.eval.metrics import CATEGORIES, categorize
from slimsql.eval.store import Record
from slimsql.infer.repair import error_hint
from slimsql.schema import Column, Schema, Table
from slimsql.sql import check_read_only

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "slimsql"


class FakeEngine:
    """A third-party engine as a plugin would ship it: opens fake:// URLs."""

    rules = EngineRules(name="fake", display_name="Fake", dialect="snowflake", time_limit="none: it answers at once",
                        denied_functions=frozenset({"read_csv"}), denied_statements=frozenset({"Pivot"}),
                        error_categories=(("unknown thing", "unknown column"),),
                        missing_column=r'column "(?P<name>[^"]+)" does not exist')
    dialect = rules.dialect

    @classmethod
    def opens(cls, target):
        return isinstance(target, str) and target.startswith("fake://")

    def __init__(self, target, *, timeout=10.0, max_rows=1000):
        self.target, self.timeout, self.max_rows = target, timeout, max_rows

    def schema(self, samples=3):
        return Schema(tables=(), dialect=self.dialect)

    def execute(self, sql, *, max_rows=None, timeout=None):
        check_read_only(sql, self.dialect)
        return Result(columns=("x",), rows=[(1,)])

    def _run(self, sql, params=(), *, max_rows=None, timeout=None):
        return Result(columns=("x",), rows=[(1,)])

    def close(self):
        pass


@pytest.fixture
def with_plugin(monkeypatch):
    entry = types.SimpleNamespace(name="fake", value="tests:FakeEngine", load=lambda: FakeEngine)
    monkeypatch.setattr(db, "available", lambda: {"fake": entry})


def test_builtin_engines_are_the_registered_entry_points():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["slimsql.engines"] == db.BUILTIN


def test_sqlite_is_found_by_name_dialect_and_file(demo_db):
    sqlite = db.engine_class("sqlite")
    assert db.rules_for("sqlite") is sqlite.rules and db.rules_for() is sqlite.rules
    assert db.engine_for(demo_db) is sqlite and db.engine_for(str(demo_db)) is sqlite
    assert db.engine_for("data.unknown-suffix") is sqlite  # the default for files, as before
    with db.open_database(demo_db) as opened:
        assert isinstance(opened, sqlite) and isinstance(opened, Engine)
        assert opened.execute("SELECT count(*) FROM customers").rows[0][0] > 0


def test_unknown_scheme_and_name_are_one_line_input_errors():
    with pytest.raises(InputError, match=r"^no database engine opens mysql:// URLs; installed engines: .*sqlite$"
                       ) as info:
        db.open_database("mysql://user:secret@host/db")
    assert "secret" not in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(InputError, match="unknown database engine 'nope'; installed engines: duckdb, files, postgres, sqlite"):
        db.engine_class("nope")
    with pytest.raises(InputError, match="no database engine for dialect 'tsql'"):
        db.rules_for("tsql")


def test_a_plugin_engine_is_found_by_its_scheme_and_opened(with_plugin, demo_db):
    opened = db.open_database("fake://somewhere", timeout=3.0, max_rows=7)
    assert isinstance(opened, FakeEngine) and (opened.timeout, opened.max_rows) == (3.0, 7)
    assert db.engine_class("fake") is FakeEngine and db.rules_for("fake") is FakeEngine.rules
    assert db.engine_for(demo_db) is db.engine_class("sqlite")  # files stay SQLite's
    with pytest.raises(InputError, match="installed engines: duckdb, fake, files, postgres, sqlite"):
        db.open_database("mysql://host/db")
    # the allow-list takes the plugin's denied functions and statements, not SQLite's
    with pytest.raises(UnsafeSQLError, match=r"function read_csv\(\) is not allowed"):
        opened.execute("SELECT * FROM read_csv('x.csv')")
    with pytest.raises(UnsafeSQLError, match="only read-only queries may run, found PIVOT"):
        opened.execute("SELECT * FROM (PIVOT t ON a USING sum(b))")
    assert opened.execute("SELECT load_extension('x')").rows == [(1,)]


def engines():
    return [db.engine_class(name) for name in db.BUILTIN] + [FakeEngine]


@pytest.mark.parametrize("engine", engines(), ids=lambda e: e.rules.name)
def test_every_engines_rules_pass_their_checks(engine):
    rules = engine.rules
    assert replace(rules) == rules  # __post_init__ accepts them again
    assert set(c for _, c in rules.error_categories) <= set(CATEGORIES)
    assert engine.dialect == rules.dialect and callable(engine.opens)
    for name in ("schema", "execute", "_run", "close"):
        assert callable(getattr(engine, name))


@pytest.mark.parametrize("change, message", [
    (dict(name="Bad Name"), "name must be"),
    (dict(display_name=""), "display_name must be one non-empty line"),
    (dict(time_limit="two\nlines"), "time_limit must be one non-empty line"),
    (dict(dialect="nosuchdialect"), "is not a sqlglot dialect"),
    (dict(denied_functions={"readfile"}), "must be a frozenset"),
    (dict(denied_functions=frozenset({"ReadFile"})), "lower case"),
    (dict(denied_statements=frozenset({"Nope"})), "not a sqlglot expression class"),
    (dict(error_categories=(("(", "syntax"),)), "bad pattern"),
    (dict(error_categories=(("x", "kaput"),)), "is not one of"),
    (dict(missing_table=r"no such table: (\S+)"), "needs a group named 'name'"),
])
def test_rules_are_checked_when_made(change, message):
    with pytest.raises(InputError, match=message):
        replace(db.rules_for("sqlite"), **change)


def test_categories_and_hints_come_from_the_rules():
    record = Record(id="1", exec_error="the database refused the query: unknown thing here")
    assert categorize(record) == "other error"
    assert categorize(record, FakeEngine.rules) == "unknown column"
    sqlite_error = Record(id="1", exec_error="no such table: t")
    assert categorize(sqlite_error) == "unknown table" and categorize(sqlite_error, FakeEngine.rules) == "other error"
    timeout = Record(id="1", exec_error="query stopped after the 1 s time limit")
    assert categorize(timeout, FakeEngine.rules) == "timeout"  # slimsql's own wording, on every engine

    schema = Schema(tables=(Table("t", (Column("price"),)), Table("u", (Column("id"),))))
    assert error_hint('column "price" does not exist', schema) == []
    assert error_hint('column "price" does not exist', schema, FakeEngine.rules) == [
        "The column price is in table t."]
    assert error_hint("no such column: price", schema, FakeEngine.rules) == []
    assert error_hint("no such table: v", schema, FakeEngine.rules) == []  # it declares no missing-table wording


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (relative imports resolved), and ``module.name`` for each name taken."""
    package = ".".join(("slimsql",) + path.relative_to(SRC).parent.parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return found


def test_nothing_above_db_names_an_engine():
    # an engine's own modules: the one its class lives in, and SQLite's worker process
    engine_modules = {value.split(":")[0] for value in db.BUILTIN.values()}
    engine_modules |= {"slimsql.db.worker", "slimsql.db.process"}
    offenders = []
    for path in SRC.rglob("*.py"):
        if (SRC / "db") in path.parents:
            continue
        where, text = str(path.relative_to(SRC)), path.read_text()
        if "SQLiteDatabase" in text or _imports(path) & engine_modules:
            offenders.append(where)
        if any(f'"{name}"' in text for name in db.rules_for("sqlite").denied_functions):
            offenders.append(f"{where} (a denied-function list)")
        if re.search(r"no such (column|table)|incomplete input", text):
            offenders.append(f"{where} (SQLite error wording)")
    assert offenders == []
    # the scan resolves relative imports as Python does
    assert {"slimsql.db.base.EngineRules", "slimsql.db.worker"} <= _imports(SRC / "db" / "sqlite.py") | _imports(
        SRC / "db" / "process.py")
    assert "slimsql.db.open_database" in _imports(SRC / "eval" / "runner.py")
