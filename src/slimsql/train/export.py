"""Export a fine-tuning run and register it as a local model.

Three formats, each written by the tools that read it:

``gguf-lora``
    The LoRA adapter alone as a llama.cpp LoRA GGUF (llama.cpp's own
    ``convert_lora_to_gguf.py``), applied at run time on the *unchanged* base GGUF, e.g. the
    embedded Q4_K_M of qwen2.5-coder-0.5b: a few MB, and the base keeps its hash.
``safetensors``
    Base + adapter merged (PEFT's ``merge_and_unload``) and saved in the Hugging Face layout
    (``config.json``, ``model.safetensors``, tokenizer, chat template) that transformers and
    vLLM load. Default dtype bfloat16.
``gguf``
    The merged model through llama.cpp's ``convert_hf_to_gguf.py`` (f16), then quantized to
    Q4_K_M by llama.cpp's quantizer (``llama_model_quantize``, the C function behind the
    ``llama-quantize`` tool, through llama-cpp-python's binding).

The converter scripts are not in llama-cpp-python's wheel; ``scripts/install-llama-convert.sh``
(``make setup-train``) takes them from the sdist of the installed version into
``$SLIMSQL_HOME/llama.cpp-convert/<version>/`` (or set ``$SLIMSQL_LLAMA_CONVERT``). They run as
a subprocess of this Python, with their own ``gguf-py`` first on ``PYTHONPATH``.

Every export is registered (:func:`slimsql.models.register`) under a name (default: the run's
name and a suffix), with its files' SHA-256, its base and the prompt style it was trained with,
so ``--model NAME`` works in ``ask``, ``eval`` and ``serve``. Files go to ``OUT`` (default
``RUN/export``): ``OUT/NAME.gguf`` or, for safetensors, the folder ``OUT/NAME/``.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .. import models
from ..errors import InputError, ModelError

FORMATS = ("gguf-lora", "safetensors", "gguf")
METHODS = ("lora", "qlora", "full", "grpo")
#: what ``quant`` may be per format; the first is the default
LORA_TYPES = ("f16", "f32", "bf16", "q8_0")  # convert_lora_to_gguf.py --outtype
CONVERT_TYPES = ("f16", "f32", "bf16")  # convert_hf_to_gguf.py --outtype, kept as they are
QUANTS = ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")  # llama.cpp's quantizer, from the f16 GGUF
DTYPES = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}  # safetensors
SUFFIX = {"gguf-lora": "lora", "safetensors": "hf"}
INSTALL = "make setup-train (or: scripts/install-llama-convert.sh .venv/bin/python)"

Progress = Callable[[str], None]  # one line per stage


@dataclass(frozen=True)
class Run:
    """A training run folder, as training wrote it (``train.json`` and its sub-folders)."""

    folder: Path
    info: dict
    name: str
    method: str
    base: dict
    style: str | None
    samples: int | None
    prune_tokens: int | None
    adapter: Path | None  # the PEFT adapter folder
    model: Path | None  # full weights (a full fine-tune)
    base_dir: Path  # config.json + tokenizer of the base model


@dataclass(frozen=True)
class Registered:
    """What :func:`export` wrote and registered."""

    name: str
    kind: str
    path: Path  # the GGUF file or the Hugging Face folder
    files: tuple[Path, ...]
    sha256: dict[str, str]  # file path -> SHA-256
    base: str | None
    style: str | None
    quant: str
    bytes: int  # the export's own files (not the base GGUF a LoRA applies to)
    seconds: float


def _bad_run(folder: Path, why: str) -> InputError:
    return InputError(f"{folder} is not a usable training run folder: {why}")


def load_run(run_dir: str | Path) -> Run:
    """Read and check ``RUN/train.json``; InputError (one line) for anything unusable."""
    folder = Path(run_dir).expanduser()
    if not folder.is_dir():
        raise InputError(f"training run folder not found: {folder}")
    try:
        info = json.loads((folder / "train.json").read_text())
    except FileNotFoundError:
        raise _bad_run(folder, "no train.json") from None
    except (OSError, ValueError) as err:
        raise _bad_run(folder, f"train.json is unreadable ({type(err).__name__})") from None
    if not isinstance(info, dict) or info.get("format") != 1:
        raise _bad_run(folder, f"train.json format {info.get('format') if isinstance(info, dict) else '?'!r} "
                               f"is not 1")
    method, base = info.get("method"), info.get("base")
    if method not in METHODS:
        raise _bad_run(folder, f"unknown method {method!r} (one of {', '.join(METHODS)})")
    if not isinstance(base, dict) or not (base.get("source") or base.get("name")):
        raise _bad_run(folder, "train.json names no base model")

    def sub(key: str, marker: str) -> Path | None:
        value = info.get(key)
        if value is None:
            return None
        path = folder / str(value)
        if not (path / marker).is_file():
            raise _bad_run(folder, f"{key} folder {path.name}/ has no {marker}")
        return path

    adapter, model = sub("adapter", "adapter_config.json"), sub("model", "config.json")
    if adapter is None and model is None:
        raise _bad_run(folder, "it holds neither an adapter nor model weights")
    try:
        samples = None if info.get("samples") is None else int(info["samples"])
        prune = None if info.get("prune_tokens") is None else int(info["prune_tokens"])
    except (TypeError, ValueError):
        raise _bad_run(folder, "samples / prune_tokens are not integers") from None
    return Run(folder=folder.resolve(), info=info, name=str(info.get("name") or folder.resolve().name),
               method=method, base=base, style=info.get("style"), samples=samples, prune_tokens=prune,
               adapter=adapter, model=model, base_dir=folder.resolve() / "base")


# -- llama.cpp's converters --------------------------------------------------------------

def llama_cpp_version() -> str | None:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return None


def converter_dir() -> Path:
    """The folder holding llama.cpp's converter scripts for the installed llama-cpp-python."""
    override = os.environ.get("SLIMSQL_LLAMA_CONVERT")
    if override:
        folder = Path(override).expanduser()
    else:
        version = llama_cpp_version()
        if version is None:
            raise ModelError("llama-cpp-python is not installed; install it with: pip install 'slimsql[llama]'")
        folder = models.home() / "llama.cpp-convert" / version
    if not (folder / "convert_hf_to_gguf.py").is_file() or not (folder / "convert_lora_to_gguf.py").is_file():
        raise ModelError(f"llama.cpp's converter scripts are not installed (looked in {folder}); "
                         f"install them with: {INSTALL}")
    return folder


