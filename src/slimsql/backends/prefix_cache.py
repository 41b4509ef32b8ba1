"""A persistent cache of evaluated prompt prefixes, shared by every process.

Each ``slimsql ask`` is a new process, and a new process would evaluate the
whole schema prompt again before writing a token. This store keeps the model's
evaluated state (the KV cells of one sequence) of prompt prefixes on disk, so a
process that meets a database seen before loads the schema's state and only
evaluates the question.

An entry is two files in ``$SLIMSQL_HOME/prefix/<model key>/``: ``<hash>.state``
(written by llama.cpp's ``llama_state_seq_save_file``, holding the state and its
tokens) and ``<hash>.json`` (the tokens, their count and the state's size). The
model key is the model file's path, size and modification time and the context
settings, so a changed or different model never meets another's state.

Staleness cannot happen by construction: an entry is used only for the longest
run of tokens it shares with the new prompt, and the state of identical tokens
under the same model is identical; whatever follows (a changed schema, other
sample values, another prompt style, another question) is evaluated afresh.
The store is bounded in bytes (least recently used entries are removed first), a
corrupt or truncated entry is removed and rebuilt, and a failure to write is
never an error: the cache only ever saves time.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

#: the default bound of the whole store
DEFAULT_MAX_BYTES = 1 << 30
#: a shared prefix shorter than this is cheaper to evaluate than to load
MIN_TOKENS = 64
#: entries looked at per lookup (the most recently used first)
MAX_ENTRIES = 256


def root() -> Path:
    """``$SLIMSQL_PREFIX_DIR``, else ``$SLIMSQL_HOME/prefix`` (default ``~/.cache/slimsql/prefix``)."""
    from ..models import home

    return Path(os.environ["SLIMSQL_PREFIX_DIR"]).expanduser() if os.environ.get("SLIMSQL_PREFIX_DIR") \
        else home() / "prefix"


@dataclass(frozen=True)
class Entry:
    state: Path
    tokens: tuple[int, ...]
    size: int
    used: float  # last use (modification time of the sidecar)

    @property
    def meta(self) -> Path:
        return self.state.with_suffix(".json")


def shared(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix of two token lists."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PrefixStore:
    """The entries of one model (one folder); see the module docstring."""

    def __init__(self, model_key: str, folder: Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES):
        self.base = Path(folder) if folder is not None else root()
        self.folder = self.base / model_key
        self.max_bytes = max_bytes
        self._seen: tuple[int, list[Entry]] | None = None  # (folder mtime, entries): one scan per change

    @staticmethod
    def model_key(path: Path, **context: object) -> str:
        st = Path(path).stat()
        ident = json.dumps({"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                            **{k: context[k] for k in sorted(context)}}, sort_keys=True)
        return Path(path).stem[:48] + "-" + hashlib.sha256(ident.encode()).hexdigest()[:16]

    # -- reading -------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        """Readable entries, most recently used first; unreadable sidecars are removed.

        The folder is read again only when its modification time changed (an entry was
        added or removed), so a lookup per question costs one ``stat``."""
        try:
            stamp = self.folder.stat().st_mtime_ns
        except OSError:
            return []
        if self._seen is not None and self._seen[0] == stamp:
            return self._seen[1]
        found = []
        try:
            metas = list(self.folder.glob("*.json"))
        except OSError:
            return []
        for meta in metas:
            try:
                data = json.loads(meta.read_text())
                tokens = tuple(int(t) for t in data["tokens"])
                state = meta.with_suffix(".state")
                size = state.stat().st_size
                if size != data["size"]:
                    raise ValueError("size differs")  # a state cut short or rewritten
                found.append(Entry(state, tokens, size, meta.stat().st_mtime))
            except (OSError, ValueError, KeyError, TypeError):
                self._remove(meta.with_suffix(".state"))
        found.sort(key=lambda e: e.used, reverse=True)
        found = found[:MAX_ENTRIES]
        try:
            self._seen = (self.folder.stat().st_mtime_ns, found)  # after any removal above
        except OSError:
            self._seen = None
        return found

    def best(self, tokens: Sequence[int]) -> tuple[Entry, int] | None:
        """The entry sharing the longest prefix with ``tokens`` (at least MIN_TOKENS), and that length."""
        scored = [(shared(e.tokens, tokens), e) for e in self.entries()]
        scored = [(n, e) for n, e in scored if n >= MIN_TOKENS]
        if not scored:
            return None
        n, entry = max(scored, key=lambda item: item[0])
        return entry, n

    def covers(self, tokens: Sequence[int]) -> bool:
        """Some entry already holds all of ``tokens`` (nothing new to save)."""
        return any(len(e.tokens) >= len(tokens) and shared(e.tokens, tokens) == len(tokens) for e in self.entries())

    # -- writing -------------------------------------------------------------------

    def path_for(self, tokens: Sequence[int]) -> Path:
        digest = hashlib.sha256(json.dumps(list(tokens)).encode()).hexdigest()[:32]
        return self.folder / f"{digest}.state"

    def prepare(self) -> bool:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            return True
        except OSError:
            return False

    def commit(self, state: Path, tokens: Sequence[int]) -> None:
        """Record ``state`` (already written) for ``tokens``, then keep the store within its bound."""
        try:
            meta = {"tokens": list(tokens), "n": len(tokens), "size": state.stat().st_size,
                    "created": time.time()}
            tmp = state.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(meta))
            os.replace(tmp, state.with_suffix(".json"))
        except OSError:
            self._remove(state)
            return
        self.evict()

    def touch(self, entry: Entry) -> None:
        try:
            os.utime(entry.meta)
        except OSError:
            pass

    def forget(self, entry: Entry) -> None:
        self._remove(entry.state)

    def evict(self) -> None:
        """Remove least recently used entries (of every model) until the store fits its bound."""
        every = []
        for folder in _folders(self.base):
            every += PrefixStore(folder.name, self.base).entries()
        every.sort(key=lambda e: e.used)
        total = sum(e.size for e in every)
        for entry in every:
            if total <= self.max_bytes:
                break
            self._remove(entry.state)
            total -= entry.size

    @staticmethod
    def _remove(state: Path) -> None:
        for path in (state, state.with_suffix(".json")):
            try:
                path.unlink()
            except OSError:
                pass


def _folders(base: Path) -> list[Path]:
    try:
        return [p for p in base.iterdir() if p.is_dir()]
    except OSError:
        return []


def summary(base: Path | None = None) -> list[dict]:
    """One row per model folder: entries, bytes, prompt tokens held (for ``slimsql cache``)."""
    base = Path(base) if base is not None else root()
    rows = []
    for folder in sorted(_folders(base)):
        entries = PrefixStore(folder.name, base).entries()
        rows.append({"model": folder.name, "entries": len(entries), "bytes": sum(e.size for e in entries),
                     "tokens": sum(len(e.tokens) for e in entries)})
    return rows


def clear(base: Path | None = None) -> int:
    """Remove every entry; returns how many files were removed."""
    base = Path(base) if base is not None else root()
    removed = 0
    for folder in _folders(base):
        for path in folder.iterdir():
            if path.suffix in (".state", ".json", ".tmp"):
                try:
                    path.unlink()
                    removed += 1
                except OSError:
                    pass
        try:
            folder.rmdir()
        except OSError:
            pass
    return removed
