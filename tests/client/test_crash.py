"""Crash safety: a committed revocation survives `pg_ctl stop -m immediate` and restart; an
uncommitted one leaves no trace.

The module runs its own cluster (scripts/cluster.sh on a port in 55950-55999) with
`fsync = on` (overriding cluster.sh's `fsync = off`: later lines win) and
`synchronous_commit = on`. "Crash" is `pg_ctl stop -m immediate`: every server process quits
at once, without a shutdown checkpoint, so the restart runs crash recovery from the WAL (the
tests check the server log says so). After each restart the tables and indexes of the
extension are checked with amcheck.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

import psycopg
import pytest

from client_support import claims, invalid, make_key
from conftest import PG_BIN, PRELOAD_LINES, SAFETY_OPTIONS, Cluster, as_postgres

PORTS = range(55950, 56000)
REVOKED = "invalid token: revoked"  # (client_support.REASONS predates revocation)
TABLES = ("auth.revoked_sessions", "auth.revoked_users", "auth.revoked_tokens", "auth.keys")
PURGE_ROWS = 40_000  # expired rows per revocation table


class CrashCluster(Cluster):
    CONF = [*PRELOAD_LINES["shared"], "fsync = on", "synchronous_commit = on", "full_page_writes = on"]

    PORT_RANGE = PORTS

    def conf(self) -> list[str]:
        return self.CONF

    def crash_and_restart(self) -> str:
        """pg_ctl stop -m immediate, then start; returns what the server logged meanwhile."""
        log_offset = len(self.server_log())
        result = as_postgres(f"{PG_BIN}/pg_ctl", "-D", str(self.datadir), "-m", "immediate",
                              "-w", "stop")
        assert result.returncode == 0, result.stdout + result.stderr
        self.close_connections()
        result = as_postgres(f"{PG_BIN}/pg_ctl", "-D", str(self.datadir), "-l",
                              str(self.datadir / "server.log"), "-w", "-t", "60", "start")
        assert result.returncode == 0, result.stdout + result.stderr + self.server_log()[-3000:]
        log = self.server_log()[log_offset:]
        # Proof that this was a crash and the restart recovered from the WAL.
        assert "immediate shutdown request" in log, log
        assert "database system was interrupted" in log or "not properly shut down" in log, log
        assert "redo starts at" in log, log
        return log


@pytest.fixture(scope="module")
def crash_cluster():
    cluster = CrashCluster(preload=True)
    try:
        cluster.start()
        cluster.setup_roles_and_extension()
        cluster.sql("create extension amcheck")
        assert cluster.sql("select current_setting('fsync'), "
                           "current_setting('synchronous_commit')") == [("on", "on")]
        yield cluster
    except BaseException:
        if cluster.started:
            print("---- server log ----\n" + cluster.server_log()[-5000:])
        raise
    finally:
        cluster.stop()


@pytest.fixture
def cc(crash_cluster):
    yield crash_cluster
    crash_cluster.close_connections()


def _try_verify(cluster: Cluster, token: str) -> str:
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="app_user",
                         dbname="postgres", autocommit=True, connect_timeout=10,
                         options=SAFETY_OPTIONS) as conn:
        try:
            conn.execute("select auth.verify(%s)", (token,))
        except psycopg.Error as error:
            return f"{error.sqlstate} {error.diag.message_primary}"
    return "ok"


def _assert_consistent(cluster: Cluster) -> None:
    """amcheck: every index of the extension's tables matches its heap, the heaps are sound."""
    indexes = cluster.sql(
        "select i.indexrelid::regclass::text from pg_index i "
        "where i.indrelid = any (%s::regclass[])", (list(TABLES),))
    assert len(indexes) >= 7
    for (index,) in indexes:
        cluster.sql("select bt_index_check(%s::regclass, true)", (index,))
    for table in TABLES:
        assert cluster.sql("select * from verify_heapam(%s::regclass)", (table,)) == [], table


def _session_token(key, **extra) -> tuple[str, dict]:
    payload = claims(sub=f"user-{uuid.uuid4()}", session_id=str(uuid.uuid4()),
                     jti=f"jti-{uuid.uuid4()}", **extra)
    return key.sign(payload), payload


