"""Does an exported model answer as the PyTorch model it was exported from?

Greedy SQL of the fine-tuned PyTorch model (the run's base, de-quantized by transformers, with
its PEFT adapter) against the greedy SQL of the registered export through the llama.cpp backend
(for a gguf-lora export: the LoRA GGUF applied on the unchanged Q4_K_M base), on seeded Spider
dev questions rendered by the inference road with the run's prompt settings.

    python benchmarks/export_agreement.py --run runs/ft-q05 --model ft-q05-lora --questions 10
        # -> benchmarks/results/export-agreement-<model>.json
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="the training run folder")
    parser.add_argument("--model", required=True, help="the registered export's name")
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--out")
    args = parser.parse_args()

    import torch
    from peft import PeftModel

    from slimsql.backends import GenerationConfig
    from slimsql.backends.llama_cpp import LlamaCppBackend
    from slimsql.errors import NoSQLError
    from slimsql.sql import extract
    from slimsql.train import data, recipes, run
    from slimsql.train import model as loading

    folder = run.RunFolder(Path(args.run))
    record = folder.record()
    recipe = recipes.override(run.recipe_of(record), **{"model.dtype": "float32"})
    base = loading.resolve_base(recipe.model.base)
    tokenizer = loading.load_tokenizer(base)
    settings = run.settings_for(recipe)
    dev = data.pick(data.load("spider", split="dev"), 0, args.seed)
    examples = [ex for ex in dev if ex.executable][:args.questions]
    prepared = data.prepare(examples, settings, data.TokenCounter(tokenizer), check_gold=False)

    torch_model = PeftModel.from_pretrained(loading.load_model(base, recipe), str(folder.path / record["adapter"]))
    torch_model.eval()
    llama = LlamaCppBackend(model=args.model)
    config = GenerationConfig(n=1, temperature=0.0, max_tokens=args.max_tokens)

    def sql_of(text: str) -> str | None:
        try:
            return extract(text, "sqlite").sql
        except NoSQLError:
            return None

    rows = []
    for item in prepared.examples:
        ids = tokenizer(data.prompt_text(tokenizer, item.messages), return_tensors="pt", add_special_tokens=False)
        start = time.perf_counter()
        with torch.inference_mode():
            out = torch_model.generate(**ids, max_new_tokens=args.max_tokens, do_sample=False,
                                       pad_token_id=tokenizer.pad_token_id)
        torch_text = tokenizer.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True)
        torch_s = time.perf_counter() - start
        llama_text = llama.generate(item.messages, config)[0].text
        rows.append({"id": item.id, "db_id": item.db_id, "torch_sql": sql_of(torch_text),
                     "llama_sql": sql_of(llama_text), "same_sql": sql_of(torch_text) == sql_of(llama_text),
                     "same_text": torch_text.strip() == llama_text.strip(), "torch_s": round(torch_s, 2)})
        print(f"{item.id}: {'same' if rows[-1]['same_sql'] else 'DIFFERENT'}", flush=True)
    same = sum(r["same_sql"] for r in rows)
    report = {"benchmark": "export_agreement", "run": str(args.run), "model": args.model,
              "torch": f"{base.name} de-quantized to float32 + the run's PEFT adapter",
              "llama_cpp": f"registered export {args.model}", "questions": len(rows), "same_sql": same,
              "same_text": sum(r["same_text"] for r in rows), "max_tokens": args.max_tokens, "seed": args.seed,
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "rows": rows}
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"export-agreement-{args.model}.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"same greedy SQL on {same} of {len(rows)} questions -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
