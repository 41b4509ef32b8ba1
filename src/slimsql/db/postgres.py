"""PostgreSQL, read-only in every query's own transaction, bounded in time and size.

Threat model
============
Model output (and hand-written SQL) is untrusted; so is what the database holds.
The database must not change, no query may reach outside it (server files,
programs, other servers) or hold locks or resources past its time limit, and
results must stay bounded. The role slimsql connects as is trusted only as far as
its privileges go: the layers below hold even for a superuser, but a
least-privilege role (docs/postgres.md) is the one meant for production.

Covered, each by its own layer (so one bug does not open the door):

1. Allow-list (``slimsql.sql.check_read_only`` with :data:`RULES`): exactly one
   statement that parses (sqlglot, PostgreSQL dialect) as SELECT / set
   operation / WITH ... SELECT / VALUES / TABLE, with no INSERT, UPDATE, DELETE
   (data-modifying CTEs included), MERGE, DDL, SELECT INTO, COPY, SET, GRANT,
   COMMENT, transaction control, row locks (FOR UPDATE / SHARE) or unparsed
   command (CALL, DO, LOCK, VACUUM, PREPARE, ...) anywhere, and none of
   :data:`DENIED_FUNCTIONS` (server files, large objects, dblink, settings,
   sleeping, signalling backends, advisory locks, NOTIFY, replication,
   sequences, transaction ids, SQL run from a string such as query_to_xml).
   Unicode-escaped names (``U&"..."``, which sqlglot does not
   decode) are refused, as they could spell a denied function.
2. Server-side cursor: the query is sent as ``DECLARE ... CURSOR FOR <query>`` in
   the extended protocol, so the server itself accepts only one statement, and
   only a SELECT or VALUES without data-modifying WITH.
3. Read-only transaction: every query runs in a fresh ``BEGIN ISOLATION LEVEL
   REPEATABLE READ READ ONLY`` that is always rolled back, never committed; the
   session also starts with ``default_transaction_read_only = on`` (connection
   ``options``). The server refuses any write to tables, sequences (nextval)
   and the catalog in it, whatever a function called by the query does.
4. Time: ``SET LOCAL statement_timeout`` is what is left of the query's limit,
   renewed before each fetch so all of them together stay within it;
   ``lock_timeout`` is the same limit and ``idle_in_transaction_session_timeout``
   ends a session left idle in the transaction. The server cancels; the error
   becomes ``QueryTimeout``.
5. Bounded results: rows are fetched from the cursor in batches up to the row
   cap + 1 and a byte cap (``Limits.max_bytes``, values plus a per-row and
   per-value overhead); a cut result says so (``truncated_by``).
6. Privileges: whatever the role may not do, the server refuses; the least-
   privilege role of docs/postgres.md can only read (SELECT, no superuser, no
   ``pg_read_server_files``, no ``pg_execute_server_program``).
7. Messages: one line; connection errors never show the password.

Not covered:

* Reading: any table, view or catalog the role may SELECT can be read (the
  catalog is readable by every role: table names, settings in ``pg_settings``;
  for a superuser also the views over server files, ``pg_hba_file_rules``,
  ``pg_ident_file_mappings``, ``pg_file_settings``, whose functions are refused);
  give the role only what the asker may see (row-level security applies).
* Functions the database defines are called with their own effects except
  writes (refused by the read-only transaction): a ``SECURITY DEFINER`` function
  the role may EXECUTE runs with its owner's rights; a function that sleeps,
  takes advisory locks or sends NOTIFY does so (until the time limit).
  Foreign tables (postgres_fdw, file_fdw) are read like tables.
* The server layers alone (when the allow-list is bypassed, e.g. by ``_run``)
  refuse every write, data-modifying WITH, SELECT INTO, second statement,
  nextval/setval and FOR UPDATE/SHARE, but let these run: ``pg_sleep`` (until
  statement_timeout); session-level advisory locks (held until the connection
  closes); for a superuser, file access (``pg_read_file``, ``lo_import``) and
  ``txid_current``. ``set_config``, large objects and ``pg_notify`` take effect
  only inside the transaction, which is rolled back.
* Denial of service shorter than the limit, repeated by a caller; server memory
  (``work_mem`` and friends are the server's settings); temporary files of big
  sorts up to ``temp_file_limit`` (the server's setting).
* The network: a server that stops answering mid-query blocks the call until
  TCP gives up (the server's own ``statement_timeout`` does not help then).
* PostgreSQL's and psycopg's own bugs; keep them up to date.

Values are returned as JSON-friendly Python values so gold and predicted rows
compare and serialise the same: ``numeric`` as ``int`` when whole, else
``float``; dates, times and timestamps as ISO 8601 strings; ``interval``, UUID,
network addresses, ranges and other types as their text; ``bytea`` as
``bytes``; arrays as lists (converted element-wise); ``json``/``jsonb`` as the
decoded value.
"""

