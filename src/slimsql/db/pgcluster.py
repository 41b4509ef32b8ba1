"""A throwaway PostgreSQL cluster for tests and benchmarks: no system service, no TCP port.

:class:`Cluster` runs ``initdb`` into a folder (a new temporary one by default) and
starts ``postgres`` with ``pg_ctl``, listening only on a Unix socket inside that folder
(``listen_addresses = ''``): the port number only names the socket file, so two
clusters never collide and nothing is reachable from the network. The superuser is
``postgres`` with ``trust`` authentication on that socket (the socket's folder is
only reachable by the cluster's owner and root). ``stop()`` shuts it down and removes
the folder when the cluster made it.

PostgreSQL refuses to run as root. When this process is root, the server binaries run
as an unprivileged user (``postgres`` if it exists, else ``nobody``) through
``runuser`` or ``setpriv``, and the cluster folder is handed to that user;
:func:`unavailable` says why when none of that is possible.

    with Cluster() as pg:
        pg.create_database("shop")
        pg.sql("CREATE TABLE t (x int)", dbname="shop")
        url = pg.url("shop")          # postgresql://postgres@/shop?host=...&port=...
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

from ..errors import DatabaseError

#: The port number the socket file is named after (``.s.PGSQL.<port>``); nothing listens on TCP.
PORT = 5432
#: Seconds ``pg_ctl`` waits for the server to start or stop.
START_SECONDS = 60
#: Unprivileged users the server may run as when this process is root, in order of preference.
RUN_AS = ("postgres", "nobody")


def _version(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.parent.name)) or (0,)


def find_bin(name: str) -> Path | None:
    """A PostgreSQL program: on ``PATH``, else in the newest ``/usr/lib/postgresql/*/bin``."""
    found = shutil.which(name)
    if found:
        return Path(found)
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=_version, reverse=True)
    return next((c for c in candidates if os.access(c, os.X_OK)), None)


def _bin_dir() -> Path | None:
    """The folder of ``initdb``, resolved, so ``postgres``, ``pg_ctl`` and ``psql`` are the same version."""
    initdb = find_bin("initdb")
    return initdb.resolve().parent if initdb else None


def _run_as() -> pwd.struct_passwd | None:
    """The user the server runs as when this process is root (None when not root)."""
    if os.geteuid() != 0:
        return None
    for name in RUN_AS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


def _drop_privileges(user: pwd.struct_passwd) -> list[str] | None:
    """The command prefix that runs a program as ``user``: runuser, else setpriv."""
    if shutil.which("runuser"):
        return ["runuser", "-u", user.pw_name, "--"]
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"]
    return None


def unavailable() -> str | None:
    """None if a cluster can be started here, else a one-line reason."""
    folder = _bin_dir()
    if folder is None:
        return "no PostgreSQL server found (initdb is not on PATH nor in /usr/lib/postgresql/*/bin); " \
               "run scripts/install-postgres.sh"
    for program in ("postgres", "pg_ctl", "psql"):
        if not os.access(folder / program, os.X_OK):
            return f"{program} is missing beside {folder / 'initdb'}"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: pip install 'slimsql[postgres]'"
    if os.geteuid() == 0:
        user = _run_as()
        if user is None:
            return f"running as root and none of the users {', '.join(RUN_AS)} exists to run PostgreSQL as"
        if _drop_privileges(user) is None:
            return "running as root and neither runuser nor setpriv is there to run PostgreSQL as another user"
    return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


