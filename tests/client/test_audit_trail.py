"""The audit trail (README, "Audit trail"), against the real server, as the roles a deployment
uses: ``signin`` (a member of session_auth_issuer) signs in, ``authenticator`` as ``anon``
refreshes, ``authenticator`` switched by auth.authenticate(access token) to ``authenticated``
manages its own sessions and reads auth.my_activity(), ``key_admin`` (session_auth_admin)
manages keys, revokes, purges and reads auth.audit_events; ``postgres`` only sets things up.

* every event of the README's table is recorded with the subject, the issuer, the session, the
  address and user agent it was given (or the session's last ones) and its details, with
  ``details.by`` naming the role that acted; a theft is recorded although the thief's
  transaction rolls back, a rolled-back sign-in leaves nothing;
* no event holds a refresh token, an access token or key material;
* auth.audit_events is for admins; auth.my_activity() gives the caller their own events only
  (not another user's, not another issuer's with the same sub), newest first;
* auth.purge_audit_events() keeps pg_session_auth.audit_retention and is for admins.

Roles and helpers are test_sessions.py's. The module's cluster keeps its audit trail across
tests: every test looks only at its own (fresh) users, sessions and kids.
"""

from __future__ import annotations

import base64
import ipaddress
import datetime
import time
import uuid

import pytest
from psycopg.rows import dict_row

from client_support import b64url, b64url_decode, claims, make_key, private_pem
from conftest import APP_USER, KEY_ADMIN, raises_sqlstate
from test_sessions import (  # noqa: F401  (fixtures are found by name)
    AUTHENTICATOR,
    SIGNIN,
    _uid,
    all_rows,
    claims_of,
    env,
    one,
    roles,
    sleep_until,
    step_up,
)

REUSED = "refresh token reused"
AUDIT_COLUMNS = ["id", "at", "event", "user_id", "issuer", "session_id", "ip", "user_agent",
                 "details"]
ACTIVITY_COLUMNS = ["at", "event", "session_id", "ip", "user_agent", "details", "flagged"]
ISSUER = "https://auth.example.test/auth/v1"
OTHER_ISSUER = "https://other.example"


# -- helpers --------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def only_the_theft_rule(roles):
    """The detection rules (test_activity.py) add events of their own; here each event is
    looked at alone, with only the rule that cannot be turned off: a theft's."""
    roles.sql("update auth.activity_rules set enabled = false where rule <> 'refresh_token_reused'")


def audit(reader, where: str, params) -> list[dict]:
    """auth.audit_events rows matching `where`, oldest first, read as key_admin (`reader`: an
    Env, whose cached key_admin connection reads, or a key_admin connection)."""
    conn = reader.cached("admin") if hasattr(reader, "cached") else reader
    return all_rows(conn, f"select * from auth.audit_events where {where} order by at, id",
                    params)


def of_session(reader, session) -> list[dict]:
    sid = session["session_id"] if isinstance(session, dict) else session
    return audit(reader, "session_id = %s", [sid])


def of_user(reader, user_id: str) -> list[dict]:
    return audit(reader, "user_id = %s", [user_id])


def of_kid(reader, kid: str) -> list[dict]:
    return audit(reader, "details->>'kid' = %s", [kid])


def reset_database_setting(env, name: str) -> None:
    """Undoes env.set_database(name, …); new connections see it."""
    env.pg.sql(f"alter database postgres reset {name}")
    for conn in env._cached.values():
        conn.close()
    env._cached.clear()


def named(rows: list[dict], event: str) -> list[dict]:
    return [r for r in rows if r["event"] == event]


def the(rows: list[dict], event: str) -> dict:
    found = named(rows, event)
    assert len(found) == 1, (event, rows)
    return found[0]


def ip_text(value) -> str | None:
    return None if value is None else str(value).split("/")[0]


