from dataclasses import replace

import pytest

import slimsql
from slimsql.backends import GenerationConfig, sample_limit
from slimsql.backends.scripted import ScriptedBackend
from slimsql.errors import InputError, NoSQLError, QueryError, QueryTimeout, UnsafeSQLError
from slimsql.infer import Settings, pipeline, resolve

from .conftest import sha256


def connect(db, replies, **overrides):
    backend = ScriptedBackend(replies)
    overrides.setdefault("preset", "fast")
    return slimsql.connect(db, backend=backend, **overrides), backend


def test_ask_runs_the_whole_road(demo_db):
    conn, backend = connect(demo_db, ["```sql\nSELECT count(*) AS n FROM products;\n```"])
    answer = conn.ask("How many products?")
    assert answer.sql == "SELECT count(*) AS n FROM products"
    assert answer.columns == ("n",) and answer.rows == [(46,)] and not answer.truncated
    assert answer.fixes == ("fence", "semicolon")
    assert set(answer.timings) == {"schema", "linking", "generation", "execution", "total"}
    assert answer.model == "scripted"
    messages, config = backend.calls[0]
    assert "CREATE TABLE products" in messages[-1]["content"] + messages[0]["content"]
    assert messages[-1]["content"].endswith("How many products?")
    assert config == GenerationConfig()
    assert conn.stats.as_dict() == {"total": 1, "cleaned": 1, "fence": 1, "semicolon": 1}
    assert "46" in str(answer) and answer.to_dict()["rows"] == [[46]]


def test_first_runnable_candidate_wins(demo_db):
    conn, backend = connect(demo_db, [["no idea", "SELECT nope FROM products", "SELECT 2", "SELECT 3"]])
    answer = conn.ask("q", n=4, temperature=0.7, seed=1)
    assert answer.rows == [(2,)]
    assert backend.calls[0][1] == GenerationConfig(n=4, temperature=0.7, seed=1)
    assert conn.stats.as_dict()["rejected"] == 1


@pytest.mark.parametrize("reply,error", [
    ("I cannot answer that.", NoSQLError),
    ("DELETE FROM orders", UnsafeSQLError),
    ("DROP TABLE orders;", UnsafeSQLError),
    ("WITH x AS (SELECT 1) DELETE FROM orders", UnsafeSQLError),
    ("```sql\nUPDATE orders SET status = 'x'\n```", UnsafeSQLError),
    ("SELECT no_such_column FROM orders", QueryError),
])
def test_failures_are_clear_and_harmless(demo_db, reply, error):
    before = sha256(demo_db)
    conn, _ = connect(demo_db, [reply])
    with pytest.raises(error) as info:
        conn.ask("q")
    assert "\n" not in str(info.value)
    assert sha256(demo_db) == before


def test_unsafe_sql_that_survives_extraction_is_refused(demo_db):
    # extract() takes the first statement; a trailing write never reaches the database.
    conn, _ = connect(demo_db, ["SELECT count(*) FROM orders; DELETE FROM orders"])
    answer = conn.ask("q")
    assert answer.sql == "SELECT count(*) FROM orders" and "extra_statements" in answer.fixes
    assert conn.sql("SELECT count(*) FROM orders").rows == [(2500,)]


def test_query_error_carries_the_sql(demo_db):
    conn, _ = connect(demo_db, ["SELECT nope FROM orders"])
    with pytest.raises(QueryError) as info:
        conn.ask("q")
    assert info.value.sql == "SELECT nope FROM orders"


def test_timeout_and_row_cap_apply_to_answers(demo_db):
    bomb = "SELECT count(*) FROM order_items a, order_items b, order_items c"
    conn, _ = connect(demo_db, [bomb, "SELECT * FROM order_items"], timeout=0.3, max_rows=7)
    with pytest.raises(QueryTimeout):
        conn.ask("q")
    answer = conn.ask("q")
    assert len(answer.rows) == 7 and answer.truncated


@pytest.mark.parametrize("question", ["", "   ", "x" * 2001])
def test_bad_questions(demo_db, question):
    conn, backend = connect(demo_db, ["SELECT 1"])
    with pytest.raises(InputError):
        conn.ask(question)
    assert backend.calls == []


def test_settings_are_checked():
    with pytest.raises(InputError, match="--max-rows"):
        Settings(max_rows=0)
    with pytest.raises(InputError, match="--candidates"):
        GenerationConfig(n=0)
    with pytest.raises(InputError, match="prompt style"):
        Settings(style="nope")