class Cluster:
    """One PostgreSQL cluster in ``folder`` (None: a new temporary folder, removed by ``stop``)."""

    superuser = "postgres"

    def __init__(self, folder: str | Path | None = None):
        self._made = folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="slimsql-pg-")) if folder is None else Path(folder)
        self.data = self.folder / "data"
        self.host = str(self.folder)
        self.port = PORT
        self.log = self.folder / "server.log"
        self._bin = _bin_dir()
        self._user = _run_as()
        self._started = False

    # -- running the server programs --------------------------------------------

    def _program(self, name: str, *args: str) -> subprocess.CompletedProcess:
        if self._bin is None:
            raise DatabaseError("cannot start PostgreSQL: " + (unavailable() or "initdb not found"))
        command = [str(self._bin / name), *args]
        if self._user is not None:
            prefix = _drop_privileges(self._user)
            if prefix is None:
                raise DatabaseError(f"cannot start PostgreSQL: {unavailable()}")
            command = prefix + command
        try:
            return subprocess.run(command, cwd=self.folder, capture_output=True, text=True,
                                  timeout=START_SECONDS + 30, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise DatabaseError(f"cannot run {name}: {err}") from None

    def start(self) -> "Cluster":
        """initdb (superuser ``postgres``, trust on the socket only, UTF8, C locale), then start."""
        reason = unavailable()
        if reason:
            raise DatabaseError(f"cannot start PostgreSQL: {reason}")
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            os.chown(self.folder, self._user.pw_uid, self._user.pw_gid)
        os.chmod(self.folder, 0o700)
        if not (self.data / "PG_VERSION").exists():
            done = self._program("initdb", "-D", str(self.data), "-U", self.superuser, "-E", "UTF8",
                                 "--locale=C", "--auth-local=trust", "--auth-host=reject", "--no-sync")
            if done.returncode != 0:
                raise DatabaseError(f"initdb failed: {_last_line(done.stderr or done.stdout)}")
            settings = {
                "listen_addresses": "''",
                "unix_socket_directories": "'" + self.host.replace("'", "''") + "'",
                "port": str(self.port),
                "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                "shared_buffers": "'32MB'", "max_connections": "40",
            }
            # postgresql.auto.conf is owned by the server user; opened as root or as that user, both work
            with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
                conf.write("\n# slimsql.db.pgcluster\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
        done = self._program("pg_ctl", "start", "-w", "-t", str(START_SECONDS), "-D", str(self.data),
                             "-l", str(self.log))
        if done.returncode != 0:
            try:
                detail = _last_line(self.log.read_text(errors="replace"))
            except OSError:
                detail = _last_line(done.stderr or done.stdout)
            raise DatabaseError(f"PostgreSQL did not start: {detail}")
        self._started = True
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove the folder if this cluster made it."""
        if self._started:
            self._program("pg_ctl", "stop", "-m", "fast", "-w", "-t", str(START_SECONDS), "-D", str(self.data))
            self._started = False
        if self._made:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- using it ----------------------------------------------------------------

    def url(self, dbname: str = "postgres", user: str | None = None) -> str:
        """``postgresql://USER@/DBNAME?host=SOCKETDIR&port=PORT``."""
        return (f"postgresql://{quote(user or self.superuser, safe='')}@/{quote(dbname, safe='')}"
                f"?host={quote(self.host, safe='')}&port={self.port}")

    def _connect(self, dbname: str):
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.superuser, dbname=dbname,
                               autocommit=True)

    def sql(self, statements: str, dbname: str = "postgres") -> None:
        """Run ``statements`` (several allowed, no parameters) as the superuser, autocommit."""
        import psycopg

        try:
            with self._connect(dbname) as conn:
                conn.execute(statements)
        except psycopg.Error as err:
            raise DatabaseError(f"setup SQL failed: {_last_line(str(err))}") from None

    def create_database(self, name: str) -> None:
        from psycopg import sql

        with self._connect("postgres") as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def load_file(self, dbname: str, path: str | Path) -> None:
        """Run a ``.sql`` file (e.g. a dump) with ``psql -v ON_ERROR_STOP=0 -q -f`` as the superuser."""
        psql = (self._bin / "psql") if self._bin else find_bin("psql")
        if psql is None:
            raise DatabaseError("psql not found")
        try:
            done = subprocess.run(
                [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=0", "-h", self.host, "-p", str(self.port),
                 "-U", self.superuser, "-d", dbname, "-f", str(Path(path).resolve())],
                capture_output=True, text=True, stdin=subprocess.DEVNULL)
        except OSError as err:
            raise DatabaseError(f"cannot run psql: {err}") from None
        if done.returncode != 0:
            raise DatabaseError(f"psql failed on {Path(path).name}: {_last_line(done.stderr)}")

    def create_reader(self, role: str = "reader", dbname: str = "postgres") -> None:
        """The recommended least-privilege role (see docs/postgres.md): LOGIN, NOSUPERUSER,
        CONNECT on ``dbname``, USAGE and SELECT on its non-system schemas and their tables
        (now and later), every transaction read-only by default. Idempotent."""
        from psycopg import sql

        name = sql.Identifier(role)
        with self._connect("postgres") as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                                     "NOBYPASSRLS").format(name))
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(dbname), name))
            conn.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(name))
        with self._connect(dbname) as conn:
            schemas = [row[0] for row in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname <> 'information_schema' "
                "AND nspname NOT LIKE 'pg\\_%'")]
            for schema in schemas:
                target = sql.Identifier(schema)
                conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(target, name))
                conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(target, name))
                conn.execute(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {}")
                             .format(target, name))
