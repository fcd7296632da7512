"""Replicas: verification and the claim functions work on a streaming hot standby (nothing in
the verification path writes), and a revocation committed on the primary is enforced on the
standby once replayed.

The module starts its own primary (scripts/cluster.sh, wal_level = replica) and a hot standby
made from it with `pg_basebackup -R`, both on loopback on ports 55900-55949, and proves that
the standby is streaming before any test runs. Both are stopped at the end of the module,
whatever happened.

How a revocation reaches a standby backend: the statement trigger on the revocation table
queues a relcache invalidation, which is written into the commit record; the standby's
startup process sends it to every standby backend when it replays that record, and the
backend's next statement processes it and drops its cached answers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid

import psycopg
import psycopg.types.json
import pytest

from client_support import claims, invalid, make_key
from conftest import PG_BIN, PRELOAD_LINES, Cluster, _live_clusters, as_postgres, free_ports, raises_sqlstate

PRIMARY_PORTS = range(55900, 55925)
STANDBY_PORTS = range(55925, 55950)

AUTHENTICATOR = "repl_authenticator"
KID = "repl-k"
REPLAY_TIMEOUT = 20.0
REVOKED = "invalid token: revoked"  # (client_support.REASONS predates revocation)


class Primary(Cluster):
    """A conftest Cluster on this module's ports, with replication settings."""

    CONF = [
        *PRELOAD_LINES["shared"],
        "wal_level = replica",
        "max_wal_senders = 5",
        "wal_keep_size = '128MB'",
        "hot_standby = on",
    ]

    PORT_RANGE = PRIMARY_PORTS

    def conf(self) -> list[str]:
        return self.CONF

    def allow_replication_from_loopback(self) -> None:
        """initdb --auth=trust normally writes `host replication all 127.0.0.1/32 trust`;
        add it when it is missing, and reload."""
        rules = self.sql("select type, database, address, auth_method from pg_hba_file_rules")
        has_rule = any(
            row[0] == "host" and "replication" in (row[1] or [])
            and row[2] in ("127.0.0.1", None) and row[3] == "trust"
            for row in rules
        )
        if not has_rule:
            hba = self.datadir / "pg_hba.conf"
            subprocess.run(["sudo", "-u", "postgres", "tee", "-a", str(hba)],
                           input="host replication all 127.0.0.1/32 trust\n",
                           capture_output=True, text=True, check=True, timeout=30)
            self.sql("select pg_reload_conf()")


class Standby(Cluster):
    """A hot standby of `primary`, made with pg_basebackup -R and started with pg_ctl."""

    def __init__(self, primary: Primary):
        super().__init__(preload=True)
        self.primary = primary

    def server_log(self) -> str:
        try:
            return (self.datadir / "standby.log").read_text(errors="replace")
        except OSError:
            return ""

    def start(self) -> None:
        last_error = None
        for port in free_ports(STANDBY_PORTS)[:5]:
            shutil.rmtree(self.datadir, ignore_errors=True)
            backup = as_postgres(
                f"{PG_BIN}/pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port),
                "-U", "postgres", "-D", str(self.datadir), "-R", "-X", "stream",
                "-c", "fast", "--no-sync",
            )
            if backup.returncode != 0:
                raise RuntimeError(f"pg_basebackup failed: {backup.stdout}{backup.stderr}")
            conf = "\n".join([
                f"port = {port}",
                f"unix_socket_directories = '{self.datadir}'",
                "hot_standby = on",
                "hot_standby_feedback = on",
                "wal_receiver_status_interval = 1s",
                "",
            ])
            subprocess.run(["sudo", "-u", "postgres", "tee", "-a",
                            str(self.datadir / "postgresql.conf")],
                           input=conf, capture_output=True, text=True, check=True, timeout=30)
            (self.datadir / "server.log").unlink(missing_ok=True)  # the primary's, copied
            result = as_postgres(f"{PG_BIN}/pg_ctl", "-D", str(self.datadir), "-l",
                                  str(self.datadir / "standby.log"), "-w", "-t", "60", "start")
            if result.returncode == 0:
                self.port = port
                self.started = True
                _live_clusters.add(self)
                return
            last_error = f"port {port}: {result.stdout}{result.stderr}{self.server_log()}"
            as_postgres(f"{PG_BIN}/pg_ctl", "-D", str(self.datadir), "-m", "immediate", "stop",
                         timeout=60)
        raise RuntimeError(f"could not start the standby: {last_error}")