def test_committed_revocations_survive_a_crash_and_uncommitted_ones_leave_no_trace(cc):
    k1, k2, k3 = (make_key("HS256", f"crash-k{i}") for i in (1, 2, 3))
    k_uncommitted = make_key("HS256", "crash-k-uncommitted")
    admin = cc.connect()
    admin.execute("delete from auth.keys")
    for key in (k1, k3):
        admin.execute("select auth.add_key(%s, 'HS256', %s)", (key.kid, key.secret_text))

    tok_a, a = _session_token(k1)   # session revoked, committed before the checkpoint
    tok_c, c = _session_token(k1)   # jti revoked, committed after the checkpoint
    tok_d, d = _session_token(k1)   # user revoked, committed after the checkpoint
    tok_b, b = _session_token(k1)   # session revoked, never committed
    tok_e, e = _session_token(k1)   # jti and user revoked, never committed
    tok_k3, _ = _session_token(k3)  # key retired, committed after the checkpoint
    for token in (tok_a, tok_b, tok_c, tok_d, tok_e, tok_k3):
        assert _try_verify(cc, token) == "ok"

    # 1. Committed, then a checkpoint will put it into the data files.
    assert admin.execute("select auth.revoke_session(%s)", (a["session_id"],)).fetchone() == (True,)

    # 2. Uncommitted, left open until the crash.
    open_txn = cc.connect(autocommit=False)
    open_txn.execute("select auth.revoke_session(%s)", (b["session_id"],))
    open_txn.execute("select auth.revoke_token(%s)", (e["jti"],))
    open_txn.execute("select auth.revoke_user(%s)", (e["sub"],))
    open_txn.execute("select auth.add_key(%s, 'HS256', %s)",
                     (k_uncommitted.kid, k_uncommitted.secret_text))
    open_txn.execute("select auth.retire_key(%s)", (k1.kid,))
    open_xid = open_txn.execute("select pg_current_xact_id()::text").fetchone()[0]

    # The uncommitted rows reach the data files (checkpoint) and the WAL on disk (the
    # commits below flush it), so recovery must really decide they did not happen.
    admin.execute("checkpoint")

    # 3. Committed after the checkpoint: only the WAL has it.
    assert admin.execute("select auth.revoke_token(%s)", (c["jti"],)).fetchone() == (True,)
    admin.execute("select auth.revoke_user(%s)", (d["sub"],))
    admin.execute("select auth.add_key(%s, 'HS256', %s)", (k2.kid, k2.secret_text))
    assert admin.execute("select auth.retire_key(%s)", (k3.kid,)).fetchone() == (True,)
    tok_k2, _ = _session_token(k2)
    before = {t: _try_verify(cc, t) for t in (tok_a, tok_b, tok_c, tok_d, tok_e, tok_k2, tok_k3)}
    assert before == {tok_a: f"28000 {REVOKED}", tok_b: "ok", tok_c: f"28000 {REVOKED}",
                      tok_d: f"28000 {REVOKED}", tok_e: "ok", tok_k2: "ok",
                      tok_k3: f"28000 {invalid('retired key')}"}
    keys_before = cc.sql("select kid, alg, secret, retired_at from auth.keys order by kid")

    # Crash with the transaction still open.
    cc.crash_and_restart()
    with pytest.raises(psycopg.OperationalError):
        open_txn.execute("select 1")

    # The committed revocations and key changes are in force ...
    after = {t: _try_verify(cc, t) for t in (tok_a, tok_b, tok_c, tok_d, tok_e, tok_k2, tok_k3)}
    assert after == before
    assert cc.sql("select kid, alg, secret, retired_at from auth.keys order by kid") == keys_before
    assert [r[0] for r in keys_before] == [k1.kid, k2.kid, k3.kid]
    # ... and the uncommitted ones left no trace: no row, the transaction aborted.
    assert cc.sql("select session_id::text from auth.revoked_sessions") == [(a["session_id"],)]
    assert cc.sql("select jti from auth.revoked_tokens") == [(c["jti"],)]
    assert cc.sql("select user_id from auth.revoked_users") == [(d["sub"],)]
    assert cc.sql("select count(*) from auth.keys where kid = %s", (k_uncommitted.kid,)) == [(0,)]
    assert cc.sql("select pg_xact_status(%s::xid8)", (open_xid,)) == [("aborted",)]
    assert _try_verify(cc, k_uncommitted.sign(claims())) == f"28000 {invalid('unknown key')}"
    _assert_consistent(cc)

    # The server works normally afterwards: a new revocation takes effect.
    cc.sql("select auth.revoke_session(%s)", (b["session_id"],))
    assert _try_verify(cc, tok_b) == f"28000 {REVOKED}"


