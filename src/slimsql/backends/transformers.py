"""Hugging Face transformers: the path the reference model cards use.

``model`` may be a registry name or a ``.gguf`` path (the same weights as the
llama.cpp backend, de-quantized to float by transformers' GGUF loader; this is
also how fine-tuning gets a trainable model), or a hub repo id / local folder
in the usual transformers layout, or the name of a local model exported by
``slimsql train export`` (a merged GGUF, or a safetensors folder). The chat
template is the tokenizer's own (``apply_chat_template``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

from .. import models
from ..errors import ModelError
from . import Candidate, GenerationConfig, Message


class TransformersBackend:
    name = "transformers"

    def __init__(self, model: str | None = None, *, n_threads: int | None = None, dtype: str = "float32",
                 progress=None, on_load=None, **_):
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise ModelError("the transformers backend needs: pip install 'slimsql[transformers]'") from None
        self._torch = torch
        torch.set_num_threads(n_threads or os.cpu_count() or 1)
        target = (model or models.DEFAULT_MODEL).strip()
        kwargs: dict = {}
        if target.lower().endswith(".gguf") or "/" not in target or Path(target).is_file():
            resolved = models.resolve(target, progress)  # registry name, GGUF file or local model, verified
            if resolved.kind == "gguf-lora":
                raise ModelError(f"{resolved.name} is a llama.cpp LoRA GGUF; for the transformers backend export "
                                 f"the run as safetensors (slimsql train export RUN --format safetensors)")
            if resolved.kind == "safetensors":  # a local export in the Hugging Face layout
                source = str(resolved.path)
            else:
                source, kwargs["gguf_file"] = str(resolved.path.parent), resolved.path.name
            self.model_name = resolved.name
        else:
            source, self.model_name = target, target  # hub repo id or a local transformers folder
        if on_load:
            on_load(models.ModelFile(name=self.model_name, path=Path(source)))
        start = time.perf_counter()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype), **kwargs)
        except (OSError, ValueError, RuntimeError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ModelError(f"transformers cannot load {target}: {reason}") from None
        self.model.eval()
        self.load_seconds = time.perf_counter() - start

    @classmethod
    def wrap(cls, model, tokenizer, name: str) -> "TransformersBackend":
        """A backend over a model already in memory (e.g. one being fine-tuned, scored on its dev
        slice between steps)."""
        import torch

        backend = cls.__new__(cls)
        backend._torch, backend.model, backend.tokenizer, backend.model_name = torch, model, tokenizer, name
        backend.load_seconds = 0.0
        return backend

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_tokens(self, messages: Sequence[Message]) -> list[int]:
        text = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def logprobs(self, messages: Sequence[Message], continuation: Sequence[int] = ()):
        """Teacher-forced log-probabilities, as the llama.cpp backend's :meth:`logprobs`: one
        row (numpy, float32) per position from the prompt's last token on."""
        torch = self._torch
        tokens = self.prompt_tokens(messages)
        ids = torch.tensor([tokens + list(continuation)], device=self.model.device)
        with torch.inference_mode():
            logits = self.model(ids).logits[0, len(tokens) - 1:].float()
        return torch.log_softmax(logits, dim=-1).cpu().numpy()

    def generate(self, messages: Sequence[Message], config: GenerationConfig) -> list[Candidate]:
        if config.grammar is not None:
            raise ModelError("the transformers backend cannot constrain decoding to a grammar; "
                             "use --no-grammar or the llama-cpp backend")
        torch = self._torch
        text = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        inputs = self.tokenizer(text, return_tensors="pt", add_special_tokens=False).to(self.model.device)
        sample = config.temperature > 0
        wanted = config.n - config.skip
        runs = wanted if sample else 1
        if config.seed is not None:  # after a skip, not the stream the earlier call drew its samples from
            torch.manual_seed(config.seed + config.skip)
        start = time.perf_counter()
        with torch.inference_mode():
            output = self.model.generate(
                **inputs, max_new_tokens=config.max_tokens, do_sample=sample, num_return_sequences=runs,
                pad_token_id=self.tokenizer.eos_token_id if self.tokenizer.pad_token_id is None
                else self.tokenizer.pad_token_id,
                **({"temperature": config.temperature, "top_p": config.top_p} if sample else
                   {"temperature": None, "top_p": None, "top_k": None}),
            )
        seconds = (time.perf_counter() - start) / runs
        prompt_len = inputs["input_ids"].shape[1]
        out = []
        for row in output:
            new = row[prompt_len:]
            eos = self.tokenizer.eos_token_id
            count = int((new != eos).sum()) if eos is not None else len(new)
            out.append(Candidate(text=self.tokenizer.decode(new, skip_special_tokens=True),
                                 prompt_tokens=prompt_len, completion_tokens=count, seconds=seconds))
        return out * wanted if runs == 1 else out
