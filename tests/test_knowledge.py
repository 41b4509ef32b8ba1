"""The knowledge file (slimsql teach) and the road's use of it, with the scripted backend."""

import json
import multiprocessing
import sqlite3

import pytest

import slimsql
from slimsql import cli, knowledge as kn
from slimsql.backends.scripted import ScriptedBackend
from slimsql.errors import InputError, QueryError, UnsafeSQLError
from slimsql.eval import datasets, taught
from slimsql.infer import pipeline, recall
from slimsql.knowledge import Example, Knowledge

from .conftest import sha256

TOP_CUSTOMERS = ("SELECT c.first_name, c.last_name, sum(oi.quantity * oi.unit_price) AS spent FROM customers c "
                 "JOIN orders o ON o.customer_id = c.customer_id JOIN order_items oi ON oi.order_id = o.order_id "
                 "GROUP BY c.customer_id ORDER BY spent DESC LIMIT 5")


def connect(db, replies=("SELECT 1",), **options):
    backend = ScriptedBackend(list(replies))
    options.setdefault("preset", "fast")
    return slimsql.connect(db, backend=backend, **options), backend


# -- the file ----------------------------------------------------------------------------

def test_teaching_writes_one_plain_file_beside_the_database(demo_db):
    conn, _ = connect(demo_db)
    assert conn.knowledge_path == demo_db.with_name("shop.sqlite.knowledge.yaml") and not conn.knowledge
    conn.teach(note="revenue means sum(quantity * unit_price) over order_items")
    conn.teach(example=("Which 5 customers spent the most?", TOP_CUSTOMERS + ";"))
    conn.teach(describe=("customers.loyalty_tier", "bronze, silver or gold"), synonyms=["status level"])
    text = conn.knowledge_path.read_text()
    assert text.startswith("# slimsql knowledge") and "version: 1" in text
    loaded = kn.load(conn.knowledge_path)
    assert loaded.summary() == {"notes": 1, "descriptions": 1, "examples": 1, "generated": 0}
    assert loaded.examples[0].sql == TOP_CUSTOMERS  # one checked statement, as extraction keeps it
    assert loaded.descriptions[0].synonyms == ("status level",)
    assert kn.dump(loaded) == text  # a fixed layout: rewriting it changes nothing
    # ids come from the content: the same example taught again is one entry
    conn.teach(example=("Which 5 customers spent the most?", TOP_CUSTOMERS))
    assert len(conn.knowledge.examples) == 1
    conn.forget(loaded.notes[0].id)
    conn.forget("customers.loyalty_tier")
    assert conn.knowledge.summary() == {"notes": 0, "descriptions": 0, "examples": 1, "generated": 0}
    with pytest.raises(InputError, match="no note, example or description 'n-00000000'"):
        conn.forget("n-00000000")


def test_an_example_is_checked_and_run_before_it_is_stored(demo_db):
    before = sha256(demo_db)
    conn, _ = connect(demo_db)
    with pytest.raises(UnsafeSQLError):
        conn.teach(example=("Remove everyone", "DELETE FROM customers"))
    with pytest.raises(QueryError, match="no such column"):
        conn.teach(example=("Names", "SELECT nope FROM customers"))
    with pytest.raises(InputError, match="question is empty"):
        conn.teach(example=(" ", "SELECT 1"))
    assert not conn.knowledge_path.exists() and sha256(demo_db) == before


