"""DuckDB files, and CSV/Parquet files as tables, read-only, every query bounded.

Threat model
============
Model output (and hand-written SQL, and the files themselves) is untrusted. The
user's files must never change, and no query may read anything outside the
database (other files, the environment, the network), load code, hang the
caller or exhaust the machine.

Two engines share everything below: :class:`DuckDBDatabase` opens a ``.duckdb``
file; :class:`FilesDatabase` first copies CSV and Parquet files into a private
DuckDB file (one table per file; see "Files as tables") and then opens that
file exactly as :class:`DuckDBDatabase` opens the user's.

Covered, each by its own layer (so one bug does not open the door):

1. Allow-list (``slimsql.sql.check_read_only`` with :data:`RULES`): one
   SELECT / set operation / WITH ... SELECT / VALUES and no writing, DDL,
   ATTACH, COPY, SET, PRAGMA, INSTALL, LOAD... node anywhere, and none of
   :data:`DENIED_FUNCTIONS`: every table function that reads files
   (``read_csv``, ``read_text``, ``glob``...), runs SQL text (``query``,
   ``json_execute_serialized_sql``), scans raw memory pointers
   (``arrow_scan``), changes state (``checkpoint``, ``nextval``,
   ``enable_logging``) or tells about the host (``current_setting``,
   ``duckdb_settings``). A test checks that each table function of the
   installed DuckDB is either denied or known to be safe.
2. DuckDB's own parser (``_run``, so slimsql's own reads too): the text must be
   exactly one statement (``extract_statements``) of type SELECT, so a
   difference between how sqlglot and DuckDB read a text cannot run a second
   statement or a non-query (COPY, ATTACH, SET, CALL, PRAGMA, CREATE TEMP...).
3. DuckDB's settings, fixed when the connection opens and locked
   (``lock_configuration``, so neither ``SET`` nor ``RESET`` can undo them):
   ``enable_external_access=false`` (no file or URL but the database itself:
   ``read_csv``, ``FROM 'x.csv'`` replacement scans, COPY, EXPORT, ATTACH,
   INSTALL fail with a permission error), no extension auto-install or
   auto-load, no community or unsigned extensions, no persistent secrets, no
   scans of Python variables (``python_enable_replacements=false``),
   ``memory_limit``, ``threads``, spill files only in a private temporary
   folder removed on ``close()``, at most ``max_temp_directory_size``.
4. Read-only open (``read_only=True``): DuckDB refuses every write to the
   database file (INSERT, CREATE, ``nextval``...) and never checkpoints it.
5. Worker process, one per connection object, reused across queries (calls
   from many threads are serialised; the parent side is
   ``slimsql.db.process.Worker``): the deadline is enforced twice, first by
   ``interrupt()`` from a timer thread in the worker (clean; the worker
   stays), then by the parent killing the worker (SIGKILL) ``KILL_GRACE``
   later, for single steps DuckDB only checks for interrupts after
   (``len(range(0, 100000000))`` builds a 100-million-element list first).
   Operating-system limits in the worker (POSIX): address space
   (``RLIMIT_AS``, ``Limits.memory``), largest file written
   (``RLIMIT_FSIZE``, ``Limits.temp_file``), no core files; DuckDB's
   ``memory_limit`` does not count such lists, so without these one query
   could take all of the machine's memory (measured: 7 GB in 16 s).
6. Bounded results: rows are fetched in batches up to the row cap and a byte
   cap (``Limits.max_bytes``); a cut result says so (``truncated``,
   ``truncated_by``). Values become plain Python values in the worker:
   DECIMAL -> int (scale 0) or float, DATE/TIME/TIMESTAMP -> ISO 8601 text,
   INTERVAL and UUID -> text, LIST -> list, STRUCT/MAP -> dict, BLOB -> bytes.
7. Limits given by callers are checked as for SQLite (``limits.check_*``).

Files as tables (:class:`FilesDatabase`): each file becomes ``CREATE TABLE
<name> AS SELECT * FROM read_csv(...)`` (``.tsv``: tab-separated;
``.parquet``/``.pq``: ``read_parquet``), column types from DuckDB's CSV
sniffer or the Parquet schema, in a DuckDB file in a private temporary folder,
built by the worker before any model SQL runs, with external access still on
but only slimsql's own statements; the worker then reopens it read-only with
every layer above. Tables, not views: a view would have to keep reading the
user's files, so external access (or ``allowed_paths``) would have to stay
open to them, and every query would parse the whole CSV again (0.6 s per query
on a 50 MB CSV). The copy costs one load (50 MB CSV, 1.15 million rows, 2
cores: 2.0 s to open including the worker's start, worker peak 240 MiB
resident, a 23 MB database file; see ``docs/duckdb.md``) and is bounded by
``Limits.temp_file``.

Not covered:

* Reading: any table or view in the database can be read.
* The allow-list parse runs in the calling process, bounded by its size cap.
* Platforms without ``resource`` (Windows): no address-space or file-size
  limits (the deadline still holds), and the worker pipe protocol is POSIX only.
* Spill files: a big sort or join may write up to ``max_temp_directory_size``
  into the private temporary folder until the deadline.
* Another process writing the DuckDB file: DuckDB refuses to open a file locked
  by a writer (a clear error); a CSV changed after opening is not seen.
* Denial of service shorter than the deadline, repeated by a caller.
* DuckDB's own bugs; keep the library up to date.
"""

