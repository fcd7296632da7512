"""Prepared transactions (PREPARE TRANSACTION) holding revocation writes, and the shared
revocation filter (defect V9).

With ``max_prepared_transactions > 0`` any role that could sign out could leave a revocation
write open indefinitely: ``begin; select auth.authenticate(t); select auth.sign_out(); prepare
transaction 'p'`` (now refused, see the last test; an owner's direct write can still be
prepared, and stands in for it below). The pre-fix build waited (2 s) for every transaction holding a write lock on
the revocation tables before filling the filter, and a prepared transaction never ends on its
own, so every build gave up:

* ``auth.rebuild_revocation_filter()`` cleared a VALID filter, gave up and left it invalid
  (every check then a lookup, for as long as the prepared transaction lived);
* after a restart (prepared transactions survive it) the filter never became valid again, and
  a build worker was started, waited 2 s and gave up, over and over, each time holding a
  ``max_worker_processes`` slot.

What must hold instead: a rebuild never makes a valid filter worse; a build finishes while
prepared transactions exist; and revocations stay enforced throughout — in particular the key
written by the prepared transaction before the rebuild is in the rebuilt filter, so that once
``COMMIT PREPARED`` makes it a revocation, a connection that already accepted the token (and
checks it against a valid filter) refuses it.

Sign-out and PREPARE run as ``app_user`` (tokens without a role claim, so no role switch);
filter administration as ``key_admin``; ``postgres`` only sets up, restarts and cleans up.
"""

from __future__ import annotations

import time
import uuid

import jwt
import psycopg
import pytest

from client_support import make_key, now
from conftest import (PG_BIN, APP_USER, KEY_ADMIN, PRELOAD_LINES, Cluster, as_postgres,
                      collect_notices, raises_sqlstate)

KID = "prepared-k"
OK = "ok"
REVOKED_MESSAGE = "invalid token: revoked"
REVOKED = "28000 " + REVOKED_MESSAGE
TABLES = ("auth.revoked_sessions", "auth.revoked_users", "auth.revoked_tokens")
PKEYS = ("auth.revoked_sessions_pkey", "auth.revoked_users_pkey", "auth.revoked_tokens_pkey")
# The build worker's bgw_type (src/revocation_filter.rs), shown as pg_stat_activity.backend_type.
BUILDER_TYPE = "pg_session_auth filter builder"
BUILDER_NAME = "pg_session_auth revocation filter builder"


class PreparedCluster(Cluster):
    """Preloaded (the shared revocation filter exists) and with prepared transactions enabled."""

    def conf(self) -> list[str]:
        return [*PRELOAD_LINES["shared"], "max_prepared_transactions = 10"]

    def restart(self) -> None:
        self.close_connections()
        result = as_postgres(f"{PG_BIN}/pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w",
                             "-l", str(self.datadir / "server.log"), "restart")
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def cluster():
    c = PreparedCluster()
    try:
        c.start()
        c.setup_roles_and_extension()
        yield c
    except BaseException:
        if c.started:
            print("---- server log ----\n" + c.server_log()[-5000:])
        raise
    finally:
        c.stop()


def _uid() -> str:
    return str(uuid.uuid4())


def rollback_prepared_transactions(pg) -> None:
    """Ends every prepared transaction a test left behind (they hold locks on the revocation
    tables and would block the next test's TRUNCATE)."""
    with psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="postgres",
                         autocommit=True, connect_timeout=10) as su:
        for (gid,) in su.execute("select gid from pg_prepared_xacts").fetchall():
            su.execute(f"rollback prepared '{gid}'")


