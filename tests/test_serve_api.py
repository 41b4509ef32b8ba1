"""`slimsql serve`: the HTTP API's shape and errors, its limits, concurrency and security.

A scripted model stands in for the real one (tests/serve_support.py); most tests go through
FastAPI's TestClient, the concurrency and disconnect tests through a real uvicorn server.
"""

import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient

from slimsql import cli
from slimsql import cliopts as cli_options
from slimsql.errors import InputError
from slimsql.infer import Settings
from slimsql.prompts import MAX_HISTORY
from slimsql.serve import app as app_module
from slimsql.serve import service as service_module
from slimsql.serve.app import MAX_BODY_BYTES, create_app
from slimsql.serve.service import Service, database_names

from .conftest import sha256
from .serve_support import Model, assert_error, folder_state, live_server, raw_post, wait_for

BOMB = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
MARGIN = 2.0  # a fresh worker's start, the kill grace, a loaded machine


@pytest.fixture
def make_service(demo_db):
    """Build a Service over the demo database (named ``shop``); all are closed at teardown."""
    made = []

    def make(model=None, *, max_rows=50, timeout=2.0, repair_rounds=0, **options):
        model = model or Model()
        settings = Settings(max_rows=max_rows, timeout=timeout, repair_rounds=repair_rounds)
        service = Service({"shop": demo_db}, model.backend, settings, **options)
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()


@pytest.fixture
def model():
    return Model()


@pytest.fixture
def service(make_service, model):
    return make_service(model)


@pytest.fixture
def client(service):
    return TestClient(create_app(service), raise_server_exceptions=False)


def ask(client, question="How many products?", **fields):
    return client.post("/v1/ask", json={"db": "shop", "question": question, **fields})


def run_sql(client, sql, **fields):
    return client.post("/v1/sql", json={"db": "shop", "sql": sql, **fields})


# -- 1. the routes --------------------------------------------------------------------------

def test_health(client):
    body = client.get("/v1/health").json()
    assert body["status"] == "ok" and body["model"] == "scripted" and body["databases"] == 1
    assert body["queue"] == {"admitted": 0, "max": 8} and body["uptime_s"] >= 0


def test_databases_lists_the_databases_named_at_start(client):
    assert client.get("/v1/databases").json() == {"databases": [{"name": "shop", "tables": 8, "dialect": "sqlite"}]}


def test_one_schema(client):
    body = client.get("/v1/databases/shop").json()
    assert body["name"] == "shop" and body["dialect"] == "sqlite" and body["skipped"] == []
    tables = {t["name"]: t for t in body["tables"]}
    assert len(tables) == 8 and {"orders", "customers", "products", "order_items"} <= set(tables)
    orders = tables["orders"]
    assert orders["kind"] == "table"
    columns = {c["name"]: c for c in orders["columns"]}
    assert columns["order_id"]["primary_key"] is True and columns["status"]["primary_key"] is False
    assert {"columns": ["customer_id"], "ref_table": "customers", "ref_columns": ["customer_id"]} \
        in orders["foreign_keys"]
    assert "CREATE TABLE orders" in body["text"]


def test_models(client):
    (only,) = client.get("/v1/models").json()["models"]
    assert only == {"name": "scripted", "backend": "scripted", "style": only["style"], "candidates": 1,
                    "strategy": "first", "max_rows": 50, "timeout": 2.0, "max_history": MAX_HISTORY}


def test_ask_answers_with_sql_rows_timings_and_trace(client, model):
    response = ask(client)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["sql"] == "SELECT count(*) AS n FROM products"
    assert body["columns"] == ["n"] and body["rows"] == [[46]]
    assert body["truncated"] is False and body["db"] == "shop" and body["model"] == "scripted"
    assert body["question"] == "How many products?"
    assert {"generation", "execution", "total", "wall"} <= set(body["timings"])
    assert body["timings"]["wall"] >= body["timings"]["total"] >= 0
    trace = body["trace"]
    assert trace["chosen"] == 0 and trace["trials"][0]["raw"] == "SELECT count(*) AS n FROM products"
    assert model.calls == 1
    messages, _ = model.backend.calls[0]
    assert "How many products?" in messages[-1]["content"]


def test_ask_with_history_puts_earlier_turns_into_the_prompt(client, model):
    history = [{"question": "How many orders are there?", "sql": "SELECT count(*) FROM orders"}]
    assert ask(client, "and only the cancelled ones?", history=history).status_code == 200
    prompt = " ".join(m["content"] for m in model.backend.calls[0][0])
    assert "How many orders are there?" in prompt and "SELECT count(*) FROM orders" in prompt
    assert "and only the cancelled ones?" in prompt


