"""GRPO through TRL's GRPOTrainer, rewarded by the evaluation's own execution match.

For each prompt the trainer samples ``num_generations`` completions; each is scored by

* :func:`execution_reward`: 1 when the SQL extracted from the completion returns the gold
  query's result on the example's database, judged by :class:`slimsql.eval.scoring.Scorer`
  (the very function ``slimsql eval`` reports EX with: read-only layer, time limit), else 0;
* :func:`format_reward`: 1 when the completion is exactly one SQL statement and nothing else
  (the strict form the prompt styles ask for), else 0;

weighted by the recipe (``grpo.execution_weight``, ``grpo.format_weight``). The advantage of
a completion is its reward relative to the others of its prompt, so a prompt where all
completions agree teaches nothing; that is GRPO's design, not a bug. A small model after SFT
either always or never solves most of its training prompts, so a short run on plain prompts
spends most steps on such groups. ``grpo.select: mixed`` screens the prompts first
(:func:`screen`, the filter DAPO calls dynamic sampling, applied once before training): the
starting model samples a group per prompt as the trainer would, and only prompts whose
execution rewards differ are trained on.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import InputError, NoSQLError
from ..eval.datasets import Example
from ..eval.scoring import Scorer
from ..sql import extract
from . import data, model as loading, run
from .recipes import Recipe, override


def completion_text(completion: Any) -> str:
    """TRL passes a conversational completion as a list of messages, a plain one as text."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


class Rewards:
    """The two reward functions over one set of examples (looked up by the ``example_id`` column)."""

    def __init__(self, examples: Sequence[Example], timeout: float = 5.0, semantics: str = "spider"):
        self.examples = {ex.id: ex for ex in examples}
        self.scorer = Scorer(semantics, timeout)
        self.calls = 0

    def _sql(self, completion: Any, dialect: str = "sqlite") -> tuple[str | None, tuple[str, ...]]:
        try:
            extraction = extract(completion_text(completion), dialect)
        except NoSQLError:
            return None, ()
        return extraction.sql, tuple(extraction.fixes)

    def execution(self, prompts, completions, example_id, **_) -> list[float]:
        """1.0 where the completion's SQL returns the gold result (the eval's EX), else 0.0."""
        self.calls += 1
        out = []
        for completion, key in zip(completions, example_id):
            example = self.examples[key]
            schema = self.scorer.db(example.db_paths[0]).schema(0)
            sql, _ = self._sql(completion, schema.dialect)
            if sql is None:
                out.append(0.0)
                continue
            out.append(1.0 if self.scorer.score_sql(example, schema, sql).ex else 0.0)
        return out

    def format(self, prompts, completions, **_) -> list[float]:
        """1.0 where the completion is one SQL statement and nothing else (at most a semicolon added)."""
        out = []
        for completion in completions:
            sql, fixes = self._sql(completion)
            out.append(1.0 if sql is not None and not (set(fixes) - {"semicolon"}) else 0.0)
        return out

    def close(self) -> None:
        self.scorer.close()


@dataclass
class Screened:
    """What :func:`screen` found: the kept rows, and per screened prompt its execution rewards."""

    rows: list[dict[str, Any]]
    groups: dict[str, list[float]] = field(default_factory=dict)  # example id -> execution reward per sample
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        rewards = [r for group in self.groups.values() for r in group]
        kept = {row["example_id"] for row in self.rows}
        spread = {"all right": sum(1 for g in self.groups.values() if min(g) == 1.0),
                  "all wrong": sum(1 for g in self.groups.values() if max(g) == 0.0)}
        return {"screened": len(self.groups), "kept": len(self.rows), "skipped": spread,
                "execution_reward_screened": round(statistics.fmean(rewards), 4) if rewards else None,
                "execution_reward_kept": round(statistics.fmean(r for k in kept for r in self.groups[k]), 4)
                if kept else None, "seconds": round(self.seconds, 1), "kept_ids": sorted(kept)}


