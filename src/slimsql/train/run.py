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
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..eval.datasets import Dataset, Example
from ..infer import Settings
from ..infer import resolve as resolve_settings
from .model import training_dtype
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
        """The log's entries; a line cut short by a killed process is skipped."""
        path = self.path / "log.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def last_checkpoint(self) -> Path | None:
        found = [(int(p.name.split("-")[-1]), p) for p in (self.path / "checkpoints").glob("checkpoint-*")
                 if p.name.split("-")[-1].isdigit() and p.is_dir()]
        return max(found)[1] if found else None


def recipe_of(record: dict[str, Any]) -> Recipe:
    """The recipe a run was trained with, from its train.json."""
    from .recipes import from_dict

    stored = {k: v for k, v in record["recipe_config"].items() if k != "name" and v is not None}
    return from_dict(stored, record["recipe"])


_UNSET = object()  # a setting a run's record does not have (recorded before it existed)


def _differences(then: Any, now: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, then, now) for each setting that differs; a key missing then is "not set"."""
    if isinstance(then, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(then) | set(now), key=str):
            out += _differences(then.get(key, _UNSET), now.get(key, _UNSET), f"{prefix}{key}.")
        return out
    shown = ["not set" if v is _UNSET else json.dumps(v) for v in (then, now)]
    return [] if then == now else [(prefix.rstrip("."), *shown)]


def check_begin(out: Path, recipe: Recipe, *, resume: bool, source: dict[str, Any]) -> None:
    """Refuse, before anything is loaded or written, a run that would overwrite another, or a
    resume with other recipe settings or other data."""
    folder = RunFolder(out)
    if folder.record_path.exists():
        if not resume:
            raise InputError(f"{out} already holds a run; use --resume to continue it or another --out")
        old = folder.record()
        now = json.loads(json.dumps(recipe.to_dict()))  # as stored (lists, not tuples)
        if old.get("recipe_config") != now:
            changes = ", ".join(f"{key}: {a} then, {b} now" for key, a, b in _differences(old.get("recipe_config"), now))
            raise InputError(f"{out} was trained with other recipe settings ({changes}); resume it with the same "
                             f"recipe and flags (a recipe file that sets them as then)")
        if old.get("source") not in (None, source):
            raise InputError(f"{out} was trained on {old['source']}; resume it with the same --data and --db")
    elif resume:
        raise InputError(f"nothing to resume in {out} (no train.json)")


def begin(out: Path, recipe: Recipe, *, resume: bool, method: str, source: dict[str, Any],
          **record: Any) -> RunFolder:
    """A new run folder (refusing to overwrite another run), or the existing one to resume."""
    check_begin(out, recipe, resume=resume, source=source)
    folder = RunFolder(out)
    if not folder.record_path.exists():
        folder.write({"format": FORMAT, "name": folder.path.name, "method": method, "recipe": recipe.name,
                      "recipe_config": recipe.to_dict(), "style": recipe.data.style, "samples": recipe.data.samples,
                      "prune_tokens": recipe.data.prune_tokens, "dtype": training_dtype(recipe),
                      "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                      "source": source, "adapter": None, "model": None, **record})
    return folder


def check_from(recipe: Recipe, from_run: Path | None, base: dict[str, Any]) -> Path | None:
    """The adapter (or full model) of ``from_run`` to continue from, after checking it was trained
    on the same base with the same prompt settings."""
    if from_run is None:
        return None
    previous = RunFolder(from_run).record()
    same = (previous.get("base", {}).get("sha256") or previous.get("base", {}).get("name")) == \
        (base.get("sha256") or base.get("name"))
    if not same:
        raise InputError(f"{from_run} was trained on {previous.get('base', {}).get('name')}, not {base.get('name')}")
    prompt_then = (previous.get("style"), previous.get("samples"), previous.get("prune_tokens"))
    prompt_now = (recipe.data.style, recipe.data.samples, recipe.data.prune_tokens)
    if prompt_then != prompt_now:
        raise InputError(f"{from_run} was trained with prompt settings (style, samples, prune_tokens) {prompt_then}, "
                         f"this recipe has {prompt_now}: the model would be asked otherwise than it was taught")
    if recipe.lora is None:
        if not previous.get("model"):
            raise InputError(f"{from_run} has no full model to continue from (recipe {recipe.name} trains all weights)")
        return Path(from_run) / previous["model"]
    if not previous.get("adapter"):
        raise InputError(f"{from_run} has no LoRA adapter to continue from")
    return Path(from_run) / previous["adapter"]


def start(recipe: Recipe, out: Path, data_arg: str, db: str | None, from_run: Path | None, resume: bool):
    """Everything checked before a run loads its model or writes a file: the device, the run
    folder, the recipe against its base, the run it continues from. Returns (base, source, from):
    ``from`` is the earlier run's adapter (or full model folder) to continue, or None."""
    from . import model as loading

    loading.require_packages()
    loading.check_device(recipe)
    base = loading.resolve_base(recipe.model.base)
    source = {"data": data_arg, "db": db}
    check_begin(out, recipe, resume=resume, source=source)
    loading.check_recipe(recipe, base)
    note = loading.dtype_note(recipe)
    if note:
        print(note, flush=True)
    return base, source, check_from(recipe, from_run, base.to_dict())


