"""Loaders, runs (resume, robustness, overlap), reports and comparisons, with a scripted model."""

import json
import sqlite3

import pytest

from slimsql import cli, knowledge
from slimsql.backends.scripted import ScriptedBackend
from slimsql.errors import InputError, ModelError
from slimsql.eval import datasets
from slimsql.eval.compare import compare, paired_bootstrap
from slimsql.eval.metrics import categorize, schema_adherence, single_quoted, string_spans
from slimsql.eval.report import write_report
from slimsql.eval.runner import RunConfig, load_records, run
from slimsql.eval.store import Record
from slimsql.infer import Settings
from slimsql.schema import Column, Schema, Table

from .conftest import SPIDER


@pytest.fixture
def spider_like(tmp_path):
    """A tiny Spider-format benchmark: two databases (one a two-file test suite), one missing."""
    root = tmp_path / "bench"
    for db_id, files in (("shop", ["shop"]), ("zoo", ["zoo", "zoo_variant"])):
        (root / "database" / db_id).mkdir(parents=True)
        for i, name in enumerate(files):
            conn = sqlite3.connect(root / "database" / db_id / f"{name}.sqlite")
            conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, price REAL, note BLOB)")
            rows = [(1, "apple", 1.5, b"\xff\xfe"), (2, "pear", 2.0, None), (3, "fig", 3.25 + 0.15 * i, None)]
            conn.executemany("INSERT INTO item VALUES (?, ?, ?, ?)", rows)
            conn.execute("INSERT INTO item VALUES (4, CAST(X'C3FF' AS TEXT), 0, NULL)")  # invalid UTF-8 text
            conn.commit()
            conn.close()
    dev = [
        {"db_id": "shop", "question": "How many items?", "query": "SELECT count(*) FROM item"},
        {"db_id": "shop", "question": "Names by price?", "query": "SELECT name FROM item ORDER BY price"},
        {"db_id": "zoo", "question": "Items under 3.5?", "query": "SELECT name FROM item WHERE price < 3.5"},
        {"db_id": "gone", "question": "Anything?", "query": "SELECT 1"},
        {"db_id": "shop", "question": "All names?", "query": "SELECT name FROM item"},
    ]
    (root / "dev.json").write_text(json.dumps(dev))
    return root


ANSWERS = {
    "How many items?": "```sql\nSELECT COUNT(*) FROM item;\n```",          # right, cleaned
    "Names by price?": "SELECT name FROM item ORDER BY price DESC",          # wrong order
    "Items under 3.5?": "SELECT name FROM item WHERE price < 3.3",          # right on one db only
    "All names?": "SELECT nme FROM item",                                   # unknown column
}


def asked(messages):
    """The question of a prompt (repair rounds add turns after it)."""
    return next(m["content"] for m in messages if "Question: " in m["content"]).split("Question: ")[-1]


def scripted(answers=ANSWERS):
    return ScriptedBackend(lambda messages, config: answers[asked(messages)])


def config(**kw):
    return RunConfig(**{"dataset": "spider", "split": "dev", "model": "scripted", "backend": "scripted",
                        "style": "sqlite-expert", **kw})


def test_spider_loader_counts_missing_databases(spider_like):
    ds = datasets.load_spider(spider_like)
    assert len(ds.examples) == 5 and ds.missing_dbs == {"gone": 1}
    assert [len(e.db_paths) for e in ds.examples] == [1, 1, 2, 0, 1]
    assert ds.examples[2].db_paths[0].name == "zoo.sqlite"  # the db_id's own file first
    assert ds.sample(3, seed=1).examples == ds.sample(3, seed=1).examples
    with pytest.raises(InputError, match="unknown Spider split"):
        datasets.load_spider(spider_like, "test")