@pytest.mark.parametrize("text, message", [
    ("examples:\n  - question: q\n", r"examples\[0\]: 'sql' is missing"),
    ("examples:\n  - {question: q, sql: SELECT 1}\n  - {question: r}\n", r"examples\[1\]: 'sql' is missing"),
    ("notes:\n  - {text: a, colour: red}\n", r"notes\[0\]: unknown key\(s\) colour"),
    ("examples:\n  - {question: q, sql: SELECT 1, source: guessed}\n", r"examples\[0\]: source must be one of"),
    ("notes: [a\n", r"not valid YAML at line 2"),
    ("- just a list\n", "expected a mapping"),
    ("version: 7\n", "version 7 is not one this slimsql reads"),
    ("descriptions:\n  'a.b.c': x\n", r"descriptions\['a.b.c'\]: name a table or table.column"),
    ("notes:\n  - {id: n-1, text: a}\n  - {id: n-1, text: b}\n", "the id n-1 is used twice"),
])
def test_a_malformed_file_is_one_line_naming_the_entry(tmp_path, text, message):
    path = tmp_path / "k.knowledge.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as err:
        kn.load(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_an_oversized_file_is_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / "k.knowledge.yaml"
    path.write_text("notes:\n" + "  - a note\n" * 100)
    monkeypatch.setattr(kn, "MAX_BYTES", 200)
    with pytest.raises(InputError, match=r"is 1,107 bytes; at most 200 are read"):
        kn.load(path)


def test_hand_written_shorthand_is_read(tmp_path):
    path = tmp_path / "k.knowledge.yaml"
    path.write_text("notes:\n  - revenue excludes cancelled orders\n"
                    'descriptions:\n  customers: people who bought\n  customers.city: {synonyms: "town, place"}\n')
    loaded = kn.load(path)
    assert loaded.notes[0].id.startswith("n-") and loaded.descriptions[1].synonyms == ("town", "place")


def _add_notes(path, worker, count):
    for i in range(count):
        kn.update(path, kn.with_note(f"note {worker}.{i}"))


def test_two_clients_saving_at_once_both_keep_their_entries(tmp_path):
    path = tmp_path / "shop.sqlite.knowledge.yaml"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_add_notes, args=(path, w, 15)) for w in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    assert sorted(n.text for n in kn.load(path).notes) == sorted(f"note {w}.{i}" for w in range(2) for i in range(15))
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []  # no temporary file left


def test_reading_never_writes(demo_db):
    conn, backend = connect(demo_db, ["SELECT count(*) FROM products"] * 2)
    conn.ask("How many products?")
    assert not conn.knowledge_path.exists()  # no file appears where there was none
    conn.teach(note="prices are in euros")
    stat = conn.knowledge_path.stat()
    text = conn.knowledge_path.read_text()
    again, _ = connect(demo_db, ["SELECT count(*) FROM products"])
    again.ask("How many products?")
    assert again.knowledge.notes and conn.knowledge_path.read_text() == text
    assert conn.knowledge_path.stat().st_mtime_ns == stat.st_mtime_ns


def test_every_engine_finds_its_file(tmp_path):
    assert kn.path_for(tmp_path / "a.duckdb") == tmp_path / "a.duckdb.knowledge.yaml"
    assert kn.path_for((str(tmp_path / "a.csv"), str(tmp_path / "b.csv"))) == tmp_path / "a.csv.knowledge.yaml"
    assert kn.path_for("postgresql://u@localhost/shop") is None
    assert kn.path_for("postgresql://u@localhost/shop", tmp_path / "pg.yaml") == tmp_path / "pg.yaml"


def test_a_file_edited_elsewhere_is_read_again(demo_db):
    conn, _ = connect(demo_db)
    assert not conn.knowledge
    kn.update(conn.knowledge_path, kn.with_note("edited by another process"))
    assert conn.knowledge.note_lines() == ["edited by another process"]


# -- the road ----------------------------------------------------------------------------

def test_without_knowledge_the_prompt_is_as_before(demo_db):
    conn, _ = connect(demo_db)
    schema = conn.schema
    plain = pipeline.render(schema, "How many products?", conn.settings)
    _, asked = pipeline.prompt(conn.db, conn.backend, schema, "How many products?", conn.settings,
                               knowledge=Knowledge())
    assert asked == plain and "Examples" not in asked[-1]["content"] and "Notes" not in asked[-1]["content"]