def assert_event(row: dict, event: str, *, user_id, session_id, issuer: str = "",
                 ip: str | None = None, user_agent: str | None = None, by: str,
                 **details) -> None:
    """`row` is `event` about that session with that address, user agent, `by` and details
    (the details named must be present with these values; others may be too). Every
    difference is reported at once."""
    expected = {"event": event, "user_id": user_id, "issuer": issuer, "session_id": session_id,
                "ip": ip, "user_agent": user_agent, "details.by": by,
                **{f"details.{name}": value for name, value in details.items()}}
    assert isinstance(row["details"], dict), row
    missing = object()
    actual = {"event": row["event"], "user_id": row["user_id"], "issuer": row["issuer"],
              "session_id": row["session_id"], "ip": ip_text(row["ip"]),
              "user_agent": row["user_agent"], "details.by": row["details"].get("by", missing),
              **{f"details.{name}": row["details"].get(name, missing) for name in details}}
    wrong = {k: (actual[k] if actual[k] is not missing else "<absent>", expected[k])
             for k in expected if actual[k] is missing or actual[k] != expected[k]}
    assert not wrong, f"(actual, expected) by field: {wrong}; row: {row}"


def events_of(rows: list[dict]) -> list[str]:
    return [r["event"] for r in rows]


def activity(conn, max_events: int | None = None) -> list[dict]:
    if max_events is None:
        return all_rows(conn, "select * from auth.my_activity()")
    return all_rows(conn, "select * from auth.my_activity(%s)", [max_events])


@pytest.fixture
def short_reuse(env):
    """refresh_reuse_interval 1 s, for the whole database (ALTER DATABASE; new connections)."""
    env.set_database("pg_session_auth.refresh_reuse_interval", "1s")
    return env


def rotated_twice(env, **named_args) -> tuple[dict, list[dict]]:
    s = env.create(**named_args)
    rows = [s]
    for _ in range(2):
        rows.append(env.refresh(rows[-1]["refresh_token"]))
    return s, rows


# == session events ===========================================================================


def test_session_created_records_subject_issuer_device_and_aal_amr_tag(env):
    env.set_database("pg_session_auth.issuer", ISSUER)
    user = _uid()
    amr = [{"method": "otp", "timestamp": int(time.time())}]
    before = time.time()
    s = env.create(user, user_agent="Firefox/130", ip="192.0.2.7", aal="aal2", amr=amr,
                   tag="laptop")
    rows = of_session(env, s)
    assert events_of(rows) == ["session_created"], rows
    row = rows[0]
    assert list(row) == AUDIT_COLUMNS
    assert_event(row, "session_created", user_id=user, session_id=s["session_id"],
                 issuer=ISSUER, ip="192.0.2.7", user_agent="Firefox/130", by=SIGNIN,
                 aal="aal2", amr=amr, tag="laptop")
    assert before - 5 <= row["at"].timestamp() <= time.time() + 5
    assert of_user(env, user) == rows


def test_session_created_with_the_defaults(env):
    """No issuer setting: issuer ''; the default amr (as the token carries it); no tag."""
    user = _uid()
    s = env.create(user)
    row = the(of_session(env, s), "session_created")
    assert_event(row, "session_created", user_id=user, session_id=s["session_id"], issuer="",
                 ip=None, user_agent=None, by=SIGNIN, aal="aal1",
                 amr=claims_of(s["access_token"])["amr"])
    assert row["details"].get("tag") is None, row


def test_a_rolled_back_sign_in_leaves_no_event(env):
    user = _uid()
    conn = env.pg.connect(SIGNIN, autocommit=False)
    s = one(conn, "select * from auth.create_session(%s, user_agent => 'Tab/1', "
                  "ip => '203.0.113.9')", [user])
    conn.rollback()
    assert of_user(env, user) == []
    assert of_session(env, s) == []
    kept = env.create(user)
    assert events_of(of_user(env, user)) == ["session_created"]
    assert of_user(env, user)[0]["session_id"] == kept["session_id"]


