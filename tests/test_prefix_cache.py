"""The persistent prefix cache: the store's rules without a model, the real state with one."""

import json
import os
import time

import pytest

import slimsql
from slimsql import cli
from slimsql.backends import prefix_cache
from slimsql.backends.prefix_cache import MIN_TOKENS, PrefixStore

from .conftest import assert_same_distribution, require_model


def fake_entry(store: PrefixStore, tokens: list[int], size: int, used: float):
    store.prepare()
    path = store.path_for(tokens)
    path.write_bytes(b"x" * size)
    store.commit(path, tokens)
    os.utime(path.with_suffix(".json"), (used, used))
    return path


def test_the_longest_shared_prefix_wins_and_short_ones_do_not_count(tmp_path):
    store = PrefixStore("m", tmp_path)
    base = list(range(200))
    fake_entry(store, base[:100] + [999] * 50, 10, 1)
    fake_entry(store, base[:150] + [998] * 10, 10, 2)
    fake_entry(store, base[:MIN_TOKENS - 1] + [997], 10, 3)
    entry, n = store.best(base)
    assert n == 150 and entry.tokens[:150] == tuple(base[:150])
    assert store.best([5] * 300) is None  # nothing shared
    assert store.covers(base[:120]) and not store.covers(base)


def test_the_store_is_bounded_least_recently_used_first(tmp_path):
    store = PrefixStore("m", tmp_path, max_bytes=250)
    now = time.time()
    old = fake_entry(store, [1] * 100, 100, now - 30)
    fake_entry(store, [2] * 100, 100, now - 20)
    store.touch(store.best([1] * 100)[0])  # the oldest is used again: it stays
    fake_entry(store, [3] * 100, 100, now)  # over the bound: the least recently used goes
    kept = {e.tokens[0] for e in store.entries()}
    assert kept == {1, 3} and old.exists()
    assert sum(e.size for e in store.entries()) <= 250


def test_bad_entries_are_ignored_and_removed(tmp_path):
    store = PrefixStore("m", tmp_path)
    good = fake_entry(store, [1] * 100, 10, 1)
    cut = fake_entry(store, [2] * 100, 10, 2)
    cut.write_bytes(b"x" * 3)  # a state cut short: its recorded size no longer matches
    broken = fake_entry(store, [3] * 100, 10, 3)
    broken.with_suffix(".json").write_text("{not json")
    assert [e.tokens[0] for e in store.entries()] == [1]
    assert good.exists() and not cut.exists() and not broken.exists()


def test_the_model_key_changes_with_the_model_file_and_context(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"a")
    first = PrefixStore.model_key(model, n_ctx=8192)
    assert first == PrefixStore.model_key(model, n_ctx=8192)
    assert first != PrefixStore.model_key(model, n_ctx=4096)
    model.write_bytes(b"bb")  # a replaced model file
    assert first != PrefixStore.model_key(model, n_ctx=8192)