def _fill_revocations(cluster: Cluster, rows: int) -> None:
    """`rows` expired revocations per table (the last token one has jti 'purge-last'), and
    100 per table that purge_revocations must keep."""
    cluster.sql(
        "insert into auth.revoked_sessions (session_id, expires_at) "
        "select gen_random_uuid(), now() - interval '1 day' from generate_series(1, %s)",
        (rows,))
    cluster.sql(
        "insert into auth.revoked_users (user_id, revoked_before, expires_at) "
        "select 'purge-user-' || i, now(), now() - interval '1 day' "
        "from generate_series(1, %s) i", (rows,))
    cluster.sql(
        "insert into auth.revoked_tokens (jti, expires_at) "
        "select case when i = %s then 'purge-last' else 'purge-jti-' || i end, "
        "now() - interval '1 day' from generate_series(1, %s) i", (rows, rows))
    cluster.sql(
        "insert into auth.revoked_sessions (session_id, expires_at) "
        "select gen_random_uuid(), case when mod(i, 2) = 0 then now() + interval '1 day' end "
        "from generate_series(1, 100) i")
    cluster.sql(
        "insert into auth.revoked_users (user_id, revoked_before, expires_at) "
        "select 'kept-user-' || i, now(), case when mod(i, 2) = 0 then now() + interval '1 day' end "
        "from generate_series(1, 100) i")
    cluster.sql(
        "insert into auth.revoked_tokens (jti, expires_at) "
        "select 'kept-jti-' || i, case when mod(i, 2) = 0 then now() + interval '1 day' end "
        "from generate_series(1, 100) i")


def _expired_counts(cluster: Cluster) -> tuple[int, int, int]:
    return cluster.sql(
        "select (select count(*) from auth.revoked_sessions where expires_at < now()), "
        "(select count(*) from auth.revoked_users where expires_at < now()), "
        "(select count(*) from auth.revoked_tokens where expires_at < now())")[0]


def _kept_counts(cluster: Cluster) -> tuple[int, int, int]:
    return cluster.sql(
        "select (select count(*) from auth.revoked_sessions where expires_at >= now() "
        "or expires_at is null), "
        "(select count(*) from auth.revoked_users where expires_at >= now() "
        "or expires_at is null), "
        "(select count(*) from auth.revoked_tokens where expires_at >= now() "
        "or expires_at is null)")[0]


class PurgeThread(threading.Thread):
    def __init__(self, cluster: Cluster):
        super().__init__(daemon=True)
        self.conn = psycopg.connect(host="127.0.0.1", port=cluster.port, user="key_admin",
                                    dbname="postgres", autocommit=True, connect_timeout=10,
                                    options=SAFETY_OPTIONS)
        self.pid = self.conn.info.backend_pid
        self.result = None
        self.error = None

    def run(self) -> None:
        try:
            self.result = self.conn.execute("select auth.purge_revocations()").fetchone()[0]
        except BaseException as error:  # noqa: BLE001 - inspected by the test
            self.error = error
        finally:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001
                pass


def _reset_revocations(cluster: Cluster) -> None:
    cluster.sql("truncate auth.revoked_sessions, auth.revoked_users, auth.revoked_tokens")


