"""Follow-up questions on the demo database: does "and only in 2024?" build on the last answer?

The conversations are ``benchmarks/data/followups-demo.jsonl``: 16 two-step questions
written for this benchmark (a question, then a follow-up that cannot be answered alone),
each step with a hand-written gold query. Every step runs the road of ``slimsql ask`` /
``slimsql chat`` / the server (:func:`slimsql.infer.solve`) and is scored by the
evaluation's own scoring (Spider execution semantics). The follow-up is asked three ways:

* ``chained``: after the model's own answer to the first question (what a user gets);
* ``gold_history``: after the gold query of the first question (the follow-up skill alone);
* ``alone``: without any history (the baseline: what the same words give without context).

    python benchmarks/followups.py                       # -> benchmarks/results/followups-demo-<model>-<preset>.json
    python benchmarks/followups.py --model qwen2.5-coder-1.5b --preset fast
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import slimsql
from slimsql import models
from slimsql.demo import build_demo
from slimsql.eval.datasets import Example
from slimsql.eval.scoring import Scorer
from slimsql.prompts import Turn

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "followups-demo.jsonl"
WAYS = ("chained", "gold_history", "alone")


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=models.DEFAULT_MODEL)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or ROOT / "benchmarks" / "results" / f"followups-demo-{args.model}-{args.preset}.json"
    conversations = load(args.data)
    folder = Path(tempfile.mkdtemp(prefix="slimsql-followups-"))
    db = build_demo(folder / "shop.sqlite")
    conn = slimsql.connect(db, model=args.model, preset=args.preset)
    schema = conn.db.schema(0)
    scorer = Scorer()

    def step(cid: str, question: str, gold: str, history: list[Turn]) -> dict:
        example = Example(id=cid, question=question, gold_sql=gold, db_id="shop", db_paths=(db,))
        start = time.perf_counter()
        solution = conn.solve(question, history=history)
        seconds = time.perf_counter() - start
        sql = solution.trace.winner.sql if solution.result is not None else None
        score = scorer.score_sql(example, schema, sql)
        assert score.gold_error is None, (cid, score.gold_error)  # the gold queries are checked here
        return {"question": question, "sql": sql, "ex": score.ex, "valid": score.valid, "seconds": round(seconds, 2)}

    rows = []
    summary: dict = {}
    for conv in conversations:
        first, follow = conv["first"], conv["followup"]
        row = {"id": conv["id"], "first": step(conv["id"], first["question"], first["sql"], [])}
        mine = [Turn(first["question"], row["first"]["sql"])] if row["first"]["sql"] else []
        row["chained"] = step(conv["id"], follow["question"], follow["sql"], mine)
        row["gold_history"] = step(conv["id"], follow["question"], follow["sql"],
                                   [Turn(first["question"], first["sql"])])
        row["alone"] = step(conv["id"], follow["question"], follow["sql"], [])
        rows.append(row)
        n = len(rows)
        summary = {"conversations": n, "first_ex": round(sum(r["first"]["ex"] for r in rows) / n, 3),
                   **{f"followup_ex_{w}": round(sum(r[w]["ex"] for r in rows) / n, 3) for w in WAYS},
                   "both_steps_right": round(sum(r["first"]["ex"] and r["chained"]["ex"] for r in rows) / n, 3)}
        out.write_text(json.dumps({  # written as it goes: an interrupted run keeps what it measured
            "benchmark": "followups-demo", "data": str(args.data.relative_to(ROOT)) if args.data.is_relative_to(ROOT)
            else str(args.data), "model": args.model, "preset": args.preset,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": f"python benchmarks/followups.py --model {args.model} --preset {args.preset}",
            "summary": summary, "conversations": rows}, indent=1) + "\n")
        print(f"{conv['id']}: first {row['first']['ex']:d}  chained {row['chained']['ex']:d}  "
              f"gold_history {row['gold_history']['ex']:d}  alone {row['alone']['ex']:d}", flush=True)
    scorer.close()
    conn.close()
    print(json.dumps(summary, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
