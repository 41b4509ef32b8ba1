"""A run's answers as today's road gives them: SQLite's double-quoted strings made standard.

The road now writes a double-quoted name that SQLite read as a string
(``WHERE country = "france"``) as the standard string it was read as, keeping the
rewrite only when it runs with the same rows (``slimsql.infer.pipeline``,
``STANDARD_STRINGS``). Runs scored before that change hold the queries as the model
wrote them. This script passes each answer that ran through the road's own step, on
the example's database, and scores it again with the evaluation's code, writing a
derived run folder that ``slimsql eval compare`` reads.

Derived, not rerun: the answer is the one the run chose. Nothing else in the choice
can differ, since the rewritten query must return the rows the chosen one returned, so
the vote's groups are the same; an answer that did not run is left as it was.

    python benchmarks/restring.py benchmarks/results/spider-dev-ft-q05-lora-default --out runs/restring-ft-q05
"""

from __future__ import annotations

import json
from dataclasses import replace

from choices import derive_from_run

from slimsql.eval import metrics
from slimsql.eval.store import Record, RunFolder
from slimsql.infer import resolve
from slimsql.infer.pipeline import STANDARD_STRINGS, _Runner
from slimsql.infer.trace import Trial


def main() -> None:
    args, source, config, examples, scorer = derive_from_run(__doc__, "the derived run folder")
    settings = resolve(fix=True, max_rows=config.get("settings", {}).get("max_rows", 1000),
                       timeout=config.get("timeout", 30.0))
    records: list[Record] = []
    rewritten = changed_ex = 0
    try:
        for record in source.records():
            example = examples.get(record.id)
            if example is None or not example.executable:
                continue
            if record.valid and record.pred_sql:
                db = scorer.db(example.db_paths[0])
                schema = db.schema(0)
                trial = Trial(index=0, origin="sample", round=0, raw=record.pred_sql, sql=record.pred_sql)
                _Runner(db, schema, settings).run(trial)
                if STANDARD_STRINGS in trial.repairs:
                    rewritten += 1
                    new = scorer.score(example, schema, replace(record.unscored(), pred_sql=trial.sql,
                                                                repairs=list(record.repairs or ()) + [STANDARD_STRINGS]))
                    changed_ex += new.ex != record.ex
                    record = new
            records.append(record)
    finally:
        scorer.close()
    folder = RunFolder(args.out)
    folder.start({**config, "derived": "restring", "from": str(args.run)})
    folder.replace_records(records)
    summary = metrics.summarize(records)
    folder.write_metrics({**summary, "config": {**config, "derived": "restring", "from": str(args.run)}})
    report = {"run": str(args.run), "command": "python benchmarks/restring.py " + " ".join(
                  [str(args.run), "--out", str(args.out)]),
              "records": len(records), "rewritten": rewritten, "ex_changed": changed_ex,
              "ex": summary["ex"], "schema_adherence": summary["schema_adherence"]}
    (args.out / "restring.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
