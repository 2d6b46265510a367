"""PostgreSQL for the test suite: a throwaway cluster and a fresh database per test.

`PostgresCluster` runs initdb into a temp dir and starts the server on 127.0.0.1 at a free
port, unix socket inside the cluster dir, durability off (fsync, synchronous_commit,
full_page_writes: nothing of it has to survive a crash), and stops it and deletes the dir at
the end. As root it runs the server as the `postgres` system user (initdb refuses root). A
watchdog process stops the cluster too if the test process dies without cleaning up.

`TestDatabases` migrates one template database to head (the real Alembic migrations) and
gives each test `CREATE DATABASE ... TEMPLATE` of it, dropped after the test. A copy costs
0.1-0.3 s on this 2-core machine, so the next ones are made in a background thread while
tests run (and drops happen there too).

POSTGRES_TEST_URL=postgresql+psycopg://user:pw@host:port/db uses that server instead (the role
must be allowed to CREATE DATABASE; databases are named lc_test_<pid>_<n>).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import URL, Engine, create_engine, make_url, text

from db import migrate
from tests.helpers import free_port

SKIP_VARIABLE = "SKIP_POSTGRES_TESTS"
URL_VARIABLE = "POSTGRES_TEST_URL"
HOW_TO_GET_IT = (
    "install PostgreSQL's server (Debian: apt-get install postgresql; `make test` does it when run as root), "
    f"or set {URL_VARIABLE}=postgresql+psycopg://user:pw@host:port/postgres to use a server, "
    f"or set {SKIP_VARIABLE}=1 to run the database tests on SQLite only"
)


LOG_VARIABLE = "POSTGRES_TEST_LOG"
"""A file to keep the throwaway cluster's log in, with every statement logged (for a hang: which
backend, by pid, ran what before it went idle in a transaction)."""

_DIAGNOSTICS = ["-c log_line_prefix='%m [%p] %d %x '", "-c log_lock_waits=on"]
"""Always: each log line names its backend (pid), database and transaction id, and a lock wait
longer than deadlock_timeout (1 s) is logged with who waits for what; an idle transaction ended
by idle_in_transaction_session_timeout (`db.store._PG_TIMEOUTS`) is logged by the server anyway."""

_STATEMENTS = ["-c log_statement=all"]


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server could be had for the tests."""


def skipped() -> bool:
    return os.environ.get(SKIP_VARIABLE, "") == "1"


def find_bin_dir() -> Path:
    """The server binaries: PG_BIN, else the newest /usr/lib/postgresql/<version>/bin (Debian),
    else wherever `initdb` is on the PATH."""
    candidates = [os.environ["PG_BIN"]] if os.environ.get("PG_BIN") else []
    versions = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    candidates += [str(Path(p).parent) for p in sorted(versions, key=_version, reverse=True)]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for folder in candidates:
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    raise PostgresUnavailable("no PostgreSQL server binaries (initdb, pg_ctl) found")


def _version(path: str) -> tuple[int, ...]:
    number = Path(path).parent.parent.name
    return tuple(int(p) for p in number.split(".") if p.isdigit())


