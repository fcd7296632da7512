"""Adversarial review of the sessions work (0.4.0): each test here reproduces a defect found
in review and fails on the code it was written against; it passes once the defect is fixed.

Roles and helpers are test_sessions.py's (`env`: signin = session_auth_issuer, authenticator
= PostgREST's login role granted anon/authenticated, key_admin = session_auth_admin).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import threading
import time
import uuid

import psycopg
import pytest

from client_support import b64url, make_key, now
from conftest import Cluster, raises_sqlstate
from test_sessions import (  # noqa: F401  (fixtures are found by name)
    AUTHENTICATOR,
    OK,
    ROLE_SETUP,
    SIGNIN,
    Env,
    all_rows,
    call,
    claims_of,
    env,
    is_refused,
    one,
    roles,
    verdict,
)

REFRESH = "select * from auth.refresh_session(%s)"
REUSED = "refresh token reused"
OTHER_ISSUER = "https://idp.tenant.example"


def _uid() -> str:
    return str(uuid.uuid4())


def _rotated_twice(env) -> tuple[dict, list[dict]]:
    s = env.create()
    rows = [s]
    for _ in range(2):
        rows.append(env.refresh(rows[-1]["refresh_token"]))
    return s, rows


def _wait_until_waiting_on_a_lock(env, pid: int, timeout: float = 10) -> None:
    su = env.pg.connect()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = su.execute("select wait_event_type from pg_stat_activity where pid = %s",
                         [pid]).fetchone()
        if row and row[0] == "Lock":
            return
        time.sleep(0.05)
    raise AssertionError(f"backend {pid} never waited on a lock")


def _error_state(fn) -> str | None:
    """None when fn() ran, else the SQLSTATE it raised."""
    try:
        fn()
    except psycopg.Error as error:
        return error.sqlstate
    return None


# == theft ending fails open ==================================================================


def test_theft_ending_is_not_lost_when_the_thief_holds_the_session_row(env):
    """A thief that is ahead of the owner (holds the current token) keeps a transaction
    queued on the session row. When the owner presents its stale token, the theft verdict
    releases the row (subtransaction rollback) and the thief's queued refresh takes it before
    the ending worker does; the worker gives up after its 5 s lock_timeout, the owner gets
    28000 `refresh token reused`, but the session is NOT ended: the thief keeps refreshing."""
    env.set_database("pg_session_auth.refresh_reuse_interval", "0")
    _, rows = _rotated_twice(env)
    owners_stale = rows[0]["refresh_token"]  # two behind: theft
    thiefs = rows[2]["refresh_token"]

    holder = env.anon(autocommit=False)
    current = one(holder, REFRESH, [thiefs])["refresh_token"]  # row locked, open

    outcome: dict = {}

    def owner() -> None:
        conn = env.anon()
        outcome["owner_pid"] = conn.info.backend_pid
        try:
            one(conn, REFRESH, [owners_stale])
            outcome["owner"] = "refreshed"
        except psycopg.Error as error:
            outcome["owner"] = f"{error.sqlstate} {error.diag.message_primary}"

    queued = env.anon(autocommit=False)

    def thief_again() -> None:
        try:
            # The immediately previous token: hands back the current one, updating the row.
            one(queued, REFRESH, [thiefs])
            time.sleep(7)  # longer than the ending worker's lock_timeout (5 s)
            queued.commit()
            outcome["thief"] = "ok"
        except psycopg.Error as error:
            outcome["thief"] = f"{error.sqlstate} {error.diag.message_primary}"

    t_owner = threading.Thread(target=owner, daemon=True)
    t_owner.start()
    deadline = time.monotonic() + 10
    while "owner_pid" not in outcome and time.monotonic() < deadline:
        time.sleep(0.02)
    _wait_until_waiting_on_a_lock(env, outcome["owner_pid"])
    t_thief = threading.Thread(target=thief_again, daemon=True)
    t_thief.start()
    _wait_until_waiting_on_a_lock(env, queued.info.backend_pid)
    holder.commit()
    t_owner.join(40)
    t_thief.join(40)
    assert outcome.get("owner", "").startswith("28000") and REUSED in outcome["owner"], outcome

    # The promise: the whole session ends, whatever the caller's transaction does. (The
    # worker's log: `canceling statement due to lock timeout`, then the WARNING `the session
    # could not be ended independently of this transaction`.)
    assert _error_state(lambda: env.refresh(current)) == "28000", (
        "theft verdict raised but the thief's current refresh token still works")


# == another issuer's user acts on this database's sessions ====================================


def _other_issuer_token(env, user: str) -> str:
    key = make_key("ES256", kid="tenant-idp-1")
    env.admin().execute("select auth.add_key(%s, 'ES256', %s, %s)",
                        [key.kid, key.public_pem, OTHER_ISSUER])
    t = now()
    return key.sign({"sub": user, "iss": OTHER_ISSUER, "role": "authenticated",
                     "aud": "authenticated", "iat": t, "exp": t + 600})


def test_other_issuers_token_cannot_list_or_end_this_databases_sessions(env):
    """Keys are bound to issuers and per-user revocation is per issuer, but the device
    functions compare only `sub`: a token of another (trusted for its own users) issuer whose
    subject equals a local user's lists that user's devices (IP, user agent) and ends them."""
    user = _uid()
    local = env.create(user, user_agent="Firefox/130", ip="192.0.2.7")
    foreign = _other_issuer_token(env, user)

    conn = env.user(foreign)
    listed = all_rows(conn, "select * from auth.list_sessions()")
    conn.rollback()
    assert local["session_id"] not in [r["session_id"] for r in listed], listed

    conn = env.user(foreign)
    result: list = []
    state = _error_state(lambda: result.append(conn.execute(
        "select auth.end_session(%s)", [local["session_id"]]).fetchone()[0]))
    conn.commit() if state is None else conn.rollback()
    assert state == "42501" or result == [False], (state, result)
    assert env.row(local["session_id"])["ended_at"] is None


def test_other_issuers_global_sign_out_leaves_this_databases_sessions(env):
    """README: `a user of issuer X signing out globally does not touch the same sub at issuer
    Y`. sign_out('global') by the other issuer's token ends the local sessions anyway (and
    revokes their access tokens by session id)."""
    user = _uid()
    local = env.create(user)
    foreign = _other_issuer_token(env, user)
    conn = env.user(foreign)
    conn.execute("select auth.sign_out('global')")
    conn.commit()
    assert env.row(local["session_id"])["ended_at"] is None
    assert env.verdict(local["access_token"]) == OK
    env.refresh(local["refresh_token"])


# == a revoked identity still manages devices ==================================================


def test_revoked_identity_cannot_list_or_end_the_users_new_sessions(env):
    """The attacker's access token is revoked (admin revoke_user after a compromise); the user
    signs in again. The claim functions refuse the revoked identity (28000), but
    list_sessions() and end_session() accept it (current_claims_even_if_revoked): the
    attacker sees the new device's IP and user agent and ends the new session."""
    user = _uid()
    stolen = env.create(user)
    attacker = env.user(stolen["access_token"])  # bound before the revocation
    attacker2 = env.user(stolen["access_token"])
    control = env.user(stolen["access_token"])
    assert _error_state(lambda: control.execute("select auth.uid()").fetchone()) is None
    env.admin().execute("select auth.revoke_user(%s)", [user])
    fresh = env.create(user, user_agent="NewPhone/1.0", ip="198.51.100.9")

    # Control: the claim functions refuse the revoked identity in the same situation.
    assert _error_state(lambda: control.execute("select auth.uid()").fetchone()) == "28000"
    listed = _error_state(lambda: attacker.execute("select * from auth.list_sessions()")
                          .fetchall())
    ended = _error_state(lambda: attacker2.execute("select auth.end_session(%s)",
                                                   [fresh["session_id"]]).fetchone())
    attacker2.rollback()
    assert listed in ("28000", "42501"), "a revoked identity listed the user's devices"
    assert ended in ("28000", "42501"), "a revoked identity ended the user's new session"


