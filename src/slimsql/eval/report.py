"""Reports of a run folder: ``report.md`` and ``report.html`` with plots.

A run folder holds ``config.json``, ``predictions.jsonl`` and ``metrics.json``;
the report is rebuilt from those files alone, so it can be made again at any time.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from . import metrics
from .store import Record, RunFolder


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def load_run(folder: str | Path) -> tuple[dict[str, Any], list[Record]]:
    """A run's summary and records, read only. The metrics are recomputed from
    ``predictions.jsonl`` with the current metric code; timing, config and dataset
    notes come from ``metrics.json``, which a run writes at its end: before that (or when it
    was stopped) the summary holds only what the predictions give."""
    run = RunFolder(folder)
    records = run.records() if run.predictions.exists() else []
    if run.metrics_path.exists() or not records:
        summary = run.metrics()  # (without either file: "not a run folder")
    else:  # a run still going, or stopped before its end: what it has scored so far
        summary = {"in_progress": True}
    if records:
        summary.update(metrics.summarize(records))
    return summary, records


def _hardness_plot(plt, summary: dict[str, Any], levels, folder: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ex = [100 * (summary["by_hardness"][lv]["ex"] or 0) for lv in levels]
    em = [100 * (summary["by_hardness"][lv]["em"] or 0) for lv in levels]
    official = [100 * (summary["by_hardness"][lv].get("em_official") or 0) for lv in levels]
    xs = range(len(levels))
    width = 0.27
    ax.bar([x - width for x in xs], ex, width, label="execution (EX)")
    ax.bar(list(xs), em, width, label="exact match (normalized)")
    ax.bar([x + width for x in xs], official, width, label="exact match (official-compatible)")
    ax.set_xticks(list(xs), [f"{lv}\n(n={summary['by_hardness'][lv]['count']})" for lv in levels])
    ax.set_ylabel("%"), ax.set_ylim(0, 100), ax.legend(), ax.set_title("Accuracy by Spider hardness")
    fig.tight_layout()
    path = folder / "accuracy_by_hardness.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plots(summary: dict[str, Any], records: list[Record], folder: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []  # plots need the eval extra; the tables are still written
    files = []
    levels = metrics.HARDNESS
    if any(summary["by_hardness"][lv]["count"] for lv in levels):  # Spider's hardness (none for sql-eval)
        files.append(_hardness_plot(plt, summary, levels, folder))

    fig, ax = plt.subplots(figsize=(6, 3.2))
    cats = [c for c in metrics.CATEGORIES if c != "correct"]
    ax.barh(cats, [summary["categories"][c] for c in cats], color="#c0504d")
    ax.invert_yaxis(), ax.set_xlabel("examples"), ax.set_title("Errors by category")
    fig.tight_layout()
    files.append(folder / "error_categories.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)

    gen = [r.gen_s for r in records if r.gen_s is not None]
    if gen:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.hist(gen, bins=40, color="#4f81bd")
        ax.set_xlabel("seconds"), ax.set_ylabel("examples"), ax.set_title("Generation time per example")
        fig.tight_layout()
        files.append(folder / "generation_latency.png")
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)
    return files


def _tables(summary: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    cfg, ds = summary["config"], summary["dataset"]
    missing = ", ".join(f"{k} ({v})" for k, v in sorted(ds.get("missing_dbs", {}).items())) or "none"
    overview = [
        ["benchmark", f"{ds['name']} {ds['split']}"],
        ["examples", f"{summary['examples']} ({summary['scored']} scored; missing databases: {missing}; "
                     f"gold errors: {summary['gold_errors']})"],
        ["model / backend", f"{cfg['model']} / {cfg['backend']}"],
        ["prompt style, decoding", f"{cfg['style']}, temperature {cfg['temperature']}"],
        ["execution accuracy (EX)", _pct(summary["ex"])],
        ["test-suite accuracy", _pct(summary["test_suite"])],
        ["exact match (normalized)", _pct(summary["em"])],
        ["exact match (official-compatible)", _pct(summary.get("em_official"))],
        ["valid SQL", _pct(summary["valid_sql"])],
        ["schema adherence", _pct(summary["schema_adherence"])],
        ["strict format", _pct(summary["strict_format"])],
    ]
    hardness = [[lv, str(v["count"]), _pct(v["ex"]), _pct(v["em"]), _pct(v.get("em_official"))]
                for lv, v in summary["by_hardness"].items()]
    labels = [[label, str(v["count"]), _pct(v["ex"])] for label, v in summary.get("by_label", {}).items()]
    categories = [[c, str(n)] for c, n in summary["categories"].items()]
    cleaning = [[k, str(v)] for k, v in summary.get("cleaning", {}).items()]
    t, lat = summary.get("timing", {}), summary["latency_s"]
    timing = [
        ["wall time (this session)", f"{t.get('wall_s', 0)} s"],
        ["generation (sum)", f"{t.get('generation_s', 0)} s"],
        ["execution + scoring (sum, overlapped with generation)", f"{t.get('scoring_s', 0)} s"],
        ["generation per example (median / p90)",
         f"{lat['generation']['median']} / {lat['generation']['p90']} s" if lat.get("generation") else "-"],
        ["prompt / completion tokens (mean)",
         f"{summary['tokens']['prompt_mean']} / {summary['tokens']['completion_mean']}"],
    ]
    tables = [("Overview", ["metric", "value"], overview)]
    if any(v["count"] for v in summary["by_hardness"].values()):  # Spider's hardness; none for sql-eval
        tables.append(("By hardness", ["hardness", "examples", "EX", "EM (normalized)", "EM (official-compatible)"],
                       hardness))
    if labels:
        tables.append(("By the benchmark's label", ["label", "examples", "EX"], labels))
    return tables + [("Error categories", ["category", "examples"], categories),
            ("Model output clean-ups", ["clean-up", "outputs"], cleaning),
            ("Time", ["what", "value"], timing)]


def write_report(folder: str | Path) -> tuple[Path, Path]:
    folder = Path(folder)
    summary, records = load_run(folder)
    plots = _plots(summary, records, folder)
    tables = _tables(summary)

    md = [f"# slimsql eval report: {summary['dataset']['name']} {summary['dataset']['split']}", ""]
    for title, head, rows in tables:
        md += [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        md += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    md += [f"![{p.stem}]({p.name})" for p in plots]
    (folder / "report.md").write_text("\n".join(md) + "\n")

    parts = ["<!doctype html><meta charset=utf-8><title>slimsql eval report</title>"
             "<style>body{font-family:sans-serif;max-width:60rem;margin:2rem auto}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}</style>",
             f"<h1>slimsql eval report: {html.escape(summary['dataset']['name'])} "
             f"{html.escape(summary['dataset']['split'])}</h1>"]
    for title, head, rows in tables:
        parts.append(f"<h2>{html.escape(title)}</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
                     + "</tr>" + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                                         for r in rows) + "</table>")
    for plot in plots:
        data = base64.b64encode(plot.read_bytes()).decode()
        parts.append(f'<p><img alt="{plot.stem}" src="data:image/png;base64,{data}"></p>')
    (folder / "report.html").write_text("\n".join(parts) + "\n")
    return folder / "report.md", folder / "report.html"