from __future__ import annotations

import datetime
import decimal
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Sequence

from ..errors import DatabaseError, InputError, QueryError
from ..schema import Column, ForeignKey, Schema, Table
from .base import EngineRules, Result, execute_checked, url_scheme
from .limits import MiB, Limits, check_max_rows, check_timeout
from .process import START_SECONDS, Worker, _OpenFailed, query
from .worker import ROW_OVERHEAD, value_size

SUFFIXES = (".duckdb", ".ddb")
FILE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
MISSING_DRIVER = "DuckDB needs the duckdb package: pip install 'slimsql[duckdb]'"
#: Introspection: time for the catalog, and per table for samples.
CATALOG_SECONDS, SAMPLE_SECONDS = 10.0, 2.0
#: Time the worker gets to copy CSV/Parquet files into its database (then: open as usual).
BUILD_SECONDS = 300.0
#: DuckDB's own memory limit, as a share of the worker's address space (the rest: the
#: interpreter, DuckDB's code, thread stacks and what ``memory_limit`` does not count).
BUFFER_SHARE = 4

#: Table functions the allow-list refuses: they read files or URLs, run SQL text, scan raw
#: pointers, change state, or tell about the host (paths, settings, environment, secrets).
DENIED_FUNCTIONS = frozenset({
    # files, URLs and other databases
    "read_csv", "read_csv_auto", "read_parquet", "parquet_scan", "read_json", "read_json_auto",
    "read_json_objects", "read_json_objects_auto", "read_ndjson", "read_ndjson_auto", "read_ndjson_objects",
    "read_text", "read_blob", "read_duckdb", "read_single_csv_file", "read_single_json_file",
    "read_single_parquet_file", "read_xlsx", "st_read", "st_read_meta", "glob", "sniff_csv",
    "parquet_metadata", "parquet_schema", "parquet_file_metadata", "parquet_kv_metadata",
    "parquet_full_metadata", "parquet_page_index", "parquet_bloom_probe", "add_parquet_key",
    "iceberg_scan", "iceberg_metadata", "iceberg_snapshots", "delta_scan", "sqlite_scan", "sqlite_attach",
    "sqlite_query", "postgres_scan", "postgres_scan_pushdown", "postgres_attach", "postgres_query",
    "postgres_execute", "mysql_scan", "mysql_query", "mysql_execute", "mysql_attach", "http_get", "http_post",
    # SQL text, raw memory
    "query", "query_table", "json_execute_serialized_sql", "json_serialize_plan",
    "arrow_scan", "arrow_scan_dumb", "pandas_scan", "python_arrow_scan", "python_map_function",
    # state
    "checkpoint", "force_checkpoint", "enable_logging", "disable_logging", "truncate_duckdb_logs",
    "enable_profiling", "disable_profiling", "write_log", "nextval", "setval", "add_grammar_extension",
    "remove_grammar_extension", "create_external_resource", "register_external_resource",
    "register_external_resource_type", "deregister_external_resource", "destroy_external_resource",
    # the host
    "getenv", "current_setting", "duckdb_settings", "duckdb_secrets", "which_secret", "duckdb_databases",
    "duckdb_temporary_files", "duckdb_extensions", "duckdb_extension_repositories", "duckdb_logs",
    "duckdb_logs_parsed", "duckdb_log_contexts", "duckdb_external_file_cache",
})

