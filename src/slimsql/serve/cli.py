"""``slimsql serve``: start the API and the page on one model and the databases named."""

from __future__ import annotations

import argparse
import ipaddress
import os

from ..cliopts import add_answer_options, add_model_options, backend_options, positive_int, settings_from_args
from ..errors import InputError

LOOPBACK_NAMES = ("localhost",)
CORS_ANY_NEEDS_KEY = ("--cors-origin '*' (or 'null', which any sandboxed frame sends) would let every web site "
                      "read your databases through your browser; name the origins, or require an API key")


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_parser(sub, db_limits) -> None:
    p = sub.add_parser("serve", help="serve the HTTP API and the web page (one model, many clients)")
    p.add_argument("--db", action="append", required=True,
                   help="database to serve (repeat for more): a SQLite, DuckDB, CSV or Parquet file, named by its "
                        "file stem in requests, or a postgresql:// URL, named by its database")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", dest="server_key", default=None,
                   help="require this X-API-Key header (default: $SLIMSQL_API_KEY); needed to bind beyond loopback")
    p.add_argument("--cors-origin", action="append", default=[],
                   help="allow browser calls from this origin (default: none)")
    p.add_argument("--max-queue", type=positive_int, default=8,
                   help="questions admitted at once (running or waiting for the model); more get 503 (default 8)")
    p.add_argument("--connections", type=positive_int, default=4,
                   help="read-only connections per database (default 4)")
    p.add_argument("--no-warm", dest="warm", action="store_false",
                   help="do not evaluate the schema prompts at start")
    add_model_options(p)
    p.add_argument("--base-url", default=None,
                   help="with --backend openai: the server that generates (its key, if any, from "
                        "$SLIMSQL_OPENAI_API_KEY; --api-key is this server's own key)")
    db_limits(p)
    add_answer_options(p)
    p.add_argument("--knowledge", action="append", default=[], metavar="NAME=FILE",
                   help="a database's knowledge file (default: DB.knowledge.yaml beside each database file; "
                        "a postgresql:// URL has one only when named here)")
    p.add_argument("--no-knowledge", action="store_true", help="use no knowledge files (and take no teaching)")
    p.set_defaults(func=cmd_serve)


def _knowledge_files(given: list[str], databases: dict) -> dict[str, str]:
    """``--knowledge NAME=FILE`` values by database name."""
    files = {}
    for item in given:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise InputError(f"--knowledge takes NAME=FILE, got {item!r}")
        if name not in databases:
            raise InputError(f"--knowledge names {name!r}, which is not served; served: {', '.join(databases)}")
        files[name] = path
    return files


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .app import create_app
    except ImportError:
        raise InputError("the server needs FastAPI and uvicorn: pip install 'slimsql[serve]'") from None
    from .. import display
    from ..backends import load_backend
    from .service import Service, database_names

    api_key = args.server_key or os.environ.get("SLIMSQL_API_KEY") or None
    loopback = is_loopback(args.host)
    if not loopback and not api_key:
        raise InputError(f"binding to {args.host} opens the server to other machines: give an API key "
                         "(--api-key or SLIMSQL_API_KEY), or bind to 127.0.0.1")
    if {"*", "null"} & set(args.cors_origin) and not api_key:  # create_app refuses it too; say so before the model loads
        raise InputError(CORS_ANY_NEEDS_KEY)
    if not 1 <= args.port <= 65535:
        raise InputError(f"--port must be between 1 and 65535, got {args.port}")
    settings = settings_from_args(args, max_rows=args.max_rows, timeout=args.timeout)
    databases = database_names(args.db)
    loading = display.ModelLoading()
    options = {**loading.options(), **backend_options(args)}  # --api-key is this server's: never sent on
    try:
        backend = load_backend(args.backend, model=args.model, **options)
    finally:
        loading.done()
    knowledge = False if args.no_knowledge else _knowledge_files(args.knowledge, databases)
    service = Service(databases, backend, settings, max_queue=args.max_queue, connections=args.connections,
                      knowledge=knowledge)
    if args.warm:
        warmed = service.warm()
        if warmed:
            display.err.print(f"schema prompts ready: {', '.join(warmed)}", markup=False)
    hosts = None
    if loopback:  # loopback names, and the address bound (127.0.0.2 is loopback too)
        hosts = ["127.0.0.1", "localhost", "::1", "[::1]", f"[{args.host}]" if ":" in args.host else args.host]
    app = create_app(service, api_key=api_key, cors_origins=args.cors_origin or None, allowed_hosts=hosts)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    display.err.print(f"slimsql serving {', '.join(databases)} with {backend.model_name} at "
                      f"http://{shown}:{args.port}  (API docs: /docs; Ctrl-C stops)", markup=False, soft_wrap=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    finally:
        service.close()
    return 0
