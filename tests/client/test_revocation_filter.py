"""The shared revocation filter (shared_preload_libraries), against the real server.

What must hold: a token no revocation names is cleared without touching the revocation
tables, and the filter never lets a revoked token through — after a server restart, while a
writer that predates a build is still open or commits during it, when its triggers were
disabled and enabled again, after a purge and a rebuild, when the extension is dropped and
created again, and in a database that got no filter slot. Verification runs as a
non-superuser (``authenticator``); ``postgres`` sets things up.

The module's cluster uses a small filter (16 kB per database, room for 10,922 keys) so that
the automatic rebuild of an over-full filter can be reached with a few thousand rows.
"""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest

from client_support import make_key, now
from conftest import (PG_BIN, KEY_ADMIN, PRELOAD_LINES, TRY_VERIFY, Cluster, as_postgres,
                      raises_sqlstate)

AUTHENTICATOR = "filter_authenticator"
KID = "filter-k"
REVOKED = "28000 invalid token: revoked"
FILTER_KB = 16
CAPACITY = FILTER_KB * 1024 * 8 // 12
PKEYS = ("auth.revoked_sessions_pkey", "auth.revoked_users_pkey", "auth.revoked_tokens_pkey")
MAX_DATABASES = 4


class FilterCluster(Cluster):
    def conf(self) -> list[str]:
        return [*PRELOAD_LINES["shared"], f"pg_session_auth.revocation_filter_size = '{FILTER_KB}kB'"]

    def restart(self) -> None:
        self.close_connections()
        result = as_postgres(f"{PG_BIN}/pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w",
                             "-l", str(self.datadir / "server.log"), "restart")
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def cluster():
    c = FilterCluster()
    try:
        c.start()
        c.setup_roles_and_extension()
        c.sql("create role anon nologin")
        c.sql("create role authenticated nologin")
        c.sql(f"create role {AUTHENTICATOR} login noinherit")
        c.sql(f"grant anon, authenticated to {AUTHENTICATOR}")
        yield c
    except BaseException:
        if c.started:
            print("---- server log ----\n" + c.server_log()[-5000:])
        raise
    finally:
        c.stop()


class Env:
    def __init__(self, pg):
        self.pg = pg
        self.key = make_key("HS256", KID)

    def setup_database(self, dbname: str = "postgres") -> None:
        with self.pg.connect("postgres", dbname=dbname) as conn:
            conn.execute("create extension if not exists pg_session_auth")
            conn.execute("truncate auth.revoked_sessions, auth.revoked_users, auth.revoked_tokens")
            conn.execute("delete from auth.keys")
            conn.execute("select auth.add_key(%s, 'HS256', %s)", [KID, self.key.secret_text])
            # Start each test from a filter of exactly the (no) rows left.
            conn.execute("select auth.rebuild_revocation_filter()")

    def token(self, sub: str | None = None, **kw) -> str:
        t = now()
        payload = {"sub": sub or str(uuid.uuid4()), "role": "authenticated", "iat": t,
                   "exp": t + 3600, "session_id": str(uuid.uuid4()), "jti": str(uuid.uuid4())}
        payload.update(kw)
        return self.key.sign(payload)

    def user(self, dbname: str = "postgres") -> psycopg.Connection:
        return self.pg.connect(AUTHENTICATOR, dbname=dbname)

    def status(self, dbname: str = "postgres") -> dict:
        with self.pg.connect("postgres", dbname=dbname) as conn:
            row = conn.execute("select state, keys, capacity, bytes, builds "
                               "from auth.revocation_filter()").fetchone()
        return dict(zip(("state", "keys", "capacity", "bytes", "builds"), row))

    def wait_for(self, dbname: str = "postgres", timeout: float = 20, **expected) -> dict:
        """Waits until the filter's status has the expected values. Builds run in a
        background worker that a check asks for (at most one is started per 200 ms in the
        cluster), so each poll makes a check too."""
        deadline = time.monotonic() + timeout
        while True:
            with self.pg.connect("postgres", dbname=dbname) as conn:
                conn.execute("select auth.is_revoked('{}')")
            status = self.status(dbname)
            if all(status[k] == v for k, v in expected.items()):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"filter status {status}, expected {expected}")
            time.sleep(0.05)