def test_notes_and_descriptions_join_the_cached_prefix_and_examples_follow_it(demo_db):
    conn, backend = connect(demo_db, ["SELECT count(*) FROM orders"])
    conn.teach(note="an order counts as sold unless its status is cancelled")
    conn.teach(describe=("customers.loyalty_tier", "bronze, silver or gold"), synonyms=["membership level"])
    conn.teach(example=("How many orders are cancelled?", "SELECT count(*) FROM orders WHERE status = 'cancelled'"))
    conn.teach(example=("List the product names", "SELECT name FROM products"))
    answer = conn.ask("How many orders were cancelled in 2023?")
    messages = backend.calls[0][0]
    prefix = pipeline.prefix(conn.schema, conn.settings, conn.knowledge)
    text = messages[-1]["content"]
    # the prefix (what the prefix cache keeps) holds the notes and descriptions; the question's part follows it
    assert text.startswith(prefix[-1]["content"].split("-- Using valid")[0].rstrip())
    assert "-- - an order counts as sold unless its status is cancelled" in text
    assert "loyalty_tier TEXT -- bronze, silver or gold (also: membership level); e.g." in text
    shown = text.split("-- Examples of questions on this database and their SQL:")[1]
    assert shown.index("How many orders are cancelled?") < shown.index("-- Question: How many orders were cancelled in")
    assert "List the product names" not in text  # no word in common with the question
    knowledge = conn.knowledge
    assert answer.trace.examples == [knowledge.examples[0].id] and answer.trace.notes == [knowledge.notes[0].id]
    data = answer.trace.to_dict()
    assert data["examples"] == answer.trace.examples and type(answer.trace).from_dict(data) == answer.trace
    # a changed note changes the prefix: a cached prefix of the old one is never taken for it
    conn.teach(note="another convention")
    assert pipeline.prefix(conn.schema, conn.settings, conn.knowledge) != prefix


def test_examples_setting_and_no_knowledge(demo_db):
    conn, backend = connect(demo_db, ["SELECT 1"] * 3)
    conn.teach(example=("How many orders are cancelled?", "SELECT count(*) FROM orders WHERE status = 'cancelled'"))
    conn.ask("How many orders were cancelled?", )
    assert "Examples of questions" in backend.calls[-1][0][-1]["content"]
    off, backend = connect(demo_db, ["SELECT 1"], examples=0)
    assert not off.ask("How many orders were cancelled?").trace.examples
    assert "Examples of questions" not in backend.calls[-1][0][-1]["content"]
    none, backend = connect(demo_db, ["SELECT 1"], knowledge=False)
    assert none.ask("How many orders were cancelled?").trace.examples == []
    with pytest.raises(InputError, match="--examples must be 0 to 20"):
        connect(demo_db, examples=21)


def test_recall_ranks_by_masked_words_and_verified_first():
    examples = [Example("e-1", "How many singers are older than 30?", "SELECT 1"),
                Example("e-2", "List the names of all stadiums", "SELECT 2"),
                Example("e-3", "How many singers are older than 40?", "SELECT 3", source="generated"),
                Example("e-4", "What is the average capacity of stadiums?", "SELECT 4")]
    index = recall.ExampleIndex(Knowledge(examples=tuple(examples)).ranked_examples())
    assert recall.words("Singers older than 25 named 'Joe'") == ["singer", "older", "than", "<value>", "named",
                                                               "<value>"]
    best = index.similar("How many singers are older than 56?", 2)
    assert [e.id for e in best] == ["e-3", "e-1"]  # the most similar last; the verified one outranks its twin
    assert [e.id for e in index.similar("stadiums with a capacity above 500", 1)] == ["e-4"]
    assert index.similar("weather tomorrow", 3) == []


# -- teach on the command line ----------------------------------------------------------------

