"""Sessions under reuse, theft and concurrency, against the real server with real connections
(one per thread, released together by a threading.Barrier):

* reuse: a superseded refresh token presented after `pg_session_auth.refresh_reuse_interval`
  (set to 1 s here) that is not the immediately previous one is theft: 28000
  `refresh token reused`, and the whole session ends — for good, although the thief's
  transaction rolls back, and for every backend from its next statement (a refresh token
  from before a step-up, presented after the interval, too);
* simultaneous refreshes of one token (2, 4, 8, 16 connections) rotate exactly once and all
  get the same new refresh token; under REPEATABLE READ / SERIALIZABLE the losers get 40001;
* a sign-out racing a refresh never leaves the session refreshable.

Roles and helpers are test_sessions.py's.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psycopg
import pytest

from conftest import raises_sqlstate
from test_sessions import (  # noqa: F401  (fixtures are found by name)
    AUTHENTICATOR,
    OK,
    claims_of,
    env,
    is_refused,
    one,
    roles,
    step_up,
    verdict,
)

REUSED = "refresh token reused"
ENDED = "session ended"
REFRESH = "select * from auth.refresh_session(%s)"


@dataclass
class Outcome:
    row: dict | None = None
    sqlstate: str | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.row is not None


def run_at_once(conns: list, work, prepare=None, timeout: float = 60) -> list[Outcome]:
    """Runs work(conn) on every connection in its own thread, all released at once (after
    prepare(conn), if given). Errors are outcomes; nothing is left running."""
    barrier = threading.Barrier(len(conns))
    outcomes: list[Outcome | None] = [None] * len(conns)

    def run(i: int) -> None:
        try:
            if prepare is not None:
                prepare(conns[i])
            barrier.wait(timeout=timeout)
            outcomes[i] = Outcome(row=work(conns[i]))
        except psycopg.Error as error:
            outcomes[i] = Outcome(sqlstate=error.sqlstate, message=error.diag.message_primary)
        except BaseException as error:  # noqa: BLE001 - reported, not swallowed
            outcomes[i] = Outcome(sqlstate="python", message=repr(error))

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(conns))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 30)
    assert not any(thread.is_alive() for thread in threads), "a caller hung"
    return outcomes


def in_transaction(query: str, params):
    """work(): the query in the connection's transaction, committed (rolled back on error)."""
    def work(conn):
        try:
            row = one(conn, query, params)
        except psycopg.Error:
            conn.rollback()
            raise
        conn.commit()
        return row
    return work


@pytest.fixture
def short_reuse(env):
    env.set_database("pg_session_auth.refresh_reuse_interval", "1s")
    return env


def rotated_twice(env) -> tuple[dict, list[dict]]:
    """A session and its three generations: rows[0] from sign-in, rows[1], rows[2]."""
    s = env.create()
    rows = [s]
    for _ in range(2):
        rows.append(env.refresh(rows[-1]["refresh_token"]))
    return s, rows


# == reuse and theft ==========================================================================


@pytest.mark.parametrize("how", ["autocommit", "rolled back transaction"])
def test_theft_ends_the_whole_session_for_every_backend(short_reuse, how):
    env = short_reuse
    s, rows = rotated_twice(env)
    watcher = env.pg.connect(AUTHENTICATOR)  # another backend, warmed up
    for row in rows:
        assert verdict(watcher, row["access_token"]) == OK
    time.sleep(1.5)  # rows[0]'s token: superseded more than the interval ago, not the last one

    thief = env.anon(autocommit=(how == "autocommit"))
    with raises_sqlstate("28000") as caught:
        env.refresh(rows[0]["refresh_token"], conn=thief)
    assert REUSED in caught.message, caught.message
    if how != "autocommit":
        thief.rollback()

    # From the next statement of another backend: every access token of the session refused.
    for row in rows:
        assert is_refused(verdict(watcher, row["access_token"])), row
        assert is_refused(verdict(env.pg.connect(AUTHENTICATOR), row["access_token"]))
    row = env.row(s["session_id"])
    assert row["ended_at"] is not None and row["end_reason"] == REUSED
    env.refresh_refused(rows[-1]["refresh_token"], ENDED)
    env.refresh_refused(rows[-1]["refresh_token"], ENDED, conn=thief)
    # The session is gone from its user's devices.
    listed = env.admin().execute("select session_id from auth.list_sessions(%s)",
                                 [s["user_id"]]).fetchall()
    assert listed == []