def _run_converter(script: str, args: list[str], what: str) -> None:
    folder = converter_dir()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(folder / "gguf-py")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("HF_HUB_OFFLINE", "1")  # every input is local: never reach for the hub
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    done = subprocess.run([sys.executable, str(folder / script), *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if "Error" in line or "error" in line.split(":")[0].lower()]
        reason = (errors or lines or [f"exit status {done.returncode}"])[-1]
        if "No module named" in reason:
            reason += f" (install the converters' requirements with: {INSTALL})"
        raise ModelError(f"llama.cpp's {script} failed on {what}: {reason}")


def convert_hf_to_gguf(model_dir: str | Path, outfile: str | Path, outtype: str = "f16") -> Path:
    """A Hugging Face model folder as one GGUF file (llama.cpp's ``convert_hf_to_gguf.py``)."""
    if outtype not in CONVERT_TYPES:
        raise InputError(f"convert_hf_to_gguf writes {', '.join(CONVERT_TYPES)}, not {outtype!r}")
    outfile = Path(outfile)
    tmp = outfile.with_name(f".{outfile.name}.tmp{os.getpid()}")
    try:
        _run_converter("convert_hf_to_gguf.py", [str(model_dir), "--outtype", outtype, "--outfile", str(tmp)],
                       str(model_dir))
        os.replace(tmp, outfile)
    finally:
        tmp.unlink(missing_ok=True)
    return outfile


def _converter_base(run: Run, work: Path) -> Path:
    """``RUN/base`` as llama.cpp's LoRA converter needs it: a config.json that names its
    architecture (a config taken from a GGUF-loaded model has none, and carries transformers'
    GGUF ``quantization_config``), beside the tokenizer files. Fixed in a copy when needed."""
    try:
        config = json.loads((run.base_dir / "config.json").read_text())
    except (OSError, ValueError):
        raise _bad_run(run.folder, "base/ has no readable config.json (the base model's config and tokenizer)") from None
    fixed = {k: v for k, v in config.items() if k != "quantization_config"}
    if not fixed.get("architectures"):
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        architecture = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(str(fixed.get("model_type")))
        if not architecture:
            raise ModelError(f"base/config.json of run {run.name} names no architecture "
                             f"(model_type {fixed.get('model_type')!r})")
        fixed["architectures"] = [architecture]
    if fixed == config:
        return run.base_dir
    folder = work / "base"
    shutil.copytree(run.base_dir, folder)
    (folder / "config.json").write_text(json.dumps(fixed, indent=2) + "\n")
    return folder


def convert_lora_to_gguf(adapter_dir: str | Path, base_dir: str | Path, outfile: str | Path,
                         outtype: str = "f16") -> Path:
    """A PEFT LoRA adapter as a llama.cpp LoRA GGUF (``convert_lora_to_gguf.py``); ``base_dir``
    needs only the base's config.json and tokenizer."""
    if outtype not in LORA_TYPES:
        raise InputError(f"a LoRA GGUF is one of {', '.join(LORA_TYPES)}, not {outtype!r}")
    outfile = Path(outfile)
    tmp = outfile.with_name(f".{outfile.name}.tmp{os.getpid()}")
    try:
        _run_converter("convert_lora_to_gguf.py", ["--base", str(base_dir), "--outtype", outtype,
                                                   "--outfile", str(tmp), str(adapter_dir)], str(adapter_dir))
        os.replace(tmp, outfile)
    finally:
        tmp.unlink(missing_ok=True)
    return outfile


def _llama():
    try:
        import llama_cpp
        from llama_cpp._logger import set_verbose
    except ImportError:
        raise ModelError("llama-cpp-python is not installed; install it with: pip install 'slimsql[llama]'") from None
    set_verbose(False)
    llama_cpp.llama_backend_init()
    return llama_cpp


def quantize_gguf(source: str | Path, target: str | Path, quant: str = "Q4_K_M",
                  threads: int | None = None) -> Path:
    """Quantize a GGUF file with llama.cpp's own quantizer (``llama_model_quantize``, the
    function the ``llama-quantize`` tool calls, with its default parameters)."""
    quant = quant.upper()
    if quant not in QUANTS:
        raise InputError(f"unknown quantization {quant!r}; one of {', '.join(QUANTS)}")
    lib = _llama()
    params = lib.llama_model_quantize_default_params()
    params.ftype = getattr(lib, f"LLAMA_FTYPE_MOSTLY_{quant}")
    params.nthread = threads or os.cpu_count() or 1
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        with _stderr_kept() as said:  # the quantizer prints a line per fallback tensor: shown only on failure
            code = lib.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params))
        if code != 0 or not tmp.is_file():
            last = next((line for line in reversed(said()) if line.strip()), f"code {code}")
            raise ModelError(f"llama.cpp could not quantize {source} to {quant}: {last.strip()}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


@contextlib.contextmanager
def _stderr_kept() -> Iterator[Callable[[], list[str]]]:
    """Send file descriptor 2 (C code's stderr) to a temporary file; yields a reader of its lines."""
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", errors="replace").splitlines())


def check_lora(base: str | Path, lora: str | Path) -> None:
    """ModelError unless llama.cpp accepts the LoRA GGUF ``lora`` on the base GGUF ``base``."""
    lib = _llama()
    from llama_cpp import _internals

    try:
        model = _internals.LlamaModel(path_model=str(base), params=lib.llama_model_default_params(), verbose=False)
    except (ValueError, RuntimeError, OSError) as err:
        raise ModelError(f"llama.cpp cannot load the base {base}: {err}") from None
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # llama.cpp's notes on buffer types, one per tensor
            adapter = lib.llama_adapter_lora_init(model.model, str(lora).encode())
        if not adapter:
            raise ModelError(f"llama.cpp refuses the LoRA {Path(lora).name} on {Path(base).name}: "
                             f"an adapter of another base model?")
        lib.llama_adapter_lora_free(adapter)
    finally:
        model.close()


# -- the merged model --------------------------------------------------------------------

def _base_gguf(run: Run) -> tuple[str | None, Path | None]:
    """(registry name, GGUF path) of the run's base, when it is a GGUF model."""
    name = run.base.get("name")
    spec = models.registry_name(str(name)) if name and "/" not in str(name) else None
    if spec is not None:
        return spec, None
    path = run.base.get("gguf_path")
    if not path and run.base.get("gguf_file") and run.base.get("source"):
        path = str(Path(run.base["source"]) / run.base["gguf_file"])
    if not path:
        return None, None
    path = Path(path)
    if not path.is_file():
        raise InputError(f"the base GGUF of run {run.name} is missing: {path}")
    expected = run.base.get("sha256")
    if expected and models.sha256_file(path) != expected:
        raise ModelError(f"the base GGUF {path} changed since run {run.name} was trained on it (SHA-256 differs)")
    return None, path


def _load_base(run: Run):
    import torch
    from transformers import AutoModelForCausalLM

    spec, path = _base_gguf(run)
    if spec is not None:
        path = models.resolve(spec).path  # assembled and verified as for inference
    if path is not None:
        source, kwargs = str(path.parent), {"gguf_file": path.name}
        try:  # plain float weights to merge into, even where transformers could keep GGUF blocks packed
            from transformers import GgufConfig

            kwargs["quantization_config"] = GgufConfig(dequantize=True)
        except ImportError:  # older transformers always de-quantize a GGUF file
            pass
    else:
        source, kwargs = str(run.base.get("source") or run.base["name"]), {}
    try:
        return AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs)
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelError(f"transformers cannot load the base model {source}: {_first_line(err)}") from None


