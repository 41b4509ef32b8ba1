"""Everything that shapes an answer besides the database and the model, and the named presets.

One :class:`Settings` value travels the whole road; ``slimsql ask``, ``slimsql eval``
and the Python API all build it the same way (:func:`resolve`), and an eval run
folder records it, so what is measured is what users get.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..backends import GenerationConfig
from ..db.limits import check_max_rows, check_timeout
from ..errors import InputError
from ..prompts import DEFAULT_STYLE, get_style

STRATEGIES = ("first", "vote")
#: Example values per text column in the schema prompt (``--samples``). One, not three: the
#: values are half of a prompt's tokens, and on 281 paired Spider dev questions one value
#: scored +0.4 EX points (95% CI -3.6 to +3.9) with 28% fewer prompt tokens (README, Speed).
DEFAULT_SAMPLES = 1
#: Taught examples shown with a question (``--examples``): the three most similar, as in the
#: in-domain demonstrations the knowledge file is measured with (docs/teaching.md).
DEFAULT_EXAMPLES, MAX_EXAMPLES = 3, 20


@dataclass(frozen=True)
class Settings:
    """How one question is answered.

    ``strategy``: ``first`` runs candidates in order and keeps the first that runs;
    ``vote`` runs them all and keeps the biggest group of equal results
    (:mod:`slimsql.infer.choose`). ``fix``: repair identifiers that do not exist on
    the parse tree (:mod:`slimsql.infer.repair`) when a candidate fails.
    ``repair_rounds``: when no candidate runs, give the model the database's
    error this many times. ``merge``: when the vote's top two groups are within
    ``merge_margin`` votes, show the model both queries with a preview of their
    results and keep the query it writes if that runs (a merge revision).
    ``values``: show the database values the question mentions (value linking).
    ``prune_tokens``: above this many schema tokens, show only the tables the
    question is about (0 = never prune). ``grammar``: constrain decoding to a
    grammar built from the schema shown, so that no candidate names a table or
    column the database lacks (:mod:`slimsql.infer.grammar`; llama-cpp backend).
    ``agree``: vote in stages: make the first ``agree`` candidates (the greedy one
    first) and, when they all run and give the same result with a value, answer with
    it without making the other ``n - agree``; otherwise make those and vote over all
    ``n`` (0 = make all ``n`` at once). The vote is then decided early where it would
    have been one-sided, and questions the candidates disagree on still get all of them.
    ``examples``: how many of the examples taught for the database (its knowledge file,
    :mod:`slimsql.knowledge`) are shown with a question, the most similar ones (0 = none).
    """

    style: str = DEFAULT_STYLE
    samples: int = DEFAULT_SAMPLES  # example values per text column in the schema
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    max_rows: int = 1000
    timeout: float = 10.0
    strategy: str = "first"
    fix: bool = False
    repair_rounds: int = 0
    merge: bool = False
    merge_margin: int = 1
    values: bool = False
    prune_tokens: int = 0
    grammar: bool = False
    agree: int = 0
    examples: int = DEFAULT_EXAMPLES

    def __post_init__(self) -> None:
        get_style(self.style)
        check_max_rows(self.max_rows)
        check_timeout(self.timeout)
        if self.strategy not in STRATEGIES:
            raise InputError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.repair_rounds < 0:
            raise InputError(f"--repair-rounds must be 0 or more, got {self.repair_rounds}")
        if self.prune_tokens < 0:
            raise InputError(f"--prune-tokens must be 0 (off) or more, got {self.prune_tokens}")
        if self.generation.grammar is not None:
            raise InputError("the decoding grammar is built per question; switch it on with grammar=True")
        if self.samples < 0:
            raise InputError(f"--samples must be 0 or more, got {self.samples}")
        if self.agree < 0:
            raise InputError(f"--agree must be 0 (off) or more, got {self.agree}")
        if not 0 <= self.examples <= MAX_EXAMPLES:
            raise InputError(f"--examples must be 0 to {MAX_EXAMPLES}, got {self.examples}")

    def describe(self) -> dict[str, Any]:
        """A flat record of every answer-shaping setting (what a run folder stores)."""
        data = asdict(self)
        data.update({f"generation.{k}": v for k, v in data.pop("generation").items() if k not in _PER_CALL})
        for name, off in _LATER.items():  # recorded only when on, so runs recorded before them still resume
            if data[name] == off:
                del data[name]
        return data


#: Settings added after run folders began recording settings, with the value at which they are
#: not recorded (off, or the default they had before they could be set), so older runs still resume.
_LATER = {"grammar": False, "agree": 0, "examples": DEFAULT_EXAMPLES}
#: GenerationConfig fields the road sets per call, not answer-shaping settings of their own.
_PER_CALL = ("grammar", "skip")

#: Named presets. Each is a complete set of answer-shaping choices; flags override single fields.
PRESETS: dict[str, dict[str, Any]] = {
    # One greedy completion, the first that runs: the cheapest road.
    "fast": dict(strategy="first", fix=True, repair_rounds=0, n=1, temperature=0.0),
    # The greedy answer plus 7 sampled ones, voted by result; when the greedy answer and the
    # first sample agree, the other 6 are not made (a vote in stages; README, Choosing the answer).
    "default": dict(strategy="vote", fix=True, repair_rounds=1, n=8, temperature=0.8, agree=2),
    # Twice the samples, more repair.
    "accurate": dict(strategy="vote", fix=True, repair_rounds=2, n=16, temperature=0.8),
}
DEFAULT_PRESET = "default"
_GENERATION = {f.name for f in fields(GenerationConfig)} - set(_PER_CALL)  # Settings.grammar switches grammar on


def resolve(preset: str | None = None, **overrides: Any) -> Settings:
    """Settings of ``preset`` (default: :data:`DEFAULT_PRESET`) with ``overrides`` applied.

    Overrides may name Settings fields or GenerationConfig fields (``n``,
    ``temperature``, ``seed``, ``max_tokens``, ...); ``None`` means "keep the preset's".
    """
    name = preset or DEFAULT_PRESET
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    chosen = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
    unknown = set(chosen) - _GENERATION - {f.name for f in fields(Settings)}
    if unknown:
        raise InputError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    generation = GenerationConfig(**{k: chosen.pop(k) for k in list(chosen) if k in _GENERATION})
    return Settings(generation=generation, **chosen)