def test_crash_in_the_middle_of_purge_revocations_is_all_or_nothing(cc):
    """Deterministic: purge_revocations has deleted (uncommitted) rows and waits on a row
    lock when the server crashes; a checkpoint has written its deletions to the data files.
    Afterwards not one row is gone."""
    _reset_revocations(cc)
    _fill_revocations(cc, PURGE_ROWS)
    total_before = cc.sql("select (select count(*) from auth.revoked_sessions) + "
                          "(select count(*) from auth.revoked_users) + "
                          "(select count(*) from auth.revoked_tokens)")[0][0]
    assert _expired_counts(cc) == (PURGE_ROWS,) * 3

    locker = cc.connect(autocommit=False)
    locker.execute("select from auth.revoked_tokens where jti = 'purge-last' for update")

    purge = PurgeThread(cc)
    purge.start()
    deadline = time.monotonic() + 15
    while True:
        row = cc.sql("select wait_event_type, backend_xid::text from pg_stat_activity "
                     "where pid = %s", (purge.pid,))
        if row and row[0][0] == "Lock" and row[0][1] is not None:
            purge_xid = row[0][1]
            break
        assert purge.is_alive(), f"purge ended: {purge.result!r} {purge.error!r}"
        assert time.monotonic() < deadline, f"purge never blocked: {row}"
        time.sleep(0.01)
    # Proof it is mid-way: rows it has deleted carry its xid as xmax.
    marked = cc.sql(
        "select (select count(*) from auth.revoked_sessions where xmax = %s::xid), "
        "(select count(*) from auth.revoked_users where xmax = %s::xid), "
        "(select count(*) from auth.revoked_tokens where xmax = %s::xid)",
        (purge_xid,) * 3)[0]
    assert sum(marked) > 0 and sum(marked) < 3 * PURGE_ROWS, marked
    cc.sql("checkpoint")

    cc.crash_and_restart()
    purge.join(timeout=30)
    assert not purge.is_alive()
    assert purge.result is None and isinstance(purge.error, psycopg.OperationalError), (
        purge.result, purge.error)

    # None gone (it never committed), and nothing half-done.
    assert _expired_counts(cc) == (PURGE_ROWS,) * 3
    assert _kept_counts(cc) == (100, 100, 100)
    _assert_consistent(cc)

    # Purging works afterwards and removes exactly the expired rows.
    assert cc.sql("select auth.purge_revocations()") == [(3 * PURGE_ROWS,)]
    assert _expired_counts(cc) == (0, 0, 0)
    assert _kept_counts(cc) == (100, 100, 100)
    total_after = cc.sql("select (select count(*) from auth.revoked_sessions) + "
                         "(select count(*) from auth.revoked_users) + "
                         "(select count(*) from auth.revoked_tokens)")[0][0]
    assert total_before - total_after == 3 * PURGE_ROWS
    _assert_consistent(cc)
    print(f"purge crash (blocked): {marked} rows marked deleted at the crash, none gone after")


def test_crash_while_purge_revocations_runs_unhindered_is_all_or_nothing(cc):
    """Timing-based: crash as soon as the purge has started deleting (its backend has an
    xid), without holding it up. Either it committed before the crash and every expired row
    is gone, or it did not and every one is back; never part."""
    _reset_revocations(cc)
    _fill_revocations(cc, PURGE_ROWS)
    assert _expired_counts(cc) == (PURGE_ROWS,) * 3
    cc.sql("checkpoint")

    purge = PurgeThread(cc)
    purge.start()
    deadline = time.monotonic() + 15
    seen_xid = False
    while purge.is_alive() and time.monotonic() < deadline:
        row = cc.sql("select backend_xid from pg_stat_activity where pid = %s", (purge.pid,))
        if row and row[0][0] is not None:
            seen_xid = True
            break
    cc.crash_and_restart()
    purge.join(timeout=30)
    assert not purge.is_alive()

    expired = _expired_counts(cc)
    assert expired in ((0, 0, 0), (PURGE_ROWS,) * 3), f"partial purge survived: {expired}"
    if purge.result is not None:  # reported committed: must be durable
        assert purge.result == 3 * PURGE_ROWS and expired == (0, 0, 0)
    assert _kept_counts(cc) == (100, 100, 100)
    _assert_consistent(cc)
    outcome = "none gone" if expired[0] else "all gone"
    print(f"purge crash (unhindered): crashed mid-purge={seen_xid and purge.result is None}, "
          f"client result={purge.result!r}, outcome: {outcome}")