def test_immediately_previous_token_hands_back_the_current_one_even_after_the_interval(
        short_reuse):
    env = short_reuse
    s, rows = rotated_twice(env)
    counter = env.counter(s["session_id"])
    time.sleep(1.5)
    again = env.refresh(rows[1]["refresh_token"])
    assert again["refresh_token"] == rows[2]["refresh_token"]
    assert env.verdict(again["access_token"]) == OK
    assert env.counter(s["session_id"]) == counter
    assert env.row(s["session_id"])["ended_at"] is None


def test_theft_in_a_transaction_that_already_rotated_the_session(short_reuse):
    """The thief's transaction holds the session row (it rotated the current token first):
    the ending, written in a transaction of its own, must still be committed and the error
    raised — no hang — and it persists after the rollback."""
    env = short_reuse
    s, rows = rotated_twice(env)
    time.sleep(1.5)
    conn = env.anon(autocommit=False)
    rotated = env.refresh(rows[2]["refresh_token"], conn=conn)
    started = time.monotonic()
    with raises_sqlstate("28000") as caught:
        env.refresh(rows[0]["refresh_token"], conn=conn)
    assert REUSED in caught.message, caught.message
    assert time.monotonic() - started < 10
    conn.rollback()
    env.assert_ended(s, REUSED)
    for token in (rows[2]["refresh_token"], rotated["refresh_token"]):
        with raises_sqlstate("28000"):
            env.refresh(token)
    for row in (*rows, rotated):
        assert is_refused(env.verdict(row["access_token"]))


def test_stolen_token_racing_the_owners_refresh_leaves_no_valid_refresh_token(short_reuse):
    env = short_reuse
    s, rows = rotated_twice(env)
    time.sleep(1.5)
    owner, thief = env.anon(), env.anon()
    outcomes = run_at_once(
        [owner, thief],
        lambda conn: one(conn, REFRESH, [rows[2]["refresh_token"] if conn is owner
                                         else rows[0]["refresh_token"]]))
    assert not outcomes[1].ok and outcomes[1].sqlstate == "28000", outcomes
    assert REUSED in outcomes[1].message
    env.assert_ended(s, REUSED)
    tokens = [rows[2]["refresh_token"]] + ([outcomes[0].row["refresh_token"]]
                                           if outcomes[0].ok else [])
    for token in tokens:
        env.refresh_refused(token, ENDED)
    if outcomes[0].ok:
        assert is_refused(env.verdict(outcomes[0].row["access_token"]))


def test_simultaneous_thieves_all_refused_and_the_session_ends_once(short_reuse):
    env = short_reuse
    s, rows = rotated_twice(env)
    time.sleep(1.5)
    outcomes = run_at_once([env.anon() for _ in range(4)],
                           lambda conn: one(conn, REFRESH, [rows[0]["refresh_token"]]))
    assert all(o.sqlstate == "28000" for o in outcomes), outcomes
    assert any(REUSED in o.message for o in outcomes), outcomes
    env.assert_ended(s, REUSED)
    env.refresh_refused(rows[-1]["refresh_token"], ENDED)


def test_pre_step_up_refresh_token_after_the_reuse_interval_is_theft(short_reuse):
    env = short_reuse
    s = env.create()
    up = step_up(env, s["access_token"])
    time.sleep(1.5)
    env.refresh_refused(s["refresh_token"], REUSED)
    env.assert_ended(s, REUSED)
    env.refresh_refused(up["refresh_token"], ENDED)
    assert is_refused(env.verdict(up["access_token"]))


# == simultaneous refreshes ===================================================================


@pytest.mark.parametrize("n", [2, 4, 8, 16])
def test_simultaneous_refreshes_of_one_token_rotate_exactly_once(env, n):
    s = env.create()
    token = s["refresh_token"]
    before = env.counter(s["session_id"])
    conns = [env.anon() for _ in range(n)]
    outcomes = run_at_once(conns, lambda conn: one(conn, REFRESH, [token]))
    assert all(o.ok for o in outcomes), outcomes
    new_tokens = {o.row["refresh_token"] for o in outcomes}
    assert len(new_tokens) == 1, new_tokens
    new = new_tokens.pop()
    assert new != token
    assert env.counter(s["session_id"]) == before + 1
    jtis = {claims_of(o.row["access_token"])["jti"] for o in outcomes}
    assert len(jtis) == n  # each caller its own access token
    for o in outcomes:
        assert o.row["session_id"] == s["session_id"]
        assert env.verdict(o.row["access_token"]) == OK
    # Never two valid refresh tokens: only the current one rotates afterwards.
    nxt = env.refresh(new)
    assert nxt["refresh_token"] not in (new, token)
    assert env.counter(s["session_id"]) == before + 2
    assert env.refresh(token)["refresh_token"] == nxt["refresh_token"]
    assert env.refresh(new)["refresh_token"] == nxt["refresh_token"]
    assert env.counter(s["session_id"]) == before + 2