from __future__ import annotations

import datetime
import re
from urllib.parse import unquote
import threading
import time
from decimal import Decimal
from pathlib import Path

from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import TokenError
from sqlglot.tokens import TokenType

from ..errors import DatabaseError, InputError, QueryError, QueryTimeout
from ..schema import Column, ForeignKey, Schema, Table
from .base import EngineRules, Result, execute_checked, hide_passwords, url_scheme
from .limits import Limits, check_max_rows, check_timeout
from .worker import ROW_OVERHEAD, value_size

SCHEMES = ("postgresql", "postgres")
#: Introspection: time for the catalog queries, and per table for samples.
CATALOG_SECONDS, SAMPLE_SECONDS = 10.0, 2.0
#: Rows per FETCH (the last batch is cut to the row cap + 1).
BATCH = 500
NEED_PSYCOPG = "PostgreSQL needs psycopg: pip install 'slimsql[postgres]'"

_DBLINK = ("dblink", "dblink_exec", "dblink_connect", "dblink_connect_u", "dblink_disconnect", "dblink_open",
           "dblink_fetch", "dblink_close", "dblink_send_query", "dblink_is_busy", "dblink_get_result",
           "dblink_get_connections", "dblink_cancel_query", "dblink_error_message", "dblink_get_notify",
           "dblink_get_pkey", "dblink_build_sql_insert", "dblink_build_sql_delete", "dblink_build_sql_update")
_ADVISORY = tuple(f"pg_{try_}advisory_{xact}{kind}{shared}" for try_ in ("", "try_") for xact in ("", "xact_")
                  for kind in ("lock",) for shared in ("", "_shared")) + (
    "pg_advisory_unlock", "pg_advisory_unlock_shared", "pg_advisory_unlock_all")

#: Functions the allow-list refuses anywhere in a query.
DENIED_FUNCTIONS = frozenset({
    # server files and directories
    # server configuration files (readable by a superuser)
    "pg_show_all_file_settings", "pg_hba_file_rules", "pg_ident_file_mappings",
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_ls_logdir", "pg_ls_waldir",
    "pg_ls_tmpdir", "pg_ls_archive_statusdir", "pg_ls_logicalsnapdir", "pg_ls_logicalmapdir",
    "pg_ls_replslotdir", "pg_current_logfile",
    # adminpack
    "pg_file_write", "pg_file_rename", "pg_file_unlink", "pg_file_sync", "pg_logdir_ls", "pg_file_read",
    "pg_file_length",
    # large objects (server-side files in and out, and writes)
    "lo_import", "lo_export", "lo_get", "lo_put", "lo_from_bytea", "lo_create", "lo_creat", "lo_unlink",
    "lo_open", "lo_close", "lowrite", "loread", "lo_lseek", "lo_lseek64", "lo_tell", "lo_tell64",
    "lo_truncate", "lo_truncate64",
    # other servers
    *_DBLINK,
    # settings and time
    "set_config", "pg_sleep", "pg_sleep_for", "pg_sleep_until",
    # other sessions, the server process, WAL and backups
    "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile", "pg_rotate_logfile_old",
    "pg_promote", "pg_switch_wal", "pg_create_restore_point", "pg_backup_start", "pg_backup_stop",
    "pg_start_backup", "pg_stop_backup", "pg_wal_replay_pause", "pg_wal_replay_resume",
    "pg_log_backend_memory_contexts", "pg_import_system_collations",
    "pg_stat_reset", "pg_stat_reset_shared", "pg_stat_reset_single_table_counters",
    "pg_stat_reset_single_function_counters", "pg_stat_reset_slru", "pg_stat_reset_replication_slot",
    "pg_stat_reset_subscription_stats", "pg_stat_statements_reset",
    # locks and messages that outlive the query or reach other sessions
    *_ADVISORY, "pg_notify", "pg_logical_emit_message",
    # replication slots and origins
    "pg_create_physical_replication_slot", "pg_create_logical_replication_slot", "pg_drop_replication_slot",
    "pg_copy_physical_replication_slot", "pg_copy_logical_replication_slot", "pg_replication_slot_advance",
    "pg_logical_slot_get_changes", "pg_logical_slot_peek_changes", "pg_logical_slot_get_binary_changes",
    "pg_logical_slot_peek_binary_changes", "pg_replication_origin_create", "pg_replication_origin_drop",
    "pg_replication_origin_session_setup", "pg_replication_origin_session_reset",
    "pg_replication_origin_xact_setup", "pg_replication_origin_xact_reset", "pg_replication_origin_advance",
    "pg_replication_origin_progress", "pg_replication_origin_session_progress",
    # state changes: sequences, transaction ids
    "nextval", "setval", "currval", "lastval", "txid_current", "pg_current_xact_id",
    # SQL run from a string (or a cursor, or whole tables and databases)
    "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema", "cursor_to_xml", "cursor_to_xmlschema",
    "table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema", "schema_to_xml", "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema", "database_to_xml", "database_to_xmlschema", "database_to_xml_and_xmlschema",
})

