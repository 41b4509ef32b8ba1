"""A tiny, randomly initialised Qwen2 model with the real Qwen2.5 tokenizer, for training tests.

The tokenizer comes from the embedded model's GGUF file (so these tests need it, as CI has
it); the weights are random and small (2 layers, hidden size 64), so a training step takes
well under a second and the llama.cpp converters still see a real ``qwen2`` model.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import require_model


def require_training():
    """Skip (or, under SLIMSQL_REQUIRE_MODEL=1 as in CI, fail) without torch / PEFT / TRL."""
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
        import trl  # noqa: F401
    except ImportError:
        if os.environ.get("SLIMSQL_REQUIRE_MODEL"):
            pytest.fail("training needs: make setup-train (torch, transformers, peft, trl, datasets)")
        pytest.skip("training packages not installed (make setup-train)")
    require_model()


def build_tiny_qwen(folder: Path, *, seed: int = 0) -> Path:
    """Save a random tiny Qwen2ForCausalLM and the Qwen2.5 tokenizer in ``folder`` (HF layout)."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from slimsql import models

    gguf = models.resolve(models.DEFAULT_MODEL).path
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, rms_norm_eps=1e-6, rope_theta=1000000.0,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> Path:
    require_training()
    return build_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen") / "model")