#: What the worker sets when it opens a database for queries (checked by a test against
#: ``duckdb_settings()``); ``memory_limit``, ``threads`` and the temporary folder come from Limits.
LOCKED_SETTINGS = {
    "enable_external_access": False, "autoinstall_known_extensions": False, "autoload_known_extensions": False,
    "allow_community_extensions": False, "allow_unsigned_extensions": False, "allow_persistent_secrets": False,
    "python_enable_replacements": False, "lock_configuration": True,
}

RULES = EngineRules(
    name="duckdb",
    display_name="DuckDB",
    dialect="duckdb",
    time_limit="interrupt() at the deadline in a worker process per connection, killed (SIGKILL) if it is late",
    denied_functions=DENIED_FUNCTIONS,
    denied_statements=frozenset({"Install", "Export", "Comment", "Secret", "Execute", "Refresh", "Declare",
                                 "Grant", "Revoke", "Kill"}),
    error_categories=(
        ("referenced column .* not found", "unknown column"), ("does not have a column named", "unknown column"),
        ("ambiguous reference to column", "unknown column"),
        ("table with name .* does not exist", "unknown table"),
        ("parser error", "syntax"),
    ),
    # DuckDB's wording of the two errors a repair hint can explain (messages, not SQL)
    missing_column=r'(?i)(?:referenced column|does not have a column named) "(?P<name>[^"]+)"',
    missing_table=r"(?i)table with name (?P<name>.+?) does not exist",
)
FILES_RULES = EngineRules(
    name="files", display_name="CSV/Parquet files (DuckDB)", dialect="duckdb", time_limit=RULES.time_limit,
    denied_functions=RULES.denied_functions, denied_statements=RULES.denied_statements,
    error_categories=RULES.error_categories, missing_column=RULES.missing_column, missing_table=RULES.missing_table,
)


def shown(path) -> str:
    """A path as one printable line."""
    text = str(path).encode("utf-8", "backslashreplace").decode("utf-8")
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= 160 else text[:80] + "..." + text[-60:]


def _require_driver() -> None:
    try:
        import duckdb  # noqa: F401
    except ImportError:
        raise InputError(MISSING_DRIVER) from None


def _file(path: Path) -> str:
    try:
        if not path.exists():
            raise DatabaseError(f"database not found: {shown(path)}")
        if not path.is_file():
            raise DatabaseError(f"not a file: {shown(path)}")
        return str(path.resolve())
    except OSError as err:
        raise DatabaseError(f"cannot read {shown(path)}: {err.strerror or err}") from None


def _one_line(message: str) -> str:
    """A DuckDB error without its ``LINE 1: ...`` pointer, on one line."""
    return " ".join(str(message).split("\nLINE ")[0].split()) or "unknown error"


def table_names(paths: Sequence[Path]) -> list[str]:
    """One table name per file: its stem as a lower-case identifier, made unique (``orders_2``)."""
    names: list[str] = []
    for path in paths:
        base = re.sub(r"\W+", "_", path.stem.lower(), flags=re.ASCII).strip("_") or "file"
        base = base if not base[0].isdigit() else "t_" + base
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}_{n}"
        names.append(name)
    return names


