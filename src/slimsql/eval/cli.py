"""``slimsql eval ...``: benchmark runs, reports and comparisons."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from .. import display, models
from ..backends import backend_class, load_backend
from ..cliopts import (add_answer_options, add_backend_options, add_model_options, backend_options, positive_int,
                       settings_from_args)
from ..errors import InputError
from ..knowledge import load as kload
from . import datasets, sqleval, taught
from .compare import compare, to_markdown
from .report import write_report
from ..infer import DEFAULT_PRESET
from .runner import SEMANTICS, RunConfig, check_parallel, rescore, run

DEFAULT_SPIDER = Path("../shared/benchmarks/spider")  # relative to the repository root, as in the README
DEFAULT_SQLEVAL = Path("../shared/benchmarks/sql-eval")


def _load(args: argparse.Namespace) -> datasets.Dataset:
    if args.format == "sql-eval":
        questions = getattr(args, "questions", None) or (args.split.rsplit("-", 1)[0] if "-" in args.split
                                                          else "questions_gen")
        engine = "postgres" if args.db else "sqlite"
        return sqleval.load(args.data or DEFAULT_SQLEVAL, engine=engine, server=args.db,
                            cache=getattr(args, "cache", None), questions=questions)
    if args.format == "spider":
        return datasets.load_spider(args.data or DEFAULT_SPIDER, args.split)
    if args.format == "bird":
        if not args.data:
            raise InputError("--data is required (the BIRD folder with dev.json and dev_databases/)")
        return datasets.load_bird(args.data, args.split)
    if not args.data:
        raise InputError("--data is required")
    if args.format == "context":
        return datasets.load_create_context(args.data, Path(args.out) / "context-dbs")
    return datasets.load_jsonl(args.data, db=args.db, db_root=args.db_root)


def _knowledge(args: argparse.Namespace, dataset: datasets.Dataset) -> tuple[datasets.Dataset, dict, str | None]:
    """The examples to test, the knowledge of each database, and how the run says it was taught."""
    if args.teach is not None and args.knowledge_dir:
        raise InputError("--teach writes the run's own knowledge files; --knowledge-dir reads others: one of them")
    if args.teach is not None:
        if args.teach < 1:
            raise InputError(f"--teach must be at least 1, got {args.teach}")
        dataset, examples = taught.split(dataset, args.teach, args.seed or 0)
        paths = taught.write(Path(args.out), examples)
        found = {} if args.no_knowledge else {db: kn for db, kn in ((d, kload(p)) for d, p in paths.items()) if kn}
        return dataset, found, f"teach {args.teach}" + (" (not shown)" if args.no_knowledge else "")
    if args.knowledge_dir:
        if args.no_knowledge:
            raise InputError("--knowledge-dir and --no-knowledge contradict each other")
        return dataset, taught.load_folder(Path(args.knowledge_dir), {ex.db_id for ex in dataset.examples}), \
            f"folder {args.knowledge_dir}"
    return dataset, {}, None


def cmd_run(args: argparse.Namespace) -> int:
    dataset, knowledge, how = _knowledge(args, _load(args).only(args.db_id))
    dataset = dataset.sample(args.limit, args.seed or 0)
    settings = settings_from_args(args, timeout=args.timeout)
    config = RunConfig.for_settings(settings, dataset=dataset.name, split=dataset.split,
                                    model=args.model or models.DEFAULT_MODEL, backend=args.backend,
                                    semantics=args.semantics, limit=args.limit, seed=args.seed or 0,
                                    preset=args.preset or DEFAULT_PRESET, db_ids=args.db_id, knowledge=how)
    if args.parallel > 1:
        check_parallel(backend_class(args.backend), args.parallel)  # before a model loads
    loading = display.ModelLoading()
    options = {**loading.options(), **backend_options(args)}
    try:
        backend = load_backend(args.backend, model=args.model, **options)
    finally:
        loading.done()
    if args.model is None and backend.model_name != config.model:  # e.g. the model a server says it serves
        config = replace(config, model=backend.model_name)
    summary = run(dataset, backend, Path(args.out), config, settings, parallel=args.parallel, knowledge=knowledge)
    write_report(args.out)
    missing = summary["dataset"]["missing_dbs"]
    note = f" ({sum(missing.values())} examples without a database: {', '.join(sorted(missing))})" if missing else ""
    print(f"{dataset.name} {dataset.split}: {summary['examples']} examples, {summary['scored']} scored{note}")
    print(f"{_headline(summary)}  valid {_pct(summary['valid_sql'])}  -> {args.out}/report.md")
    return 0


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _headline(summary: dict) -> str:
    return (f"EX {_pct(summary['ex'])}  EM {_pct(summary['em'])} (normalized), "
            f"{_pct(summary.get('em_official'))} (official-compatible)")


def cmd_rescore(args: argparse.Namespace) -> int:
    saved = Path(args.run) / "config.json"
    if not saved.exists():
        raise InputError(f"{args.run} is not a run folder (no config.json)")
    config = RunConfig(**json.loads(saved.read_text()))
    args.format = {"create-context": "context"}.get(config.dataset, config.dataset)
    if args.format == "sql-eval" and config.split.endswith("-postgres") != bool(args.db):
        raise InputError("this run was on PostgreSQL: give --db with the server's URL" if not args.db
                         else "this run was on SQLite: leave --db out")
    args.split, args.out = config.split, args.run
    summary = rescore(_load(args).only(config.db_ids).sample(config.limit, config.seed), Path(args.run), config)
    write_report(args.run)
    print(f"rescored {summary['scored']} examples: {_headline(summary)}  -> {args.run}/report.md")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    md, page = write_report(args.run)
    print(f"wrote {md} and {page}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    result = compare(args.run_a, args.run_b, resamples=args.resamples, seed=args.seed)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(to_markdown(result))
    return 0


def add_parser(sub: argparse._SubParsersAction, parser_class: type) -> None:
    ev = sub.add_parser("eval", help="evaluate a model on a benchmark; reports; comparisons")
    kinds = ev.add_subparsers(dest="eval_command", required=True, parser_class=parser_class)
    for name, help_text in (("spider", "Spider (dev.json, tables.json, database/)"),
                            ("bird", "BIRD (dev.json with evidence, dev_databases/)"),
                            ("jsonl", "generic JSONL: question + sql, with --db or per-record db"),
                            ("context", "sql-create-context style: CREATE TABLE context + question + answer"),
                            ("sql-eval", "defog sql-eval: on a PostgreSQL server (--db URL) or on SQLite files "
                                         "built from its dumps (no --db)")):
        p = kinds.add_parser(name, help=help_text)
        p.set_defaults(func=cmd_run, format=name)
        default = {"spider": DEFAULT_SPIDER, "sql-eval": DEFAULT_SQLEVAL}.get(name)
        p.add_argument("--data", help="benchmark folder or file" + (f" (default {default})" if default else ""))
        p.add_argument("--split", default="dev")
        if name == "sql-eval":
            p.add_argument("--db", help="PostgreSQL server URL holding the sql-eval databases (each question's "
                                        "database replaces the URL's); without it, SQLite files built from the dumps")
            p.add_argument("--questions", default="questions_gen", choices=sqleval.QUESTION_SETS,
                           help="question set (default questions_gen: 210 questions)")
            p.add_argument("--cache", help=f"folder for the SQLite files (default {sqleval.DEFAULT_CACHE})")
        else:
            p.add_argument("--db", help="database for every record (jsonl)")
        p.add_argument("--db-root", help="folder with <db_id>/<db_id>.sqlite (jsonl)")
        p.add_argument("--out", required=True, help="run folder (resumed if it exists)")
        add_model_options(p)
        p.add_argument("--semantics", default={"bird": "bird", "sql-eval": "sqleval"}.get(name, "spider"),
                       choices=SEMANTICS)
        p.add_argument("--limit", type=int, default=None, help="evaluate a seeded sample of this many examples")
        p.add_argument("--db-id", action="append", default=None, help="only the examples of this database (repeatable)")
        p.add_argument("--teach", type=int, default=None, metavar="N",
                       help="per database, teach a seeded N of its distinct gold queries (with their questions) "
                            "as examples and test the rest; the knowledge files stay in the run folder")
        p.add_argument("--no-knowledge", action="store_true",
                       help="with --teach: test the same examples without showing the knowledge (the baseline)")
        p.add_argument("--knowledge-dir", metavar="DIR",
                       help="each database's knowledge file from DIR/<db_id>.knowledge.yaml, where there is one")
        add_answer_options(p)  # --seed seeds both the --limit sample and sampling
        p.add_argument("--timeout", type=float, default=30.0, help="per-query time limit (s)")
        add_backend_options(p)
        p.add_argument("--parallel", type=positive_int, default=1,
                       help="examples generated at once (default 1); above 1 needs a backend that takes "
                            "concurrent calls, such as openai")
    res = kinds.add_parser("rescore", help="execute and score a run's predictions again (after a metric change)")
    res.add_argument("run")
    res.add_argument("--data", help="the benchmark the run used (default for spider: ../shared/benchmarks/spider)")
    res.add_argument("--db")
    res.add_argument("--db-root")
    res.set_defaults(func=cmd_rescore)
    rep = kinds.add_parser("report", help="(re)write report.md and report.html of a run folder")
    rep.add_argument("run")
    rep.set_defaults(func=cmd_report)
    cmp = kinds.add_parser("compare", help="paired comparison of two runs with bootstrap CIs")
    cmp.add_argument("run_a")
    cmp.add_argument("run_b")
    cmp.add_argument("--resamples", type=int, default=2000)
    cmp.add_argument("--seed", type=int, default=0)
    cmp.add_argument("--json", action="store_true")
    cmp.set_defaults(func=cmd_compare)