def load_trainable(recipe: Recipe, base, continue_from: Path | None, folder: RunFolder, tokenizer):
    """The model to train: the base (or the full model of an earlier run) in the recipe's dtype,
    made trainable per the recipe; the base's config and tokenizer are kept in ``RUN/base``."""
    from . import model as loading

    full = recipe.lora is None
    loaded_from = replace(base, source=str(continue_from), gguf_file=None) if full and continue_from else base
    model = loading.load_model(loaded_from, recipe)
    loading.save_base(base, tokenizer, model, folder.path / "base")
    return loading.trainable(model, recipe, None if full else continue_from)


def saver(folder: RunFolder, recipe: Recipe, tokenizer):
    """``save(model)``: the adapter to ``RUN/adapter`` (or, with no LoRA, the whole model and its
    tokenizer to ``RUN/model``), recorded in train.json."""
    full = recipe.lora is None

    def save(model) -> None:
        target = folder.path / ("model" if full else "adapter")
        model.save_pretrained(target)
        if full:
            tokenizer.save_pretrained(target)
        folder.update(**({"model": "model"} if full else {"adapter": "adapter"}))

    return save


def dev_split(data_arg: str, recipe: Recipe) -> Dataset | None:
    """The benchmark's dev split, when the recipe takes its dev slice from there
    (``data.eval_split: dev``) and the data names a benchmark; else None (held out)."""
    if recipe.data.eval_split != "dev" or not recipe.data.eval_examples:
        return None
    if data_arg.split(":")[0] in ("spider", "bird"):
        from . import data

        return data.load(data_arg, split="dev")
    return None


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
              save_best, settings: Settings, seen: dict[str, int] | None = None, semantics: str = "spider"):
    """Log, score the dev slice by execution (keeping the best), stop cleanly on Ctrl-C.
    ``seen["examples"]``, when given, is logged as the examples trained so far."""
    from transformers import TrainerCallback

    class Log(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and state.is_world_process_zero:
                extra = {"examples": seen["examples"]} if seen is not None else {}
                folder.log({"step": state.global_step, "epoch": round(state.epoch or 0, 4),
                            "time": round(time.time(), 1), **extra,
                            **{k: v for k, v in logs.items() if isinstance(v, (int, float))}})

    class DevEX(TrainerCallback):
        """Every ``eval_steps`` (and at the end): EX on the dev slice through the eval road."""

        def __init__(self):
            earlier = folder.record().get("best") if folder.record_path.exists() else None
            self.best: float | None = earlier.get("dev_ex") if earlier else None  # a resumed run keeps its best
            self.last_step = -1

        def score(self, model, step: int) -> float:
            from ..backends.transformers import TransformersBackend
            from ..eval.runner import RunConfig, run

            backend = TransformersBackend.wrap(model, tokenizer, name)
            dataset = Dataset("dev-slice", "dev", list(dev_slice))
            config = RunConfig.for_settings(settings, dataset="dev-slice", split="dev", model=name,
                                            backend="transformers", preset="fast", semantics=semantics)
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
            if not dev_slice or state.global_step == self.last_step or not state.is_world_process_zero:
                return  # several processes (accelerate): the main one scores and saves
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
    from dataclasses import fields

    dtype = training_dtype(recipe)
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
    rewards = [e for e in entries if "reward" in e]  # GRPO: the reward says more than its loss
    if dev or rewards:
        other = ax.twinx()
        if dev:
            other.plot([e["step"] for e in dev], [100 * e["dev_ex"] for e in dev], "o-", color="tab:green",
                       label="dev EX %")
        if rewards:
            other.plot([e["step"] for e in rewards], [100 * e["reward"] for e in rewards], ".", color="tab:orange",
                       label="mean reward x 100")
            from .grpo import per_epoch

            for i, group in enumerate(per_epoch(rewards)):  # a segment over each epoch's steps at its mean
                steps, mean = [step for step, _ in group], statistics.fmean(value for _, value in group)
                other.plot([steps[0] - 0.5, steps[-1] + 0.5], [100 * mean] * 2, "-", color="tab:red",
                           label="epoch mean reward x 100" if i == 0 else None)
        other.set_ylabel("dev EX % / reward x 100" if dev and rewards else "dev EX %" if dev else "reward x 100")
        other.legend(loc="lower right", fontsize="small")
    ax.set_title(folder.path.name)
    fig.tight_layout()
    out = folder.path / "loss.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def interrupted_note(interrupt) -> str:
    return " (stopped by Ctrl-C; --resume continues from the saved checkpoint)" if interrupt.stopped else ""