# == revoke_user racing a sign-in =============================================================


def test_session_created_concurrently_with_revoke_user_does_not_survive(env):
    """revoke_user ends the sessions its UPDATE sees; a sign-in committed just after it (its
    row inserted before the cut-off) is never ended, and because a refresh does not check the
    user's cut-off it keeps issuing tokens with iat after it: the account is not locked."""
    user = _uid()
    signin = env.pg.connect(SIGNIN, autocommit=False)
    row = one(signin, *call("auth.create_session", [user], {}))
    env.admin().execute("select auth.revoke_user(%s)", [user])
    signin.commit()
    assert is_refused(env.verdict(row["access_token"]))  # iat before the cut-off
    with raises_sqlstate("28000"):
        env.refresh(row["refresh_token"])


# == the refresh token secret =================================================================

SECRET = "review-secret-" + "0123456789abcdef" * 4


def _forge(secret: bytes, session_id: uuid.UUID, counter: int) -> str:
    body = session_id.bytes + struct.pack(">Q", counter)
    tag = hmac.new(secret, b"pg_session_auth refresh token v1" + body,
                   hashlib.sha256).digest()[:16]
    return b64url(b"\x01" + body + tag)


def test_refresh_secret_is_in_no_setting_and_no_monitoring_role_reads_it(env):
    """The secret lives in a key file in the data directory, not in a setting (settings are
    shown to pg_read_all_settings, part of pg_monitor, and logged when they change): a
    monitoring login can neither see it nor read the file, so it cannot forge a token."""
    env.pg.sql("do $$ begin create role review_monitor login; exception when duplicate_object"
               " then null; end $$")
    env.pg.sql("grant pg_monitor to review_monitor")
    victim = env.create()
    assert env.refresh(victim["refresh_token"])  # the key file exists now
    monitor = env.pg.connect("review_monitor")
    names = [r[0] for r in monitor.execute(
        "select name from pg_settings where name like 'pg_session_auth.%'").fetchall()]
    assert not [n for n in names if "secret" in n], names
    with raises_sqlstate("42501"):
        monitor.execute("select pg_read_binary_file('pg_session_auth/refresh_token.key')")