def wait_for_replay(primary: Cluster, standby: Cluster, timeout: float = REPLAY_TIMEOUT) -> None:
    """Waits until the standby has replayed everything the primary has written so far."""
    target = primary.sql("select pg_current_wal_lsn()::text")[0][0]
    deadline = time.monotonic() + timeout
    with psycopg.connect(host="127.0.0.1", port=standby.port, user="postgres",
                         dbname="postgres", autocommit=True, connect_timeout=10) as conn:
        while True:
            replayed = conn.execute(
                "select pg_last_wal_replay_lsn() >= %s::pg_lsn, pg_last_wal_replay_lsn()::text",
                (target,)).fetchone()
            if replayed[0]:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"standby replayed only up to {replayed[1]}, primary is at {target}")
            time.sleep(0.01)


# -- fixtures -------------------------------------------------------------------------------


class Pair:
    def __init__(self, primary: Primary, standby: Standby, key):
        self.primary = primary
        self.standby = standby
        self.key = key

    def token(self, **extra) -> str:
        """A fresh token with its own subject, session and jti unless given."""
        base = {"sub": str(uuid.uuid4()), "session_id": str(uuid.uuid4()),
                "jti": f"jti-{uuid.uuid4()}"}
        base.update(extra)
        return self.key.sign(claims(**base))

    def standby_conn(self, user: str = AUTHENTICATOR, autocommit: bool = True):
        return self.standby.connect(user=user, autocommit=autocommit)

    def replay(self) -> None:
        wait_for_replay(self.primary, self.standby)


def _setup_primary(primary: Primary, key) -> None:
    primary.setup_roles_and_extension()
    with psycopg.connect(host="127.0.0.1", port=primary.port, user="postgres",
                         dbname="postgres", autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"create role {AUTHENTICATOR} login noinherit")
        for role in ("anon", "authenticated"):
            conn.execute(f"create role {role} nologin")
            conn.execute(f"grant {role} to {AUTHENTICATOR}")
        conn.execute("create table public.notes (owner uuid not null, body text not null)")
        conn.execute("alter table public.notes enable row level security")
        conn.execute("create policy own_notes on public.notes for select to authenticated "
                     "using (owner = auth.uid())")
        conn.execute("grant select on public.notes to authenticated")
        conn.execute("select auth.add_key(%s, 'HS256', %s)", (KID, key.secret_text))
        # Unrelated revocations, so that the standby's backends cache real per-session/jti/
        # user answers rather than short-cutting on empty tables.
        conn.execute("select auth.revoke_session(%s)", (uuid.uuid4(),))
        conn.execute("select auth.revoke_token('unrelated-jti')")
        conn.execute("select auth.revoke_user('unrelated-user')")


@pytest.fixture(scope="module")
def pair():
    primary = Primary(preload=True)
    standby = Standby(primary)
    try:
        primary.start()
        primary.allow_replication_from_loopback()
        key = make_key("HS256", KID)
        _setup_primary(primary, key)
        standby.start()
        p = Pair(primary, standby, key)
        _wait_streaming(p)
        yield p
    except BaseException:
        for name, c in (("primary", primary), ("standby", standby)):
            if c.started:
                print(f"---- {name} log ----\n" + c.server_log()[-5000:])
        raise
    finally:
        standby.stop()
        primary.stop()


def _wait_streaming(p: Pair) -> None:
    deadline = time.monotonic() + REPLAY_TIMEOUT
    while True:
        states = p.primary.sql("select state from pg_stat_replication")
        if states and states[0][0] == "streaming":
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"the standby is not streaming: {states}\n{p.standby.server_log()}")
        time.sleep(0.05)
    p.replay()


