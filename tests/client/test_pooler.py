"""Pooler safety, proven with the real thing: PgBouncer in transaction pooling mode in front
of a test cluster.

Many clients, each authenticating as a different user, share FEWER server connections than
there are clients. Because `auth.authenticate()` binds the identity with SET LOCAL semantics,
every transaction must see exactly its own identity and rows, and a transaction that did not
authenticate must see no identity and no rows, whichever client used its server connection
before. The tests prove that pooling really happened (several clients' transactions on the
same server backend) rather than trusting the configuration.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from client_support import claims, make_key

PGBOUNCER = "/usr/sbin/pgbouncer"
PGBOUNCER_PORTS = range(55800, 55900)

POOL_SIZE = 3          # server connections per (database, user) pool
CLIENTS = 8            # > POOL_SIZE
TXNS_PER_CLIENT = 1300  # 8 x 1300 = 10,400 transactions
UNAUTH_EVERY = 10      # every 10th transaction of a client does NOT authenticate
ROWS_PER_USER = 20
TIME_LIMIT = 75.0      # seconds for the whole stress run

AUTHENTICATOR = "authenticator"
KID = "pool-k"

pytestmark = pytest.mark.skipif(not os.path.exists(PGBOUNCER), reason="pgbouncer not installed")


# -- fixtures -------------------------------------------------------------------------------


def _free_port(ports) -> int:
    candidates = list(ports)
    random.Random(os.getpid() ^ time.time_ns()).shuffle(candidates)
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports}")


@dataclass
class World:
    cluster: object
    key: object
    users: list[uuid.UUID]
    bouncer_port: int
    bouncer_dir: Path

    def connect(self, user: str = AUTHENTICATOR, dbname: str = "postgres",
                autocommit: bool = False, **kwargs) -> psycopg.Connection:
        """A client connection through PgBouncer. No server-side prepared statements
        (prepare_threshold=None): they would not survive moving between pooled servers."""
        return psycopg.connect(host="127.0.0.1", port=self.bouncer_port, user=user,
                               dbname=dbname, autocommit=autocommit, connect_timeout=10,
                               prepare_threshold=None, **kwargs)

    def token(self, sub: uuid.UUID, **extra) -> str:
        return self.key.sign(claims(sub=str(sub), role="authenticated", **extra))

    def admin(self, command: str):
        """Runs a command on PgBouncer's admin console (simple query protocol only)."""
        with psycopg.connect(host="127.0.0.1", port=self.bouncer_port, user="postgres",
                             dbname="pgbouncer", autocommit=True, connect_timeout=10,
                             cursor_factory=psycopg.ClientCursor) as conn:
            cur = conn.cursor()
            cur.execute(command, prepare=False)
            names = [d.name for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def bouncer_log(self) -> str:
        try:
            return (self.bouncer_dir / "pgbouncer.log").read_text(errors="replace")
        except OSError:
            return ""


def _setup_database(cluster, key, users) -> None:
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres",
                         dbname="postgres", autocommit=True, connect_timeout=10) as conn:
        conn.execute("create role anon nologin")
        conn.execute("create role authenticated nologin")
        conn.execute(f"create role {AUTHENTICATOR} login noinherit")
        conn.execute(f"grant anon, authenticated to {AUTHENTICATOR}")
        # Nothing can hang the suite, whatever PgBouncer does with startup options.
        conn.execute(f"alter role {AUTHENTICATOR} set statement_timeout = '20s'")
        conn.execute(f"alter role {AUTHENTICATOR} set lock_timeout = '10s'")
        conn.execute("select auth.add_key(%s, 'HS256', %s)", [KID, key.secret_text])
        conn.execute("""
            create table public.notes (
                id bigint generated always as identity primary key,
                owner uuid not null,
                body text not null
            )""")
        conn.execute("create index on public.notes (owner)")
        conn.execute("alter table public.notes enable row level security")
        conn.execute("create policy own_notes on public.notes for select "
                     "using (owner = auth.uid())")
        # The authenticator itself may read the table too: only RLS keeps rows from a
        # transaction without identity, which is what must be proven.
        conn.execute(f"grant select on public.notes to authenticated, anon, {AUTHENTICATOR}")
        # A global order of the transactions on each server backend.
        conn.execute("create sequence public.txn_order")
        conn.execute("grant usage on sequence public.txn_order to public")
        with conn.cursor() as cur:
            cur.executemany(
                "insert into public.notes (owner, body) values (%s, %s)",
                [(u, f"note {i} of {u}") for u in users for i in range(ROWS_PER_USER)],
            )
        conn.execute("analyze public.notes")