#: sqlglot expression classes refused on top of the engine-neutral list of ``slimsql.sql``
#: (which has Insert/Update/Delete/Merge/Create/Drop/Alter/Command/Into/Copy/Set/Transaction...).
DENIED_STATEMENTS = frozenset({
    "Grant", "Revoke", "Comment",  # privileges and comments change the catalog
    "Lock",  # SELECT ... FOR UPDATE / SHARE: row locks block writers until the time limit
    "LockingStatement", "Kill", "Refresh", "Declare", "Execute", "Fetch", "Cluster", "Use", "Cache", "Uncache",
    "Export", "Install", "Heredoc",
})


class CheckedPostgres(Postgres):
    """PostgreSQL as sqlglot reads it, refusing Unicode-escaped names (``U&"..."``): sqlglot
    reads them as ``U & "..."``, an identifier it does not decode, where PostgreSQL decodes the
    escapes (``U&"\\0070g_read_file"`` is pg_read_file). ``U&'...'`` strings are refused the
    same way (sqlglot does decode those; a string names no function)."""

    class Tokenizer(Postgres.Tokenizer):
        def tokenize(self, sql: str):
            tokens = super().tokenize(sql)
            for first, amp, quoted in zip(tokens, tokens[1:], tokens[2:]):
                if (first.token_type == TokenType.VAR and first.text.upper() == "U" and amp.token_type == TokenType.AMP
                        and first.end + 1 == amp.start and amp.end + 1 == quoted.start
                        and quoted.token_type in (TokenType.IDENTIFIER, TokenType.STRING)):
                    raise TokenError('Unicode escapes (U&"..." or U&\'...\') are not allowed')
            return tokens


RULES = EngineRules(
    name="postgres",
    display_name="PostgreSQL",
    dialect="postgres",
    time_limit="SET LOCAL statement_timeout (renewed before each fetch) and lock_timeout in a read-only "
               "transaction; the server cancels the query",
    denied_functions=DENIED_FUNCTIONS,
    denied_statements=DENIED_STATEMENTS,
    error_categories=(
        (r'column (?:"[^"]*"|\S+) does not exist', "unknown column"),
        (r'column reference "[^"]*" is ambiguous', "unknown column"),
        (r'missing from-clause entry for table', "unknown table"),
        (r'relation "[^"]*" does not exist', "unknown table"),
        (r'schema "[^"]*" does not exist', "unknown table"),
        (r"syntax error at or near", "syntax"), (r"syntax error at end of input", "syntax"),
        (r"unterminated (quoted|dollar)", "syntax"),
    ),
    # PostgreSQL's wording (messages, not SQL: a regex is fine here)
    # (``column "x" does not exist``, ``column t.x does not exist``, ``relation "s.t" does not exist``)
    missing_column=r'column "?(?:[^"]*?\.)?(?P<name>[^".]+?)"? does not exist',
    missing_table=r'relation "(?:[^"]*?\.)?(?P<name>[^".]+)" does not exist',
    check_dialect=CheckedPostgres,
)


