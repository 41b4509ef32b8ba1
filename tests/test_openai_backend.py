"""The openai backend: request bodies and response mapping against a fake server in the test,
errors as one line, ``eval --parallel``; and end to end against a real ``llama_cpp.server``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest

from slimsql import cli
from slimsql.backends import GenerationConfig, is_concurrent, load_backend
from slimsql.backends.openai import OpenAIBackend
from slimsql.errors import InputError, ModelError
from slimsql.eval.store import load_records

from .conftest import require_model

KEY = "sk-test-very-secret-0123456789"
MESSAGES = [{"role": "system", "content": "You write SQLite."}, {"role": "user", "content": "How many?"}]


# -- a fake OpenAI-compatible server --------------------------------------------------------

class FakeServer:
    """A chat-completions server on 127.0.0.1 (stdlib only). ``reply(body)`` gives the status
    and the JSON (or raw bytes) of each completion; every request is recorded."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.models: list[str] = ["fake-model"]
        self.reply: Callable[[dict], tuple[int, Any]] = lambda body: (200, completion(body))
        self.delay = 0.0
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, payload: Any) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                fake._record(self, None)
                if self.path.endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in fake.models]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake._record(self, body)
                with fake._lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    time.sleep(fake.delay)
                    status, payload = fake.reply(body)
                finally:
                    with fake._lock:
                        fake.in_flight -= 1
                self._send(status, payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def _record(self, handler: BaseHTTPRequestHandler, body: dict | None) -> None:
        with self._lock:
            self.requests.append({"method": handler.command, "path": handler.path,
                                  "auth": handler.headers.get("Authorization"), "body": body})

    def completions(self) -> list[dict]:
        return [r["body"] for r in self.requests if r["method"] == "POST"]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def completion(body: dict, texts: list[str] | None = None, *, finish: str = "stop",
               logprobs: list[list[float]] | None = None, usage: dict | None = None) -> dict:
    """A chat-completions reply with ``body["n"]`` choices (or ``texts``)."""
    if texts is None:
        kind = "greedy" if body.get("temperature") == 0 else f"seed{body.get('seed')}"
        texts = [f"SELECT '{kind}-{i}'" for i in range(body.get("n", 1))]
    choices = []
    for i, text in enumerate(texts):
        choice: dict[str, Any] = {"index": i, "message": {"role": "assistant", "content": text},
                                  "finish_reason": finish}
        if logprobs is not None:
            choice["logprobs"] = {"content": [{"token": "x", "logprob": lp, "top_logprobs": []}
                                              for lp in logprobs[i]]}
        choices.append(choice)
    return {"id": "c", "object": "chat.completion", "model": body["model"], "choices": choices,
            "usage": usage if usage is not None else {"prompt_tokens": 42, "completion_tokens": 5 * len(texts)}}


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.close()


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    for name in ("SLIMSQL_OPENAI_API_KEY", "OPENAI_API_KEY", "SLIMSQL_OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def backend(server: FakeServer, **options) -> OpenAIBackend:
    return OpenAIBackend(base_url=server.url, **options)


# -- requests and responses ---------------------------------------------------------------

def test_model_from_the_servers_list_and_registered_by_name(server):
    server.models = ["served-one", "other"]
    b = load_backend("openai", base_url=server.url)
    assert isinstance(b, OpenAIBackend) and b.model_name == "served-one" and is_concurrent(b)
    assert server.requests[0]["method"] == "GET" and server.requests[0]["path"] == "/v1/models"
    named = backend(server, model="qwen")
    assert named.model_name == "qwen" and len(server.requests) == 1  # no second /models call
    named.generate(MESSAGES, GenerationConfig())
    assert server.completions()[-1]["model"] == "qwen"


def test_a_server_without_models_is_a_one_line_error(server):
    server.models = []
    with pytest.raises(ModelError, match="lists no models.*--model"):
        backend(server)


def test_greedy_asks_once_and_repeats(server):
    b = backend(server, model="m")
    out = b.generate(MESSAGES, GenerationConfig(n=3, temperature=0.0, max_tokens=99))
    assert [c.text for c in out] == ["SELECT 'greedy-0'"] * 3
    (body,) = server.completions()
    assert body["temperature"] == 0 and "n" not in body and "top_p" not in body
    assert body["max_tokens"] == 99 and body["messages"] == MESSAGES and body["stream"] is False
    assert body["logprobs"] is True


def test_greedy_first_then_sampled_with_n(server):
    b = backend(server, model="m")
    out = b.generate(MESSAGES, GenerationConfig(n=4, temperature=0.8, seed=7, top_p=0.9, max_tokens=50))
    assert [c.text for c in out] == ["SELECT 'greedy-0'"] + [f"SELECT 'seed8-{i}'" for i in range(3)]
    bodies = sorted(server.completions(), key=lambda b: b["temperature"])
    assert len(bodies) == 2  # a server that honours n: one greedy request, one for the samples
    greedy, sampled = bodies
    assert greedy["temperature"] == 0 and "n" not in greedy
    assert sampled["n"] == 3 and sampled["temperature"] == 0.8 and sampled["top_p"] == 0.9
    assert sampled["seed"] == 8 and sampled["max_tokens"] == 50 and greedy["seed"] == 7
    assert all(c.prompt_tokens == 42 and c.completion_tokens == 5 for c in out)


def test_a_later_stage_asks_for_samples_only_with_seeds_past_the_first_stages(server):
    b = backend(server, model="m")
    first = b.generate(MESSAGES, GenerationConfig(n=2, temperature=0.8, seed=7))
    rest = b.generate(MESSAGES, GenerationConfig(n=8, temperature=0.8, seed=7, skip=2, max_tokens=64))
    assert [c.text for c in first] == ["SELECT 'greedy-0'", "SELECT 'seed8-0'"]
    assert [c.text for c in rest] == [f"SELECT 'seed9-{i}'" for i in range(6)]  # no greedy one, no seed reused
    last = server.completions()[-1]
    assert last["n"] == 6 and last["temperature"] == 0.8 and last["max_tokens"] == 64


def test_one_candidate_greedy_first_is_one_request(server):
    out = backend(server, model="m").generate(MESSAGES, GenerationConfig(n=1, temperature=0.8))
    (body,) = server.completions()  # no empty request for zero samples
    assert body["temperature"] == 0 and [c.text for c in out] == ["SELECT 'greedy-0'"]


def test_without_greedy_first_every_candidate_is_sampled(server):
    out = backend(server, model="m").generate(MESSAGES, GenerationConfig(n=2, temperature=0.5, greedy_first=False))
    (body,) = server.completions()
    assert body["n"] == 2 and body["temperature"] == 0.5 and len(out) == 2


def test_fewer_choices_than_asked_get_concurrent_extra_requests(server):
    """llama.cpp's servers ignore n: the rest is asked for again, several requests at once,
    each with its own seed, at most max_in_flight at a time; later calls ask one per request."""
    server.delay = 0.15
    server.reply = lambda body: (200, completion(body, [f"SELECT {body['seed']}"]))
    b = backend(server, model="m", max_in_flight=3)
    out = b.generate(MESSAGES, GenerationConfig(n=6, temperature=0.8, seed=100))
    assert len(out) == 6 and out[0].text == "SELECT 100"
    sampled = [body for body in server.completions() if body["temperature"] > 0]
    seeds = [body["seed"] for body in sampled]
    assert len(set(seeds)) == len(seeds) == 5 and 100 not in seeds
    assert sorted(c.text for c in out[1:]) == sorted(f"SELECT {s}" for s in seeds)
    assert 1 < server.max_in_flight <= 3
    server.requests.clear()
    server.max_in_flight = 0
    assert len(b.generate(MESSAGES, GenerationConfig(n=4, temperature=0.8))) == 4
    assert [body.get("n", 1) for body in server.completions()] == [1, 1, 1, 1]  # learned: one per request


def test_a_server_returning_no_choices_is_an_error_not_a_loop(server):
    server.reply = lambda body: (200, completion(body, []))
    with pytest.raises(ModelError, match="returned no choices"):
        backend(server, model="m").generate(MESSAGES, GenerationConfig(n=3, temperature=0.8))


def test_usage_truncation_and_logprobs(server):
    server.reply = lambda body: (200, completion(body, ["SELECT name FROM"], finish="length",
                                                 logprobs=[[-0.5, -0.25, -1.0]],
                                                 usage={"prompt_tokens": 17, "completion_tokens": 3}))
    (c,) = backend(server, model="m").generate(MESSAGES, GenerationConfig(max_tokens=3))
    assert c.text == "SELECT name FROM" and c.truncated and c.logprob == -1.75
    assert c.prompt_tokens == 17 and c.completion_tokens == 3 and c.seconds > 0


def test_several_choices_count_their_own_tokens(server):
    server.reply = lambda body: (200, completion(body, ["SELECT 1", "SELECT 22"], logprobs=[[-1.0], [-0.5, -0.5]],
                                                 usage={"prompt_tokens": 9, "completion_tokens": 3}))
    out = backend(server, model="m").generate(MESSAGES, GenerationConfig(n=2, temperature=0.7, greedy_first=False))
    assert [(c.completion_tokens, c.logprob, c.truncated) for c in out] == [(1, -1.0, False), (2, -1.0, False)]


def test_no_logprobs_and_no_usage_are_tolerated(server):
    server.reply = lambda body: (200, {"choices": [{"message": {"content": None}, "finish_reason": "stop"}]})
    (c,) = backend(server, model="m").generate(MESSAGES, GenerationConfig())
    assert c.text == "" and c.logprob is None and c.prompt_tokens == 0 and not c.truncated


def test_a_server_that_rejects_logprobs_is_asked_again_without(server):
    def reply(body):
        if "logprobs" in body:
            return 400, {"error": {"message": "logprobs is not supported by this server", "type": "invalid"}}
        return 200, completion(body)

    server.reply = reply
    b = backend(server, model="m")
    (c,) = b.generate(MESSAGES, GenerationConfig())
    assert c.text == "SELECT 'greedy-0'" and c.logprob is None
    b.generate(MESSAGES, GenerationConfig())
    assert ["logprobs" in body for body in server.completions()] == [True, False, False]  # not asked again


def test_a_grammar_is_refused(server):
    with pytest.raises(ModelError, match="cannot follow a decoding grammar"):
        backend(server, model="m").generate(MESSAGES, GenerationConfig(grammar='root ::= "SELECT 1"'))
    assert server.completions() == []


def test_api_key_is_sent_from_argument_or_environment(server, monkeypatch):
    backend(server, api_key=KEY).generate(MESSAGES, GenerationConfig())
    assert {r["auth"] for r in server.requests} == {f"Bearer {KEY}"}
    server.requests.clear()
    monkeypatch.setenv("OPENAI_API_KEY", "from-openai-env")
    monkeypatch.setenv("SLIMSQL_OPENAI_API_KEY", "from-slimsql-env")
    monkeypatch.setenv("SLIMSQL_OPENAI_BASE_URL", server.url)
    OpenAIBackend()  # base URL from the environment too
    assert server.requests[0]["auth"] == "Bearer from-slimsql-env"
    monkeypatch.delenv("SLIMSQL_OPENAI_API_KEY")
    server.requests.clear()
    OpenAIBackend()
    assert server.requests[0]["auth"] == "Bearer from-openai-env"
    monkeypatch.delenv("OPENAI_API_KEY")
    server.requests.clear()
    OpenAIBackend()
    assert server.requests[0]["auth"] is None


def test_calls_from_several_threads_at_once(server):
    server.delay = 0.1
    b = backend(server, model="m")
    results: list[int] = []

    def ask() -> None:
        results.append(len(b.generate(MESSAGES, GenerationConfig(n=3, temperature=0.8))))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [3, 3, 3, 3] and server.max_in_flight > 1


# -- errors: one line, the base URL, never the key ---------------------------------------------

def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and "Traceback" not in text and KEY not in text
    assert err.__cause__ is None and err.__suppress_context__
    return text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refused_connection():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ModelError) as err:
        OpenAIBackend(base_url=url, api_key=KEY)
    assert url in one_line(err.value) and "cannot connect" in str(err.value)


def test_http_error_status_names_url_status_and_hides_the_key(server):
    # a server that echoes the Authorization header into its message must not leak the key
    server.reply = lambda body: (500, {"error": {"message": f"boom (got Bearer {KEY})"}})
    b = backend(server, model="m", api_key=KEY)
    with pytest.raises(ModelError) as err:
        b.generate(MESSAGES, GenerationConfig())
    text = one_line(err.value)
    assert server.url in text and "HTTP 500" in text and "boom" in text and "***" in text


def test_malformed_replies(server):
    b = backend(server, model="m")
    server.reply = lambda body: (200, b"<html>not json</html>")
    with pytest.raises(ModelError) as err:
        b.generate(MESSAGES, GenerationConfig())
    assert "not JSON" in one_line(err.value) and server.url in str(err.value)
    server.reply = lambda body: (200, {"result": "no choices key"})
    with pytest.raises(ModelError, match="without chat-completion choices"):
        b.generate(MESSAGES, GenerationConfig())


def test_timeout(server):
    server.delay = 1.0
    b = backend(server, model="m", timeout=0.2)
    with pytest.raises(ModelError) as err:
        b.generate(MESSAGES, GenerationConfig())
    assert "did not answer" in one_line(err.value) and "0.2 s" in str(err.value)


def test_bad_base_url_is_an_input_error():
    for url in ("localhost:8080/v1", "ftp://host/v1", "http://host:port/v1"):
        with pytest.raises(InputError, match="--base-url must be an http"):
            OpenAIBackend(base_url=url)


def test_without_httpx_the_message_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "httpx", None)
    with pytest.raises(ModelError, match=r"pip install 'slimsql\[openai\]'"):
        OpenAIBackend(base_url="http://127.0.0.1:1/v1")