def test_session_refreshed_records_the_new_address_and_user_agent(env):
    user = _uid()
    s = env.create(user, user_agent="Phone/1", ip="192.0.2.10")
    r1 = env.refresh(s["refresh_token"], user_agent="Phone/2", ip="198.51.100.20")
    # A refresh given neither: the session's last ones.
    env.refresh(r1["refresh_token"])
    rows = of_session(env, s)
    assert events_of(rows) == ["session_created", "session_refreshed", "session_refreshed"]
    assert_event(rows[0], "session_created", user_id=user, session_id=s["session_id"],
                 ip="192.0.2.10", user_agent="Phone/1", by=SIGNIN)
    for row in rows[1:]:
        assert_event(row, "session_refreshed", user_id=user, session_id=s["session_id"],
                     ip="198.51.100.20", user_agent="Phone/2", by="anon")
        assert "cause" not in row["details"], row


def test_reuse_within_the_interval_is_recorded_with_its_cause(env):
    user = _uid()
    s, rows = rotated_twice(env, user_id=user, user_agent="Tab/1", ip="192.0.2.30")
    # rows[0]'s token: superseded two rotations ago, within the (default 10 s) interval.
    again = env.refresh(rows[0]["refresh_token"], user_agent="Tab/2", ip="192.0.2.31")
    assert again["refresh_token"] == rows[2]["refresh_token"]
    # The immediately previous one.
    env.refresh(rows[1]["refresh_token"], user_agent="Tab/3", ip="192.0.2.32")
    events = of_session(env, s)
    assert events_of(events) == ["session_created", "session_refreshed", "session_refreshed",
                                 "refresh_token_reused", "refresh_token_reused"], events
    assert_event(events[3], "refresh_token_reused", user_id=user, session_id=s["session_id"],
                 ip="192.0.2.31", user_agent="Tab/2", by="anon", cause="within_interval")
    assert_event(events[4], "refresh_token_reused", user_id=user, session_id=s["session_id"],
                 ip="192.0.2.32", user_agent="Tab/3", by="anon", cause="within_interval")
    assert env.row(s["session_id"])["ended_at"] is None


@pytest.mark.parametrize("how", ["autocommit", "begin … rollback"])
def test_theft_is_recorded_once_and_survives_the_callers_rollback(short_reuse, how):
    env = short_reuse
    user = _uid()
    s, rows = rotated_twice(env, user_id=user, user_agent="Owner/1", ip="192.0.2.40")
    time.sleep(1.5)  # rows[0]: superseded over the interval ago and not the previous one
    thief = env.anon(autocommit=(how == "autocommit"))
    if how != "autocommit":
        thief.execute("select 1")  # the transaction is open before the theft
    with raises_sqlstate("28000", REUSED):
        env.refresh(rows[0]["refresh_token"], conn=thief, user_agent="Thief/1",
                    ip="203.0.113.66")
    # Committed by the ending's worker already: visible while the thief's transaction is
    # still open (aborted), and after its rollback.
    before_rollback = named(of_session(env, s), "refresh_token_reused")
    if how != "autocommit":
        thief.rollback()
    events = of_session(env, s)
    assert events_of(events) == ["session_created", "session_refreshed", "session_refreshed",
                                 "refresh_token_reused", "activity_detected"], events
    theft = events[3]
    assert events[4]["details"]["rule"] == "refresh_token_reused"
    assert events[4]["details"]["action"] == "revoke"
    assert events[4]["ip"] == ipaddress.ip_address("203.0.113.66")
    assert before_rollback == [theft]
    assert theft["event"] == "refresh_token_reused"
    assert theft["user_id"] == user and theft["issuer"] == ""
    assert theft["session_id"] == s["session_id"]
    assert theft["details"].get("cause") == "theft", theft
    assert theft["details"].get("session_ended") is True, theft
    env.assert_ended(s, REUSED)


def test_theft_event_names_the_thiefs_address_user_agent_and_role(short_reuse):
    """README: the ip and user agent are what refresh_session was given, and details.by names
    the role that acted — here the thief's call, as anon."""
    env = short_reuse
    user = _uid()
    s, rows = rotated_twice(env, user_id=user, user_agent="Owner/1", ip="192.0.2.41")
    time.sleep(1.5)
    thief = env.anon(autocommit=False)
    with raises_sqlstate("28000", REUSED):
        env.refresh(rows[0]["refresh_token"], conn=thief, user_agent="Thief/1",
                    ip="203.0.113.67")
    thief.rollback()
    theft = the(of_session(env, s), "refresh_token_reused")
    assert_event(theft, "refresh_token_reused", user_id=user, session_id=s["session_id"],
                 ip="203.0.113.67", user_agent="Thief/1", by="anon", cause="theft")