def _psycopg():
    try:
        import psycopg
    except ImportError:
        raise InputError(NEED_PSYCOPG) from None
    return psycopg


def _value(value):
    """One value as a JSON-friendly Python value (see the module docstring)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        return float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_value(v) for v in value]
    if isinstance(value, dict):
        return value
    return str(value)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else "unknown error"


class PostgresDatabase:
    """A PostgreSQL connection that only reads: one connection per object (calls from
    several threads are serialised), reopened on the next call when it is lost."""

    rules = RULES
    dialect = RULES.dialect

    @classmethod
    def opens(cls, target: str | Path) -> bool:
        """``postgresql://...`` and ``postgres://...`` URLs."""
        return isinstance(target, str) and url_scheme(target) in SCHEMES

    def __init__(self, url: str, *, timeout: float = 10.0, max_rows: int = 1000, limits: Limits | None = None,
                 schemas: tuple[str, ...] | None = None):
        if not self.opens(url):
            raise InputError("a PostgreSQL database is a postgresql:// or postgres:// URL")
        psycopg = _psycopg()
        self.timeout = check_timeout(timeout)
        self.max_rows = check_max_rows(max_rows)
        self.limits = limits or Limits()
        #: the schemas :meth:`schema` reads (None: every non-system schema the role may use).
        self.schemas = tuple(schemas) if schemas is not None else None
        found = re.match(r"[^:]+://[^/@:]*:([^@/]*)@", url)  # not urlsplit: it raises on a bad host
        self._url, self._password = url, found.group(1) if found else ""  # for _hide, before anything can fail
        try:
            self._params = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.Error as err:
            raise DatabaseError(f"not a valid PostgreSQL URL: {self._hide(_first_line(err), url)}") from None
        self._password = str(self._params.get("password") or "")
        self.shown = self._shown()
        self._lock = threading.Lock()
        self._conn = None
        self._schema: dict[int, Schema] = {}
        #: (name, reason) of each table or view introspection left out.
        self.skipped: list[tuple[str, str]] = []
        with self._lock:
            self._connect()

    # -- the connection ---------------------------------------------------------

    def _hide(self, text: str, url: str | None = None) -> str:
        """``text`` without the password (nor the URL, which may hold one)."""
        password = getattr(self, "_password", "")
        text = hide_passwords(text)
        for secret in (url, getattr(self, "_url", None), password, unquote(password)):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _shown(self) -> str:
        """The database as one line for messages: ``user@host:port/dbname``, never the password."""
        p = self._params
        host = p.get("host") or p.get("hostaddr") or "localhost"
        port = f":{p['port']}" if p.get("port") else ""
        user = f"{p['user']}@" if p.get("user") else ""
        return f"{user}{host}{port}/{p.get('dbname', '')}"

    def _connect(self):
        psycopg = _psycopg()
        options = " ".join(filter(None, [str(self._params.get("options") or ""),
                                         "-c default_transaction_read_only=on"]))
        try:
            conn = psycopg.connect(self._url, options=options, application_name="slimsql",
                                   connect_timeout=max(2, int(min(self.timeout, 30)) + 1), autocommit=False)
        except psycopg.Error as err:
            raise DatabaseError(f"cannot connect to PostgreSQL at {self.shown}: "
                                f"{self._hide(_first_line(err))}") from None
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        self._conn = conn
        return conn

    def close(self) -> None:
        conn, self._conn = getattr(self, "_conn", None), None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> "PostgresDatabase":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- execution ----------------------------------------------------------------

    def execute(self, sql: str, *, max_rows: int | None = None, timeout: float | None = None) -> Result:
        """Check ``sql`` against the allow-list, then run it under every server layer.
        The time limit covers the allow-list parse too."""
        return execute_checked(self, sql, max_rows=max_rows, timeout=timeout)

    def _run(self, sql: str, params: tuple = (), *, max_rows: int | None = None, timeout: float | None = None,
             shown_limit: float | None = None) -> Result:
        """Run in a read-only transaction through a server-side cursor, without the allow-list."""
        psycopg = _psycopg()
        cap = self.max_rows if max_rows is None else check_max_rows(max_rows)
        limit = self.timeout if timeout is None else check_timeout(timeout)
        shown_limit = limit if shown_limit is None else shown_limit
        with self._lock:
            conn = self._conn if self._conn is not None and not self._conn.closed else self._connect()
            try:
                return self._query(conn, sql, tuple(params), cap, limit)
            except psycopg.errors.QueryCanceled:
                raise QueryTimeout(f"query stopped after the {shown_limit:g} s time limit") from None
            except psycopg.errors.LockNotAvailable:
                raise QueryError(f"the query waited for a lock longer than the {shown_limit:g} s time limit") \
                    from None
            except psycopg.OperationalError as err:
                if conn.closed or conn.broken:
                    self.close()
                    raise QueryError(f"lost the connection to PostgreSQL at {self.shown}: "
                                     f"{self._hide(_first_line(err))}") from None
                raise QueryError(f"the database refused the query: {self._hide(_first_line(err))}") from None
            except psycopg.Error as err:
                message = err.diag.message_primary if err.diag and err.diag.message_primary else str(err)
                raise QueryError(f"the database refused the query: {self._hide(_first_line(message))}") from None
            finally:
                if not conn.closed:
                    try:
                        conn.rollback()
                    except psycopg.Error:
                        self.close()

    def _query(self, conn, sql: str, params: tuple, cap: int, limit: float) -> Result:
        deadline = time.monotonic() + limit

        def bound() -> None:  # every statement gets what is left of the limit
            ms = max(1, int((deadline - time.monotonic()) * 1000))
            if ms <= 1:
                raise _psycopg().errors.QueryCanceled("time limit")
            conn.execute("SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true),"
                         " set_config('idle_in_transaction_session_timeout', %s, true)",
                         (str(ms), str(ms), str(ms + 60_000)))

        start = time.monotonic()
        bound()  # starts the transaction: BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY
        rows, used, cut_by, columns, widest = [], 0, "", (), ROW_OVERHEAD
        with conn.cursor(name="slimsql_query") as cur:
            cur.execute(sql, params or None)
            columns = tuple(d.name for d in cur.description or ())
            while not cut_by:
                bound()
                # as many rows as the byte cap leaves room for at the widest row seen so far (one at first,
                # then doubling), so a result of huge values never arrives in a batch much beyond the cap
                room = max(1, (self.limits.max_bytes - used) // widest)
                batch = cur.fetchmany(max(1, min(BATCH, cap + 1 - len(rows), room, max(1, 2 * len(rows)))))
                if not batch:
                    break
                for raw in batch:
                    if len(rows) == cap:
                        cut_by = "rows"
                        break
                    row = tuple(_value(v) for v in raw)
                    width = ROW_OVERHEAD + sum(map(value_size, row))
                    widest = max(widest, width)
                    used += width
                    if used > self.limits.max_bytes:
                        cut_by = "bytes"
                        break
                    rows.append(row)
        return Result(columns=columns, rows=rows, truncated=bool(cut_by), seconds=time.monotonic() - start,
                      truncated_by=cut_by)

    # -- introspection --------------------------------------------------------------

    def schema(self, samples: int = 3) -> Schema:
        """Tables, views and materialized views with columns, types, keys, comments and up
        to ``samples`` example text values. Relations the role may not SELECT are left out
        and listed in :attr:`skipped`; partitions are read through their parent."""
        if samples not in self._schema:
            self._schema[samples] = self._introspect(samples)
        return self._schema[samples]

    def _catalog(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            return self._run(sql, params, max_rows=1_000_000, timeout=max(self.timeout, CATALOG_SECONDS)).rows
        except QueryTimeout:
            raise QueryTimeout(f"reading the schema of {self.shown} took too long") from None
        except QueryError as err:
            raise DatabaseError(f"cannot read the schema of {self.shown}: {err}") from None

    def _introspect(self, samples: int) -> Schema:
        (search,), = self._catalog("SELECT current_schemas(false)")
        default = search[0] if search else "public"
        wanted = list(self.schemas) if self.schemas is not None else None
        relations = self._catalog(
            "SELECT c.oid, n.nspname, c.relname, c.relkind, coalesce(obj_description(c.oid, 'pg_class'), ''),"
            " has_table_privilege(c.oid, 'SELECT') AND has_schema_privilege(n.oid, 'USAGE')"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition"
            " AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%%'"
            " AND (%s::text[] IS NULL OR n.nspname = ANY(%s::text[]))"
            " ORDER BY n.nspname <> %s, n.nspname, c.relname", (wanted, wanted, default))

        def name(schema: str, relation: str) -> str:
            return relation if schema == default else f"{schema}.{relation}"

        readable, skipped = [], []
        for oid, nsp, rel, kind, comment, allowed in relations:
            if allowed:
                readable.append((oid, nsp, rel, name(nsp, rel), kind, comment))
            else:
                skipped.append((name(nsp, rel), "no SELECT privilege"))
        oids = [r[0] for r in readable]
        columns: dict[int, list] = {}
        for relid, col, ctype, notnull, default_, comment, textual in self._catalog(
                "SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,"
                " pg_get_expr(d.adbin, d.adrelid), coalesce(col_description(a.attrelid, a.attnum), ''),"
                " t.typcategory IN ('S', 'E')"
                " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
                " LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
                " WHERE a.attrelid = ANY(%s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped"
                " ORDER BY a.attrelid, a.attnum", (oids,)):
            columns.setdefault(relid, []).append((col, ctype, notnull, default_, comment, textual))
        keys: dict[int, list] = {}
        for relid, kind, cols, ref_nsp, ref_rel, ref_cols in self._catalog(
                "SELECT k.conrelid, k.contype,"
                " ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(n, i)"
                "       JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.i),"
                " rn.nspname, r.relname,"
                " ARRAY(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(n, i)"
                "       JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.i)"
                " FROM pg_constraint k LEFT JOIN pg_class r ON r.oid = k.confrelid"
                " LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace"
                " WHERE k.conrelid = ANY(%s::oid[]) AND k.contype IN ('p', 'f') ORDER BY k.conrelid, k.conname",
                (oids,)):
            keys.setdefault(relid, []).append((kind, cols, ref_nsp and name(ref_nsp, ref_rel), ref_cols))
        tables = [self._table((nsp, rel), shown, kind, comment, columns.get(oid, []), keys.get(oid, []), samples)
                  for oid, nsp, rel, shown, kind, comment in readable]
        self.skipped = skipped
        return Schema(tables=tuple(tables), dialect=self.dialect)

    def _table(self, relation, shown, kind, comment, columns, keys, samples) -> Table:
        primary = {c for k, cols, _, _ in keys if k == "p" for c in cols}
        values = self._samples(relation, [c[0] for c in columns], {c[0] for c in columns if c[5]}, samples) \
            if kind != "f" else {}  # a foreign table's rows come from elsewhere: not read for samples
        cols = tuple(Column(name=col, type=ctype, nullable=not notnull, primary_key=col in primary,
                            default=default, samples=values.get(col, ()), comment=ccomment)
                     for col, ctype, notnull, default, ccomment, _ in columns)
        foreign = tuple(ForeignKey(columns=tuple(cols_), ref_table=ref, ref_columns=tuple(ref_cols))
                        for k, cols_, ref, ref_cols in keys if k == "f")
        return Table(name=shown, columns=cols, foreign_keys=foreign, kind="table" if kind in "rpf" else "view",
                     comment=comment)

    def _samples(self, relation: tuple[str, str], columns: list[str], textual: set[str],
                 per_column: int) -> dict[str, tuple]:
        if per_column <= 0 or not textual:
            return {}
        from psycopg import sql

        try:
            query = sql.SQL("SELECT * FROM {} LIMIT 50").format(sql.Identifier(*relation)).as_string(None)
            rows = self._run(query, max_rows=50, timeout=min(self.timeout, SAMPLE_SECONDS)).rows
        except QueryError:  # a slow or broken view: no samples, not a failure
            return {}
        found: dict[str, list] = {c: [] for c in textual}
        for row in rows:
            for col, value in zip(columns, row):
                if col not in found or not isinstance(value, str) or not value.strip():
                    continue
                value = value if len(value) <= 40 else value[:37] + "..."
                if value not in found[col] and len(found[col]) < per_column:
                    found[col].append(value)
        return {c: tuple(v) for c, v in found.items()}

