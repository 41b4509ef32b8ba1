"""The run folder: the one place that reads and writes it.

A run folder holds ``config.json`` (what was evaluated, with every setting that
shapes an answer), ``predictions.jsonl`` (one scored record per example, appended
as the run goes, so an interrupted run resumes), ``metrics.json`` and the
reports. Reading a run never writes to it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Iterable

from ..errors import InputError

Record = dict[str, Any]  # one scored example; the fields are listed in eval/metrics.py


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_path = self.path / "config.json"
        self.predictions = self.path / "predictions.jsonl"
        self.metrics_path = self.path / "metrics.json"

    # -- reading (never writes) ----------------------------------------------------

    def config(self) -> dict[str, Any]:
        if not self.config_path.exists():
            raise InputError(f"{self.path} is not a run folder (no config.json)")
        return json.loads(self.config_path.read_text())

    def records(self) -> list[Record]:
        """Scored records; a torn last line (a crash mid-write) is ignored."""
        return load_records(self.predictions)

    def metrics(self) -> dict[str, Any]:
        if not self.metrics_path.exists():
            raise InputError(f"{self.path} is not a run folder (no metrics.json)")
        return json.loads(self.metrics_path.read_text())

    # -- writing ---------------------------------------------------------------------

    def start(self, config: Any) -> None:
        """Create the folder for ``config`` (a dataclass or a mapping), or check that it holds the same run.

        Resuming with any different setting is refused: one folder, one run.
        """
        wanted = asdict(config) if is_dataclass(config) else dict(config)
        if self.config_path.exists():
            saved = json.loads(self.config_path.read_text())
            if saved != wanted:
                differs = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
                detail = ", ".join(f"{k}: {saved.get(k)!r} -> {wanted.get(k)!r}" for k in differs[:4])
                raise InputError(f"{self.path} holds a run with other settings ({detail}); "
                                 "use another --out folder, or the same settings to resume")
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(wanted, indent=2) + "\n")

    def appender(self):
        return self.predictions.open("a", encoding="utf-8")

    @staticmethod
    def line(record: Record) -> str:
        return json.dumps(record, ensure_ascii=False, default=str) + "\n"

    def replace_records(self, records: Iterable[Record]) -> None:
        """Rewrite predictions.jsonl atomically (rescoring)."""
        tmp = self.predictions.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(self.line(r) for r in records), encoding="utf-8")
        tmp.replace(self.predictions)

    def write_metrics(self, summary: dict[str, Any]) -> None:
        self.metrics_path.write_text(json.dumps(summary, indent=2) + "\n")


def load_records(path: Path) -> list[Record]:
    records = []
    if Path(path).exists():
        with Path(path).open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
    return records