def test_step_up_is_recorded_with_the_new_level(env):
    user = _uid()
    s = env.create(user, user_agent="Laptop/1", ip="192.0.2.50")
    r = env.refresh(s["refresh_token"], user_agent="Laptop/2", ip="192.0.2.51")
    # public.confirm_mfa: SECURITY DEFINER, owned by the sign-in role.
    up = step_up(env, r["access_token"], amr=[{"method": "totp", "timestamp": 1}])
    assert up["session_id"] == s["session_id"]
    events = of_session(env, s)
    assert events_of(events) == ["session_created", "session_refreshed", "session_stepped_up"]
    assert_event(events[2], "session_stepped_up", user_id=user, session_id=s["session_id"],
                 ip="192.0.2.51", user_agent="Laptop/2", by=SIGNIN, aal="aal2")


@pytest.mark.parametrize("scope", ["local", "global", "others"])
def test_sign_out_is_recorded_for_every_session_it_ended_with_its_scope(env, scope):
    a, b = _uid(), _uid()
    s1 = env.create(a, user_agent="A/1", ip="192.0.2.61")
    s2 = env.create(a, user_agent="A/2", ip="192.0.2.62")
    sb = env.create(b, user_agent="B/1", ip="192.0.2.63")
    conn = env.user(s1["access_token"])
    conn.execute("select auth.sign_out(%s)", [scope])
    conn.commit()
    ended = {"local": [s1], "global": [s1, s2], "others": [s2]}[scope]
    for s, ip, agent in ((s1, "192.0.2.61", "A/1"), (s2, "192.0.2.62", "A/2")):
        events = of_session(env, s)
        if s in ended:
            assert events_of(events) == ["session_created", "signed_out"], events
            assert_event(events[1], "signed_out", user_id=a, session_id=s["session_id"],
                         ip=ip, user_agent=agent, by="authenticated", scope=scope)
        else:
            assert events_of(events) == ["session_created"], events
    assert events_of(of_user(env, b)) == ["session_created"]
    assert of_session(env, sb)[0]["user_id"] == b


def test_revoke_session_and_revoke_user_by_an_admin(env):
    a = _uid()
    s1 = env.create(a, user_agent="A/1", ip="192.0.2.71")
    s2 = env.create(a, user_agent="A/2", ip="192.0.2.72")
    s3 = env.create(a, user_agent="A/3", ip="192.0.2.73")
    admin = env.admin()
    admin.execute("select auth.revoke_session(%s, 'lost device')", [s1["session_id"]])
    assert events_of(of_session(env, s1)) == ["session_created", "session_revoked"]
    assert_event(of_session(env, s1)[1], "session_revoked", user_id=a,
                 session_id=s1["session_id"], ip="192.0.2.71", user_agent="A/1",
                 by=KEY_ADMIN, revocation_reason="lost device")
    admin.execute("select auth.revoke_user(%s, 'compromised')", [a])
    for s, ip, agent in ((s2, "192.0.2.72", "A/2"), (s3, "192.0.2.73", "A/3")):
        events = of_session(env, s)
        assert events_of(events) == ["session_created", "session_revoked"], events
        assert_event(events[1], "session_revoked", user_id=a, session_id=s["session_id"],
                     ip=ip, user_agent=agent, by=KEY_ADMIN, revocation_reason="compromised")
    # s1 had ended already: revoke_user did not end it again.
    assert events_of(of_session(env, s1)) == ["session_created", "session_revoked"]