@pytest.fixture
def env(pg):
    e = Env(pg)
    e.setup_database()
    return e


def verdict(conn, token: str) -> str:
    return conn.execute("select public.try_verify(%s)", [token]).fetchone()[0]


def lookups(conn, tokens) -> tuple[list[str], int]:
    """The verdicts of `tokens` and how many index scans of the revocation tables' primary
    keys they cost (the backend's own counters, read in one transaction)."""
    count = ("select sum(pg_stat_get_xact_numscans(i::regclass)) "
             "from unnest(%s::text[]) i")
    conn.execute("begin")
    before = conn.execute(count, [list(PKEYS)]).fetchone()[0]
    results = [verdict(conn, t) for t in tokens]
    after = conn.execute(count, [list(PKEYS)]).fetchone()[0]
    conn.execute("rollback")
    return results, int(after - before)


def revoke_each_kind(env, dbname: str = "postgres") -> list[str]:
    """Revokes a session, a user and a jti; returns a token falling under each."""
    sub, session, jti = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    with env.pg.connect(KEY_ADMIN, dbname=dbname) as admin:
        admin.execute("select auth.revoke_session(%s)", [session])
        admin.execute("select auth.revoke_user(%s)", [sub])
        admin.execute("select auth.revoke_token(%s)", [jti])
    return [env.token(session_id=session), env.token(sub=sub, iat=now() - 5),
            env.token(jti=jti)]


def test_filter_clears_unrevoked_tokens_without_lookups(env):
    revoked = revoke_each_kind(env)
    with env.pg.connect("postgres") as conn:
        assert conn.execute("show pg_session_auth.revocation_filter_size").fetchone()[0] == "16kB"
    conn = env.user()
    fresh = [env.token() for _ in range(20)]
    results, scans = lookups(conn, fresh)
    assert results == ["ok"] * 20
    assert scans == 0
    status = env.status()
    assert status["state"] == "valid"
    assert status["keys"] == 3
    assert status["capacity"] == CAPACITY
    assert status["bytes"] == FILTER_KB * 1024
    results, scans = lookups(conn, revoked)
    assert results == [REVOKED] * 3
    assert scans >= 3  # each revoked token passed the filter and was looked up


def test_a_revocation_is_in_the_filter_for_every_backend_at_once(env):
    readers = [env.user() for _ in range(3)]
    for reader in readers:
        assert lookups(reader, [env.token()]) == (["ok"], 0)  # filter valid and used
    builds = env.status()["builds"]
    revoked = revoke_each_kind(env)
    status = env.status()
    assert (status["state"], status["keys"], status["builds"]) == ("valid", 3, builds)
    for reader in readers:
        results, scans = lookups(reader, revoked + [env.token()])
        assert results == [REVOKED] * 3 + ["ok"]
        # Three index probes per revoked token (one lookup query each) and, once per backend
        # after the revocations, the emptiness probe (1); the fresh token costs none.
        assert scans in (9, 10)