def screen(model, tokenizer, rows: Sequence[dict[str, Any]], rewards: "Rewards", recipe: Recipe, want: int,
           progress: bool = True) -> Screened:
    """Keep the first ``want`` of ``rows`` whose execution rewards differ within a group of
    ``grpo.num_generations`` completions sampled from ``model`` with the trainer's sampling
    (temperature, completion length; no top-k or top-p), the prompts that give GRPO a gradient.
    (Not the transformers backend's ``generate``: that one samples as inference does, with
    top-p and the model's default top-k, where the screen must sample as TRL's trainer will.)"""
    import torch

    g = recipe.grpo
    assert g is not None
    found = Screened(rows=[])
    start = time.perf_counter()
    was_training, cache = model.training, model.config.use_cache
    model.eval()
    model.config.use_cache = True
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=want, desc="screening prompts (mixed rewards kept)", unit="prompt")
    try:
        for row in rows:
            if len(found.rows) >= want:
                break
            text = data.prompt_text(tokenizer, row["prompt"])
            inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
            with torch.no_grad():
                out = model.generate(**inputs, do_sample=True, temperature=g.temperature, top_k=0, top_p=1.0,
                                     max_new_tokens=g.max_completion_length, num_return_sequences=g.num_generations,
                                     pad_token_id=tokenizer.pad_token_id)
            completions = tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
            group = rewards.execution(None, completions, [row["example_id"]] * len(completions))
            found.groups[row["example_id"]] = group
            if min(group) != max(group):
                found.rows.append(row)
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.set_postfix(screened=len(found.groups))
    finally:
        if bar is not None:
            bar.close()
        model.config.use_cache = cache
        if was_training:
            model.train()
    found.seconds = time.perf_counter() - start
    return found


def per_epoch(entries: Sequence[dict], key: str = "reward") -> list[list[tuple[int, float]]]:
    """The logged ``key`` as (step, value) pairs, one list per epoch: of the logged entries, the
    last one per step (a resumed run logs again the steps after its checkpoint). An epoch is one
    pass over the prompts (TRL's sampler drops an incomplete last group). Each entry is the mean
    since the previous one: with ``logging_steps`` above 1 an entry can straddle two epochs."""
    last = {entry["step"]: entry for entry in entries if key in entry and "epoch" in entry and "step" in entry}
    groups: dict[int, list[tuple[int, float]]] = {}
    for step in sorted(last):
        groups.setdefault(max(1, math.ceil(round(last[step]["epoch"], 6))), []).append((step, last[step][key]))
    return [groups[epoch] for epoch in sorted(groups)]


def by_epoch(entries: Sequence[dict], key: str = "reward") -> list[float]:
    """The mean of a logged value per epoch (:func:`per_epoch`). Epochs see the same prompts, so
    they compare like with like, where one step's reward mostly says how hard its prompts were."""
    return [round(statistics.fmean(value for _, value in group), 4) for group in per_epoch(entries, key)]


def _selected(folder: run.RunFolder, model, tokenizer, rows: list[dict[str, Any]], rewards: Rewards, recipe: Recipe,
              want: int, resume: bool) -> list[dict[str, Any]]:
    """With ``grpo.select: mixed``, the rows to train on: a resumed run's earlier choice (its ids are
    in train.json: a new screen would sample other groups), else a new screen, recorded."""
    record = folder.record()
    earlier = record.get("data", {}).get("screen")
    if resume and earlier:
        ids = set(earlier["kept_ids"])
        return [row for row in rows if row["example_id"] in ids]
    found = screen(model, tokenizer, rows, rewards, recipe, want)
    summary = found.summary()
    skipped = summary["skipped"]
    print(f"screen: {len(found.rows)} of {len(found.groups)} prompts have mixed execution rewards "
          f"({skipped['all right']} all right, {skipped['all wrong']} all wrong) in {found.seconds / 60:.1f} min",
          flush=True)
    if not found.rows:
        raise InputError(f"none of the {len(found.groups)} screened prompts had mixed execution rewards: GRPO would "
                         f"learn nothing from them (screen more with grpo.screen_limit, or use grpo.select all)")
    folder.update(data={**record.get("data", {}), "candidates": len(rows), "kept": len(found.rows), "screen": summary})
    return found.rows