def test_end_session_by_the_user_and_by_an_admin(env):
    a = _uid()
    s1 = env.create(a, user_agent="A/1", ip="192.0.2.81")
    s2 = env.create(a, user_agent="A/2", ip="192.0.2.82")
    conn = env.user(s1["access_token"])
    assert conn.execute("select auth.end_session(%s)", [s2["session_id"]]).fetchone() == (True,)
    conn.commit()
    assert env.admin().execute("select auth.end_session(%s)",
                               [s1["session_id"]]).fetchone() == (True,)
    e2, e1 = of_session(env, s2), of_session(env, s1)
    assert events_of(e2) == ["session_created", "session_ended"], e2
    assert events_of(e1) == ["session_created", "session_ended"], e1
    assert_event(e2[1], "session_ended", user_id=a, session_id=s2["session_id"],
                 ip="192.0.2.82", user_agent="A/2", by="authenticated")
    assert_event(e1[1], "session_ended", user_id=a, session_id=s1["session_id"],
                 ip="192.0.2.81", user_agent="A/1", by=KEY_ADMIN)


def test_purge_sessions_records_sessions_that_expired_without_ending(env):
    a = _uid()
    not_after = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)
    expiring = env.create(a, user_agent="Kiosk/1", ip="192.0.2.91", not_after=not_after)
    r = env.refresh(expiring["refresh_token"], user_agent="Kiosk/2", ip="192.0.2.92")
    ended = env.create(a)
    active = env.create(a)
    admin = env.admin()
    assert admin.execute("select auth.end_session(%s)", [ended["session_id"]]).fetchone()[0]
    finite, epoch = env.pg.sql("select isfinite(not_after), extract(epoch from not_after)::float8 "
                               "from auth.sessions where id = %s", [expiring["session_id"]])[0]
    assert finite
    sleep_until(epoch + 0.5)
    assert env.pg.sql("select not_after < now() from auth.sessions where id = %s",
                      [expiring["session_id"]]) == [(True,)]
    with raises_sqlstate("28000", "session expired"):
        env.refresh(r["refresh_token"])
    purged = admin.execute("select auth.purge_sessions('0 seconds')").fetchone()[0]
    assert purged >= 2
    gone = env.pg.sql("select id from auth.sessions where user_id = %s", [a])
    assert gone == [(active["session_id"],)]
    events = of_session(env, expiring)
    assert events_of(events) == ["session_created", "session_refreshed", "session_expired"]
    assert_event(events[2], "session_expired", user_id=a, session_id=expiring["session_id"],
                 ip="192.0.2.92", user_agent="Kiosk/2", by=KEY_ADMIN)
    # The ended one was purged too, but it had not expired: no session_expired.
    assert events_of(of_session(env, ended)) == ["session_created", "session_ended"]
    assert events_of(of_session(env, active)) == ["session_created"]


# == key events ===============================================================================


def assert_key_event(row: dict, event: str, kid: str, by: str = KEY_ADMIN, **details) -> None:
    assert_event(row, event, user_id=None, session_id=None, issuer="", ip=None,
                 user_agent=None, by=by, kid=kid, **details)


def test_key_generated_and_imported(roles, pg):
    """The `pg` fixture empties the keyring: the first key generated is put in use."""
    admin = pg.connect(KEY_ADMIN)
    first = admin.execute("select auth.generate_key()").fetchone()[0]
    second = admin.execute("select auth.generate_key('HS256')").fetchone()[0]
    imported = admin.execute("select auth.import_signing_key(%s, 'ES384')",
                             [private_pem(make_key("ES384"))]).fetchone()[0]
    assert_key_event(the(of_kid(admin, first), "key_generated"), "key_generated", first,
                     alg="ES256", state="in_use")
    assert_key_event(the(of_kid(admin, second), "key_generated"), "key_generated", second,
                     alg="HS256", state="standby")
    assert_key_event(the(of_kid(admin, imported), "key_imported"), "key_imported", imported,
                     alg="ES384", state="standby")


def test_key_rotated_names_kid_alg_and_state(roles, pg):
    admin = pg.connect(KEY_ADMIN)
    admin.execute("select auth.generate_key()")
    standby = admin.execute("select auth.generate_key('EdDSA')").fetchone()[0]
    assert admin.execute("select auth.rotate_signing_key()").fetchone()[0] == standby
    events = of_kid(admin, standby)
    assert events_of(events) == ["key_generated", "key_rotated"], events
    assert_key_event(events[1], "key_rotated", standby, alg="EdDSA", state="in_use")


