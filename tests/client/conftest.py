"""Fixtures of the client tests: throw-away PostgreSQL 15 clusters on loopback.

Each test module gets its own cluster (module scope), started with scripts/cluster.sh as
the `postgres` OS user in a fresh directory under /tmp on a free port in 55500-55599, with
trust authentication over 127.0.0.1. It is stopped (and its directory removed) when the
module ends, whether its tests passed, failed or errored, and again at interpreter exit as a
last resort.

In every cluster the superuser `postgres` creates the extension and two non-superuser
LOGIN roles:

* ``app_user``  - a plain role, what an application connects as;
* ``key_admin`` - a member of ``session_auth_admin``, which may manage keys.

Tests use the function-scoped ``pg`` fixture: it resets the keyring and every per-database
and per-role setting before the test and closes every connection the test opened after it.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[2]
# The PostgreSQL installation under test (scripts/test.sh sets it per major; also read by
# scripts/cluster.sh).
PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
PG_CONFIG = f"{PG_BIN}/pg_config"
PG_MAJOR = int(subprocess.run([PG_CONFIG, "--version"], capture_output=True, text=True,
                              check=True).stdout.split()[1].split(".")[0])
# How EXPLAIN shows the claim functions' initPlan and its value (PostgreSQL 17 changed both).
INITPLAN = "InitPlan 1 (returns $0)" if PG_MAJOR < 17 else "InitPlan 1"
INITPLAN_VALUE = "$0" if PG_MAJOR < 17 else "(InitPlan 1).col1"
# A relocatable PostgreSQL (scripts/postgresql.sh) finds its own libpq only through this:
# its modules' RUNPATH names the directory it was built for.
SERVER_ENV = ([] if PG_BIN.startswith("/usr/lib/postgresql/")
              else [f"LD_LIBRARY_PATH={Path(PG_BIN).parent / 'lib'}"])
CLUSTER_SH = REPO / "scripts" / "cluster.sh"
PORTS = range(55500, 55600)
# How a cluster loads the library: in the postmaster (the recommended setting: settings
# defined in every backend, and the shared revocation filter), or at each connection's start
# (no shared memory, so every new token's revocation check is a lookup).
PRELOAD_LINES = {
    "shared": ["shared_preload_libraries = 'pg_session_auth'"],
    "session": ["session_preload_libraries = 'pg_session_auth'"],
    None: [],
}

APP_USER = "app_user"
KEY_ADMIN = "key_admin"
ADMIN_ROLE = "session_auth_admin"

# Every connection the tests open gets these, so that nothing can hang the suite.
SAFETY_OPTIONS = "-c statement_timeout=20000 -c lock_timeout=10000"

_live_clusters: set["Cluster"] = set()

# A helper that reports a verification's outcome instead of raising, so that many
# verifications can share ONE statement (and so one statement clock).
TRY_VERIFY = """
    create function public.try_verify(token text) returns text
    language plpgsql as $$
    begin
        perform auth.verify(token);
        return 'ok';
    exception when others then
        return sqlstate || ' ' || sqlerrm;
    end
    $$"""


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(ports) -> list[int]:
    """The free ports of a range, in random order (several runs may share the machine)."""
    ports = list(ports)
    random.Random(os.getpid() ^ time.time_ns()).shuffle(ports)
    return [port for port in ports if _port_is_free(port)]


def as_postgres(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs a server program as the postgres OS user (PostgreSQL refuses to run as root)."""
    command = ["env", *SERVER_ENV, *argv]
    if os.geteuid() == 0:
        command = ["sudo", "-u", "postgres", "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


class Cluster:
    """One throw-away cluster. ``connect`` tracks connections so they can be closed.
    Subclasses may set ``PORT_RANGE`` and extend ``conf()``."""

    PORT_RANGE = PORTS

    def __init__(self, preload: bool | str | None = True):
        # True means the recommended "shared"; False means not preloaded at all.
        self.preload = "shared" if preload is True else (None if preload is False else preload)
        self.port: int | None = None
        self.base = Path(tempfile.mkdtemp(prefix="pg_session_auth_client_", dir="/tmp"))
        shutil.chown(self.base, "postgres", "postgres")
        self.datadir = self.base / "data"
        self.connections: list[psycopg.Connection] = []
        self.started = False

    # -- life cycle ------------------------------------------------------------------------

    def conf(self) -> list[str]:
        """postgresql.conf lines for this cluster."""
        return list(PRELOAD_LINES[self.preload])

    def start(self) -> None:
        last_error = None
        for port in free_ports(self.PORT_RANGE)[:5]:
            result = subprocess.run(
                ["bash", str(CLUSTER_SH), "start", str(self.datadir), str(port), *self.conf()],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if result.returncode == 0:
                self.port = port
                self.started = True
                _live_clusters.add(self)
                return
            # Most likely somebody took the port between the check and the start.
            last_error = f"port {port}: {result.stdout}{result.stderr}{self.server_log()}"
            subprocess.run(["bash", str(CLUSTER_SH), "stop", str(self.datadir)],
                           capture_output=True, timeout=60)
        raise RuntimeError(f"could not start a cluster: {last_error}")

    def stop(self) -> None:
        self.close_connections()
        if self.started:
            subprocess.run(["bash", str(CLUSTER_SH), "stop", str(self.datadir)],
                           capture_output=True, timeout=120)
            self.started = False
        _live_clusters.discard(self)
        shutil.rmtree(self.base, ignore_errors=True)

    def server_log(self) -> str:
        try:
            return (self.datadir / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    # -- connections -----------------------------------------------------------------------

    def connect(self, user: str = "postgres", dbname: str = "postgres",
                autocommit: bool = True, **kwargs) -> psycopg.Connection:
        conn = psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=user,
            dbname=dbname,
            autocommit=autocommit,
            connect_timeout=10,
            options=kwargs.pop("options", SAFETY_OPTIONS),
            **kwargs,
        )
        self.connections.append(conn)
        return conn

    def close_connections(self) -> None:
        while self.connections:
            conn = self.connections.pop()
            with contextlib.suppress(Exception):
                conn.close()

    def sql(self, query: str, params=None, user: str = "postgres"):
        """Runs one statement on a fresh connection and returns all rows (or None)."""
        with psycopg.connect(host="127.0.0.1", port=self.port, user=user, dbname="postgres",
                             autocommit=True, connect_timeout=10,
                             options=SAFETY_OPTIONS) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else None

    # -- state -----------------------------------------------------------------------------

    def setup_roles_and_extension(self) -> None:
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                             dbname="postgres", autocommit=True, connect_timeout=10) as conn:
            conn.execute("create extension pg_session_auth")
            conn.execute(f"create role {APP_USER} login")
            # The trust settings are hidden from request roles; the tests read them back.
            conn.execute(f"grant pg_read_all_settings to {APP_USER}")
            conn.execute(f"create role {KEY_ADMIN} login")
            conn.execute(f"grant {ADMIN_ROLE} to {KEY_ADMIN}")
            conn.execute(TRY_VERIFY)

    def reset(self) -> None:
        """Empty keyring, no per-database/per-role settings, extension present."""
        self.close_connections()
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                             dbname="postgres", autocommit=True, connect_timeout=10,
                             options=SAFETY_OPTIONS) as conn:
            conn.execute("create extension if not exists pg_session_auth")
            conn.execute("delete from auth.keys")
            conn.execute("alter database postgres reset all")
            for role in (APP_USER, KEY_ADMIN, "postgres"):
                conn.execute(f"alter role {role} reset all")


