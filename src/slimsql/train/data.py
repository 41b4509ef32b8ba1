"""Training data: benchmark, JSONL and Hugging Face rows -> the very prompts inference builds.

Every source is read into the evaluation's :class:`~slimsql.eval.datasets.Example` (question,
gold SQL, database). :func:`prepare` then, per example,

1. runs the gold SQL through the read-only layer (with a time limit) and drops it, counted
   by reason, when it does not execute: a model is never taught a query that fails;
   with ``quote_strings`` (the recipes' default) a double-quoted name that names no column
   (SQLite's fallback reads it as a string: Spider's gold has ``WHERE country = "france"``)
   is taught as the single-quoted string it is (:func:`slimsql.eval.metrics.single_quoted`),
   when SQLite compiles both to the same program: a model trained on it writes standard SQL
   that its schema check, and every other engine, accept;
2. renders the prompt with :func:`slimsql.infer.prompt`, the function ``slimsql ask`` uses
   (same style, schema rendering, sample values and pruning), so train and inference prompts
   are byte-identical;
3. tokenizes it with the model's own chat template: the prompt exactly as inference tokenizes
   it (``add_generation_prompt=True``), the completion as the rest of the chat-templated
   conversation (the SQL and the end-of-turn token). ``completion_mask`` marks the completion:
   the loss is computed on those tokens only.

Sources (``--data``): ``spider`` (``../shared/benchmarks/spider`` train split, or
``spider:PATH``), ``bird:PATH`` (train.json with evidence), a ``.jsonl`` file with ``--db``
(or records naming their database), and through Hugging Face ``datasets``:
``sql-create-context[:SOURCE]`` (context / question / answer) and ``gretel[:SOURCE]``
(synthetic_text_to_sql: sql_context / sql_prompt / sql), where SOURCE is a hub id or a
local json / jsonl / parquet / csv file. Examples without a database get one built from
their CREATE TABLE context (an empty or seeded SQLite file in a work folder).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..backends import Message
from ..db import open_database
from ..errors import InputError, SlimsqlError
from ..eval import datasets, metrics
from ..eval.datasets import Dataset, Example
from ..infer import Settings, prompt

DEFAULT_SPIDER = Path("../shared/benchmarks/spider")
PLAN_ROWS = 100_000  # instructions of a query's EXPLAIN compared, at most
HUB = {"sql-create-context": "b-mc2/sql-create-context", "gretel": "gretelai/synthetic_text_to_sql"}
#: the columns each Hugging Face source is read from: (context, question, sql)
COLUMNS = {"sql-create-context": ("context", "question", "answer"), "gretel": ("sql_context", "sql_prompt", "sql")}


@dataclass(frozen=True)
class Rendered:
    """One training example as the model sees it."""

    id: str
    db_id: str
    messages: list[Message]  # the prompt, exactly as inference renders it
    completion: str  # the gold SQL
    db_path: Path


@dataclass
class Prepared:
    examples: list[Rendered]
    dropped: Counter = field(default_factory=Counter)  # reason -> count
    source: str = ""
    total: int = 0
    changed: Counter = field(default_factory=Counter)  # how the gold SQL of kept examples was rewritten

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "read": self.total, "kept": len(self.examples),
                "dropped": dict(self.dropped), "changed": dict(self.changed)}


# -- sources ------------------------------------------------------------------------------

def semantics(data: str) -> str:
    """How results are compared for ``data``, as ``slimsql eval`` compares them (BIRD: sets)."""
    return "bird" if data.partition(":")[0] == "bird" else "spider"


def load(data: str, *, db: str | None = None, split: str = "train", workdir: Path | None = None) -> Dataset:
    """The examples ``data`` names (see the module docstring)."""
    kind, _, rest = data.partition(":")
    if kind == "spider":
        return datasets.load_spider(rest or DEFAULT_SPIDER, split)
    if kind == "bird":
        if not rest:
            raise InputError("bird needs its folder: --data bird:PATH (with train.json and train_databases/)")
        return datasets.load_bird(rest, split)
    if kind in HUB:
        return load_hf(kind, rest or HUB[kind], workdir=workdir)
    path = Path(data)
    if path.suffix == ".jsonl":
        return datasets.load_jsonl(path, db=db)
    raise InputError(f"unknown training data {data!r}; use spider, spider:PATH, bird:PATH, FILE.jsonl (with --db), "
                     f"sql-create-context[:SOURCE] or gretel[:SOURCE]")


def _hf_rows(source: str, split: str = "train") -> Iterable[dict]:
    """Rows of a Hugging Face dataset: a local data file, or a hub id (downloaded and cached by
    ``datasets``; offline machines get a one-line error)."""
    try:
        import datasets as hf
    except ImportError:
        raise InputError("Hugging Face datasets need: pip install 'slimsql[train]'") from None
    path = Path(source)
    formats = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
    try:
        if path.exists():
            if path.suffix not in formats:
                raise InputError(f"{source}: expected a .json, .jsonl, .parquet or .csv file")
            return hf.load_dataset(formats[path.suffix], data_files=str(path), split="train")
        if "/" not in source or source.startswith((".", "/", "~")):
            raise InputError(f"file not found: {source}")
        return hf.load_dataset(source, split=split)
    except InputError:
        raise
    except Exception as err:  # network, offline cache miss, bad file: one line
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"cannot load the dataset {source}: {reason}") from None


def load_hf(kind: str, source: str, *, workdir: Path | None = None, split: str = "train") -> Dataset:
    """sql-create-context or Gretel rows -> examples on SQLite databases built from their context."""
    context_key, question_key, sql_key = COLUMNS[kind]
    folder = Path(workdir) if workdir else _context_folder(source)
    folder.mkdir(parents=True, exist_ok=True)
    examples = []
    for i, row in enumerate(_hf_rows(source, split)):
        missing = [k for k in (context_key, question_key, sql_key) if k not in row]
        if missing:
            raise InputError(f"{source}: row {i + 1} has no {', '.join(missing)} column (a {kind} dataset has "
                             f"{context_key}, {question_key}, {sql_key})")
        context = row[context_key] or ""
        key = hashlib.sha1(context.encode()).hexdigest()[:16]
        built = datasets.build_context_db(context, folder, key) if context else None
        examples.append(Example(id=str(row.get("id", i)), question=row[question_key], gold_sql=row[sql_key],
                                db_id=f"context-{key}", db_paths=(built,) if built else (), context=context))
    return Dataset(kind, Path(source).stem if Path(source).exists() else source.replace("/", "-"), examples,
                   {"(no CREATE TABLE context that builds)": sum(not e.executable for e in examples)})


def _context_folder(source: str) -> Path:
    from .. import models

    return models.home() / "train-contexts" / hashlib.sha1(source.encode()).hexdigest()[:12]


# -- rendering ------------------------------------------------------------------------------

class TokenCounter:
    """What :func:`slimsql.infer.prompt` needs of a backend to prune a schema: its token count.
    Backed by the Hugging Face tokenizer of the model being trained."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def pick(dataset: Dataset, limit: int = 0, seed: int = 0, exclude: Sequence[str] = ()) -> list[Example]:
    """A reproducible shuffled subset (all examples when ``limit`` is 0)."""
    skip = set(exclude)
    chosen = [ex for ex in dataset.examples if ex.id not in skip]
    random.Random(seed).shuffle(chosen)
    return chosen[:limit] if limit else chosen


