"""``slimsql train``: sft, grpo, plan, export, recipes. A thin map onto the train package."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cliopts import positive_int
from . import recipes

# flag -> recipe field it overrides
OVERRIDES = {"max_steps": "training.max_steps", "epochs": "training.epochs", "lr": "training.learning_rate",
             "max_examples": "data.max_examples", "eval_examples": "data.eval_examples",
             "eval_steps": "training.eval_steps", "save_steps": "training.save_steps",
             "grad_accum": "training.grad_accum", "batch_size": "training.batch_size", "seed": "data.seed",
             "base": "model.base", "max_length": "model.max_length", "select": "grpo.select",
             "screen_limit": "grpo.screen_limit"}


def _recipe(args: argparse.Namespace) -> recipes.Recipe:
    recipe = recipes.load(args.recipe)
    return recipes.override(recipe, **{field: getattr(args, flag, None) for flag, field in OVERRIDES.items()})


def cmd_sft(args: argparse.Namespace) -> int:
    from . import sft

    recipe = _recipe(args)
    if recipe.method == "grpo":
        from ..errors import InputError

        raise InputError(f"recipe {recipe.name} is a GRPO recipe: use slimsql train grpo")
    sft.train(recipe, args.data, Path(args.out), db=args.db, from_run=Path(args.from_run) if args.from_run else None,
              resume=args.resume)
    return 0


def cmd_grpo(args: argparse.Namespace) -> int:
    from . import grpo

    recipe = _recipe(args)
    grpo.train(recipe, args.data, Path(args.out), db=args.db, from_run=Path(args.from_run) if args.from_run else None,
               resume=args.resume)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from . import plan

    recipe = _recipe(args)
    options = {"tokens_per_example": args.tokens, "examples": args.examples}
    if args.data:
        from . import sft

        shape = sft.sample_shape(recipe, args.data, db=args.db)
        print(f"data: {shape['examples_measured']} examples of {shape['databases']} databases measured: "
              f"{shape['tokens_per_example']:.0f} tokens per example ({shape['completion_tokens']:.0f} of them "
              f"the answer)" + (f", {shape['examples_per_sequence']:.1f} examples per packed sequence of "
                                f"{shape['tokens_per_sequence']:.0f} tokens" if recipe.training.packing else ""))
        options = {"tokens_per_example": args.tokens or round(shape["tokens_per_sequence"]),
                   "completion_tokens": round(shape["completion_tokens"]),
                   "examples_per_sequence": shape["examples_per_sequence"],
                   "examples": args.examples or shape["train_examples"]}
    print(plan.format_plan(plan.plan(recipe, **options)))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from . import export

    registered = export.export(Path(args.run), args.format, out=Path(args.out) if args.out else None, name=args.name,
                               quant=args.quant, base_gguf=args.base_gguf, progress=lambda line: print(line, flush=True))
    base = f" on {registered.base}" if registered.base else ""
    print(f"registered {registered.name} ({registered.kind}{base}, {registered.quant}, "
          f"{registered.bytes / 2 ** 20:.1f} MiB, prompt style {registered.style}) in {registered.seconds:.0f} s: "
          f"{registered.path}")
    print(f"ask with it: slimsql ask --db DB --model {registered.name} \"QUESTION\"")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    for name in recipes.available():
        recipe = recipes.load(name)
        where = "CUDA" if recipe.cuda_only else "CPU or GPU"
        print(f"{name:34} {recipe.method:6} {where:10} {recipe.description}")
    return 0


def add_parser(sub: argparse._SubParsersAction, parser_class: type) -> None:
    tr = sub.add_parser("train", help="fine-tune a model (LoRA, QLoRA, full SFT, GRPO) and export it")
    kinds = tr.add_subparsers(dest="train_command", required=True, parser_class=parser_class)

    def recipe_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--recipe", required=True, help="a shipped recipe (slimsql train recipes) or a YAML file")
        p.add_argument("--base", help="base model instead of the recipe's (registry name, .gguf, folder, hub id)")
        p.add_argument("--max-length", type=positive_int,
                       help="tokens per example (GRPO: prompt + completion); longer examples are dropped and counted")
        p.add_argument("--max-steps", type=positive_int, help="stop after this many optimizer steps")
        p.add_argument("--epochs", type=float)
        p.add_argument("--lr", type=float, help="learning rate")
        p.add_argument("--batch-size", type=positive_int)
        p.add_argument("--grad-accum", type=positive_int)
        p.add_argument("--max-examples", type=positive_int, help="train on a seeded subset of this many examples")
        p.add_argument("--seed", type=int, help="which subset, and the shuffle")

    for name, help_text, func in (("sft", "supervised fine-tuning: LoRA, QLoRA or full, per the recipe", cmd_sft),
                                  ("grpo", "GRPO rewarded by execution match against the gold result", cmd_grpo)):
        p = kinds.add_parser(name, help=help_text)
        recipe_options(p)
        p.add_argument("--data", required=True,
                       help="spider[:PATH], bird:PATH, FILE.jsonl (with --db), sql-create-context[:SOURCE], "
                            "gretel[:SOURCE] (SOURCE: a hub id or a local json/jsonl/parquet/csv file)")
        p.add_argument("--db", help="the database of a JSONL file's questions")
        p.add_argument("--out", required=True, help="run folder")
        p.add_argument("--from", dest="from_run", help="start from the adapter of an earlier run")
        p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
        p.add_argument("--eval-examples", type=int, help="held-out examples scored by execution during training")
        p.add_argument("--eval-steps", type=int, help="score them every N optimizer steps (0: at the end)")
        p.add_argument("--save-steps", type=positive_int, help="checkpoint every N optimizer steps")
        if name == "grpo":
            p.add_argument("--select", choices=recipes.SELECTIONS,
                           help="train on all prompts, or only on those whose sampled completions the starting "
                                "model gets partly right (mixed execution rewards, screened first)")
            p.add_argument("--screen-limit", type=positive_int,
                           help="with --select mixed: screen at most this many prompts (default 4 x --max-examples)")
        p.set_defaults(func=func)

    p = kinds.add_parser("plan", help="memory and time a recipe needs, before running it")
    recipe_options(p)
    p.add_argument("--tokens", type=positive_int, help="tokens per example (default: the recipe's typical length)")
    p.add_argument("--examples", type=positive_int, help="examples to train on, for the total time")
    p.add_argument("--data", help="measure the lengths on this training data (as sft --data)")
    p.add_argument("--db", help="the database of a JSONL file's questions")
    p.set_defaults(func=cmd_plan)

    p = kinds.add_parser("export", help="export a run for llama.cpp / transformers / vLLM and register it as a model")
    p.add_argument("run", help="the run folder")
    p.add_argument("--format", required=True, choices=("gguf-lora", "gguf", "safetensors"))
    p.add_argument("--name", help="model name to register (default: the run folder's name)")
    p.add_argument("--out", help="folder for the files (default: RUN/export/FORMAT)")
    p.add_argument("--quant", default=None,
                   help="gguf: Q4_K_M (default), Q8_0, f16; gguf-lora: f16 (default) or f32; safetensors: bf16 "
                        "(default) or f32")
    p.add_argument("--base-gguf", help="gguf-lora: the GGUF the adapter applies to, when the run's base is not one")
    p.set_defaults(func=cmd_export)

    p = kinds.add_parser("recipes", help="list the shipped recipes")
    p.set_defaults(func=cmd_recipes)