def _tokenizer(run: Run):
    from transformers import AutoTokenizer

    for folder in (run.model, run.base_dir):
        if folder is not None and folder.is_dir():
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(folder))
            except (OSError, ValueError):
                continue
            if tokenizer.chat_template:
                return tokenizer
    raise ModelError(f"run {run.name} carries no tokenizer with a chat template (in model/ or base/)")


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def merged_model(run: Run | str | Path, folder: str | Path, dtype: str = "bfloat16") -> Path:
    """Write the run's model (base + adapter merged, or the full fine-tune) to ``folder`` in
    the Hugging Face layout: config.json, model.safetensors, tokenizer and chat template."""
    run = run if isinstance(run, Run) else load_run(run)
    try:
        import torch
        from transformers import AutoModelForCausalLM
    except ImportError:
        raise ModelError("exporting needs: pip install 'slimsql[train]'") from None
    if run.model is not None:
        try:
            model = AutoModelForCausalLM.from_pretrained(str(run.model), dtype=torch.float32)
        except (OSError, ValueError, RuntimeError) as err:
            raise ModelError(f"cannot load the fine-tuned model in {run.model}: {str(err).splitlines()[0]}") from None
    else:
        try:
            from peft import PeftModel
        except ImportError:
            raise ModelError("exporting a LoRA needs: pip install 'slimsql[train]'") from None
        try:
            model = PeftModel.from_pretrained(_load_base(run), str(run.adapter)).merge_and_unload()
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            raise ModelError(f"cannot apply the adapter of run {run.name} to its base: {_first_line(err)}") from None
    model = model.to(getattr(torch, dtype))
    # a GGUF-loaded base keeps transformers' GGUF quantizer, which refuses to save; the weights are
    # plain floats by now (de-quantized at load), so the model is saved as the dense model it is
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.config.use_cache = True
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    _tokenizer(run).save_pretrained(str(folder))
    config = folder / "config.json"
    data = json.loads(config.read_text())
    data.setdefault("torch_dtype", dtype)  # the key readers on transformers 4.x (vLLM among them) look for
    data.pop("quantization_config", None)  # a GGUF-loaded base's; the merged weights are plain floats
    config.write_text(json.dumps(data, indent=2) + "\n")
    settings = folder / "tokenizer_config.json"  # the template inline too, for readers older than chat_template.jinja
    template = folder / "chat_template.jinja"
    if settings.is_file() and template.is_file():
        data = json.loads(settings.read_text())
        data.setdefault("chat_template", template.read_text())
        settings.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return folder