def test_cache_command_shows_and_clears(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLIMSQL_PREFIX_DIR", str(tmp_path))
    fake_entry(PrefixStore("model-a", tmp_path), [1] * 100, 2048, 1)
    assert cli.main(["cache", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["models"] == [{"model": "model-a", "entries": 1, "bytes": 2048, "tokens": 100}]
    assert cli.main(["cache", "--clear"]) == 0
    assert prefix_cache.summary(tmp_path) == [] and not any(tmp_path.iterdir())
    assert cli.main(["cache"]) == 0  # an empty cache is shown, not an error


# -- with the real model --------------------------------------------------------------


@pytest.fixture(scope="module")
def model_path():
    require_model()
    from slimsql import models

    return models.resolve(None).path


def asked(conn, question: str) -> list:
    """The messages the road asks the model with, for ``question`` on ``conn``."""
    from slimsql.infer import pipeline

    return pipeline.prompt(conn.db, conn.backend, conn.schema, question, conn.settings)[1]


def backend(folder, **options):
    from slimsql.backends.llama_cpp import LlamaCppBackend

    return LlamaCppBackend(prefix_cache_dir=folder, **options)


@pytest.mark.model
def test_a_new_process_on_a_database_seen_before_evaluates_only_the_question(model_path, demo_db, tmp_path):
    folder = tmp_path / "prefix"
    first = backend(folder)
    answer = slimsql.connect(demo_db, backend=first, preset="fast").ask("How many products are there?")
    assert answer.rows == [(46,)] and first.last_prefill["evaluated"] < 40
    assert len(list(folder.rglob("*.state"))) == 1
    fresh = backend(folder)  # as a new process: nothing in memory
    conn = slimsql.connect(demo_db, backend=fresh, preset="fast")
    again = conn.ask("How many orders were cancelled?")
    assert fresh.last_prefill["reused"] > 700 and fresh.last_prefill["evaluated"] < 40  # demo prompt: 753 tokens
    assert again.timings["prefix"] < 1.0
    uncached = slimsql.connect(demo_db, backend=backend(folder, prefix_cache=False), preset="fast")
    assert uncached.ask("How many orders were cancelled?").rows == again.rows == [(254,)]
    # the stored state is the evaluated prompt: the model reads the question from it as from a prompt
    # evaluated whole (within floating-point noise; the texts may part at a near tie, by CPU)
    messages = asked(conn, "How many orders were cancelled?")
    answer = fresh.model.tokenize(again.raw.encode(), add_bos=False, special=False)
    from_store = fresh.logprobs(messages, answer)
    assert_same_distribution(from_store, uncached.backend.logprobs(messages, answer))
    del first, fresh


@pytest.mark.model
def test_a_changed_schema_reuses_only_the_tokens_it_shares(model_path, demo_db, tmp_path):
    import sqlite3

    folder = tmp_path / "prefix"
    slimsql.connect(demo_db, backend=backend(folder), preset="fast").warm()
    changed = tmp_path / "changed.sqlite"
    with sqlite3.connect(demo_db) as src, sqlite3.connect(changed) as dst:
        src.backup(dst)
        dst.execute("ALTER TABLE products ADD COLUMN colour TEXT")
    fresh = backend(folder)
    conn = slimsql.connect(changed, backend=fresh, preset="fast")
    conn.warm()
    schema_text = conn.schema
    assert "colour" in str([c.name for t in schema_text.tables for c in t.columns])
    # the stored state covers the tokens before the change; everything from it on is evaluated
    assert fresh.last_prefill["from_store"] and 0 < fresh.last_prefill["reused"] < 700  # of 753 + the column
    assert fresh.last_prefill["evaluated"] > 100
    assert len(list(folder.rglob("*.state"))) == 2  # the changed schema gets its own entry


@pytest.mark.model
def test_a_corrupt_state_is_rebuilt_not_a_crash(model_path, demo_db, tmp_path):
    folder = tmp_path / "prefix"
    slimsql.connect(demo_db, backend=backend(folder), preset="fast").warm()
    (state,) = folder.rglob("*.state")
    size = state.stat().st_size
    state.write_bytes(os.urandom(size))  # same size, garbage inside: only llama.cpp can tell
    fresh = backend(folder)
    answer = slimsql.connect(demo_db, backend=fresh, preset="fast").ask("How many products are there?")
    assert answer.rows == [(46,)]
    assert not fresh.last_prefill["from_store"]
    (rebuilt,) = folder.rglob("*.state")
    assert rebuilt.stat().st_size == size and rebuilt.read_bytes() != b""
    reader = backend(folder)
    slimsql.connect(demo_db, backend=reader, preset="fast").warm()
    assert reader.last_prefill["from_store"]


@pytest.mark.model
def test_schema_warm_command(model_path, demo_db, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLIMSQL_PREFIX_DIR", str(tmp_path / "prefix"))
    assert cli.main(["schema", "--db", str(demo_db), "--warm"]) == 0
    assert "evaluated" in capsys.readouterr().err
    assert cli.main(["schema", "--db", str(demo_db), "--warm"]) == 0
    assert "already cached" in capsys.readouterr().err
    assert len(list((tmp_path / "prefix").rglob("*.state"))) == 1


@pytest.mark.model
def test_a_context_too_small_grows_and_a_state_serves_any_context_size(model_path, demo_db, tmp_path):
    from slimsql.backends import GenerationConfig
    from slimsql.errors import ModelError

    folder = tmp_path / "prefix"
    small = backend(folder, n_ctx=1024)  # holds the demo's 753-token prompt, not its 8 candidates x 256 tokens
    conn = slimsql.connect(demo_db, backend=small, agree=0)  # the default preset's 8 candidates, in one call
    conn.warm()
    assert small.n_ctx == 1024 and len(list(folder.rglob("*.state"))) == 1
    answer = conn.ask("How many products are there?")
    assert answer.rows == [(46,)] and small.n_ctx == 4096  # grown to the next power of two
    assert small.last_prefill["from_store"]  # the new context took the prefix back from the store
    large = backend(folder, n_ctx=8192)  # a new process with a larger context: the same state serves it
    conn = slimsql.connect(demo_db, backend=large, agree=0)
    conn.warm()
    assert large.last_prefill["from_store"] and large.last_prefill["evaluated"] == 1
    again = conn.ask("How many products are there?")
    assert again.rows == answer.rows and large.n_ctx == 8192
    # the two contexts read the same state the same way (within floating-point noise: their candidates'
    # texts are not compared, as a near tie may fall either way, by CPU)
    messages = asked(conn, "How many products are there?")
    tokens = large.model.tokenize(answer.raw.encode(), add_bos=False, special=False)
    assert_same_distribution(large.logprobs(messages, tokens), small.logprobs(messages, tokens))
    with pytest.raises(ModelError, match="do not fit the model's 32768-token context"):
        large.generate([{"role": "user", "content": "Count the rows."}],
                       GenerationConfig(n=8, temperature=0.8, max_tokens=5000))