@atexit.register
def _stop_leftover_clusters() -> None:
    for cluster in list(_live_clusters):
        with contextlib.suppress(Exception):
            cluster.stop()


@contextlib.contextmanager
def running_cluster(preload: bool | str | None = True):
    """A started cluster with the extension and roles, stopped on exit whatever happens."""
    cluster = Cluster(preload=preload)
    try:
        cluster.start()
        cluster.setup_roles_and_extension()
        yield cluster
    except BaseException:
        if cluster.started:
            print("---- server log ----\n" + cluster.server_log()[-5000:])
        raise
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def cluster():
    """This module's cluster, with shared_preload_libraries = 'pg_session_auth'."""
    with running_cluster(preload=True) as c:
        yield c


@pytest.fixture(scope="module")
def cluster_without_preload():
    """A cluster that does not preload the library: it loads in a backend only when one of its
    C functions is first called there."""
    with running_cluster(preload=False) as c:
        yield c


@pytest.fixture
def pg(cluster):
    """The module's cluster, reset for this test; the test's connections closed after it."""
    cluster.reset()
    yield cluster
    cluster.close_connections()


# -- assertions -----------------------------------------------------------------------------


class ExpectedError:
    """What `raises_sqlstate` caught (filled on exit of the with-block)."""

    error: psycopg.Error | None = None

    @property
    def message(self) -> str:
        return self.error.diag.message_primary or ""

    @property
    def detail(self) -> str | None:
        return self.error.diag.message_detail

    @property
    def hint(self) -> str | None:
        return self.error.diag.message_hint

    def texts(self) -> list[str]:
        d = self.error.diag
        return [t for t in (d.message_primary, d.message_detail, d.message_hint,
                            d.context, str(self.error)) if t]


@contextlib.contextmanager
def raises_sqlstate(sqlstate: str, message: str | None = None):
    """Asserts that the block raises a PostgreSQL error with this SQLSTATE (and, if given,
    exactly this primary message)."""
    caught = ExpectedError()
    try:
        yield caught
    except psycopg.Error as error:
        caught.error = error
        assert error.sqlstate == sqlstate, (
            f"expected SQLSTATE {sqlstate}, got {error.sqlstate}: {error}"
        )
        if message is not None:
            assert error.diag.message_primary == message, (
                f"expected message {message!r}, got {error.diag.message_primary!r}"
            )
    else:
        raise AssertionError(f"expected SQLSTATE {sqlstate}, but nothing was raised")


@dataclasses.dataclass(frozen=True)
class Notice:
    """A copy of a notice (psycopg's Diagnostic is valid only during the notice callback)."""

    severity_nonlocalized: str | None
    sqlstate: str | None
    message_primary: str | None
    message_detail: str | None
    message_hint: str | None

    @classmethod
    def of(cls, diag) -> "Notice":
        return cls(diag.severity_nonlocalized, diag.sqlstate, diag.message_primary,
                   diag.message_detail, diag.message_hint)


def collect_notices(conn) -> list[Notice]:
    """Starts collecting the connection's notices into the returned list."""
    received: list[Notice] = []
    conn.add_notice_handler(lambda diag: received.append(Notice.of(diag)))
    return received


@pytest.fixture
def assert_sqlstate():
    """The `raises_sqlstate` context manager, as a fixture."""
    return raises_sqlstate
