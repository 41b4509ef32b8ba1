"""Any OpenAI-compatible chat-completions server: vLLM, llama.cpp's server,
llama-cpp-python's ``llama_cpp.server``, Ollama, or a hosted API.

Why a network backend in a project about small local models: the same
pipeline (prompt, candidates, execution, vote) can then be measured with a
model too big for the laptop, served by a GPU machine, without a second code
path. The server owns the chat template and sampling; this module only maps
:class:`GenerationConfig` onto request bodies and responses onto
:class:`Candidate` values.

Things servers disagree on, and how they are handled:

* ``n`` (several choices per request): vLLM honours it, llama.cpp's servers and
  Ollama return one choice. Missing candidates are asked for again, several
  requests in flight at once (each with its own seed); once a server has
  returned fewer choices than asked, later calls ask it for at most that many
  per request from the start.
* ``logprobs``: asked for (it feeds the vote's tie-break); a server that ignores
  it gives candidates without a log-probability, and one that rejects it gets
  the request again without it, and is not asked again.
* No server can follow a GBNF grammar through this API, so a config with one
  is refused rather than silently ignored.

Every failure (refused connection, timeout, an HTTP error status, a reply that
is not chat-completions JSON) is a one-line :class:`ModelError` naming the base
URL; the API key never appears in a message.
"""

from __future__ import annotations

import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence
from urllib.parse import urlsplit, urlunsplit

from ..errors import InputError, ModelError
from . import Candidate, GenerationConfig, Message

DEFAULT_BASE_URL = "http://127.0.0.1:8080/v1"
#: The seed of the first sampled request when the config gives none, as the llama-cpp backend's:
#: the same question gets the same candidates, on servers that honour seeds.
DEFAULT_SEED = 0x5EED
#: How much of a server's error message goes into ours.
MAX_DETAIL = 200