def test_run_scores_every_metric(spider_like, tmp_path):
    ds = datasets.load_spider(spider_like)
    summary = run(ds, scripted(), tmp_path / "run", config(), Settings(), show_progress=False)
    records = {r.question: r for r in load_records(tmp_path / "run" / "predictions.jsonl")}
    assert records["How many items?"].ex and records["How many items?"].em
    assert records["How many items?"].em_official and records["Names by price?"].em_official is False
    assert records["How many items?"].fixes == ["fence", "semicolon"] and not records["How many items?"].strict
    assert not records["Names by price?"].ex and records["Names by price?"].category == "wrong result"
    assert records["Items under 3.5?"].ex and records["Items under 3.5?"].ts is False
    assert records["All names?"].category == "unknown column" and not records["All names?"].schema_ok
    assert records["Anything?"].missing_db
    assert summary["examples"] == 5 and summary["scored"] == 4 and summary["missing_db"] == 1
    assert summary["ex"] == 0.5 and summary["test_suite"] == 0.0 and summary["valid_sql"] == 0.75
    assert summary["em_official"] == summary["em"] == 0.5 and summary["by_hardness"]["easy"]["em_official"] == 0.5
    assert summary["dataset"]["missing_dbs"] == {"gone": 1}
    assert summary["categories"]["correct"] == 2
    assert summary["cleaning"] == {"outputs": 4, "rejected": 0, "fence": 1, "semicolon": 1}
    assert summary["strict_format"] == 0.75  # over the 4 generated outputs, not the missing-database example
    assert set(summary["timing"]) >= {"wall_s", "generation_s", "scoring_s"}


def test_run_resumes_and_survives_failures(spider_like, tmp_path):
    ds = datasets.load_spider(spider_like)
    calls = []

    def flaky(messages, cfg):
        question = asked(messages)
        calls.append(question)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user stops the run
        return ANSWERS[question]

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run(ds, ScriptedBackend(flaky), out, config(), Settings(), show_progress=False)
    # examples run grouped by database: the missing-database one ("gone") first, then two generated
    assert [r.db_id for r in load_records(out / "predictions.jsonl")] == ["gone", "shop", "shop"]
    with (out / "predictions.jsonl").open("a") as f:
        f.write('{"id": "dev-2", "torn')  # a crash mid-write
    calls.clear()
    summary = run(ds, scripted(), out, config(), Settings(), show_progress=False)
    assert summary["examples"] == 5 and summary["ex"] == 0.5
    with pytest.raises(InputError, match="other settings"):
        run(ds, scripted(), out, config(style="compact"), Settings(), show_progress=False)


def test_generation_errors_and_timeouts_do_not_stop_a_run(spider_like, tmp_path):
    ds = datasets.load_spider(spider_like)

    def answer(messages, cfg):
        question = messages[-1]["content"].split("Question: ")[-1]
        if question == "How many items?":
            raise ModelError("prompt too long")
        if question == "Names by price?":
            return ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                    "SELECT count(*) FROM c")
        return "I do not know."

    summary = run(ds, ScriptedBackend(answer), tmp_path / "run", config(timeout=0.3), Settings(), show_progress=False)
    assert summary["scored"] == 4 and summary["ex"] == 0.0
    assert summary["categories"]["timeout"] == 1 and summary["categories"]["format"] == 3


def test_report_and_compare(spider_like, tmp_path):
    ds = datasets.load_spider(spider_like)
    run(ds, scripted(), tmp_path / "a", config(), Settings(), show_progress=False)
    better = {**ANSWERS, "Names by price?": "SELECT name FROM item ORDER BY price", "All names?": "SELECT name FROM item"}
    run(ds, scripted(better), tmp_path / "b", config(), Settings(), show_progress=False)
    md, page = write_report(tmp_path / "b")
    text = md.read_text()
    assert "execution accuracy (EX) | 100.0%" in text and "| easy |" in text and "wta" not in text
    assert "exact match (normalized) | 100.0%" in text and "exact match (official-compatible) | 100.0%" in text
    assert "<table>" in page.read_text()
    result = compare(tmp_path / "a", tmp_path / "b", resamples=500)
    assert result["examples"] == 4 and result["metrics"]["ex"]["diff"] == 0.5
    assert sorted(result["fixed"]) == ["dev-1", "dev-4"] and result["broken"] == []


