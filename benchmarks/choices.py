"""Ablations of the choose step on a run's own candidates, with no model run.

Every candidate the road produced for an example is stored in the record's
trace. This script executes each distinct candidate again, scores it against the
gold query with the same scoring code as ``slimsql eval``, and derives what the
road would have answered with one component of the choose step changed:

* ``greedy``: candidate 0 as the model wrote it (no identifier fix, no repair);
* ``first``: the first candidate that ran (identifier fixes and repairs kept);
* ``no-fix``: as run, but candidates that only ran after an identifier fix count as failed;
* ``no-repair``: as run, but without the model repair rounds;
* ``no-empty-rule``: the vote without ranking empty results last;
* ``agree-2``: a vote in stages (``--agree 2``, the default preset's): candidates 0 and 1
  when they ran with one result that has a value, else the run's own vote over all;
* ``ceiling``: some candidate is right (no choice can do better).

Each variant becomes a run folder (``<out>/<variant>/``: config.json, predictions.jsonl,
metrics.json) that ``slimsql eval compare`` reads, so the ablation table has paired
bootstrap CIs on exactly the same examples. Caveat: a variant is derived from the
candidates of the run; where a component changes which later steps run (e.g. with no
fix, a repair round might have been asked for), the derived variant cannot know it.
For ``agree-2`` it can: the road makes the first two candidates, as the run did, and
either stops or goes on to exactly the run's vote. What it cannot reproduce is
llama.cpp's arithmetic, which differs in its last bits with the batch's size (see
slimsql.backends.llama_cpp), so a real run's candidates differ where the model is
nearly undecided.

    python benchmarks/choices.py benchmarks/results/spider-dev-qwen2.5-coder-0.5b-default --out runs/ablate
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Callable

from slimsql.eval import datasets, metrics
from slimsql.eval.scoring import Scorer
from slimsql.eval.store import Record, RunFolder
from slimsql.infer import choose
from slimsql.infer.pipeline import STANDARD_STRINGS, agreed
from slimsql.infer.trace import Trace, Trial

SPIDER = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "spider"


def _vote(trials: list[Trial], *, empty_rule: bool = True) -> Trial | None:
    ran = [t for t in trials if t.ran]
    if not empty_rule:
        ran = [replace(t, empty=False) for t in ran]
    return choose.vote(Trace("vote"), ran) if ran else None


def _choose(trace: Trace, trials: list[Trial]) -> Trial | None:
    """The run's own strategy over ``trials`` (repair trials only count when nothing else ran)."""
    samples = [t for t in trials if t.origin == "sample"]
    pick = _vote(samples) if trace.strategy == "vote" else choose.first(Trace("first"), samples)
    if pick is None:
        pick = next((t for t in trials if t.origin == "repair" and t.ran), None)
    return pick


def _unfixed(t: Trial) -> Trial:
    """``t`` as if no fix were made: failed if a fix made it run (a string rewrite alone
    changes nothing that ran, ``STANDARD_STRINGS``)."""
    if not t.repairs:
        return t
    if set(t.repairs) == {STANDARD_STRINGS}:
        return replace(t, sql=t.extracted)
    return replace(t, sql=t.extracted, signature=None)


def _first_agree(trace: Trace, first: int = 2) -> bool:
    """The first ``first`` proposal candidates ran with one result that has a value (a vote in stages stops)."""
    return agreed([t for t in trace.trials if t.origin == "sample"][:first])


VARIANTS: dict[str, Callable[[Trace], Trial | str | None]] = {
    "greedy": lambda tr: tr.trials[0] if not tr.trials[0].repairs else replace(tr.trials[0], sql=tr.trials[0].extracted),
    "first": lambda tr: next((t for t in tr.trials if t.ran), None),
    "no-fix": lambda tr: _choose(tr, [_unfixed(t) for t in tr.trials]),
    "no-repair": lambda tr: _choose(tr, [t for t in tr.trials if t.origin != "repair"]),
    "no-empty-rule": lambda tr: (_vote([t for t in tr.trials if t.origin == "sample"], empty_rule=False)
                                 or next((t for t in tr.trials if t.origin == "repair" and t.ran), None)),
    "agree-2": lambda tr: tr.trials[0] if _first_agree(tr) else tr.winner,
    "as-run": lambda tr: tr.winner,
}


def open_run(run: Path, data: Path = SPIDER):
    """A Spider run's folder, its config, its examples by id and a scorer of its semantics."""
    source = RunFolder(run)
    config = source.config()
    examples = {ex.id: ex for ex in datasets.load_spider(data, config["split"]).examples}
    return source, config, examples, Scorer(config.get("semantics", "spider"), 30.0)


def derive_from_run(doc: str, out_help: str):
    """The command line of a script that derives run folders from a Spider run's records:
    (args, then what :func:`open_run` gives)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, required=True, help=out_help)
    parser.add_argument("--data", type=Path, default=SPIDER)
    args = parser.parse_args()
    return (args, *open_run(args.run, args.data))


def main() -> None:
    args, source, config, examples, scorer = derive_from_run(__doc__, "folder for one run folder per variant")
    derived: dict[str, list[Record]] = {name: [] for name in VARIANTS}
    ceiling = total = stopped = 0
    try:
        for record in source.records():
            example = examples.get(record.id)
            if example is None or not example.executable or record.trace is None:
                continue
            trace = Trace.from_dict(record.trace)
            schema = scorer.db(example.db_paths[0]).schema(0)
            base = replace(record.unscored(), trace=None)
            scored: dict[str | None, Record] = {}

            def score(sql: str | None) -> Record:
                if sql not in scored:
                    scored[sql] = scorer.score(example, schema, replace(base, pred_sql=sql))
                return scored[sql]

            total += 1
            stopped += _first_agree(trace)
            ceiling += any(score(t.sql).ex for t in trace.trials if t.ran)
            for name, variant in VARIANTS.items():
                pick = variant(trace)
                sql = pick.sql if pick is not None else None
                derived[name].append(replace(score(sql)))
    finally:
        scorer.close()
    summary = {"run": str(args.run), "examples": total, "ceiling": round(ceiling / max(total, 1), 4),
               # agree-2: the share of questions answered from 2 candidates, without making the other n - 2
               "agree-2 stopped early": round(stopped / max(total, 1), 4)}
    for name, records in derived.items():
        folder = RunFolder(args.out / name)
        folder.start({**config, "ablation": name})
        folder.replace_records(records)
        folder.write_metrics({**metrics.summarize(records), "config": {**config, "ablation": name}})
        summary[name] = {"ex": metrics.summarize(records)["ex"], "valid_sql": metrics.summarize(records)["valid_sql"]}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
