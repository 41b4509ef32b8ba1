"""The trace of one question: every candidate the road produced and what became of it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Trial:
    """One candidate query: where it came from, what it was, what running it gave."""

    index: int
    origin: str  # "sample" (the first proposal), "repair" (a model repair round) or "merge" (a merge revision)
    round: int = 0  # 0 for the first proposal, k for repair round k
    raw: str = ""  # the model's text
    sql: str | None = None  # the statement that ran (after any identifier fix)
    extracted: str | None = None  # the statement as extracted, when a fix changed it
    fixes: tuple[str, ...] = ()  # extraction clean-ups
    repairs: tuple[str, ...] = ()  # fixes on the parse tree, e.g. "o.quantity -> oi.quantity" (STANDARD_STRINGS: it ran before)
    error: str | None = None
    error_kind: str | None = None  # no_sql | truncated | unsafe | query | timeout
    rows: int | None = None
    empty: bool = False  # the result has no rows, or only NULLs
    signature: str | None = None  # short hash of the result, as voting compares it
    group: int | None = None
    votes: int = 0
    logprob: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    @property
    def ran(self) -> bool:
        return self.signature is not None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fixes"], data["repairs"] = list(self.fixes), list(self.repairs)
        return {k: v for k, v in data.items() if v not in (None, (), [], "") or k in ("index", "origin")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Trial":
        data = dict(data)
        data["fixes"], data["repairs"] = tuple(data.get("fixes", ())), tuple(data.get("repairs", ()))
        return cls(**data)


@dataclass
class Trace:
    """All trials of one question, the strategy that chose among them and the choice."""

    strategy: str
    trials: list[Trial] = field(default_factory=list)
    chosen: int | None = None  # index into trials
    rounds: int = 0  # model repair rounds used
    note: str = ""  # how the choice was made (e.g. "vote 3/4", "tie -> logprob")
    values: list[str] = field(default_factory=list)  # linked database values shown in the prompt
    tables: list[str] | None = None  # the tables shown, when the schema was pruned
    examples: list[str] = field(default_factory=list)  # ids of the taught examples shown (slimsql.knowledge)
    notes: list[str] = field(default_factory=list)  # ids of the taught notes in the prompt

    @property
    def winner(self) -> Trial | None:
        return None if self.chosen is None else self.trials[self.chosen]

    def to_dict(self) -> dict[str, Any]:
        data = {"strategy": self.strategy, "chosen": self.chosen, "rounds": self.rounds, "note": self.note,
                "trials": [t.to_dict() for t in self.trials]}
        if self.values:
            data["values"] = self.values
        if self.tables is not None:
            data["tables"] = self.tables
        for name in ("examples", "notes"):
            if getattr(self, name):
                data[name] = getattr(self, name)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Trace":
        return cls(strategy=data["strategy"], chosen=data.get("chosen"), rounds=data.get("rounds", 0),
                   note=data.get("note", ""), trials=[Trial.from_dict(t) for t in data.get("trials", ())],
                   values=list(data.get("values", ())), tables=data.get("tables"),
                   examples=list(data.get("examples", ())), notes=list(data.get("notes", ())))
