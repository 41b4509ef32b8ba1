"""llama.cpp through llama-cpp-python: the default, CPU-friendly backend.

The chat template is read from the GGUF file's own metadata and rendered with
llama-cpp-python's Jinja2 formatter. The prompt cache is llama.cpp's own: a prompt
that shares a prefix with the previous one (the schema, in every prompt style)
reuses the evaluated tokens in the KV cache, so a second question on the same
database only pays for its own tokens. (llama-cpp-python's LlamaRAMCache is not
used: its saved states carry the full logits array, which its capacity does not
count, and it grew past 20 GB over a Spider run.)
"""

from __future__ import annotations

import os
import time
from typing import Sequence

from .. import models
from ..errors import ModelError
from . import Candidate, GenerationConfig, Message


class LlamaCppBackend:
    name = "llama-cpp"

    def __init__(self, model: str | None = None, *, n_threads: int | None = None, n_ctx: int = 4096,
                 progress=None, on_load=None, **_):
        resolved = models.resolve(model, progress)
        try:
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError:
            raise ModelError("llama-cpp-python is not installed; install it with: pip install 'slimsql[llama]'") from None
        self.model_name = resolved.name
        self.model_path = resolved.path
        if on_load:
            on_load(resolved)
        start = time.perf_counter()
        try:
            self.llm = Llama(model_path=str(resolved.path), n_ctx=n_ctx, n_threads=n_threads or os.cpu_count(),
                             n_batch=512, verbose=False)
        except (ValueError, RuntimeError, OSError) as err:
            raise ModelError(f"llama.cpp cannot load {resolved.path}: {err}") from None
        self.load_seconds = time.perf_counter() - start
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelError(f"{resolved.path.name} carries no chat template; use an instruct/chat model")
        eos, bos = self.llm.token_eos(), self.llm.token_bos()
        text = self.llm._model.token_get_text  # the same lookup Llama uses for its own formatter
        self._format = Jinja2ChatFormatter(template=template, eos_token=text(eos) if eos != -1 else "",
                                           bos_token=text(bos) if bos != -1 else "", stop_token_ids=[eos])

    def generate(self, messages: Sequence[Message], config: GenerationConfig) -> list[Candidate]:
        formatted = self._format(messages=list(messages))
        stop = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop] if formatted.stop else []
        runs = 1 if config.temperature == 0 else config.n
        out = []
        for i in range(runs):
            start = time.perf_counter()
            try:
                response = self.llm.create_completion(
                    formatted.prompt, max_tokens=config.max_tokens, temperature=config.temperature,
                    top_p=config.top_p, repeat_penalty=1.0, stop=stop,
                    seed=None if config.seed is None else config.seed + i,
                )
            except ValueError as err:  # e.g. the prompt does not fit the context window
                raise ModelError(f"llama.cpp refused the prompt: {err}") from None
            usage = response["usage"]
            out.append(Candidate(text=response["choices"][0]["text"], prompt_tokens=usage["prompt_tokens"],
                                 completion_tokens=usage["completion_tokens"],
                                 seconds=time.perf_counter() - start))
        return out * config.n if runs == 1 else out