class Env:
    def __init__(self, pg):
        self.pg = pg
        self.key = make_key("HS256", KID)

    def setup(self) -> None:
        rollback_prepared_transactions(self.pg)
        with self.pg.connect("postgres") as su:
            su.execute("truncate " + ", ".join(TABLES))
        self.pg.sql("select auth.add_key(%s, 'HS256', %s)", [KID, self.key.secret_text],
                    user=KEY_ADMIN)

    def token(self, sub: str | None = None, **kw) -> str:
        """A token of `sub` with its own session, valid for an hour, without a role claim (so
        app_user keeps its role when it authenticates)."""
        t = now()
        payload = {"sub": sub or _uid(), "session_id": _uid(), "iat": t - 5, "exp": t + 3600}
        payload.update(kw)
        return self.key.sign(payload)

    def user(self, autocommit: bool = True) -> psycopg.Connection:
        return self.pg.connect(APP_USER, autocommit=autocommit)

    def admin(self) -> psycopg.Connection:
        return self.pg.connect(KEY_ADMIN)

    def state(self) -> str:
        with self.pg.connect(KEY_ADMIN) as admin:
            return admin.execute("select state from auth.revocation_filter()").fetchone()[0]

    def wait_for_valid(self, timeout: float) -> float:
        """Polls until the filter is valid, making a check before each poll (a check is what
        asks for a build); returns how long it took."""
        started = time.monotonic()
        deadline = started + timeout
        states = []
        while True:
            with self.pg.connect(APP_USER) as conn:
                verdict(conn, self.token())
            state = self.state()
            if not states or states[-1] != state:
                states.append(state)
            if state == "valid":
                return time.monotonic() - started
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"revocation filter not valid after {timeout} s; states seen: {states}")
            time.sleep(0.1)

    def prepare_sign_out(self, token: str, gid: str) -> None:
        """Revokes the token's session in a PREPAREd transaction, which then holds the
        revocation write (and its locks) until COMMIT/ROLLBACK PREPARED. The extension's own
        functions refuse to be prepared (see the test below), so the write is the tables'
        owner's, as an admin's tool might make it."""
        session = jwt.decode(token, options={"verify_signature": False})["session_id"]
        conn = self.pg.connect("postgres")
        conn.execute("begin")
        conn.execute("insert into auth.revoked_sessions (session_id, reason) values (%s, 'prepared')",
                     [session])
        conn.execute(f"prepare transaction '{gid}'")
        conn.close()
        assert self.pg.sql("select count(*) from pg_prepared_xacts where gid = %s",
                           [gid]) == [(1,)]

    def finish_prepared(self, gid: str, commit: bool) -> None:
        """COMMIT/ROLLBACK PREPARED, as the role that prepared it, from another connection."""
        with self.pg.connect("postgres") as conn:
            conn.execute(f"{'commit' if commit else 'rollback'} prepared '{gid}'")

    def rebuild(self) -> tuple[bool, list[str]]:
        """auth.rebuild_revocation_filter() as key_admin: its result and its NOTICEs."""
        with self.pg.connect(KEY_ADMIN) as admin:
            notices = collect_notices(admin)
            result = admin.execute("select auth.rebuild_revocation_filter()").fetchone()[0]
        return result, [n.message_primary for n in notices]

    def builders(self) -> list[tuple]:
        return self.pg.sql(
            "select pid, backend_type, application_name from pg_stat_activity "
            "where backend_type = %s or application_name = %s", [BUILDER_TYPE, BUILDER_NAME])


@pytest.fixture
def env(pg):
    e = Env(pg)
    e.setup()
    try:
        yield e
    finally:
        pg.close_connections()
        rollback_prepared_transactions(pg)


def verdict(conn, token: str) -> str:
    """'ok' or 'SQLSTATE message'; never raises."""
    return conn.execute("select public.try_verify(%s)", [token]).fetchone()[0]


def scans_for(conn, tokens) -> tuple[list[str], int]:
    """The verdicts of `tokens` and how many index scans of the revocation tables' primary
    keys they cost in this backend (0 for unrevoked tokens means the filter cleared them)."""
    count = "select sum(pg_stat_get_xact_numscans(i::regclass)) from unnest(%s::text[]) i"
    conn.execute("begin")
    before = conn.execute(count, [list(PKEYS)]).fetchone()[0]
    results = [verdict(conn, t) for t in tokens]
    after = conn.execute(count, [list(PKEYS)]).fetchone()[0]
    conn.execute("rollback")
    return results, int(after - before)


