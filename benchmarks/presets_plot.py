"""EX against median latency per preset: one point per (preset, eval run), from results files.

Each point pairs an eval run folder (its metrics.json gives EX on its examples) with
a latency results file of the same preset (benchmarks/latency.py: median seconds per
question of the whole road, Spider sample). Writes a PNG and prints the table.

    python benchmarks/presets_plot.py \\
        --point fast=runs/s100-fast,benchmarks/results/latency-qwen2.5-coder-0.5b-fast.json ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--point", action="append", required=True, metavar="LABEL=RUN,LATENCY_JSON")
    parser.add_argument("--suite", default="spider-dev-sample", help="latency suite to read the median from")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "presets-ex-vs-latency.png")
    args = parser.parse_args()
    rows = []
    for spec in args.point:
        label, paths = spec.split("=", 1)
        run, latency = paths.split(",")
        metrics = json.loads((Path(run) / "metrics.json").read_text())
        timing = json.loads(Path(latency).read_text())
        suite = timing["backends"][0]["suites"][args.suite]["summary"]
        rows.append((label, metrics["ex"], metrics["scored"], suite["median_s"], suite["p90_s"]))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for label, ex, n, median, _ in rows:
        ax.scatter(median, 100 * ex, s=40)
        ax.annotate(f"{label} ({n} ex.)", (median, 100 * ex), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("median seconds per question (whole road, 2 CPU cores)")
    ax.set_ylabel("execution accuracy, Spider dev (%)")
    ax.set_title("slimsql presets, qwen2.5-coder-0.5b", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out)
    print("| preset | EX | examples | median s | p90 s |\n|---|---|---|---|---|")
    for label, ex, n, median, p90 in rows:
        print(f"| {label} | {100 * ex:.1f}% | {n} | {median:.2f} | {p90:.2f} |")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
