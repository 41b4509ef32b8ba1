"""Prompt tokens per prompt style and number of sample values, on the demo database and Spider dev.

No generation: each database's prompt (with a short placeholder question) is
rendered as the road renders it and counted with the model's own tokenizer and
chat template. Shows what each part of the prompt costs before a token is written
(at about 80 to 190 prompt tokens/s on 2 cores, every 100 tokens is 0.5 to 1.3 s of a
first question).

    python benchmarks/prompt_tokens.py   # -> benchmarks/results/prompt-tokens.json
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

from slimsql.backends.llama_cpp import LlamaCppBackend
from slimsql.db.sqlite import SQLiteDatabase
from slimsql.demo import build_demo
from slimsql.infer import Settings, render
from slimsql.prompts import STYLES

ROOT = Path(__file__).resolve().parents[1]
SPIDER = ROOT.parent / "shared" / "benchmarks" / "spider" / "database"
QUESTION = "How many rows are there?"


def main() -> None:
    backend = LlamaCppBackend(n_threads=1, prefix_cache=False)
    tmp = tempfile.TemporaryDirectory()
    databases = {"demo": [build_demo(Path(tmp.name) / "shop.sqlite")]}
    dev = json.loads((SPIDER.parent / "dev.json").read_text()) if (SPIDER.parent / "dev.json").exists() else []
    spider = sorted({e["db_id"] for e in dev})
    databases["spider-dev"] = [p for p in (SPIDER / d / f"{d}.sqlite" for d in spider) if p.exists()]
    result = {"model_tokenizer": backend.model_name, "question": QUESTION, "databases": {}, "rows": []}
    for suite, paths in databases.items():
        result["databases"][suite] = len(paths)
        schemas = {samples: [SQLiteDatabase(p).schema(samples) for p in paths] for samples in (0, 1, 3)}
        for style in STYLES:
            for samples, group in schemas.items():
                counts = [len(backend.prompt_tokens(render(s, QUESTION, Settings(style=style, samples=samples))))
                          for s in group]
                result["rows"].append({"suite": suite, "style": style, "samples": samples,
                                       "median": statistics.median(counts), "mean": round(statistics.fmean(counts), 1),
                                       "max": max(counts)})
    out = ROOT / "benchmarks" / "results" / "prompt-tokens.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| suite | style | sample values | median tokens | mean | max |\n|---|---|---|---|---|---|")
    for r in result["rows"]:
        print(f"| {r['suite']} | {r['style']} | {r['samples']} | {r['median']} | {r['mean']} | {r['max']} |")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
