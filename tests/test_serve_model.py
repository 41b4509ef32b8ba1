"""The server with the real embedded model: warm by design (the schema prompts are evaluated at
start, so a question costs only its own tokens), and the same road as ``slimsql ask``."""

import sqlite3

import pytest
from fastapi.testclient import TestClient

import slimsql
from slimsql.infer import resolve
from slimsql.serve.app import create_app
from slimsql.serve.service import Service

from .conftest import require_model, sha256

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    require_model()
    from slimsql.backends.llama_cpp import LlamaCppBackend

    return LlamaCppBackend(prefix_cache_dir=tmp_path_factory.mktemp("prefix"))  # a store of its own


def test_a_served_question_costs_only_its_own_tokens_and_matches_the_cli_road(llama, demo_master, tmp_path):
    other = tmp_path / "pets.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE owners (owner_id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT)")
        conn.execute("CREATE TABLE pets (pet_id INTEGER PRIMARY KEY, name TEXT NOT NULL, species TEXT NOT NULL, "
                     "born TEXT, owner_id INTEGER REFERENCES owners(owner_id))")
        conn.executemany("INSERT INTO owners VALUES (?, ?, ?)", [(1, "Ana", "Lisbon"), (2, "Ben", "Porto")])
        conn.executemany("INSERT INTO pets VALUES (?, ?, ?, ?, ?)",
                         [(1, "Rex", "dog", "2019-04-01", 1), (2, "Tom", "cat", "2020-06-12", 2),
                          (3, "Kiwi", "bird", "2022-01-30", 1)])
    conn.close()
    before = sha256(demo_master)
    settings = resolve("fast")
    service = Service({"shop": demo_master, "pets": other}, llama, settings)
    try:
        assert service.warm() == ["shop", "pets"]
        client = TestClient(create_app(service), raise_server_exceptions=False)
        # switching databases loads the other's evaluated schema prompt, never evaluates it again
        for db, question, rows in (("shop", "How many products are there?", [[46]]),
                                   ("pets", "How many pets are there?", [[3]]),
                                   ("shop", "How many products are there?", [[46]])):
            response = client.post("/v1/ask", json={"db": db, "question": question})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["rows"] == rows
            assert llama.last_prefill["evaluated"] < 40, llama.last_prefill  # the question, not the schema
        cli_road = slimsql.connect(demo_master, backend=llama, settings=settings).ask("How many products are there?")
        # the same road: the same prompt, the same strategy, the same result (the texts are not compared:
        # the two calls start from other cache states, and a near tie may fall either way, by CPU)
        served = body["trace"]
        assert served["trials"][0]["prompt_tokens"] == cli_road.trace.trials[0].prompt_tokens
        assert served["strategy"] == cli_road.trace.strategy and body["rows"] == [list(r) for r in cli_road.rows]
    finally:
        service.close()
    assert sha256(demo_master) == before