def _write_bouncer_config(directory: Path, port: int, pg_port: int) -> Path:
    (directory / "userlist.txt").write_text(f'"{AUTHENTICATOR}" ""\n"postgres" ""\n')
    ini = directory / "pgbouncer.ini"
    ini.write_text(f"""\
[databases]
postgres = host=127.0.0.1 port={pg_port} dbname=postgres
; A pool of ONE server connection: consecutive transactions of different clients are
; guaranteed to run on the same backend.
single = host=127.0.0.1 port={pg_port} dbname=postgres pool_size=1

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir = {directory}
pidfile = {directory}/pgbouncer.pid
logfile = {directory}/pgbouncer.log
auth_type = trust
auth_file = {directory}/userlist.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = {POOL_SIZE}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 100
max_db_connections = 0
server_reset_query =
ignore_startup_parameters = extra_float_digits,options
query_wait_timeout = 30
""")
    for path in directory.iterdir():
        shutil.chown(path, "postgres", "postgres")
    return ini


def _wait_accepting(port: int, proc: subprocess.Popen, directory: Path) -> None:
    deadline = time.monotonic() + 15
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pgbouncer exited with {proc.returncode}: "
                               f"{(directory / 'pgbouncer.log').read_text(errors='replace')}")
        try:
            with psycopg.connect(host="127.0.0.1", port=port, user="postgres",
                                 dbname="pgbouncer", autocommit=True, connect_timeout=2,
                                 cursor_factory=psycopg.ClientCursor) as conn:
                conn.cursor().execute("SHOW VERSION", prepare=False)
                return
        except psycopg.Error as error:
            last = error
            time.sleep(0.1)
    raise RuntimeError(f"pgbouncer did not accept connections: {last}")


