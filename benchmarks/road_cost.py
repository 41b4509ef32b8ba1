"""What a code change costs on the road, from two eval runs of the same examples and settings.

Reads two run folders (A = before, B = after) and writes, for the examples both
scored: whether the predictions and EX are identical, and the whole road per
question (median, mean, total), generation, and the rest of the road (execution
of the candidates and the choice) in milliseconds, with B's change in percent.

    python benchmarks/road_cost.py A_RUN B_RUN --out benchmarks/results/X.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from slimsql.eval.report import load_run


def stats(values: list[float], scale: float = 1.0) -> dict[str, float]:
    return {"median": round(scale * statistics.median(values), 3), "mean": round(scale * statistics.fmean(values), 3),
            "total": round(scale * sum(values), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--note", default="")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    (_, records_a), (_, records_b) = load_run(args.a), load_run(args.b)
    a = {r.id: r for r in records_a if r.scored and r.road_s is not None}
    b = {r.id: r for r in records_b if r.scored and r.road_s is not None}
    ids = sorted(set(a) & set(b))
    result = {"a": str(args.a), "b": str(args.b), "note": args.note, "examples": len(ids),
              "same_predictions": sum(a[i].pred_sql == b[i].pred_sql for i in ids),
              "ex": {"a": sum(a[i].ex for i in ids), "b": sum(b[i].ex for i in ids)}}
    for name, pick, scale in (("road_s", lambda r: r.road_s, 1.0), ("generation_s", lambda r: r.gen_s or 0.0, 1.0),
                              ("rest_of_road_ms", lambda r: r.road_s - (r.gen_s or 0.0), 1000.0)):
        sa, sb = stats([pick(a[i]) for i in ids], scale), stats([pick(b[i]) for i in ids], scale)
        result[name] = {"a": sa, "b": sb,
                        "change_pct": {k: round(100 * (sb[k] - sa[k]) / sa[k], 1) if sa[k] else None for k in sa}}
    result["command"] = f"python benchmarks/road_cost.py {args.a} {args.b} --out {args.out}"
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
