"""Supervised fine-tuning (LoRA, QLoRA, full) through TRL's SFTTrainer.

The examples are rendered and tokenized by :mod:`.data` (inference's prompts, completion
mask); TRL builds the labels from the mask (prompt tokens are -100), and its fused LM head
projects only the label positions through the vocabulary, so a 450-token example with a
30-token answer pays the 150k-wide output layer 30 times, not 450.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from . import data, model as loading, run
from .recipes import Recipe


@dataclass
class Result:
    out: Path
    steps: int
    examples: int
    seconds: float
    tokens: int
    best: dict[str, Any] | None
    interrupted: bool

    @property
    def examples_per_hour(self) -> float:
        return 3600 * self.examples / self.seconds if self.seconds else 0.0


def label_loss(model, inputs):
    """(summed cross-entropy over the label tokens, their logits, their targets), the LM head
    applied only at the positions whose next token is a label."""
    import torch
    import torch.nn.functional as F

    labels = inputs["labels"]
    _, cols = torch.nonzero(labels[:, 1:] != -100, as_tuple=True)
    keep = torch.unique(cols)  # logits at position t predict token t + 1
    forward = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids") if k in inputs}
    logits = model(**forward, use_cache=False, logits_to_keep=keep).logits.float()  # [B, len(keep), V]
    target = labels[:, 1:][:, keep]
    total = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100,
                            reduction="sum")
    return total, logits, target


def _trainer_class(seen: dict[str, int]):
    """TRL's SFTTrainer with the loss computed from the logits of the label positions only.

    (TRL's fused LM head does the same on GPUs with Triton; its fallback elsewhere, the CPU
    included, scores every position through the whole 151,936-token vocabulary, which on a
    2-core CPU costs more than the model.) Batches come from :func:`slimsql.train.data.collate`
    (prefix packs with their 4-D mask); ``seen["examples"]`` counts the examples trained."""
    import torch
    from trl import SFTTrainer

    class Trainer(SFTTrainer):
        loss_is_scaled_for_ga = True  # compute_loss divides by the label tokens of the accumulated batch

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            examples = inputs.get("examples")
            total, logits, target = label_loss(model, inputs)
            valid = (target != -100).sum()
            count = num_items_in_batch if num_items_in_batch is not None else \
                valid * self.current_gradient_accumulation_steps
            loss = total / torch.as_tensor(count, device=total.device).clamp(min=1)
            mode = "train" if model.training else "eval"
            with torch.no_grad():
                hits = ((logits.argmax(-1) == target) & (target != -100)).sum()
                self._metrics[mode]["mean_token_accuracy"].append(float(hits) / max(1, int(valid)))
            if model.training and examples is not None:
                seen["examples"] += int(examples.sum())
            return (loss, None) if return_outputs else loss

        def _get_num_items_in_batch(self, batch_samples, device):  # label tokens, as the loss counts them
            count = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batch_samples)
            return torch.tensor(count, device=device)

    return Trainer


def sample_shape(recipe: Recipe, data_arg: str, *, db: str | None = None, databases: int = 10) -> dict[str, float]:
    """The lengths a run on ``data_arg`` trains, measured on the examples of a few of its
    databases (all of each, so prefix packs are as full as in the run): for ``train plan``."""
    import random
    import statistics

    base = loading.resolve_base(recipe.model.base)
    tokenizer = loading.load_tokenizer(base)
    train_examples, _ = run.split_dev(data.load(data_arg, db=db), recipe, None)
    by_db: dict[str, list] = {}
    for ex in train_examples:
        by_db.setdefault(ex.db_id, []).append(ex)
    chosen = random.Random(recipe.data.seed).sample(sorted(by_db), min(databases, len(by_db)))
    examples = [ex for db_id in chosen for ex in by_db[db_id]]
    prepared = data.prepare(examples, run.settings_for(recipe), data.TokenCounter(tokenizer),
                           source=data_arg, quote_strings=recipe.data.quote_strings)
    rows = data.tokenized(tokenizer, prepared, recipe.model.max_length)
    if not rows:
        raise InputError(f"no usable example among {len(examples)} of {data_arg}: {dict(prepared.dropped)}")
    packs = data.pack(rows, recipe.model.max_length) if recipe.training.packing else data.unpacked(rows)
    return {"examples_measured": len(rows), "databases": len(chosen),
            "tokens_per_example": statistics.mean(len(r["input_ids"]) for r in rows),
            "completion_tokens": statistics.mean(sum(r["completion_mask"]) for r in rows),
            "tokens_per_sequence": statistics.mean(len(p["input_ids"]) for p in packs),
            "examples_per_sequence": len(rows) / len(packs), "train_examples": len(train_examples)}


def train(recipe: Recipe, data_arg: str, out: Path, *, db: str | None = None, from_run: Path | None = None,
          resume: bool = False) -> Result:
    base, source, continue_from = run.start(recipe, out, data_arg, db, from_run, resume)
    from datasets import Dataset as HFDataset
    from trl import SFTConfig

    tokenizer = loading.load_tokenizer(base)
    settings = run.settings_for(recipe)

    dataset = data.load(data_arg, db=db)
    train_examples, dev_slice = run.split_dev(dataset, recipe, run.dev_split(data_arg, recipe))
    counter = data.TokenCounter(tokenizer)
    started = time.perf_counter()
    prepared = data.prepare(train_examples, settings, counter,
                           source=data_arg, quote_strings=recipe.data.quote_strings)
    rows = data.tokenized(tokenizer, prepared, recipe.model.max_length)
    if not rows:
        raise InputError(f"no training example left from {data_arg}: {prepared.summary()['dropped']}")
    prep_s = time.perf_counter() - started
    tokens = sum(len(r["input_ids"]) for r in rows)
    answer_tokens = sum(sum(r["completion_mask"]) for r in rows)
    summary = {**prepared.summary(), "kept": len(rows), "tokens": tokens, "mean_tokens": round(tokens / len(rows), 1),
               "mean_completion_tokens": round(answer_tokens / len(rows), 1), "dev_examples": len(dev_slice),
               "prepare_s": round(prep_s, 1)}
    print(f"data: {summary['kept']} examples ({summary['mean_tokens']} tokens each on average) from {data_arg}; "
          f"dropped {summary['dropped'] or 'none'}; dev slice {len(dev_slice)}", flush=True)

    folder = run.begin(out, recipe, resume=resume, method=recipe.method, source=source, base=base.to_dict(),
                       data=summary, from_run=str(from_run) if from_run else None)
    model = run.load_trainable(recipe, base, continue_from, folder, tokenizer)
    trained, total = loading.count_parameters(model)
    print(f"model: {base.name}, {recipe.method}, {trained:,} of {total:,} parameters trained", flush=True)
    save_best = run.saver(folder, recipe, tokenizer)

    seen = {"examples": 0}
    hooks, dev_ex, interrupt = run.callbacks(folder, recipe, dev_slice, tokenizer, folder.path.name, save_best,
                                             settings, seen, semantics=data.semantics(data_arg))
    if not recipe.training.completion_only:  # the loss on every token, the prompt's too
        rows = [{**r, "completion_mask": [1] * len(r["input_ids"])} for r in rows]
    if recipe.training.packing:  # (the recipe checks it trains completion-only, with sdpa attention)
        packs = data.pack(rows, recipe.model.max_length, recipe.data.seed)
    else:
        packs = data.unpacked(rows)
    folder.update(data={**summary, "sequences": len(packs),
                        "sequence_tokens": sum(len(p["input_ids"]) for p in packs)})
    args = run.trainer_args(recipe, folder, SFTConfig, max_length=None, packing=False, completion_only_loss=True,
                            remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True})
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    trainer = _trainer_class(seen)(model=model, args=args, train_dataset=HFDataset.from_list(packs),
                                   processing_class=tokenizer, callbacks=hooks,
                                   data_collator=lambda batch: data.collate(batch, pad))
    checkpoint = folder.last_checkpoint() if resume else None
    clock = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.perf_counter() - clock
    state = trainer.state
    done_steps = state.global_step - (int(checkpoint.name.split("-")[-1]) if checkpoint else 0)
    examples_done = seen["examples"]
    if not dev_slice or not recipe.training.keep_best or dev_ex.best is None:
        save_best(trainer.model)  # no dev score to choose by: the last weights
    final = folder.path / "final"
    trainer.model.save_pretrained(final)
    speed = {"steps": done_steps, "seconds": round(seconds, 1), "examples": examples_done,
             "examples_per_hour": round(3600 * examples_done / seconds, 1) if seconds else None,
             "example_tokens_per_second": round(examples_done * summary["mean_tokens"] / seconds, 1)
             if seconds else None}
    folder.update(finished=time.strftime("%Y-%m-%dT%H:%M:%S"), global_step=state.global_step,
                  interrupted=interrupt.stopped, speed=speed)
    run.plot_loss(folder)
    best = folder.record().get("best")
    print(f"trained {done_steps} steps in {seconds / 60:.1f} min ({speed['examples_per_hour']} examples/h)"
          f"{run.interrupted_note(interrupt)} -> {out}", flush=True)
    return Result(out=Path(out), steps=done_steps, examples=examples_done, seconds=seconds,
                  tokens=int(examples_done * summary["mean_tokens"]), best=best, interrupted=interrupt.stopped)