# -- export ----------------------------------------------------------------------------

def _quant(fmt: str, quant: str | None) -> str:
    if fmt == "gguf-lora":
        allowed, default = LORA_TYPES, "f16"
    elif fmt == "safetensors":
        allowed, default = tuple(DTYPES), "bf16"
    else:
        allowed, default = QUANTS + CONVERT_TYPES, "Q4_K_M"
    if quant is None:
        return default
    for option in allowed:
        if quant.strip().lower() == option.lower():
            return option
    raise InputError(f"--quant {quant} does not apply to a {fmt} export; one of: {', '.join(allowed)}")


def _lora_base(run: Run, base_gguf: str | Path | None) -> str:
    """The registry name or absolute path of the base GGUF a LoRA GGUF will be applied on."""
    if base_gguf is not None:
        spec = models.registry_name(str(base_gguf)) if "/" not in str(base_gguf) else None
        if spec is not None:
            return spec
        path = Path(base_gguf).expanduser()
        if not path.is_file():
            raise InputError(f"base GGUF not found: {path}")
        return str(path.resolve())
    spec, path = _base_gguf(run)
    if spec is None and path is None:
        raise InputError(f"run {run.name} was trained on {run.base.get('name') or run.base.get('source')}, "
                         f"not a GGUF model: a LoRA GGUF needs a GGUF base to apply on (give one as base_gguf / "
                         f"--base-gguf, or export --format gguf)")
    return spec or str(Path(path).resolve())