def _duckdb_worker(config: dict, max_reply: int, start_seconds: float) -> Worker:
    """A :class:`~slimsql.db.process.Worker` whose child runs this module's :func:`serve`."""
    src = str(Path(__file__).resolve().parents[2])
    boot = f"import sys; sys.path.insert(0, {src!r}); from slimsql.db.duckdb import serve; sys.exit(serve())"
    return Worker(config, max_reply, command=[sys.executable, "-I", "-c", boot], start_seconds=start_seconds,
                  failed="could not start the query worker process (or it took too long to load the files)")


class DuckDBDatabase:
    """A read-only DuckDB database with a time limit, a row cap and a byte cap.

    Queries run in a worker process (one per object, reused; calls from several
    threads are serialised); ``close()`` ends it and removes its temporary folder.
    """

    rules = RULES
    dialect = RULES.dialect

    @classmethod
    def opens(cls, target) -> bool:
        """A ``duckdb://path`` URL, or a file named ``*.duckdb`` / ``*.ddb``."""
        if not isinstance(target, (str, Path)):
            return False
        scheme = url_scheme(target)
        if scheme is not None:
            return scheme == "duckdb"
        return Path(target).suffix.lower() in SUFFIXES

    def __init__(self, target, *, timeout: float = 10.0, max_rows: int = 1000, limits: Limits | None = None):
        self._setup(timeout, max_rows, limits)
        text = str(target)
        if url_scheme(text) == "duckdb":
            text = text.split("://", 1)[1]
        self.path = Path(text).expanduser()
        self._start(_file(self.path), [])

    def _setup(self, timeout, max_rows, limits) -> None:
        self._worker, self.folder = None, None
        self.timeout = check_timeout(timeout)
        self.max_rows = check_max_rows(max_rows)
        self.limits = limits or Limits()
        self._schema: dict[int, Schema] = {}
        #: (name, reason) of each object introspection could not read (none so far on DuckDB).
        self.skipped: list[tuple[str, str]] = []
        _require_driver()

    def _start(self, database: str, build: list, start_seconds: float = START_SECONDS) -> None:
        """Start the worker on ``database`` (after it copies the ``build`` files into it)."""
        self.folder = Path(tempfile.mkdtemp(prefix="slimsql-duckdb-"))
        config = {"database": database.replace("{folder}", str(self.folder)), "build": build,
                  "spill": str(self.folder / "spill"), "memory": self.limits.memory,
                  "temp_file": self.limits.temp_file, "memory_limit": self.limits.memory // BUFFER_SHARE,
                  "threads": min(4, os.cpu_count() or 1)}
        try:
            self._worker = _duckdb_worker(config, 2 * self.limits.max_bytes + MiB, start_seconds)
            self._worker.start()
        except _OpenFailed as err:
            self.close()
            raise DatabaseError(self._open_error(err.kind, str(err))) from None
        except BaseException:
            self.close()
            raise

    def _open_error(self, kind: str, message: str) -> str:
        where = shown(self.path)
        if kind == "read":
            return f"cannot read {where}: {message}"
        low = message.lower()
        if "could not set lock" in low or "conflicting lock" in low:
            return f"cannot open {where}: it is locked by another process"
        if "not a valid duckdb database" in low or "unable to open database" in low:
            return f"not a DuckDB database: {where} ({message})"
        return f"cannot open {where} as DuckDB: {message}"

    # -- execution -------------------------------------------------------------

    def execute(self, sql: str, *, max_rows: int | None = None, timeout: float | None = None) -> Result:
        """Check ``sql`` against the allow-list, then run it under every layer (the parse counts
        against the time limit)."""
        return execute_checked(self, sql, max_rows=max_rows, timeout=timeout)

    def _run(self, sql: str, params: tuple = (), *, max_rows: int | None = None, timeout: float | None = None,
             shown_limit: float | None = None) -> Result:
        """Run in the worker without the allow-list (layers 2 and below only)."""
        if self._worker is None:
            raise QueryError("the database is closed")
        cap = self.max_rows if max_rows is None else check_max_rows(max_rows)
        limit = self.timeout if timeout is None else check_timeout(timeout)
        shown_limit = limit if shown_limit is None else shown_limit
        return query(self._worker, ("query", sql, tuple(params), cap, self.limits.max_bytes, limit), limit,
                     shown_limit, self.limits.memory // MiB)

    def close(self) -> None:
        worker, self._worker = getattr(self, "_worker", None), None
        if worker is not None:
            with worker.lock:
                worker.stop()
        folder = getattr(self, "folder", None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
            self.folder = None

    def __del__(self) -> None:  # a forgotten close() must not leave a process or a folder behind
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- introspection -----------------------------------------------------------

    def schema(self, samples: int = 3) -> Schema:
        """Tables and views with columns, keys, the catalog's comments and up to ``samples``
        example text values; names outside the ``main`` schema are qualified (``sales.orders``)."""
        if samples not in self._schema:
            self._schema[samples] = self._introspect(samples)
        return self._schema[samples]

    def _catalog(self, sql: str) -> list[tuple]:
        try:
            return self._run(sql, max_rows=1_000_000, timeout=max(self.timeout, CATALOG_SECONDS)).rows
        except QueryError as err:
            raise DatabaseError(f"cannot read the schema of {shown(self.path)}: {err}") from None

    def _introspect(self, samples: int) -> Schema:
        where = "database_name = current_database() AND NOT internal AND NOT temporary"
        objects = self._catalog(
            f"SELECT schema_name, table_name, 'table', comment FROM duckdb_tables() WHERE {where} UNION ALL "
            f"SELECT schema_name, view_name, 'view', comment FROM duckdb_views() WHERE {where} ORDER BY 1, 2")
        columns: dict[tuple, list] = {}
        for row in self._catalog(
                "SELECT schema_name, table_name, column_name, data_type, is_nullable, column_default, comment "
                "FROM duckdb_columns() WHERE database_name = current_database() AND NOT internal "
                "ORDER BY schema_name, table_name, column_index"):
            columns.setdefault(row[:2], []).append(row[2:])
        keys: dict[tuple, list] = {}
        for row in self._catalog(
                "SELECT schema_name, table_name, constraint_type, constraint_column_names, referenced_table, "
                "referenced_column_names FROM duckdb_constraints() WHERE database_name = current_database() "
                "AND constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY') ORDER BY constraint_index"):
            keys.setdefault(row[:2], []).append(row[2:])
        tables = []
        for schema_name, name, kind, comment in objects:
            shown_name = name if schema_name == "main" else f"{schema_name}.{name}"
            cols = columns.get((schema_name, name), [])
            primary = {c for ktype, names, *_ in keys.get((schema_name, name), []) if ktype == "PRIMARY KEY"
                       for c in names}
            text = [c[0] for c in cols if (c[1] or "").upper() == "VARCHAR"]  # dates and numbers say little
            values = self._samples(schema_name, name, [c[0] for c in cols], text, samples)
            foreign = tuple(ForeignKey(columns=tuple(src), ref_table=ref, ref_columns=tuple(dst or ()))
                            for ktype, src, ref, dst in keys.get((schema_name, name), []) if ktype == "FOREIGN KEY")
            tables.append(Table(
                name=shown_name, kind=kind, comment=comment or "", foreign_keys=foreign,
                columns=tuple(Column(name=col, type=(ctype or "").upper(), nullable=bool(nullable),
                                     primary_key=col in primary, default=default, samples=values.get(col, ()),
                                     comment=note or "")
                              for col, ctype, nullable, default, note in cols)))
        return Schema(tables=tuple(tables), dialect=self.dialect)

    def _samples(self, schema_name: str, table: str, columns: list[str], text: list[str],
                 per_column: int) -> dict[str, tuple]:
        if per_column <= 0 or not text:
            return {}
        quoted = ".".join('"' + part.replace('"', '""') + '"' for part in (schema_name, table))
        try:
            rows = self._run(f"SELECT * FROM {quoted} LIMIT 50", max_rows=50,
                             timeout=min(self.timeout, SAMPLE_SECONDS)).rows
        except QueryError:  # a slow or broken view: no samples, not a failure
            return {}
        found: dict[str, list] = {c: [] for c in columns}
        for row in rows:
            for col, value in zip(columns, row):
                if col not in text or not isinstance(value, str) or not value.strip():
                    continue
                value = value if len(value) <= 40 else value[:37] + "..."
                if value not in found[col] and len(found[col]) < per_column:
                    found[col].append(value)
        return {c: tuple(v) for c, v in found.items()}


class FilesDatabase(DuckDBDatabase):
    """CSV and Parquet files as the read-only tables of one DuckDB database (one table per file).

    The worker copies the files into a DuckDB file in a private temporary folder, then
    opens that read-only like any DuckDB database; ``tables`` maps each table to its file.
    """

    rules = FILES_RULES
    dialect = FILES_RULES.dialect

    @classmethod
    def opens(cls, target) -> bool:
        """A file named ``*.csv``, ``*.tsv``, ``*.parquet`` or ``*.pq``, or a list or tuple of them."""
        if isinstance(target, (list, tuple)):
            return bool(target) and all(cls.opens(t) for t in target)
        return (isinstance(target, (str, Path)) and url_scheme(target) is None
                and Path(target).suffix.lower() in FILE_SUFFIXES)

    def __init__(self, target, *, timeout: float = 10.0, max_rows: int = 1000, limits: Limits | None = None):
        self._setup(timeout, max_rows, limits)
        targets = list(target) if isinstance(target, (list, tuple)) else [target]
        if not targets:
            raise InputError("no CSV or Parquet file given")
        self.paths = [Path(t).expanduser() for t in targets]
        for path in self.paths:
            if path.suffix.lower() not in FILE_SUFFIXES:
                raise InputError(f"not a CSV or Parquet file (.csv, .tsv, .parquet, .pq): {shown(path)}")
        self.path = self.paths[0] if len(self.paths) == 1 else f"{len(self.paths)} files"
        files = [_file(path) for path in self.paths]
        self.tables = dict(zip(table_names(self.paths), files))
        build = [(name, file, Path(file).suffix.lower()) for name, file in self.tables.items()]
        self._start("{folder}/files.duckdb", build, BUILD_SECONDS)

    def _open_error(self, kind: str, message: str) -> str:
        if kind == "build":
            name, _, why = message.partition(": ")
            return f"cannot read {shown(self.tables.get(name, name))} as a table: {why}"
        return super()._open_error(kind, message)


# -- the worker side (runs in the child process) --------------------------------------

def _plain(value):
    """A DuckDB value as plain Python data (the parent unpickles no classes)."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, decimal.Decimal):
        # whole decimals (5.00 too) as int, as the PostgreSQL engine returns them
        return int(value) if value.is_finite() and value == value.to_integral_value() else float(value)
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, (datetime.timedelta, uuid.UUID)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, (int, float, str, bool)) else k: _plain(v) for k, v in value.items()}
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return str(value)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _build(duckdb, config: dict) -> None:
    """Copy the CSV/Parquet files into the database file (only slimsql's own statements run)."""
    final = config["database"]
    if os.path.exists(final):  # built by an earlier worker of the same object
        return
    partial = final + ".partial"
    for leftover in (partial, partial + ".wal"):
        if os.path.exists(leftover):
            os.remove(leftover)
    settings = {k: v for k, v in LOCKED_SETTINGS.items() if k not in ("enable_external_access", "lock_configuration")}
    # only slimsql's own statements run here: DuckDB may use twice the memory queries get
    resources = {**_resources(config), "memory_limit": f"{2 * config['memory_limit'] // MiB}MiB"}
    conn = duckdb.connect(partial, config={**settings, **resources})
    try:
        for name, path, suffix in config["build"]:
            reader = {".csv": "read_csv({})", ".tsv": "read_csv({}, delim = '\\t')"}.get(suffix, "read_parquet({})")
            try:
                conn.execute(f'CREATE TABLE "{name}" AS SELECT * FROM {reader.format(_literal(path))}')
            except duckdb.Error as err:
                raise _BuildFailed(f"{name}: {_one_line(err)}") from None
        conn.execute("CHECKPOINT")
    finally:
        conn.close()
    os.replace(partial, final)


class _BuildFailed(Exception):
    pass


def _resources(config: dict) -> dict:
    return {"memory_limit": f"{config['memory_limit'] // MiB}MiB", "threads": config["threads"],
            "temp_directory": config["spill"], "max_temp_directory_size": f"{config['temp_file'] // MiB}MiB"}


def locked_connection(config: dict):
    """The database opened as queries see it: read-only, every setting of layer 3 locked."""
    import duckdb

    return duckdb.connect(config["database"], read_only=True, config={**LOCKED_SETTINGS, **_resources(config)})


class Session:
    def __init__(self, conn):
        import duckdb

        self.conn, self.duckdb = conn, duckdb

    def query(self, sql: str, params: tuple, max_rows: int, max_bytes: int, timeout: float):
        """One SELECT statement; ('ok', columns, rows, cut_by, seconds) or ('error', kind, message)."""

        duckdb = self.duckdb
        start = time.perf_counter()
        timer = threading.Timer(timeout, self.conn.interrupt)
        try:
            statements = self.conn.extract_statements(sql)
            if len(statements) != 1:
                return ("error", "refused", f"exactly one statement may run, found {len(statements)}")
            if statements[0].type != duckdb.StatementType.SELECT:
                return ("error", "refused", f"only SELECT statements may run, found {statements[0].type.name}")
            timer.start()
            cursor = self.conn.execute(statements[0], list(params))
            columns = tuple(d[0] for d in cursor.description or ())
            rows, used, cut_by, widest = [], 0, "", ROW_OVERHEAD
            while not cut_by:
                size = max(1, min(512, max_rows + 1 - len(rows), (max_bytes - used) // widest, 2 * len(rows)))
                batch = cursor.fetchmany(size)
                if not batch:
                    break
                for row in batch:
                    row = tuple(_plain(v) for v in row)
                    width = ROW_OVERHEAD + sum(map(value_size, row))
                    widest = max(widest, width)
                    used += width
                    if used > max_bytes:
                        cut_by = "bytes"
                        break
                    if len(rows) == max_rows:
                        cut_by = "rows"
                        break
                    rows.append(row)
        except duckdb.InterruptException:
            return ("error", "timeout", "interrupted")
        except duckdb.OutOfMemoryException as err:
            return ("error", "memory", _one_line(err))
        except duckdb.Error as err:
            return ("error", "query", _one_line(err))
        except MemoryError:
            return ("error", "memory", "out of memory")
        finally:
            timer.cancel()
            try:
                self.conn.execute("SELECT 1").fetchall()  # drop the pending result of a cut-off query
            except duckdb.Error:
                pass
        return ("ok", columns, rows, cut_by, time.perf_counter() - start)


def _open(config: dict) -> Session:
    import duckdb

    if config["build"]:
        _build(duckdb, config)
    return Session(locked_connection(config))


def serve() -> int:
    """The worker's loop: requests on stdin, replies on stdout (see ``slimsql.db.worker``)."""
    from .worker import EXIT_NO_MEMORY, _limit_self, _read, _write

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but replies on the pipe
    session = None
    while True:
        request = _read(inp)
        if request is None:
            return 0
        op = request[0]
        try:
            if op == "open":
                _limit_self(request[1])
                try:
                    session = _open(request[1])
                    reply = ("ok",)
                except _BuildFailed as err:
                    reply = ("error", "build", str(err))
                except OSError as err:
                    reply = ("error", "read", err.strerror or str(err))
                except Exception as err:  # duckdb.Error and whatever else DuckDB raises while opening
                    reply = ("error", "open", _one_line(err))
            elif op == "query":
                reply = session.query(*request[1:])
            else:
                reply = ("error", "query", f"unknown request {op!r}")
            _write(out, reply)
        except MemoryError:
            try:
                _write(out, ("error", "memory", "out of memory"))
            except MemoryError:
                os._exit(EXIT_NO_MEMORY)