# == a verification key replacing a signing key's ==============================================


def test_import_jwks_cannot_replace_the_signing_keys_verification_key(env):
    """Every token names the signing key's kid. An external issuer's JWKS (imported, as the
    README suggests, bound to that issuer) with that kid replaces the verification half of the
    key in use: every token this database issues from then on fails verification, while the
    private half keeps signing under the kid."""
    attacker = make_key("ES256", kid=env.kid)
    jwk = dict(attacker.public_jwk, kid=env.kid, alg="ES256", use="sig")
    state = _error_state(lambda: env.admin().execute(
        "select auth.import_jwks(%s::jsonb, %s)",
        [json.dumps({"keys": [jwk]}), OTHER_ISSUER]).fetchone())
    if state is not None:
        assert state == "22023", state  # refused: the kid is a signing key's
        return
    row = env.create()
    assert env.verdict(row["access_token"]) == OK


# == hostile inputs ===========================================================================


@pytest.mark.parametrize("not_after", ["infinity", "-infinity"])
def test_create_session_with_an_infinite_not_after(env, not_after):
    """`not_after => 'infinity'` overflows the microsecond arithmetic (XX000 in a debug build,
    a wrapped-around, already expired token in a release build), and such a session can never
    be refreshed (`bigint out of range` from the epoch cast). Either refuse it (22xxx) or
    treat infinity as no limit."""
    conn = env.cached("issuer")
    try:
        row = one(conn, "select * from auth.create_session(%s, not_after => %s::timestamptz)",
                  [_uid(), not_after])
    except psycopg.Error as error:
        assert error.sqlstate.startswith("22"), (error.sqlstate, str(error))
        return
    if not_after == "-infinity":
        # Already past: a refusal at refresh is right, but a clean one.
        state = _error_state(lambda: env.refresh(row["refresh_token"]))
        assert state == "28000", state
        return
    assert claims_of(row["access_token"])["exp"] > time.time(), "born expired"
    env.refresh(row["refresh_token"])
