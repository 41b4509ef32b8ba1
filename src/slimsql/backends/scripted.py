"""A backend that replays queued replies: for tests and for trying the pipeline without a model."""

from __future__ import annotations

from typing import Callable, Sequence

from ..errors import ModelError
from . import Candidate, GenerationConfig, Message

Reply = str | Sequence[str]


class ScriptedBackend:
    """Each ``generate`` call takes the next reply from the queue.

    A reply is one string (used for every candidate) or a list of the call's
    ``n - skip`` strings.
    ``replies`` may instead be a function ``(messages, config) -> reply``.
    Every call is recorded in ``calls`` as ``(messages, config)``.
    """

    name = "scripted"

    def __init__(self, replies: Sequence[Reply] | Callable[..., Reply] = (), model: str | None = None, **_):
        self.model_name = model or "scripted"
        self._script = replies if callable(replies) else list(replies)
        self.calls: list[tuple[list[Message], GenerationConfig]] = []

    def generate(self, messages: Sequence[Message], config: GenerationConfig) -> list[Candidate]:
        self.calls.append((list(messages), config))
        if callable(self._script):
            reply = self._script(messages, config)
        elif self._script:
            reply = self._script.pop(0)
        else:
            raise ModelError("the scripted backend has no replies left")
        texts = [reply] * (config.n - config.skip) if isinstance(reply, str) else list(reply)
        return [Candidate(text=t, completion_tokens=len(t.split())) for t in texts]