@pytest.mark.parametrize("which", ["signing key in use", "standby signing key",
                                   "verification key"])
def test_key_revoked_by_retire_key(roles, pg, which):
    admin = pg.connect(KEY_ADMIN)
    in_use = admin.execute("select auth.generate_key()").fetchone()[0]
    standby = admin.execute("select auth.generate_key('RS256')").fetchone()[0]
    verification = make_key("ES256", kid=f"verify-{uuid.uuid4().hex[:8]}")
    admin.execute("select auth.add_key(%s, 'ES256', %s)",
                  [verification.kid, verification.public_pem])
    kid, alg = {"signing key in use": (in_use, "ES256"), "standby signing key": (standby, "RS256"),
                "verification key": (verification.kid, "ES256")}[which]
    assert admin.execute("select auth.retire_key(%s)", [kid]).fetchone() == (True,)
    row = the(of_kid(admin, kid), "key_revoked")
    assert_key_event(row, "key_revoked", kid, alg=alg, state="revoked")
    # Retiring it again changes nothing and records nothing.
    assert admin.execute("select auth.retire_key(%s)", [kid]).fetchone() == (False,)
    assert len(named(of_kid(admin, kid), "key_revoked")) == 1


def test_by_names_the_role_that_acted_after_set_role(roles, pg):
    """A superuser's session that SET ROLE key_admin: key_admin acted, for every key event."""
    su = pg.connect("postgres")
    su.execute(f"set role {KEY_ADMIN}")
    kid = su.execute("select auth.generate_key()").fetchone()[0]
    assert su.execute("select auth.retire_key(%s)", [kid]).fetchone() == (True,)
    admin = pg.connect(KEY_ADMIN)
    events = of_kid(admin, kid)
    assert events_of(events) == ["key_generated", "key_revoked"], events
    assert [e["details"].get("by") for e in events] == [KEY_ADMIN, KEY_ADMIN], events


# == no secrets ===============================================================================


def forms(material: bytes) -> list[str]:
    """Ways bytes could be written into text."""
    out = [material.hex(), material.hex().upper(), base64.b64encode(material).decode(),
           b64url(material)]
    try:
        text = material.decode("utf-8")
        if len(text) >= 16:
            out.append(text)
    except UnicodeDecodeError:
        pass
    return out


def test_no_event_holds_a_token_or_key_material(short_reuse):
    env = short_reuse
    admin = env.admin()
    # Keys of every kind: generated (EC, HMAC), imported from a PEM we know, a verification
    # key with an HMAC secret; the imported one signs the sessions below.
    known = make_key("ES256")
    known_pem = private_pem(known)
    imported = admin.execute("select auth.import_signing_key(%s, 'ES256')",
                             [known_pem]).fetchone()[0]
    admin.execute("select auth.generate_key('HS512')")
    assert admin.execute("select auth.rotate_signing_key()").fetchone()[0] != imported
    hmac_key = make_key("HS256", kid=f"hs-{uuid.uuid4().hex[:8]}")
    admin.execute("select auth.add_key(%s, 'HS256', %s)", [hmac_key.kid, hmac_key.secret_text])

    tokens: list[str] = []
    user = _uid()
    s, rows = rotated_twice(env, user_id=user, user_agent="UA", ip="192.0.2.100", tag="t")
    tokens += [t for r in rows for t in (r["access_token"], r["refresh_token"])]
    tokens.append(env.refresh(rows[1]["refresh_token"])["access_token"])  # within interval
    up = step_up(env, rows[2]["access_token"])
    tokens += [up["access_token"], up["refresh_token"]]
    time.sleep(1.5)
    with raises_sqlstate("28000", REUSED):
        env.refresh(rows[0]["refresh_token"])  # theft
    s2 = env.create(user)
    tokens += [s2["access_token"], s2["refresh_token"]]
    conn = env.user(s2["access_token"])
    conn.execute("select auth.sign_out('global')")
    conn.commit()
    admin.execute("select auth.retire_key(%s)", [hmac_key.kid])
    admin.execute("select auth.retire_key(%s)", [imported])

    secrets: list[str] = []
    for token in tokens:
        secrets.append(token)
        if token.count(".") == 2:
            secrets.append(token.split(".")[2])  # the signature
        else:
            raw = b64url_decode(token)
            secrets += [raw.hex(), b64url(raw[-16:]), raw[-16:].hex()]  # the tag
    su = env.pg.connect("postgres")
    for (material,) in su.execute("select private_key from auth.signing_key_material"):
        secrets += forms(bytes(material))
    secrets += [known_pem] + [line for line in known_pem.splitlines()
                              if len(line) >= 16 and not line.startswith("-----")]
    secrets += forms(hmac_key.private)
    (key_file,) = su.execute(
        "select pg_read_binary_file('pg_session_auth/refresh_token.key')").fetchone()
    secrets += forms(bytes(key_file))

    trail = [r[0] for r in su.execute("select e::text from auth.audit_events as e")]
    assert len(trail) >= 10
    events = events_of(of_user(env, user))
    for expected in ("session_created", "session_refreshed", "refresh_token_reused",
                     "session_stepped_up", "signed_out"):
        assert expected in events, events
    assert "key_revoked" in events_of(of_kid(admin, imported))
    leaks = [(secret[:24], row) for secret in secrets for row in trail if secret in row]
    assert leaks == []