@pytest.fixture
def rp(pair):
    yield pair
    pair.primary.close_connections()
    pair.standby.close_connections()


def _try_verify(conn, token: str) -> str:
    """'ok' or 'SQLSTATE message', without aborting anything."""
    try:
        conn.execute("select auth.verify(%s)", (token,))
    except psycopg.Error as error:
        if not conn.autocommit:
            conn.rollback()
        return f"{error.sqlstate} {error.diag.message_primary}"
    return "ok"


# -- tests ----------------------------------------------------------------------------------


def test_the_pair_is_a_streaming_primary_and_a_read_only_hot_standby(rp):
    rows = rp.primary.sql("select state, host(client_addr) from pg_stat_replication")
    assert rows == [("streaming", "127.0.0.1")]
    assert rp.primary.sql("select pg_is_in_recovery()") == [(False,)]
    conn = rp.standby_conn()
    assert conn.execute("select pg_is_in_recovery()").fetchone() == (True,)
    assert conn.execute("show transaction_read_only").fetchone() == ("on",)
    status = rp.standby.sql("select status from pg_stat_wal_receiver")
    assert status == [("streaming",)]
    # The extension, its roles and its key came over with the base backup / WAL.
    assert conn.execute("select current_user, auth.verify(%s) ->> 'role'",
                        (rp.token(),)).fetchone() == (AUTHENTICATOR, "authenticated")


def test_verify_authenticate_claims_and_rls_work_on_the_standby_as_a_non_superuser(rp):
    alice, bob = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(host="127.0.0.1", port=rp.primary.port, user="postgres",
                         dbname="postgres", autocommit=True) as conn:
        for owner, body in ((alice, "a1"), (alice, "a2"), (bob, "b1")):
            conn.execute("insert into public.notes values (%s, %s)", (owner, body))
    rp.replay()
    token_alice = rp.token(sub=str(alice), email="alice@example.com")
    token_bob = rp.token(sub=str(bob))

    conn = rp.standby_conn(autocommit=False)
    assert conn.execute("select rolsuper from pg_roles where rolname = current_user"
                        ).fetchone() == (False,)
    verified = conn.execute("select auth.verify(%s)", (token_alice,)).fetchone()[0]
    assert verified["sub"] == str(alice)
    conn.rollback()

    # One read-only transaction: authenticate, claim functions, RLS.
    with conn.transaction():
        assert conn.execute("show transaction_read_only").fetchone() == ("on",)
        conn.execute("select auth.authenticate(%s)", (token_alice,))
        row = conn.execute(
            "select current_user, auth.uid(), auth.user_id(), auth.role(), auth.email(), "
            "auth.session_id(), auth.jwt() ->> 'jti'").fetchone()
        assert row[0] == "authenticated"
        assert row[1] == alice and row[2] == str(alice)
        assert row[3] == "authenticated" and row[4] == "alice@example.com"
        assert row[5] is not None and row[6].startswith("jti-")
        assert sorted(r[0] for r in conn.execute("select body from public.notes")) == ["a1", "a2"]
        # Still read only, and no transaction id was ever needed.
        assert conn.execute("show transaction_read_only").fetchone() == ("on",)
        assert conn.execute("select pg_current_xact_id_if_assigned()").fetchone() == (None,)
    # SET LOCAL semantics: the identity and role are gone with the transaction.
    with conn.transaction():
        assert conn.execute("select current_user, auth.uid()").fetchone() == (AUTHENTICATOR, None)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select body from public.notes")
    with conn.transaction():
        conn.execute("select auth.authenticate(%s)", (token_bob,))
        assert [r[0] for r in conn.execute("select body from public.notes")] == ["b1"]

    # The same path on the primary assigns no transaction id either: nothing in it writes.
    pconn = rp.primary.connect(user=AUTHENTICATOR, autocommit=False)
    with pconn.transaction():
        pconn.execute("select auth.verify(%s)", (token_alice,))
        pconn.execute("select auth.authenticate(%s)", (token_alice,))
        assert pconn.execute("select auth.uid()").fetchone() == (alice,)
        assert len(pconn.execute("select body from public.notes").fetchall()) == 2
        assert pconn.execute("select pg_current_xact_id_if_assigned()").fetchone() == (None,)


