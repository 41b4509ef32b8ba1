"""What SFT and GRPO runs share: the run folder, its record, and the trainer callbacks.

A run folder::

    RUN/train.json        what was trained: recipe, base, prompt settings, data counts, best EX
    RUN/log.jsonl         one line per logged step (loss, learning rate, ...) and per dev score
    RUN/checkpoints/      the trainer's checkpoints (``--resume`` continues from the last)
    RUN/adapter/          the LoRA adapter with the best dev EX (or the last, without a dev slice)
    RUN/model/            the same for a full fine-tune (whole weights)
    RUN/base/             the base's config and tokenizer (export reads them)
    RUN/evals/step-N/     each dev-slice evaluation, an eval run folder (report.md, predictions)
    RUN/loss.png          the loss curve

The dev slice is scored through the evaluation's own road (:func:`slimsql.eval.runner.run`,
greedy ``fast`` preset with the run's prompt settings), so "best checkpoint by EX" means what
``slimsql eval`` would say.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..eval.datasets import Dataset, Example
from ..infer import Settings
from ..infer import resolve as resolve_settings
from .recipes import Recipe

FORMAT = 1


def settings_for(recipe: Recipe) -> Settings:
    """The prompt settings a recipe trains with: the greedy ``fast`` preset with its style,
    sample values and pruning. The export records them, so asking the model later uses them."""
    return resolve_settings("fast", style=recipe.data.style, samples=recipe.data.samples,
                            prune_tokens=recipe.data.prune_tokens)


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def record_path(self) -> Path:
        return self.path / "train.json"

    def record(self) -> dict[str, Any]:
        try:
            return json.loads(self.record_path.read_text())
        except FileNotFoundError:
            raise InputError(f"{self.path} is not a training run (no train.json)") from None
        except ValueError:
            raise InputError(f"{self.record_path} is not valid JSON") from None

    def write(self, record: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2, default=str))
        tmp.replace(self.record_path)

    def update(self, **changes: Any) -> None:
        record = self.record()
        record.update(changes)
        self.write(record)

    def log(self, entry: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with (self.path / "log.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")

    def entries(self) -> list[dict[str, Any]]:
        path = self.path / "log.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def last_checkpoint(self) -> Path | None:
        found = sorted((self.path / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        return found[-1] if found else None


def begin(out: Path, recipe: Recipe, *, resume: bool, method: str, **record: Any) -> RunFolder:
    """A new run folder (refusing to overwrite another run), or the existing one to resume."""
    folder = RunFolder(out)
    if folder.record_path.exists():
        if not resume:
            raise InputError(f"{out} already holds a run; use --resume to continue it or another --out")
        old = folder.record()
        if old.get("recipe_config") != json.loads(json.dumps(recipe.to_dict())):  # as stored (lists, not tuples)
            raise InputError(f"{out} was trained with other recipe settings; resume it with the same recipe and flags")
        return folder
    if resume:
        raise InputError(f"nothing to resume in {out} (no train.json)")
    folder.write({"format": FORMAT, "name": folder.path.name, "method": method, "recipe": recipe.name,
                  "recipe_config": recipe.to_dict(), "style": recipe.data.style, "samples": recipe.data.samples,
                  "prune_tokens": recipe.data.prune_tokens, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                  "adapter": None, "model": None, **record})
    return folder


def split_dev(dataset: Dataset, recipe: Recipe, dev: Dataset | None) -> tuple[list[Example], list[Example]]:
    """(train examples, dev slice). The dev slice comes from ``dev`` (another split) when given,
    else it is held out of ``dataset``: never a training example."""
    from .data import pick

    count = recipe.data.eval_examples
    if dev is not None:
        dev_slice = [ex for ex in pick(dev, count, recipe.data.seed) if ex.executable] if count else []
        train = pick(dataset, recipe.data.max_examples, recipe.data.seed)
        return train, dev_slice
    shuffled = [ex for ex in pick(dataset, 0, recipe.data.seed)]
    held = [ex for ex in shuffled if ex.executable][:count] if count else []
    held_ids = {ex.id for ex in held}
    rest = [ex for ex in shuffled if ex.id not in held_ids]
    return (rest[:recipe.data.max_examples] if recipe.data.max_examples else rest), held


def callbacks(folder: RunFolder, recipe: Recipe, dev_slice: list[Example], tokenizer, name: str,
              save_best, settings: Settings, seen: dict[str, int] | None = None):
    """Log, score the dev slice by execution (keeping the best), stop cleanly on Ctrl-C.
    ``seen["examples"]``, when given, is logged as the examples trained so far."""
    from transformers import TrainerCallback

    class Log(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                extra = {"examples": seen["examples"]} if seen is not None else {}
                folder.log({"step": state.global_step, "epoch": round(state.epoch or 0, 4),
                            "time": round(time.time(), 1), **extra,
                            **{k: v for k, v in logs.items() if isinstance(v, (int, float))}})

    class DevEX(TrainerCallback):
        """Every ``eval_steps`` (and at the end): EX on the dev slice through the eval road."""

        def __init__(self):
            self.best: float | None = None
            self.last_step = -1

        def score(self, model, step: int) -> float:
            from ..backends.transformers import TransformersBackend
            from ..eval.runner import RunConfig, run

            backend = TransformersBackend.wrap(model, tokenizer, name)
            dataset = Dataset("dev-slice", "dev", list(dev_slice))
            config = RunConfig.for_settings(settings, dataset="dev-slice", split="dev", model=name,
                                            backend="transformers", preset="fast")
            was_training = model.training
            model.eval()
            model.config.use_cache = True
            try:
                summary = run(dataset, backend, folder.path / "evals" / f"step-{step}", config, settings,
                              show_progress=False)
            finally:
                model.config.use_cache = False
                if was_training:
                    model.train()
            return float(summary.get("ex") or 0.0)

        def evaluate(self, model, state) -> None:
            if not dev_slice or state.global_step == self.last_step:
                return
            self.last_step = state.global_step
            start = time.perf_counter()
            ex = self.score(model, state.global_step)
            better = self.best is None or ex > self.best
            folder.log({"step": state.global_step, "dev_ex": ex, "dev_examples": len(dev_slice),
                        "eval_s": round(time.perf_counter() - start, 1), "best": better})
            print(f"step {state.global_step}: dev EX {100 * ex:.1f}% on {len(dev_slice)} held-out examples"
                  + (" (best so far, kept)" if better else f" (best {100 * self.best:.1f}%)"), flush=True)
            if better and recipe.training.keep_best:
                self.best = ex
                save_best(model)
                folder.update(best={"step": state.global_step, "dev_ex": ex, "dev_examples": len(dev_slice)})
            elif self.best is None or ex > self.best:
                self.best = ex

        def on_step_end(self, args, state, control, model=None, **kwargs):
            every = recipe.training.eval_steps
            if every and state.global_step % every == 0:
                self.evaluate(model, state)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            if not interrupt.stopped:
                self.evaluate(model, state)

    class Interrupt(TrainerCallback):
        """The first Ctrl-C ends the run after the current step with a saved checkpoint; the
        second stops at once."""

        def __init__(self):
            self.stopped = False
            self.previous = None

        def on_train_begin(self, args, state, control, **kwargs):
            def handler(signum, frame):
                if self.stopped:
                    raise KeyboardInterrupt
                self.stopped = True
                print("\nstopping after this step, saving a checkpoint (Ctrl-C again to stop now)", flush=True)

            try:
                self.previous = signal.signal(signal.SIGINT, handler)
            except ValueError:  # not the main thread
                self.previous = None

        def on_step_end(self, args, state, control, **kwargs):
            if self.stopped:
                control.should_save = True
                control.should_training_stop = True

        def on_train_end(self, args, state, control, **kwargs):
            if self.previous is not None:
                signal.signal(signal.SIGINT, self.previous)

    interrupt = Interrupt()
    dev_ex = DevEX()
    return [Log(), dev_ex, interrupt], dev_ex, interrupt


def trainer_args(recipe: Recipe, folder: RunFolder, config_class, **extra: Any):
    """The recipe's training section as TRL's (transformers') arguments."""
    t = recipe.training
    import torch

    cuda = torch.cuda.is_available()
    dtype = recipe.model.dtype
    from dataclasses import fields

    names = {f.name for f in fields(config_class)}  # transformers 5 renames gradient to activation checkpointing
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    extra[checkpointing] = recipe.model.gradient_checkpointing
    return config_class(
        output_dir=str(folder.path / "checkpoints"), per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum, learning_rate=t.learning_rate, lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_steps or t.warmup_ratio, num_train_epochs=t.epochs,
        max_steps=t.max_steps if t.max_steps else -1, optim=t.optimizer, weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm, logging_steps=t.logging_steps, save_steps=t.save_steps,
        save_total_limit=t.save_total_limit, seed=t.seed, data_seed=recipe.data.seed, report_to=[],
        bf16=dtype == "bfloat16", fp16=dtype == "float16" and cuda, use_cpu=not cuda,
        dataloader_num_workers=0,
        logging_first_step=True, disable_tqdm=False, save_only_model=False, **extra)


def plot_loss(folder: RunFolder) -> Path | None:
    """``loss.png`` from the log (None without matplotlib or without logged losses)."""
    entries = [e for e in folder.entries() if "loss" in e]
    if not entries:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([e["step"] for e in entries], [e["loss"] for e in entries], label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    dev = [e for e in folder.entries() if "dev_ex" in e]
    if dev:
        other = ax.twinx()
        other.plot([e["step"] for e in dev], [100 * e["dev_ex"] for e in dev], "o-", color="tab:green",
                   label="dev EX %")
        other.set_ylabel("dev EX %")
    ax.set_title(folder.path.name)
    fig.tight_layout()
    out = folder.path / "loss.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def interrupted_note(interrupt) -> str:
    return " (stopped by Ctrl-C; --resume continues from the saved checkpoint)" if interrupt.stopped else ""