def test_sql_runs_edited_sql(client, model):
    body = run_sql(client, "SELECT name FROM categories WHERE name LIKE 'L%'").json()
    assert body["columns"] == ["name"] and body["rows"] == [["Laptops"]] and body["truncated"] is False
    assert body["sql"] == "SELECT name FROM categories WHERE name LIKE 'L%'" and "execution" in body["timings"]
    assert model.calls == 0  # hand-written SQL never touches the model


def test_blobs_and_infinities_are_valid_json(make_service):
    """Values JSON has no form for: a BLOB comes back as hex (as `slimsql sql --json`), an
    infinite float as text (they were a 500 before)."""
    sql = "SELECT x'00ff10' AS b, 1e999 AS inf, -1e999 AS ninf, 1.5 AS f, NULL AS n"
    client = TestClient(create_app(make_service(Model(sql))), raise_server_exceptions=False)
    for response in (run_sql(client, sql), ask(client)):
        assert response.status_code == 200, response.text
        assert response.json()["rows"] == [["00ff10", "Infinity", "-Infinity", 1.5, None]]
        json.loads(response.text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))


def test_openapi_and_docs(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/health", "/v1/databases", "/v1/databases/{name}", "/v1/models", "/v1/ask", "/v1/sql"} \
        <= set(spec["paths"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    # offline: Swagger UI's files come from this server, nothing from a CDN
    urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", docs.text)
    assert urls and all(u.startswith("/") for u in urls), urls
    for url in urls:
        assert client.get(url).status_code == 200, url


def test_an_empty_api_key_is_refused(service):
    with pytest.raises(InputError, match="empty"):
        create_app(service, api_key="")


# -- errors: stable codes, one line, never a stack trace -------------------------------------

def test_unknown_database(client):
    assert_error(client.post("/v1/sql", json={"db": "nope", "sql": "SELECT 1"}), 404, "unknown_database")
    assert_error(client.post("/v1/ask", json={"db": "nope", "question": "q?"}), 404, "unknown_database")
    assert_error(client.get("/v1/databases/nope"), 404, "unknown_database")


def test_bad_input(client, model):
    assert_error(ask(client, "   "), 400, "bad_input")
    assert_error(ask(client, "q?", history=[{"question": " ", "sql": "SELECT 1"}]), 400, "bad_input")
    assert_error(run_sql(client, "   "), 400, "bad_input")
    assert model.calls == 0


def test_unsafe_query_and_no_sql_errors(make_service):
    client = TestClient(create_app(make_service(Model("I am sorry, I cannot do that."))),
                        raise_server_exceptions=False)
    error = assert_error(run_sql(client, "DROP TABLE orders"), 422, "unsafe_sql")
    assert error["message"].startswith("not run:")
    assert_error(run_sql(client, "SELECT nope FROM orders"), 422, "query_error")
    error = assert_error(ask(client), 422, "no_sql")
    assert error["trace"]["trials"][0]["raw"] == "I am sorry, I cannot do that."


def test_failed_answer_shows_its_sql_and_trace(make_service):
    client = TestClient(create_app(make_service(Model("SELECT total FROM orders"))), raise_server_exceptions=False)
    error = assert_error(ask(client), 422, "query_error")
    assert "no such column: total" in error["message"] and error["sql"] == "SELECT total FROM orders"
    assert error["trace"]["trials"][0]["error_kind"] == "query"


@pytest.mark.parametrize("body", [
    {"db": "shop"},  # no question
    {"db": "shop", "question": 7},
    {"db": "shop", "question": "q?", "max_rows": 0},
    {"db": "shop", "question": "q?", "max_rows": 10**12},
    {"db": "shop", "question": "q?", "timeout": -1},
    {"db": "shop", "question": "q?", "timeout": 1e9},
    {"db": "shop", "question": "q" * 2001},
    {"db": "shop", "question": "q?", "history": [{"question": "x?", "sql": "SELECT 1"}] * 21},
    [1, 2, 3],
], ids=["missing", "type", "rows 0", "rows huge", "timeout negative", "timeout huge", "question long",
        "history long", "not an object"])
def test_invalid_requests(client, model, body):
    assert_error(client.post("/v1/ask", json=body), 422, "invalid_request")
    assert model.calls == 0


def test_invalid_json_and_non_finite_numbers(client):
    for raw in (b"{not json", b'{"db": "shop", "sql": "SELECT 1", "timeout": NaN}',
                b'{"db": "shop", "sql": "SELECT 1", "timeout": Infinity}', b'{"db": "shop", "sql": "SELECT \\ud800"}'):
        response = client.post("/v1/sql", content=raw, headers={"content-type": "application/json"})
        assert_error(response, 422, "invalid_request")


@pytest.mark.parametrize("path", ["/v1/ask", "/v1/sql"])
@pytest.mark.parametrize("kind", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data", None])
def test_a_body_that_is_not_declared_json_is_refused(client, model, kind, path):
    """A cross-site form, text or untyped POST needs no CORS preflight: it is refused before its
    body is read, whatever FastAPI would make of the body."""
    body = json.dumps({"db": "shop", "question": "How many products?", "sql": "SELECT 1"}).encode()
    headers = {"Content-Type": kind} if kind else {}
    response = client.post(path, content=body, headers=headers)
    assert_error(response, 415, "not_json")
    assert model.calls == 0
    ok = client.post(path, content=body, headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


def test_not_found_and_wrong_method(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/v1/nope"), 404, "not_found")
    assert_error(client.get("/v1/ask"), 405, "method_not_allowed")


def test_unexpected_error_is_one_line_without_traceback(make_service):
    def broken(messages):
        raise RuntimeError('kaboom\nTraceback (most recent call last):\n  File "x.py", line 1')

    service = make_service(Model(broken))
    client = TestClient(create_app(service), raise_server_exceptions=False)
    error = assert_error(ask(client), 500, "internal")
    assert error["message"] == "unexpected RuntimeError" and "kaboom" not in json.dumps(error)
    assert service.gate.admitted == 0 and service.gate.in_use == 0  # the failed question let go
    assert ask(client).status_code == 500  # and the next one is served (and fails the same way)


def test_body_over_the_limit_is_refused(client, model):
    padding = " " * (MAX_BODY_BYTES + 1)
    declared = client.post("/v1/ask", content=b'{"db": "shop", "question": "q?"}' + padding.encode(),
                           headers={"content-type": "application/json"})
    error = assert_error(declared, 413, "too_large")
    assert "256 KiB" in error["message"]

    def chunks():  # no content-length: chunked transfer encoding, counted as it arrives
        yield b'{"db": "shop", "question": "q?"'
        for _ in range(30):
            yield b" " * 10_000
        yield b"}"

    streamed = client.post("/v1/ask", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in streamed.request.headers
    assert_error(streamed, 413, "too_large")
    assert model.calls == 0
    assert ask(client, "q?" + " " * 1000).status_code == 200  # under the limit: served


def test_streamed_body_over_the_limit_on_a_real_server(service):
    def chunks():
        yield b'{"db": "shop", "sql": "SELECT 1'
        for _ in range(40):
            yield b" " * 10_000
        yield b'"}'

    with live_server(create_app(service)) as url:
        response = httpx.post(f"{url}/v1/sql", content=chunks(), headers={"content-type": "application/json"})
        assert_error(response, 413, "too_large")
        assert httpx.post(f"{url}/v1/sql", json={"db": "shop", "sql": "SELECT 1"}).json()["rows"] == [[1]]


def test_row_cap_is_the_servers_at_most(client):
    body = run_sql(client, "SELECT order_id FROM orders ORDER BY order_id", max_rows=5000).json()
    assert len(body["rows"]) == 50 and body["truncated"] is True and body["truncated_by"] == "rows"
    assert body["rows"][-1] == [50]
    body = run_sql(client, "SELECT order_id FROM orders ORDER BY order_id", max_rows=3).json()
    assert body["rows"] == [[1], [2], [3]] and body["truncated"] is True
    body = run_sql(client, "SELECT name FROM categories", max_rows=5000).json()
    assert body["truncated"] is False


def test_row_cap_applies_to_answers_too(make_service):
    client = TestClient(create_app(make_service(Model("SELECT order_id FROM orders"), max_rows=7)))
    body = ask(client, max_rows=10**6).json()
    assert len(body["rows"]) == 7 and body["truncated"] is True
    body = ask(client, max_rows=2).json()
    assert len(body["rows"]) == 2 and body["truncated"] is True


def test_time_limit(make_service):
    service = make_service(Model(BOMB), timeout=1.0)
    client = TestClient(create_app(service), raise_server_exceptions=False)
    for kwargs in ({}, {"timeout": 100}):  # a request may not raise the server's limit
        start = time.monotonic()
        error = assert_error(run_sql(client, BOMB, **kwargs), 422, "query_timeout")
        assert 0.9 < time.monotonic() - start < 1.0 + MARGIN and "1 s time limit" in error["message"]
    start = time.monotonic()
    assert_error(run_sql(client, BOMB, timeout=0.3), 422, "query_timeout")  # a request may lower it
    assert time.monotonic() - start < 0.3 + MARGIN
    start = time.monotonic()
    assert_error(ask(client), 422, "query_timeout")  # a model's query is bounded the same way
    assert time.monotonic() - start < 1.0 + MARGIN
    assert run_sql(client, "SELECT count(*) FROM categories").status_code == 200  # and the server goes on


# -- 2. concurrency ----------------------------------------------------------------------------

def _in_thread(fn, *args):
    out = {}

    def work():
        try:
            out["response"] = fn(*args)
        except Exception as err:  # pragma: no cover - reported by the assertions
            out["error"] = err

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, out


def _post(url, path, body, **kw):
    return httpx.post(url + path, json=body, timeout=30, **kw)


def test_full_queue_refuses_at_once_with_retry_after(make_service):
    model = Model(block=True)
    service = make_service(model, max_queue=2)
    with live_server(create_app(service)) as url:
        body = {"db": "shop", "question": "How many products?"}
        first = _in_thread(_post, url, "/v1/ask", body)
        model.wait_started()
        second = _in_thread(_post, url, "/v1/ask", body)
        wait_for(lambda: service.gate.admitted == 2, what="two questions in line")
        assert httpx.get(f"{url}/v1/health").json()["queue"] == {"admitted": 2, "max": 2}
        try:
            start = time.monotonic()
            third = httpx.post(f"{url}/v1/ask", json=body, timeout=10)
            assert time.monotonic() - start < 1.5, "a full queue must refuse at once"
            assert_error(third, 503, "busy")
            assert int(third.headers["Retry-After"]) >= 1
            assert model.calls == 1  # the second waits for the model; the third never reached it
            assert run_sql_live(url).status_code == 200  # hand-written SQL needs no model slot
        finally:
            model.release.set()
        for thread, out in (first, second):
            thread.join(10)
            assert out["response"].status_code == 200 and out["response"].json()["rows"] == [[46]]
    assert service.gate.admitted == 0 and model.calls == 2


def test_slow_queries_never_keep_a_question_from_its_503(make_service):
    """Hand-written queries run on threads of their own: with every one of them busy on a slow
    query and the model's line full, one more question is still refused at once."""
    model = Model(block=True)
    service = make_service(model, max_queue=1, timeout=1.5, connections=2)
    with live_server(create_app(service)) as url:
        body = {"db": "shop", "question": "How many products?"}
        first = _in_thread(_post, url, "/v1/ask", body)
        model.wait_started()
        # more than every request thread there is (one shared pool of max_queue + 8 threads would stall)
        count = max(service.max_queries, service.gate.max_queue + 8) + 1
        slow = [_in_thread(_post, url, "/v1/sql", {"db": "shop", "sql": BOMB}) for _ in range(count)]
        time.sleep(0.5)  # the slow queries hold their threads
        try:
            start = time.monotonic()
            refused = httpx.post(f"{url}/v1/ask", json=body, timeout=10)
            assert time.monotonic() - start < 1.5, "a full line must refuse at once, whatever the queries do"
            assert_error(refused, 503, "busy")
        finally:
            model.release.set()
        for thread, out in [first, *slow]:
            thread.join(30)
            assert not thread.is_alive()
        # the first question then waits for a connection behind the slow queries: answered, or
        # refused as busy once its bounded wait for a connection runs out, never left hanging
        assert first[1]["response"].status_code in (200, 503)
        assert {out["response"].status_code for _, out in slow} <= {422, 503}


def test_value_linking_on_the_server_reads_through_the_pool(demo_db, tmp_path, monkeypatch):
    """--values: the index of the database's text values is built at start through a pooled
    connection, and a question's prompt names the values it matches."""
    from slimsql.infer import linking

    monkeypatch.setenv("SLIMSQL_HOME", str(tmp_path / "home"))  # a value-index cache of its own
    monkeypatch.setattr(linking, "_MEMORY", type(linking._MEMORY)())  # nothing indexed in this process yet
    seen = []
    model = Model(lambda messages: seen.append(messages[-1]["content"]) or
                  "SELECT count(*) AS n FROM orders WHERE status = 'cancelled'")
    service = Service({"shop": demo_db}, model.backend, Settings(values=True, repair_rounds=0))
    try:
        service.warm()
        assert list(linking._MEMORY) == [linking.content_key(demo_db)]  # built at start, before any question
        assert list((tmp_path / "home").rglob("*.json"))  # and kept on disk
        response = ask(TestClient(create_app(service)), "How many orders were cancelled?")
        assert response.status_code == 200, response.text
        assert response.json()["rows"] == [[254]]
        assert "'cancelled'" in seen[-1] and "orders.status" in seen[-1]
    finally:
        service.close()


def test_no_free_connection_stops_the_question_it_is_not_the_querys_fault(make_service):
    """A candidate that found every connection busy has no verdict: the question is refused as
    busy (503), not voted on nor sent to a repair round with "busy" as the database's error."""
    model = Model("SELECT count(*) AS n FROM products")
    service = make_service(model, connections=1, timeout=0.2, repair_rounds=1)
    pool = service.database("shop").pool
    with pool.connection(wait=1):  # the only connection, held
        assert_error(ask(TestClient(create_app(service), raise_server_exceptions=False)), 503, "busy")
    assert model.calls == 1  # no repair round
    assert service.gate.admitted == 0


def run_sql_live(url):
    return httpx.post(f"{url}/v1/sql", json={"db": "shop", "sql": "SELECT 1"}, timeout=10)


def test_the_model_is_never_used_from_two_threads(make_service):
    waiting = []  # questions admitted while the model works: proof that the requests overlapped
    model = Model(lambda messages: waiting.append(service.gate.admitted) or "SELECT count(*) AS n FROM products",
                  delay=0.1)
    service = make_service(model, max_queue=8)
    with live_server(create_app(service)) as url:
        threads = [_in_thread(_post, url, "/v1/ask", {"db": "shop", "question": f"question {i}?"})
                   for i in range(6)]
        for thread, out in threads:
            thread.join(20)
            assert out["response"].status_code == 200, out
    assert model.calls == 6 and max(waiting) > 1
    assert model.max_active == 1 and service.gate.peak_in_use == 1
    assert service.gate.admitted == 0 and service.gate.in_use == 0


def test_one_requests_time_limit_never_applies_to_anothers_query(make_service):
    service = make_service(timeout=5.0)
    with live_server(create_app(service)) as url:
        finished = {}

        def slow():
            response = _post(url, "/v1/sql", {"db": "shop", "sql": BOMB, "timeout": 2.0})
            finished["slow"] = time.monotonic()
            return response

        start = time.monotonic()
        slow_thread, slow_out = _in_thread(slow)
        time.sleep(0.3)  # the slow query is running
        fast = _post(url, "/v1/sql", {"db": "shop", "sql": "SELECT count(*) FROM orders", "timeout": 5.0})
        fast_done = time.monotonic()
        assert fast.status_code == 200 and fast.json()["rows"] == [[2500]]
        slow_thread.join(10)
        assert_error(slow_out["response"], 422, "query_timeout")
        # the fast one was answered while the slow one ran on to its own 2 s limit
        assert fast_done - start < 1.9 < finished["slow"] - start, (fast_done - start, finished["slow"] - start)
        # the connection whose worker was killed at the deadline serves again
        assert _post(url, "/v1/sql", {"db": "shop", "sql": "SELECT 1 + 1"}).json()["rows"] == [[2]]


@pytest.fixture
def watched(make_service):
    """A service whose model blocks and whose questions and queries are recorded."""
    # fails, so the road goes on to a repair round (whose longer prompt gets another query)
    model = Model(lambda messages: f"SELECT nope{len(messages)} FROM orders", block=True)
    service = make_service(model, repair_rounds=1)
    events, queries = [], []
    real_ask, pool = service.ask, service.databases["shop"].pool
    real_connection = pool.connection

    def recording_ask(*args, **kwargs):
        events.append(kwargs["cancelled"])
        return real_ask(*args, **kwargs)

    def recording_connection(*args, **kwargs):
        queries.append(time.monotonic())
        return real_connection(*args, **kwargs)

    service.ask = recording_ask
    pool.connection = recording_connection
    return service, model, events, queries


def test_without_a_disconnect_the_question_runs_its_repair_round(watched):
    service, model, events, queries = watched
    model.release.set()
    client = TestClient(create_app(service), raise_server_exceptions=False)
    assert_error(ask(client), 422, "query_error")
    assert model.calls == 2 and len(queries) == 2 and not events[0].is_set()


def test_client_that_disconnects_mid_ask_stops_the_question(watched):
    service, model, events, queries = watched
    with live_server(create_app(service)) as url:
        conn = raw_post(url, "/v1/ask", json.dumps({"db": "shop", "question": "q?"}).encode())
        model.wait_started()
        conn.close()  # the client hangs up while the model works
        wait_for(lambda: events[0].is_set(), 3, "the server to notice the disconnect")
        model.release.set()
        wait_for(lambda: service.gate.admitted == 0, 5, "the question to end")
        time.sleep(0.3)
        assert model.calls == 1, "the question went on to a repair round after its client left"
        assert queries == [], "a query ran after the client left"
        assert service.gate.in_use == 0
        # the server is fine afterwards
        assert httpx.get(f"{url}/v1/health").json()["queue"]["admitted"] == 0


def test_client_that_disconnects_while_waiting_never_reaches_the_model(watched):
    service, model, events, queries = watched
    with live_server(create_app(service)) as url:
        first = _in_thread(_post, url, "/v1/ask", {"db": "shop", "question": "first?"})
        model.wait_started()
        conn = raw_post(url, "/v1/ask", json.dumps({"db": "shop", "question": "second?"}).encode())
        wait_for(lambda: service.gate.admitted == 2, what="the second question to wait")
        conn.close()
        wait_for(lambda: service.gate.admitted == 1, 3, "the waiting question to give up")
        model.release.set()
        first[0].join(10)
        assert_error(first[1]["response"], 422, "query_error")  # the first ran on (and failed) as usual
    assert model.calls == 2  # the first question's proposal and its repair round; none for the second
    assert all("second?" not in m[-1]["content"] for m, _ in model.backend.calls)
    assert service.gate.admitted == 0


# -- 3. security -------------------------------------------------------------------------------

def test_default_host_is_loopback(demo_db):
    args = cli.build_parser().parse_args(["serve", "--db", str(demo_db)])
    assert args.host == "127.0.0.1" and args.server_key is None and args.cors_origin == []
    # the server's own key is never a backend option (the generating server's key is another)
    assert "api_key" not in cli_options.backend_options(
        cli.build_parser().parse_args(["serve", "--db", str(demo_db), "--api-key", "k"]))


@pytest.fixture
def no_model(monkeypatch):
    monkeypatch.delenv("SLIMSQL_API_KEY", raising=False)

    def refuse(*a, **k):
        raise AssertionError("the model must not load")

    monkeypatch.setattr("slimsql.backends.load_backend", refuse)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_binding_beyond_loopback_needs_an_api_key(demo_db, no_model, capsys, host):
    assert cli.main(["serve", "--host", host, "--db", str(demo_db)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: binding to {host} opens the server") and "\n" not in err
    assert "Traceback" not in err


def test_cors_for_every_origin_without_a_key_is_refused_before_the_model_loads(demo_db, no_model, capsys):
    assert cli.main(["serve", "--db", str(demo_db), "--cors-origin", "*"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --cors-origin '*'") and "every web site" in err and "\n" not in err


def test_binding_beyond_loopback_without_a_key_in_a_real_process(demo_db):
    env = {k: v for k, v in os.environ.items() if k != "SLIMSQL_API_KEY"}
    out = subprocess.run([sys.executable, "-m", "slimsql.cli", "serve", "--host", "0.0.0.0", "--db", str(demo_db)],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: binding to 0.0.0.0"), out.stderr


@pytest.fixture
def fake_serve(monkeypatch):
    """Run ``slimsql serve`` in-process with a scripted model; uvicorn.run calls ``check(app, host, port)``."""
    import uvicorn

    from slimsql.backends.scripted import ScriptedBackend

    monkeypatch.delenv("SLIMSQL_API_KEY", raising=False)
    monkeypatch.setattr("slimsql.backends.load_backend",
                        lambda name, **kw: ScriptedBackend(replies=lambda m, c: "SELECT 1"))
    seen = []

    def run(argv, check):
        monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: seen.append((host, port)) or check(app))
        code = cli.main(["serve", "--no-warm", *argv])
        assert seen, "uvicorn.run was not reached"
        return code, seen[-1]

    return run


def test_serve_with_a_key_beyond_loopback(demo_db, fake_serve, monkeypatch):
    monkeypatch.setenv("SLIMSQL_API_KEY", "k3y")

    def check(app):
        client = TestClient(app, base_url="http://203.0.113.5:9000")
        assert_error(client.get("/v1/databases"), 401, "unauthorized")
        assert client.get("/v1/databases", headers={"X-API-Key": "k3y"}).status_code == 200

    assert fake_serve(["--host", "0.0.0.0", "--port", "9000", "--db", str(demo_db)], check) == (0, ("0.0.0.0", 9000))


@pytest.mark.parametrize("bind,ok_hosts", [
    ("127.0.0.1", ["127.0.0.1:8000", "localhost:8000", "localhost", "[::1]:8000"]),
    ("127.0.0.2", ["127.0.0.2:8000", "127.0.0.1:8000"]),  # every loopback address: the one bound too
    ("::1", ["[::1]:8000", "localhost:8000"]),
])
def test_serve_on_loopback_answers_only_to_loopback_host_names(demo_db, fake_serve, bind, ok_hosts):
    def check(app):
        client = TestClient(app)
        for host in ok_hosts:
            assert client.get("/v1/health", headers={"host": host}).status_code == 200, host
        for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil", ""):
            assert_error(client.get("/v1/databases", headers={"host": host}), 400, "bad_host")

    assert fake_serve(["--host", bind, "--db", str(demo_db)], check)[0] == 0


def test_bad_port_is_a_one_line_error(demo_db, no_model, capsys):
    assert cli.main(["serve", "--port", "70000", "--db", str(demo_db)]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --port must be between 1 and 65535")


@pytest.fixture
def keyed(service):
    return TestClient(create_app(service, api_key="s3cret-key"), raise_server_exceptions=False)


PROTECTED = [("GET", "/v1/databases", None), ("GET", "/v1/databases/shop", None), ("GET", "/v1/models", None),
             ("POST", "/v1/sql", {"db": "shop", "sql": "SELECT 1"}),
             ("POST", "/v1/ask", {"db": "shop", "question": "How many products?"})]


@pytest.mark.parametrize("method,path,body", PROTECTED, ids=[p for _, p, _ in PROTECTED])
def test_api_key_is_required(keyed, model, method, path, body):
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": "S3CRET-KEY"}, {"X-API-Key": "s3cret-ke"},
                    {"X-API-Key": ""}, {"Authorization": "Bearer s3cret-key"}):
        assert_error(keyed.request(method, path, json=body, headers=headers), 401, "unauthorized")
    assert model.calls == 0
    assert keyed.request(method, path, json=body, headers={"X-API-Key": "s3cret-key"}).status_code == 200
    assert keyed.request(method, path, json=body, headers={"x-api-key": "s3cret-key"}).status_code == 200


def test_api_key_is_not_needed_for_health_and_other_paths_still_need_it(keyed):
    assert keyed.get("/v1/health").status_code == 200
    assert_error(keyed.get("/v1/nope"), 401, "unauthorized")  # unknown /v1 paths say nothing either
    assert_error(keyed.get("/v1/databases/shop/"), 401, "unauthorized")


def test_api_key_holds_behind_a_path_prefix(service):
    """Behind a proxy's prefix (uvicorn --root-path) the path carries the prefix; the router strips it."""
    client = TestClient(create_app(service, api_key="s3cret-key"), root_path="/prefix", raise_server_exceptions=False)
    for path in ("/prefix/v1/databases", "/v1/databases"):
        assert_error(client.get(path), 401, "unauthorized")
        assert client.get(path, headers={"X-API-Key": "s3cret-key"}).json()["databases"][0]["name"] == "shop"
    assert client.get("/prefix/v1/health").status_code == 200


def test_api_key_is_compared_in_constant_time(keyed, monkeypatch):
    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(app_module.hmac, "compare_digest", spy)
    keyed.get("/v1/models", headers={"X-API-Key": "guess"})
    keyed.get("/v1/models", headers={"X-API-Key": "s3cret-key"})
    assert sorted(compared) == sorted([(b"guess", b"s3cret-key"), (b"s3cret-key", b"s3cret-key")])


def test_no_cors_headers_by_default(client):
    response = client.get("/v1/databases", headers={"Origin": "https://evil.example"})
    assert response.status_code == 200 and "access-control-allow-origin" not in response.headers
    preflight = client.options("/v1/sql", headers={"Origin": "https://evil.example",
                                                    "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    assert preflight.status_code >= 400


def test_cors_allows_only_the_origins_named(service):
    client = TestClient(create_app(service, cors_origins=["https://app.example"]), raise_server_exceptions=False)
    allowed = client.get("/v1/databases", headers={"Origin": "https://app.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    other = client.get("/v1/databases", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    preflight = client.options("/v1/sql", headers={"Origin": "https://evil.example",
                                                    "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_for_every_origin_needs_an_api_key(service):
    for origin in ("*", "null"):  # "null": what any sandboxed frame sends
        with pytest.raises(InputError, match="every web site"):
            create_app(service, cors_origins=["https://app.example", origin])
    client = TestClient(create_app(service, api_key="k", cors_origins=["*"]), raise_server_exceptions=False)
    assert client.get("/v1/databases", headers={"Origin": "https://x.example"}).status_code == 401


@pytest.mark.parametrize("path", ["/", "/static/index.html", "/docs", "/v1/health"])
def test_no_response_may_be_framed(client, path):
    response = client.get(path)
    assert response.status_code == 200 and response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_cors_preflight_works_with_an_api_key(service):
    """A browser's preflight carries no X-API-Key: it must be answered, and a refused call must
    still carry the CORS header so the page can read the error."""
    client = TestClient(create_app(service, api_key="k", cors_origins=["https://app.example"]),
                        raise_server_exceptions=False)
    origin = {"Origin": "https://app.example"}
    preflight = client.options("/v1/sql", headers={**origin, "Access-Control-Request-Method": "POST",
                                                    "Access-Control-Request-Headers": "content-type,x-api-key"})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
    refused = client.post("/v1/sql", json={"db": "shop", "sql": "SELECT 1"}, headers=origin)
    assert_error(refused, 401, "unauthorized")
    assert refused.headers["access-control-allow-origin"] == "https://app.example"
    ok = client.post("/v1/sql", json={"db": "shop", "sql": "SELECT 1"}, headers={**origin, "X-API-Key": "k"})
    assert ok.status_code == 200


def test_host_header_is_checked(service):
    client = TestClient(create_app(service, allowed_hosts=["127.0.0.1", "localhost"], api_key="k"),
                        base_url="http://127.0.0.1:8000", raise_server_exceptions=False)
    key = {"X-API-Key": "k"}
    assert client.get("/v1/databases", headers=key).status_code == 200
    for host in ("evil.example", "evil.example:8000", "127.0.0.1@evil.example"):
        assert_error(client.get("/v1/databases", headers={**key, "host": host}), 400, "bad_host")
        assert_error(client.post("/v1/sql", json={"db": "shop", "sql": "SELECT 1"}, headers={**key, "host": host}),
                     400, "bad_host")
    assert client.get("/v1/health", headers={"host": "localhost:1234"}).status_code == 200
    unchecked = TestClient(create_app(service), raise_server_exceptions=False)  # no list: any Host
    assert unchecked.get("/v1/health", headers={"host": "anything.example"}).status_code == 200


@pytest.fixture
def other_db(demo_master, tmp_path_factory):
    """A second, real SQLite file the server was not started with."""
    path = tmp_path_factory.mktemp("other") / "other.sqlite"
    shutil.copy(demo_master, path)
    return path


def test_only_databases_named_at_start_can_be_queried(demo_db, other_db, service, client, model, monkeypatch):
    opened = []
    real_open = service_module.open_database
    monkeypatch.setattr(service_module, "open_database",
                        lambda path, **kw: opened.append(path) or real_open(path, **kw))
    before = sha256(other_db), folder_state(other_db.parent)
    names = ["../x", "../shop", "/etc/passwd", "shop.sqlite", str(other_db), str(demo_db), "other", "other.sqlite",
             "SHOP", " shop", "shop\x00", "", ".", "~/shop", "file:shop?mode=rw", "%2e%2e%2fother"]
    for name in names:
        assert_error(client.post("/v1/sql", json={"db": name, "sql": "SELECT 1"}), 404, "unknown_database")
        assert_error(client.post("/v1/ask", json={"db": name, "question": "How many?"}), 404, "unknown_database")
        if name.strip(" .") and "/" not in name:  # (clients resolve "." and ".." in a URL themselves)
            response = client.get("/v1/databases/" + quote(name, safe=""))
            assert response.status_code == 404 and response.json()["error"]["code"] in ("unknown_database", "not_found")
    for path in ("/v1/databases/..%2fother", "/v1/databases/%2Fetc%2Fpasswd", "/v1/databases/%2e%2e"):
        assert client.get(path).status_code == 404
    assert list(service.databases) == ["shop"] and model.calls == 0
    assert opened == []  # no database was opened for any of them
    assert (sha256(other_db), folder_state(other_db.parent)) == before


def test_database_names_come_from_file_stems(tmp_path):
    assert database_names([tmp_path / "a" / "shop.sqlite", tmp_path / "b.db"]) == {
        "shop": tmp_path / "a" / "shop.sqlite", "b": tmp_path / "b.db"}
    with pytest.raises(Exception, match="two databases are named 'shop'"):
        database_names([tmp_path / "a" / "shop.sqlite", tmp_path / "b" / "shop.db"])


def test_serving_never_changes_the_database(demo_db, make_service):
    before = folder_state(demo_db.parent)
    client = TestClient(create_app(make_service(Model("DELETE FROM orders"))), raise_server_exceptions=False)
    count = run_sql(client, "SELECT count(*) FROM orders").json()["rows"]
    assert_error(ask(client), 422, "unsafe_sql")
    assert_error(run_sql(client, "DROP TABLE orders"), 422, "unsafe_sql")
    assert run_sql(client, "SELECT count(*) FROM orders").json()["rows"] == count == [[2500]]
    assert folder_state(demo_db.parent) == before