def test_filter_is_rebuilt_after_a_restart(env):
    revoked = revoke_each_kind(env)
    env.pg.restart()
    assert env.status()["state"] == "free"
    conn = env.user()
    # Looked up while a background worker builds the filter.
    assert [verdict(conn, t) for t in revoked] == [REVOKED] * 3
    env.wait_for(state="valid", keys=3, builds=1)
    assert [verdict(conn, t) for t in revoked] == [REVOKED] * 3
    assert lookups(conn, [env.token() for _ in range(10)]) == (["ok"] * 10, 0)


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_a_build_includes_the_rows_of_an_earlier_writer_still_open(env, outcome):
    """A build reads under a dirty snapshot: a revocation written before the build began (so
    its trigger's key went into words the build cleared) and still uncommitted is in the
    filter, so the build neither waits for its writer nor misses its key once it commits."""
    env.pg.restart()  # no filter yet
    session = str(uuid.uuid4())
    writer = env.pg.connect(KEY_ADMIN, autocommit=False)
    writer.execute("select auth.revoke_session(%s)", [session])  # no filter: no key added
    reader = env.user()
    started = time.monotonic()
    assert verdict(reader, env.token()) == "ok"  # asks for a build, does not wait for it
    assert time.monotonic() - started < 1
    env.wait_for(state="valid", keys=1, timeout=5)  # at once, with the open writer's row
    token = env.token(session_id=session)
    assert verdict(reader, token) == "ok"  # not committed yet
    getattr(writer, outcome)()
    expected = REVOKED if outcome == "commit" else "ok"
    results, scans = lookups(reader, [token, env.token()])
    assert results == [expected, "ok"]
    if outcome == "commit":
        assert scans >= 1  # the token's key is in the filter: looked up exactly
    assert verdict(env.user(), token) == expected
    assert env.status()["state"] == "valid"


def test_keys_written_with_the_trigger_disabled_are_not_missed(env):
    reader = env.user()
    assert lookups(reader, [env.token()]) == (["ok"], 0)
    builds = env.status()["builds"]
    hidden, lasting = str(uuid.uuid4()), str(uuid.uuid4())
    with env.pg.connect("postgres") as su:
        # Disabled, written, enabled again, all in one transaction: the filter lacks the key,
        # but the trigger's catalog row changed, so the filter is rebuilt before it is used.
        su.execute("begin")
        su.execute("alter table auth.revoked_sessions disable trigger revoked_sessions_filter")
        su.execute("insert into auth.revoked_sessions (session_id) values (%s)", [hidden])
        su.execute("alter table auth.revoked_sessions enable always trigger revoked_sessions_filter")
        su.execute("commit")
    assert verdict(reader, env.token(session_id=hidden)) == REVOKED
    assert verdict(env.user(), env.token(session_id=hidden)) == REVOKED
    env.wait_for(state="valid", builds=builds + 1)
    assert verdict(reader, env.token(session_id=hidden)) == REVOKED
    with env.pg.connect("postgres") as su:
        su.execute("alter table auth.revoked_sessions disable trigger revoked_sessions_filter")
        su.execute("insert into auth.revoked_sessions (session_id) values (%s)", [lasting])
    # While disabled, nothing is screened or cached: every token is looked up.
    results, scans = lookups(reader, [env.token(session_id=lasting), env.token()])
    assert results == [REVOKED, "ok"]
    assert scans >= 2
    with env.pg.connect("postgres") as su:
        su.execute("alter table auth.revoked_sessions enable always trigger revoked_sessions_filter")
    assert verdict(reader, env.token(session_id=lasting)) == REVOKED
    env.wait_for(state="valid", builds=builds + 2)
    assert verdict(reader, env.token(session_id=lasting)) == REVOKED
    assert lookups(reader, [env.token()]) == (["ok"], 0)


def test_purge_then_rebuild_drops_the_purged_keys(env):
    live = revoke_each_kind(env)
    with env.pg.connect("postgres") as su:
        su.execute("insert into auth.revoked_sessions (session_id, expires_at) "
                   "select gen_random_uuid(), now() - interval '1 day' from generate_series(1, 500)")
    reader = env.user()
    assert verdict(reader, env.token()) == "ok"
    assert env.status()["keys"] == 503
    admin = env.pg.connect(KEY_ADMIN, autocommit=False)
    notices = []
    admin.add_notice_handler(lambda diag: notices.append(diag.message_primary))
    assert admin.execute("select auth.purge_revocations()").fetchone()[0] == 500
    # Not in the purging transaction: a rollback would bring the rows back without their keys.
    assert admin.execute("select auth.rebuild_revocation_filter()").fetchone()[0] is False
    assert any("this transaction has written" in n for n in notices)
    admin.rollback()
    assert env.status()["keys"] == 503
    admin.execute("select auth.purge_revocations()")
    admin.commit()
    assert admin.execute("select auth.rebuild_revocation_filter()").fetchone()[0] is True
    admin.commit()
    status = env.status()
    assert (status["state"], status["keys"]) == ("valid", 3)
    assert [verdict(reader, t) for t in live] == [REVOKED] * 3


