"""Command-line options that shape an answer, shared by ``slimsql ask`` and ``slimsql eval``,
so both build their Settings the same way (:func:`slimsql.infer.resolve`)."""

from __future__ import annotations

import argparse

from .infer import DEFAULT_PRESET, PRESETS, Settings, resolve
from .errors import InputError
from .infer.settings import DEFAULT_EXAMPLES, DEFAULT_SAMPLES, STRATEGIES
from .prompts import DEFAULT_STYLE, STYLES


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_answer_options(p: argparse.ArgumentParser) -> None:
    presets = ", ".join(f"{name}: n={v['n']} {v['strategy']}" for name, v in PRESETS.items())
    p.add_argument("--preset", choices=list(PRESETS), default=None,
                   help=f"answer preset (default {DEFAULT_PRESET}; {presets}); the flags below override it")
    p.add_argument("--style", default=None, choices=sorted(STYLES),
                   help=f"prompt style (default {DEFAULT_STYLE}, or the one a fine-tuned --model was trained with)")
    p.add_argument("-n", "--candidates", type=positive_int, default=None, help="candidates to generate")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (0 = greedy)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max-tokens", type=positive_int, default=256)
    p.add_argument("--strategy", choices=STRATEGIES, default=None,
                   help="first: the first candidate that runs; vote: the biggest group of equal results")
    p.add_argument("--agree", type=int, default=None,
                   help="vote in stages: make the first K candidates, and the others only when those K do not "
                        "all give one result with a value (0 = make all at once)")
    p.add_argument("--fix", action=argparse.BooleanOptionalAction, default=None,
                   help="repair unknown table/column names on the parse tree when a candidate fails")
    p.add_argument("--repair-rounds", type=int, default=None,
                   help="model repair rounds when no candidate runs (0 = off)")
    p.add_argument("--merge", action=argparse.BooleanOptionalAction, default=None,
                   help="when the vote is close, let the model merge the top two queries (merge revision)")
    p.add_argument("--values", action=argparse.BooleanOptionalAction, default=None,
                   help="show the database values the question mentions (value linking)")
    p.add_argument("--prune-tokens", type=int, default=None,
                   help="above this many schema tokens, show only the tables the question is about (0 = off)")
    p.add_argument("--grammar", action=argparse.BooleanOptionalAction, default=None,
                   help="constrain decoding so that only the schema's table and column names can be written "
                        "(llama-cpp backend)")
    p.add_argument("--samples", type=int, default=None,
                   help=f"example values per text column in the prompt (default {DEFAULT_SAMPLES})")
    p.add_argument("--examples", type=int, default=None,
                   help=f"taught examples shown with a question, the most similar (default {DEFAULT_EXAMPLES}; "
                        "0 = none; see slimsql teach)")


def add_knowledge_options(p: argparse.ArgumentParser) -> None:
    """Which knowledge file (slimsql teach) a command reads."""
    p.add_argument("--knowledge", metavar="FILE", default=None,
                   help="the database's knowledge file (default: DB.knowledge.yaml beside a database file)")
    p.add_argument("--no-knowledge", action="store_true", help="use no knowledge file")


def knowledge_option(args: argparse.Namespace):
    """The Connection's ``knowledge`` argument from the command line."""
    if getattr(args, "no_knowledge", False):
        if getattr(args, "knowledge", None):
            raise InputError("--knowledge and --no-knowledge contradict each other")
        return False
    return getattr(args, "knowledge", None)


def add_backend_options(p: argparse.ArgumentParser) -> None:
    """Where a server backend (``--backend openai``) finds its server; local backends ignore them."""
    p.add_argument("--base-url", default=None,
                   help="with --backend openai: the server's OpenAI-compatible API "
                        "(default $SLIMSQL_OPENAI_BASE_URL or http://127.0.0.1:8080/v1)")
    p.add_argument("--api-key", default=None,
                   help="with --backend openai: the server's API key; it can also come from "
                        "SLIMSQL_OPENAI_API_KEY (or OPENAI_API_KEY), which keeps it out of the process list")


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Which model generates, and how (ask, chat, eval, serve)."""
    from . import models
    from .backends import DEFAULT_BACKEND

    p.add_argument("--model", help=f"registry name, .gguf path or hub repo id (default {models.DEFAULT_MODEL})")
    p.add_argument("--backend", default=DEFAULT_BACKEND, help="llama-cpp (default), transformers, openai, or a plugin")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: all cores)")


def backend_options(args: argparse.Namespace) -> dict:
    """The backend constructor's options given on the command line (only those set, so a
    backend's own defaults and environment variables apply otherwise)."""
    options = {"n_threads": getattr(args, "threads", None), "base_url": getattr(args, "base_url", None),
               "api_key": getattr(args, "api_key", None)}
    return {k: v for k, v in options.items() if v is not None}


def trained_prompt(model: str | None) -> dict:
    """The prompt settings a fine-tuned local model was trained with (style, sample values,
    pruning), so that it is asked as it was taught; {} for any other model. Reads only the
    local registry (no model file is touched)."""
    if not model:
        return {}
    from . import models

    if models.registry_name(model) is not None or "/" in model or model.endswith(".gguf"):
        return {}
    try:
        found = models.find_local(model)
    except Exception:  # an unreadable registry is reported when the model is loaded
        return {}
    if found is None:
        return {}
    return {k: v for k, v in (("style", found.style), ("samples", found.samples),
                              ("prune_tokens", found.prune_tokens)) if v is not None}


def settings_from_args(args: argparse.Namespace, **fixed) -> Settings:
    taught = trained_prompt(getattr(args, "model", None))  # flags given on the command line win
    return resolve(args.preset, style=args.style or taught.get("style"), n=args.candidates,
                   temperature=args.temperature, seed=args.seed, max_tokens=args.max_tokens, strategy=args.strategy,
                   fix=args.fix, agree=args.agree, repair_rounds=args.repair_rounds, merge=args.merge, values=args.values,
                   prune_tokens=args.prune_tokens if args.prune_tokens is not None else taught.get("prune_tokens"),
                   grammar=args.grammar, examples=getattr(args, "examples", None),
                   samples=args.samples if args.samples is not None else taught.get("samples"), **fixed)