def assert_refused(conn, token: str) -> None:
    """Both verify and authenticate refuse the token with 28000 'revoked'."""
    with raises_sqlstate("28000", REVOKED_MESSAGE):
        conn.execute("select auth.verify(%s)", [token])
    conn.execute("begin")
    with raises_sqlstate("28000", REVOKED_MESSAGE):
        conn.execute("select auth.authenticate(%s)", [token])
    conn.execute("rollback")


def start_with_a_valid_filter(env) -> tuple[str, psycopg.Connection]:
    """A committed revocation (whose token must stay refused throughout) and a valid filter.
    Returns that token and a reader connection that has checked it."""
    revoked_session = _uid()
    with env.admin() as admin:
        assert admin.execute("select auth.revoke_session(%s)", [revoked_session]).fetchone()[0]
    t0 = env.token(session_id=revoked_session)
    reader = env.user()
    assert verdict(reader, t0) == REVOKED
    env.wait_for_valid(timeout=10)
    return t0, reader


def prepare_then_rebuild(env, reader) -> str:
    """Signs T1 out in a prepared transaction, then rebuilds the filter; asserts the rebuild
    succeeds and leaves the filter valid, with T1 still accepted (not committed). Returns T1."""
    t1 = env.token()
    assert verdict(reader, t1) == OK  # the reader has seen (and may remember) T1 as fine
    env.prepare_sign_out(t1, "p1")
    assert env.state() == "valid"  # the trigger added the key; nothing else changed
    assert verdict(reader, t1) == OK  # prepared, not committed: not a revocation yet

    started = time.monotonic()
    result, notices = env.rebuild()
    assert result is True, (
        f"auth.rebuild_revocation_filter() returned {result} with an open prepared transaction "
        f"(notices: {notices}); it must finish the build")
    # It builds in the calling session, so it is valid at once; allow a few seconds anyway.
    deadline = started + 5
    while env.state() != "valid":
        assert time.monotonic() < deadline, (
            f"the rebuild left the filter {env.state()!r}, a valid filter was made worse")
        time.sleep(0.1)
    return t1


def test_commit_prepared_after_a_rebuild_is_enforced(env):
    """V9: a rebuild while a prepared transaction holds a sign-out must succeed (true), keep the
    filter valid, and put the prepared transaction's key into the rebuilt filter: after COMMIT
    PREPARED the token is refused by a connection that accepted it before (its cached answer is
    dropped, and the valid filter must not clear it) and by a new connection."""
    t0, reader = start_with_a_valid_filter(env)
    t1 = prepare_then_rebuild(env, reader)
    assert verdict(reader, t0) == REVOKED  # enforced throughout

    env.finish_prepared("p1", commit=True)
    assert env.state() == "valid"
    assert verdict(reader, t1) == REVOKED
    assert_refused(reader, t1)
    fresh = env.user()
    assert verdict(fresh, t1) == REVOKED
    assert_refused(fresh, t1)
    assert verdict(fresh, t0) == REVOKED
    # The filter these checks went through is in use: an unrevoked token costs no lookup.
    assert scans_for(fresh, [env.token()]) == ([OK], 0)
    assert env.state() == "valid"


def test_rollback_prepared_after_a_rebuild_accepts_the_token(env):
    """V9, the other ending: the rebuild succeeds and keeps the filter valid while the sign-out
    is prepared; after ROLLBACK PREPARED nothing was revoked, so T1 is still accepted (on the
    connection that saw it before and on a new one), and the earlier revocation still holds."""
    t0, reader = start_with_a_valid_filter(env)
    t1 = prepare_then_rebuild(env, reader)

    env.finish_prepared("p1", commit=False)
    assert env.state() == "valid"
    assert verdict(reader, t1) == OK
    fresh = env.user()
    assert verdict(fresh, t1) == OK
    fresh.execute("begin")
    fresh.execute("select auth.authenticate(%s)", [t1])
    fresh.execute("rollback")
    assert verdict(reader, t0) == REVOKED
    assert verdict(fresh, t0) == REVOKED
    assert scans_for(fresh, [env.token()]) == ([OK], 0)
    assert env.state() == "valid"


