"""Training speed on this machine: examples per hour, tokens per second, peak memory.

Runs ``slimsql train sft``'s own code (:func:`slimsql.train.sft.train`) for a few steps on
realistic Spider train examples, one variant per fresh process (so peak memory is its own):

* ``plain``: LoRA on every linear layer of all 24 layers, the full schema prompt, and TRL's
  stock loss (which on a CPU scores every position through the 151,936-token vocabulary);
* ``recipe``: the shipped CPU recipe (``qwen2.5-coder-0.5b/lora``) as it is: prefix packing, the
  adapter on the top layers only, the loss from the label positions' logits only;
* further variants change one thing of the recipe (see VARIANTS).

Every optimizer step is one sequence (batch 1, no accumulation) and is logged with the examples
trained so far; the speed is taken from that log after the first ``--warmup`` steps.

    python benchmarks/train_speed.py --variants plain,recipe   # -> benchmarks/results/train-speed-<recipe>.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "qwen2.5-coder-0.5b/lora"
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
#: variant -> (recipe overrides, use TRL's stock loss)
VARIANTS = {
    "plain": ({"lora.top_layers": 0, "lora.target_modules": tuple(ALL_LINEAR), "data.prune_tokens": 0,
               "training.packing": False}, True),
    "recipe": ({}, False),
    "recipe-unpacked": ({"training.packing": False}, False),
    "recipe-all-layers": ({"lora.top_layers": 0}, False),
}


def sample(per_db: int, dbs: int, seed: int, folder: Path) -> Path:
    """Spider train examples of ``dbs`` seeded databases, ``per_db`` each, as a JSONL file:
    as many questions per database as a run on a few thousand examples has (7,000 examples
    over 140 databases), so prefix packs are as full as in such a run."""
    import random

    from slimsql.train import data

    dataset = data.load("spider")
    by_db: dict[str, list] = {}
    for ex in dataset.examples:
        if ex.executable:
            by_db.setdefault(ex.db_id, []).append(ex)
    rng = random.Random(seed)
    chosen = rng.sample(sorted(d for d, exs in by_db.items() if len(exs) >= per_db), dbs)
    path = folder / "sample.jsonl"
    with path.open("w") as handle:
        for db_id in chosen:
            for ex in rng.sample(by_db[db_id], per_db):
                handle.write(json.dumps({"id": ex.id, "question": ex.question, "sql": ex.gold_sql, "db_id": db_id,
                                         "db": str(ex.db_paths[0])}) + "\n")
    return path


def measure(variant: str, recipe_name: str, per_db: int, dbs: int, warmup: int, seed: int) -> dict:
    from slimsql.train import recipes, sft

    changes, stock = VARIANTS[variant]
    recipe = recipes.load(recipe_name)
    recipe = recipes.override(recipe, **{"training.max_steps": 0, "training.epochs": 1.0, "training.batch_size": 1,
                                         "training.grad_accum": 1, "training.logging_steps": 1,
                                         "training.save_steps": 10 ** 6, "training.eval_steps": 0,
                                         "training.warmup_steps": 0, "data.eval_examples": 0,
                                         "data.max_examples": 0, **changes})
    if stock:  # the benchmark's baseline only: TRL's own loss
        from trl import SFTTrainer

        class Stock(SFTTrainer):
            def compute_loss(self, model, inputs, *args, **kwargs):
                inputs.pop("examples", None)
                return super().compute_loss(model, inputs, *args, **kwargs)

        sft._trainer_class = lambda seen: Stock
    folder = Path(tempfile.mkdtemp(prefix="slimsql-train-speed-"))
    out = folder / "run"
    try:
        result = sft.train(recipe, str(sample(per_db, dbs, seed, folder)), out)
        log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
        record = json.loads((out / "train.json").read_text())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    steps = [e for e in log if "loss" in e and "time" in e]
    if stock:  # TRL's loss does not count examples: one example per sequence
        for e in steps:
            e["examples"] = e["step"]
    first, last = steps[min(warmup, len(steps) - 2)], steps[-1]
    seconds, counted = last["time"] - first["time"], last["examples"] - first["examples"]
    tokens = record["data"]["mean_tokens"]
    return {"variant": variant, "recipe_changes": {k: list(v) if isinstance(v, tuple) else v
                                                   for k, v in changes.items()},
            "stock_trl_loss": stock, "packing": recipe.training.packing, "top_layers": recipe.lora.top_layers,
            "examples": record["data"]["kept"], "sequences": record["data"].get("sequences"),
            "examples_timed": counted, "seconds_timed": round(seconds, 1),
            "seconds_per_example": round(seconds / counted, 3) if counted else None,
            "examples_per_hour": round(3600 * counted / seconds, 1) if seconds else None,
            "mean_tokens_per_example": tokens,
            "example_tokens_per_second": round(counted * tokens / seconds, 1) if seconds else None,
            "whole_run_examples_per_hour": round(result.examples_per_hour, 1),
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=RECIPE)
    parser.add_argument("--per-db", type=int, default=28, help="examples per database")
    parser.add_argument("--dbs", type=int, default=4, help="databases")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=2, help="first steps not timed")
    parser.add_argument("--variants", default="plain,recipe", help=f"comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--out")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # run one variant in this process, print JSON
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(measure(args.one, args.recipe, args.per_db, args.dbs, args.warmup, args.seed)),
              flush=True)
        return 0
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"train-speed-{args.recipe.replace('/', '-')}.json")
    import platform

    report = {"benchmark": "train_speed", "recipe": args.recipe, "data": "spider train", "per_db": args.per_db,
              "dbs": args.dbs, "seed": args.seed, "warmup_steps": args.warmup, "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "rows": []}
    for variant in args.variants.split(","):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--one", variant, "--recipe", args.recipe,
                               "--per-db", str(args.per_db), "--dbs", str(args.dbs), "--seed", str(args.seed),
                               "--warmup", str(args.warmup)],
                              capture_output=True, text=True, cwd=ROOT)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
            raise SystemExit(f"variant {variant} failed")
        row = json.loads(line[len("RESULT "):])
        row["process_s"] = round(time.perf_counter() - start, 1)
        report["rows"].append(row)
        print(f"{variant}: {row['examples_per_hour']} examples/h, {row['example_tokens_per_second']} example tokens/s, "
              f"{row['mean_tokens_per_example']} tokens/example, peak {row['peak_rss_gib']} GiB", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")  # after every variant: partial results survive
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
