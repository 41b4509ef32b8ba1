"""The command line: exit codes, one-line errors, no tracebacks, outputs."""

import argparse
import json
import os
import subprocess
import sys

import pytest

from slimsql import cli
from slimsql.backends.scripted import ScriptedBackend

from .conftest import sha256


def run(*args, env=None):
    """Run the real CLI in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "slimsql", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def assert_one_line_error(out, code):
    assert out.returncode == code, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr


def test_missing_database(tmp_path):
    assert_one_line_error(run("sql", "--db", str(tmp_path / "nope.sqlite"), "SELECT 1"), 3)


def test_not_a_sqlite_file(tmp_path):
    bogus = tmp_path / "bogus.sqlite"
    bogus.write_text("hello, I am a text file\n" * 10)
    assert_one_line_error(run("sql", "--db", str(bogus), "SELECT 1"), 3)
    assert_one_line_error(run("ask", "--db", str(bogus), "How many?"), 3)


def test_empty_and_huge_questions(demo_db):
    assert_one_line_error(run("ask", "--db", str(demo_db), "   "), 2)
    assert_one_line_error(run("ask", "--db", str(demo_db), "why " * 1000), 2)
    assert_one_line_error(run("ask", "--db", str(demo_db)), 2)


def test_unknown_model_and_missing_or_corrupt_model_file(demo_db, tmp_path):
    assert_one_line_error(run("ask", "--db", str(demo_db), "--model", "gpt-17", "How many?"), 7)
    assert_one_line_error(run("ask", "--db", str(demo_db), "--model", str(tmp_path / "x.gguf"), "How many?"), 7)
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"\x00" * 1000)
    out = run("ask", "--db", str(demo_db), "--model", str(corrupt), "How many?")
    assert_one_line_error(out, 7)
    assert "not a GGUF" in out.stderr


def test_corrupt_cached_registry_model(demo_db, tmp_path):
    """A damaged file in the cache is refused with a clear error, never loaded."""
    from slimsql import models

    spec = models.find("smollm2-135m")
    cached = tmp_path / "models" / spec.filename
    cached.parent.mkdir()
    cached.write_bytes(b"GGUF" + b"\0" * 1000)
    out = run("ask", "--db", str(demo_db), "--model", "smollm2-135m", "How many?", env={"SLIMSQL_HOME": str(tmp_path)})
    assert_one_line_error(out, 7)
    assert "corrupt" in out.stderr


def test_unsafe_sql_and_timeout_exit_codes(demo_db):
    before = sha256(demo_db)
    assert_one_line_error(run("sql", "--db", str(demo_db), "DROP TABLE orders"), 4)
    bomb = "SELECT count(*) FROM order_items a, order_items b, order_items c"
    out = run("sql", "--db", str(demo_db), "--timeout", "0.5", bomb)
    assert_one_line_error(out, 5)
    assert "time limit" in out.stderr
    assert sha256(demo_db) == before


def test_bad_flag_values(demo_db):
    assert_one_line_error(run("sql", "--db", str(demo_db), "--max-rows", "0", "SELECT 1"), 2)
    assert_one_line_error(run("ask", "--db", str(demo_db), "--style", "nope", "q"), 2)
    assert_one_line_error(run("ask", "--db", str(demo_db), "--temperature", "-1", "q"), 2)


def test_sql_json(demo_db):
    out = run("sql", "--db", str(demo_db), "--json", "--max-rows", "3", "SELECT customer_id FROM customers ORDER BY 1")
    data = json.loads(out.stdout)
    assert data["rows"] == [[1], [2], [3]] and data["truncated"] is True and data["columns"] == ["customer_id"]


def test_sql_table_output(demo_db):
    out = run("sql", "--db", str(demo_db), "SELECT name FROM categories WHERE name LIKE 'L%'")
    assert out.returncode == 0 and "Laptops" in out.stdout and "1 row" in out.stdout


def test_demo_command(tmp_path):
    target = tmp_path / "shop.sqlite"
    assert run("demo", "--out", str(target)).returncode == 0
    assert_one_line_error(run("demo", "--out", str(target)), 2)
    assert run("demo", "--out", str(target), "--force").returncode == 0


def test_schema_command(demo_db):
    out = run("schema", "--db", str(demo_db), "--compact")
    assert out.returncode == 0 and out.stdout.startswith("categories(")


# In-process runs with a scripted model, for what a subprocess cannot script.

@pytest.fixture
def scripted(monkeypatch):
    def install(*replies):
        backend = ScriptedBackend(list(replies))
        monkeypatch.setattr("slimsql.connection.load_backend", lambda name, **kw: backend)
        return backend
    return install


def test_ask_json_has_everything_scripts_need(demo_db, scripted, capsys):
    scripted("```sql\nSELECT status, count(*) AS n FROM orders WHERE status = 'cancelled' GROUP BY status;\n```")
    assert cli.main(["ask", "--db", str(demo_db), "--json", "How many orders were cancelled?"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rows"] == [["cancelled", 254]] and data["columns"] == ["status", "n"]
    assert {"sql", "truncated", "timings", "model", "fixes", "raw", "tokens", "process"} <= set(data)
    assert data["fixes"] == ["fence", "semicolon"]
    assert data["process"] == {"model_load": None, "preloaded": False}  # the scripted model loads nothing


def test_ask_sql_only(demo_db, scripted, capsys):
    scripted("SELECT count(*) FROM orders WHERE status = 'cancelled'")
    assert cli.main(["ask", "--db", str(demo_db), "--sql-only", "How many orders were cancelled?"]) == 0
    assert capsys.readouterr().out.strip() == "SELECT count(*) FROM orders WHERE status = 'cancelled'"


def test_ask_table_output(demo_db, scripted, capsys):
    scripted("SELECT count(*) AS n FROM products")
    assert cli.main(["ask", "--db", str(demo_db), "How many products?"]) == 0
    out = capsys.readouterr().out
    assert "46" in out and "SELECT" in out and "generation" in out


def test_model_output_that_is_not_sql(demo_db, scripted, capsys):
    scripted("I'm sorry, I can't help with that.", "Still no.")  # the default vote's two stages
    assert cli.main(["ask", "--db", str(demo_db), "q?"]) == 6
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: model output is not SQL") and "\n" not in err


def test_model_query_that_fails_shows_the_sql(demo_db, scripted, capsys):
    scripted("SELECT total FROM orders")
    assert cli.main(["ask", "--db", str(demo_db), "--preset", "fast", "q?"]) == 5
    err = capsys.readouterr().err.strip()
    assert "no such column: total" in err and "[SQL: SELECT total FROM orders]" in err and "\n" not in err


def test_unexpected_errors_are_one_line(demo_db, monkeypatch, capsys):
    def boom(*a, **k):
        raise RuntimeError("kaboom\nsecond line")
    monkeypatch.setattr("slimsql.connection.load_backend", boom)
    assert cli.main(["ask", "--db", str(demo_db), "q?"]) == 70
    assert capsys.readouterr().err.strip().startswith("error: unexpected RuntimeError: kaboom")


def test_several_questions_keep_going(demo_db, scripted, capsys):
    scripted("SELECT nope FROM orders", "SELECT count(*) FROM products")
    assert cli.main(["ask", "--db", str(demo_db), "--preset", "fast", "--sql-only", "first?", "second?"]) == 5
    captured = capsys.readouterr()
    assert captured.out.strip() == "SELECT count(*) FROM products"
    assert "no such column: nope" in captured.err


def test_demo_questions_succeed_when_the_model_answers_some(demo_db, scripted, capsys):
    scripted(*(["SELECT count(*) FROM products"] + ["SELECT nope FROM orders"] * 4))
    assert cli.main(["ask", "--db", str(demo_db), "--demo-questions"]) == 0
    assert "1 of 5 demo questions answered" in capsys.readouterr().err


def test_first_use_assembles_then_loads_without_overlapping_displays(demo_db, tmp_path, monkeypatch, capsys):
    """Assembly progress (a bar) and loading (a spinner) must not be live at once (rich forbids it)."""
    import hashlib

    from slimsql import models

    blob = b"GGUF" + bytes(range(256)) * 40
    pkg = tmp_path / "site" / "fake_cli_part1"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "part01.bin").write_bytes(blob)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("SLIMSQL_HOME", str(tmp_path / "home"))
    spec = models.ModelSpec(name="fake", title="fake", filename="fake.gguf", size=len(blob),
                            sha256=hashlib.sha256(blob).hexdigest(), extra="fake", parts=("fake_cli_part1",))

    def backend(name, model=None, progress=None, on_load=None, **kw):
        path = models.ensure(spec, progress)  # what a real backend does through models.resolve
        on_load(models.ModelFile(name=spec.name, path=path))
        return ScriptedBackend(["SELECT count(*) FROM products"], model=spec.name)

    monkeypatch.setattr("slimsql.connection.load_backend", backend)
    assert cli.main(["ask", "--db", str(demo_db), "--sql-only", "How many products?"]) == 0
    assert capsys.readouterr().out.strip() == "SELECT count(*) FROM products"
    assert models.cache_path(spec).read_bytes() == blob


def test_cli_import_leaves_heavy_modules_for_later():
    # A new `slimsql ask` process pays for every import; these load only on the paths that use them.
    heavy = ["llama_cpp", "numpy", "torch", "transformers", "jinja2", "rich.progress", "rich.syntax",
             "slimsql.infer.grammar", "slimsql.infer.linking", "slimsql.eval.runner"]
    out = subprocess.run([sys.executable, "-c", "import sys, slimsql.cli; "
                          f"print(' '.join(m for m in {heavy!r} if m in sys.modules))"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_ask_parser_leaves_eval_and_train_unimported():
    # the parser of `slimsql ask` lists eval and train without importing their packages
    code = ("import sys; from slimsql import cli; cli.build_parser('ask').parse_args(['ask', '--db', 'x.sqlite', 'q']); "
            "print(' '.join(m for m in sys.modules if m.startswith(('slimsql.eval', 'slimsql.train'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_lazy_command_stubs_say_what_the_real_parsers_say(capsys):
    def helps(parser):
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return {choice.dest: choice.help for choice in action._choices_actions}

    assert helps(cli.build_parser("ask")) == helps(cli.build_parser())
    # a command line naming eval or train gets its whole parser, through main as a user runs it
    for name, sub in (("eval", "spider"), ("train", "sft")):
        with pytest.raises(SystemExit) as exit_:
            cli.main([name, sub, "--help"])
        assert exit_.value.code == 0
        assert f"usage: slimsql {name} {sub}" in capsys.readouterr().out


def test_quick_exit_writes_all_output(demo_db):
    # the command ends with os._exit: a long answer must still arrive whole
    out = run("sql", "--db", str(demo_db), "--json", "--max-rows", "1000", "SELECT * FROM order_items")
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["rows"]) == 1000


def test_quick_exit_into_a_closed_pipe_is_quiet(demo_db):
    command = f"{sys.executable} -m slimsql.cli sql --db {demo_db} 'SELECT * FROM order_items' | head -1"
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert out.stdout.count("\n") == 1
    assert "Traceback" not in out.stderr and "Exception ignored" not in out.stderr, out.stderr


@pytest.mark.parametrize("argv, expected", [
    (["ask", "--db", "x.sqlite", "q"], (None, None)),
    (["ask", "--model", "qwen2.5-coder-1.5b", "--threads", "1", "--db", "x.sqlite", "q"], ("qwen2.5-coder-1.5b", 1)),
    (["chat", "--db", "x.sqlite"], (None, None)),
    (["ask", "--backend", "openai", "--db", "x.sqlite", "q"], "no load"),
    (["ask", "--help"], "no load"),
    (["ask", "--threads", "0", "q"], "no load"),  # the real parser refuses it
    (["ask", "--threads", "many", "q"], "no load"),
    (["sql", "--db", "x.sqlite", "SELECT 1"], "no load"),
    (["eval", "spider"], "no load"),
    ([], "no load"),
])
def test_the_command_starts_the_model_load_only_where_it_will_be_used(monkeypatch, capsys, argv, expected):
    from slimsql import launch
    from slimsql.backends import llama_cpp

    calls = []
    monkeypatch.setattr(llama_cpp, "preload", lambda model, threads: calls.append((model, threads)) or True)
    monkeypatch.delenv("SLIMSQL_PRELOAD", raising=False)
    assert launch._preload(argv) is (expected != "no load")
    assert calls == ([] if expected == "no load" else [expected])
    monkeypatch.setenv("SLIMSQL_PRELOAD", "0")
    assert launch._preload(argv) is False
    assert len(calls) == (0 if expected == "no load" else 1)
    assert capsys.readouterr().err == ""  # a malformed option is the real parser's to report, once


def test_a_malformed_option_is_one_error_line_through_the_command(demo_db):
    # through the real entry point (which peeks at --model/--threads first), as a user types it
    out = run("ask", "--db", str(demo_db), "--threads", "many", "How many?")
    assert_one_line_error(out, 2)
    assert "--threads" in out.stderr
