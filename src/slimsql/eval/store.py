"""The run folder: the one place that reads and writes it.

A run folder holds ``config.json`` (what was evaluated, with every setting that
shapes an answer), ``predictions.jsonl`` (one scored record per example, appended
as the run goes, so an interrupted run resumes), ``metrics.json`` and the
reports. Reading a run never writes to it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Iterable

from ..errors import InputError


@dataclass
class Record:
    """One example of a run: what the road produced for it and how it scored.

    One line of ``predictions.jsonl``. Fields a run did not produce stay at their
    default and are left out of the line; fields this version does not know (a run
    written by a later one) are kept in ``extra`` and written back unchanged.
    """

    # the example
    id: str
    db_id: str = ""
    question: str = ""
    gold_sql: str = ""
    executable: bool = False
    missing_db: bool = False
    # what the road produced (generated: kept by rescoring)
    raw: str | None = None  # the shown candidate's text as the model wrote it; None: no generation
    pred_sql: str | None = None
    strict: bool = False  # the text was the SQL alone (a trailing semicolon aside)
    fixes: list[str] = field(default_factory=list)  # clean-ups extraction applied
    repairs: list[str] = field(default_factory=list)  # identifier repairs on the parse tree
    extract_error: str | None = None  # why there is no SQL
    gen_s: float | None = None  # generation (and repair rounds) time
    road_s: float | None = None  # the whole road: generation, execution, choice
    prompt_tokens: int = 0
    completion_tokens: int = 0
    candidates: int = 0
    trace: dict[str, Any] | None = None  # slimsql.infer.Trace.to_dict()
    # the score (eval/scoring.py)
    ex: bool = False
    valid: bool = False
    em: bool | None = None
    em_official: bool | None = None
    ts: bool | None = None
    schema_ok: bool | None = None
    hardness: str | None = None
    label: str | None = None  # the benchmark's own label: BIRD's difficulty, sql-eval's query category
    exec_error: str | None = None
    unsafe: str | None = None
    gold_error: str | None = None
    score_error: str | None = None
    score_s: float | None = None
    category: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    #: fields that are what generation produced; rescoring keeps these and scores again
    GENERATED = ("id", "db_id", "question", "gold_sql", "executable", "missing_db", "raw", "pred_sql", "strict",
                 "fixes", "repairs", "extract_error", "gen_s", "road_s", "prompt_tokens", "completion_tokens",
                 "candidates", "trace", "extra")

    @property
    def generated(self) -> bool:
        """The model was asked (there is an output, or the reason there is none)."""
        return self.raw is not None or self.extract_error is not None

    @property
    def scored(self) -> bool:
        """Counts in the run's metrics: it has a database and its gold query ran."""
        return self.executable and not self.gold_error

    def unscored(self) -> "Record":
        """A copy holding only what generation produced."""
        return Record(**{k: getattr(self, k) for k in self.GENERATED})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Record":
        known = _FIELDS & set(data)
        record = cls(**{k: data[k] for k in known if k != "extra"})
        record.fixes, record.repairs = list(record.fixes or ()), list(record.repairs or ())
        record.extra = {k: v for k, v in data.items() if k not in _FIELDS}
        return record

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        for name in _OMIT_UNSET:
            if data[name] is None or data[name] is False or data[name] == []:  # 0.0 is a value
                del data[name]
        data.update(self.extra)
        return data


_FIELDS = {f.name for f in fields(Record)}
#: left out of a line while unset, so lines stay short (and read as before typed records)
_OMIT_UNSET = ("missing_db", "raw", "pred_sql", "repairs", "extract_error", "gen_s", "road_s", "trace",
               "exec_error", "unsafe", "gold_error", "score_error", "score_s", "category", "label")


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
        """The run's records; a torn last line (a crash mid-write) is ignored."""
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
            # a field added later, unset now, is absent from folders written before it
            wanted = {k: v for k, v in wanted.items() if not (v is None and k not in saved)}
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
        return json.dumps(record.to_dict(), ensure_ascii=False, default=str) + "\n"

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
                    data = json.loads(line)
                except ValueError:
                    continue
                if isinstance(data, dict) and "id" in data:
                    records.append(Record.from_dict(data))
    return records