def test_filter_is_built_after_a_restart_with_a_prepared_transaction(env):
    """V9 after a restart: a prepared transaction survives it (and keeps its locks). The first
    checks must still get a valid filter within about 10 s, no build worker may be left
    running (the pre-fix builder gave up and was started again every second, holding a worker
    slot), a revocation committed in an ordinary transaction meanwhile is refused, and the
    prepared sign-out is enforced once it is committed."""
    t0, reader = start_with_a_valid_filter(env)
    t1 = env.token()
    env.prepare_sign_out(t1, "p1")
    env.pg.restart()
    assert env.pg.sql("select gid from pg_prepared_xacts") == [("p1",)]

    reader = env.user()
    assert verdict(reader, t0) == REVOKED  # looked up while the filter is (re)built
    assert verdict(reader, t1) == OK
    # Revoked in an ordinary committed transaction while the filter is being built.
    t2_session = _uid()
    t2 = env.token(session_id=t2_session)
    with env.admin() as admin:
        assert admin.execute("select auth.revoke_session(%s)", [t2_session]).fetchone()[0]
    assert verdict(reader, t2) == REVOKED

    env.wait_for_valid(timeout=10)

    # The builder is done and gone, and no other one is started by further checks.
    deadline = time.monotonic() + 3
    while env.builders():
        assert time.monotonic() < deadline, f"build worker still running: {env.builders()}"
        time.sleep(0.1)
    quiet_until = time.monotonic() + 1.5
    while time.monotonic() < quiet_until:
        with env.user() as conn:
            assert verdict(conn, env.token()) == OK
        assert env.builders() == [], "a build worker was started again with the filter valid"
        time.sleep(0.1)
    assert env.state() == "valid"

    for conn in (reader, env.user()):
        assert verdict(conn, t0) == REVOKED
        assert verdict(conn, t2) == REVOKED
        assert_refused(conn, t2)
        assert verdict(conn, t1) == OK
    assert scans_for(env.user(), [env.token()]) == ([OK], 0)

    # The prepared transaction's key is in the filter built after the restart.
    env.finish_prepared("p1", commit=True)
    assert env.state() == "valid"
    assert verdict(reader, t1) == REVOKED
    assert_refused(env.user(), t1)
    assert env.builders() == []


def test_a_sign_out_cannot_be_prepared(env):
    """A prepared transaction keeps its row locks until someone ends it: a prepared sign-out
    (any role that may sign out could leave one) would make every later revocation of the same
    session wait on it, the admin's and the victim's own. PREPARE TRANSACTION after a
    revocation through the extension's functions is refused (0A000); the transaction is
    rolled back, so the session is not revoked and nothing is left to block an admin."""
    token = env.token()
    session = jwt.decode(token, options={"verify_signature": False})["session_id"]
    conn = env.user()
    conn.execute("begin")
    conn.execute("select auth.authenticate(%s)", [token])
    conn.execute("select auth.sign_out('local')")
    with raises_sqlstate("0A000"):
        conn.execute("prepare transaction 'held'")
    assert env.pg.sql("select count(*) from pg_prepared_xacts") == [(0,)]
    # The admin's revocation does not wait on anything.
    with env.pg.connect(KEY_ADMIN, options="-c lock_timeout=2000") as admin:
        assert admin.execute("select auth.revoke_session(%s)", [session]).fetchone()[0] is True
    assert verdict(env.user(), token) == REVOKED
    # Undone by a savepoint, the sign-out no longer stands in the way.
    conn.execute("rollback")
    conn.execute("begin")
    conn.execute("savepoint s")
    conn.execute("select auth.authenticate(%s)", [env.token()])
    conn.execute("select auth.sign_out('local')")
    conn.execute("rollback to savepoint s")
    conn.execute("prepare transaction 'harmless'")
    env.finish_prepared("harmless", commit=False)
