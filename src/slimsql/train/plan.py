"""``slimsql train plan``: a memory and time budget for a recipe, before a run.

Everything here is an **estimate**, derived on paper from the model's shape; nothing is
loaded or trained. How:

* **Architecture** without weights: a ``.gguf`` file's header (the registry models, read
  from the cached file: layer count, widths, heads, vocabulary, and the exact tensor
  shapes), a local folder's ``config.json`` (or one already in the Hugging Face cache), or
  a small built-in table of the reference models (there is no hub access here).
* **Memory**, as a VRAM budget table: frozen weights (2 bytes a parameter in bf16; NF4 is
  half a byte plus a float32 scale per 64 weights, double quantization shrinks the scales
  to 8 bits; embeddings, norms and the LM head are not quantized and PEFT's k-bit
  preparation makes them float32), LoRA adapters
  (``r * (in + out)`` per targeted module per trained layer, float32 as PEFT keeps them),
  gradients of the trainable parameters, optimizer state (AdamW: two moments in the
  parameter's dtype, as torch keeps them; 8-bit AdamW about 2 bytes a parameter; with
  several GPUs these rows divide under ZeRO / FSDP, not modelled), activations kept for the
  backward pass (per layer per token; with gradient checkpointing only each layer's input
  plus one layer being recomputed; with ``lora.top_layers`` only the trained layers keep
  any), the logits at the label positions (slimsql's trainer computes them there only),
  GRPO's generation KV cache, and a runtime overhead (the framework, on a GPU the CUDA
  context, plus allocator slack). Memory is sized for the longest example a recipe allows
  (``model.max_length``); the CPU figures were checked against a measured run (see
  ``ALLOCATOR_SLACK``).
* **Time**: floating-point operations per step (forward ``2 x parameters`` per token plus
  attention; the backward pass runs only through the layers from the lowest trained one up,
  at twice the forward for fully trained layers and once the forward for LoRA layers, whose
  frozen weights need input gradients but no weight gradients; checkpointing adds one more
  forward of those layers) divided by a **measured** matrix-multiply rate of this machine
  (a short benchmark in the recipe's dtype at the model's own ``[512 x hidden] x [hidden x
  intermediate]`` shape, once per process) times an efficiency factor for everything a
  matmul benchmark does not see (attention kernels, element-wise ops, the optimizer, Python).
  The CPU factor was set from a measured LoRA run of the 0.5B recipe (``EFFICIENCY``); the
  GPU one is nominal. GRPO adds generation: a prefill of the prompts and one small-batch
  forward per completion token, timed by the same benchmark at that batch's row count.
  :meth:`Plan.calibrate` takes a run's measured seconds per step (or tokens per second)
  and reports estimate against measurement. A machine busy with other work runs slower
  than a quiet one; the benchmark sees the load of the moment it runs.

A recipe that needs CUDA is still budgeted for a GPU on a machine without one; its time is
then "not measurable here".
"""

from __future__ import annotations

import json
import math
import mmap
import os
import re
import struct
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from ..errors import InputError
from .recipes import Recipe

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
#: NF4 / FP4: 4 bits a weight plus one float32 absmax per block of 64 weights; double
#: quantization stores those absmax as 8 bits with one float32 per 256 of them
BLOCK = 64
NF4_BYTES = 0.5 + 4 / BLOCK
NF4_DQ_BYTES = 0.5 + 1 / BLOCK + 4 / (BLOCK * 256)
#: the share of the measured matmul rate a training step reaches (attention, norms and other
#: element-wise kernels, the optimizer and Python are not in the benchmark). CPU: measured,
#: a LoRA step of qwen2.5-coder-0.5b/lora on 400-token examples took 2.3 s an example while
#: the benchmark gave 390 GFLOP/s (2-core AMD EPYC, AVX-512 BF16, quiet machine): 0.46.
#: CUDA: a nominal guess, not measured here.
EFFICIENCY = {"cpu": 0.45, "cuda": 0.4}
#: runtime memory outside the budget rows: torch, Python, tokenizer and data on a CPU; the
#: CUDA context and kernels on a GPU; plus ALLOCATOR_SLACK of the rows (freed blocks the
#: allocator keeps, the backward pass's temporaries). CPU: that 0.5B run peaked at 2.81 GiB
#: resident at 1024 tokens against 2.7 GiB estimated.
OVERHEAD = {"cpu": int(0.8 * GIB), "cuda": int(1.0 * GIB)}
ALLOCATOR_SLACK = {"cpu": 0.15, "cuda": 0.10}
#: label (completion) tokens per example when not told: SQL answers are short
DEFAULT_COMPLETION_TOKENS = 128
BENCH_ROWS = 512

LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Arch:
    """The shape of a decoder-only transformer (Llama / Qwen / Mistral layout)."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    head_dim: int = 0  # 0 = hidden / heads
    tied: bool = False  # the LM head shares the embedding matrix
    qkv_bias: bool = False
    source: str = ""  # where these numbers came from
    exact_params: int = 0  # the tensor shapes' own count, when known (a GGUF file)

    @property
    def dim(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def q_dim(self) -> int:
        return self.heads * self.dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.dim

    def modules(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear module of one layer."""
        h, i = self.hidden, self.intermediate
        return {"q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim),
                "o_proj": (self.q_dim, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def linear_params(self) -> int:
        """Weights of the linear modules of one layer (what QLoRA quantizes)."""
        return sum(a * b for a, b in self.modules().values())

    @property
    def layer_params(self) -> int:
        bias = self.q_dim + 2 * self.kv_dim if self.qkv_bias else 0
        return self.linear_params + bias + 2 * self.hidden  # two RMSNorm weights

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def head_params(self) -> int:
        return 0 if self.tied else self.vocab * self.hidden

    @property
    def params(self) -> int:
        computed = self.layers * self.layer_params + self.embedding_params + self.head_params + self.hidden
        return self.exact_params or computed

    def describe(self) -> str:
        return (f"{self.layers} layers, hidden {self.hidden}, intermediate {self.intermediate}, "
                f"{self.heads} heads ({self.kv_heads} kv), vocab {self.vocab}"
                f"{', tied head' if self.tied else ''}")


# The reference models' published configurations (config.json), for hub ids offline.
KNOWN: tuple[tuple[str, Arch], ...] = (
    (r"qwen2\.5-(coder-)?0\.5b", Arch("Qwen2.5-0.5B", 24, 896, 4864, 14, 2, 151936, tied=True, qkv_bias=True)),
    (r"qwen2\.5-(coder-)?1\.5b", Arch("Qwen2.5-1.5B", 28, 1536, 8960, 12, 2, 151936, tied=True, qkv_bias=True)),
    (r"qwen3-4b", Arch("Qwen3-4B", 36, 2560, 9728, 32, 8, 151936, head_dim=128, tied=True)),
    (r"mistral-7b", Arch("Mistral-7B", 32, 4096, 14336, 32, 8, 32000)),
    (r"smollm2-360m", Arch("SmolLM2-360M", 32, 960, 2560, 15, 5, 49152, tied=True)),
    (r"smollm2-135m", Arch("SmolLM2-135M", 30, 576, 1536, 9, 3, 49152, tied=True)),
)


# --------------------------------------------------------------------------- architecture


def architecture(base: str) -> Arch:
    """The architecture of a recipe's ``model.base`` without loading any weights."""
    path = Path(base).expanduser()
    if path.suffix.lower() == ".gguf" and path.is_file():
        return gguf_arch(path)
    if path.is_dir() and (path / "config.json").is_file():
        return config_arch(path / "config.json", str(path))
    from .. import models

    try:
        spec = models.find(base)
    except Exception:  # not a registry name
        spec = None
    if spec is not None:
        cached = models.cache_path(spec)
        if cached.is_file():
            return gguf_arch(cached)
        known = _known(spec.hub[0] if spec.hub else spec.name)
        if known is not None:
            return replace(known, source=f"built-in table ({spec.name} is not installed: its GGUF file "
                                         "may untie the LM head)")
    cached_config = _hub_cache_config(base)
    if cached_config is not None:
        return config_arch(cached_config, base)
    known = _known(base)
    if known is not None:
        return replace(known, source=f"built-in table ({known.name} config)")
    raise InputError(f"cannot tell the architecture of {base!r} offline: give model.base as a local "
                     "folder with a config.json, a .gguf file, or one of the reference models")


def _known(name: str) -> Arch | None:
    tail = name.lower().rsplit("/", 1)[-1]
    for pattern, arch in KNOWN:
        if re.search(pattern, tail):
            return arch
    return None


def _hub_cache_config(repo: str) -> Path | None:
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo, "config.json")
    except Exception:
        return None
    return Path(found) if isinstance(found, str) else None


def config_arch(path: Path, label: str) -> Arch:
    """An Arch from a Hugging Face ``config.json``."""
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
        config = config.get("text_config", config)
        heads = int(config["num_attention_heads"])
        return Arch(
            name=label,
            layers=int(config["num_hidden_layers"]),
            hidden=int(config["hidden_size"]),
            intermediate=int(config["intermediate_size"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            vocab=int(config["vocab_size"]),
            head_dim=int(config.get("head_dim") or 0),
            tied=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=bool(config.get("attention_bias", config.get("model_type") == "qwen2")),
            source=f"config.json ({path})",
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"cannot read the model configuration {path}: {err}") from None


# GGUF value types (the GGUF specification's numbering) and their struct formats
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


@lru_cache(maxsize=8)
def read_gguf_header(path: Path) -> tuple[dict[str, object], dict[str, tuple[int, ...]]]:
    """The metadata (arrays reduced to their length) and tensor shapes of a GGUF file.

    A direct reader of the header only: gguf.GGUFReader also parses every tokenizer string,
    which takes seconds on a Qwen vocabulary; this skips them."""
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != b"GGUF":
            raise InputError(f"not a GGUF model file: {path}")
        pos = 4

        def take(fmt: str):
            nonlocal pos
            value = struct.unpack_from("<" + fmt, data, pos)[0]
            pos += struct.calcsize("<" + fmt)
            return value

        def text() -> str:
            nonlocal pos
            size = take("Q")
            value = bytes(data[pos:pos + size]).decode("utf-8", "replace")
            pos += size
            return value

        def value(kind: int):
            nonlocal pos
            if kind in _SCALARS:
                return take(_SCALARS[kind])
            if kind == _STRING:
                return text()
            if kind == _ARRAY:
                item, count = take("I"), take("Q")
                if item in _SCALARS:
                    pos += count * struct.calcsize("<" + _SCALARS[item])
                else:
                    for _ in range(count):
                        value(item)
                return count
            raise InputError(f"unreadable GGUF metadata in {path} (value type {kind})")

        version = take("I")
        if version < 2:
            raise InputError(f"GGUF version {version} is too old to read: {path}")
        tensors, kvs = take("Q"), take("Q")
        meta: dict[str, object] = {}
        for _ in range(kvs):
            key = text()
            meta[key] = value(take("I"))
        shapes: dict[str, tuple[int, ...]] = {}
        for _ in range(tensors):
            name = text()
            dims = tuple(take("Q") for _ in range(take("I")))
            take("I"), take("Q")  # type, offset
            shapes[name] = dims
    return meta, shapes


def gguf_arch(path: Path) -> Arch:
    """An Arch from a GGUF file's metadata and tensor shapes (no weights are read)."""
    try:
        meta, shapes = read_gguf_header(Path(path))
    except (ValueError, OSError, struct.error, UnicodeDecodeError, IndexError) as err:  # empty, cut short, corrupt
        raise InputError(f"cannot read the GGUF header of {path}: {err}") from None
    arch = str(meta.get("general.architecture", ""))

    def get(key: str, default=None):
        found = meta.get(f"{arch}.{key}", default)
        if found is None:
            raise InputError(f"GGUF file {path} has no {arch}.{key}")
        return int(found)

    embed = shapes.get("token_embd.weight")
    vocab = int(embed[1]) if embed and len(embed) == 2 else get("vocab_size", meta.get("tokenizer.ggml.tokens"))
    heads = get("attention.head_count")
    hidden = get("embedding_length")
    return Arch(
        name=str(meta.get("general.name") or Path(path).stem),
        layers=get("block_count"),
        hidden=hidden,
        intermediate=get("feed_forward_length"),
        heads=heads,
        kv_heads=get("attention.head_count_kv", heads),
        vocab=vocab,
        head_dim=get("attention.key_length", 0),
        # transformers unties the head when the file has its own output tensor
        tied="output.weight" not in shapes,
        qkv_bias="blk.0.attn_q.bias" in shapes,
        source=f"GGUF metadata ({Path(path).name})",
        exact_params=sum(math.prod(dims) for dims in shapes.values()),
    )


# --------------------------------------------------------------------------- throughput


@lru_cache(maxsize=16)
def measure_throughput(dtype: str = "bfloat16", rows: int = BENCH_ROWS, inner: int = 896,
                       outer: int = 4864, device: str = "cpu", seconds: float = 0.3) -> float:
    """FLOP/s of ``[rows x inner] x [inner x outer]`` (a linear layer's shape) on ``device``
    in ``dtype``: a short benchmark, once per process and shape. It measures the machine as
    it is: other processes busy on the same cores lower the rate, as they will slow a run."""
    import time

    import torch

    kind = getattr(torch, dtype)
    x = torch.randn(rows, inner, dtype=kind, device=device)
    w = torch.randn(outer, inner, dtype=kind, device=device)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    with torch.inference_mode():
        for _ in range(2):
            torch.nn.functional.linear(x, w)
        sync()
        start, runs = time.perf_counter(), 0
        while True:
            torch.nn.functional.linear(x, w)
            runs += 1
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
    return 2.0 * rows * inner * outer * runs / elapsed


# --------------------------------------------------------------------------- the plan


class Row(NamedTuple):
    item: str
    bytes: int
    note: str = ""


@dataclass(frozen=True)
class Plan:
    """A recipe's memory budget and time estimate on one device (estimates, not measurements)."""

    recipe: str
    method: str
    device: str  # "cpu", "cuda", or "cuda (assumed: this machine has none)"
    arch: Arch
    rows: tuple[Row, ...]
    total_bytes: int
    available_bytes: int | None  # memory of the device it ran on (None: an assumed GPU)
    params: int
    trainable_params: int
    trained_layers: int
    micro_batch: int
    max_length: int
    tokens_per_example: int  # the length time is estimated at
    completion_tokens: int
    tokens_per_step: int
    examples_per_step: float  # GRPO: prompts; packed: examples of all sequences of a step
    flops_per_step: float
    throughput: float | None  # measured matmul FLOP/s (None: not measurable here)
    throughput_note: str
    efficiency: float
    seconds_per_step: float | None
    steps: int | None  # optimizer steps of the whole run, when known
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    measured_seconds_per_step: float | None = None

    @property
    def total(self) -> int:
        return self.total_bytes

    @property
    def seconds_per_example(self) -> float | None:
        if self.seconds_per_step is None:
            return None
        return self.seconds_per_step / max(1, self.examples_per_step)

    @property
    def examples_per_hour(self) -> float | None:
        each = self.seconds_per_example
        return None if not each else 3600.0 / each

    @property
    def total_seconds(self) -> float | None:
        if self.seconds_per_step is None or not self.steps:
            return None
        return self.seconds_per_step * self.steps

    @property
    def ratio(self) -> float | None:
        """measured / estimated seconds per step (above 1: the estimate was optimistic)."""
        if self.measured_seconds_per_step is None or not self.seconds_per_step:
            return None
        return self.measured_seconds_per_step / self.seconds_per_step

    def calibrate(self, seconds_per_step: float | None = None, *,
                  tokens_per_second: float | None = None) -> Plan:
        """This plan with a run's measured speed beside the estimate (one of the two)."""
        if (seconds_per_step is None) == (tokens_per_second is None):
            raise InputError("give the measured seconds per step or tokens per second (one of them)")
        if tokens_per_second is not None:
            if tokens_per_second <= 0:
                raise InputError("the measured tokens per second must be positive")
            seconds_per_step = self.tokens_per_step / tokens_per_second
        if seconds_per_step is None or seconds_per_step <= 0:
            raise InputError("the measured seconds per step must be positive")
        return replace(self, measured_seconds_per_step=float(seconds_per_step))


def calibrate(plan_: Plan, seconds_per_step: float | None = None, *,
              tokens_per_second: float | None = None) -> Plan:
    """``plan_`` with a run's measured speed beside its estimate (see :meth:`Plan.calibrate`)."""
    return plan_.calibrate(seconds_per_step, tokens_per_second=tokens_per_second)


def _device_memory(device: str) -> int | None:
    if device == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    import torch

    return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _targets(recipe: Recipe, arch: Arch, warnings: list[str]) -> list[str]:
    assert recipe.lora is not None
    names = list(recipe.lora.target_modules)
    if any(n in ("all-linear", "all_linear") for n in names):
        return list(LINEAR_MODULES)
    aliases = {"out_proj": "o_proj", "q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}
    found = []
    for name in names:
        name = aliases.get(name, name)
        if name in arch.modules():
            found.append(name)
        else:
            warnings.append(f"lora target {name!r} is not a linear module of this architecture: not counted")
    return found


def lora_params_per_layer(arch: Arch, targets: list[str], r: int) -> int:
    """LoRA A (r x in) and B (out x r) of each targeted module of one layer."""
    shapes = arch.modules()
    return sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)


def _activation_elements(arch: Arch) -> int:
    """Elements one layer keeps per token for its backward pass (bf16 or the compute dtype):
    the two norms' inputs and outputs, q/k/v before and after the rotary embedding, the
    attention output, the MLP's gate, up, activation and product, the residual sums."""
    h, q, kv, i = arch.hidden, arch.q_dim, arch.kv_dim, arch.intermediate
    return 6 * h + 2 * q + 4 * kv + q + 4 * i


def _layer_flops(arch: Arch, tokens: int) -> float:
    """Forward FLOPs of one layer over a causal sequence of ``tokens``."""
    return 2.0 * arch.linear_params * tokens + 2.0 * tokens * tokens * arch.q_dim


def _fmt_params(n: float) -> str:
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(int(n))


def _cpu_bfloat16() -> bool:
    """Whether this CPU has bfloat16 arithmetic (True, as planned for, where torch is missing)."""
    try:
        from .model import cpu_has_bfloat16

        return cpu_has_bfloat16()
    except ImportError:
        return True


def plan(recipe: Recipe, *, device: str | None = None, tokens_per_example: int | None = None,
         examples: int | None = None, completion_tokens: int | None = None, arch: Arch | None = None,
         throughput: float | None = None, examples_per_sequence: float | None = None) -> Plan:
    """Budget ``recipe`` on ``device`` ("cpu", "cuda"; default: CUDA when present).

    ``tokens_per_example``: a typical example's length, for the time (default: the recipe's
    ``model.max_length``); memory is always sized for ``max_length``. ``examples``: the size
    of the training set, for the run's length (else ``data.max_examples``, or
    ``training.max_steps``). ``completion_tokens``: label tokens per example (default 128;
    GRPO: ``grpo.max_completion_length``). ``arch`` and ``throughput`` (FLOP/s) replace
    the looked-up architecture and the benchmark. ``examples_per_sequence``: with
    ``training.packing``, how many examples one sequence holds (``tokens_per_example`` is then
    the sequence's length): measured on the data by ``slimsql train plan --data``."""
    warnings: list[str] = []
    notes: list[str] = []
    arch = arch or architecture(recipe.model.base)
    has_cuda = _cuda_available()
    target = (device or ("cuda" if has_cuda or recipe.cuda_only else "cpu")).lower()
    if target != "cpu" and not re.fullmatch(r"cuda(:\d+)?", target):
        raise InputError(f"device must be cpu or cuda, got {device!r}")
    why = ""
    if recipe.cuda_only:
        why = "QLoRA" if recipe.method == "qlora" else (
            "an 8-bit optimizer" if "8bit" in recipe.training.optimizer else "requires_cuda")
        if target == "cpu":
            warnings.append(f"needs CUDA ({why}): it cannot run on the CPU; planned for a GPU")
            target = "cuda"
    kind = "cpu" if target == "cpu" else "cuda"
    runnable = kind == "cpu" or has_cuda
    where = target
    if not runnable:
        where = "cuda (assumed: this machine has none)"
        warnings.append(f"needs CUDA{f' ({why})' if why else ''}, this machine has none: memory planned "
                        "for a GPU, time not measurable here")

    dtype = recipe.model.dtype
    if kind == "cpu" and dtype == "bfloat16" and not _cpu_bfloat16():
        dtype = "float32"  # what a run here computes in (train.model.training_dtype)
        notes.append("this CPU has no bfloat16 arithmetic (no AVX512-BF16 or AMX): a run here trains in float32, "
                     "planned so")
    dbytes = DTYPE_BYTES[dtype]
    if kind == "cpu" and dtype == "float16":
        warnings.append("float16 on a CPU is slow and unstable: use bfloat16 or float32")

    micro = recipe.training.batch_size
    length = recipe.model.max_length
    grpo = recipe.grpo if recipe.method == "grpo" else None
    # GRPO: an example is a prompt; its completions are timed at max_completion_length
    longest = length - grpo.max_completion_length if grpo else length
    tokens = min(int(tokens_per_example or longest), longest)
    if tokens_per_example and tokens_per_example > longest:
        warnings.append(f"tokens_per_example {tokens_per_example} is above the longest allowed ({longest}): "
                        "such examples are dropped; timed at the longest")
    if grpo:
        completion = grpo.max_completion_length
    else:
        completion = max(1, min(int(completion_tokens or DEFAULT_COMPLETION_TOKENS), tokens - 1))
    label_tokens = completion if recipe.training.completion_only or grpo else tokens
    if grpo:
        peak_labels = completion
    elif recipe.training.completion_only:
        peak_labels = min(int(completion_tokens or DEFAULT_COMPLETION_TOKENS), length)
    else:
        peak_labels = length

    # ---- what is trained
    lora = recipe.lora if recipe.method != "full" else None  # GRPO trains an adapter when it has one
    top = lora.top_layers if lora is not None else 0
    if top > arch.layers:
        warnings.append(f"lora.top_layers {top} is more than the model's {arch.layers} layers: all are trained")
    trained_layers = arch.layers if not top or top > arch.layers else top
    rows: list[Row] = []
    if lora is not None:
        targets = _targets(recipe, arch, warnings)
        per_layer = lora_params_per_layer(arch, targets, lora.r)
        trainable = per_layer * trained_layers
        train_bytes = 4  # PEFT keeps adapters in float32 under a bf16 / fp16 base
    else:
        targets, per_layer = [], 0
        trainable = arch.params
        train_bytes = dbytes

    # ---- weights
    if recipe.method == "qlora" and recipe.quantization is not None:
        q = recipe.quantization
        per = NF4_DQ_BYTES if q.double_quant else NF4_BYTES
        quantized = arch.layers * arch.linear_params
        rest = arch.params - quantized
        # PEFT's prepare_model_for_kbit_training casts what is not 4-bit to float32
        weight_bytes = int(quantized * per + rest * 4)
        rows.append(Row("weights", weight_bytes,
                        f"{_fmt_params(quantized)} linear params in {q.quant_type.upper()} ({per:.3f} B each"
                        f"{', double quant' if q.double_quant else ''}) + {_fmt_params(rest)} embedding/head/norm "
                        "in float32 (as prepared for k-bit training)"))
    else:
        weight_bytes = arch.params * dbytes
        rows.append(Row("weights", weight_bytes, f"{_fmt_params(arch.params)} params x {dbytes} B ({dtype})"
                        + ("; trained" if lora is None else "; frozen")))
    if lora is not None:
        layers_note = (f"the top {trained_layers} of {arch.layers} layers" if trained_layers < arch.layers
                       else f"all {arch.layers} layers")
        rows.append(Row("adapters", trainable * train_bytes,
                        f"LoRA r={lora.r} on {'/'.join(t.replace('_proj', '') for t in targets) or 'nothing'} "
                        f"of {layers_note}: {_fmt_params(trainable)} params x 4 B (float32)"))
    rows.append(Row("gradients", trainable * train_bytes,
                    f"{_fmt_params(trainable)} trainable params x {train_bytes} B"))

    optimizer = recipe.training.optimizer
    if "8bit" in optimizer:
        state, how = 2.0, "two 8-bit moments"
    elif optimizer == "sgd":
        state, how = 0.0, "plain SGD keeps no state"
    else:
        state, how = 2.0 * train_bytes, f"two moments in {'float32' if train_bytes == 4 else dtype}"
    paged = " (paged: can spill to CPU memory)" if optimizer.startswith("paged") else ""
    rows.append(Row("optimizer state", int(trainable * state),
                    f"{optimizer}: {how}, {state:g} B per trainable param{paged}"))

    # ---- activations and logits, per micro-batch at the longest allowed example
    sequences = micro  # GRPO: completions (with their prompts) per micro-batch
    act_tokens = sequences * length
    full_layer = _activation_elements(arch) * dbytes
    if lora is not None:  # LoRA's dropout copy of each targeted module's input
        full_layer += sum(arch.modules()[t][0] for t in targets) * dbytes if lora.dropout > 0 else 0
    if recipe.model.gradient_checkpointing:
        act_bytes = act_tokens * (trained_layers * arch.hidden * dbytes + full_layer)
        act_note = (f"checkpointed: each of {trained_layers} trained layers keeps its input, one layer "
                    f"recomputed at a time ({sequences} x {length} tokens)")
    else:
        act_bytes = act_tokens * trained_layers * full_layer
        act_note = (f"{full_layer / 1024:.0f} KiB per token per trained layer x {trained_layers} layers x "
                    f"{sequences} x {length} tokens")
    if trained_layers < arch.layers:
        act_note += f"; the {arch.layers - trained_layers} frozen layers below keep none"
    rows.append(Row("activations", int(act_bytes), act_note))
    head_bytes = 4 if recipe.method == "qlora" else dbytes  # the k-bit-prepared head is float32
    logit_bytes = sequences * peak_labels * arch.vocab * (head_bytes + 8)
    rows.append(Row("logits", int(logit_bytes),
                    f"{sequences} x {peak_labels} label tokens x vocab {arch.vocab} x ({head_bytes} + 4 + 4) B "
                    "(the loss and its gradient in float32)"))
    if grpo:
        # TRL generates all of a step's completions (batch_size x grad_accum) together
        cache = 2 * arch.layers * arch.kv_dim * dbytes * recipe.effective_batch * length
        rows.append(Row("generation cache", int(cache),
                        f"KV cache of {recipe.effective_batch} completions x {length} tokens"))
        if grpo.beta > 0 and lora is None:
            rows.append(Row("reference model", arch.params * dbytes,
                            f"a frozen copy for the KL term (beta {grpo.beta:g})"))
        elif grpo.beta > 0:
            notes.append("the KL reference is the base with the adapter disabled: no second copy")

    subtotal = sum(r.bytes for r in rows)
    slack = ALLOCATOR_SLACK[kind]
    overhead = OVERHEAD[kind] + int(slack * subtotal)
    rows.append(Row("overhead", overhead,
                    f"{'CUDA context and kernels' if kind == 'cuda' else 'torch, Python, tokenizer and data'}"
                    f" ({OVERHEAD[kind] / GIB:.1f} GiB) + {slack:.0%} allocator slack"))
    total = sum(r.bytes for r in rows)
    available = _device_memory(target) if runnable else None
    if available is not None and total > available:
        warnings.append(f"the estimate ({total / GIB:.1f} GiB) is above this {kind.upper()}'s "
                        f"{available / GIB:.1f} GiB: lower batch_size or max_length, or enable "
                        "gradient checkpointing")
    if not runnable:
        notes.append(f"needs a GPU with at least {math.ceil(total / GIB)} GiB")
    if arch.source.startswith("GGUF") and kind == "cpu":
        load_peak = arch.params * 4 + OVERHEAD[kind]
        notes.append(f"loading the GGUF de-quantizes it through float32: a peak of about "
                     f"{load_peak / GIB:.1f} GiB at start" + (", above the training peak" if load_peak > total else ""))

    # ---- time
    bwd = 2.0 if lora is None else 1.0
    recompute = 1.0 if recipe.model.gradient_checkpointing else 0.0

    def train_flops(seq_tokens: int, labels: int) -> float:
        layer = _layer_flops(arch, seq_tokens)
        frozen = (arch.layers - trained_layers) * layer
        trained = trained_layers * layer * (1.0 + bwd + recompute)
        adapters = trained_layers * 2.0 * per_layer * seq_tokens * (3.0 + recompute)
        head = 2.0 * arch.vocab * arch.hidden * labels * (3.0 if lora is None else 2.0)
        return frozen + trained + adapters + head

    steps_examples = recipe.effective_batch
    if grpo:
        completions = recipe.effective_batch
        prompts = max(1, completions // grpo.num_generations)
        prompt, c = tokens, grpo.max_completion_length
        seq = prompt + c
        prefill = completions * arch.layers * _layer_flops(arch, prompt)
        # decoding: one token of every completion per forward, a small-batch matmul
        decode_flops = 2.0 * (arch.layers * arch.linear_params + arch.vocab * arch.hidden) * completions * c
        scoring = 0.0
        if grpo.beta > 0:  # the reference model's log-probabilities
            scoring = completions * (arch.layers * _layer_flops(arch, seq) + 2.0 * arch.vocab * arch.hidden * c)
        flops_step = prefill + scoring + completions * train_flops(seq, c)
        tokens_step = completions * seq
        steps_examples = prompts
        notes.append(f"GRPO step: {prompts} prompt(s) x {grpo.num_generations} completions of up to {c} tokens "
                     f"(timed at the full length), prompts of {prompt} tokens")
    else:
        packed = examples_per_sequence if recipe.training.packing and examples_per_sequence else 1.0
        flops_step = train_flops(tokens, int(round(label_tokens * packed))) * recipe.effective_batch
        decode_flops = 0.0
        tokens_step = tokens * recipe.effective_batch
        steps_examples = recipe.effective_batch * packed
        if packed != 1.0:
            notes.append(f"prefix packing: {packed:.1f} examples per {tokens}-token sequence")

    efficiency = EFFICIENCY[kind]
    seconds = None
    rate = None
    rate_note = "not measurable here (no CUDA)" if not runnable else ""
    if runnable:
        bench_device = "cuda" if kind == "cuda" else "cpu"
        try:
            rate = throughput or measure_throughput(dtype, BENCH_ROWS, arch.hidden, arch.intermediate,
                                                    bench_device)
        except ImportError:
            rate_note = "not measurable here (torch is not installed)"
            warnings.append("torch is not installed: time not estimated (make setup-train)")
        if rate:
            rate_note = ("given" if throughput else "measured") + (
                f" ({dtype}, [{BENCH_ROWS} x {arch.hidden}] x [{arch.hidden} x {arch.intermediate}])")
            seconds = flops_step / (rate * efficiency)
            if decode_flops:
                rows_ = recipe.effective_batch
                small = throughput or measure_throughput(dtype, rows_, arch.hidden, arch.intermediate,
                                                         bench_device)
                seconds += decode_flops / (small * efficiency)
                rate_note += f"; decoding at {small / 1e9:.1f} GFLOP/s ({rows_} rows)"

    # ---- the run's length
    steps = None
    if recipe.training.max_steps:
        steps = recipe.training.max_steps
    else:
        count = examples or recipe.data.max_examples or None
        if examples and recipe.data.max_examples:
            count = min(examples, recipe.data.max_examples)
        if count:
            steps = math.ceil(recipe.training.epochs * count / max(1, steps_examples))
    if steps is None:
        notes.append("run length unknown: pass the number of training examples")

    if kind == "cpu" and recipe.model.gradient_checkpointing:
        notes.append("gradient checkpointing trades a third more compute for the activation memory")
    return Plan(
        recipe=recipe.name, method=recipe.method, device=where, arch=arch, rows=tuple(rows),
        total_bytes=total, available_bytes=available, params=arch.params, trainable_params=trainable,
        trained_layers=trained_layers, micro_batch=micro, max_length=length, tokens_per_example=tokens,
        completion_tokens=completion, tokens_per_step=tokens_step, examples_per_step=steps_examples,
        flops_per_step=flops_step,
        throughput=rate, throughput_note=rate_note, efficiency=efficiency, seconds_per_step=seconds,
        steps=steps, warnings=tuple(warnings), notes=tuple(notes),
    )


# --------------------------------------------------------------------------- rendering


def _size(n: float) -> str:
    if n >= GIB:
        return f"{n / GIB:.2f} GiB"
    if n >= 1024**2:
        return f"{n / 1024**2:.0f} MiB"
    return f"{n / 1024:.0f} KiB"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def format_plan(p: Plan) -> str:
    """The plan as a plain-text table (what ``slimsql train plan`` prints)."""
    share = 100.0 * p.trainable_params / max(1, p.params)
    share_text = f"{share:.0f}%" if share >= 10 else f"{share:.2g}%"
    lines = [
        f"plan for {p.recipe} ({p.method}) on {p.device} - an estimate, not a measurement",
        f"model: {p.arch.name}: {p.arch.describe()}; {_fmt_params(p.params)} params [{p.arch.source}]",
        f"trained: {_fmt_params(p.trainable_params)} params ({share_text}), "
        f"{p.trained_layers} of {p.arch.layers} layers",
        "",
        f"memory (peak, micro-batch {p.micro_batch} x {p.max_length} tokens)",
    ]
    width = max(len(r.item) for r in p.rows)
    for row in p.rows:
        lines.append(f"  {row.item:<{width}}  {_size(row.bytes):>10}  {row.note}")
    have = f" of {_size(p.available_bytes)} on this machine" if p.available_bytes else ""
    lines.append(f"  {'total':<{width}}  {_size(p.total_bytes):>10}{have}")
    if p.method == "grpo":
        lines += ["", f"time ({p.tokens_per_example}-token prompts, {p.completion_tokens}-token completions; "
                      f"{p.tokens_per_step} tokens per step)"]
    else:
        lines += ["", f"time ({p.tokens_per_example} tokens per example, "
                      f"{p.completion_tokens} of them labels; {p.tokens_per_step} tokens per step)"]
    if p.throughput:
        lines.append(f"  matmul rate   {p.throughput / 1e9:.0f} GFLOP/s {p.throughput_note}")
    else:
        lines.append(f"  matmul rate   {p.throughput_note}")
    if p.seconds_per_step is not None:
        lines.append(f"  per step      {_duration(p.seconds_per_step)}  ({p.flops_per_step / 1e12:.2f} TFLOP "
                     f"at {p.efficiency:.0%} of the matmul rate)")
        each = "prompt" if p.method == "grpo" else "example"
        lines.append(f"  per {each:<10}{_duration(p.seconds_per_example or 0)}  "
                     f"({p.examples_per_hour:,.0f} {each}s per hour)")
        if p.total_seconds is not None:
            lines.append(f"  whole run     {_duration(p.total_seconds)}  ({p.steps} steps)")
        if p.measured_seconds_per_step is not None:
            lines.append(f"  measured      {_duration(p.measured_seconds_per_step)} per step: "
                         f"{p.ratio:.2f} x the estimate")
    else:
        lines.append(f"  per step      not measurable here ({p.flops_per_step / 1e12:.2f} TFLOP per step"
                     f"{f', {p.steps} steps' if p.steps else ''})")
    for note in p.notes:
        lines.append(f"note: {note}")
    for warning in p.warnings:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)