def test_a_rolled_back_delete_keeps_its_keys(env):
    revoked = revoke_each_kind(env)
    reader = env.user()
    assert verdict(reader, env.token()) == "ok"
    with env.pg.connect("postgres") as su:
        notices = []
        su.add_notice_handler(lambda diag: notices.append(diag.message_primary))
        su.execute("begin")
        su.execute("delete from auth.revoked_sessions")
        su.execute("delete from auth.revoked_users")
        su.execute("delete from auth.revoked_tokens")
        assert su.execute("select auth.rebuild_revocation_filter()").fetchone()[0] is False
        assert any("this transaction has written" in n for n in notices)
        su.execute("rollback")
    assert [verdict(reader, t) for t in revoked] == [REVOKED] * 3


def test_an_over_full_filter_is_rebuilt_by_the_next_check(env):
    reader = env.user()
    assert verdict(reader, env.token()) == "ok"
    builds = env.status()["builds"]
    rows = CAPACITY + 100
    with env.pg.connect("postgres") as su:
        su.execute("insert into auth.revoked_tokens (jti, expires_at) "
                   "select 'expired-' || i, now() - interval '1 day' "
                   "from generate_series(1, %s) i", [rows])
    assert env.status()["keys"] == rows
    assert env.pg.sql("select auth.purge_revocations()")[0][0] == rows
    revoked = revoke_each_kind(env)
    assert verdict(reader, env.token()) == "ok"  # more keys than capacity: a rebuild is asked for
    env.wait_for(state="valid", keys=3, builds=builds + 1)
    assert [verdict(reader, t) for t in revoked] == [REVOKED] * 3


def test_dropping_and_creating_the_extension_gets_a_new_filter(env):
    reader = env.user()
    assert verdict(reader, env.token()) == "ok"
    builds = env.status()["builds"]
    with env.pg.connect("postgres") as su:
        su.execute("drop extension pg_session_auth cascade")
        su.execute("create extension pg_session_auth")  # new tables, new OIDs
        su.execute("select auth.add_key(%s, 'HS256', %s)", [KID, env.key.secret_text])
    revoked = revoke_each_kind(env)
    # The slot still holds the old tables' filter (valid for them, not for these): the keys
    # written now went into it too, but it is not used; tokens are looked up.
    results, scans = lookups(reader, revoked + [env.token()])
    assert results == [REVOKED] * 3 + ["ok"]
    assert scans >= 6
    env.wait_for(state="valid", keys=3, builds=builds + 1)
    assert lookups(reader, [env.token()]) == (["ok"], 0)


def test_databases_beyond_the_slots_are_still_checked(env):
    names = [f"filter_db_{i}" for i in range(MAX_DATABASES + 1)]
    for name in names:
        env.pg.sql(f"drop database if exists {name}")
        env.pg.sql(f"create database {name}")
    try:
        for name in names:
            env.setup_database(name)
            with env.pg.connect("postgres", dbname=name) as su:
                su.execute(TRY_VERIFY)
        # The module's own database holds one slot already.
        states = []
        for name in names:
            revoked = revoke_each_kind(env, name)
            reader = env.user(name)
            assert [verdict(reader, t) for t in revoked] == [REVOKED] * 3
            assert verdict(reader, env.token()) == "ok"
            states.append(env.status(name)["state"])
            reader.close()
        assert states.count("valid") == MAX_DATABASES - 1
        assert states.count("free") == 2
        # A dropped database's slot goes to the next database that needs one.
        holder, waiting = names[states.index("valid")], names[states.index("free")]
        with env.pg.connect("postgres", dbname=waiting) as su:
            notices = []
            su.add_notice_handler(lambda diag: notices.append(diag.message_primary))
            assert su.execute("select auth.rebuild_revocation_filter()").fetchone()[0] is False
            assert any("every filter slot is taken" in n for n in notices)
        env.pg.close_connections()
        env.pg.sql(f"drop database {holder} with (force)")
        reader = env.user(waiting)
        assert verdict(reader, env.token()) == "ok"
        env.wait_for(waiting, state="valid")
        revoked = revoke_each_kind(env, waiting)
        assert [verdict(reader, t) for t in revoked] == [REVOKED] * 3
    finally:
        env.pg.close_connections()
        for name in names:
            env.pg.sql(f"drop database if exists {name} with (force)")