def _revoke(rp: Pair, kind: str, payload: dict, kid: str) -> None:
    statement = {
        "session": ("select auth.revoke_session(%s)", (payload["session_id"],)),
        "user": ("select auth.revoke_user(%s)", (payload["sub"],)),
        "token": ("select auth.revoke_token(%s)", (payload["jti"],)),
        "key": ("select auth.retire_key(%s)", (kid,)),
    }[kind]
    rp.primary.sql(*statement)


EXPECTED = {"session": REVOKED, "user": REVOKED,
            "token": REVOKED, "key": invalid("retired key")}


@pytest.mark.parametrize("kind", ["session", "user", "token", "key"])
def test_revocation_committed_on_the_primary_is_enforced_on_the_standby_once_replayed(rp, kind):
    key = rp.key
    if kind == "key":
        key = make_key("HS256", f"repl-retire-{uuid.uuid4().hex[:8]}")
        rp.primary.sql("select auth.add_key(%s, 'HS256', %s)", (key.kid, key.secret_text))
        rp.replay()
    payload = claims(sub=str(uuid.uuid4()), session_id=str(uuid.uuid4()),
                     jti=f"jti-{uuid.uuid4()}")
    token = key.sign(payload)
    # An untouched token of another user/session/jti on the primary key: stays valid.
    bystander = rp.token()

    # Warm: an autocommit connection, and one inside an open transaction with the identity
    # bound.
    same = rp.standby_conn()
    assert _try_verify(same, token) == "ok"
    assert _try_verify(same, token) == "ok"
    assert _try_verify(same, bystander) == "ok"
    in_txn = rp.standby_conn(autocommit=False)
    in_txn.execute("select auth.authenticate(%s)", (token,))
    assert in_txn.execute("select auth.uid()").fetchone() == (uuid.UUID(payload["sub"]),)

    _revoke(rp, kind, payload, key.kid)
    rp.replay()

    expected = f"28000 {EXPECTED[kind]}"
    # The SAME connections' next statement.
    assert _try_verify(same, token) == expected
    if kind != "key":
        # The identity bound earlier in this still-open transaction is revoked too.
        with raises_sqlstate("28000", REVOKED):
            in_txn.execute("select auth.uid()")
    in_txn.rollback()
    assert _try_verify(in_txn, token) == expected
    # A fresh standby connection, and the primary itself.
    assert _try_verify(rp.standby_conn(), token) == expected
    assert _try_verify(rp.primary.connect(user=AUTHENTICATOR), token) == expected
    # Nothing else was caught by it.
    assert _try_verify(same, bystander) == "ok"


def test_revocation_rolled_back_on_the_primary_never_affects_the_standby(rp):
    kid = f"repl-rb-{uuid.uuid4().hex[:8]}"
    key = make_key("HS256", kid)
    rp.primary.sql("select auth.add_key(%s, 'HS256', %s)", (kid, key.secret_text))
    payload = claims(sub=str(uuid.uuid4()), session_id=str(uuid.uuid4()),
                     jti=f"jti-{uuid.uuid4()}")
    token = key.sign(payload)
    rp.replay()

    standby = rp.standby_conn()
    assert _try_verify(standby, token) == "ok"

    writer = rp.primary.connect(autocommit=False)
    writer.execute("select auth.revoke_session(%s)", (payload["session_id"],))
    writer.execute("select auth.revoke_user(%s)", (payload["sub"],))
    writer.execute("select auth.revoke_token(%s)", (payload["jti"],))
    writer.execute("select auth.retire_key(%s)", (kid,))
    # In progress on the primary, its WAL already replayed on the standby: not in force.
    rp.primary.sql("select 1 from pg_switch_wal()")  # pushes the open transaction's WAL out
    rp.replay()
    assert _try_verify(standby, token) == "ok"
    writer.rollback()
    rp.replay()
    assert _try_verify(standby, token) == "ok"

    # Make the standby drop its caches and re-read after the rollback: an unrelated committed
    # revocation, replayed. The rolled-back rows must not be found.
    rp.primary.sql("select auth.revoke_session(%s)", (uuid.uuid4(),))
    rp.replay()
    assert _try_verify(standby, token) == "ok"
    assert _try_verify(rp.standby_conn(), token) == "ok"
    counts = rp.standby.sql(
        "select (select count(*) from auth.revoked_sessions where session_id = %s), "
        "(select count(*) from auth.revoked_users where user_id = %s), "
        "(select count(*) from auth.revoked_tokens where jti = %s), "
        "(select count(*) from auth.keys where kid = %s and retired_at is not null)",
        (payload["session_id"], payload["sub"], payload["jti"], kid))
    assert counts == [(0, 0, 0, 0)]


