"""Are the candidates of one run worse than another's? Per-candidate scores of two runs.

Two runs of the same questions that made all their candidates (for a vote in stages:
the questions whose first candidates did not agree) are compared candidate by
candidate: how often candidate ``i`` ran, how often it was right (re-scored with the
scoring code of ``slimsql eval``), and how often its text was the same in both runs. A
vote's choice can flip between two runs when a few candidates differ; this tells
whether the candidates themselves got worse, or only the draw changed. Also the median
road time per question in both runs, for the questions B answered early and the others.

    python benchmarks/vote_draws.py A_RUN B_RUN --out benchmarks/results/vote-in-stages/draws.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path

from choices import SPIDER, open_run

from slimsql.eval.store import RunFolder


def proposals(run: Path) -> dict[str, tuple[object, list[dict]]]:
    """Each record's proposal candidates (no repair or merge), by example id."""
    return {r.id: (r, [t for t in (r.trace or {}).get("trials", ()) if t["origin"] == "sample"])
            for r in RunFolder(run).records()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=SPIDER)
    args = parser.parse_args()
    _, config, examples, scorer = open_run(args.a, args.data)
    n = config["settings"]["generation.n"]
    runs = {"a": proposals(args.a), "b": proposals(args.b)}
    counts = {side: {"ran": [0] * n, "right": [0] * n} for side in runs}
    same, questions = [0] * n, 0
    try:
        for id_, (record, trials) in runs["a"].items():
            example = examples.get(id_)
            other = runs["b"].get(id_)
            if example is None or not example.executable or other is None or len(trials) < n or len(other[1]) < n:
                continue
            questions += 1
            schema = scorer.db(example.db_paths[0]).schema(0)
            for side, (rec, made) in (("a", (record, trials)), ("b", other)):
                base = replace(rec.unscored(), trace=None)
                for i, trial in enumerate(made[:n]):
                    if trial.get("signature") is None:
                        continue
                    counts[side]["ran"][i] += 1
                    counts[side]["right"][i] += bool(scorer.score(example, schema, replace(base, pred_sql=trial["sql"])).ex)
            same = [s + (x["raw"] == y["raw"]) for s, x, y in zip(same, trials, other[1])]
    finally:
        scorer.close()
    # per-question road time (median seconds): the questions B answered early, and the others
    times = {}
    for name, early in (("stopped_early", True), ("fully_voted", False)):
        ids = [i for i, (rec, made) in runs["b"].items() if i in runs["a"] and runs["a"][i][1] and made
               and (len(made) < n) == early]
        for side in runs:
            values = sorted(runs[side][i][0].road_s for i in ids)
            times[f"{side}_{name}_median_road_s"] = round(statistics.median(values), 2) if values else None
        times[f"{name}_questions"] = len(ids)
    report = {"a": str(args.a), "b": str(args.b), "questions": questions, "candidates": n, **times,
              "same_text": same, **{f"{side}_{k}": v for side, c in counts.items() for k, v in c.items()},
              "command": "python benchmarks/vote_draws.py " + " ".join(map(str, (args.a, args.b))) + f" --out {args.out}"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