def test_filter_functions_are_for_admins(env):
    conn = env.user()
    with raises_sqlstate("42501"):
        conn.execute("select * from auth.revocation_filter()")
    with raises_sqlstate("42501"):
        conn.execute("select auth.rebuild_revocation_filter()")
    with env.pg.connect(KEY_ADMIN) as admin:
        assert admin.execute("select auth.rebuild_revocation_filter()").fetchone()[0] is True
        assert admin.execute("select state from auth.revocation_filter()").fetchone()[0] == "valid"


def test_without_shared_preload_there_is_no_filter(cluster_without_preload):
    c = cluster_without_preload
    with c.connect("postgres") as su:
        assert su.execute("select state from auth.revocation_filter()").fetchone()[0] == "unavailable"
        notices = []
        su.add_notice_handler(lambda diag: notices.append(diag.message_primary))
        assert su.execute("select auth.rebuild_revocation_filter()").fetchone()[0] is False
        assert any("shared_preload_libraries" in n for n in notices)


class NoFilterCluster(FilterCluster):
    def conf(self) -> list[str]:
        return [*PRELOAD_LINES["shared"], "pg_session_auth.revocation_filter_size = 0"]


def test_a_filter_size_of_zero_turns_the_filter_off():
    c = NoFilterCluster()
    try:
        c.start()
        c.setup_roles_and_extension()
        env = Env(c)
        env.setup_database()
        with c.connect("postgres") as su:
            assert su.execute("show pg_session_auth.revocation_filter_size").fetchone()[0] == "0"
            assert su.execute("select state from auth.revocation_filter()").fetchone()[0] == "unavailable"
        revoked = revoke_each_kind(env)
        reader = c.connect("postgres")
        results, scans = lookups(reader, revoked + [env.token()])
        assert results == [REVOKED] * 3 + ["ok"]
        assert scans >= 9 + 2  # every token looked up (the fresh one too)
    finally:
        c.stop()


FILTER_TRIGGER = ("create trigger revoked_sessions_filter after insert or update on "
                  "auth.revoked_sessions for each row execute function "
                  "auth.note_revocation('session')")