@pytest.mark.parametrize("user", ["postgres", AUTHENTICATOR])
def test_revocation_functions_on_the_standby_fail_cleanly(rp, user):
    payload = claims(sub=str(uuid.uuid4()), session_id=str(uuid.uuid4()),
                     jti=f"jti-{uuid.uuid4()}")
    token = rp.key.sign(payload)
    conn = rp.standby_conn(user=user, autocommit=False)
    # With the caller's own identity bound (so the own-or-admin check passes; for postgres
    # the token's role claim switches to `authenticated`), and, for the superuser, the admin
    # functions without one.
    attempts = [
        (True, "select auth.revoke_session(%s)", (payload["session_id"],)),
        (True, "select auth.revoke_user(%s)", (payload["sub"],)),
        (True, "select auth.revoke_token(%s)", (payload["jti"],)),
        (True, "select auth.sign_out('local')", None),
        (True, "select auth.sign_out('global')", None),
        (True, "select auth.sign_out('others')", None),
    ]
    if user == "postgres":
        attempts += [
            (False, "select auth.revoke_session(%s)", (uuid.uuid4(),)),
            (False, "select auth.revoke_user('someone-else')", None),
            (False, "select auth.revoke_token('someone-elses-jti')", None),
            (False, "select auth.retire_key(%s)", (KID,)),
            (False, "select auth.purge_revocations()", None),
        ]
    seen = {}
    for bind, statement, params in attempts:
        try:
            with conn.transaction():
                if bind:
                    conn.execute("select auth.authenticate(%s)", (token,))
                conn.execute(statement, params)
        except psycopg.Error as error:
            seen[(bind, statement)] = (error.sqlstate, error.diag.message_primary)
        else:
            seen[(bind, statement)] = ("no error", None)
    assert len(seen) == len(attempts)
    for statement, (sqlstate, message) in seen.items():
        assert sqlstate == "25006", f"{statement}: {sqlstate} {message}"
        assert "read-only transaction" in message, f"{statement}: {message}"
    # The connection is fine afterwards and nothing was revoked.
    conn.rollback()
    conn.autocommit = True
    assert _try_verify(conn, token) == "ok"
    assert _try_verify(rp.primary.connect(user=AUTHENTICATOR), token) == "ok"


def test_key_management_on_the_standby_fails_cleanly(rp):
    """auth.add_key / auth.import_jwks on a standby must fail like any write there (25006),
    not with an internal error (XX000)."""
    jwk = dict(make_key("ES256").public_jwk, kid="standby-jwk")
    conn = rp.standby_conn(user="postgres")
    seen = {}
    for statement, params in (
        ("select auth.add_key('standby-k', 'HS256', %s)", ("x" * 40,)),
        ("select auth.import_jwks(%s::jsonb)", (psycopg.types.json.Json({"keys": [jwk]}),)),
    ):
        try:
            conn.execute(statement, params)
        except psycopg.Error as error:
            seen[statement] = (error.sqlstate, error.diag.message_primary)
        else:
            seen[statement] = ("no error", None)
    bad = {s: v for s, v in seen.items() if v[0] != "25006"}
    assert not bad, f"not a clean read-only error: {bad}"
    # The connection is fine afterwards.
    assert _try_verify(conn, rp.token()) == "ok"
