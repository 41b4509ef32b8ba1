"""Loading what a run trains: the base model (a registry GGUF de-quantized by transformers, a local
folder or a hub id), its tokenizer, and the LoRA / QLoRA / full-parameter setup of a recipe.

A run folder records where its base came from (``train.json``) and keeps the base's config and
tokenizer (``base/``), which llama.cpp's LoRA converter reads. (Merging an adapter into a hub-id
base still needs that base's weights, from the hub or its cache.)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import models
from ..errors import InputError, ModelError
from .recipes import Recipe


@dataclass(frozen=True)
class Base:
    name: str  # as the recipe gave it
    source: str  # the folder or hub id from_pretrained reads
    gguf_file: str | None = None  # the GGUF file inside ``source``, for a registry model
    gguf_path: str | None = None
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(name=self.name, source=self.source, gguf_file=self.gguf_file, gguf_path=self.gguf_path,
                    sha256=self.sha256)


def require_packages() -> None:
    import importlib.util

    missing = [name for name in ("torch", "transformers", "peft", "trl", "datasets")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(f"training needs {', '.join(missing)}: make setup-train (or pip install 'slimsql[train]')")


def has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def cpu_has_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX). Without either, torch
    emulates it: on an AVX2-only AMD EPYC, a 0.5B-sized linear layer ran at 18 GFLOP/s in bfloat16
    against 155 in float32, 2 threads (``python benchmarks/cpu_dtypes.py``)."""
    import torch

    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def training_dtype(recipe: Recipe) -> str:
    """The dtype a run computes in: the recipe's, except bfloat16 on a CPU that has no bfloat16
    arithmetic, which trains in float32 (same results up to rounding, several times faster)."""
    if recipe.model.dtype == "bfloat16" and not has_cuda() and not cpu_has_bfloat16():
        return "float32"
    return recipe.model.dtype


def dtype_note(recipe: Recipe) -> str | None:
    """One line when :func:`training_dtype` differs from the recipe's dtype, else None."""
    if training_dtype(recipe) == recipe.model.dtype:
        return None
    return (f"training in float32, not the recipe's {recipe.model.dtype}: this CPU has no bfloat16 arithmetic "
            f"(no AVX512-BF16 or AMX), where torch emulates it many times slower")


def num_layers(base: "Base") -> int | None:
    """The base's transformer layers, read from its config (no weights loaded); None if unknown."""
    try:
        from transformers import AutoConfig

        kwargs = {"gguf_file": base.gguf_file} if base.gguf_file else {}
        return int(AutoConfig.from_pretrained(base.source, **kwargs).num_hidden_layers)
    except Exception:  # unreadable here: the check happens when the model loads
        return None


def check_recipe(recipe: Recipe, base: "Base") -> None:
    """What can be checked of a recipe against its base before anything is written or loaded."""
    layers = num_layers(base)
    top = recipe.lora.top_layers if recipe.lora is not None else 0
    if layers is not None and top > layers:
        raise InputError(f"lora.top_layers must be between 1 and {layers} for {base.name}, got {top}")
    if recipe.cuda_only and has_cuda():
        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None:
            raise InputError(f"recipe {recipe.name} needs bitsandbytes (QLoRA, 8-bit optimizers): "
                             "pip install bitsandbytes")


def check_device(recipe: Recipe) -> None:
    """Refuse, in one line, a recipe this machine cannot run."""
    if recipe.cuda_only and not has_cuda():
        why = "4-bit QLoRA (bitsandbytes)" if recipe.method == "qlora" else f"the {recipe.training.optimizer} optimizer"
        raise InputError(f"recipe {recipe.name} needs a CUDA GPU for {why}; this machine has none: use a LoRA recipe "
                         f"such as qwen2.5-coder-0.5b/lora (slimsql train recipes lists them)")