def prepare(examples: Sequence[Example], settings: Settings, counter=None, *, check_gold: bool = True,
            quote_strings: bool = True, timeout: float = 5.0, source: str = "",
            on_progress: Callable[[int, int], None] | None = None) -> Prepared:
    """Render ``examples`` as inference would, dropping (and counting) those that cannot train;
    with ``quote_strings``, SQLite's double-quoted strings in the gold SQL are single-quoted
    (counted in ``changed``)."""
    out = Prepared([], Counter(), source, len(examples))
    dbs: dict[Path, Any] = {}
    schemas: dict[Path, Any] = {}
    try:
        for n, example in enumerate(examples, 1):
            if on_progress:
                on_progress(n, len(examples))
            if not example.executable:
                out.dropped["no database"] += 1
                continue
            path = example.db_paths[0]
            try:
                if path not in dbs:
                    dbs[path] = open_database(path, timeout=timeout, max_rows=1)
                    schemas[path] = dbs[path].schema(settings.samples)
                db, schema = dbs[path], schemas[path]
            except SlimsqlError:
                out.dropped["database does not open"] += 1
                continue
            gold = example.gold_sql.strip()
            if check_gold:
                try:
                    db.execute(gold, max_rows=1, timeout=timeout)
                except SlimsqlError as err:
                    out.dropped[f"gold SQL fails ({type(err).__name__})"] += 1
                    continue
            if quote_strings:
                gold = _quote_strings(db, schema, gold, out.changed, timeout)
            _, messages = prompt(db, counter, schema, example.asked, settings)
            out.examples.append(Rendered(example.id, example.db_id, messages, gold, path))
    finally:
        for db in dbs.values():
            db.close()
    return out


