"""Unusual-activity detection (0.5.0), against the real server, with real connections, as the
roles a deployment uses: ``signin`` (session_auth_issuer) signs in, ``authenticator`` as
``anon`` refreshes, ``authenticator`` switched by auth.authenticate() to ``authenticated``
acts as the user, ``key_admin`` (session_auth_admin) is the operator who edits
auth.activity_rules, reads auth.audit_events, auth.stats() and auth.recent_rejections() and
listens on ``pg_session_auth_activity``; ``postgres`` only sets things up (settings, the
rules' defaults before each test) and reads.

* every built-in signal — new_device, new_network (/24 and /48 networks, a changed prefix),
  session_device_changed, session_network_changed, concurrent_networks, too_many_sessions,
  failed_refreshes, use_after_sign_out, refresh_token_reused — gives its ``activity_detected``
  event and the ``flagged`` list on the session event, with each action it supports: log (no
  notification), notify (a LISTENing connection receives the JSON payload), step_up (the
  returned and the next access tokens carry ``reauth_required``, auth.update_session_aal()
  clears it), revoke (28000; the session's earlier access token is refused by another backend
  at its next statement; the event and the notification survive the caller's rollback);
* the operator's UPDATE of a rule takes effect at the next call on open connections;
  ``enabled = false`` silences a rule; the CHECK refuses unsupported actions; request roles may
  neither read nor write the rules;
* custom rules: a ``(jsonb) returns boolean`` function of key_admin's, run as ``run_as``, with
  the documented event; a wrong signature is refused;
* the client address from ``connection`` or PostgREST's ``request.headers``;
* auth.stats(), auth.reset_stats(), auth.recent_rejections(), log_rejections, track_activity;
* auth.my_activity()'s ``flagged`` column;
* normal use raises nothing.

Rules are reset to the documented defaults before each test; every test uses fresh users and
addresses, so the audit trail and the shared counters that earlier tests left do not matter.
Time windows are tested with periods of a second set by the operator.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid

import psycopg
import pytest
from psycopg.rows import dict_row

from client_support import REASONS, claims, make_key, now
from conftest import APP_USER, KEY_ADMIN, collect_notices, raises_sqlstate
from test_audit_trail import audit, events_of, ip_text, of_session, the
from test_session_concurrency import run_at_once
from test_sessions import (  # noqa: F401  (fixtures are found by name)
    AUTHENTICATOR,
    OK,
    SIGNIN,
    _uid,
    all_rows,
    claims_of,
    env,
    is_refused,
    one,
    roles,
    step_up,
    verdict,
)

CHANNEL = "pg_session_auth_activity"
DETECTED = "activity_detected"
REVOKED_REFRESH = "session revoked: unusual activity"
REFUSED_SIGN_IN = "sign-in refused: unusual activity"
REUSED = "refresh token reused"
INVALID = "invalid refresh token"
ENDED = "session ended"
UA, UA2 = "Firefox/130", "Safari/17"
HOME, HOME2, AWAY = "192.0.2.10", "192.0.2.200", "198.51.100.10"

# The documented built-in rows: rule -> (action, threshold, period).
DEFAULTS = {
    "refresh_token_reused": ("revoke", None, None),
    "new_device": ("notify", None, None),
    "new_network": ("log", None, None),
    "session_device_changed": ("step_up", None, None),
    "session_network_changed": ("log", None, None),
    "too_many_sessions": ("notify", 10, "01:00:00"),
    "failed_refreshes": ("log", 10, "00:05:00"),
    "concurrent_networks": ("step_up", None, "00:01:00"),
    "use_after_sign_out": ("notify", 3, "00:10:00"),
}
# Failures are counted per address (IPv4) and per /64 (IPv6); every other rule's networks are
# /24 and /48.
PREFIXES = {"failed_refreshes": (32, 64)}
RULE_COLUMNS = ["rule", "action", "enabled", "threshold", "period", "ipv4_prefix",
                "ipv6_prefix", "function", "run_as", "description"]
SIGN_IN_SIGNALS = ("new_device", "new_network", "too_many_sessions")
REFRESH_SIGNALS = ("session_device_changed", "session_network_changed", "concurrent_networks")
ACTIONS = ("log", "notify", "step_up", "revoke")
# No address or device: any role may LISTEN; they are read from the event it names.
PAYLOAD_KEYS = {"rule", "action", "event", "user_id", "issuer", "session_id", "at",
                "audit_event_id"}
CUSTOM_EVENT_KEYS = {"event", "user_id", "issuer", "session_id", "ip", "user_agent",
                     "previous_ip", "previous_user_agent", "aal", "signals"}
MY_ACTIVITY_COLUMNS = ["at", "event", "session_id", "ip", "user_agent", "details", "flagged"]
REQUEST_ROLES = (APP_USER, SIGNIN, AUTHENTICATOR, "anon", "authenticated")
CASTS = {"period": "::interval", "function": "::regprocedure", "run_as": "::regrole"}
OTHER_DB = "activity_other"

_networks = itertools.count(1)


def fresh_ip() -> str:
    """An address in a /24 no other test uses (failed_refreshes counts by address)."""
    n = next(_networks)
    return f"10.{(n >> 8) & 255}.{n & 255}.7"


# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed_rules(cluster):
    """auth.activity_rules as the extension installed it (read before any test changed it)."""
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres",
                         dbname="postgres", autocommit=True) as conn:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute("select rule, action, enabled, threshold, period::text as period, "
                        "ipv4_prefix, ipv6_prefix, function::text as function, "
                        "run_as::text as run_as, description from auth.activity_rules "
                        "order by rule")
            rows = cur.fetchall()
            cur.execute("select column_name from information_schema.columns "
                        "where table_schema = 'auth' and table_name = 'activity_rules' "
                        "order by ordinal_position")
            columns = [r["column_name"] for r in cur.fetchall()]
        # key_admin writes its custom rules' functions in public.
        conn.execute(f"grant create on schema public to {KEY_ADMIN}")
    return columns, rows


def restore_rules(pg) -> None:
    """The documented defaults, and no custom rule (setup, as postgres)."""
    with psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        conn.execute("delete from auth.activity_rules where rule <> all(%s)", [list(DEFAULTS)])
        for rule, (action, threshold, period) in DEFAULTS.items():
            ipv4, ipv6 = PREFIXES.get(rule, (24, 48))
            conn.execute("update auth.activity_rules set action = %s, enabled = true, "
                         "threshold = %s, period = %s::interval, ipv4_prefix = %s, "
                         "ipv6_prefix = %s where rule = %s",
                         [action, threshold, period, ipv4, ipv6, rule])


class Act:
    """The test's Env (test_sessions.py) plus the operator's and the observers' helpers."""

    def __init__(self, env):
        self.env = env
        self.pg = env.pg

    def admin(self) -> psycopg.Connection:
        return self.env.cached("admin")

    def set_rule(self, rule: str, conn=None, **values) -> None:
        """The operator's UPDATE, as key_admin."""
        sets = ", ".join(f"{name} = %s{CASTS.get(name, '')}" for name in values)
        cur = (conn or self.admin()).execute(
            f"update auth.activity_rules set {sets} where rule = %s", [*values.values(), rule])
        assert cur.rowcount == 1, rule

    def rule(self, rule: str) -> dict:
        return one(self.env.cached("su"),
                   "select rule, action, enabled, threshold, period::text as period, "
                   "ipv4_prefix, ipv6_prefix, function::text as function, "
                   "run_as::text as run_as from auth.activity_rules where rule = %s", [rule])

    def detected(self, rule: str, user_id: str | None = None, ip: str | None = None) -> list:
        """activity_detected events of `rule` for a user (or, with `ip`, for an address)."""
        if ip is not None:
            return audit(self.env, "event = %s and details->>'rule' = %s and ip = %s::inet",
                         [DETECTED, rule, ip])
        return audit(self.env, "event = %s and details->>'rule' = %s and user_id = %s",
                     [DETECTED, rule, user_id])

    def all_detected(self, user_id: str) -> list:
        return audit(self.env, "event = %s and user_id = %s", [DETECTED, user_id])

    def wait_detected(self, rule: str, count: int = 1, timeout: float = 10, **by) -> list:
        """Waits until `count` events of `rule` are visible (some are committed by a
        background worker), then returns them all."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.detected(rule, **by)
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)

    def listener(self) -> "Listener":
        return Listener(self.pg)

    def reauth_flag(self, session_id) -> bool:
        return self.env.row(session_id)["reauth_required"]


# The cluster of the current test (assert_payload reads the event a notification names).
CURRENT_CLUSTER: list = [None]


@pytest.fixture
def act(env, installed_rules):
    restore_rules(env.pg)
    CURRENT_CLUSTER[0] = env.pg
    return Act(env)


class Listener:
    """A separate connection (key_admin's dashboard) that ran LISTEN before the activity."""

    def __init__(self, pg):
        self.conn = pg.connect(KEY_ADMIN)
        self.conn.execute(f"listen {CHANNEL}")
        self.seen: list[dict] = []

    def _drain(self, timeout: float) -> None:
        for note in self.conn.notifies(timeout=timeout, stop_after=1):
            assert note.channel == CHANNEL, note
            payload = json.loads(note.payload)
            assert isinstance(payload, dict), note.payload
            self.seen.append(payload)

    def wait_for(self, match, timeout: float = 8) -> list[dict]:
        """The payloads matching `match`, once at least one arrived (or the timeout passed)."""
        deadline = time.monotonic() + timeout
        while not any(match(p) for p in self.seen):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._drain(remaining)
        return [p for p in self.seen if match(p)]

    def quiet(self, match, wait: float = 0.6) -> list[dict]:
        """Everything matching `match` that arrives within `wait` seconds (expected: none)."""
        deadline = time.monotonic() + wait
        while (remaining := deadline - time.monotonic()) > 0:
            self._drain(remaining)
        return [p for p in self.seen if match(p)]


def event_ip(payload: dict) -> str | None:
    """The address of the event a notification names (payloads carry none)."""
    rows = CURRENT_CLUSTER[0].sql("select host(ip) from auth.audit_events where id = %s",
                                  [payload.get("audit_event_id")])
    return rows[0][0] if rows else None


def about(rule: str, user_id=None, ip=None):
    if ip is not None:
        return lambda p: p.get("rule") == rule and event_ip(p) == ip_text(ip)
    return lambda p: p.get("rule") == rule and p.get("user_id") == user_id


def assert_detected(row: dict, *, rule: str, action: str, user_id, session_id, ip, user_agent,
                    issuer: str = "") -> None:
    expected = {"event": DETECTED, "user_id": user_id, "issuer": issuer,
                "session_id": session_id, "ip": ip, "user_agent": user_agent, "rule": rule,
                "action": action, "signal is an object": True}
    details = row["details"] if isinstance(row["details"], dict) else {}
    actual = {"event": row["event"], "user_id": row["user_id"], "issuer": row["issuer"],
              "session_id": row["session_id"], "ip": ip_text(row["ip"]),
              "user_agent": row["user_agent"], "rule": details.get("rule"),
              "action": details.get("action"),
              "signal is an object": isinstance(details.get("signal"), dict)}
    wrong = {k: (actual[k], expected[k]) for k in expected if actual[k] != expected[k]}
    assert not wrong, f"(actual, expected) by field: {wrong}; row: {row}"


def assert_payload(payload: dict, *, rule: str, action: str, event: str | None, user_id,
                   session_id, ip, user_agent, issuer: str = "", extra_keys=()) -> None:
    """The payload's members, and (through ``audit_event_id``, read as postgres from the
    cluster of the last Act) the address and user agent of the event it names."""
    # The documented members (test_notification_payload_members checks there are no others).
    assert PAYLOAD_KEYS | set(extra_keys) <= set(payload), payload
    expected = {"rule": rule, "action": action, "user_id": user_id, "issuer": issuer,
                "session_id": None if session_id is None else str(session_id)}
    if event is not None:
        expected["event"] = event
    actual = {k: payload[k] for k in expected}
    wrong = {k: (actual[k], expected[k]) for k in expected if actual[k] != expected[k]}
    assert not wrong, f"(actual, expected) by field: {wrong}; payload: {payload}"
    assert isinstance(payload["audit_event_id"], int), payload
    named = CURRENT_CLUSTER[0].sql(
        "select event, details ->> 'rule', host(ip), user_agent from auth.audit_events "
        "where id = %s", [payload["audit_event_id"]])
    assert len(named) == 1, payload
    got_event, got_rule, got_ip, got_agent = named[0]
    assert (got_event, got_rule) == (DETECTED, rule), named
    assert (got_ip, got_agent) == (None if ip is None else ip_text(ip), user_agent), named
    assert payload["at"], payload


def flagged(row: dict) -> list:
    """The session event's `flagged` list (absent counts as none)."""
    return sorted(row["details"].get("flagged", []))


def reauth(token: str):
    return claims_of(token).get("reauth_required")


def assert_not_flagged(token: str) -> None:
    value = reauth(token)
    assert value in (None, False), claims_of(token)


def stats(conn) -> list[tuple[str, int]]:
    return [(name, value) for name, value in conn.execute("select * from auth.stats()")]


def stats_of(conn) -> dict[str, int]:
    return dict(stats(conn))


def rejections(conn, kid: str) -> list[dict]:
    return all_rows(conn, "select * from auth.recent_rejections() where kid = %s", [kid])


def verification_key(act, kid: str | None = None):
    """An HS256 verification key added by key_admin (the `pg` fixture empties the keyring)."""
    key = make_key("HS256", kid=kid or f"act-{uuid.uuid4().hex[:10]}")
    act.admin().execute("select auth.add_key(%s, 'HS256', %s)", [key.kid, key.secret_text])
    return key


def forged(key) -> str:
    """A token naming `key` but signed with another secret: bad signature."""
    other = make_key("HS256", kid=key.kid)
    return other.sign(claims(sub=f"forger-{uuid.uuid4().hex[:6]}"))


def expired(key, sub: str, session_id: str) -> str:
    t = now()
    return key.sign(claims(sub=sub, session_id=session_id, iat=t - 7200, exp=t - 3600))


# == the rules table ==========================================================================


def test_builtin_rules_as_installed(act, installed_rules):
    columns, rows = installed_rules
    assert columns == RULE_COLUMNS
    assert {r["rule"] for r in rows} == set(DEFAULTS), rows
    for r in rows:
        action, threshold, period = DEFAULTS[r["rule"]]
        prefixes = PREFIXES.get(r["rule"], (24, 48))
        assert (r["action"], r["enabled"], r["threshold"], r["period"], r["ipv4_prefix"],
                r["ipv6_prefix"], r["function"]) == (action, True, threshold, period,
                                                    *prefixes, None), r


@pytest.mark.parametrize("who", REQUEST_ROLES)
def test_request_roles_may_neither_read_nor_write_the_rules(act, who):
    env = act.env
    s = env.create()
    statements = [
        "select * from auth.activity_rules",
        "update auth.activity_rules set action = 'log' where rule = 'new_device'",
        "insert into auth.activity_rules (rule, action) values ('mine', 'log')",
        "delete from auth.activity_rules where rule = 'new_device'",
    ]
    for statement in statements:
        if who == "anon":
            conn = env.anon()
        elif who == "authenticated":
            conn = env.user(s["access_token"])
        else:
            conn = env.pg.connect(who)
        with raises_sqlstate("42501"):
            conn.execute(statement)
        if not conn.autocommit:
            conn.rollback()
    assert act.rule("new_device")["action"] == "notify"


def test_admins_read_and_write_the_rules(act):
    admin = act.admin()
    names = {r[0] for r in admin.execute("select rule from auth.activity_rules")}
    assert names == set(DEFAULTS)
    act.set_rule("new_network", action="notify", ipv4_prefix=16)
    assert act.rule("new_network")["action"] == "notify"
    assert act.rule("new_network")["ipv4_prefix"] == 16
    # run_as: the role that last updated the row, whatever was written into it.
    assert act.rule("new_network")["run_as"] == KEY_ADMIN


@pytest.mark.parametrize("rule,action", [
    ("new_device", "block"), ("new_network", ""), ("too_many_sessions", "REVOKE"),
    ("failed_refreshes", "step_up"), ("failed_refreshes", "revoke"),
    ("use_after_sign_out", "step_up"), ("use_after_sign_out", "revoke"),
    ("refresh_token_reused", "log"), ("refresh_token_reused", "notify"),
    ("refresh_token_reused", "step_up"),
])
def test_check_refuses_actions_a_rule_does_not_support(act, rule, action):
    before = act.rule(rule)
    with raises_sqlstate("23514"):
        act.set_rule(rule, action=action)
    assert act.rule(rule) == before


def test_refresh_token_reused_cannot_be_disabled(act):
    with raises_sqlstate("23514"):
        act.set_rule("refresh_token_reused", enabled=False)
    assert act.rule("refresh_token_reused")["enabled"] is True


@pytest.mark.parametrize("rule", ["Bad", "has-dash", "9lives", "x" * 33, ""])
def test_rule_names_are_checked(act, rule):
    fn = custom_function(act, "rule_name_probe", "true")
    with raises_sqlstate("23514"):
        act.admin().execute("insert into auth.activity_rules (rule, action, function) "
                            "values (%s, 'log', %s::regprocedure)", [rule, fn])
    # The same row with a good name (32 bytes) is accepted.
    good = "probe_" + "x" * 26
    act.admin().execute("insert into auth.activity_rules (rule, action, function) "
                        "values (%s, 'log', %s::regprocedure)", [good, fn])
    assert act.rule(good)["action"] == "log"


# == sign-in signals, with each action ========================================================


def sign_in_setup(act, rule: str) -> tuple[str, dict, list]:
    """A fresh user's earlier sign-ins; returns the user, the named arguments of the sign-in
    that trips `rule`, and the rules that sign-in is flagged with."""
    env = act.env
    user = _uid()
    if rule == "new_device":
        env.create(user, user_agent=UA, ip=HOME)
        return user, {"user_agent": UA2, "ip": HOME}, [rule]
    if rule == "new_network":
        env.create(user, user_agent=UA, ip=HOME)
        return user, {"user_agent": UA, "ip": AWAY}, [rule]
    assert rule == "too_many_sessions"
    act.set_rule(rule, threshold=2)
    for _ in range(2):
        env.create(user, user_agent=UA, ip=HOME)
    return user, {"user_agent": UA, "ip": HOME}, [rule]


def set_action(act, rule: str, action: str) -> None:
    if action != DEFAULTS[rule][0]:  # otherwise: the default, as installed
        act.set_rule(rule, action=action)


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("rule", SIGN_IN_SIGNALS)
def test_sign_in_signal(act, rule, action):
    env = act.env
    set_action(act, rule, action)
    user, named, expected_flags = sign_in_setup(act, rule)
    assert act.all_detected(user) == []  # the earlier sign-ins raised nothing
    listener = act.listener()
    active = env.pg.sql("select count(*) from auth.sessions where user_id = %s "
                        "and ended_at is null", [user])[0][0]

    if action == "revoke":
        conn = env.pg.connect(SIGNIN, autocommit=False)
        with raises_sqlstate("28000", REFUSED_SIGN_IN):
            env.create(user, conn=conn, **named)
        conn.rollback()
        rows = act.wait_detected(rule, user_id=user)
        assert len(rows) == 1, rows
        notes = listener.wait_for(about(rule, user))
        assert len(notes) == 1, listener.seen
        # No session was created: neither the notification nor the event names one.
        assert_payload(notes[0], rule=rule, action=action, event="sign_in", user_id=user,
                       session_id=None, ip=named["ip"], user_agent=named["user_agent"])
        assert env.pg.sql("select count(*) from auth.sessions where user_id = %s "
                          "and ended_at is null", [user]) == [(active,)]
        assert_detected(rows[0], rule=rule, action=action, user_id=user, session_id=None,
                        ip=named["ip"], user_agent=named["user_agent"])
        return

    s = env.create(user, **named)
    rows = act.wait_detected(rule, user_id=user)
    assert len(rows) == 1, rows
    assert_detected(rows[0], rule=rule, action=action, user_id=user,
                    session_id=s["session_id"], ip=named["ip"], user_agent=named["user_agent"])
    assert flagged(the(of_session(env, s), "session_created")) == expected_flags
    if action == "log":
        assert listener.quiet(about(rule, user)) == []
    else:
        notes = listener.wait_for(about(rule, user))
        assert len(notes) == 1, listener.seen
        assert_payload(notes[0], rule=rule, action=action, event="sign_in", user_id=user,
                       session_id=s["session_id"], ip=named["ip"],
                       user_agent=named["user_agent"])
    if action == "step_up":
        assert reauth(s["access_token"]) is True, claims_of(s["access_token"])
        assert act.reauth_flag(s["session_id"]) is True
        # The next refresh (same device and network: no new signal) carries it too.
        r = env.refresh(s["refresh_token"], **named)
        assert reauth(r["access_token"]) is True, claims_of(r["access_token"])
        assert env.verdict(r["access_token"]) == OK
        # The app's MFA check clears it.
        up = step_up(env, r["access_token"])
        assert_not_flagged(up["access_token"])
        assert act.reauth_flag(s["session_id"]) is False
        assert_not_flagged(env.refresh(up["refresh_token"], **named)["access_token"])
    else:
        assert_not_flagged(s["access_token"])
        assert act.reauth_flag(s["session_id"]) is False
        assert env.verdict(s["access_token"]) == OK
        assert_not_flagged(env.refresh(s["refresh_token"], **named)["access_token"])


# == refresh signals, with each action ========================================================


def refresh_setup(act, rule: str) -> tuple[dict, dict, list]:
    """A fresh session; returns it, the named arguments of the refresh that trips `rule`, and
    the rules that refresh is flagged with."""
    env = act.env
    s = env.create(_uid(), user_agent=UA, ip=HOME)
    if rule == "session_device_changed":
        return s, {"user_agent": "Firefox/131", "ip": HOME}, [rule]
    if rule == "session_network_changed":
        act.set_rule("concurrent_networks", enabled=False)  # this refresh follows at once
        return s, {"user_agent": UA, "ip": AWAY}, [rule]
    assert rule == "concurrent_networks"
    return s, {"user_agent": UA, "ip": AWAY}, sorted([rule, "session_network_changed"])


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("rule", REFRESH_SIGNALS)
def test_refresh_signal(act, rule, action):
    env = act.env
    set_action(act, rule, action)
    s, named, expected_flags = refresh_setup(act, rule)
    user, sid = s["user_id"], s["session_id"]
    watcher = env.pg.connect(AUTHENTICATOR)
    assert verdict(watcher, s["access_token"]) == OK
    listener = act.listener()

    if action == "revoke":
        conn = env.anon(autocommit=False)
        with raises_sqlstate("28000", REVOKED_REFRESH):
            env.refresh(s["refresh_token"], conn=conn, **named)
        conn.rollback()
        rows = act.wait_detected(rule, user_id=user)
        assert len(rows) == 1, rows
        assert_detected(rows[0], rule=rule, action=action, user_id=user, session_id=sid,
                        ip=named["ip"], user_agent=named["user_agent"])
        notes = listener.wait_for(about(rule, user))
        assert len(notes) == 1, listener.seen
        assert_payload(notes[0], rule=rule, action=action, event="refresh", user_id=user,
                       session_id=sid, ip=named["ip"], user_agent=named["user_agent"])
        # Ended for good, and for every backend from its next statement.
        assert is_refused(verdict(watcher, s["access_token"]))
        assert is_refused(verdict(env.pg.connect(AUTHENTICATOR), s["access_token"]))
        assert env.row(sid)["ended_at"] is not None
        env.refresh_refused(s["refresh_token"], ENDED)
        assert "session_refreshed" not in events_of(of_session(env, sid))
        return

    r = env.refresh(s["refresh_token"], **named)
    rows = act.wait_detected(rule, user_id=user)
    assert len(rows) == 1, rows
    assert_detected(rows[0], rule=rule, action=action, user_id=user, session_id=sid,
                    ip=named["ip"], user_agent=named["user_agent"])
    assert flagged(the(of_session(env, sid), "session_refreshed")) == expected_flags
    if action == "log":
        assert listener.quiet(about(rule, user)) == []
    else:
        notes = listener.wait_for(about(rule, user))
        assert len(notes) == 1, listener.seen
        assert_payload(notes[0], rule=rule, action=action, event="refresh", user_id=user,
                       session_id=sid, ip=named["ip"], user_agent=named["user_agent"])
    assert verdict(watcher, s["access_token"]) == OK  # nothing revoked
    if action == "step_up":
        assert reauth(r["access_token"]) is True, claims_of(r["access_token"])
        assert act.reauth_flag(sid) is True
        r2 = env.refresh(r["refresh_token"], **named)  # the same device and network again
        assert reauth(r2["access_token"]) is True, claims_of(r2["access_token"])
        assert len(act.detected(rule, user_id=user)) == 1
        up = step_up(env, r2["access_token"])
        assert_not_flagged(up["access_token"])
        assert act.reauth_flag(sid) is False
        assert_not_flagged(env.refresh(up["refresh_token"], **named)["access_token"])
    else:
        assert_not_flagged(r["access_token"])
        assert act.reauth_flag(sid) is False


def test_revoke_in_a_transaction_that_already_rotated_the_session(act):
    """The caller's transaction holds the session row (it refreshed first): the revocation,
    written in a transaction of its own, must still take effect — no hang — and persist after
    the rollback."""
    env = act.env
    act.set_rule("session_device_changed", action="revoke")
    s = env.create(_uid(), user_agent=UA, ip=HOME)
    watcher = env.pg.connect(AUTHENTICATOR)
    assert verdict(watcher, s["access_token"]) == OK
    conn = env.anon(autocommit=False)
    r = env.refresh(s["refresh_token"], conn=conn, user_agent=UA, ip=HOME)
    started = time.monotonic()
    with raises_sqlstate("28000", REVOKED_REFRESH):
        env.refresh(r["refresh_token"], conn=conn, user_agent="Firefox/131", ip=HOME)
    assert time.monotonic() - started < 10
    assert is_refused(verdict(watcher, s["access_token"]))
    conn.rollback()
    assert is_refused(verdict(watcher, s["access_token"]))
    deadline = time.monotonic() + 10
    while env.row(s["session_id"])["ended_at"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert env.row(s["session_id"])["ended_at"] is not None
    env.refresh_refused(s["refresh_token"], ENDED)
    assert len(act.wait_detected("session_device_changed", user_id=s["user_id"])) == 1


# == the built-in signals' conditions =========================================================


def sign_ins(act, user: str, *attempts) -> list[list]:
    """Signs `user` in with each (user_agent, ip); returns each session_created's flags."""
    out = []
    for agent, ip in attempts:
        s = act.env.create(user, user_agent=agent, ip=ip)
        out.append(flagged(the(of_session(act.env, s), "session_created")))
    return out


def test_first_sign_in_knows_nothing_yet(act):
    user = _uid()
    assert sign_ins(act, user, (UA, HOME)) == [[]]
    assert act.all_detected(user) == []


def test_new_device_only_for_a_user_agent_never_seen_for_the_user(act):
    user = _uid()
    assert sign_ins(act, user, (UA, HOME), (UA, HOME), (UA2, HOME), (UA2, HOME), (UA, HOME),
                    (None, HOME), ("Edge/1", HOME)) == [
        [], [], ["new_device"], [], [], [], ["new_device"]]
    # Another user's devices are not this user's.
    other = _uid()
    assert sign_ins(act, other, ("Edge/1", HOME), (UA2, HOME)) == [[], ["new_device"]]
    assert [r["user_agent"] for r in act.detected("new_device", user_id=user)] == [UA2, "Edge/1"]


def test_sign_in_history_is_per_issuer(act):
    """The same sub at another issuer is another user: its first sign-in there knows nothing
    yet, and its sessions there do not count towards too_many_sessions here."""
    env = act.env
    act.set_rule("too_many_sessions", threshold=2)
    user = _uid()
    env.set_database("pg_session_auth.issuer", "https://a.example")
    assert sign_ins(act, user, (UA, HOME), (UA, HOME)) == [[], []]
    env.set_database("pg_session_auth.issuer", "https://b.example")
    assert sign_ins(act, user, (UA2, AWAY), (UA2, AWAY)) == [[], []]
    assert sign_ins(act, user, (UA2, AWAY)) == [["too_many_sessions"]]
    rows = act.detected("too_many_sessions", user_id=user)
    assert [r["issuer"] for r in rows] == ["https://b.example"], rows


def test_new_network_groups_ipv4_by_24(act):
    user = _uid()
    assert sign_ins(act, user, (UA, "192.0.2.10"), (UA, "192.0.2.200"), (UA, "192.0.3.10"),
                    (UA, "192.0.3.99"), (UA, None), (UA, "192.0.2.1")) == [
        [], [], ["new_network"], [], [], []]


def test_new_network_groups_ipv6_by_48(act):
    user = _uid()
    assert sign_ins(act, user, (UA, "2001:db8:1:1::1"), (UA, "2001:db8:1:ffff::2"),
                    (UA, "2001:db8:2::1"), (UA, "2001:db8:2:abcd::9")) == [
        [], [], ["new_network"], []]
    rows = act.detected("new_network", user_id=user)
    assert [ip_text(r["ip"]) for r in rows] == ["2001:db8:2::1"]


def test_new_network_with_a_changed_prefix(act):
    user = _uid()
    act.set_rule("new_network", ipv4_prefix=16, ipv6_prefix=64)
    assert sign_ins(act, user, (UA, "192.0.2.10"), (UA, "192.0.99.1"), (UA, "192.1.0.1"),
                    (UA, "2001:db8:1:1::1"), (UA, "2001:db8:1:1:ffff::1"),
                    (UA, "2001:db8:1:2::1")) == [
        [], [], ["new_network"], ["new_network"], [], ["new_network"]]
    # Networks are remembered under the prefixes in force when seen: after a change, the first
    # sign-in from each network counts as new once (README).
    act.set_rule("new_network", ipv4_prefix=32)
    assert sign_ins(act, user, (UA, "192.0.2.10"), (UA, "192.0.2.10"), (UA, "192.0.2.11")) == [
        ["new_network"], [], ["new_network"]]


def last_refreshed(act, s) -> dict:
    """The session's latest session_refreshed event."""
    rows = [r for r in of_session(act.env, s) if r["event"] == "session_refreshed"]
    assert rows, of_session(act.env, s)
    return rows[-1]


def refreshes(act, s: dict, *attempts) -> list[list]:
    """Refreshes session `s` (in turn) with each (user_agent, ip); returns each
    session_refreshed's flags."""
    out, token = [], s["refresh_token"]
    for i, (agent, ip) in enumerate(attempts):
        r = act.env.refresh(token, user_agent=agent, ip=ip)
        token = r["refresh_token"]
        assert len([e for e in of_session(act.env, s)
                    if e["event"] == "session_refreshed"]) == i + 1
        out.append(flagged(last_refreshed(act, s)))
    return out


def test_session_device_changed_compares_with_the_sessions_last_user_agent(act):
    act.set_rule("session_device_changed", action="log")
    s = act.env.create(_uid(), user_agent=UA, ip=HOME)
    assert refreshes(act, s, (UA, HOME), ("Firefox/131", HOME), ("Firefox/131", HOME),
                     (None, HOME), ("Firefox/131", HOME), (UA, HOME)) == [
        [], ["session_device_changed"], [], [], [], ["session_device_changed"]]


def test_session_network_changed_by_network_and_its_prefixes(act):
    act.set_rule("concurrent_networks", enabled=False)
    s = act.env.create(_uid(), user_agent=UA, ip="192.0.2.10")
    assert refreshes(act, s, (UA, "192.0.2.99"), (UA, "198.51.100.1"), (UA, None),
                     (UA, "198.51.100.2"), (UA, "2001:db8:1::1"), (UA, "2001:db8:1:ff::1"),
                     (UA, "2001:db8:2::1")) == [
        [], ["session_network_changed"], [], [], ["session_network_changed"], [],
        ["session_network_changed"]]
    act.set_rule("session_network_changed", ipv4_prefix=32)
    s = act.env.create(_uid(), user_agent=UA, ip="192.0.2.10")
    assert refreshes(act, s, (UA, "192.0.2.10"), (UA, "192.0.2.11")) == [
        [], ["session_network_changed"]]


def test_concurrent_networks_only_within_its_period(act):
    env = act.env
    act.set_rule("concurrent_networks", period="1 second", action="log")
    s = env.create(_uid(), user_agent=UA, ip=HOME)
    time.sleep(1.3)  # the sign-in is over the period ago
    r1 = env.refresh(s["refresh_token"], user_agent=UA, ip=AWAY)
    assert flagged(last_refreshed(act, s)) == ["session_network_changed"]
    # Straight back: the previous refresh was less than the period ago.
    env.refresh(r1["refresh_token"], user_agent=UA, ip=HOME)
    assert flagged(last_refreshed(act, s)) == sorted(["concurrent_networks",
                                                      "session_network_changed"])
    rows = act.detected("concurrent_networks", user_id=s["user_id"])
    assert [(ip_text(x["ip"]), x["details"]["action"]) for x in rows] == [(HOME, "log")]


def test_too_many_sessions_with_the_default_threshold(act):
    user = _uid()
    flags = sign_ins(act, user, *[(UA, HOME)] * 11)
    assert flags == [[]] * 10 + [["too_many_sessions"]]
    rows = act.detected("too_many_sessions", user_id=user)
    assert len(rows) == 1 and rows[0]["details"]["action"] == "notify", rows


def test_too_many_sessions_counts_within_its_period(act):
    act.set_rule("too_many_sessions", threshold=1, period="1 second")
    user = _uid()
    assert sign_ins(act, user, (UA, HOME), (UA, HOME)) == [[], ["too_many_sessions"]]
    time.sleep(1.3)
    assert sign_ins(act, user, (UA, HOME)) == [[]]
    # Another user's sessions do not count.
    assert sign_ins(act, _uid(), (UA, HOME)) == [[]]


# == failure signals ==========================================================================


def refuse_from(act, ip: str, count: int) -> None:
    """`count` refresh refusals (`invalid refresh token`) from `ip` as PostgREST behind a
    trusted proxy reports it (``request.headers``, with client_ip_source = header for the
    authenticator), each on its own connection (a pool's connections: counted across
    backends). The ``ip`` argument, which the caller chooses, is another address each time:
    failures are never counted by it."""
    act.pg.sql(f"alter role {AUTHENTICATOR} set pg_session_auth.client_ip_source = 'header'")
    try:
        for i in range(count):
            conn = act.env.anon()
            conn.execute("select set_config('request.headers', %s, false)",
                         [json.dumps({"x-forwarded-for": f"203.0.113.250, {ip}"})])
            with raises_sqlstate("28000", INVALID):
                act.env.refresh(f"not-a-refresh-token-{i}", conn=conn, user_agent="Bot/1",
                                ip=fresh_ip())
    finally:
        act.pg.sql(f"alter role {AUTHENTICATOR} reset pg_session_auth.client_ip_source")


@pytest.mark.parametrize("action", ["log", "notify"])
def test_failed_refreshes_from_one_address(act, action):
    set_action(act, "failed_refreshes", action)
    act.set_rule("failed_refreshes", threshold=3)
    ip = fresh_ip()
    listener = act.listener()
    refuse_from(act, ip, 2)
    time.sleep(0.5)
    assert act.detected("failed_refreshes", ip=ip) == []
    refuse_from(act, ip, 1)
    rows = act.wait_detected("failed_refreshes", ip=ip)
    assert len(rows) == 1, rows
    assert_detected(rows[0], rule="failed_refreshes", action=action, user_id=None,
                    session_id=None, ip=ip, user_agent=rows[0]["user_agent"])
    # Once per period: more refusals add no event.
    refuse_from(act, ip, 3)
    time.sleep(1)
    assert len(act.detected("failed_refreshes", ip=ip)) == 1
    # Another address has its own count.
    other = fresh_ip()
    refuse_from(act, other, 2)
    time.sleep(0.5)
    assert act.detected("failed_refreshes", ip=other) == []
    if action == "log":
        assert listener.quiet(about("failed_refreshes", ip=ip)) == []
    else:
        notes = listener.wait_for(about("failed_refreshes", ip=ip))
        assert len(notes) == 1, listener.seen
        assert_payload(notes[0], rule="failed_refreshes", action="notify", event=None,
                       user_id=None, session_id=None, ip=ip,
                       user_agent=None)
        signal = act.pg.sql("select details -> 'signal' from auth.audit_events where id = %s",
                            [notes[0]["audit_event_id"]])[0][0]
        assert signal["count"] == 3, signal
        assert listener.quiet(about("failed_refreshes", ip=ip), wait=0.3) == notes


def test_failed_refreshes_with_the_default_threshold_and_a_short_period(act):
    ip = fresh_ip()
    refuse_from(act, ip, 9)
    time.sleep(0.5)
    assert act.detected("failed_refreshes", ip=ip) == []
    refuse_from(act, ip, 1)
    rows = act.wait_detected("failed_refreshes", ip=ip)
    assert [r["details"]["action"] for r in rows] == ["log"], rows
    # A period of a second: the next window fires again once it reaches the threshold.
    act.set_rule("failed_refreshes", threshold=2, period="1 second")
    time.sleep(1.3)
    refuse_from(act, ip, 2)
    rows = act.wait_detected("failed_refreshes", count=2, ip=ip)
    assert len(rows) == 2, rows


def sign_out_everywhere(act, user: str) -> list[dict]:
    env = act.env
    sessions = [env.create(user, user_agent=UA, ip=HOME) for _ in range(2)]
    conn = env.user(sessions[0]["access_token"])
    conn.execute("select auth.sign_out('global')")
    conn.commit()
    return sessions


@pytest.mark.parametrize("action", ["log", "notify"])
def test_use_after_sign_out(act, action):
    set_action(act, "use_after_sign_out", action)
    user = _uid()
    s1, s2 = sign_out_everywhere(act, user)
    listener = act.listener()
    a, b = act.env.pg.connect(AUTHENTICATOR), act.env.pg.connect(AUTHENTICATOR)
    # Tokens of one subject, on two backends: counted together.
    assert is_refused(verdict(a, s1["access_token"]))
    assert is_refused(verdict(b, s2["access_token"]))
    time.sleep(0.5)
    assert act.detected("use_after_sign_out", user_id=user) == []
    assert is_refused(verdict(a, s2["access_token"]))
    rows = act.wait_detected("use_after_sign_out", user_id=user)
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["session_id"] in (None, s1["session_id"], s2["session_id"]), row
    assert_detected(row, rule="use_after_sign_out", action=action, user_id=user,
                    session_id=row["session_id"], ip=ip_text(row["ip"]),
                    user_agent=row["user_agent"])
    # Once per period.
    for _ in range(3):
        assert is_refused(verdict(b, s1["access_token"]))
    time.sleep(1)
    assert len(act.detected("use_after_sign_out", user_id=user)) == 1
    if action == "log":
        assert listener.quiet(about("use_after_sign_out", user)) == []
    else:
        notes = listener.wait_for(about("use_after_sign_out", user))
        assert len(notes) == 1, listener.seen
        assert notes[0].get("session_id") in (None, str(s1["session_id"]),
                                              str(s2["session_id"])), notes[0]
        assert_payload(notes[0], rule="use_after_sign_out", action="notify", event=None,
                       user_id=user, session_id=notes[0]["session_id"],
                       # A rejected token is recorded with the request's address.
                       ip="127.0.0.1", user_agent=None)


def test_use_after_sign_out_counts_within_its_period_and_per_subject(act):
    act.set_rule("use_after_sign_out", threshold=2, period="1 second")
    user, other = _uid(), _uid()
    (s1, _), (o1, _) = sign_out_everywhere(act, user), sign_out_everywhere(act, other)
    conn = act.env.pg.connect(AUTHENTICATOR)
    assert is_refused(verdict(conn, s1["access_token"]))
    assert is_refused(verdict(conn, o1["access_token"]))
    time.sleep(1.3)
    assert is_refused(verdict(conn, s1["access_token"]))
    time.sleep(0.5)
    assert act.detected("use_after_sign_out", user_id=user) == []
    assert is_refused(verdict(conn, s1["access_token"]))
    assert len(act.wait_detected("use_after_sign_out", user_id=user)) == 1
    assert act.detected("use_after_sign_out", user_id=other) == []


def test_refresh_token_reused_revokes_and_survives_the_thiefs_rollback(act):
    env = act.env
    env.set_database("pg_session_auth.refresh_reuse_interval", "1s")
    user = _uid()
    s = env.create(user, user_agent=UA, ip=HOME)
    rows = [s]
    for _ in range(2):
        rows.append(env.refresh(rows[-1]["refresh_token"], user_agent=UA, ip=HOME))
    watcher = env.pg.connect(AUTHENTICATOR)
    assert verdict(watcher, rows[2]["access_token"]) == OK
    listener = act.listener()
    time.sleep(1.5)
    thief = env.anon(autocommit=False)
    thief.execute("select 1")
    with raises_sqlstate("28000", REUSED):
        env.refresh(rows[0]["refresh_token"], conn=thief, user_agent="Thief/1",
                    ip="203.0.113.66")
    thief.rollback()
    found = act.wait_detected("refresh_token_reused", user_id=user)
    assert len(found) == 1, found
    assert_detected(found[0], rule="refresh_token_reused", action="revoke", user_id=user,
                    session_id=s["session_id"], ip="203.0.113.66", user_agent="Thief/1")
    notes = listener.wait_for(about("refresh_token_reused", user))
    assert len(notes) == 1, listener.seen
    assert_payload(notes[0], rule="refresh_token_reused", action="revoke", event="refresh",
                   user_id=user, session_id=s["session_id"], ip="203.0.113.66",
                   user_agent="Thief/1")
    for row in rows:
        assert is_refused(verdict(watcher, row["access_token"]))
    env.refresh_refused(rows[2]["refresh_token"], ENDED)
    env.assert_ended(s, REUSED)


def test_notification_payload_members(act):
    """Exactly the documented members; a failure rule's signal holds its count."""
    act.set_rule("failed_refreshes", action="notify", threshold=1)
    listener = act.listener()
    user = _uid()
    act.env.create(user, user_agent=UA, ip=HOME)
    act.env.create(user, user_agent=UA2, ip=HOME)
    ip = fresh_ip()
    refuse_from(act, ip, 1)
    device = listener.wait_for(about("new_device", user))
    failed = listener.wait_for(about("failed_refreshes", ip=ip))
    assert len(device) == 1 and len(failed) == 1, listener.seen
    assert sorted(device[0]) == sorted(PAYLOAD_KEYS), device[0]
    assert sorted(failed[0]) == sorted(PAYLOAD_KEYS), failed[0]
    # The address and device are in the event the payload names, not in the payload.
    assert UA2 not in json.dumps(device[0]) and ip not in json.dumps(failed[0])
    signal = act.pg.sql("select details -> 'signal' from auth.audit_events where id = %s",
                        [failed[0]["audit_event_id"]])[0][0]
    assert signal["count"] == 1 and signal["threshold"] == 1, signal


def test_notify_is_delivered_at_commit_and_not_after_a_rollback(act):
    env = act.env
    listener = act.listener()
    user = _uid()
    env.create(user, user_agent=UA, ip=HOME)
    conn = env.pg.connect(SIGNIN, autocommit=False)
    s = env.create(user, conn=conn, user_agent=UA2, ip=HOME)
    assert listener.quiet(about("new_device", user), wait=0.4) == []
    conn.commit()
    notes = listener.wait_for(about("new_device", user))
    assert [n["session_id"] for n in notes] == [str(s["session_id"])], listener.seen
    # A sign-in that notifies, rolled back: no notification, no event.
    env.create(user, conn=conn, user_agent="Edge/1", ip=HOME)
    conn.rollback()
    assert listener.quiet(lambda p: p.get("user_agent") == "Edge/1", wait=0.6) == []
    assert [r["user_agent"] for r in act.detected("new_device", user_id=user)] == [UA2]


# == the operator =============================================================================


def test_an_update_takes_effect_at_the_next_call_on_open_connections(act):
    env = act.env
    user = _uid()
    issuer, anon = env.issuer(), env.anon()
    operator = env.pg.connect(KEY_ADMIN)
    s = env.create(user, conn=issuer, user_agent=UA, ip=HOME)
    r = env.refresh(s["refresh_token"], conn=anon, user_agent=UA, ip=HOME)

    act.set_rule("new_device", conn=operator, action="revoke")
    with raises_sqlstate("28000", REFUSED_SIGN_IN):
        env.create(user, conn=issuer, user_agent=UA2, ip=HOME)
    act.set_rule("new_device", conn=operator, action="log")
    logged = env.create(user, conn=issuer, user_agent="Edge/1", ip=HOME)
    # (The refused sign-in's event is written by a worker: its `at` may come later.)
    assert sorted(x["details"]["action"] for x in act.detected("new_device", user_id=user)) == [
        "log", "revoke"]
    assert_not_flagged(logged["access_token"])

    act.set_rule("session_device_changed", conn=operator, action="revoke")
    with raises_sqlstate("28000", REVOKED_REFRESH):
        env.refresh(r["refresh_token"], conn=anon, user_agent="Firefox/131", ip=HOME)
    assert is_refused(env.verdict(r["access_token"]))

    act.set_rule("too_many_sessions", conn=operator, threshold=1, action="log")
    other = _uid()
    env.create(other, conn=issuer, user_agent=UA, ip=HOME)
    second = env.create(other, conn=issuer, user_agent=UA, ip=HOME)
    assert flagged(the(of_session(env, second), "session_created")) == ["too_many_sessions"]


def test_disabling_silences_a_rule_and_enabling_brings_it_back(act):
    env = act.env
    user = _uid()
    issuer = env.issuer()
    env.create(user, conn=issuer, user_agent=UA, ip=HOME)
    listener = act.listener()
    act.set_rule("new_device", enabled=False)
    quiet = env.create(user, conn=issuer, user_agent=UA2, ip=HOME)
    assert flagged(the(of_session(env, quiet), "session_created")) == []
    assert act.detected("new_device", user_id=user) == []
    assert listener.quiet(about("new_device", user)) == []
    act.set_rule("new_device", enabled=True)
    loud = env.create(user, conn=issuer, user_agent="Edge/1", ip=HOME)
    assert flagged(the(of_session(env, loud), "session_created")) == ["new_device"]
    assert len(listener.wait_for(about("new_device", user))) == 1
    # A disabled refresh rule too.
    act.set_rule("session_device_changed", enabled=False)
    r = env.refresh(loud["refresh_token"], user_agent="Edge/2", ip=HOME)
    assert_not_flagged(r["access_token"])
    assert act.detected("session_device_changed", user_id=user) == []


# == custom rules =============================================================================


def custom_function(act, name: str, condition: str) -> str:
    """key_admin's `public.<name>(event jsonb) returns boolean`: raises a NOTICE with the
    event it got (the caller's connection sees it) and returns `condition`; EXECUTE is not
    granted to anybody else (the rule runs it as its run_as)."""
    admin = act.admin()
    admin.execute(f"""
        create or replace function public.{name}(event jsonb) returns boolean
        language plpgsql as $$
        begin
            raise notice 'custom rule event: %', event::text;
            return {condition};
        end
        $$""")
    admin.execute(f"revoke execute on function public.{name}(jsonb) from public")
    return f"public.{name}(jsonb)"


def custom_events(notices) -> list[dict]:
    prefix = "custom rule event: "
    return [json.loads(n.message_primary[len(prefix):]) for n in notices
            if (n.message_primary or "").startswith(prefix)]


def add_custom_rule(act, rule: str, action: str, function: str, **extra) -> None:
    columns = ["rule", "action", "function", *extra]
    values = ["%s", "%s", "%s::regprocedure", *(f"%s{CASTS.get(k, '')}" for k in extra)]
    act.admin().execute(f"insert into auth.activity_rules ({', '.join(columns)}) "
                        f"values ({', '.join(values)})", [rule, action, function, *extra.values()])


def test_custom_rule_at_sign_in_fires_with_its_action_and_gets_the_event(act):
    env = act.env
    fn = custom_function(act, "suspicious_agent",
                         "coalesce(event->>'user_agent' like 'Suspicious/%', false)")
    add_custom_rule(act, "suspicious_agent", "notify", fn, run_as="postgres",
                    description="an agent we distrust")
    # run_as is set to the role that inserted the row, whatever was written into it.
    assert act.rule("suspicious_agent")["run_as"] == KEY_ADMIN
    user = _uid()
    issuer = env.issuer()
    notices = collect_notices(issuer)
    listener = act.listener()
    first = env.create(user, conn=issuer, user_agent=UA, ip=HOME)
    assert flagged(the(of_session(env, first), "session_created")) == []
    s = env.create(user, conn=issuer, user_agent="Suspicious/1", ip=HOME)
    events = custom_events(notices)
    assert len(events) == 2, notices
    for event, session, agent, signals in ((events[0], first, UA, []),
                                           (events[1], s, "Suspicious/1", ["new_device"])):
        assert set(event) == CUSTOM_EVENT_KEYS, event
        assert (event["event"], event["user_id"], event["issuer"], event["session_id"],
                ip_text(event["ip"]), event["user_agent"], event["aal"],
                sorted(event["signals"])) == ("sign_in", user, "", str(session["session_id"]),
                                              HOME, agent, "aal1", signals), event
    rows = act.wait_detected("suspicious_agent", user_id=user)
    assert len(rows) == 1, rows
    assert_detected(rows[0], rule="suspicious_agent", action="notify", user_id=user,
                    session_id=s["session_id"], ip=HOME, user_agent="Suspicious/1")
    assert flagged(the(of_session(env, s), "session_created")) == sorted(
        ["new_device", "suspicious_agent"])
    notes = listener.wait_for(about("suspicious_agent", user))
    assert len(notes) == 1, listener.seen
    assert_payload(notes[0], rule="suspicious_agent", action="notify", event="sign_in",
                   user_id=user, session_id=s["session_id"], ip=HOME,
                   user_agent="Suspicious/1")


@pytest.mark.parametrize("action", ["log", "step_up", "revoke"])
def test_custom_rule_at_refresh_runs_as_its_owner_with_previous_values(act, action):
    env = act.env
    act.set_rule("session_device_changed", action="log")
    act.set_rule("concurrent_networks", enabled=False)
    fn = custom_function(act, "agent_switch",
                         "coalesce(event->>'previous_user_agent' <> event->>'user_agent', "
                         "false)")
    add_custom_rule(act, "agent_switch", action, fn)
    s = env.create(_uid(), user_agent=UA, ip=HOME)
    user, sid = s["user_id"], s["session_id"]
    # anon refreshes, though it may not EXECUTE the function: the rule runs as key_admin.
    conn = env.anon(autocommit=False)
    notices = collect_notices(conn)
    if action == "revoke":
        with raises_sqlstate("28000", REVOKED_REFRESH):
            env.refresh(s["refresh_token"], conn=conn, user_agent="Firefox/131", ip=AWAY)
        conn.rollback()
    else:
        r = env.refresh(s["refresh_token"], conn=conn, user_agent="Firefox/131", ip=AWAY)
        conn.commit()
    events = custom_events(notices)
    assert len(events) == 1, notices
    event = events[0]
    assert set(event) == CUSTOM_EVENT_KEYS, event
    assert (event["event"], event["user_id"], event["issuer"], event["session_id"],
            ip_text(event["ip"]), event["user_agent"], ip_text(event["previous_ip"]),
            event["previous_user_agent"], event["aal"]) == (
        "refresh", user, "", str(sid), AWAY, "Firefox/131", HOME, UA, "aal1"), event
    assert sorted(event["signals"]) == sorted(
        ["session_device_changed", "session_network_changed"]), event
    rows = act.wait_detected("agent_switch", user_id=user)
    assert len(rows) == 1, rows
    assert_detected(rows[0], rule="agent_switch", action=action, user_id=user, session_id=sid,
                    ip=AWAY, user_agent="Firefox/131")
    if action == "revoke":
        assert env.row(sid)["ended_at"] is not None
        assert is_refused(env.verdict(s["access_token"]))
        return
    assert flagged(last_refreshed(act, s)) == sorted(
        ["agent_switch", "session_device_changed", "session_network_changed"])
    if action == "step_up":
        assert reauth(r["access_token"]) is True, claims_of(r["access_token"])
        assert act.reauth_flag(sid) is True
    else:
        assert_not_flagged(r["access_token"])
        assert act.reauth_flag(sid) is False


def test_custom_rule_that_does_not_fire(act):
    env = act.env
    fn = custom_function(act, "never_fires", "false")
    add_custom_rule(act, "never_fires", "revoke", fn)
    s = env.create(_uid(), user_agent=UA, ip=HOME)
    r = env.refresh(s["refresh_token"], user_agent=UA, ip=HOME)
    assert env.verdict(r["access_token"]) == OK
    assert act.all_detected(s["user_id"]) == []


@pytest.mark.parametrize("signature,returns", [
    ("text", "boolean"), ("json", "boolean"), ("jsonb", "text"), ("jsonb, jsonb", "boolean"),
    ("", "boolean"), ("jsonb", "setof boolean"),
])
def test_custom_rule_with_a_wrong_signature_is_refused(act, signature, returns):
    admin = act.admin()
    name = f"wrong_{uuid.uuid4().hex[:8]}"
    admin.execute(f"create function public.{name}({signature}) returns {returns} "
                  f"language sql as $$ select true $$")
    regproc = f"public.{name}({signature})"
    with raises_sqlstate("22023"):
        add_custom_rule(act, name, "log", regproc)
    assert admin.execute("select count(*) from auth.activity_rules where rule = %s",
                         [name]).fetchone() == (0,)
    # Nor may an existing custom rule be pointed at it.
    good = custom_function(act, "good_signature", "false")
    add_custom_rule(act, "good_signature", "log", good)
    with raises_sqlstate("22023"):
        act.set_rule("good_signature", function=regproc)
    assert act.env.pg.sql("select function = %s::regprocedure from auth.activity_rules "
                          "where rule = 'good_signature'", [good]) == [(True,)]


# == the client's address =====================================================================


def headed_sign_in(env, user: str, headers: dict, **named) -> dict:
    conn = env.pg.connect(SIGNIN, autocommit=False)
    conn.execute("select set_config('request.headers', %s, true)", [json.dumps(headers)])
    row = env.create(user, conn=conn, **named)
    conn.commit()
    return row


def recorded_ip(env, s: dict):
    return ip_text(env.row(s["session_id"])["ip"])


def test_client_ip_from_the_proxy_header(act):
    env = act.env
    env.set_database("pg_session_auth.client_ip_source", "header")
    user = _uid()
    s = headed_sign_in(env, user, {"x-forwarded-for": "203.0.113.9, 198.51.100.7",
                                   "user-agent": UA}, user_agent=UA, ip="192.0.2.1")
    assert recorded_ip(env, s) == "198.51.100.7"
    assert ip_text(env.row(s["session_id"])["initial_ip"]) == "198.51.100.7"
    assert ip_text(the(of_session(env, s), "session_created")["ip"]) == "198.51.100.7"
    # The network rules see that address, not the argument (the same each time).
    s2 = headed_sign_in(env, user, {"x-forwarded-for": "192.0.2.1, 203.0.113.50"},
                        user_agent=UA, ip="192.0.2.1")
    assert flagged(the(of_session(env, s2), "session_created")) == ["new_network"]
    assert [ip_text(r["ip"]) for r in act.detected("new_network", user_id=user)] == [
        "203.0.113.50"]
    # Refresh, as PostgREST runs it for anon.
    conn = env.anon(autocommit=False)
    conn.execute("select set_config('request.headers', %s, true)",
                 [json.dumps({"x-forwarded-for": "198.51.100.8"})])
    env.refresh(s["refresh_token"], conn=conn, user_agent=UA, ip="192.0.2.99")
    conn.commit()
    assert recorded_ip(env, s) == "198.51.100.8"
    six = headed_sign_in(env, _uid(), {"x-forwarded-for": "203.0.113.9,2001:db8::7"},
                         ip="192.0.2.1")
    assert recorded_ip(env, six) == "2001:db8::7"
    # Without a header, or with an unparsable one: no address.
    assert recorded_ip(env, headed_sign_in(env, _uid(), {}, ip="192.0.2.1")) is None
    assert recorded_ip(env, headed_sign_in(env, _uid(), {"x-forwarded-for": "unknown"},
                                           ip="192.0.2.1")) is None
    assert recorded_ip(env, env.create(ip="192.0.2.1")) is None  # no request.headers at all


def test_client_ip_from_a_named_header_and_the_cookie_refresh(act):
    env = act.env
    env.set_database("pg_session_auth.client_ip_source", "header")
    env.set_database("pg_session_auth.client_ip_header", "x-real-ip")
    s = headed_sign_in(env, _uid(), {"x-real-ip": "203.0.113.20",
                                     "x-forwarded-for": "198.51.100.1"}, ip="192.0.2.1")
    assert recorded_ip(env, s) == "203.0.113.20"
    conn = env.pg.connect(AUTHENTICATOR, autocommit=False)
    conn.execute("select set_config('request.headers', %s, true), "
                 "set_config('request.cookies', %s, true), set_config('role', 'anon', true)",
                 [json.dumps({"cookie": f"refresh_token={s['refresh_token']}",
                              "x-real-ip": "203.0.113.21"}),
                  json.dumps({"refresh_token": s["refresh_token"]})])
    row = one(conn, "select * from auth.refresh_session_cookie()")
    conn.commit()
    assert row["session_id"] == s["session_id"]
    assert recorded_ip(env, s) == "203.0.113.21"


def test_client_ip_from_the_connection(act):
    env = act.env
    env.set_database("pg_session_auth.client_ip_source", "connection")
    s = env.create(ip="192.0.2.1")
    assert recorded_ip(env, s) == "127.0.0.1"
    env.refresh(s["refresh_token"], ip="198.51.100.1")
    assert recorded_ip(env, s) == "127.0.0.1"
    assert [ip_text(r["ip"]) for r in of_session(env, s)] == ["127.0.0.1", "127.0.0.1"]


def test_client_ip_from_the_argument_by_default(act):
    env = act.env
    s = env.create(ip="192.0.2.1")
    assert recorded_ip(env, s) == "192.0.2.1"
    assert env.pg.sql("show pg_session_auth.client_ip_source") == [("argument",)]
    assert env.pg.sql("show pg_session_auth.client_ip_header") == [("x-forwarded-for",)]


@pytest.mark.parametrize("setting", ["track_activity", "log_rejections", "client_ip_source",
                                     "client_ip_header"])
def test_settings_are_for_superusers(act, setting):
    """SUSET and superuser-only to read: key_admin may neither read nor set them (app_user
    was granted pg_read_all_settings by the test cluster, so it may read them only)."""
    conn = act.env.pg.connect(KEY_ADMIN)
    with raises_sqlstate("42501"):
        conn.execute(f"show pg_session_auth.{setting}")
    value = {"track_activity": "off", "log_rejections": "on", "client_ip_source": "argument",
             "client_ip_header": "x-real-ip"}[setting]
    for who in (KEY_ADMIN, APP_USER, SIGNIN):
        with raises_sqlstate("42501"):
            act.env.pg.connect(who).execute(f"set pg_session_auth.{setting} = '{value}'")


# == reauth_required ==========================================================================


def test_reauth_required_is_a_reserved_claim(act):
    user = _uid()
    with raises_sqlstate("22023"):
        act.env.create(user, claims={"reauth_required": False})
    assert act.env.pg.sql("select count(*) from auth.sessions where user_id = %s",
                          [user]) == [(0,)]


# == auth.stats() =============================================================================


STATS_TAIL = [
    "refresh_refused.invalid_refresh_token", "refresh_refused.session_expired",
    "refresh_refused.session_timed_out", "refresh_refused.session_ended",
    "refresh_refused.refresh_token_reused", "refresh_refused.unusual_activity",
    "keyring_cache.hits", "keyring_cache.misses", "revocation_cache.hits",
    "revocation_cache.misses", "signing_key_cache.hits", "signing_key_cache.misses",
    "activity_rules_cache.hits", "activity_rules_cache.misses",
    "revocation_filter.hits", "revocation_filter.misses", "sessions.created",
    "sessions.refreshed", "sessions.ended",
]


def assert_stats_shape(rows: list[tuple[str, int]]) -> None:
    assert rows[0] == ("cluster_wide", 1), rows  # this module's cluster preloads the library
    rows = rows[1:]
    names = [n for n, _ in rows]
    assert names[:2] == ["verifications", "rejections"], names
    rejected = [n for n in names[2:] if n.startswith("rejected.")]
    assert names[2:2 + len(rejected)] == rejected, names
    expected_reasons = {f"rejected.{r.replace(' ', '_')}" for r in REASONS} | {
        "rejected.no_key_configured"}
    assert expected_reasons <= set(rejected), expected_reasons - set(rejected)
    rest = names[2 + len(rejected):]
    assert rest[:len(STATS_TAIL)] == STATS_TAIL, rest
    rules = rest[len(STATS_TAIL):]
    assert set(rules[:-1]) == {f"rules.{r}" for r in DEFAULTS} and len(rules) == 10, rules
    assert rules[-1] == "rules.custom", rules
    assert all(isinstance(v, int) and v >= 0 for _, v in rows), rows


def documented_names(got: dict) -> list[str]:
    """The counters the contract names (whatever else auth.stats() returns)."""
    reasons = [f"rejected.{r.replace(' ', '_')}" for r in REASONS] + [
        "rejected.no_key_configured"]
    return (["verifications", "rejections"] + reasons + STATS_TAIL
            + [f"rules.{r}" for r in DEFAULTS] + ["rules.custom"]
            + [n for n in got if n.startswith("rejected.") and n not in reasons])


def documented(got: dict) -> dict:
    names = documented_names(got)
    missing = [n for n in names if n not in got]
    assert not missing, missing
    return {n: got[n] for n in names}


def test_stats_rows_are_the_documented_ones_in_order(act):
    admin = act.admin()
    assert_stats_shape(stats(admin))
    env = act.env
    env.create()
    assert_stats_shape(stats(admin))


@pytest.mark.parametrize("who", REQUEST_ROLES)
def test_stats_and_rejections_are_for_admins_only(act, who):
    env = act.env
    s = env.create()
    for statement in ("select * from auth.stats()", "select auth.reset_stats()",
                      "select * from auth.recent_rejections()"):
        if who == "anon":
            conn = env.anon()
        elif who == "authenticated":
            conn = env.user(s["access_token"])
        else:
            conn = env.pg.connect(who)
        with raises_sqlstate("42501"):
            conn.execute(statement)
        if not conn.autocommit:
            conn.rollback()


def test_stats_are_cluster_wide_with_shared_preload(act):
    env = act.env
    key = verification_key(act)
    user = _uid()
    first = env.create(user, user_agent=UA, ip=HOME)  # before the reset
    admin = act.admin()
    admin.execute("select auth.reset_stats()")
    zero = documented(stats_of(admin))
    assert len(zero) == len(documented_names(stats_of(admin))) and set(zero.values()) == {0}, zero

    a, b = env.pg.connect(AUTHENTICATOR), env.pg.connect(AUTHENTICATOR)
    good = key.sign(claims(sub=user))
    for _ in range(2):
        assert verdict(a, good) == OK
    assert verdict(b, good) == OK
    assert verdict(b, forged(key)) == "28000 invalid token: bad signature"
    assert verdict(b, expired(key, user, str(uuid.uuid4()))) == "28000 invalid token: expired"
    signin = env.pg.connect(SIGNIN)
    second = env.create(user, conn=signin, user_agent=UA2, ip=HOME)  # new_device
    third = env.create(_uid(), conn=signin)
    env.refresh(first["refresh_token"], user_agent=UA, ip=HOME)
    with raises_sqlstate("28000", INVALID):
        env.refresh("garbage", ip=fresh_ip())
    assert admin.execute("select auth.end_session(%s)",
                         [third["session_id"]]).fetchone() == (True,)
    assert second["session_id"]

    got = stats_of(admin)
    assert stats_of(env.pg.connect(KEY_ADMIN)) == got  # any backend sees the same
    expected = {"verifications": 5, "rejections": 2, "rejected.bad_signature": 1,
                "rejected.expired": 1, "rejected.revoked": 0,
                "refresh_refused.invalid_refresh_token": 1,
                "refresh_refused.refresh_token_reused": 0, "sessions.created": 2,
                "sessions.refreshed": 1, "sessions.ended": 1, "rules.new_device": 1,
                "rules.new_network": 0, "rules.custom": 0}
    assert {k: got[k] for k in expected} == expected, got
    assert sum(v for k, v in got.items() if k.startswith("rejected.")) == 2, got
    # Each backend loaded the keyring once and then used it.
    assert got["keyring_cache.misses"] >= 2 and got["keyring_cache.hits"] >= 3, got

    # A rule's firing, a revoked token's rejection, and the reset.
    s = env.create(_uid())
    conn = env.user(s["access_token"])
    conn.execute("select auth.sign_out()")
    conn.commit()
    before = stats_of(admin)
    assert is_refused(verdict(a, s["access_token"]))
    after = stats_of(admin)
    assert after["rejected.revoked"] == before["rejected.revoked"] + 1
    assert after["rejections"] == before["rejections"] + 1
    admin.execute("select auth.reset_stats()")
    assert set(documented(stats_of(admin)).values()) == {0}
    # The ring is not reset.
    assert len(rejections(admin, key.kid)) == 2


def test_stats_count_custom_rules_and_refusal_reasons(act):
    env = act.env
    env.set_database("pg_session_auth.refresh_reuse_interval", "1s")
    fn = custom_function(act, "counted_rule", "true")
    add_custom_rule(act, "counted_rule", "log", fn)
    admin = act.admin()
    admin.execute("select auth.reset_stats()")
    s = env.create(_uid())
    tokens = [s["refresh_token"]]
    for _ in range(2):
        tokens.append(env.refresh(tokens[-1])["refresh_token"])
    got = stats_of(admin)
    expected = {"rules.custom": 3, "sessions.created": 1, "sessions.refreshed": 2,
                "refresh_refused.refresh_token_reused": 0, "rules.refresh_token_reused": 0}
    assert {k: got[k] for k in expected} == expected, got
    time.sleep(1.2)
    with raises_sqlstate("28000", REUSED):
        env.refresh(tokens[0])
    env.refresh_refused(tokens[2], ENDED)
    got = stats_of(admin)
    expected = {"sessions.created": 1, "sessions.refreshed": 2,
                "refresh_refused.refresh_token_reused": 1, "refresh_refused.session_ended": 1,
                "rules.refresh_token_reused": 1}
    assert {k: got[k] for k in expected} == expected, got


def test_stats_without_shared_preload_are_the_connections_own(cluster_without_preload):
    c = cluster_without_preload
    key = make_key("HS256", kid="nopreload-k")
    admin = c.connect(KEY_ADMIN)
    admin.execute("select auth.add_key(%s, 'HS256', %s)", [key.kid, key.secret_text])
    good = key.sign(claims(sub="u1"))
    a = c.connect(KEY_ADMIN)
    a.execute("select auth.reset_stats()")
    for _ in range(2):
        assert verdict(a, good) == OK
    assert verdict(a, forged(key)) == "28000 invalid token: bad signature"
    b = c.connect(KEY_ADMIN)
    assert verdict(b, good) == OK
    mine, theirs = stats_of(a), stats_of(b)
    assert (mine["verifications"], mine["rejections"], mine["rejected.bad_signature"]) == (
        3, 1, 1), mine
    assert (theirs["verifications"], theirs["rejections"]) == (1, 0), theirs
    assert stats_of(c.connect(KEY_ADMIN))["verifications"] == 0
    a.execute("select auth.reset_stats()")
    assert set(documented(stats_of(a)).values()) == {0}
    assert stats_of(b)["verifications"] == 1


def test_failed_refreshes_without_preload_are_counted_per_backend(cluster_without_preload):
    c = cluster_without_preload
    admin = c.connect(KEY_ADMIN)
    admin.execute("update auth.activity_rules set threshold = 2 "
                  "where rule = 'failed_refreshes'")

    def refuse(conn):
        # A fresh ip argument each time: failures are counted by the connection's address.
        with raises_sqlstate("28000", INVALID):
            conn.execute("select * from auth.refresh_session('garbage', null, %s::inet)",
                         [fresh_ip()])

    def events():
        return admin.execute("select count(*) from auth.audit_events where event = %s and "
                             "details->>'rule' = 'failed_refreshes' and ip = '127.0.0.1'",
                             [DETECTED]).fetchone()[0]

    before = events()
    # Two backends, one refusal each: per backend, neither reaches the threshold.
    refuse(c.connect(KEY_ADMIN))
    refuse(c.connect(KEY_ADMIN))
    time.sleep(0.5)
    assert events() == before
    # One backend, two refusals: it does.
    conn = c.connect(KEY_ADMIN)
    refuse(conn)
    refuse(conn)
    deadline = time.monotonic() + 10
    while events() == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert events() == before + 1


def test_track_activity_off_counts_nothing(act):
    env = act.env
    env.set_database("pg_session_auth.track_activity", "off")
    act.set_rule("failed_refreshes", threshold=2)
    key = verification_key(act)
    admin = act.admin()
    admin.execute("select auth.reset_stats()")
    ip = fresh_ip()
    refuse_from(act, ip, 3)
    conn = env.pg.connect(AUTHENTICATOR)
    assert verdict(conn, key.sign(claims())) == OK
    assert verdict(conn, forged(key)) == "28000 invalid token: bad signature"
    time.sleep(1)
    assert act.detected("failed_refreshes", ip=ip) == []
    got = stats_of(admin)
    assert (got["verifications"], got["rejections"],
            got["refresh_refused.invalid_refresh_token"]) == (0, 0, 0), got
    assert rejections(admin, key.kid) == []


# == auth.recent_rejections() =================================================================


REJECTION_COLUMNS = ["at", "reason", "kid", "sub", "session_id", "ip", "role", "pid"]


def test_recent_rejections_name_reason_kid_and_only_verified_subjects(act):
    env = act.env
    key = verification_key(act)
    conn = env.pg.connect(AUTHENTICATOR)
    pid = conn.info.backend_pid
    bad = forged(key)
    sid = str(uuid.uuid4())
    old = expired(key, "user-expired", sid)
    before = time.time()
    assert verdict(conn, bad) == "28000 invalid token: bad signature"
    assert verdict(conn, old) == "28000 invalid token: expired"
    admin = act.admin()
    with admin.cursor(row_factory=dict_row) as cur:
        cur.execute("select * from auth.recent_rejections() where kid = %s", [key.kid])
        assert [c.name for c in cur.description] == REJECTION_COLUMNS
        rows = cur.fetchall()
    assert [(r["reason"], r["kid"], r["sub"], r["session_id"], r["role"], r["pid"])
            for r in rows] == [
        ("expired", key.kid, "user-expired", uuid.UUID(sid), AUTHENTICATOR, pid),
        ("bad signature", key.kid, None, None, AUTHENTICATOR, pid)], rows
    assert rows[0]["at"] >= rows[1]["at"]
    assert before - 5 <= rows[1]["at"].timestamp() <= time.time() + 5
    text = json.dumps([{k: str(v) for k, v in r.items()} for r in rows])
    for token in (bad, old):
        assert token not in text and token.split(".")[2] not in text
    # A refresh refusal, with the refusal as the reason, recorded with the request's address
    # (the connection's here), not the ip argument the caller chose.
    ip = fresh_ip()
    with raises_sqlstate("28000", INVALID):
        env.refresh("garbage-token", ip=ip)
    latest = all_rows(admin, "select * from auth.recent_rejections() limit 1")
    assert [(r["reason"], r["sub"], r["session_id"], ip_text(r["ip"])) for r in latest] == [
        (INVALID, None, None, "127.0.0.1")], latest
    assert all_rows(admin, "select * from auth.recent_rejections() where ip = %s::inet",
                    [ip]) == []
    # A valid refresh token of an ended session names its subject and session.
    s = env.create(_uid())
    admin.execute("select auth.end_session(%s)", [s["session_id"]])
    with raises_sqlstate("28000", ENDED):
        env.refresh(s["refresh_token"], ip=fresh_ip())
    latest = all_rows(admin, "select * from auth.recent_rejections() limit 1")
    assert [(r["reason"], r["sub"], r["session_id"]) for r in latest] == [
        (ENDED, s["user_id"], s["session_id"])], latest
    assert s["refresh_token"] not in json.dumps([str(v) for v in latest[0].values()])


def test_recent_rejections_keep_the_last_512(act):
    env = act.env
    key = verification_key(act)
    conn = env.pg.connect(AUTHENTICATOR)
    bad = [forged(key) for _ in range(3)]
    got = conn.execute("select count(*) filter (where public.try_verify(t) like '28000 %%') "
                       "from generate_series(1, 200), unnest(%s::text[]) as t",
                       [bad]).fetchone()[0]
    assert got == 600
    rows = all_rows(act.admin(), "select * from auth.recent_rejections()")
    assert len(rows) == 512
    assert {(r["kid"], r["reason"]) for r in rows} == {(key.kid, "bad signature")}
    ats = [r["at"] for r in rows]
    assert ats == sorted(ats, reverse=True)


def test_recent_rejections_show_the_current_database_only(act):
    env = act.env
    env.pg.sql(f"drop database if exists {OTHER_DB} with (force)")
    env.pg.sql(f"create database {OTHER_DB}")
    try:
        key = make_key("HS256", kid=f"other-db-{uuid.uuid4().hex[:6]}")
        with env.pg.connect(KEY_ADMIN, dbname=OTHER_DB) as setup:
            setup.execute("select 1")
        with env.pg.connect("postgres", dbname=OTHER_DB) as su:
            su.execute("create extension pg_session_auth")
        with env.pg.connect(KEY_ADMIN, dbname=OTHER_DB) as admin_there:
            admin_there.execute("select auth.add_key(%s, 'HS256', %s)",
                                [key.kid, key.secret_text])
            there = env.pg.connect(APP_USER, dbname=OTHER_DB)
            assert verdict(there, forged(key)) == "28000 invalid token: bad signature"
            assert [r["reason"] for r in rejections(admin_there, key.kid)] == ["bad signature"]
        assert rejections(act.admin(), key.kid) == []
    finally:
        env.pg.close_connections()
        env.pg.sql(f"drop database if exists {OTHER_DB} with (force)")


def test_log_rejections_writes_a_log_line_without_the_token(act):
    env = act.env
    key = verification_key(act)
    silent = verification_key(act)
    conn = env.pg.connect(AUTHENTICATOR)
    quiet_token = forged(silent)
    assert verdict(conn, quiet_token) == "28000 invalid token: bad signature"
    env.set_database("pg_session_auth.log_rejections", "on")
    conn = env.pg.connect(AUTHENTICATOR)
    bad = forged(key)
    sid = str(uuid.uuid4())
    old = expired(key, "logged-user", sid)
    assert verdict(conn, bad) == "28000 invalid token: bad signature"
    assert verdict(conn, old) == "28000 invalid token: expired"
    # Text from the token is quoted and escaped; "-" when there is none.
    wanted = [f'pg_session_auth: rejected: reason=bad signature kid="{key.kid}" sub=-',
              f'pg_session_auth: rejected: reason=expired kid="{key.kid}" sub="logged-user"']
    deadline = time.monotonic() + 5
    while True:
        log = env.pg.server_log()
        lines = [line for line in log.splitlines()
                 if "pg_session_auth: rejected:" in line and key.kid in line]
        if len(lines) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(lines) == 2, lines
    assert all(" LOG:  " in line for line in lines), lines
    for token in (bad, old):
        for part in (token, token.split(".")[1], token.split(".")[2]):
            assert part not in log
    assert silent.kid not in log
    # The documented format, exactly.
    assert [line.split(" LOG:  ", 1)[1] for line in lines] == wanted, lines


# == auth.my_activity() =======================================================================


def test_my_activity_shows_the_users_flagged_sign_ins(act):
    env = act.env
    user = _uid()
    s1 = env.create(user, user_agent=UA, ip=HOME)
    s2 = env.create(user, user_agent=UA2, ip=AWAY)
    conn = env.user(s2["access_token"])
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("select * from auth.my_activity()")
        assert [c.name for c in cur.description] == MY_ACTIVITY_COLUMNS
        mine = cur.fetchall()
    conn.commit()
    created = [(r["session_id"], sorted(r["flagged"])) for r in mine
               if r["event"] == "session_created"]
    assert created == [(s2["session_id"], ["new_device", "new_network"]),
                       (s1["session_id"], [])], mine
    assert all(isinstance(r["flagged"], list) for r in mine), mine
    # Another user sees none of it.
    other = env.user(env.create(_uid())["access_token"])
    theirs = all_rows(other, "select * from auth.my_activity()")
    other.commit()
    assert [(r["event"], r["flagged"]) for r in theirs] == [("session_created", [])]


# == normal use raises nothing ================================================================


def assert_nothing_raised(act, user: str, listener: Listener, sessions: list[dict]) -> None:
    assert act.all_detected(user) == []
    for s in sessions:
        for row in of_session(act.env, s):
            assert flagged(row) == [], row
        assert act.reauth_flag(s["session_id"]) is False
        assert act.env.row(s["session_id"])["ended_at"] is None
    assert listener.quiet(lambda p: p.get("user_id") == user) == []


def test_one_device_refreshing_every_few_minutes_raises_nothing(act):
    env = act.env
    listener = act.listener()
    user = _uid()
    s = env.create(user, user_agent=UA, ip=HOME)
    assert_not_flagged(s["access_token"])
    token = s["refresh_token"]
    for i in range(5):
        # A few minutes pass (the session's clock moved back, as postgres).
        env.pg.sql("update auth.sessions set created_at = created_at - interval '4 minutes', "
                   "refreshed_at = refreshed_at - interval '4 minutes' where id = %s",
                   [s["session_id"]])
        r = env.refresh(token, user_agent=UA, ip=HOME if i % 2 else HOME2)  # DHCP, one /24
        assert_not_flagged(r["access_token"])
        assert env.verdict(r["access_token"]) == OK
        token = r["refresh_token"]
    # Signing in again on the same device.
    again = env.create(user, user_agent=UA, ip=HOME)
    assert_not_flagged(again["access_token"])
    assert_nothing_raised(act, user, listener, [s, again])


def test_two_tabs_refreshing_together_raise_nothing(act):
    env = act.env
    listener = act.listener()
    user = _uid()
    s = env.create(user, user_agent=UA, ip=HOME)
    outcomes = run_at_once([env.anon(), env.anon()],
                           lambda conn: one(conn, "select * from auth.refresh_session("
                                                  "%s, %s, %s::inet)",
                                            [s["refresh_token"], UA, HOME]))
    assert all(o.ok for o in outcomes), outcomes
    assert len({o.row["refresh_token"] for o in outcomes}) == 1
    for o in outcomes:
        assert_not_flagged(o.row["access_token"])
        assert env.verdict(o.row["access_token"]) == OK
    # The slower tab presents the old token once more (within the reuse interval).
    again = env.refresh(s["refresh_token"], user_agent=UA, ip=HOME)
    assert again["refresh_token"] == outcomes[0].row["refresh_token"]
    assert_nothing_raised(act, user, listener, [s])


def test_first_sign_in_of_a_user_raises_nothing(act):
    listener = act.listener()
    user = _uid()
    s = act.env.create(user, user_agent=UA, ip=AWAY)
    assert_not_flagged(s["access_token"])
    assert_nothing_raised(act, user, listener, [s])


# -- an adversarial review's findings, reproduced -------------------------------------------


def test_create_extension_refuses_an_auth_schema_where_others_may_create(act):
    """Whoever may create objects in it could shadow the extension's functions."""
    pg = act.pg
    pg.sql("drop database if exists open_auth with (force)")
    pg.sql("create database open_auth")
    try:
        su = pg.connect("postgres", dbname="open_auth")
        su.execute("create schema auth")
        su.execute(f"grant create on schema auth to {APP_USER}")
        with raises_sqlstate("42501", "only superusers may create objects in schema auth"):
            su.execute("create extension pg_session_auth")
        su.execute(f"revoke create on schema auth from {APP_USER}")
        su.execute("create extension pg_session_auth")
        su.close()
    finally:
        pg.close_connections()
        pg.sql("drop database if exists open_auth with (force)")


def test_create_extension_refuses_an_auth_schema_of_another_role(act):
    """Its owner could rename it and put tables of their own (a rules table naming a
    superuser's rights) where the extension looks for its own."""
    pg = act.pg
    pg.sql("drop database if exists foreign_auth with (force)")
    pg.sql(f"create database foreign_auth owner {APP_USER}")
    try:
        owner = pg.connect(APP_USER, dbname="foreign_auth")
        owner.execute("create schema auth")
        owner.close()
        su = pg.connect("postgres", dbname="foreign_auth")
        with raises_sqlstate("42501", "schema auth must be owned by a superuser"):
            su.execute("create extension pg_session_auth")
        su.execute("alter schema auth owner to postgres")
        su.execute("create extension pg_session_auth")
        su.close()
    finally:
        pg.close_connections()
        pg.sql("drop database if exists foreign_auth with (force)")


def test_a_custom_rule_runs_only_a_function_its_role_owns(act):
    """Whoever can replace a rule's function could otherwise act with the rights of the admin
    who named it."""
    env = act.env
    env.pg.sql(f"grant create on schema public to {APP_USER}")
    app = env.pg.connect(APP_USER)
    app.execute("create or replace function public.borrowed(event jsonb) returns boolean "
                "language sql as $$ select false $$")
    env.pg.sql(f"revoke create on schema public from {APP_USER}")
    with raises_sqlstate("42501", "the function of an activity rule must be owned by the role "
                         f"it runs as ({KEY_ADMIN})"):
        add_custom_rule(act, "borrowed", "log", "public.borrowed(jsonb)")
    fn = custom_function(act, "owned", "false")
    add_custom_rule(act, "owned", "log", fn)
    env.create(_uid(), user_agent=UA, ip=HOME)
    # Given away later: sign-ins stop (55000) rather than run another role's code as key_admin.
    env.pg.sql(f"alter function {fn} owner to {APP_USER}")
    with raises_sqlstate("55000", 'pg_session_auth: activity rule "owned" cannot run: its '
                         "function is not owned by the role it runs as"):
        env.create(_uid(), user_agent=UA, ip=HOME)
    act.set_rule("owned", enabled=False)
    env.create(_uid(), user_agent=UA, ip=HOME)


def test_a_dropped_function_is_never_called_by_its_name_again(act):
    """A backend that loaded the rules before the drop does not run a function someone else
    then creates under the same name."""
    env = act.env
    env.pg.sql("create schema if not exists shared_rules")
    env.pg.sql(f"grant usage, create on schema shared_rules to {KEY_ADMIN}, {APP_USER}")
    admin = act.admin()
    admin.execute("create function shared_rules.watch(event jsonb) returns boolean "
                  "language sql as $$ select false $$")
    add_custom_rule(act, "watch", "log", "shared_rules.watch(jsonb)")
    issuer = env.issuer()
    env.create(_uid(), conn=issuer, user_agent=UA, ip=HOME)  # this backend has the rules
    admin.execute("drop function shared_rules.watch(jsonb)")
    app = env.pg.connect(APP_USER)
    app.execute("create function shared_rules.watch(event jsonb) returns boolean "
                "language plpgsql as $$ begin raise exception 'hijacked'; end $$")
    with raises_sqlstate("55000", 'pg_session_auth: activity rule "watch" cannot run: its '
                         "function no longer exists"):
        env.create(_uid(), conn=issuer, user_agent=UA, ip=HOME)
    admin.execute("delete from auth.activity_rules where rule = 'watch'")
    env.create(_uid(), conn=issuer, user_agent=UA, ip=HOME)
    env.pg.sql("drop schema shared_rules cascade")


def test_run_as_is_the_writer_also_under_a_mixed_case_name(act):
    pg = act.pg
    pg.sql('drop role if exists "Rule_Writer"')
    pg.sql("drop role if exists rule_writer")
    pg.sql('create role "Rule_Writer" login')
    pg.sql('grant session_auth_admin to "Rule_Writer"')
    pg.sql("create role rule_writer superuser")  # what a lower-cased name would resolve to
    pg.sql('grant create on schema public to "Rule_Writer"')
    try:
        writer = pg.connect("Rule_Writer")
        writer.execute("create function public.mixed(event jsonb) returns boolean "
                       "language sql as $$ select false $$")
        writer.execute("insert into auth.activity_rules (rule, action, function) "
                       "values ('mixed', 'log', 'public.mixed(jsonb)')")
        assert act.rule("mixed")["run_as"] == '"Rule_Writer"'
        act.env.create(_uid(), user_agent=UA, ip=HOME)
        # Demoted: its rule stops sign-ins (55000) until an admin disables or deletes it.
        pg.sql('revoke session_auth_admin from "Rule_Writer"')
        with raises_sqlstate("55000", 'pg_session_auth: activity rule "mixed" cannot run: '
                             "the role it runs as is no longer a member of session_auth_admin"):
            act.env.create(_uid(), user_agent=UA, ip=HOME)
        act.admin().execute("delete from auth.activity_rules where rule = 'mixed'")
    finally:
        pg.sql("drop function if exists public.mixed(jsonb)")
        pg.close_connections()
        pg.sql('revoke create on schema public from "Rule_Writer"')
        pg.sql('drop role if exists "Rule_Writer"')
        pg.sql("drop role if exists rule_writer")


def test_a_rule_whose_role_was_dropped_stops_sign_ins_with_55000(act):
    pg = act.pg
    pg.sql("drop role if exists gone_admin")
    pg.sql("create role gone_admin login")
    pg.sql("grant session_auth_admin to gone_admin")
    pg.sql("grant create on schema public to gone_admin")
    gone = pg.connect("gone_admin")
    gone.execute("create function public.gone(event jsonb) returns boolean "
                 "language sql as $$ select false $$")
    gone.execute("insert into auth.activity_rules (rule, action, function) "
                 "values ('gone', 'log', 'public.gone(jsonb)')")
    gone.close()
    pg.sql("alter function public.gone(jsonb) owner to postgres")
    pg.sql("revoke create on schema public from gone_admin")
    pg.sql("drop role gone_admin")
    with raises_sqlstate("55000", 'pg_session_auth: activity rule "gone" cannot run: the role '
                         "it runs as no longer exists"):
        act.env.create(_uid(), user_agent=UA, ip=HOME)
    act.admin().execute("delete from auth.activity_rules where rule = 'gone'")
    pg.sql("drop function public.gone(jsonb)")


def test_control_characters_in_a_user_agent_are_dropped_and_a_revoke_still_ends(act):
    """A NUL in the request's User-Agent header (JSON can carry one) could not be stored, and
    made the worker that ends the session fail after the revocation's rollback."""
    env = act.env
    act.set_rule("session_device_changed", action="revoke")
    s = env.create(_uid(), user_agent=UA, ip=HOME)
    conn = env.pg.connect(AUTHENTICATOR, autocommit=False)
    conn.execute("select set_config('request.headers', %s, true), "
                 "set_config('request.cookies', %s, true), set_config('role', 'anon', true)",
                 [json.dumps({"user-agent": "Evil\u0000\nAgent/1"}),
                  json.dumps({"refresh_token": s["refresh_token"]})])
    with raises_sqlstate("28000", "session revoked: unusual activity"):
        conn.execute("select * from auth.refresh_session_cookie()")
    conn.rollback()
    assert env.pg.sql("select count(*) from auth.revoked_sessions where session_id = %s",
                      [s["session_id"]]) == [(1,)]
    rows = act.wait_detected("session_device_changed", user_id=s["user_id"])
    assert [r["user_agent"] for r in rows] == ["EvilAgent/1"], rows
    assert is_refused(env.verdict(s["access_token"]))


def test_a_period_is_at_most_a_year(act):
    with raises_sqlstate("23514"):
        act.set_rule("too_many_sessions", period="2 years")
    act.set_rule("too_many_sessions", period="1 year")
    act.env.create(_uid(), user_agent=UA, ip=HOME)


def test_a_superusers_rule_runs_only_a_function_the_superuser_owns(act):
    """A superuser who names a function another role owns would give that role a
    superuser's rights the next time it replaced the function's body."""
    env = act.env
    env.pg.sql(f"grant create on schema public to {APP_USER}")
    app = env.pg.connect(APP_USER)
    app.execute("create or replace function public.lent(event jsonb) returns boolean "
                "language sql as $$ select false $$")
    env.pg.sql(f"revoke create on schema public from {APP_USER}")
    su = env.pg.connect("postgres")
    with raises_sqlstate("42501", "the function of an activity rule must be owned by the role "
                         "it runs as (postgres)"):
        su.execute("insert into auth.activity_rules (rule, action, function) "
                   "values ('lent', 'log', 'public.lent(jsonb)')")
    env.pg.sql("drop function public.lent(jsonb)")


@pytest.mark.parametrize("body, message", [
    ("insert into public.rule_writes values (1); return false;",
     "cannot execute INSERT in a read-only transaction"),
    ("raise exception 'refused' using errcode = '28000'; return false;", "refused"),
    ("return 1 / 0 > 0;", "division by zero"),
])
def test_a_custom_rule_cannot_write_and_its_errors_are_55000(act, body, message):
    """Rule functions run read-only; whatever they raise is the rule's 55000, never another
    SQLSTATE (a forged 28000 refusal, an XX000)."""
    env = act.env
    env.pg.sql("create table if not exists public.rule_writes (n int)")
    env.pg.sql(f"grant insert on public.rule_writes to {KEY_ADMIN}")
    admin = act.admin()
    admin.execute(f"""create or replace function public.misbehaves(event jsonb) returns boolean
                      language plpgsql volatile as $$ begin {body} end $$""")
    add_custom_rule(act, "misbehaves", "log", "public.misbehaves(jsonb)")
    with raises_sqlstate("55000", 'pg_session_auth: activity rule "misbehaves" cannot run: '
                         f"its function failed: {message}"):
        env.create(_uid(), user_agent=UA, ip=HOME)
    assert env.pg.sql("select count(*) from public.rule_writes") == [(0,)]
    act.set_rule("misbehaves", enabled=False)
    env.create(_uid(), user_agent=UA, ip=HOME)


def test_a_temporary_function_cannot_be_a_rule(act):
    admin = act.admin()
    admin.execute("create function pg_temp.fleeting(event jsonb) returns boolean "
                  "language sql as $$ select false $$")
    with raises_sqlstate("22023", "the function of an activity rule cannot be a temporary one"):
        admin.execute("insert into auth.activity_rules (rule, action, function) "
                      "values ('fleeting', 'log', 'pg_temp.fleeting(jsonb)')")