def resolve_base(name: str) -> Base:
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(f"{name} is not a Hugging Face model folder (no config.json)")
        return Base(name=name, source=str(path))
    if path.suffix == ".gguf" or "/" not in name:  # a registry name or a GGUF file: de-quantized
        found = models.resolve(name)
        spec = found.spec
        return Base(name=found.name, source=str(found.path.parent), gguf_file=found.path.name,
                    gguf_path=str(found.path), sha256=spec.sha256 if spec else models.sha256_file(found.path))
    return Base(name=name, source=name)  # a hub repo id


def load_tokenizer(base: Base):
    from transformers import AutoTokenizer

    kwargs = {"gguf_file": base.gguf_file} if base.gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(base.source, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load the tokenizer of {base.name}: {str(err).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(base: Base, recipe: Recipe):
    """The base model in the run's dtype (:func:`training_dtype`; 4-bit NF4 for QLoRA)."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": getattr(torch, training_dtype(recipe)),
                              "attn_implementation": recipe.model.attn_implementation}
    if base.gguf_file:
        kwargs["gguf_file"] = base.gguf_file
    if recipe.method == "qlora":
        from transformers import BitsAndBytesConfig

        q = recipe.quantization
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=q.quant_type, bnb_4bit_use_double_quant=q.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, q.compute_dtype))
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}  # one GPU per process under accelerate
    try:
        model = AutoModelForCausalLM.from_pretrained(base.source, **kwargs)
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelError(f"cannot load {base.name}: {str(err).splitlines()[0]}") from None
    if base.gguf_file:  # de-quantized to plain float weights: nothing quantized is left to train around
        model.hf_quantizer, model.is_quantized = None, False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if not getattr(model.config, "architectures", None):  # the converters and loaders look for it
            model.config.architectures = [type(model).__name__]
    model.config.use_cache = False
    return model


def linear_names(model) -> list[str]:
    """The names of the model's linear modules inside its layers (what ``all-linear`` means)."""
    import torch

    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and ".layers." in f".{name}"})


def lora_config(recipe: Recipe, num_layers: int, linear: list[str] | None = None):
    """PEFT's LoraConfig for the recipe. ``all-linear`` is PEFT's shorthand, which PEFT does not
    combine with a layer selection: with ``top_layers`` it is spelled out as ``linear`` (the
    model's linear module names, :func:`linear_names`)."""
    from peft import LoraConfig

    lora = recipe.lora
    if lora.top_layers and not 0 < lora.top_layers <= num_layers:
        raise InputError(f"lora.top_layers must be between 1 and {num_layers} for this model, got {lora.top_layers}")
    layers = list(range(num_layers - lora.top_layers, num_layers)) if lora.top_layers else None
    targets: list[str] | str = list(lora.target_modules)
    if targets == ["all-linear"]:
        if layers is None:
            targets = "all-linear"
        elif linear:
            targets = linear
        else:
            raise InputError("lora.target_modules: all-linear with lora.top_layers needs the model's module names")
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                      task_type="CAUSAL_LM", bias="none",
                      layers_to_transform=layers, layers_pattern="layers" if layers else None)


def trainable(model, recipe: Recipe, adapter: Path | None = None):
    """The model with what the recipe trains made trainable: a new LoRA adapter, the adapter of
    an earlier run (``adapter``, to continue it), or every weight (full fine-tuning)."""
    if recipe.lora is None and adapter is None:  # full fine-tuning (SFT or GRPO)
        model.requires_grad_(True)
        return model
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

    if recipe.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=recipe.model.gradient_checkpointing)
    if adapter is not None:
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    if recipe.lora is None:
        raise InputError(f"recipe {recipe.name} has no lora section")
    return get_peft_model(model, lora_config(recipe, model.config.num_hidden_layers, linear_names(model)))


def count_parameters(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trained, total


def save_base(base: Base, tokenizer, model, folder: Path) -> None:
    """The base's config and tokenizer, for export (the converters read them) and for ``--from``."""
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    written = json.loads((folder / "config.json").read_text())
    if written.pop("quantization_config", None) is not None:  # the base itself is not quantized
        (folder / "config.json").write_text(json.dumps(written, indent=2))
    tokenizer.save_pretrained(folder)
