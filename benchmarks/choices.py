"""How well does the road choose? Re-score every candidate in a run's traces.

For each scored example of an eval run folder, every candidate the road produced
(stored in the record's trace) is executed again and scored against the gold
query with the same scoring code as ``slimsql eval``. That gives, on exactly the
candidates the run saw:

* the greedy candidate alone (candidate 0), the first that ran, the vote as run;
* the ceiling of any choice: some candidate is right;
* the vote under alternative rules (``--rules``), for ablations of the choose step.

No model runs; writes ``choices.json`` into the run folder.

    python benchmarks/choices.py runs/s100-default
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from slimsql.eval import datasets
from slimsql.eval.runner import Scorer
from slimsql.eval.store import RunFolder
from slimsql.infer import choose
from slimsql.infer.trace import Trace

SPIDER = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "spider"


def _vote(trace: Trace, nonempty_first: bool, logprob_ties: bool) -> int | None:
    ran = [t for t in trace.trials if t.ran]
    if not ran:
        return None
    pool = ([t for t in ran if t.rows] or ran) if nonempty_first else ran
    if not logprob_ties:
        pool = [replace(t, logprob=None) for t in pool]
    return choose.vote(Trace(trace.strategy, pool), pool).index


#: Alternative choose rules measured on the run's own candidates.
RULES = {
    "vote_nonempty_first": lambda trace: _vote(trace, True, True),
    "vote_ties_to_earliest": lambda trace: _vote(trace, False, False),
    "vote_nonempty_first_ties_to_earliest": lambda trace: _vote(trace, True, False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, default=SPIDER)
    args = parser.parse_args()
    folder = RunFolder(args.run)
    config = folder.config()
    dataset = datasets.load_spider(args.data, config["split"])
    examples = {ex.id: ex for ex in dataset.examples}
    scorer = Scorer(config.get("semantics", "spider"), 30.0)
    counts = {"examples": 0, "greedy": 0, "first_ran": 0, "chosen": 0, "ceiling": 0, **{k: 0 for k in RULES}}
    try:
        for record in folder.records():
            example = examples.get(record["id"])
            if example is None or not example.executable or "trace" not in record:
                continue
            trace = Trace.from_dict(record["trace"])
            schema = scorer.db(example.db_paths[0]).schema(0)
            right: dict[str, bool] = {}
            for t in trace.trials:
                if t.sql and t.ran and t.sql not in right:
                    scored = scorer.score(example, schema, {"pred_sql": t.sql, "executable": True})
                    right[t.sql] = bool(scored.get("ex"))
            ok = lambda index: index is not None and right.get(trace.trials[index].sql, False)  # noqa: E731
            counts["examples"] += 1
            counts["greedy"] += ok(0)
            counts["first_ran"] += ok(next((t.index for t in trace.trials if t.ran), None))
            counts["chosen"] += ok(trace.chosen)
            counts["ceiling"] += any(right.values())
            for name, rule in RULES.items():
                counts[name] += ok(rule(trace))
    finally:
        scorer.close()
    n = counts["examples"] or 1
    result = {**counts, **{f"{k}_ex": round(v / n, 4) for k, v in counts.items() if k != "examples"}}
    (args.run / "choices.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