def _quote_strings(db, schema, gold: str, changed: Counter, timeout: float) -> str:
    """``gold`` with SQLite's double-quoted strings single-quoted, when SQLite compiles both to
    the same program (``EXPLAIN``: the same query, not just the same rows on today's data);
    else ``gold`` as it was (counted)."""
    rewritten = metrics.single_quoted(gold, schema)
    if rewritten == gold:
        return gold
    try:
        db.execute(rewritten, max_rows=1, timeout=timeout)  # the allow-list, before the engine sees it
        plans = [db._run(f"EXPLAIN {sql}", max_rows=PLAN_ROWS, timeout=timeout) for sql in (gold, rewritten)]
        same = plans[0].rows == plans[1].rows and not plans[0].truncated
    except SlimsqlError:
        same = False
    changed["double-quoted strings single-quoted" if same else "double-quoted strings kept (another query)"] += 1
    return rewritten if same else gold


def prompt_text(tokenizer, messages: Sequence[Message]) -> str:
    """The prompt string exactly as the transformers backend renders it for generation."""
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)


def tokenize(tokenizer, example: Rendered, max_length: int) -> dict[str, list[int]] | None:
    """``input_ids`` and ``completion_mask`` (1 on the completion's tokens), or None when longer
    than ``max_length``. The prompt's tokens are those inference feeds the model."""
    prompt_str = prompt_text(tokenizer, example.messages)
    full = tokenizer.apply_chat_template(list(example.messages) + [{"role": "assistant", "content": example.completion}],
                                         tokenize=False)
    if not full.startswith(prompt_str):
        raise InputError("the chat template does not render a conversation as its prompt followed by the answer; "
                         "this model's template cannot train completion-only")
    completion_str = full[len(prompt_str):].rstrip("\n")  # the SQL and the end-of-turn token
    prompt_ids = tokenizer(prompt_str, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion_str, add_special_tokens=False)["input_ids"]
    if len(prompt_ids) + len(completion_ids) > max_length:
        return None
    return {"input_ids": prompt_ids + completion_ids,
            "completion_mask": [0] * len(prompt_ids) + [1] * len(completion_ids)}


def tokenized(tokenizer, prepared: Prepared, max_length: int) -> list[dict[str, Any]]:
    """Every prepared example tokenized; the too-long ones dropped and counted in ``prepared``."""
    rows = []
    for example in prepared.examples:
        row = tokenize(tokenizer, example, max_length)
        if row is None:
            prepared.dropped[f"longer than {max_length} tokens"] += 1
            continue
        rows.append({**row, "id": example.id, "db_id": example.db_id})
    return rows


