"""EX against median latency per preset: one point per eval run folder, from results files.

Each point is an eval run folder: EX over its scored examples and the median and p90
of the whole road per question (``road_s`` of its records: schema, generation,
execution, choice, repair; the schema prompt is reused for later questions on the
same database, as the eval groups them). With ``--only RUN`` every point is computed
on the examples RUN scored (seeded samples are nested: the first 100 of a seed are in
its 400), so all points share one set of questions. Writes a PNG and a Markdown table.

    python benchmarks/presets_plot.py \\
        --point "fast=benchmarks/results/spider-dev-qwen2.5-coder-0.5b-fast-100" \\
        --point "default=benchmarks/results/spider-dev-qwen2.5-coder-0.5b-default" ...
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from slimsql.eval.report import load_run

ROOT = Path(__file__).resolve().parents[1]


def point(run: Path, only: set[str] | None) -> tuple[float, int, float, float]:
    _, records = load_run(run)
    records = [r for r in records if r.scored and r.road_s is not None and (only is None or r.id in only)]
    if not records or (only is not None and len(records) != len(only)):
        raise SystemExit(f"{run} lacks per-question road times for the examples asked for")
    road = sorted(r.road_s for r in records)
    ex = sum(r.ex for r in records) / len(records)
    return ex, len(records), statistics.median(road), road[int(0.9 * (len(road) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--point", action="append", required=True, metavar="LABEL=RUN_FOLDER")
    parser.add_argument("--only", type=Path, help="compute every point on the examples this run scored")
    parser.add_argument("--title", default="slimsql presets, Spider dev, 2 CPU cores")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "presets-ex-vs-latency.png")
    args = parser.parse_args()
    only = {r.id for r in load_run(args.only)[1] if r.scored} if args.only else None
    rows = []
    for spec in args.point:
        label, run = spec.split("=", 1)
        rows.append((label, *point(Path(run), only)))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=120)
    for i, (label, ex, n, median, _) in enumerate(sorted(rows, key=lambda row: row[3])):
        ax.scatter(median, 100 * ex, s=40)
        ax.annotate(label, (median, 100 * ex), textcoords="offset points", xytext=(6, 6 if i % 2 else -12),
                    fontsize=8)
    ax.set_xlim(0, 1.5 * max(row[3] for row in rows))
    ax.set_xlabel("median seconds per question (whole road)")
    ax.set_ylabel("execution accuracy (%)")
    ax.set_title(args.title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out, bbox_inches="tight")
    print(f"command: python benchmarks/presets_plot.py {' '.join(sys.argv[1:])}\n")
    print("| point | EX | examples | median s | p90 s |\n|---|---|---|---|---|")
    for label, ex, n, median, p90 in rows:
        print(f"| {label} | {100 * ex:.1f}% | {n} | {median:.2f} | {p90:.2f} |")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
