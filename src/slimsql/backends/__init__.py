"""Text generators behind one small interface.

A backend turns chat messages into ``n`` text candidates. It owns the chat
template (taken from the model itself, never assembled by string concatenation
here), sampling and any caching. Backends are found by name through the
``slimsql.backends`` entry-point group, the same way a third-party package
would register one::

    [project.entry-points."slimsql.backends"]
    my-backend = "my_package:MyBackend"

A backend class is constructed as ``cls(model=..., **options)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, TypedDict, runtime_checkable

from ..errors import InputError

DEFAULT_BACKEND = "llama-cpp"


class Message(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class Candidate:
    """One generated text with its cost."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    logprob: float | None = None  # summed log-probability of the completion's tokens, when known
    truncated: bool = False  # cut at a token limit before the model ended it


@dataclass(frozen=True)
class GenerationConfig:
    """How to sample. ``temperature == 0`` is greedy: the ``n`` candidates are then
    identical, so backends compute one and repeat it. With ``temperature > 0`` and
    ``greedy_first``, candidate 0 is the greedy completion and the other ``n - 1``
    are sampled, so a vote over ``n`` candidates never does worse for lack of the
    model's single best guess.

    ``skip``: the first ``skip`` of the ``n`` candidates were made by an earlier call
    (a vote in stages, :mod:`slimsql.infer.pipeline`); make only the other
    ``n - skip``, each as it is made among all ``n``: the greedy one is candidate 0,
    so a call with a skip makes samples only, and a backend that seeds each
    candidate gives candidate ``i`` the seed it has in one call for all ``n``."""

    n: int = 1
    temperature: float = 0.0
    seed: int | None = None
    max_tokens: int = 256
    top_p: float = 0.95
    greedy_first: bool = True
    #: a GBNF grammar every candidate must follow (schema-constrained decoding); None = free text.
    #: Built per question by :mod:`slimsql.infer.grammar`; backends that cannot honour it refuse it.
    grammar: str | None = None
    skip: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise InputError(f"--candidates must be at least 1, got {self.n}")
        if not 0 <= self.skip < self.n:
            raise InputError(f"a generation may skip 0 to n - 1 of its n = {self.n} candidates, not {self.skip}")
        if self.temperature < 0:
            raise InputError(f"--temperature must be 0 or more, got {self.temperature}")
        if self.max_tokens < 1:
            raise InputError(f"--max-tokens must be at least 1, got {self.max_tokens}")


#: Once the greedy candidate has ended, a sampled one may run to SAMPLE_FACTOR times its length
#: (at least SAMPLE_FLOOR tokens) before it is cut: one rambling sample must not hold up the others.
SAMPLE_FACTOR, SAMPLE_FLOOR = 3, 64


def sample_limit(greedy_tokens: int, max_tokens: int) -> int:
    """The most tokens a sampled candidate may have, once the greedy one has ``greedy_tokens``."""
    return min(max_tokens, max(SAMPLE_FLOOR, SAMPLE_FACTOR * greedy_tokens))


@runtime_checkable
class Backend(Protocol):
    name: str
    model_name: str

    def generate(self, messages: Sequence[Message], config: GenerationConfig) -> list[Candidate]: ...


#: A backend may also offer ``logprobs(messages, continuation=()) -> numpy array``: the
#: teacher-forced log-probabilities of the token after the prompt and after each token of
#: ``continuation`` (one row each, over the vocabulary). It is how two loads or backends of one
#: model are compared within a tolerance (tests, export agreement),
#: since their texts may part wherever the model is nearly undecided.

#: A backend class may set ``concurrent = True``: its ``generate`` may then be called from
#: several threads at once (``slimsql eval --parallel``). Without it, one call at a time.
def is_concurrent(backend: object) -> bool:
    """Whether ``backend`` (an object or a class) takes ``generate`` calls from several threads at once."""
    return getattr(backend, "concurrent", False) is True


#: The backends slimsql ships (also registered as entry points, so ``available`` lists them).
#: Loading one of these skips the scan of every installed package's metadata for entry
#: points, which every new ``slimsql ask`` process would otherwise pay.
BUILTIN = {
    "llama-cpp": "slimsql.backends.llama_cpp:LlamaCppBackend",
    "transformers": "slimsql.backends.transformers:TransformersBackend",
    "scripted": "slimsql.backends.scripted:ScriptedBackend",
    "openai": "slimsql.backends.openai:OpenAIBackend",
}


def available() -> dict[str, object]:
    """Entry points of every installed backend, by name."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group="slimsql.backends")}


def backend_class(name: str = DEFAULT_BACKEND) -> type:
    """The class registered as ``name`` (a built-in one, or a plugin's entry point), not yet
    constructed: what it can do (e.g. ``concurrent``) is known before a model loads."""
    if name in BUILTIN:
        from importlib.metadata import EntryPoint

        return EntryPoint(name=name, value=BUILTIN[name], group="slimsql.backends").load()
    found = available()
    if name not in found:
        raise InputError(f"unknown backend {name!r}; installed backends: {', '.join(sorted(found))}")
    return found[name].load()


def load_backend(name: str = DEFAULT_BACKEND, **options) -> Backend:
    """Construct the backend registered as ``name`` (a built-in one, or a plugin's entry point)."""
    return backend_class(name)(**options)