def train(recipe: Recipe, data_arg: str, out: Path, *, db: str | None = None, from_run: Path | None = None,
          resume: bool = False) -> dict[str, Any]:
    if recipe.grpo is None:
        raise InputError(f"recipe {recipe.name} has no grpo section; GRPO needs a grpo recipe")
    base, source, continue_from = run.start(recipe, out, data_arg, db, from_run, resume)
    from datasets import Dataset as HFDataset
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = loading.load_tokenizer(base)
    tokenizer.padding_side = "left"  # generation pads on the left
    settings = run.settings_for(recipe)

    g = recipe.grpo
    dataset = data.load(data_arg, db=db)
    want = recipe.data.max_examples
    # with select mixed, the prompts to screen: more than are kept
    chosen = override(recipe, **{"data.max_examples": g.screen_limit or 4 * want}) if g.select == "mixed" else recipe
    train_examples, dev_slice = run.split_dev(dataset, chosen, run.dev_split(data_arg, recipe))
    prepared = data.prepare(train_examples, settings, data.TokenCounter(tokenizer),
                           source=data_arg, quote_strings=recipe.data.quote_strings)
    limit = recipe.model.max_length - g.max_completion_length
    rows, too_long = [], 0
    for item in prepared.examples:
        if len(tokenizer(data.prompt_text(tokenizer, item.messages), add_special_tokens=False)["input_ids"]) > limit:
            too_long += 1
            continue
        rows.append({"prompt": item.messages, "example_id": item.id})
    if too_long:
        prepared.dropped[f"prompt longer than {limit} tokens"] += too_long
    if not rows:
        raise InputError(f"no training example left from {data_arg}: {dict(prepared.dropped)}")
    summary = {**prepared.summary(), "kept": len(rows), "dev_examples": len(dev_slice)}
    noun = "prompts to screen" if g.select == "mixed" else "prompts"
    print(f"data: {len(rows)} {noun} from {data_arg}; dropped {dict(prepared.dropped) or 'none'}", flush=True)

    folder = run.begin(out, recipe, resume=resume, method="grpo", source=source, base=base.to_dict(), data=summary,
                       from_run=str(from_run) if from_run else None)
    model = run.load_trainable(recipe, base, continue_from, folder, tokenizer)
    save_best = run.saver(folder, recipe, tokenizer)
    semantics = data.semantics(data_arg)
    hooks, dev_ex, interrupt = run.callbacks(folder, recipe, dev_slice, tokenizer, folder.path.name, save_best,
                                             settings, semantics=semantics)
    by_id = {ex.id: ex for ex in train_examples}
    rewards = Rewards([by_id[r["example_id"]] for r in rows], timeout=g.timeout, semantics=semantics)
    if g.select == "mixed":
        rows = _selected(folder, model, tokenizer, rows, rewards, recipe, want or len(rows), resume)

    def execution_reward(prompts, completions, **kw):
        return rewards.execution(prompts, completions, **kw)

    def format_reward(prompts, completions, **kw):
        return rewards.format(prompts, completions, **kw)

    args = run.trainer_args(recipe, folder, GRPOConfig, num_generations=g.num_generations,
                            max_completion_length=g.max_completion_length, temperature=g.temperature, beta=g.beta,
                            reward_weights=[g.execution_weight, g.format_weight], log_completions=False)
    trainer = GRPOTrainer(model=model, reward_funcs=[execution_reward, format_reward], args=args,
                          train_dataset=HFDataset.from_list(rows), processing_class=tokenizer, callbacks=hooks)
    checkpoint = folder.last_checkpoint() if resume else None
    clock = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        rewards.close()
    seconds = time.perf_counter() - clock
    if not dev_slice or not recipe.training.keep_best or dev_ex.best is None:
        save_best(trainer.model)  # no dev score to choose by: the last weights
    trainer.model.save_pretrained(folder.path / "final")
    rewards_log = [e for e in folder.entries() if "reward" in e]
    result = {"steps": trainer.state.global_step, "seconds": round(seconds, 1),
              "first_reward": rewards_log[0]["reward"] if rewards_log else None,
              "last_reward": rewards_log[-1]["reward"] if rewards_log else None,
              "reward_by_epoch": by_epoch(rewards_log),
              "execution_reward_by_epoch": by_epoch(rewards_log, "rewards/execution_reward/mean")}
    folder.update(finished=time.strftime("%Y-%m-%dT%H:%M:%S"), global_step=trainer.state.global_step,
                  interrupted=interrupt.stopped, speed=result)
    run.plot_loss(folder)
    epochs = " -> ".join(f"{r:.3f}" for r in result["reward_by_epoch"])
    print(f"GRPO: {result['steps']} steps in {seconds / 60:.1f} min, mean reward by epoch {epochs or 'none logged'}"
          f"{run.interrupted_note(interrupt)} -> {out}", flush=True)
    return result