def test_teach_command(demo_db, capsys):
    db = str(demo_db)
    assert cli.main(["teach", "--db", db, "--note", "revenue excludes cancelled orders"]) == 0
    assert cli.main(["teach", "--db", db, "--example", "Top customers?", TOP_CUSTOMERS]) == 0
    assert cli.main(["teach", "--db", db, "--describe", "customers.loyalty_tier", "bronze, silver or gold",
                     "--synonyms", "level, tier"]) == 0
    capsys.readouterr()
    assert cli.main(["teach", "--db", db, "--list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed["notes"]) == len(listed["examples"]) == 1
    assert listed["descriptions"] == {"customers.loyalty_tier": {"text": "bronze, silver or gold",
                                                                 "synonyms": ["level", "tier"]}}
    assert cli.main(["teach", "--db", db, "--check"]) == 0
    assert "all 2 examples and descriptions fit" in capsys.readouterr().err
    for argv, code, message in (
            (["--example", "Drop", "DROP TABLE customers"], 4, "only read-only queries"),
            (["--describe", "customers.segment", "x"], 2, "no column 'segment' in customers"),
            (["--describe", "clients", "x"], 2, "no table 'clients'"),
            (["--note", "a", "--list"], 2, "say one thing"),
            (["--synonyms", "x"], 2, "--synonyms go with --describe"),
            (["--remove", "e-00000000"], 2, "no note, example or description"),
            (["--knowledge", "k.yaml", "--no-knowledge", "--list"], 2, "contradict")):
        assert cli.main(["teach", "--db", db, *argv]) == code
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert cli.main(["schema", "--db", db]) == 0
    shown = capsys.readouterr().out
    assert "-- bronze, silver or gold (also: level, tier)" in shown and "-- - revenue excludes cancelled" in shown


def test_teach_check_names_what_a_schema_change_broke(demo_db, tmp_path, capsys):
    changed = tmp_path / "changed" / "shop.sqlite"
    changed.parent.mkdir()
    conn, _ = connect(demo_db)
    conn.teach(example=("Tiers", "SELECT loyalty_tier, count(*) FROM customers GROUP BY 1"))
    conn.teach(example=("Products", "SELECT count(*) FROM products"))
    conn.teach(describe=("customers.loyalty_tier", "the tier"))
    with sqlite3.connect(demo_db) as src, sqlite3.connect(changed) as dst:
        src.backup(dst)
        dst.execute("ALTER TABLE customers DROP COLUMN loyalty_tier")
    src.close()
    dst.close()
    knowledge = str(conn.knowledge_path)
    assert cli.main(["teach", "--db", str(changed), "--knowledge", knowledge, "--check"]) == 1
    out = capsys.readouterr()
    tiers = conn.knowledge.examples[0].id
    assert f"{tiers}: 'Tiers': the database refused the query: no such column: loyalty_tier" in out.out
    assert "customers.loyalty_tier: no column 'loyalty_tier' in customers" in out.out
    assert "2 of 3 examples and descriptions no longer fit the database" in out.err


def test_a_url_keeps_its_knowledge_only_where_knowledge_says(capsys):
    assert cli.main(["teach", "--db", "postgresql://nobody@127.0.0.1:1/none", "--list"]) != 0
    assert capsys.readouterr().err.startswith("error:")


# -- evaluating it -----------------------------------------------------------------------------

def test_a_taught_split_keeps_every_query_on_one_side(tmp_path):
    rows = []
    for i, (question, sql) in enumerate([("a?", "SELECT 1"), ("A again?", "select  1;"), ("b?", "SELECT 2"),
                                         ("c?", "SELECT 3"), ("d?", "SELECT 4"), ("e?", "SELECT 5")]):
        rows.append(datasets.Example(id=str(i), question=question, gold_sql=sql, db_id="x"))
    rows.append(datasets.Example(id="9", question="z?", gold_sql="SELECT 9", db_id="y"))
    dataset = datasets.Dataset("t", "dev", rows)
    tested, examples = taught.split(dataset, 2, seed=1)
    assert taught.split(dataset, 2, seed=1)[0].examples == tested.examples  # seeded
    taught_queries = {taught.normalised(e.gold_sql) for ex in examples.values() for e in ex}
    assert not taught_queries & {taught.normalised(e.gold_sql) for e in tested.examples}
    assert len({q for q in taught_queries if q != "select 9"}) == 2 and [e.id for e in examples["y"]] == ["9"]
    assert {"0", "1"} <= {e.id for e in examples["x"]} or not {"0", "1"} & {e.id for e in examples["x"]}
    paths = taught.write(tmp_path, examples)
    assert kn.load(paths["x"]).summary()["examples"] == len(examples["x"])
    assert set(taught.load_folder(tmp_path / "knowledge", ["x", "y", "absent"])) == {"x", "y"}


# -- teaching through the API ------------------------------------------------------------------

@pytest.fixture
def served(demo_db):
    from fastapi.testclient import TestClient

    from slimsql.infer import Settings
    from slimsql.serve.app import create_app
    from slimsql.serve.service import Service

    from .serve_support import Model

    model = Model(lambda messages: "SELECT count(*) FROM orders WHERE status = 'cancelled'")
    service = Service({"shop": demo_db}, model.backend, Settings(max_rows=50, timeout=2.0))
    yield TestClient(create_app(service, api_key="k"), raise_server_exceptions=False), model, demo_db
    service.close()


def test_the_api_teaches_under_the_same_key(served):
    from .serve_support import assert_error

    client, model, db = served
    key = {"X-API-Key": "k"}
    assert_error(client.get("/v1/knowledge/shop"), 401, "unauthorized")
    assert_error(client.post("/v1/knowledge/notes", json={"db": "shop", "text": "x"}), 401, "unauthorized")
    before = sha256(db)
    done = client.post("/v1/knowledge/examples", headers=key,
                       json={"db": "shop", "question": "How many orders are cancelled?",
                             "sql": "SELECT count(*) FROM orders WHERE status = 'cancelled'"})
    assert done.status_code == 200 and done.json()["id"].startswith("e-"), done.text
    assert client.post("/v1/knowledge/notes", headers=key, json={"db": "shop", "text": "cancelled orders "
                                                                  "are not revenue"}).status_code == 200
    described = client.post("/v1/knowledge/descriptions", headers=key,
                            json={"db": "shop", "target": "customers.loyalty_tier", "text": "the tier",
                                  "synonyms": ["level"]})
    assert described.json()["summary"] == {"notes": 1, "descriptions": 1, "examples": 1, "generated": 0}
    assert_error(client.post("/v1/knowledge/examples", headers=key,
                             json={"db": "shop", "question": "q", "sql": "DELETE FROM orders"}), 422, "unsafe_sql")
    assert_error(client.post("/v1/knowledge/descriptions", headers=key,
                             json={"db": "shop", "target": "nope.x", "text": "t"}), 400, "bad_input")
    assert_error(client.post("/v1/knowledge/notes", headers=key, json={"db": "elsewhere", "text": "t"}), 404,
                 "unknown_database")
    assert_error(client.post("/v1/knowledge/notes", headers={**key, "Content-Type": "text/plain"},
                             content='{"db": "shop", "text": "t"}'), 415, "not_json")
    listed = client.get("/v1/knowledge/shop", headers=key).json()
    assert listed["writable"] and listed["notes"][0]["text"] == "cancelled orders are not revenue"
    # a question now sees it, and the answer says which of it was used
    answer = client.post("/v1/ask", headers=key, json={"db": "shop", "question": "How many orders were cancelled?"})
    assert answer.status_code == 200, answer.text
    trace = answer.json()["trace"]
    assert trace["examples"] == [listed["examples"][0]["id"]] and trace["notes"] == [listed["notes"][0]["id"]]
    removed = client.post("/v1/knowledge/remove", headers=key, json={"db": "shop", "id": listed["notes"][0]["id"]})
    assert removed.json()["summary"]["notes"] == 0
    assert sha256(db) == before  # the database itself is never written


def test_clients_saving_at_once_through_the_api_all_keep_their_entries(served):
    from concurrent.futures import ThreadPoolExecutor

    client, _, db = served

    def save(i):
        return client.post("/v1/knowledge/notes", headers={"X-API-Key": "k"},
                           json={"db": "shop", "text": f"note from client {i}"}).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(save, range(24))) == {200}
    notes = kn.load(db.with_name(db.name + kn.SUFFIX)).notes
    assert sorted(n.text for n in notes) == sorted(f"note from client {i}" for i in range(24))
