"""``slimsql.connect(path)``: a database plus a lazily loaded model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from . import infer
from . import knowledge as knowledge_file
from .backends import DEFAULT_BACKEND, Backend, GenerationConfig, load_backend
from .db import Database, Result, open_database
from .errors import InputError
from .infer import Answer, Settings, Solution
from .prompts import Turn
from .schema import Schema
from .sql import ExtractionStats


class Connection:
    """Ask questions of one database. The model loads on the first question.

    ``backend`` is a backend name (``llama-cpp``, ``transformers``, ``scripted``
    or any installed plugin) or a ready Backend object; ``backend_options`` go to
    its constructor (e.g. ``n_threads``). ``settings`` is a full Settings value;
    otherwise ``preset`` (default ``default``) with ``setting_overrides`` applied
    (Settings or GenerationConfig field names, e.g. ``style``, ``n``, ``strategy``).

    ``knowledge``: the database's knowledge file (:mod:`slimsql.knowledge`); by default the
    one beside a database file, if there is one; ``False`` for none. What it holds shapes
    every answer, and :meth:`teach` adds to it.
    """

    def __init__(self, database: str | Path | list | tuple | Database, *, model: str | None = None,
                 backend: str | Backend = DEFAULT_BACKEND, settings: Settings | None = None,
                 preset: str | None = None, backend_options: dict[str, Any] | None = None,
                 knowledge: str | Path | bool | None = None, **setting_overrides: Any):
        if settings is not None:
            self.settings = replace(settings, **setting_overrides) if setting_overrides else settings
        else:
            self.settings = infer.resolve(preset, **setting_overrides)
        self.db = database if not isinstance(database, (str, Path, list, tuple)) else open_database(
            database, timeout=self.settings.timeout, max_rows=self.settings.max_rows)
        self.model = model
        self._backend = backend if not isinstance(backend, str) else None
        self._backend_name = backend if isinstance(backend, str) else backend.name
        self._backend_options = backend_options or {}
        self.stats = ExtractionStats()
        target = database if isinstance(database, (str, Path, list, tuple)) else None
        path = None if knowledge is False else knowledge_file.path_for(target, None if knowledge is True else knowledge)
        self._knowledge = knowledge_file.Source(path)

    @property
    def knowledge_path(self) -> Path | None:
        """Where this database's knowledge file is (or would be); None for a URL without --knowledge."""
        return self._knowledge.path

    @property
    def knowledge(self) -> knowledge_file.Knowledge:
        """What was taught about this database (read again when its file changed)."""
        return self._knowledge.current()

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = load_backend(self._backend_name, model=self.model, **self._backend_options)
        return self._backend

    @property
    def schema(self) -> Schema:
        return self.db.schema(self.settings.samples)

    def _settings(self, generation: dict[str, Any]) -> Settings:
        if not generation:
            return self.settings
        return replace(self.settings, generation=replace(self.settings.generation, **generation))

    def ask(self, question: str, *, history: Sequence[Turn] = (), **generation: Any) -> Answer:
        """Answer ``question``; keyword arguments override GenerationConfig fields (n, temperature, seed...).
        ``history``: earlier (question, sql) turns when ``question`` is a follow-up."""
        return infer.ask(self.db, self.backend, question, self._settings(generation), self.stats, history=history,
                         knowledge=self.knowledge)

    def solve(self, question: str, *, history: Sequence[Turn] = (), **generation: Any) -> Solution:
        """The road's full record for ``question`` (every candidate), without raising for a wrong answer."""
        return infer.solve(self.db, self.backend, question, self._settings(generation), self.stats,
                           history=history, knowledge=self.knowledge)

    def warm(self) -> bool:
        """Evaluate this database's prompt prefix now and keep it in the backend's persistent
        prefix cache, so that a later process answers its first question fast."""
        return infer.warm(self.backend, self.schema, self.settings, self.knowledge)

    def teach(self, *, note: str | None = None, example: tuple[str, str] | None = None,
              describe: tuple[str, str] | None = None, synonyms: Sequence[str] = (),
              generated: bool = False) -> knowledge_file.Knowledge:
        """Add to this database's knowledge file: a ``note``, an ``example`` (question, SQL; the
        SQL is checked and run read-only first) or a description (``describe``: target,
        text; with ``synonyms``). Saved atomically; returns the knowledge as saved."""
        changes = []
        if note is not None:
            changes.append(knowledge_file.with_note(note))
        if example is not None:
            question, sql = example
            sql = knowledge_file.checked_example(self.db, question, sql)
            changes.append(knowledge_file.with_example(question, sql, "generated" if generated else "verified"))
        if describe is not None or synonyms:
            target, text = describe if describe is not None else ("", "")
            why = knowledge_file.missing(self.schema, target)
            if why:
                raise InputError(f"cannot describe {target!r}: the database has {why}")
            changes.append(knowledge_file.with_description(target, text, tuple(synonyms)))
        if not changes:
            raise InputError("nothing to teach: give a note, an example or a description")

        def change(k):
            for each in changes:
                k = each(k)
            return k
        return self._knowledge.update(change)

    def forget(self, entry: str) -> knowledge_file.Knowledge:
        """Remove a note or example (by id) or a description (by table or table.column)."""
        return self._knowledge.update(knowledge_file.without(entry))

    def sql(self, query: str) -> Result:
        """Run hand-written SQL through the same read-only checks and limits."""
        return self.db.execute(query, max_rows=self.settings.max_rows, timeout=self.settings.timeout)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def connect(database: str | Path | list | tuple, **options: Any) -> Connection:
    return Connection(database, **options)


__all__ = ["Connection", "connect", "GenerationConfig"]
