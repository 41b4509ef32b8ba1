"""Follow-up questions: the conversation's earlier questions and SQL go into the next prompt
(prompts.Turn), in every style, on the road of ask, chat and the server."""

import io
import json

import pytest

import slimsql
from slimsql import cli
from slimsql.backends.scripted import ScriptedBackend
from slimsql.infer import resolve
from slimsql.infer.pipeline import prefix
from slimsql.prompts import MAX_HISTORY, STYLES, Turn, get_style
from slimsql.schema import Column, Schema, Table

SCHEMA = Schema(tables=(Table("orders", (Column("id", "INTEGER", primary_key=True), Column("year", "INTEGER"),
                                         Column("status", "TEXT"))),))
FIRST = Turn("How many orders are there?", "SELECT count(*) FROM orders")


@pytest.mark.parametrize("name", sorted(STYLES))
def test_history_becomes_a_conversation(name):
    style = get_style(name)
    alone = style.messages(SCHEMA, FIRST.question)
    messages = style.messages(SCHEMA, "and only in 2024?", history=[FIRST])
    # the first turns are exactly the first question's prompt, then its SQL as the model's answer
    assert messages[:len(alone)] == alone
    assert messages[len(alone)] == {"role": "assistant", "content": FIRST.sql}
    assert messages[-1]["role"] == "user" and messages[-1]["content"].endswith("and only in 2024?")
    assert [m["role"] for m in messages[len(alone):]] == ["assistant", "user"]
    # the schema is shown once, before everything else
    text = "\n".join(m["content"] for m in messages)
    assert text.count("year") == 1 and text.index("year") < text.index(FIRST.question)
    assert "CREATE TABLE orders" not in messages[-1]["content"] and "{" not in text


@pytest.mark.parametrize("name", sorted(STYLES))
def test_follow_ups_share_the_cached_schema_prefix(name):
    """A follow-up's prompt starts with the same text as every question's: the schema prefix
    that the backend's prefix cache keeps."""
    settings = resolve("fast", style=name)
    head = prefix(SCHEMA, settings)
    follow = get_style(name).messages(SCHEMA, "and only in 2024?", history=[FIRST])
    for kept, now in zip(head[:-1], follow):
        assert kept == now
    last = len(head) - 1
    shared = head[last]["content"].rstrip()  # the first user turn, up to where the question goes
    assert follow[last]["content"].startswith(shared[:max(0, len(shared) - 1)])


def test_only_the_last_turns_are_shown_and_values_go_with_the_new_question():
    turns = [Turn(f"question {i}?", f"SELECT {i}") for i in range(MAX_HISTORY + 2)]
    messages = get_style("sqlite-expert").messages(SCHEMA, "and now?", values="orders.status: 'cancelled'",
                                                   history=turns)
    text = "\n".join(m["content"] for m in messages)
    assert "question 0?" not in text and "question 1?" not in text
    assert all(f"question {i}?" in text for i in range(2, MAX_HISTORY + 2))
    assert [m["content"] for m in messages if m["role"] == "assistant"] == [t.sql for t in turns[-MAX_HISTORY:]]
    assert "'cancelled'" in messages[-1]["content"]  # linked values belong to the question asked now
    assert "'cancelled'" not in "\n".join(m["content"] for m in messages[:-1])


def test_connection_ask_with_history_carries_the_previous_sql(demo_db):
    backend = ScriptedBackend(["SELECT count(*) FROM orders",
                               "SELECT count(*) FROM orders WHERE order_date LIKE '2024%'"])
    conn = slimsql.connect(demo_db, backend=backend, preset="fast")
    first = conn.ask("How many orders are there?")
    second = conn.ask("and only in 2024?", history=[Turn(first.question, first.sql)])
    assert first.rows == [(2500,)] and second.rows[0][0] < 2500
    sent = backend.calls[1][0]
    assert {"role": "assistant", "content": "SELECT count(*) FROM orders"} in sent
    assert sent[-1]["content"].endswith("and only in 2024?")


@pytest.fixture
def chat(monkeypatch, capsys):
    def run(lines, *replies, extra=()):
        backend = ScriptedBackend(list(replies))
        monkeypatch.setattr("slimsql.connection.load_backend", lambda name, **kw: backend)
        monkeypatch.setattr("sys.stdin", io.StringIO("".join(line + "\n" for line in lines)))
        code = cli.main(["chat", *extra])
        return code, backend, capsys.readouterr()
    return run


def test_chat_follow_up_and_new_conversation(demo_db, chat):
    code, backend, out = chat(
        ["How many orders are there?", "and only cancelled ones?", "/new", "How many products?"],
        "SELECT count(*) FROM orders", "SELECT count(*) FROM orders WHERE status = 'cancelled'",
        "SELECT count(*) FROM products", extra=("--db", str(demo_db), "--json", "--preset", "fast"))
    assert code == 0
    answers = [json.loads(block) for block in out.out.replace("}\n{", "}\x00{").split("\x00")]
    assert [a["rows"] for a in answers] == [[[2500]], [[254]], [[46]]]
    assert [a["follow_up_of"] for a in answers] == [None, "How many orders are there?", None]
    second, third = backend.calls[1][0], backend.calls[2][0]
    assert {"role": "assistant", "content": "SELECT count(*) FROM orders"} in second
    assert not any(m["role"] == "assistant" for m in third)  # /new started over
    assert "new conversation" in out.err


def test_chat_a_failed_turn_is_one_line_and_not_part_of_the_conversation(demo_db, chat):
    code, backend, out = chat(["How many orders?", "and per status?", "/quit", "never asked"],
                              "SELECT nope FROM orders", "SELECT status, count(*) FROM orders GROUP BY status",
                              extra=("--db", str(demo_db), "--preset", "fast", "--no-fix"))
    assert code == 0 and len(backend.calls) == 2
    assert "Traceback" not in out.err and out.err.count("error: ") == 1
    assert not any(m["role"] == "assistant" for m in backend.calls[1][0])
    assert "cancelled" in out.out  # the second answer's table


def test_chat_teaches_right_answers_corrections_and_notes(demo_db, chat):
    from slimsql import knowledge

    code, backend, out = chat(
        ["/right", "How many orders are there?", "/right", "Which orders were cancelled?",
         "/correct SELECT count(*) FROM orders WHERE status = 'cancelled'", "and how many orders were returned?",
         "/correct DELETE FROM orders", "/note cancelled orders are not revenue", "/note"],
        "SELECT count(*) FROM orders", "SELECT * FROM orders WHERE status = 'cancelled'",
        "SELECT count(*) FROM orders WHERE status = 'returned'",
        extra=("--db", str(demo_db), "--preset", "fast"))
    assert code == 0
    taught = knowledge.load(demo_db.with_name(demo_db.name + knowledge.SUFFIX))
    assert [(e.question, e.sql) for e in taught.examples] == [
        ("How many orders are there?", "SELECT count(*) FROM orders"),
        ("Which orders were cancelled?", "SELECT count(*) FROM orders WHERE status = 'cancelled'")]
    assert taught.note_lines() == ["cancelled orders are not revenue"]
    # the follow-up builds on the corrected query, and it was shown the examples taught before it
    follow_up = backend.calls[2][0]
    assert {"role": "assistant", "content": "SELECT count(*) FROM orders WHERE status = 'cancelled'"} in follow_up
    assert "Examples of questions on this database" in follow_up[-1]["content"]
    errors = [line for line in out.err.splitlines() if line.startswith("error:")]
    assert errors == ["error: /right needs an answered question first",
                      "error: not run: only read-only queries may run, found DELETE",
                      "error: /note needs the note's text"]
