"""A question over HTTP vs a new ``slimsql ask`` process: what a warm server saves.

The same questions as benchmarks/first_answer.py (the 12 demo-database questions and
20 Spider dev questions, 5 each from 4 seeded databases), the same model and preset:

* ``server``: one ``slimsql serve`` process with every database named at start (the model
  loaded once, each schema prompt evaluated at start); each question is one ``POST /v1/ask``,
  timed by the client, one at a time;
* ``cli``: each question a new ``slimsql ask --json`` process on a private prefix cache (the
  first process on a database saves its schema prompt, later ones load it), as
  first_answer.py measures it, in the same run on the same machine.

    python benchmarks/serve_latency.py   # -> benchmarks/results/serve-latency-<model>-<preset>.json
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
from first_answer import DEFAULT_COMMAND, question_options, question_suites, run as run_cli
from latency import ROOT, summarize
from serving import rss_mib, server


def run_server(suites: dict[str, list[tuple[Path, str]]], model: str, preset: str) -> dict:
    dbs = sorted({db for questions in suites.values() for db, _ in questions})
    folder = tempfile.mkdtemp(prefix="slimsql-bench-prefix-")
    os.environ["SLIMSQL_PREFIX_DIR"] = folder  # a private prefix cache: the server evaluates every schema itself
    start = time.perf_counter()
    report: dict = {}
    with server(dbs, ["--model", model, "--preset", preset], log=Path(folder) / "serve.log") as (base, proc):
        report["start_s"] = round(time.perf_counter() - start, 2)  # model load + every schema prompt
        with httpx.Client(base_url=base, timeout=300) as client:
            for suite, questions in suites.items():
                rows = []
                for db, question in questions:
                    t = time.perf_counter()
                    response = client.post("/v1/ask", json={"db": db.stem, "question": question})
                    wall = time.perf_counter() - t
                    body = response.json()
                    row = {"db": db.stem, "question": question, "wall_s": round(wall, 3),
                           "status": response.status_code}
                    if response.status_code == 200:
                        row["timings"] = body["timings"]
                    else:
                        row["error"] = body["error"]["code"]
                    rows.append(row)
                    print(f"  server {suite}: {wall:.2f}s {question[:50]}", file=sys.stderr)
                report[suite] = {"all": summarize([r["wall_s"] for r in rows]),
                                 "answered": sum(r["status"] == 200 for r in rows), "questions": rows}
        report["rss_mib"] = round(rss_mib(proc.pid), 1)
    return report


def main() -> int:
    parser = question_options(__doc__)
    parser.add_argument("--no-cli", dest="cli", action="store_false", help="measure the server only")
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory()
    suites = question_suites(args, Path(tmp.name))
    results = {"benchmark": "slimsql serve: a question over HTTP vs a new slimsql ask process",
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
               "model": args.model, "preset": args.preset, "command": "python " + " ".join(sys.argv),
               "server": run_server(suites, args.model, args.preset)}
    if args.cli:
        results["cli"] = run_cli(suites, args.model, args.preset, True, DEFAULT_COMMAND)
    out = args.out or ROOT / "benchmarks" / "results" / f"serve-latency-{args.model}-{args.preset}.json"
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print("| suite | server: median s | p90 s | answered | new CLI process, seen before: median s | p90 s |")
    print("|---|---|---|---|---|---|")
    for suite in suites:
        s = results["server"][suite]
        c = (results.get("cli") or {}).get(suite, {}).get("seen_before") or {}
        print(f"| {suite} | {s['all']['median_s']} | {s['all']['p90_s']} | {s['answered']}/{len(s['questions'])} "
              f"| {c.get('median_s', '-')} | {c.get('p90_s', '-')} |")
    print(f"server start (model load + schema prompts): {results['server']['start_s']} s; "
          f"memory {results['server']['rss_mib']} MiB\n\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
