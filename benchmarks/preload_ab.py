"""The model preload, on and off, interleaved: ``slimsql ask`` processes on a database seen before.

Each round asks the 12 demo questions of first_answer.py twice: once with
``SLIMSQL_PRELOAD=0`` (the model loads after Python's imports) and once with the preload
(``slimsql.launch``: it loads in a thread while they run), in alternating order, each a
new ``slimsql ask --json`` process on a private prefix cache warmed first. Interleaving
keeps a drift of the machine's speed out of the difference. Reports the medians of the
wall time and of the process start (wall time minus the answer's own timings), and the
paired per-question start differences.

With ``--other CMD`` the second arm is not the preload off but another ``slimsql``
command with its preload on (e.g. a script that runs an earlier checkout): the same
interleaved comparison, of two versions.

    python benchmarks/preload_ab.py --out benchmarks/results/preload-ab-qwen2.5-coder-0.5b.json
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from first_answer import DEFAULT_COMMAND, ask, question_options
from latency import DEMO_EXTRA

from slimsql.demo import DEMO_QUESTIONS, build_demo


def main() -> int:
    parser = question_options(__doc__)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--other", help="compare with this slimsql command (preload on) instead of the preload off")
    args = parser.parse_args()
    # each arm: (this arm's slimsql command, SLIMSQL_PRELOAD)
    arms = {"on": (DEFAULT_COMMAND, "1"), "off": (DEFAULT_COMMAND, "0")} if not args.other else \
        {"this": (DEFAULT_COMMAND, "1"), "other": (args.other, "1")}
    first, second = arms
    tmp = tempfile.TemporaryDirectory()
    db = build_demo(Path(tmp.name) / "shop.sqlite")
    env = {**os.environ, "SLIMSQL_PREFIX_DIR": str(Path(tmp.name) / "prefix"), "SLIMSQL_PREFIX_CACHE": "1"}
    questions = DEMO_QUESTIONS + DEMO_EXTRA  # the 12 of first_answer.py
    ask(db, questions[0], args.model, args.preset, env, DEFAULT_COMMAND)  # warms the cache
    if args.other:
        ask(db, questions[0], args.model, args.preset, env, args.other)  # its own compiled modules, page cache
    rows = {first: [], second: []}
    for round_ in range(args.rounds):
        for i, question in enumerate(questions):
            order = (first, second) if (i + round_) % 2 == 0 else (second, first)
            for mode in order:
                command, preload = arms[mode]
                row = ask(db, question, args.model, args.preset, {**env, "SLIMSQL_PRELOAD": preload}, command)
                rows[mode].append(row)
                print(f"  {mode:5}: {row['wall_s']:.2f}s  start {row.get('start_s', float('nan')):.2f}s  "
                      f"{question[:50]}", file=sys.stderr)
    median = lambda values: round(statistics.median(values), 3)  # noqa: E731
    summary = {mode: {"n": len(r), "answered": sum(x["exit"] == 0 for x in r),
                      "wall_median_s": median([x["wall_s"] for x in r]),
                      "start_median_s": median([x["start_s"] for x in r if "start_s" in x]),
                      "model_load_median_s": median([x["model_load_s"] for x in r if x.get("model_load_s") is not None]),
                      "preloaded": sum(bool(x.get("preloaded")) for x in r)}
               for mode, r in rows.items()}
    paired = [a["start_s"] - b["start_s"] for a, b in zip(rows[first], rows[second]) if "start_s" in a and "start_s" in b]
    summary[f"start_difference_{first}_minus_{second}_s"] = {
        "median": median(paired), "mean": round(statistics.fmean(paired), 3),
        f"{first}_faster": sum(d < 0 for d in paired), "pairs": len(paired)}
    what = "model preload on vs off" if not args.other else f"this checkout vs {args.other}, both preloading"
    results = {"benchmark": f"slimsql ask, {what}, interleaved (new process per question)",
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
               "model": args.model, "preset": args.preset, "command": "python " + " ".join(sys.argv),
               "summary": summary, "questions": rows}
    print(json.dumps(summary, indent=2))
    out = args.out or Path(__file__).parent / "results" / f"preload-ab-{args.model}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