def test_sql_method_uses_the_same_guard(demo_db):
    conn, _ = connect(demo_db, [])
    with pytest.raises(UnsafeSQLError):
        conn.sql("DROP TABLE orders")
    assert conn.sql("SELECT count(*) FROM customers").rows == [(400,)]


def test_style_changes_the_messages(demo_db):
    conn, backend = connect(demo_db, ["SELECT 1"], style="strict-chatml")
    conn.ask("How many?")
    system = backend.calls[0][0][0]
    assert system["role"] == "system" and system["content"].startswith("You are a SQL translation engine.")


def test_identical_failing_candidates_run_once(demo_db, monkeypatch):
    conn, _ = connect(demo_db, [["SELECT nope FROM orders"] * 3])
    runs = []
    original = conn.db.execute
    monkeypatch.setattr(conn.db, "execute", lambda sql, **kw: runs.append(sql) or original(sql, **kw))
    with pytest.raises(QueryError):
        conn.ask("q", n=3)
    assert runs == ["SELECT nope FROM orders"]


# -- the accuracy engine: vote, fix, repair, trace ------------------------------------

def test_vote_picks_the_biggest_group_and_traces_every_candidate(demo_db):
    conn, backend = connect(demo_db, [["SELECT count(*) FROM orders",          # 2500
                                       "SELECT count(*) FROM customers",       # 400
                                       "SELECT count(order_id) FROM customers AS c JOIN orders AS o "
                                       "ON o.customer_id = c.customer_id",     # 2500
                                       "no idea"]],
                            preset="default", n=4, repair_rounds=0, agree=0)
    answer = conn.ask("How many orders?")
    assert answer.rows == [(2500,)] and answer.sql == "SELECT count(*) FROM orders"
    trace = answer.trace
    assert trace.strategy == "vote" and trace.chosen == 0 and trace.note.startswith("vote 2/4 in 2 groups")
    assert [t.votes for t in trace.trials] == [2, 1, 2, 0]
    assert trace.trials[3].error_kind == "no_sql" and trace.trials[1].rows == 1
    config = backend.calls[0][1]
    assert config.n == 4 and config.temperature == 0.8 and config.greedy_first
    assert answer.to_dict()["trace"]["trials"][0]["sql"] == "SELECT count(*) FROM orders"


def test_a_vote_in_stages_stops_when_the_first_candidates_agree(demo_db):
    same = "SELECT count(*) FROM orders"
    conn, backend = connect(demo_db, [[same, "SELECT count(*) AS n FROM orders"]], preset="default")
    answer = conn.ask("How many orders?")
    assert answer.rows == [(2500,)] and answer.sql == same and len(backend.calls) == 1
    config = backend.calls[0][1]
    assert config.n == 2 and config.skip == 0 and config.greedy_first  # the greedy answer and one sample
    assert [t.votes for t in answer.trace.trials] == [2, 2]
    assert answer.trace.note == "vote 2/2 in 1 group; the first 2 agreed, so the other 6 were not made"


@pytest.mark.parametrize("first", [
    ["SELECT count(*) FROM orders", "SELECT count(*) FROM customers"],   # two results
    ["SELECT max(order_id) FROM orders WHERE order_id < 0"] * 2,        # one result, but only a NULL
    ["SELECT order_id FROM orders WHERE order_id < 0"] * 2,             # one result, but no rows
    ["SELECT count(*) FROM orders", "no idea"],                         # one did not run
])
def test_a_vote_in_stages_makes_the_rest_unless_the_first_agree_on_a_value(demo_db, first):
    rest = ["SELECT count(*) FROM customers"] * 5 + ["SELECT count(*) FROM orders"]
    conn, backend = connect(demo_db, [first, rest], preset="default", repair_rounds=0)
    answer = conn.ask("q")
    assert len(backend.calls) == 2
    one, two = backend.calls[0][1], backend.calls[1][1]
    assert (one.n, one.skip) == (2, 0) and (two.n, two.skip) == (8, 2)
    # the rest is the samples of one call for all 8: their limit is the greedy candidate's, as one call has it
    greedy = answer.trace.trials[0].completion_tokens
    assert two.max_tokens == sample_limit(greedy, 256) == 64 and two.temperature == 0.8
    trials = answer.trace.trials
    assert [t.index for t in trials] == list(range(8)) and len(trials) == 8
    assert answer.trace.note.startswith("vote ") and "agreed" not in answer.trace.note
    assert answer.sql == "SELECT count(*) FROM customers"  # the vote over all 8