# -- the command line and eval --parallel --------------------------------------------------

def jsonl_dataset(path: Path, count: int) -> Path:
    lines = [{"id": f"q{i}", "question": f"How many customers are there? ({i})",
              "sql": "SELECT COUNT(*) FROM customers"} for i in range(count)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_ask_and_eval_parallel_against_the_fake_server(server, demo_db, tmp_path, capsys):
    server.delay = 0.1
    server.reply = lambda body: (200, completion(body, ["```sql\nSELECT COUNT(*) FROM customers\n```"]))
    assert cli.main(["ask", "--db", str(demo_db), "--backend", "openai", "--base-url", server.url,
                     "--model", "qwen", "--preset", "fast", "--sql-only", "How many customers?"]) == 0
    assert "SELECT COUNT(*) FROM customers" in capsys.readouterr().out
    assert server.completions()[-1]["model"] == "qwen"
    server.requests.clear()
    data, out = jsonl_dataset(tmp_path / "q.jsonl", 6), tmp_path / "run"
    args = ["eval", "jsonl", "--data", str(data), "--db", str(demo_db), "--out", str(out), "--backend", "openai",
            "--base-url", server.url, "--preset", "fast", "--parallel", "3"]
    assert cli.main(args) == 0
    assert "EX 100.0%" in capsys.readouterr().out
    records = load_records(out / "predictions.jsonl")
    assert sorted(r.id for r in records) == [f"q{i}" for i in range(6)] and all(r.ex for r in records)
    assert json.loads((out / "config.json").read_text())["model"] == "fake-model"  # as the server named it
    assert 1 < server.max_in_flight <= 3
    server.requests.clear()
    assert cli.main(args) == 0  # resumed: nothing left to generate
    assert server.completions() == []


def test_parallel_needs_a_concurrent_backend(demo_db, tmp_path, capsys):
    data = jsonl_dataset(tmp_path / "q.jsonl", 2)
    code = cli.main(["eval", "jsonl", "--data", str(data), "--db", str(demo_db), "--out", str(tmp_path / "run"),
                     "--backend", "scripted", "--parallel", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --parallel 2 needs a backend")
    assert "scripted" in err[0]
    from slimsql import infer
    from slimsql.backends.scripted import ScriptedBackend
    from slimsql.eval import datasets
    from slimsql.eval.runner import RunConfig, run

    settings = infer.resolve("fast")
    config = RunConfig.for_settings(settings, dataset="jsonl", split="q", model="m", backend="scripted")
    with pytest.raises(InputError, match="--parallel 3 needs"):
        run(datasets.load_jsonl(data, db=demo_db), ScriptedBackend(), tmp_path / "lib", config, settings,
            show_progress=False, parallel=3)


# -- end to end: a real llama_cpp.server with the embedded model ---------------------------------

@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """``python -m llama_cpp.server`` serving the embedded model, shared by this module's tests."""
    require_model()
    pytest.importorskip("uvicorn", reason="llama_cpp.server needs slimsql[dev] (uvicorn, fastapi, ...)")
    from slimsql import models

    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(models.resolve(None).path),
                                 "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096",
                                 "--n_threads", str(os.cpu_count() or 1)],
                                stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=30)


@pytest.mark.model
def test_real_server_answers_and_samples(llama_server, tmp_path):
    import slimsql
    from slimsql.demo import build_demo

    db = build_demo(tmp_path / "shop.sqlite")
    with slimsql.connect(db, backend="openai", backend_options={"base_url": llama_server}, preset="fast") as conn:
        answer = conn.ask("How many customers are there?")
        assert answer.sql and len(answer.rows) == 1
        solution = conn.solve("How many customers are there?", n=3, temperature=0.8, max_tokens=64)
        assert len(solution.trace.trials) == 3


@pytest.mark.model
def test_real_server_from_the_cli(llama_server, demo_db):
    out = subprocess.run([sys.executable, "-m", "slimsql.cli", "ask", "--db", str(demo_db), "--backend", "openai",
                          "--base-url", llama_server, "--preset", "fast", "--json", "How many customers are there?"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["rows"]) == 1


@pytest.mark.model
def test_real_server_eval_parallel(llama_server, demo_db, tmp_path, capsys):
    data, out = jsonl_dataset(tmp_path / "q.jsonl", 2), tmp_path / "run"
    assert cli.main(["eval", "jsonl", "--data", str(data), "--db", str(demo_db), "--out", str(out),
                     "--backend", "openai", "--base-url", llama_server, "--preset", "fast", "--parallel", "2"]) == 0
    assert sorted(r.id for r in load_records(out / "predictions.jsonl")) == ["q0", "q1"]