def _stop_bouncer(proc: subprocess.Popen, directory: Path) -> None:
    if proc.poll() is not None:
        return
    pid = None
    with contextlib.suppress(OSError, ValueError):
        pid = int((directory / "pgbouncer.pid").read_text().split()[0])
    # SIGINT: safe shutdown. Sent to pgbouncer itself (not sudo, which would relay it).
    for sig, wait in ((signal.SIGINT, 10), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        target = pid or proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def world(cluster, request):
    """The module's cluster (conftest), set up with roles, a key, RLS-protected notes of
    CLIENTS users, and PgBouncer in transaction pooling mode in front of it."""
    key = make_key("HS256", kid=KID)
    users = [uuid.uuid4() for _ in range(CLIENTS + 2)]
    _setup_database(cluster, key, users)

    directory = Path(tempfile.mkdtemp(prefix="pg_session_auth_pgbouncer_", dir="/tmp"))
    shutil.chown(directory, "postgres", "postgres")
    proc = None
    try:
        for _attempt in range(5):
            port = _free_port(PGBOUNCER_PORTS)
            ini = _write_bouncer_config(directory, port, cluster.port)
            proc = subprocess.Popen(["sudo", "-u", "postgres", "--", PGBOUNCER, str(ini)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
            try:
                _wait_accepting(port, proc, directory)
                break
            except RuntimeError:
                _stop_bouncer(proc, directory)
                proc = None
                with contextlib.suppress(OSError):
                    (directory / "pgbouncer.pid").unlink()
        else:
            raise RuntimeError("could not start pgbouncer: "
                               + (directory / "pgbouncer.log").read_text(errors="replace"))
        w = World(cluster, key, users, port, directory)
        failed_before = request.session.testsfailed
        yield w
        if request.session.testsfailed != failed_before:
            print("---- pgbouncer log ----\n" + w.bouncer_log()[-5000:])
    finally:
        if proc is not None:
            _stop_bouncer(proc, directory)
        shutil.rmtree(directory, ignore_errors=True)


# -- the stress run ---------------------------------------------------------------------------


@dataclass
class ClientResult:
    index: int
    user: uuid.UUID
    authenticated: int = 0
    unauthenticated: int = 0
    # (order, backend pid, authenticated?) of every transaction
    events: list[tuple[int, int, bool]] = field(default_factory=list)
    failure: str | None = None


def _run_client(world: World, result: ClientResult, start: threading.Barrier,
                stop: threading.Event, deadline: float) -> None:
    me = result.user
    token = world.token(me)
    try:
        conn = world.connect()
    except Exception as error:  # noqa: BLE001 - reported by the test
        result.failure = f"client {result.index}: could not connect: {error!r}"
        stop.set()
        return
    try:
        start.wait(timeout=30)
        for n in range(TXNS_PER_CLIENT):
            if stop.is_set() or time.monotonic() > deadline:
                break
            authenticate = (n + result.index) % UNAUTH_EVERY != 0
            with conn.transaction():
                if authenticate:
                    row = conn.execute("select auth.authenticate(%s), pg_backend_pid()",
                                       [token]).fetchone()
                    bound, pid_at_auth = row
                    assert bound["sub"] == str(me), f"authenticate returned {bound}"
                else:
                    pid_at_auth = None
                rows = conn.execute("select owner, body from public.notes").fetchall()
                uid, user, role_setting, claims_setting, pid, order = conn.execute(
                    "select auth.uid(), current_user, current_setting('role'), "
                    "current_setting('request.jwt.claims', true), pg_backend_pid(), "
                    "nextval('public.txn_order')").fetchone()
            context = (f"client {result.index} ({me}) transaction {n} "
                       f"({'authenticated' if authenticate else 'NOT authenticated'}) "
                       f"on backend {pid}")
            if authenticate:
                assert pid_at_auth == pid, f"{context}: backend changed within a transaction"
                assert uid == me, f"{context}: auth.uid() = {uid}"
                assert user == "authenticated", f"{context}: current_user = {user}"
                assert len(rows) == ROWS_PER_USER, f"{context}: {len(rows)} rows"
                foreign = [r for r in rows if r[0] != me or str(me) not in r[1]]
                assert not foreign, f"{context}: saw another user's rows: {foreign[:3]}"
                assert str(me) in (claims_setting or ""), f"{context}: claims {claims_setting}"
                result.authenticated += 1
            else:
                assert uid is None, f"{context}: auth.uid() = {uid}, another identity leaked"
                assert user == AUTHENTICATOR, f"{context}: current_user = {user}"
                assert role_setting == "none", f"{context}: role = {role_setting}"
                assert not claims_setting, f"{context}: request.jwt.claims = {claims_setting}"
                assert rows == [], f"{context}: saw rows without identity: {rows[:3]}"
                result.unauthenticated += 1
            result.events.append((order, pid, authenticate))
    except BaseException as error:  # noqa: BLE001 - reported by the test
        result.failure = f"{type(error).__name__}: {error}"
        stop.set()
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def test_concurrent_clients_through_transaction_pooling_never_share_identity(world):
    results = [ClientResult(i, world.users[i]) for i in range(CLIENTS)]
    start = threading.Barrier(CLIENTS)
    stop = threading.Event()
    began = time.monotonic()
    deadline = began + TIME_LIMIT
    threads = [threading.Thread(target=_run_client, args=(world, r, start, stop, deadline),
                                name=f"pool-client-{r.index}", daemon=True)
               for r in results]
    for t in threads:
        t.start()
    pools_during = None
    time.sleep(1.0)
    with contextlib.suppress(Exception):
        pools_during = world.admin("SHOW POOLS")
    for t in threads:
        t.join(timeout=TIME_LIMIT + 30)
    elapsed = time.monotonic() - began

    assert not any(t.is_alive() for t in threads), "a client hung"
    failures = [r.failure for r in results if r.failure]
    assert not failures, "\n".join(failures)

    total = sum(r.authenticated + r.unauthenticated for r in results)
    unauth_total = sum(r.unauthenticated for r in results)

    # Which clients ran on which backend, and how transactions were handed over.
    clients_per_pid: dict[int, set[int]] = defaultdict(set)
    timeline: list[tuple[int, int, int, bool]] = []
    for r in results:
        for order, pid, authed in r.events:
            clients_per_pid[pid].add(r.index)
            timeline.append((order, pid, r.index, authed))
    timeline.sort()
    last_on_pid: dict[int, tuple[int, bool]] = {}
    handovers = Counter()
    for _order, pid, client, authed in timeline:
        if pid in last_on_pid:
            prev_client, prev_authed = last_on_pid[pid]
            if prev_client != client:
                handovers["client change"] += 1
                if prev_authed and not authed:
                    handovers["authenticated -> other client's unauthenticated"] += 1
                if prev_authed and authed:
                    handovers["authenticated -> other client's authenticated"] += 1
        last_on_pid[pid] = (client, authed)

    servers = world.admin("SHOW SERVERS")
    our_servers = [s for s in servers if s["database"] == "postgres" and s["user"] == AUTHENTICATOR]
    summary = (f"pooler run: {total} transactions ({total - unauth_total} authenticated, "
               f"{unauth_total} not) by {CLIENTS} clients through {len(clients_per_pid)} "
               f"server connections (default_pool_size={POOL_SIZE}) in {elapsed:.1f}s "
               f"({total / elapsed:.0f} tx/s); clients per backend: "
               f"{ {pid: len(c) for pid, c in sorted(clients_per_pid.items())} }; "
               f"hand-overs: {dict(handovers)}; SHOW SERVERS at end: {len(our_servers)}; "
               f"SHOW POOLS during run: "
               f"{[(p['database'], p['user'], p['cl_active'], p['cl_waiting'], p['sv_active'], p['sv_idle']) for p in (pools_during or [])]}")
    print("\n" + summary)

    assert total >= 10_000, f"too few transactions within the time limit: {summary}"
    assert unauth_total >= total // UNAUTH_EVERY - CLIENTS, summary
    # Pooling really happened: fewer server connections than clients, shared by clients.
    assert len(clients_per_pid) <= POOL_SIZE < CLIENTS, summary
    assert all(len(c) >= 2 for c in clients_per_pid.values()), summary
    assert max(len(c) for c in clients_per_pid.values()) >= CLIENTS // 2, summary
    assert handovers["authenticated -> other client's unauthenticated"] >= 100, summary
    assert handovers["authenticated -> other client's authenticated"] >= 1000, summary
    assert len(our_servers) <= POOL_SIZE, summary
    if pools_during:
        ours = [p for p in pools_during if p["database"] == "postgres" and p["user"] == AUTHENTICATOR]
        assert ours and ours[0]["sv_active"] + ours[0]["sv_idle"] + ours[0]["sv_used"] \
            + ours[0]["sv_tested"] + ours[0]["sv_login"] <= POOL_SIZE, summary


# -- a failed or careless transaction does not leave its identity on the pooled server --------


def _read_identity(conn):
    with conn.transaction():
        rows = conn.execute("select owner, body from public.notes").fetchall()
        uid, user, role_setting, claims_setting, pid = conn.execute(
            "select auth.uid(), current_user, current_setting('role'), "
            "current_setting('request.jwt.claims', true), pg_backend_pid()").fetchone()
    return rows, uid, user, role_setting, claims_setting, pid


def _assert_no_identity(observed, context: str) -> None:
    rows, uid, user, role_setting, claims_setting, _pid = observed
    assert uid is None, f"{context}: auth.uid() = {uid}"
    assert user == AUTHENTICATOR, f"{context}: current_user = {user}"
    assert role_setting == "none", f"{context}: role = {role_setting}"
    assert not claims_setting, f"{context}: request.jwt.claims = {claims_setting}"
    assert rows == [], f"{context}: saw rows: {rows[:3]}"


def test_aborted_authenticated_transaction_leaves_no_identity_on_the_pooled_server(world):
    alice, bob = world.users[CLIENTS], world.users[CLIENTS + 1]
    with world.connect(dbname="single") as a, world.connect(dbname="single") as b:
        for attempt in range(3):
            pid_a = None
            with pytest.raises(psycopg.errors.DivisionByZero):
                with a.transaction():
                    bound, pid_a = a.execute("select auth.authenticate(%s), pg_backend_pid()",
                                             [world.token(alice)]).fetchone()
                    assert bound["sub"] == str(alice)
                    uid = a.execute("select auth.uid()").fetchone()[0]
                    assert uid == alice
                    a.execute("select 1 / 0")
            observed = _read_identity(b)
            assert observed[-1] == pid_a, "the single-server pool did not reuse the backend"
            _assert_no_identity(observed, f"attempt {attempt}: after another client's aborted "
                                          f"transaction on backend {pid_a}")
            # And the aborting client itself, in its next transaction, has no identity either.
            _assert_no_identity(_read_identity(a), "the aborting client's next transaction")
        # A client that authenticates and then succeeds: its identity is gone for the next one.
        with b.transaction():
            assert b.execute("select auth.authenticate(%s)", [world.token(bob)]).fetchone()
            assert b.execute("select auth.uid()").fetchone()[0] == bob
        _assert_no_identity(_read_identity(a), "after another client's committed transaction")
    print(f"\naborted-transaction test: single-server pool backend {pid_a} reused, no identity")


def test_authenticate_outside_a_transaction_block_does_not_leak_to_the_next_client(world):
    """auth.authenticate() in autocommit mode binds the identity for that statement only
    (with a warning); the next client on the same pooled server sees nothing of it."""
    alice = world.users[CLIENTS]
    with world.connect(dbname="single", autocommit=True) as a, \
            world.connect(dbname="single") as b:
        warnings: list[str] = []
        a.add_notice_handler(lambda diag: warnings.append(diag.message_primary or ""))
        pid_a = a.execute("select pg_backend_pid() from auth.authenticate(%s)",
                          [world.token(alice)]).fetchone()[0]
        assert any("outside a transaction block" in w for w in warnings), warnings
        observed = _read_identity(b)
        assert observed[-1] == pid_a, "the single-server pool did not reuse the backend"
        _assert_no_identity(observed, "after another client's autocommit authenticate")
        uid = a.execute("select auth.uid()").fetchone()[0]
        assert uid is None, f"identity survived the autocommit statement: {uid}"


def test_client_disconnecting_mid_transaction_leaves_no_identity(world):
    """A client that authenticates and vanishes without COMMIT or ROLLBACK: the next client
    on the single-server pool sees no identity (PgBouncer discards or cleans the server)."""
    alice = world.users[CLIENTS]
    a = world.connect(dbname="single")
    try:
        a.execute("select auth.authenticate(%s)", [world.token(alice)])
        assert a.execute("select auth.uid()").fetchone()[0] == alice
    finally:
        a.close()  # in a transaction: psycopg does not commit on close
    with world.connect(dbname="single") as b:
        _assert_no_identity(_read_identity(b), "after a client vanished mid-transaction")