def test_a_later_stage_sample_cut_at_its_limit_is_no_answer(demo_db):
    class Cut(ScriptedBackend):  # the later stage's samples all reach their token limit
        def generate(self, messages, config):
            out = super().generate(messages, config)
            return [replace(c, truncated=True) for c in out] if config.skip else out

    backend = Cut([["SELECT count(*) FROM orders", "SELECT count(*) FROM products"], "SELECT count(*) FROM customers"])
    conn = slimsql.connect(demo_db, backend=backend, preset="default", repair_rounds=0)
    trials = conn.ask("q").trace.trials
    assert [t.error_kind for t in trials[2:]] == ["truncated"] * 6 and trials[0].ran and trials[1].ran


def test_a_vote_in_stages_needs_a_vote_samples_and_more_candidates_than_the_first_stage():
    config = GenerationConfig(n=8, temperature=0.8)
    assert pipeline.staged(resolve("default"), config) == 2
    assert pipeline.staged(resolve("default", agree=0), config) == 0
    assert pipeline.staged(resolve("default", agree=8), config) == 0
    assert pipeline.staged(resolve("default", strategy="first"), config) == 0
    assert pipeline.staged(resolve("default"), GenerationConfig(n=8, temperature=0.0)) == 0
    with pytest.raises(InputError, match="--agree"):
        resolve("default", agree=-1)
    assert "agree" not in resolve("fast").describe() and resolve("default").describe()["agree"] == 2
    assert "generation.skip" not in resolve("default").describe()
    with pytest.raises(InputError, match="skip 0 to n - 1"):
        GenerationConfig(n=2, skip=2)


def test_agree_is_a_command_line_option_of_every_answering_command(demo_db, capsys):
    import argparse

    from slimsql import cli
    from slimsql.cliopts import add_answer_options, settings_from_args

    parser = argparse.ArgumentParser()
    add_answer_options(parser)
    assert settings_from_args(parser.parse_args([])).agree == 2  # the default preset's
    assert settings_from_args(parser.parse_args(["--agree", "0"])).agree == 0
    assert settings_from_args(parser.parse_args(["--preset", "accurate", "--agree", "3"])).agree == 3
    assert cli.main(["ask", "--db", str(demo_db), "--agree", "-1", "q?"]) == 2
    assert capsys.readouterr().err.strip() == "error: --agree must be 0 (off) or more, got -1"


def test_identifier_fix_runs_only_when_a_candidate_fails(demo_db):
    conn, _ = connect(demo_db, ["SELECT firstname FROM customers WHERE customer_id = 1"], preset="fast")
    answer = conn.ask("q")
    assert answer.sql == "SELECT first_name FROM customers WHERE customer_id = 1"
    trial = answer.trace.winner
    assert trial.repairs == ("firstname -> first_name",) and trial.extracted.startswith("SELECT firstname")
    conn, _ = connect(demo_db, ["SELECT firstname FROM customers"], preset="fast", fix=False)
    with pytest.raises(QueryError):
        conn.ask("q")


def test_sqlites_double_quoted_strings_come_back_as_standard_strings(demo_db):
    # SQLite read "cancelled" as a string (no such column); the answer says what it ran as
    conn, _ = connect(demo_db, ['SELECT count(*) FROM orders WHERE "status" = "cancelled"'], preset="fast")
    answer = conn.ask("How many orders were cancelled?")
    assert answer.sql == """SELECT count(*) FROM orders WHERE "status" = 'cancelled'"""  # the quoted column stays
    assert answer.rows == [(254,)]
    trial = answer.trace.winner
    assert trial.repairs == (pipeline.STANDARD_STRINGS,) and trial.extracted.endswith('"cancelled"')
    # without fixes the query is answered as the model wrote it, with the same rows
    conn, _ = connect(demo_db, ['SELECT count(*) FROM orders WHERE status = "cancelled"'], preset="fast", fix=False)
    answer = conn.ask("How many orders were cancelled?")
    assert answer.sql == 'SELECT count(*) FROM orders WHERE status = "cancelled"' and answer.rows == [(254,)]


