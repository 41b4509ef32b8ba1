"""``slimsql teach``: add to, list, check and prune a database's knowledge file.

The file and what it holds: :mod:`slimsql.knowledge`. Every command reads the database
read-only; only the knowledge file is written, atomically.
"""

from __future__ import annotations

import argparse

from rich.table import Table
from rich.text import Text

from . import display
from .cliopts import add_knowledge_options, knowledge_option
from .connection import Connection
from .errors import InputError
from .infer import Settings


def _connection(args: argparse.Namespace) -> Connection:
    from .cli import _target

    return Connection(_target(args.db), settings=Settings(timeout=args.timeout), knowledge=knowledge_option(args))


def cmd_teach(args: argparse.Namespace) -> int:
    conn = _connection(args)
    path = conn.knowledge_path
    adding = args.note is not None or args.example is not None or args.describe is not None or args.synonyms
    if sum(map(bool, (adding, args.list, args.check, args.remove))) != 1:
        raise InputError("say one thing: --note, --example, --describe (with --synonyms), --list, --check or --remove")
    if path is None:
        raise InputError("a database URL keeps its knowledge where --knowledge FILE says")
    if args.list:
        return _list(conn, args.json)
    if args.check:
        return _check(conn, args.json)
    if args.remove:
        conn.forget(args.remove)
        display.err.print(f"removed {args.remove} from {path}", markup=False)
        return 0
    synonyms = [s.strip() for s in (args.synonyms or "").split(",") if s.strip()]
    describe = tuple(args.describe) if args.describe else None
    if synonyms and describe is None:
        raise InputError("--synonyms go with --describe TABLE[.COLUMN] TEXT")
    before = conn.knowledge
    after = conn.teach(note=args.note, example=tuple(args.example) if args.example else None, describe=describe,
                       synonyms=synonyms)
    added = [e for e in (*after.notes, *after.examples) if before.find(e.id) is None]
    what = ", ".join(e.id for e in added) or (describe[0] if describe else "nothing new")
    display.err.print(f"taught {what} in {path}", markup=False)
    return 0


def _list(conn: Connection, as_json: bool) -> int:
    knowledge = conn.knowledge
    if as_json:
        display.print_json({"path": str(knowledge.path), **knowledge.to_dict()})
        return 0
    table = Table(show_edge=True, header_style="bold", title=str(knowledge.path), title_justify="left")
    for name in ("id", "kind", "text"):
        table.add_column(name, overflow="fold")
    for note in knowledge.notes:
        table.add_row(note.id, "note", Text(note.text))
    for described in knowledge.descriptions:
        also = f" (also: {', '.join(described.synonyms)})" if described.synonyms else ""
        table.add_row(described.target, "description", Text(described.text + also))
    for example in knowledge.examples:
        kind = "example" if example.source == "verified" else "generated"
        table.add_row(example.id, kind, Text(f"{example.question}\n{' '.join(example.sql.split())}"))
    display.out.print(table)
    counts = knowledge.summary()
    display.err.print(", ".join(f"{v} {k}" for k, v in counts.items()), markup=False)
    return 0


def _check(conn: Connection, as_json: bool) -> int:
    from .knowledge import check

    knowledge = conn.knowledge
    problems = check(knowledge, conn.db)
    if as_json:
        display.print_json({"path": str(knowledge.path), "problems": [vars(p) for p in problems]})
    else:
        for problem in problems:
            display.out.print(Text(f"{problem.entry}: {problem.message}"), soft_wrap=True)
        entries = len(knowledge.examples) + len(knowledge.descriptions)
        display.err.print(f"{len(problems)} of {entries} examples and descriptions no longer fit the database"
                          if problems else f"all {entries} examples and descriptions fit the database", markup=False)
    return 1 if problems else 0


def add_parser(sub: argparse._SubParsersAction, parser_class: type) -> None:
    from .cli import DB_HELP, _seconds

    p = sub.add_parser("teach", help="teach slimsql a database: notes, descriptions, verified examples",
                       description="Add what the schema does not say to the database's knowledge file "
                                   "(DB.knowledge.yaml beside a database file, or --knowledge FILE). "
                                   "Every question asked of the database then sees it.")
    p.add_argument("--db", required=True, action="append", help=DB_HELP)
    add_knowledge_options(p)
    p.add_argument("--note", metavar="TEXT", help="a convention that holds for every question")
    p.add_argument("--example", nargs=2, metavar=("QUESTION", "SQL"),
                   help="a question and the SQL that answers it (checked and run read-only first)")
    p.add_argument("--describe", nargs=2, metavar=("TABLE[.COLUMN]", "TEXT"),
                   help="what a table or column means")
    p.add_argument("--synonyms", metavar="WORDS", help="with --describe: other words for it, comma-separated")
    p.add_argument("--list", action="store_true", help="show what the file holds")
    p.add_argument("--check", action="store_true",
                   help="name the examples and descriptions that no longer fit the database (exit 1 if any)")
    p.add_argument("--remove", metavar="ID", help="remove a note or example (by id) or a description (by name)")
    p.add_argument("--timeout", type=_seconds, default=10.0, help="query time limit in seconds (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=cmd_teach)