def _shown(url: str) -> str:
    """``url`` without any ``user:password@`` part, for messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _check_url(url: str) -> str:
    url = url.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018  (raises ValueError on a port that is not a number)
    except ValueError:
        ok = False
    if not ok:
        raise InputError(f"--base-url must be an http(s) URL such as {DEFAULT_BASE_URL}, got {url.split('@')[-1]!r}")
    return url


def _split(count: int, cap: int | None) -> list[int]:
    """``count`` choices as per-request sizes of at most ``cap`` (None: one request); none for none."""
    if count <= 0:
        return []
    if cap is None or count <= cap:
        return [count]
    return [cap] * (count // cap) + ([count % cap] if count % cap else [])


class OpenAIBackend:
    """Chat completions over HTTP. ``generate`` may be called from several threads at once."""

    name = "openai"
    #: ``generate`` may run in several threads at once (``slimsql eval --parallel``).
    concurrent = True

    def __init__(self, model: str | None = None, *, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 120.0, max_in_flight: int = 4, **_: Any):
        try:
            import httpx
        except ImportError:
            raise ModelError("the openai backend needs httpx; install it with: pip install 'slimsql[openai]'") from None
        self._httpx = httpx
        self.base_url = _check_url(base_url or os.environ.get("SLIMSQL_OPENAI_BASE_URL") or DEFAULT_BASE_URL)
        self._shown_url = _shown(self.base_url)
        key = api_key or os.environ.get("SLIMSQL_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY") or ""
        self._secrets = [s for s in (key, urlsplit(self.base_url).password) if s]
        if timeout <= 0:
            raise InputError(f"the openai backend's timeout must be positive, got {timeout}")
        self.timeout = float(timeout)
        self.max_in_flight = max(1, int(max_in_flight))
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        # One client for every thread: httpx.Client is thread-safe and keeps connections alive.
        limits = httpx.Limits(max_connections=max(10, 4 * self.max_in_flight))
        self._client = httpx.Client(base_url=self.base_url + "/", headers=headers, timeout=self.timeout,
                                    limits=limits)
        self._lock = threading.Lock()
        #: the most choices this server has returned for one request, once it returned fewer than asked
        self._choice_cap: int | None = None
        self._logprobs = True  # cleared when the server rejects ``logprobs``
        self.load_seconds = 0.0
        start = time.perf_counter()
        self.model_name = model or self._first_model()
        self.load_seconds = time.perf_counter() - start

    # -- the public interface ----------------------------------------------------

    def generate(self, messages: Sequence[Message], config: GenerationConfig) -> list[Candidate]:
        if config.grammar is not None:
            raise ModelError("the openai backend cannot follow a decoding grammar; leave --grammar off")
        seed = DEFAULT_SEED if config.seed is None else config.seed
        if config.temperature == 0:  # greedy: every candidate would be the same, so ask once
            return self._request(messages, config, n=1, temperature=0.0, seed=seed) * (config.n - config.skip)
        greedy = 1 if config.greedy_first and config.skip == 0 else 0
        wanted = config.n - config.skip - greedy
        jobs: list[tuple[int, float, int]] = [(1, 0.0, seed)] if greedy else []  # (n, temperature, seed)
        sampled: list[Candidate] = []
        greedy_out: list[Candidate] = []
        # one seed per request; after a skip, past the seeds the earlier call's requests took
        first_seed = seed + max(1, config.skip)
        seeds = iter(range(first_seed, first_seed + 1_000_000))
        with ThreadPoolExecutor(max_workers=self.max_in_flight) as pool:
            while True:
                jobs += [(size, config.temperature, next(seeds))
                         for size in _split(wanted - len(sampled), self._choice_cap)]
                futures = [(pool.submit(self._request, messages, config, n=n, temperature=t, seed=s), n, t)
                           for n, t, s in jobs]
                got = 0
                for future, asked, temperature in futures:
                    out = future.result()
                    if temperature == 0:
                        greedy_out = out[:1]
                        continue
                    got += len(out)
                    sampled += out
                    if len(out) < asked:
                        with self._lock:  # learn the server's limit, so later calls ask for it directly
                            self._choice_cap = min(self._choice_cap or asked, max(1, len(out)))
                if len(sampled) >= wanted:
                    break
                if got == 0:
                    raise ModelError(f"the server at {self._shown_url} returned no choices")
                jobs = []
        if greedy and not greedy_out:
            raise ModelError(f"the server at {self._shown_url} returned no choices")
        return greedy_out + sampled[:wanted]

    def close(self) -> None:
        self._client.close()

    # -- HTTP --------------------------------------------------------------------

    def _first_model(self) -> str:
        """The first model the server lists: what a single-model server (llama.cpp, vLLM) serves."""
        data = self._call("GET", "models")
        try:
            return str(data["data"][0]["id"])
        except (KeyError, IndexError, TypeError):
            raise ModelError(f"the server at {self._shown_url} lists no models at /models; give one with --model") \
                from None

    def _request(self, messages: Sequence[Message], config: GenerationConfig, *, n: int, temperature: float,
                 seed: int) -> list[Candidate]:
        body: dict[str, Any] = {"model": self.model_name, "messages": [dict(m) for m in messages],
                                "max_tokens": config.max_tokens, "temperature": temperature, "seed": seed,
                                "stream": False}
        if n > 1:
            body["n"] = n
        if temperature > 0:
            body["top_p"] = config.top_p
        if self._logprobs:
            body["logprobs"] = True
        start = time.perf_counter()
        try:
            data = self._call("POST", "chat/completions", body)
        except _Rejected as err:
            if "logprobs" not in body or "logprob" not in err.detail.lower():
                raise err.error from None
            self._logprobs = False  # this server rejects logprobs: never ask it again
            body.pop("logprobs")
            data = self._call("POST", "chat/completions", body)
        return self._candidates(data, time.perf_counter() - start)

    def _candidates(self, data: Any, seconds: float) -> list[Candidate]:
        try:
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            texts = [c["message"].get("content") or "" for c in choices]
        except (KeyError, TypeError, AttributeError):
            raise ModelError(f"the server at {self._shown_url} sent a reply without chat-completion choices") \
                from None
        usage = data.get("usage") or {}
        prompt = _int(usage.get("prompt_tokens"))
        total = _int(usage.get("completion_tokens"))
        chars = sum(len(t) for t in texts) or 1
        out = []
        for choice, text in zip(choices, texts):
            tokens = _token_logprobs(choice.get("logprobs"))
            if tokens is not None:
                completion = len(tokens)
            elif len(choices) == 1:
                completion = total
            else:  # usage counts all choices together: share it out by length
                completion = round(total * len(text) / chars)
            out.append(Candidate(text=text, prompt_tokens=prompt, completion_tokens=completion,
                                 seconds=seconds / max(1, len(choices)),
                                 logprob=round(math.fsum(tokens), 4) if tokens else None,
                                 truncated=choice.get("finish_reason") == "length"))
        return out

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        httpx = self._httpx
        where = f"the server at {self._shown_url}"
        try:
            response = self._client.request(method, path, json=body)
        except httpx.TimeoutException:
            raise ModelError(f"{where} did not answer /{path} within {self.timeout:g} s") from None
        except httpx.ConnectError:
            raise ModelError(f"cannot connect to {where} (is it running? see --base-url)") from None
        except httpx.HTTPError as err:
            raise ModelError(f"{where} failed on /{path}: {self._clean(type(err).__name__)}") from None
        if response.status_code >= 400:
            detail = self._clean(_error_detail(response))
            error = ModelError(f"{where} answered HTTP {response.status_code} to /{path}"
                               + (f": {detail}" if detail else ""))
            raise _Rejected(error, detail)
        try:
            return response.json()
        except ValueError:
            raise ModelError(f"{where} sent a reply to /{path} that is not JSON "
                             f"(HTTP {response.status_code})") from None

    def _clean(self, text: str) -> str:
        """One short line, with no secret in it (a server may echo a header back)."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        text = " ".join(text.split())
        return text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL - 3] + "..."


class _Rejected(ModelError):
    """An HTTP error status: its one-line ModelError, and the server's own message."""

    def __init__(self, error: ModelError, detail: str):
        super().__init__(str(error))
        self.error, self.detail = error, detail


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _token_logprobs(logprobs: Any) -> list[float] | None:
    """Per-token log-probabilities of one choice (chat format ``{"content": [{"logprob": ..}]}``)."""
    if not isinstance(logprobs, dict) or not isinstance(logprobs.get("content"), list):
        return None
    values = [t.get("logprob") for t in logprobs["content"] if isinstance(t, dict)]
    if not values or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values]


def _error_detail(response: Any) -> str:
    """The server's error message: OpenAI's ``{"error": {"message"}}``, vLLM's ``{"message"}``,
    FastAPI's ``{"detail"}``, or the start of the body."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:MAX_DETAIL]
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("message", "detail", "error"):
            if data.get(key):
                return str(data[key])
    return str(data)[:MAX_DETAIL]