# == who reads the trail ======================================================================


def test_audit_events_is_readable_by_admins_only(env):
    s = env.create()
    rows = all_rows(env.admin(), "select * from auth.audit_events where session_id = %s",
                    [s["session_id"]])
    assert events_of(rows) == ["session_created"]
    for who in (APP_USER, "anon", "authenticated", SIGNIN, AUTHENTICATOR):
        if who == "anon":
            conn = env.anon()
        elif who == "authenticated":
            conn = env.user(s["access_token"])
        else:
            conn = env.pg.connect(who)
        with raises_sqlstate("42501"):
            conn.execute("select * from auth.audit_events limit 1")
        if not conn.autocommit:
            conn.rollback()


def test_my_activity_returns_only_the_callers_own_events_newest_first(env):
    user, other_user = _uid(), _uid()
    # Sessions of the same sub at another issuer (created while pg_session_auth.issuer named
    # it); its users authenticate with a key bound to that issuer.
    env.set_database("pg_session_auth.issuer", OTHER_ISSUER)
    elsewhere = env.create(user, user_agent="Other/1", ip="198.51.100.1")
    env.refresh(elsewhere["refresh_token"], user_agent="Other/2", ip="198.51.100.2")
    reset_database_setting(env, "pg_session_auth.issuer")

    s1 = env.create(user, user_agent="A/1", ip="192.0.2.1")
    r1 = env.refresh(s1["refresh_token"], user_agent="A/2", ip="192.0.2.2")
    s2 = env.create(user, user_agent="B/1", ip="192.0.2.3")
    env.refresh(s1["refresh_token"], user_agent="A/3", ip="192.0.2.4")  # within the interval
    conn = env.user(s2["access_token"])
    assert conn.execute("select auth.end_session(%s)", [s2["session_id"]]).fetchone() == (True,)
    conn.commit()
    env.create(other_user)

    expected = [("session_ended", s2["session_id"]), ("refresh_token_reused", s1["session_id"]),
                ("session_created", s2["session_id"]), ("session_refreshed", s1["session_id"]),
                ("session_created", s1["session_id"])]
    conn = env.user(r1["access_token"])
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("select * from auth.my_activity()")
        assert [c.name for c in cur.description] == ACTIVITY_COLUMNS
        mine = cur.fetchall()
    conn.commit()
    assert [(r["event"], r["session_id"]) for r in mine] == expected, mine
    ats = [r["at"] for r in mine]
    assert ats == sorted(ats, reverse=True)
    # The same rows as the table holds (newest first).
    table = list(reversed(audit(env, "user_id = %s and issuer = ''", [user])))
    assert [{k: r[k] for k in ACTIVITY_COLUMNS if k != "flagged"} for r in table] == \
        [{k: r[k] for k in ACTIVITY_COLUMNS if k != "flagged"} for r in mine]
    assert all(r["flagged"] == [] for r in mine)
    assert [ip_text(r["ip"]) for r in mine] == ["192.0.2.3", "192.0.2.4", "192.0.2.3",
                                                "192.0.2.2", "192.0.2.1"]
    assert mine[0]["details"].get("by") == "authenticated"

    # The other user sees only their own.
    other = env.user(env.create(other_user)["access_token"])
    theirs = activity(other)
    other.commit()
    assert {r["session_id"] for r in theirs}.isdisjoint({s1["session_id"], s2["session_id"]})
    assert [r["event"] for r in theirs] == ["session_created", "session_created"]

    # The same sub at another issuer: that issuer's events, none of the first one's.
    key = make_key("ES256", kid=f"other-{uuid.uuid4().hex[:8]}")
    env.admin().execute("select auth.add_key(%s, 'ES256', %s, %s)",
                        [key.kid, key.public_pem, OTHER_ISSUER])
    token = key.sign(claims(sub=user, iss=OTHER_ISSUER, role="authenticated"))
    conn = env.user(token)
    assert conn.execute("select auth.user_id(), current_user::text").fetchone() == (
        user, "authenticated")
    there = activity(conn)
    conn.commit()
    assert [(r["event"], r["session_id"], ip_text(r["ip"])) for r in there] == [
        ("session_refreshed", elsewhere["session_id"], "198.51.100.2"),
        ("session_created", elsewhere["session_id"], "198.51.100.1")], there
    assert of_session(env, elsewhere)[0]["issuer"] == OTHER_ISSUER