class PostgresCluster:
    """A private PostgreSQL cluster for one test session."""

    def __init__(self) -> None:
        self.bin = find_bin_dir()
        self.as_postgres = os.geteuid() == 0
        # as root the server runs as `postgres`, which must reach the dir: /tmp, not $TMPDIR
        self.dir = Path(tempfile.mkdtemp(prefix="lc-pgtest-", dir="/tmp" if self.as_postgres else None))
        self.data = self.dir / "data"
        self.port = 0
        self._watchdog: subprocess.Popen[bytes] | None = None

    def start(self) -> URL:
        """initdb, start, and return the URL of the `postgres` database (trust auth, role postgres)."""
        try:
            self._own_dir()
            self._run(
                "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"
            )
            for _ in range(5):  # a free port can be taken between choosing it and binding it
                self.port = free_port()
                if self._pg_ctl_start():
                    break
            else:
                raise PostgresUnavailable(f"the server did not start; its log:\n{self._log()}")
            self._start_watchdog()
        except BaseException:
            self.stop()
            raise
        return URL.create(
            "postgresql+psycopg", username="postgres", host="127.0.0.1", port=self.port, database="postgres"
        )

    def stop(self) -> None:
        if self.data.joinpath("postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        keep = os.environ.get(LOG_VARIABLE)
        if keep and (self.dir / "server.log").exists():
            shutil.copyfile(self.dir / "server.log", keep)
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def _own_dir(self) -> None:
        if self.as_postgres:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "running as root but there is no `postgres` system user to run the "
                    "server as (it comes with Debian's postgresql package)"
                ) from None
            os.chown(self.dir, user.pw_uid, user.pw_gid)

    def _pg_ctl_start(self) -> bool:
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-p {self.port}",
                f"-c unix_socket_directories={self.dir}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=300",
                "-c shared_buffers=64MB",
                *_DIAGNOSTICS,
                *(_STATEMENTS if os.environ.get(LOG_VARIABLE) else []),
            ]
        )
        done = self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
            check=False,
        )
        return done.returncode == 0

    def _start_watchdog(self) -> None:
        """A process that stops the cluster if this one dies without doing it (a killed run)."""
        stop = " ".join(self._command("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop"))
        script = (
            f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{self.dir}'"
        )
        self._watchdog = subprocess.Popen(
            ["sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _command(self, tool: str, *args: str) -> list[str]:
        command = [str(self.bin / tool), *args]
        return ["runuser", "-u", "postgres", "--", *command] if self.as_postgres else command

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self._command(tool, *args), capture_output=True, text=True, timeout=120, check=False, cwd=self.dir
        )
        if check and done.returncode != 0:
            raise PostgresUnavailable(f"{tool} failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
        return done

    def _log(self) -> str:
        log = self.dir / "server.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"


class TestDatabases:
    """Databases for tests on one server: a template migrated to head once, then a copy of it
    per test. `admin` is a URL of a role that may create databases."""

    __test__ = False  # not a test class

    AHEAD = 2
    """Copies made in advance."""

    def __init__(self, admin: URL) -> None:
        self.admin = admin
        self.prefix = f"lc_test_{os.getpid()}"
        self.template = f"{self.prefix}_template"
        self._names = itertools.count(1)
        self._created: set[str] = set()
        self._engine: Engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        self._background = ThreadPoolExecutor(1, thread_name_prefix="pg-test-databases")
        self._ready: deque[Future[str]] = deque()
        self._execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
        self._execute(f'CREATE DATABASE "{self.template}"')
        migrate.upgrade(self.url(self.template))

    def url(self, name: str) -> str:
        return self.admin.set(database=name).render_as_string(hide_password=False)

    def create(self) -> str:
        """A new database with the current schema (a copy of the template)."""
        while len(self._ready) < self.AHEAD + 1:
            self._ready.append(self._background.submit(self._copy))
        return self.url(self._ready.popleft().result())

    def create_empty(self) -> str:
        """A new database without any of the project's tables (for migration tests)."""
        name = f"{self.prefix}_{next(self._names)}"
        self._execute(f'CREATE DATABASE "{name}"')
        self._created.add(name)
        return self.url(name)

    def drop(self, url: str) -> None:
        """Drop a test's database (in the background), ending the connections its workers left open."""
        self._background.submit(self._drop, make_url(url).database or "")

    def close(self) -> None:
        self._background.shutdown(wait=True)
        for name in [*self._created, self.template]:
            self._drop(name)
        self._engine.dispose()

    def _copy(self) -> str:
        name = f"{self.prefix}_{next(self._names)}"
        self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self._created.add(name)
        return name

    def _drop(self, name: str) -> None:
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._created.discard(name)

    def _execute(self, sql: str) -> None:
        with self._engine.connect() as conn:
            conn.execute(text(sql))


def connect() -> tuple[TestDatabases, PostgresCluster | None]:
    """Databases on POSTGRES_TEST_URL's server, else on a cluster started here (returned too,
    for stopping). Raises PostgresUnavailable with what to do."""
    given = os.environ.get(URL_VARIABLE, "").strip()
    if given:
        try:
            return TestDatabases(make_url(given)), None
        except Exception as exc:  # any failure means: no usable server
            raise PostgresUnavailable(f"{URL_VARIABLE} is set but unusable: {exc}") from exc
    cluster = PostgresCluster()
    admin = cluster.start()
    try:
        return TestDatabases(admin), cluster
    except BaseException:
        cluster.stop()
        raise


if __name__ == "__main__":  # a manual check: start, make a database, stop
    started = time.perf_counter()
    databases, running = connect()
    print("cluster up and template migrated in", round(time.perf_counter() - started, 2), "s", file=sys.stderr)
    print(databases.create())
    databases.close()
    if running is not None:
        running.stop()
