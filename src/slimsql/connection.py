"""``slimsql.connect(path)``: a database plus a lazily loaded model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from . import pipeline
from .backends import DEFAULT_BACKEND, Backend, GenerationConfig, load_backend
from .db import Database, Result, open_database
from .pipeline import Answer, Settings
from .schema import Schema
from .sql import ExtractionStats


class Connection:
    """Ask questions of one database. The model loads on the first question.

    ``backend`` is a backend name (``llama-cpp``, ``transformers``, ``scripted``
    or any installed plugin) or a ready Backend object; ``backend_options`` go to
    its constructor (e.g. ``n_threads``).
    """

    def __init__(self, database: str | Path | Database, *, model: str | None = None,
                 backend: str | Backend = DEFAULT_BACKEND, settings: Settings | None = None,
                 backend_options: dict[str, Any] | None = None, **setting_overrides: Any):
        base = settings or Settings()
        self.settings = replace(base, **setting_overrides) if setting_overrides else base
        self.db = database if not isinstance(database, (str, Path)) else open_database(
            database, timeout=self.settings.timeout, max_rows=self.settings.max_rows)
        self.model = model
        self._backend = backend if not isinstance(backend, str) else None
        self._backend_name = backend if isinstance(backend, str) else backend.name
        self._backend_options = backend_options or {}
        self.stats = ExtractionStats()

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = load_backend(self._backend_name, model=self.model, **self._backend_options)
        return self._backend

    @property
    def schema(self) -> Schema:
        return self.db.schema(self.settings.samples)

    def ask(self, question: str, **generation: Any) -> Answer:
        """Answer ``question``; keyword arguments override GenerationConfig fields (n, temperature, seed...)."""
        settings = self.settings
        if generation:
            settings = replace(settings, generation=replace(settings.generation, **generation))
        return pipeline.ask(self.db, self.backend, question, settings, self.stats)

    def sql(self, query: str) -> Result:
        """Run hand-written SQL through the same read-only checks and limits."""
        return self.db.execute(query, max_rows=self.settings.max_rows, timeout=self.settings.timeout)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def connect(database: str | Path, **options: Any) -> Connection:
    return Connection(database, **options)


__all__ = ["Connection", "connect", "GenerationConfig"]