def test_my_activity_honours_max_events(env):
    s = env.create()
    current = s
    for i in range(55):
        current = env.refresh(current["refresh_token"], user_agent=f"UA/{i}")
    conn = env.user(current["access_token"])
    everything = activity(conn, 1000)
    assert len(everything) == 56
    assert everything[-1]["event"] == "session_created"
    assert everything[0]["user_agent"] == "UA/54"
    assert len(activity(conn)) == 50
    assert activity(conn) == everything[:50]
    assert activity(conn, 3) == everything[:3]
    assert activity(conn, 1) == everything[:1]
    assert activity(conn, 0) == []
    conn.commit()


@pytest.mark.parametrize("who", [APP_USER, "anon", "authenticated without a token", KEY_ADMIN,
                                 SIGNIN])
def test_my_activity_without_an_identity_is_refused(env, who):
    env.create()
    if who == "anon":
        conn = env.anon()
    elif who == "authenticated without a token":
        conn = env.pg.connect(AUTHENTICATOR)
        conn.execute("set role authenticated")
    else:
        conn = env.pg.connect(who)
    with raises_sqlstate("28000"):
        conn.execute("select * from auth.my_activity()")


# == retention ================================================================================


@pytest.mark.parametrize("who", [APP_USER, SIGNIN, "anon", "authenticated"])
def test_purge_audit_events_is_refused_to_non_admins(env, who):
    s = env.create()
    if who == "anon":
        conn = env.anon()
    elif who == "authenticated":
        conn = env.user(s["access_token"])
    else:
        conn = env.pg.connect(who)
    with raises_sqlstate("42501"):
        conn.execute("select auth.purge_audit_events()")
    if not conn.autocommit:
        conn.rollback()
    assert events_of(of_session(env, s)) == ["session_created"]


def test_purge_audit_events_keeps_the_retention(env):
    old = env.create()
    admin = env.admin()
    # The default retention (90 days) keeps a fresh event.
    assert admin.execute("select auth.purge_audit_events()").fetchone() == (0,)
    assert events_of(of_session(env, old)) == ["session_created"]
    env.set_database("pg_session_auth.audit_retention", "1s")
    old_user = old["user_id"]
    time.sleep(1.5)
    new = env.create()
    purged = env.admin().execute("select auth.purge_audit_events()").fetchone()[0]
    assert purged >= 1
    assert of_user(env, old_user) == []
    assert events_of(of_session(env, new)) == ["session_created"]
