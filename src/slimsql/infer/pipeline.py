"""One question's road, as small steps a reader can see at once::

    propose:  schema --[taught descriptions, notes]--[link values, prune]--[recall taught examples]-->
              --render--> messages --generate n--> texts --extract--> SQL candidates
    choose:   execute each (read-only) --[fix identifiers on failure]--> vote or first
              --[close vote: merge revision]--[no candidate ran: model repair rounds]-->
              the answer, with its trace

A vote in stages (``Settings.agree``) runs propose and the execution twice: the first
few candidates, then the rest of the ``n`` only if those few do not agree.

:func:`solve` runs the road and returns a :class:`Solution` (the trace of every
candidate, and the chosen result) whether or not any candidate ran; :func:`ask`
turns it into an :class:`Answer` or raises the error that explains the failure.
``slimsql ask``, ``slimsql eval`` and the Python API all call :func:`solve`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

from ..backends import Backend, Candidate, GenerationConfig, Message, sample_limit
from ..db import Database, Result
from ..errors import InputError, Interrupted, NoSQLError, QueryError, QueryTimeout, SlimsqlError, UnsafeSQLError
from ..knowledge import Knowledge
from ..prompts import Turn, get_style
from ..schema import Schema
from ..sql import ExtractionStats, extract
from . import choose, dialects, repair  # linking and grammar load only when a setting asks (process start)
from .settings import Settings
from .trace import Trace, Trial

MAX_QUESTION_CHARS = 2000
_KINDS = ((NoSQLError, "no_sql"), (UnsafeSQLError, "unsafe"), (QueryTimeout, "timeout"), (QueryError, "query"))


@dataclass
class Answer:
    question: str
    sql: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    truncated: bool
    model: str
    timings: dict[str, float]
    fixes: tuple[str, ...] = ()  # clean-ups the model output needed
    raw: str = ""  # the chosen candidate's text as the model wrote it
    tokens: dict[str, int] = field(default_factory=dict)
    trace: Trace | None = None
    truncated_by: str = ""  # what cut the rows, when truncated: "rows" or "bytes"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["columns"] = list(self.columns)
        data["rows"] = [list(r) for r in self.rows]
        data["trace"] = self.trace.to_dict() if self.trace else None
        return data

    def __str__(self) -> str:
        return self.sql + "\n\n" + format_table(self.columns, self.rows, self.truncated)


@dataclass
class Solution:
    """What the road produced for one question: the trace, and the chosen result if any ran."""

    question: str
    trace: Trace
    result: Result | None
    timings: dict[str, float]
    error: SlimsqlError | None = None  # why nothing ran (the first candidate's failure)

    @property
    def sql(self) -> str | None:
        winner = self.trace.winner
        return winner.sql if winner else None

    def tokens(self) -> dict[str, int]:
        trials = self.trace.trials
        return {"prompt": max((t.prompt_tokens for t in trials), default=0),
                "completion": sum(t.completion_tokens for t in trials)}


def format_table(columns: tuple[str, ...], rows: list[tuple], truncated: bool = False) -> str:
    """A plain-text table (the CLI draws a richer one)."""
    cells = [[str(c) for c in columns]] + [["NULL" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    lines.append(f"({len(rows)} row{'s' * (len(rows) != 1)}{', truncated' if truncated else ''})")
    return "\n".join(lines)


# -- propose ---------------------------------------------------------------------

def check_question(question: str) -> str:
    if question is None or not question.strip():
        raise InputError("the question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise InputError(f"the question is too long ({len(question)} characters; at most {MAX_QUESTION_CHARS})")
    return question.strip()


def render(schema: Schema, question: str, settings: Settings, values: str = "",
           history: Sequence[Turn] = (), notes: Sequence[str] = (),
           examples: Sequence[tuple[str, str]] = ()) -> list[Message]:
    return get_style(settings.style).messages(schema, question, schema.dialect, values, history, notes, examples)


def prefix(schema: Schema, settings: Settings, knowledge: Knowledge | None = None) -> list[Message]:
    """The prompt without a question: what every question on this schema starts with
    (what a backend's persistent prefix cache keeps), with what was taught for every
    question (descriptions, notes)."""
    knowledge = knowledge or Knowledge()
    return render(knowledge.apply(schema), "", settings, notes=knowledge.note_lines())


def warm(backend: Backend, schema: Schema, settings: Settings, knowledge: Knowledge | None = None) -> bool:
    """Have ``backend`` evaluate and keep the prompt prefix of ``schema``; False if it keeps none."""
    remember = getattr(backend, "remember", None)
    if remember is None:
        return False
    remember(prefix(schema, settings, knowledge))
    return True


def _estimate_tokens(text: str) -> int:
    return len(text) // 3


def link(db: Database, backend: Backend, schema: Schema, question: str, settings: Settings,
         trace: Trace) -> tuple[Schema, str]:
    """The schema to show and the linked values, per the settings (recorded in ``trace``)."""
    if not (settings.values or settings.prune_tokens):
        return schema, ""
    from . import linking

    matches = []
    if settings.values:
        matches = linking.ValueIndex.for_database(db).match(question)
        trace.values = [f"{m.table}.{m.column} = {m.value!r}" for m in matches]
    shown = schema
    if settings.prune_tokens:
        count = getattr(backend, "count_tokens", _estimate_tokens)
        shown = linking.prune(schema, question, budget_tokens=settings.prune_tokens, count_tokens=count,
                              matches=matches, render=get_style(settings.style).schema_format)
        if shown is not schema:
            trace.tables = shown.names()
    return shown, linking.render_values(matches)


def recall(knowledge: Knowledge | None, question: str, settings: Settings, trace: Trace) -> list[tuple[str, str]]:
    """The taught examples to show for ``question`` (recorded in ``trace``)."""
    if not knowledge:
        return []
    from . import recall as recalling

    chosen = recalling.recall(knowledge, question, settings.examples)
    trace.examples = [e.id for e in chosen]
    return [(e.question, e.sql) for e in chosen]


def prompt(db: Database, backend: Backend, schema: Schema, question: str, settings: Settings,
           trace: Trace | None = None, history: Sequence[Turn] = (),
           knowledge: Knowledge | None = None) -> tuple[Schema, list[Message]]:
    """The schema shown and the messages the model is asked with, for one question: what was
    taught applied, linked, pruned, the nearest taught examples recalled, and rendered per the
    settings. Fine-tuning renders its examples with this same function, so a model is trained
    on exactly the prompts it is later asked with. ``backend`` is needed only for its
    ``count_tokens`` (schema pruning)."""
    trace = trace if trace is not None else Trace(strategy=settings.strategy)
    if knowledge:
        schema = knowledge.apply(schema)
    shown, values = link(db, backend, schema, question, settings, trace)
    examples = recall(knowledge, question, settings, trace)
    notes = knowledge.note_lines() if knowledge else ()
    trace.notes = [n.id for n in knowledge.notes] if knowledge else []
    return shown, render(shown, question, settings, values, history, notes, examples)


def to_trials(candidates: list[Candidate], dialect: str, *, start: int = 0, origin: str = "sample",
              round_: int = 0, stats: ExtractionStats | None = None, greedy_first: bool = True) -> list[Trial]:
    """Generated texts -> trials holding one extracted statement each (or the reason there is none).
    ``greedy_first``: the call's first candidate is its greedy one (a later stage of a vote has none)."""
    trials = []
    for i, candidate in enumerate(candidates):
        trial = Trial(index=start + i, origin=origin, round=round_, raw=candidate.text, logprob=candidate.logprob,
                      prompt_tokens=candidate.prompt_tokens, completion_tokens=candidate.completion_tokens,
                      seconds=round(candidate.seconds, 4))
        trials.append(trial)
        if candidate.truncated and (i > 0 or not greedy_first):
            # a sample cut off at its token limit is unfinished; its prefix is not an answer
            trial.error, trial.error_kind = f"cut off after {candidate.completion_tokens} tokens", "truncated"
            continue
        try:
            extraction = extract(candidate.text, dialect)
            trial.sql, trial.fixes = extraction.sql, extraction.fixes
        except NoSQLError as err:
            trial.error, trial.error_kind = str(err), "no_sql"
            extraction = None
        if stats is not None:
            stats.record(extraction)
    return trials


# -- choose ----------------------------------------------------------------------

#: the repair note of :meth:`_Runner._standard_strings` (the query ran before it, with the same rows)
STANDARD_STRINGS = "double-quoted strings written as 'strings'"


class _Runner:
    """Executes trials read-only, once per distinct statement; keeps results for the winner."""

    def __init__(self, db: Database, schema: Schema, settings: Settings):
        self.db, self.schema, self.settings = db, schema, settings
        self.results: dict[int, Result] = {}
        self._seen: dict[str, tuple[Result | None, SlimsqlError | None]] = {}
        self.errors: dict[int, SlimsqlError] = {}

    def _execute(self, sql: str) -> tuple[Result | None, SlimsqlError | None]:
        if sql not in self._seen:
            try:
                self._seen[sql] = (self.db.execute(sql, max_rows=self.settings.max_rows,
                                                   timeout=self.settings.timeout), None)
            except Interrupted:  # stopped from outside: no verdict on this query
                raise
            except SlimsqlError as err:
                err.sql = sql
                self._seen[sql] = (None, err)
        return self._seen[sql]

    def run(self, trial: Trial) -> None:
        if trial.sql is None:
            self.errors[trial.index] = NoSQLError(trial.error or "no SQL")
            return
        engine = self.schema.dialect
        moved = dialects.foreign(trial.sql, engine)  # the model wrote another dialect's functions
        if moved is not None:
            trial.extracted, trial.sql = trial.sql, moved[0]
            trial.repairs += (f"transpiled from {moved[1]} to {engine}",)
        result, error = self._execute(trial.sql)
        if error is not None and self.settings.fix and isinstance(error, QueryError) \
                and not isinstance(error, QueryTimeout):
            fixed = repair.fix_identifiers(trial.sql, self.schema, engine)
            spellings = [fixed] if fixed is not None else []
            spellings += [(sql, (note,)) for sql, note in dialects.rewrites(trial.sql, engine)]
            for sql, changes in spellings:  # the first that runs is kept
                again, again_error = self._execute(sql)
                if again_error is None:
                    trial.extracted = trial.extracted or trial.sql
                    trial.sql, trial.repairs = sql, trial.repairs + changes
                    result, error = again, None
                    break
        if error is not None:
            trial.error = str(error)
            trial.error_kind = next((kind for cls, kind in _KINDS if isinstance(error, cls)), "error")
            self.errors[trial.index] = error
            return
        if self.settings.fix and engine == "sqlite" and '"' in trial.sql:
            result = self._standard_strings(trial, result)
        trial.rows, trial.empty = len(result.rows), choose.is_empty(result)
        trial.signature = choose.signature(result, choose.orders_rows(trial.sql, self.schema.dialect))
        self.results[trial.index] = result

    def _standard_strings(self, trial: Trial, result: Result) -> Result:
        """SQLite ran ``trial.sql`` reading its double-quoted names that name no column as
        strings (``WHERE country = "france"``, :mod:`slimsql.infer.names`); write them as the
        standard strings they were read as, which any engine and reader takes the same way.
        Kept only if the rewritten query runs with the same rows (the check guards the
        name resolution, which is sqlglot's reading, not SQLite's)."""
        from .names import single_quoted

        standard = single_quoted(trial.sql, self.schema)
        if standard == trial.sql:
            return result
        again, error = self._execute(standard)
        if error is not None or again.rows != result.rows or len(again.columns) != len(result.columns):
            return result
        trial.extracted = trial.extracted or trial.sql
        trial.sql, trial.repairs = standard, trial.repairs + (STANDARD_STRINGS,)
        return again


def solve(db: Database, backend: Backend, question: str, settings: Settings,
          stats: ExtractionStats | None = None, schema: Schema | None = None,
          history: Sequence[Turn] = (), knowledge: Knowledge | None = None) -> Solution:
    """The whole road for one question; never raises for a wrong model answer.
    ``history``: earlier questions of a conversation and their SQL, for a follow-up question;
    ``knowledge``: what was taught about this database (:mod:`slimsql.knowledge`)."""
    question = check_question(question)
    clock = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(timings.get(name, 0.0) + now - clock, 4)
        clock = now

    schema = schema if schema is not None else db.schema(settings.samples)
    lap("schema")
    trace = Trace(strategy=settings.strategy)
    shown, messages = prompt(db, backend, schema, question, settings, trace, history, knowledge)
    lap("linking")
    # the schema's evaluated state (with the notes): loaded from, or saved to, the prefix cache
    if warm(backend, shown, settings, Knowledge(notes=knowledge.notes) if knowledge else None):
        lap("prefix")
    config = settings.generation
    if settings.grammar:  # only the names of the schema shown can be written
        from . import grammar

        config = replace(config, grammar=grammar.build(shown))
    runner = _Runner(db, schema, settings)
    trials, early = _propose(backend, messages, settings, config, schema, runner, stats, lap)
    trace.trials = trials
    winner = choose.STRATEGY[settings.strategy](trace, trials)
    if early:
        trace.note += f"; the first {len(trials)} agreed, so the other {config.n - len(trials)} were not made"
    lap("execution")
    if winner is not None and settings.merge and settings.strategy == "vote":
        winner = _merge(backend, messages, settings, config, trace, runner, schema, stats, lap) or winner
    failed = next((t for t in trials if t.sql is not None), None)
    if settings.grammar and shown is not schema:  # a repair hint may name any table of the database
        from . import grammar

        config = replace(config, grammar=grammar.build(schema))
    while winner is None and trace.rounds < settings.repair_rounds and failed is not None:
        trace.rounds += 1
        conversation = repair.repair_messages(messages, failed.sql, failed.error or "", schema, schema.dialect)
        # as many candidates as the proposal, chosen the same way
        new = to_trials(backend.generate(conversation, config), schema.dialect, start=len(trace.trials),
                        origin="repair", round_=trace.rounds, stats=stats)
        lap("repair")
        trace.trials.extend(new)
        for trial in new:
            runner.run(trial)
        winner = choose.STRATEGY[settings.strategy](trace, new)
        failed = next((t for t in new if t.sql is not None), failed)
        lap("execution")
    timings["total"] = round(sum(timings.values()), 4)
    if winner is None:
        first_error = runner.errors.get(0) or next(iter(runner.errors.values()), None) \
            or NoSQLError("the model gave no candidate")
        return Solution(question, trace, None, timings, first_error)
    trace.chosen = winner.index
    return Solution(question, trace, runner.results[winner.index], timings)


def staged(settings: Settings, config: GenerationConfig) -> int:
    """How many candidates the first stage of a vote in stages makes (0: no stages)."""
    if settings.strategy != "vote" or config.temperature == 0 or not 0 < settings.agree < config.n:
        return 0
    return settings.agree


def agreed(trials: Sequence[Trial]) -> bool:
    """Every trial ran, and all gave one result that is not empty."""
    return all(t.ran and not t.empty for t in trials) and len({t.signature for t in trials}) == 1


def _propose(backend: Backend, messages: list[Message], settings: Settings, config: GenerationConfig,
             schema: Schema, runner: _Runner, stats: ExtractionStats | None, lap) -> tuple[list[Trial], bool]:
    """The proposal's candidates, made and executed: all ``n`` at once, or in two stages
    (``settings.agree``): the first few, and the others unless those all ran with one
    result that has a value. Also whether the first stage was enough."""
    first = staged(settings, config)
    trials = to_trials(backend.generate(messages, replace(config, n=first) if first else config),
                       schema.dialect, stats=stats)
    lap("generation")
    for trial in trials:
        runner.run(trial)
    if not first or agreed(trials):
        return trials, bool(first)
    lap("execution")
    # the rest, as one call for all n would have made them (seeds by index; samples cut at
    # the length the greedy candidate allows them)
    limit = sample_limit(trials[0].completion_tokens, config.max_tokens) if config.greedy_first else config.max_tokens
    rest = replace(config, skip=first, max_tokens=limit)
    more = to_trials(backend.generate(messages, rest), schema.dialect, start=first, stats=stats, greedy_first=False)
    lap("generation")
    for trial in more:
        runner.run(trial)
    return trials + more, False


def _merge(backend: Backend, messages: list[Message], settings: Settings, proposal: GenerationConfig,
           trace: Trace, runner: _Runner, schema: Schema, stats: ExtractionStats | None, lap) -> Trial | None:
    """A merge revision between the vote's two closest groups; the merged query if it runs."""
    pair = choose.runner_up(trace.trials, settings.merge_margin)
    if pair is None:
        return None
    shown = [(t.sql, runner.results[t.index].columns, runner.results[t.index].rows) for t in pair]
    conversation = repair.merge_messages(messages, *shown)
    config = GenerationConfig(max_tokens=proposal.max_tokens, grammar=proposal.grammar)  # one greedy answer
    new = to_trials(backend.generate(conversation, config), schema.dialect, start=len(trace.trials),
                    origin="merge", stats=stats)
    lap("merge")
    trace.trials.extend(new)
    for trial in new:
        runner.run(trial)
    lap("execution")
    merged = next((t for t in new if t.ran), None)
    if merged is not None:
        trace.note += f"; merge of candidates {pair[0].index} and {pair[1].index}"
    return merged


def ask(db: Database, backend: Backend, question: str, settings: Settings,
        stats: ExtractionStats | None = None, history: Sequence[Turn] = (), schema: Schema | None = None,
        knowledge: Knowledge | None = None) -> Answer:
    """Answer one question, or raise the error of its first candidate (with ``.trace`` attached)."""
    solution = solve(db, backend, question, settings, stats, schema=schema, history=history, knowledge=knowledge)
    if solution.result is None:
        error = solution.error
        error.trace = solution.trace
        raise error
    winner, result = solution.trace.winner, solution.result
    return Answer(question=solution.question, sql=winner.sql, columns=result.columns, rows=result.rows,
                  truncated=result.truncated, model=backend.model_name, timings=solution.timings,
                  fixes=winner.fixes, raw=winner.raw, tokens=solution.tokens(), trace=solution.trace,
                  truncated_by=result.truncated_by)
