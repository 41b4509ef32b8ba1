"""Training recipes: one commented YAML file per model and method, read into one dataclass.

A recipe file lives at ``recipes/<model>/<method>.yaml`` beside this module (name
``<model>/<method>``), or anywhere as a path. Its sections map one to one onto the
dataclasses below; a key that no dataclass has is an error that names the key and the
closest known one, so a misspelt ``learning_rte`` never silently trains with a default.
Command-line flags override single fields (:func:`override`).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..prompts import DEFAULT_STYLE, get_style

RECIPES_DIR = Path(__file__).with_name("recipes")
METHODS = ("lora", "qlora", "full", "grpo")
SELECTIONS = ("all", "mixed")  # grpo.select
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "sgd")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelSection:
    #: a registry name (its GGUF weights de-quantized by transformers), a .gguf path,
    #: a local Hugging Face folder or a hub repo id
    base: str = "qwen2.5-coder-0.5b"
    dtype: str = "bfloat16"  # the dtype of the frozen weights and the compute
    max_length: int = 1024  # prompt + completion tokens; longer examples are dropped and counted
    gradient_checkpointing: bool = False
    attn_implementation: str = "sdpa"


@dataclass(frozen=True)
class DataSection:
    style: str = DEFAULT_STYLE  # the prompt style, the same rendering inference uses
    samples: int = 1  # example values per text column in the schema (as the inference default)
    prune_tokens: int = 0  # above this many schema tokens show only the tables the question needs
    eval_examples: int = 50  # held-out dev slice scored by execution during training (0 = none)
    #: where the dev slice comes from: ``holdout`` (examples held out of the training data, never
    #: trained on) or ``dev`` (the benchmark's dev split, when the data names one; then the final
    #: evaluation on that split is no longer independent of the checkpoint choice)
    eval_split: str = "holdout"
    max_examples: int = 0  # train on at most this many examples (0 = all)
    seed: int = 0  # which subset, and the shuffle
    #: teach SQLite's double-quoted strings (``= "france"``, common in Spider's gold) as the
    #: single-quoted strings they are, when the result stays the same (standard SQL)
    quote_strings: bool = True


@dataclass(frozen=True)
class LoraSection:
    r: int = 16
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    #: train only the top N transformer layers (0 = all): the backward pass then stops early
    top_layers: int = 0


@dataclass(frozen=True)
class QuantizationSection:
    """bitsandbytes 4-bit loading (QLoRA); CUDA only."""

    bits: int = 4
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "bfloat16"


@dataclass(frozen=True)
class TrainingSection:
    learning_rate: float = 2e-4
    scheduler: str = "cosine"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    epochs: float = 1.0
    max_steps: int = 0  # 0 = run the epochs
    batch_size: int = 1
    grad_accum: int = 1
    optimizer: str = "adamw_torch"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    packing: bool = False
    #: loss on the completion (the SQL) only, the prompt tokens masked out of the labels
    completion_only: bool = True
    logging_steps: int = 10
    eval_steps: int = 0  # score the dev slice every N steps (0 = at the end only)
    save_steps: int = 100  # checkpoint every N steps (resumable)
    save_total_limit: int = 3
    keep_best: bool = True  # keep the checkpoint with the best execution accuracy
    seed: int = 0


@dataclass(frozen=True)
class GrpoSection:
    num_generations: int = 4  # completions per prompt; the advantage is relative within them
    max_completion_length: int = 128
    temperature: float = 0.8
    beta: float = 0.0  # KL penalty against the reference model
    execution_weight: float = 1.0  # reward: execution match against the gold result
    format_weight: float = 0.2  # reward: the completion is exactly one SQL statement, nothing else
    timeout: float = 5.0  # seconds per query while scoring a completion
    #: which prompts to train on: ``all``, or ``mixed``: before training, sample num_generations
    #: completions per prompt with the starting model and keep the prompts whose execution rewards
    #: differ (a group that is all right or all wrong has no advantage, so no gradient)
    select: str = "all"
    #: with ``mixed``: screen at most this many prompts (0: four times data.max_examples)
    screen_limit: int = 0


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str = ""
    method: str = "lora"
    #: what this recipe reproduces (the reference system), for the record
    reference: str = ""
    #: needs a CUDA GPU (QLoRA, 8-bit optimizers, bf16 of big models): refused elsewhere
    requires_cuda: bool = False
    #: the recipe a GRPO recipe expects to start from (``--from`` a run of it)
    after: str = ""
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    lora: LoraSection | None = None
    quantization: QuantizationSection | None = None
    training: TrainingSection = field(default_factory=TrainingSection)
    grpo: GrpoSection | None = None

    def __post_init__(self) -> None:
        _one_of("method", self.method, METHODS)
        _one_of("training.scheduler", self.training.scheduler, SCHEDULERS)
        _one_of("training.optimizer", self.training.optimizer, OPTIMIZERS)
        _one_of("model.dtype", self.model.dtype, DTYPES)
        _one_of("data.eval_split", self.data.eval_split, ("holdout", "dev"))
        get_style(self.data.style)
        if self.method in ("lora", "qlora") and self.lora is None:
            raise InputError(f"recipe {self.name}: method {self.method} needs a lora section")
        if self.method == "qlora" and self.quantization is None:
            raise InputError(f"recipe {self.name}: method qlora needs a quantization section")
        if self.method != "qlora" and self.quantization is not None:
            raise InputError(f"recipe {self.name}: a quantization section is only for method qlora")
        if self.method == "grpo" and self.grpo is None:
            raise InputError(f"recipe {self.name}: method grpo needs a grpo section")
        if self.quantization is not None:
            _one_of("quantization.quant_type", self.quantization.quant_type, ("nf4", "fp4"))
            if self.quantization.bits != 4:
                raise InputError(f"recipe {self.name}: quantization.bits must be 4 (QLoRA), "
                                 f"got {self.quantization.bits}")
        for key in ("batch_size", "grad_accum"):
            if getattr(self.training, key) < 1:
                raise InputError(f"recipe {self.name}: training.{key} must be at least 1")
        if self.training.learning_rate <= 0:
            raise InputError(f"recipe {self.name}: training.learning_rate must be positive")
        if self.model.max_length < 16:
            raise InputError(f"recipe {self.name}: model.max_length must be at least 16")
        # the packed sequences' 4-D boolean mask is honoured by sdpa only (eager would add it, flash drops it)
        _one_of("model.attn_implementation", self.model.attn_implementation, ("sdpa",))
        if self.training.packing and not self.training.completion_only:
            raise InputError(f"recipe {self.name}: training.packing shares the prompt among examples; "
                             "it needs training.completion_only: true")
        if self.lora is not None and self.lora.top_layers < 0:
            raise InputError(f"recipe {self.name}: lora.top_layers must be 0 (all layers) or more")
        if self.grpo is not None:
            if self.grpo.num_generations < 2:
                raise InputError(f"recipe {self.name}: grpo.num_generations must be at least 2 "
                                 "(the advantage compares completions of one prompt)")
            # TRL generates batch_size x grad_accum completions per step, whole groups only
            if self.effective_batch % self.grpo.num_generations:
                raise InputError(f"recipe {self.name}: training.batch_size x training.grad_accum "
                                 f"({self.effective_batch}) must be a multiple of grpo.num_generations "
                                 f"({self.grpo.num_generations})")
            _one_of("grpo.select", self.grpo.select, SELECTIONS)
            if self.grpo.select == "mixed" and not (self.data.max_examples or self.grpo.screen_limit):
                raise InputError(f"recipe {self.name}: grpo.select mixed needs data.max_examples (how many "
                                 f"prompts to keep) or grpo.screen_limit (how many to screen)")
            if self.grpo.max_completion_length >= self.model.max_length:
                raise InputError(f"recipe {self.name}: grpo.max_completion_length must be below "
                                 "model.max_length (which counts the prompt too)")

    @property
    def cuda_only(self) -> bool:
        """QLoRA (bitsandbytes) and the 8-bit / paged optimizers run on CUDA only."""
        return self.requires_cuda or self.method == "qlora" or "8bit" in self.training.optimizer

    @property
    def effective_batch(self) -> int:
        return self.training.batch_size * self.training.grad_accum

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")


_SECTIONS = {"model": ModelSection, "data": DataSection, "lora": LoraSection,
             "quantization": QuantizationSection, "training": TrainingSection, "grpo": GrpoSection}


def _build(cls: type, values: Any, where: str) -> Any:
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise InputError(f"{where}: expected a mapping of keys, got {type(values).__name__}")
    known = {f.name: f for f in fields(cls)}
    out = {}
    for key, value in values.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; keys: {', '.join(known)}"
            raise InputError(f"{where}: unknown key {key!r}{hint}")
        out[key] = _coerce(known[key].type, value, f"{where}.{key}")
    return cls(**out)


def _coerce(annotation: Any, value: Any, where: str) -> Any:
    kind = str(annotation)
    if "tuple" in kind:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise InputError(f"{where}: expected a list of names")
        return tuple(value)
    if kind.startswith("bool"):
        if not isinstance(value, bool):
            raise InputError(f"{where}: expected true or false, got {value!r}")
        return value
    if kind.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{where}: expected a whole number, got {value!r}")
        return value
    if kind.startswith("float"):
        number = value
        if isinstance(value, str):  # PyYAML reads 2e-4 (no dot) as text, not a number
            try:
                number = float(value)
            except ValueError:
                pass
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise InputError(f"{where}: expected a number, got {value!r}")
        return float(number)
    if kind.startswith("str"):
        if not isinstance(value, str):
            raise InputError(f"{where}: expected text, got {value!r}")
        return value
    return value


def from_dict(data: dict[str, Any], name: str) -> Recipe:
    """A recipe from parsed YAML; every key is checked."""
    if not isinstance(data, dict):
        raise InputError(f"recipe {name}: expected a mapping at the top level")
    top = {f.name for f in fields(Recipe)} - {"name"}
    values: dict[str, Any] = {"name": name}
    for key, value in data.items():
        if key in _SECTIONS:
            values[key] = _build(_SECTIONS[key], value, f"recipe {name}: {key}")
        elif key in top:
            values[key] = _coerce("bool" if key == "requires_cuda" else "str", value, f"recipe {name}: {key}")
        else:
            close = difflib.get_close_matches(str(key), sorted(top | set(_SECTIONS)), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"recipe {name}: unknown key {key!r}{hint}")
    return Recipe(**values)


def available() -> list[str]:
    """Names of the recipes shipped with slimsql (``model/method``)."""
    return sorted(str(p.relative_to(RECIPES_DIR).with_suffix("")) for p in RECIPES_DIR.glob("*/*.yaml"))


def path_of(name: str) -> Path:
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise InputError(f"recipe file not found: {name}")
        return candidate
    shipped = RECIPES_DIR / f"{name}.yaml"
    if not shipped.is_file():
        close = difflib.get_close_matches(name, available(), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise InputError(f"unknown recipe {name!r}{hint}; recipes: {', '.join(available())}")
    return shipped


def load(name: str) -> Recipe:
    """A shipped recipe by name (``qwen2.5-coder-0.5b/lora``) or a YAML file by path."""
    import yaml

    path = path_of(name)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise InputError(f"recipe {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    shipped = path.resolve().is_relative_to(RECIPES_DIR.resolve())
    label = str(path.resolve().relative_to(RECIPES_DIR.resolve()).with_suffix("")) if shipped else name
    return from_dict(data or {}, label)


def override(recipe: Recipe, **changes: Any) -> Recipe:
    """``recipe`` with single fields changed: ``override(r, **{"training.max_steps": 10})``;
    None values are ignored (a flag that was not given)."""
    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, value in changes.items():
        if value is None:
            continue
        section, _, name = key.partition(".")
        if name:
            sections.setdefault(section, {})[name] = value
        else:
            top[key] = value
    for section, values in sections.items():
        current = getattr(recipe, section, None)
        if section not in _SECTIONS:
            raise InputError(f"unknown recipe section {section!r}")
        if current is None:
            current = _SECTIONS[section]()
        assert is_dataclass(current)
        known = {f.name for f in fields(current)}
        unknown = set(values) - known
        if unknown:
            raise InputError(f"unknown recipe key(s): {', '.join(f'{section}.{k}' for k in sorted(unknown))}")
        top[section] = replace(current, **values)
    return replace(recipe, **top)