def test_cli_eval_commands(spider_like, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("slimsql.eval.cli.load_backend", lambda name, **kw: scripted())
    out = tmp_path / "run"
    assert cli.main(["eval", "spider", "--data", str(spider_like), "--out", str(out), "--limit", "4"]) == 0
    assert "EX " in capsys.readouterr().out
    assert cli.main(["eval", "report", str(out)]) == 0
    assert cli.main(["eval", "compare", str(out), str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert data["metrics"]["ex"]["diff"] == 0.0
    assert cli.main(["eval", "report", str(tmp_path / "nothing")]) == 2
    only = tmp_path / "only"
    assert cli.main(["eval", "spider", "--data", str(spider_like), "--out", str(only), "--db-id", "zoo"]) == 0
    assert {r.db_id for r in load_records(only / "predictions.jsonl")} == {"zoo"}
    assert cli.main(["eval", "spider", "--data", str(spider_like), "--out", str(only), "--db-id", "nope"]) == 2


def test_paired_bootstrap():
    same = [1.0, 0.0, 1.0, 1.0]
    assert paired_bootstrap(same, same) == (0.0, 0.0, 0.0)
    diff, low, high = paired_bootstrap([0.0] * 50 + [1.0] * 50, [1.0] * 100, seed=3)
    assert diff == 0.5 and 0.35 < low < 0.5 < high < 0.65


def test_create_context_and_jsonl_loaders(tmp_path):
    ctx = tmp_path / "ctx.jsonl"
    rows = [{"context": "CREATE TABLE head (age INTEGER, name VARCHAR)", "question": "How many heads?",
             "answer": "SELECT COUNT(*) FROM head"},
            {"context": "CREATE TABLE broken (", "question": "q", "answer": "SELECT 1"}]
    ctx.write_text("\n".join(json.dumps(r) for r in rows))
    ds = datasets.load_create_context(ctx, tmp_path / "dbs")
    assert ds.examples[0].executable and not ds.examples[1].executable
    out = run(ds, ScriptedBackend(["SELECT count(*) FROM head"]), tmp_path / "run",
              config(dataset="create-context"), Settings(), show_progress=False)
    assert out["scored"] == 1 and out["ex"] == 1.0 and out["missing_db"] == 1

    db = tmp_path / "mine.sqlite"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.close()
    jl = tmp_path / "q.jsonl"
    jl.write_text(json.dumps({"question": "How many?", "sql": "SELECT count(*) FROM t"}) + "\n")
    ds = datasets.load_jsonl(jl, db=db)
    assert ds.examples[0].db_paths == (db,)
    jl.write_text('{"question": "no sql"}\n')
    with pytest.raises(InputError, match="needs 'question' and 'sql'"):
        datasets.load_jsonl(jl, db=db)


def test_bird_loader(tmp_path):
    (tmp_path / "dev_databases" / "fin").mkdir(parents=True)
    sqlite3.connect(tmp_path / "dev_databases" / "fin" / "fin.sqlite").execute("CREATE TABLE a (x)").connection.close()
    (tmp_path / "dev.json").write_text(json.dumps([{"question_id": 7, "db_id": "fin", "question": "q?",
                                                    "evidence": "x means y", "SQL": "SELECT x FROM a",
                                                    "difficulty": "simple"}]))
    ex = datasets.load_bird(tmp_path).examples[0]
    assert (ex.id, ex.evidence, ex.difficulty, ex.executable) == ("7", "x means y", "simple", True)


@pytest.mark.parametrize("sql,ok", [
    ("SELECT name FROM item", True),
    ("SELECT nme FROM item", False),
    ("SELECT name FROM items", False),
    ("SELECT i.name FROM item AS i", True),
    ("SELECT i.nme FROM item AS i", False),
    ("WITH c AS (SELECT name AS n FROM item) SELECT n FROM c", True),
    ("SELECT count(*) AS total FROM item ORDER BY total", True),
    ("SELECT s.n FROM (SELECT name AS n FROM item) AS s", True),
    ("SELECT s.name FROM (SELECT name AS n FROM item) AS s", False),
    # A column must exist in its own SELECT's tables (or an enclosing one), not just anywhere:
    ("SELECT count(*) FROM item WHERE owner_id IN (SELECT owner_id FROM owner)", False),
    ("SELECT name FROM item WHERE id IN (SELECT item_id FROM owner WHERE owner.owner_id = item.id)", True),
    ("SELECT name FROM item WHERE id IN (SELECT item_id FROM owner WHERE owner_id = id)", True),  # correlated
    ("SELECT o.name FROM owner AS o", False),
    ("SELECT name FROM item JOIN (SELECT item_id FROM owner) ON id = item_id", True),  # an unaliased subquery
    ("SELECT rowid, name FROM item", True),  # SQLite's implicit column
])
def test_schema_adherence(sql, ok):
    schema = Schema(tables=(Table("item", (Column("id"), Column("name"))),
                            Table("owner", (Column("owner_id"), Column("item_id")))))
    assert schema_adherence(sql, schema) is ok


@pytest.mark.parametrize("sql,expected", [
    ('SELECT name FROM item WHERE name = "box"', "SELECT name FROM item WHERE name = 'box'"),
    # a quoted name that is a column, a table's column through its alias, or a select alias stays
    ('SELECT "name" FROM item WHERE "name" = "it\'s"', "SELECT \"name\" FROM item WHERE \"name\" = 'it''s'"),
    ('SELECT i."name" FROM item AS i WHERE i.id IN ("1", "2")', "SELECT i.\"name\" FROM item AS i WHERE i.id IN ('1', '2')"),
    ('SELECT count(*) AS "n" FROM item ORDER BY "n"', 'SELECT count(*) AS "n" FROM item ORDER BY "n"'),
    ('SELECT name FROM item WHERE id IN (SELECT item_id FROM owner WHERE owner_id  =  "7")',
     "SELECT name FROM item WHERE id IN (SELECT item_id FROM owner WHERE owner_id  =  '7')"),
    ("SELECT name FROM item WHERE name = 'box'", "SELECT name FROM item WHERE name = 'box'"),
    ('SELECT name FROM WHERE = "box"', 'SELECT name FROM WHERE = "box"'),  # does not parse: unchanged
    # the same spelling as a table, an alias, a CTE or a real column elsewhere keeps its quotes there
    ('SELECT name FROM "owner" AS o JOIN item ON o.item_id = item.id WHERE name = "owner"',
     """SELECT name FROM "owner" AS o JOIN item ON o.item_id = item.id WHERE name = 'owner'"""),
    ('SELECT "i".name FROM item AS "i" WHERE "i".name = "i"', """SELECT "i".name FROM item AS "i" WHERE "i".name = 'i'"""),
    ('WITH "c" AS (SELECT name FROM item) SELECT name FROM "c" WHERE name = "c"',
     """WITH "c" AS (SELECT name FROM item) SELECT name FROM "c" WHERE name = 'c'"""),
    ('SELECT name FROM item WHERE name = "item_id" OR id IN (SELECT item_id FROM owner WHERE "item_id" = 1)',
     """SELECT name FROM item WHERE name = 'item_id' OR id IN (SELECT item_id FROM owner WHERE "item_id" = 1)"""),
    ('SELECT "rowid" FROM item WHERE "rowid" > 0', 'SELECT "rowid" FROM item WHERE "rowid" > 0'),
])
def test_single_quoted_rewrites_only_sqlites_double_quoted_strings(sql, expected):
    schema = Schema(tables=(Table("item", (Column("id"), Column("name"))),
                            Table("owner", (Column("owner_id"), Column("item_id")))))
    out = single_quoted(sql, schema)
    assert out == expected
    if out != sql:
        assert not schema_adherence(sql, schema) and schema_adherence(out, schema)


def test_single_quoted_leaves_other_dialects_alone():
    schema = Schema(tables=(Table("item", (Column("name"),)),), dialect="postgres")
    sql = 'SELECT name FROM item WHERE name = "box"'
    assert string_spans(sql, schema) == [] and single_quoted(sql, schema) == sql


def test_categorize():
    assert categorize(Record(id="1", ex=True)) == "correct"
    assert categorize(Record(id="1", extract_error="x")) == "format"
    assert categorize(Record(id="1", exec_error="query stopped after the 30 s time limit")) == "timeout"
    assert categorize(Record(id="1", exec_error="near \"FROM\": syntax error")) == "syntax"
    assert categorize(Record(id="1", valid=True, ex=False)) == "wrong result"


@pytest.mark.skipif(not (SPIDER / "dev.json").exists(), reason="Spider not in ../shared/benchmarks")
def test_every_spider_dev_gold_scores_100_against_itself(tmp_path):
    """The whole harness on real data: answering with the gold query must score 100% EX and EM."""
    ds = datasets.load_spider(SPIDER, "dev")
    gold = {(ex.db_id, ex.question): ex.gold_sql for ex in ds.examples}
    schema_text = {}

    def oracle(messages, cfg):
        question = messages[-1]["content"].split("-- Question: ")[-1]
        for (db_id, q), sql in gold.items():
            if q == question and db_id == schema_text.get("db"):
                return sql
        return next(sql for (db_id, q), sql in gold.items() if q == question)

    summary = run(ds, ScriptedBackend(oracle), tmp_path / "gold", config(), Settings(samples=0), show_progress=False)
    assert summary["examples"] == 1034 and summary["missing_db"] == 62 and summary["dataset"]["missing_dbs"] == {"wta_1": 62}
    assert summary["scored"] == 972 and summary["gold_errors"] == 0
    assert summary["ex"] == 1.0 and summary["em"] == 1.0 and summary["valid_sql"] == 1.0
    assert summary["em_official"] == 1.0


def test_rescore_keeps_generations_and_redoes_scoring(spider_like, tmp_path, capsys):
    ds = datasets.load_spider(spider_like)
    out = tmp_path / "run"
    backend = scripted()
    first = run(ds, backend, out, config(), Settings(), show_progress=False)
    calls = len(backend.calls)
    path = out / "predictions.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for r in records:  # pretend an older metric scored everything wrong
        r.update(ex=False, schema_ok=True)
        r.pop("em_official", None)  # scored before the metric existed
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert cli.main(["eval", "rescore", str(out), "--data", str(spider_like)]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["ex"] == first["ex"] == 0.5 and again["schema_adherence"] == first["schema_adherence"]
    assert again["em_official"] == first["em_official"] == 0.5
    assert [r.raw for r in load_records(path) if r.raw is not None] == [r["raw"] for r in records if "raw" in r]
    assert len(backend.calls) == calls  # nothing generated again
    assert "rescored 4 examples" in capsys.readouterr().out


def test_score_is_one_pure_function_of_example_sql_and_database(spider_like):
    from slimsql.eval.scoring import Score, score

    example = next(e for e in datasets.load_spider(spider_like).examples if e.question == "How many items?")
    right = score(example, "SELECT count(*) FROM item")
    assert right == score(example, "SELECT count(*) FROM item")  # the same answer every time
    assert isinstance(right, Score) and right.ex and right.valid and right.em and right.hardness == "easy"
    wrong = score(example, "SELECT nme FROM item")
    assert not wrong.ex and not wrong.valid and "no such column" in wrong.exec_error
    assert score(example, "DELETE FROM item").unsafe and score(example, None) == Score(
        em=False, em_official=False, schema_ok=False, hardness="easy")


def test_reading_a_run_never_writes_to_it(spider_like, tmp_path):
    from slimsql.eval.report import load_run
    from slimsql.eval.store import RunFolder

    out = tmp_path / "run"
    cfg = RunConfig.for_settings(Settings(), dataset="spider", split="dev", model="scripted", backend="scripted")
    run(datasets.load_spider(spider_like), scripted(), out, cfg, Settings(), show_progress=False)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    load_run(out)
    folder = RunFolder(out)
    folder.config(), folder.records(), folder.metrics()
    compare(out, out)
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()} == before
    assert folder.config()["settings"]["strategy"] == Settings().strategy  # every answer-shaping setting is kept


def test_records_are_typed_and_read_older_and_newer_lines(tmp_path):
    # a line written before typed records (no em_official, no trace) and one with a field from a later version
    old = {"id": "dev-1", "db_id": "shop", "question": "q", "gold_sql": "SELECT 1", "executable": True,
           "strict": True, "raw": "SELECT 1", "pred_sql": "SELECT 1", "fixes": [], "ex": True, "valid": True,
           "em": True, "ts": None, "schema_ok": True, "hardness": "easy", "score_s": 0.01, "category": "correct"}
    newer = {**old, "id": "dev-2", "reward": 0.5}
    path = tmp_path / "predictions.jsonl"
    path.write_text(json.dumps(old) + "\n" + json.dumps(newer) + "\n" + '{"id": "dev-3", "torn')
    first, second = load_records(path)
    assert isinstance(first, Record) and first.ex and first.em_official is None and first.trace is None
    assert first.generated and first.scored and first.extra == {}
    assert second.extra == {"reward": 0.5} and second.to_dict()["reward"] == 0.5  # kept, written back
    line = first.to_dict()  # what was read is written back; unset optional fields stay out of the line
    assert {k: line[k] for k in old} == old and set(line) - set(old) == {
        "em_official", "prompt_tokens", "completion_tokens", "candidates"}
    assert Record.from_dict(second.to_dict()) == second
    unscored = second.unscored()
    assert unscored.raw == "SELECT 1" and unscored.extra == {"reward": 0.5} and not unscored.ex and unscored.em is None


def test_zero_timings_are_kept_and_older_configs_resume(tmp_path):
    from slimsql.eval.store import RunFolder

    line = Record(id="1", gen_s=0.0, road_s=0.0, score_s=0.0).to_dict()
    assert line["gen_s"] == line["road_s"] == line["score_s"] == 0.0
    folder = RunFolder(tmp_path / "run")
    folder.start({"dataset": "spider", "limit": 10})  # written before db_ids existed
    folder.start({"dataset": "spider", "limit": 10, "db_ids": None})  # resumes
    with pytest.raises(InputError):
        folder.start({"dataset": "spider", "limit": 10, "db_ids": ["zoo"]})


def test_a_run_stopped_before_its_end_can_be_compared(tmp_path):
    """Paired comparison of a run still going (predictions, no metrics.json yet) with a finished one."""
    import shutil
    from pathlib import Path

    base = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "spider-dev-qwen2.5-coder-0.5b-default"
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(base / "config.json", partial / "config.json")
    lines = (base / "predictions.jsonl").read_text().splitlines()[:30]
    (partial / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    result = compare(base, partial)  # the same 30 records on both sides: paired, no difference
    assert 0 < result["examples"] <= 30 and result["metrics"]["ex"]["diff"] == 0.0
    assert result["fixed"] == [] and result["broken"] == []
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="not a run folder"):
        compare(base, empty)


def test_cli_eval_teach_splits_keeps_the_knowledge_and_has_a_baseline(spider_like, tmp_path, monkeypatch, capsys):
    seen = []

    def answer(messages, cfg):
        seen.append(messages[-1]["content"])
        return "SELECT count(*) FROM item"

    monkeypatch.setattr("slimsql.eval.cli.load_backend", lambda name, **kw: ScriptedBackend(answer))
    taught, plain = tmp_path / "taught", tmp_path / "plain"
    assert cli.main(["eval", "spider", "--data", str(spider_like), "--out", str(taught), "--teach", "1",
                     "--preset", "fast"]) == 0
    records = load_records(taught / "predictions.jsonl")
    files = sorted(p.name for p in (taught / "knowledge").iterdir())
    assert files == ["gone.knowledge.yaml", "shop.knowledge.yaml", "zoo.knowledge.yaml"]
    taught_sql = {e.sql for f in (taught / "knowledge").iterdir() for e in knowledge.load(f).examples}
    assert len(records) == 2 and not {r.gold_sql for r in records} & taught_sql  # shop's other two queries
    assert any("Examples of questions on this database" in m for m in seen)
    assert json.loads((taught / "config.json").read_text())["knowledge"] == "teach 1"
    seen.clear()
    assert cli.main(["eval", "spider", "--data", str(spider_like), "--out", str(plain), "--teach", "1",
                     "--no-knowledge", "--preset", "fast"]) == 0
    assert [r.id for r in load_records(plain / "predictions.jsonl")] == [r.id for r in records]
    assert seen and not any("Examples of questions" in m for m in seen)  # the same examples, not shown
    capsys.readouterr()
    for argv in (["--teach", "0"], ["--teach", "1", "--knowledge-dir", str(taught / "knowledge")],
                 ["--knowledge-dir", str(tmp_path), "--no-knowledge"]):
        assert cli.main(["eval", "spider", "--data", str(spider_like), "--out", str(tmp_path / "x"), *argv]) == 2
        assert capsys.readouterr().err.count("\n") == 1
