"""`slimsql train plan`'s time estimate against a measured run.

Reads a finished run folder: the examples per hour of training (first to last logged step, less
the dev-slice evaluations between them); the measured seconds per optimizer step are the median interval
between consecutive logged steps (intervals holding a dev-slice evaluation left out); the plan
is computed for the same recipe with the run's own measured shape (tokens per packed sequence,
examples per sequence, answer tokens per example) and this machine's matmul rate, measured now.

    python benchmarks/train_plan_check.py runs/ft-q05   # -> benchmarks/results/train-plan-check-<run>.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--completion-tokens", type=float,
                        help="answer tokens per example, for runs that did not record it")
    parser.add_argument("--out")
    args = parser.parse_args()

    from slimsql.train import plan, run

    folder = run.RunFolder(Path(args.run))
    record = folder.record()
    recipe = run.recipe_of(record)
    entries = folder.entries()
    logged = [e for e in entries if "loss" in e and "time" in e]
    evals = sorted(e["step"] for e in entries if "dev_ex" in e)
    intervals = []
    for before, after in zip(logged, logged[1:]):
        if any(before["step"] <= step < after["step"] for step in evals):
            continue  # a dev evaluation ran in between
        steps = after["step"] - before["step"]
        if steps > 0:
            intervals.append((after["time"] - before["time"]) / steps)
    measured = statistics.median(intervals)
    # examples per hour of training: first to last logged step, less the dev evaluations between them
    first, last = logged[0], logged[-1]
    evaluating = sum(e.get("eval_s", 0) for e in entries if "dev_ex" in e and first["step"] <= e["step"] <= last["step"])
    trained = last.get("examples", 0) - first.get("examples", 0)
    training_s = last["time"] - first["time"] - evaluating
    shape = record["data"]
    per_sequence = shape["kept"] / shape["sequences"]
    tokens = round(shape["sequence_tokens"] / shape["sequences"])
    completion = args.completion_tokens or shape.get("mean_completion_tokens")
    if completion is None:
        raise SystemExit("the run did not record its answer tokens: pass --completion-tokens")
    estimate = plan.plan(recipe, tokens_per_example=tokens, completion_tokens=round(completion),
                         examples_per_sequence=per_sequence, examples=shape["kept"])
    checked = estimate.calibrate(measured)
    report = {"benchmark": "train_plan_check", "run": str(args.run), "recipe": recipe.name,
              "sequences": shape["sequences"], "tokens_per_sequence": tokens,
              "examples_per_sequence": round(per_sequence, 2), "completion_tokens": completion,
              "measured_seconds_per_step": round(measured, 2), "intervals": len(intervals),
              "examples_trained_between_first_and_last_log": trained,
              "training_minutes_without_dev_evaluations": round(training_s / 60, 1),
              "dev_evaluation_minutes": round(evaluating / 60, 1),
              "examples_per_hour_of_training": round(3600 * trained / training_s) if training_s > 0 else None,
              "estimated_seconds_per_step": round(estimate.seconds_per_step, 2),
              "measured_over_estimate": round(checked.ratio, 2),
              "matmul_gflops": round(estimate.throughput / 1e9, 1), "efficiency": estimate.efficiency,
              "estimated_peak_gib": round(estimate.total_bytes / 2 ** 30, 2),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "plan": plan.format_plan(checked).splitlines()}
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"train-plan-check-{Path(args.run).name}.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(plan.format_plan(checked))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