@pytest.mark.parametrize("tampering", [
    "when (false)",
    "for each statement",
    "other function",
])
def test_a_changed_filter_trigger_is_not_trusted(env, tampering):
    reader = env.user()
    assert lookups(reader, [env.token()]) == (["ok"], 0)
    builds = env.status()["builds"]
    session = str(uuid.uuid4())
    with env.pg.connect("postgres") as su:
        su.execute("drop trigger revoked_sessions_filter on auth.revoked_sessions")
        if tampering == "when (false)":
            su.execute(FILTER_TRIGGER.replace("for each row", "for each row when (false)"))
        elif tampering == "for each statement":
            su.execute(FILTER_TRIGGER.replace("for each row execute function "
                                              "auth.note_revocation('session')",
                                              "for each statement execute function "
                                              "auth.note_revocation('session')"))
        else:
            su.execute("create function public.no_op() returns trigger language plpgsql "
                       "as $$ begin return null; end $$")
            su.execute(FILTER_TRIGGER.replace("auth.note_revocation('session')",
                                              "public.no_op()"))
        su.execute("alter table auth.revoked_sessions enable always trigger revoked_sessions_filter")
        su.execute("insert into auth.revoked_sessions (session_id) values (%s)", [session])
    try:
        results, scans = lookups(reader, [env.token(session_id=session), env.token()])
        assert results == [REVOKED, "ok"]
        assert scans >= 2  # neither the filter nor cached answers are trusted
    finally:
        with env.pg.connect("postgres") as su:
            su.execute("drop trigger revoked_sessions_filter on auth.revoked_sessions")
            su.execute("drop function if exists public.no_op()")
            su.execute(FILTER_TRIGGER)
            su.execute("alter table auth.revoked_sessions enable always trigger revoked_sessions_filter")
    # Restored: the filter is rebuilt (its triggers changed) and holds the key again.
    assert verdict(reader, env.token(session_id=session)) == REVOKED
    env.wait_for(state="valid", builds=builds + 1)
    assert verdict(reader, env.token(session_id=session)) == REVOKED
    assert lookups(reader, [env.token()]) == (["ok"], 0)


def test_missing_revocation_tables_fail_closed(env):
    reader = env.user()
    assert verdict(reader, env.token()) == "ok"
    with env.pg.connect("postgres") as su:
        su.execute("alter table auth.revoked_tokens rename to revoked_tokens_elsewhere")
    try:
        assert verdict(reader, env.token()).startswith(
            "55000 pg_session_auth: the revocation tables are missing")
    finally:
        with env.pg.connect("postgres") as su:
            su.execute("alter table auth.revoked_tokens_elsewhere rename to revoked_tokens")
    assert verdict(reader, env.token()) == "ok"


def test_a_terminated_build_worker_is_replaced(env):
    env.pg.restart()
    session = str(uuid.uuid4())
    env.pg.sql("select auth.revoke_session(%s)", [session], user=KEY_ADMIN)
    # A lock the build waits for (it reads the tables), so that it can be caught building.
    locker = env.pg.connect("postgres", autocommit=False)
    locker.execute("lock table auth.revoked_tokens in access exclusive mode")
    reader = env.user()
    verdicts = []
    # The check asks for a build, then waits for the lock itself (its exact lookup).
    check = threading.Thread(target=lambda: verdicts.append(verdict(reader, env.token())))
    check.start()
    deadline = time.monotonic() + 20
    while env.status()["state"] != "building":  # no check here: it would wait for the lock
        assert time.monotonic() < deadline, env.status()
        time.sleep(0.05)
    with env.pg.connect("postgres") as su:
        pids = su.execute("select pid from pg_stat_activity "
                          "where backend_type = 'pg_session_auth filter builder'").fetchall()
        assert len(pids) == 1
        assert su.execute("select pg_terminate_backend(%s)", [pids[0][0]]).fetchone()[0]
    locker.rollback()
    check.join(20)
    assert verdicts == ["ok"]
    # The slot still says "building", but its builder is gone: the next check starts another.
    env.wait_for(state="valid", keys=1)
    assert verdict(reader, env.token(session_id=session)) == REVOKED


def test_quote_all_identifiers_does_not_turn_the_filter_off(env):
    with env.pg.connect("postgres") as su:
        su.execute("alter database postgres set quote_all_identifiers = on")
    try:
        with env.pg.connect("postgres") as su:
            su.execute("select auth.rebuild_revocation_filter()")
        reader = env.user()
        assert reader.execute("show quote_all_identifiers").fetchone()[0] == "on"
        revoked = revoke_each_kind(env)
        results, scans = lookups(reader, revoked + [env.token()])
        assert results == [REVOKED] * 3 + ["ok"]
        assert lookups(reader, [env.token() for _ in range(5)]) == (["ok"] * 5, 0)
    finally:
        with env.pg.connect("postgres") as su:
            su.execute("alter database postgres reset quote_all_identifiers")