def export(run_dir: str | Path, fmt: str, *, out: str | Path | None = None, name: str | None = None,
           quant: str | None = None, base_gguf: str | Path | None = None,
           progress: Progress | None = None) -> Registered:
    """Export the run in ``run_dir`` as ``fmt`` (``gguf-lora``, ``safetensors`` or ``gguf``)
    into ``out`` (default ``RUN/export``) and register it as local model ``name``.

    ``quant``: for ``gguf`` Q4_K_M (default), Q5_K_M, Q6_K, Q8_0, or f16 / bf16 / f32 kept
    unquantized; for ``gguf-lora`` the adapter's tensor type, f16 (default), f32, bf16, q8_0;
    for ``safetensors`` the dtype, bf16 (default), f16, f32. ``base_gguf`` (registry name or
    path) overrides the base a LoRA GGUF is registered on, for a run whose base is not a GGUF."""
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; one of: {', '.join(FORMATS)}")
    run = load_run(run_dir)
    quant = _quant(fmt, quant)
    name = models.check_local_name(name or f"{run.name}-{SUFFIX.get(fmt, quant.lower())}")
    if fmt == "gguf-lora" and run.adapter is None:
        raise InputError(f"run {run.name} is a full fine-tune ({run.method}): it has no LoRA adapter; "
                         f"export it as safetensors or gguf")
    base: str | None = _lora_base(run, base_gguf) if fmt == "gguf-lora" else run.base.get("name")
    out = Path(out).expanduser() if out is not None else run.folder / "export"
    say = progress or (lambda _message: None)
    start = time.perf_counter()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ModelError(f"cannot create the export folder {out}: {err.strerror or err}") from None
    if fmt == "gguf-lora":
        target = out / f"{name}.gguf"
        say(f"converting the adapter of {run.name} to a LoRA GGUF ({quant})")
        with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=out) as work:
            convert_lora_to_gguf(run.adapter, _converter_base(run, Path(work)), target, quant)
        base_path = models.resolve(base).path if models.registry_name(base) else Path(base)
        say(f"checking that llama.cpp applies it on {base_path.name}")
        try:
            check_lora(base_path, target)
        except ModelError:
            target.unlink(missing_ok=True)
            raise
    elif fmt == "safetensors":
        target = out / name
        tmp = out / f".{name}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        say(f"merging run {run.name} and saving it as safetensors ({DTYPES[quant]})")
        try:
            merged_model(run, tmp, DTYPES[quant])
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        target = out / f"{name}.gguf"
        work = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out))  # beside the result: the same disk
        try:
            # a full fine-tune is re-saved too: one config.json the converter reads, whoever wrote RUN/model
            say(f"merging the adapter of {run.name} into its base" if run.adapter is not None
                else f"preparing the weights of {run.name}")
            source = merged_model(run, work / "merged", "float32")
            outtype = quant if quant in CONVERT_TYPES else "f16"
            say(f"converting to GGUF ({outtype}) with llama.cpp's convert_hf_to_gguf.py")
            if quant in CONVERT_TYPES:
                convert_hf_to_gguf(source, target, outtype)
            else:
                convert_hf_to_gguf(source, work / "model-f16.gguf", outtype)
                say(f"quantizing to {quant} with llama.cpp's quantizer")
                quantize_gguf(work / "model-f16.gguf", target, quant)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    say(f"registering local model {name}")
    entry = models.register(name, fmt, target, base=base, style=run.style, samples=run.samples,
                            prune_tokens=run.prune_tokens, run=run.folder,
                            extra={"method": run.method, "recipe": run.info.get("recipe"), "quant": quant,
                                   "run_name": run.name})
    own = [f for f in entry.files if f.role != "base"]
    return Registered(name=entry.name, kind=entry.kind, path=entry.path, files=tuple(f.path for f in own),
                      sha256={str(f.path): f.sha256 for f in own}, base=entry.base, style=entry.style, quant=quant,
                      bytes=sum(f.size for f in own), seconds=round(time.perf_counter() - start, 2))