@pytest.mark.parametrize("isolation", [psycopg.IsolationLevel.REPEATABLE_READ,
                                       psycopg.IsolationLevel.SERIALIZABLE],
                         ids=["repeatable-read", "serializable"])
def test_simultaneous_refreshes_under_snapshot_isolation_rotate_once_or_raise_40001(
        env, isolation):
    s = env.create()
    token = s["refresh_token"]
    before = env.counter(s["session_id"])
    conns = []
    for _ in range(4):
        conn = env.anon(autocommit=False)
        conn.isolation_level = isolation
        conns.append(conn)
    # Each takes its snapshot before the release, so every loser's snapshot predates the
    # winner's commit.
    outcomes = run_at_once(conns, in_transaction(REFRESH, [token]),
                           prepare=lambda conn: conn.execute("select 1"))
    oks = [o for o in outcomes if o.ok]
    assert oks, outcomes
    assert all(o.ok or o.sqlstate == "40001" for o in outcomes), outcomes
    assert len({o.row["refresh_token"] for o in oks}) == 1
    new = oks[0].row["refresh_token"]
    assert new != token
    assert env.counter(s["session_id"]) == before + 1
    # A retry of the losers gets the same token, rotating nothing.
    for _ in range(len(outcomes) - len(oks)):
        assert env.refresh(token)["refresh_token"] == new
    assert env.counter(s["session_id"]) == before + 1


# == sign-out racing a refresh ================================================================


def assert_not_refreshable(env, s: dict, got: list[Outcome]) -> None:
    row = env.row(s["session_id"])
    assert row["ended_at"] is not None, row
    tokens = {s["refresh_token"]} | {o.row["refresh_token"] for o in got if o.ok}
    for token in tokens:
        with raises_sqlstate("28000"):
            env.refresh(token)
    for o in got:
        if o.ok:
            assert is_refused(env.verdict(o.row["access_token"]))
    assert is_refused(env.verdict(s["access_token"]))


def test_refresh_while_a_sign_out_is_uncommitted(env):
    s = env.create()
    signer = env.user(s["access_token"])
    signer.execute("select auth.sign_out('local')")
    refresher = env.anon()
    got: list[Outcome] = []

    def refresh() -> None:
        try:
            got.append(Outcome(row=one(refresher, REFRESH, [s["refresh_token"]])))
        except psycopg.Error as error:
            got.append(Outcome(sqlstate=error.sqlstate, message=error.diag.message_primary))

    thread = threading.Thread(target=refresh, daemon=True)
    thread.start()
    time.sleep(0.5)
    signer.commit()
    thread.join(30)
    assert not thread.is_alive()
    assert got and (got[0].ok or got[0].sqlstate == "28000"), got
    assert_not_refreshable(env, s, got)


def test_sign_out_while_a_refresh_is_uncommitted(env):
    s = env.create()
    refresher = env.anon(autocommit=False)
    rotated = env.refresh(s["refresh_token"], conn=refresher)
    signed_out: list[str] = []

    def sign_out() -> None:
        try:
            signer = env.user(s["access_token"])
            signer.execute("select auth.sign_out('local')")
            signer.commit()
            signed_out.append(OK)
        except psycopg.Error as error:
            signed_out.append(f"{error.sqlstate} {error.diag.message_primary}")

    thread = threading.Thread(target=sign_out, daemon=True)
    thread.start()
    time.sleep(0.5)
    refresher.commit()
    thread.join(30)
    assert not thread.is_alive()
    assert signed_out == [OK]
    assert_not_refreshable(env, s, [Outcome(row=rotated)])


@pytest.mark.parametrize("scope", ["local", "global"])
def test_sign_out_and_refresh_released_together(env, scope):
    for _ in range(6):
        s = env.create()
        signer = env.user(s["access_token"])  # identity bound before the release
        refresher = env.anon()

        def work(conn):
            if conn is signer:
                conn.execute("select auth.sign_out(%s)", [scope])
                conn.commit()
                return {}
            return one(conn, REFRESH, [s["refresh_token"]])

        outcomes = run_at_once([signer, refresher], work)
        assert outcomes[0].ok, outcomes
        assert outcomes[1].ok or outcomes[1].sqlstate == "28000", outcomes
        assert_not_refreshable(env, s, outcomes[1:])