def test_a_string_rewrite_that_changes_the_rows_is_not_kept(demo_db, monkeypatch):
    from slimsql.infer import names

    # were sqlglot's reading of a name to differ from SQLite's, the rewritten query would
    # return other rows: the road keeps the query that ran
    monkeypatch.setattr(names, "single_quoted", lambda sql, schema: "SELECT count(*) FROM orders WHERE status = 'shipped'")
    conn, _ = connect(demo_db, ['SELECT count(*) FROM orders WHERE status = "cancelled"'], preset="fast")
    answer = conn.ask("How many orders were cancelled?")
    assert answer.sql == 'SELECT count(*) FROM orders WHERE status = "cancelled"' and answer.rows == [(254,)]
    assert answer.trace.winner.repairs == ()


def test_model_repair_round_gets_the_error_and_the_columns(demo_db):
    conn, backend = connect(demo_db, ["SELECT total FROM orders", "SELECT count(*) FROM orders"],
                            preset="fast", repair_rounds=2)
    answer = conn.ask("How many orders?")
    assert answer.rows == [(2500,)] and answer.trace.rounds == 1
    assert [t.origin for t in answer.trace.trials] == ["sample", "repair"]
    messages, config = backend.calls[1]
    assert messages[-2] == {"role": "assistant", "content": "SELECT total FROM orders"}
    assert "no such column: total" in messages[-1]["content"] and "orders(order_id, customer_id" in messages[-1]["content"]
    assert config.n == 1 and config.temperature == 0


def test_repair_rounds_are_bounded_and_the_first_error_is_reported(demo_db):
    conn, backend = connect(demo_db, ["SELECT total FROM orders", "SELECT total2 FROM orders",
                                      "SELECT total3 FROM orders"], preset="fast", repair_rounds=2)
    with pytest.raises(QueryError, match="no such column: total$") as info:
        conn.ask("q")
    assert len(backend.calls) == 3 and info.value.trace.rounds == 2
    assert [t.round for t in info.value.trace.trials] == [0, 1, 2]


def test_solve_never_raises_for_a_wrong_answer(demo_db):
    conn, _ = connect(demo_db, ["DELETE FROM orders"], preset="fast")
    solution = conn.solve("q")
    assert solution.result is None and solution.sql is None
    assert solution.trace.trials[0].error_kind == "unsafe" and isinstance(solution.error, UnsafeSQLError)


def test_presets_and_overrides():
    from slimsql.infer import PRESETS, resolve

    assert resolve().strategy == "vote" and resolve().generation.n == PRESETS["default"]["n"]
    fast = resolve("fast", n=3, temperature=0.5, style="compact")
    assert (fast.strategy, fast.generation.n, fast.generation.temperature, fast.style) == ("first", 3, 0.5, "compact")
    assert resolve("accurate", strategy=None).strategy == "vote"  # None keeps the preset's value
    with pytest.raises(InputError, match="preset"):
        resolve("nope")
    with pytest.raises(InputError, match="--timeout"):
        resolve(timeout=float("nan"))
    assert "generation.n" in resolve().describe()


def test_merge_revision_when_the_vote_is_close(demo_db):
    two_groups = ["SELECT count(*) FROM orders", "SELECT count(*) FROM customers",
                  "SELECT count(*) FROM orders", "SELECT count(*) FROM customers"]
    conn, backend = connect(demo_db, [two_groups, "SELECT count(*) FROM products"],
                            preset="default", n=4, repair_rounds=0, merge=True, agree=0)
    answer = conn.ask("q")
    assert answer.rows == [(46,)] and answer.trace.trials[-1].origin == "merge"
    prompt = backend.calls[1][0][-1]["content"]
    assert "Query A:\nSELECT count(*) FROM orders" in prompt and "2500" in prompt and "Query B:" in prompt
    # a clear vote is not merged; a merged query that fails leaves the vote's choice
    conn, backend = connect(demo_db, [two_groups[:3] + ["SELECT count(*) FROM orders"]], preset="default",
                            n=4, merge=True, agree=0)
    assert conn.ask("q").rows == [(2500,)] and len(backend.calls) == 1
    conn, backend = connect(demo_db, [two_groups, "SELECT nope FROM orders"], preset="default", n=4, merge=True,
                            repair_rounds=0, agree=0)
    assert conn.ask("q").rows == [(2500,)] and len(backend.calls) == 2