# -- prefix packing --------------------------------------------------------------------------

def _common_prefix(rows: Sequence[dict[str, Any]]) -> int:
    """Tokens every row's prompt starts with, stopping at least one token before any completion:
    each example's own part then starts with a prompt token, so its first answer token is
    predicted from its own prompt (identical prompts, as duplicate questions have, included)."""
    first = rows[0]["input_ids"]
    length = min(r["completion_mask"].index(1) for r in rows) - 1
    for row in rows[1:]:
        ids = row["input_ids"]
        n = 0
        while n < length and ids[n] == first[n]:
            n += 1
        length = n
    return length


def pack(rows: Sequence[dict[str, Any]], max_length: int, seed: int = 0) -> list[dict[str, Any]]:
    """Examples on one database share their prompt's prefix (the system turn and the schema):
    pack several into one sequence that holds that prefix once, each example's own tokens
    (question and answer) after it, placed at the positions they would have alone. The
    attention mask (:func:`collate`) lets each example see the prefix and itself only, so the
    loss and its gradient are those of the examples trained one by one, for a fraction of the
    tokens: a 400-token Spider prompt is mostly schema.

    A packed row has ``input_ids``, ``labels`` (-100 off the completions), ``position_ids``,
    ``segments`` (0 for the prefix, 1.. for the examples) and ``examples`` (how many)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row.get("db_id", ""), []).append(row)
    packs: list[dict[str, Any]] = []
    for group in groups.values():
        start = _common_prefix(group) if len(group) > 1 else 0
        current: dict[str, Any] | None = None
        for row in group:
            own = row["input_ids"][start:]
            if current is None or len(current["input_ids"]) + len(own) > max_length:
                if current is not None:
                    packs.append(current)
                head = row["input_ids"][:start]
                current = {"input_ids": list(head), "labels": [-100] * start, "position_ids": list(range(start)),
                           "segments": [0] * start, "examples": 0}
            current["examples"] += 1
            current["input_ids"] += own
            current["labels"] += [t if m else -100 for t, m in zip(own, row["completion_mask"][start:])]
            current["position_ids"] += list(range(start, start + len(own)))
            current["segments"] += [current["examples"]] * len(own)
        if current is not None:
            packs.append(current)
    random.Random(seed).shuffle(packs)
    return packs


def unpacked(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as packs of one (so both kinds go through the same collator)."""
    return [{"input_ids": r["input_ids"], "labels": [t if m else -100 for t, m in zip(r["input_ids"],
                                                                                    r["completion_mask"])],
             "position_ids": list(range(len(r["input_ids"]))), "segments": [1] * len(r["input_ids"]), "examples": 1}
            for r in rows]


def collate(batch: Sequence[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Right-padded tensors and the 4-D attention mask: causal, and within a pack each example
    attends to the shared prefix (segment 0) and to itself only."""
    import torch

    width = max(len(row["input_ids"]) for row in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    positions = torch.zeros((len(batch), width), dtype=torch.long)
    segments = torch.full((len(batch), width), -1, dtype=torch.long)  # -1: padding
    for i, row in enumerate(batch):
        n = len(row["input_ids"])
        ids[i, :n] = torch.tensor(row["input_ids"])
        labels[i, :n] = torch.tensor(row["labels"])
        positions[i, :n] = torch.tensor(row["position_ids"])
        segments[i, :n] = torch.tensor(row["segments"])
    causal = torch.tril(torch.ones((width, width), dtype=torch.bool))
    query, key = segments[:, :, None], segments[:, None, :]
    allowed = causal & (key >= 0) & ((query == key) | (key == 0))
    allowed |= torch.eye(width, dtype=torch.bool)  # padding rows attend to themselves: no NaN
    return {"input_ids": ids, "labels": labels, "position_ids": positions, "attention_mask": allowed[:, None],
            "examples": torch.tensor([row["examples"] for row in batch])}
