"""Logical replication: revocations and key changes that a subscription applies are in force
in the subscriber's backends from their next statement, like those committed locally.

Defect V2: a subscription's apply worker fires only row-level triggers (never statement-level
ones), and the extension's cache invalidation was a statement-level trigger. So a backend on
the subscriber that had already looked a token up kept its cached answer ("not revoked") or
its cached keyring and went on accepting a token that the publisher had revoked, or whose key
the publisher had retired, deleted or replaced; only new connections refused it.

The module starts two throw-away clusters on loopback (scripts/cluster.sh, both with
shared_preload_libraries = 'pg_session_auth'): a publisher (wal_level = logical) and a
subscriber. Both get the extension and the conftest roles; the publisher publishes
auth.revoked_sessions, auth.revoked_users, auth.revoked_tokens and auth.keys (publication
`p`), the subscriber subscribes to it (subscription `s`, copy_data on). Both are stopped at
the end of the module, whatever happened.

Every test first makes an EXISTING subscriber connection (as ``app_user``) verify a token, so
that it has cached answers, then changes something on the publisher (revocations as
``key_admin``, key deletion as ``postgres``), waits until the change is on the subscriber
(the row is there, and the subscription has confirmed everything the publisher wrote), and
only then asserts on that existing connection - and on a new one.

How a cached answer is guaranteed: with the shared revocation filter valid, a token none of
whose keys (session id, subject, jti) is in the filter is cleared without any lookup, and so
without caching anything. The tests therefore give the token's subject an old per-user
cut-off (a global sign-out an hour ago, written on the publisher) that does not revoke the
token but puts its subject into the filter: the token is then looked up exactly once and its
answers are kept, whatever state the subscriber's filter is in. Each test checks this with
the backend's own index-scan counters (a lookup on the first verification, none on the
second).
"""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from client_support import claims, invalid, make_key
from conftest import APP_USER, KEY_ADMIN, PRELOAD_LINES, Cluster, raises_sqlstate

PUBLISHER_PORTS = range(56100, 56150)
SUBSCRIBER_PORTS = range(56150, 56200)
PUBLICATION = "p"
SUBSCRIPTION = "s"
TABLES = ("auth.revoked_sessions", "auth.revoked_users", "auth.revoked_tokens", "auth.keys")
REPLICATION_TIMEOUT = 20.0
KID = "lr-k"
REVOKED = "invalid token: revoked"  # (client_support.REASONS predates revocation)
NO_KEY = "no verification key is configured"
# The primary-key indexes that a revocation lookup probes.
PKEYS = ("auth.revoked_sessions_pkey", "auth.revoked_users_pkey", "auth.revoked_tokens_pkey")


class Publisher(Cluster):
    """A conftest Cluster on this module's ports that can publish logically."""

    PORT_RANGE = PUBLISHER_PORTS

    def conf(self) -> list[str]:
        return [*PRELOAD_LINES["shared"], "wal_level = logical"]


class Subscriber(Cluster):
    """A conftest Cluster on this module's ports for the subscription."""

    PORT_RANGE = SUBSCRIBER_PORTS

    def conf(self) -> list[str]:
        return [
            *PRELOAD_LINES["shared"],
            # Feedback to the publisher at least every second (the catch-up wait reads it).
            "wal_receiver_status_interval = 1s",
            # VACUUM/ANALYZE of the revocation tables would queue relcache invalidations of
            # their own and could hide the defect by chance; nothing here needs them.
            "autovacuum = off",
        ]


# -- helpers -----------------------------------------------------------------------------------


class Link:
    """The publisher, the subscriber, and a key both know."""

    def __init__(self, publisher: Publisher, subscriber: Subscriber):
        self.publisher = publisher
        self.subscriber = subscriber
        self.key = make_key("HS256", KID)

    # tokens

    def token(self, key=None, **extra) -> str:
        """A token with its own subject, session and jti (unless given), valid for an hour."""
        base = {"sub": str(uuid.uuid4()), "session_id": str(uuid.uuid4()),
                "jti": f"jti-{uuid.uuid4()}"}
        base.update(extra)
        return (key or self.key).sign(claims(**base))

    # connections

    def subscriber_user(self) -> psycopg.Connection:
        return self.subscriber.connect(APP_USER)

    # replication

    def replicate(self, check: str, params=(), what: str = "the change") -> None:
        """Waits (bounded) until `check`, a query returning one boolean, is true on the
        subscriber AND the subscription has confirmed everything the publisher had written
        when this was called (so the apply worker has finished committing it, not merely made
        it visible)."""
        target = self.publisher.sql("select pg_current_wal_lsn()::text")[0][0]
        deadline = time.monotonic() + REPLICATION_TIMEOUT
        while True:
            on_subscriber = self.subscriber.sql(check, params)[0][0] is True
            caught_up = self.publisher.sql(
                "select coalesce(bool_and(replay_lsn >= %s::pg_lsn), false) "
                "from pg_stat_replication where application_name = %s",
                (target, SUBSCRIPTION))[0][0]
            if on_subscriber and caught_up:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what} did not reach the subscriber within {REPLICATION_TIMEOUT} s "
                    f"(on the subscriber: {on_subscriber}, caught up to {target}: {caught_up})\n"
                    f"{self.subscriber.server_log()[-3000:]}")
            time.sleep(0.02)

    def add_key(self, key) -> None:
        """Adds `key` on the publisher (as key_admin) and waits until it is on the subscriber."""
        self.publisher.sql("select auth.add_key(%s, %s, %s)",
                           (key.kid, key.alg, key.secret_text), user=KEY_ADMIN)
        self.replicate("select exists (select from auth.keys where kid = %s "
                       "and retired_at is null and secret = convert_to(%s, 'UTF8'))",
                       (key.kid, key.secret_text), what=f"key {key.kid}")

    def signed_out_long_ago(self, sub: str) -> None:
        """Gives `sub` a global sign-out an hour ago (written on the publisher as its owner),
        which revokes none of its current tokens but puts the subject into every revocation
        filter, so that the subscriber's backends look its tokens up and keep the answers."""
        self.publisher.sql(
            "insert into auth.revoked_users (user_id, revoked_before, reason, revoked_at) "
            "values (%s, now() - interval '1 hour', 'signed out an hour ago', "
            "now() - interval '1 hour')", (sub,))
        self.replicate("select exists (select from auth.revoked_users where user_id = %s)",
                       (sub,), what=f"the old cut-off of {sub}")

    def filter_status(self) -> dict:
        """The subscriber's revocation filter, as a superuser sees it."""
        row = self.subscriber.sql(
            "select state, keys, capacity, bytes, builds from auth.revocation_filter()")[0]
        return dict(zip(("state", "keys", "capacity", "bytes", "builds"), row))

    def wait_for_valid_filter(self) -> dict:
        """Waits until the subscriber's filter is valid. A check asks for the build (which a
        background worker makes), so each poll makes a check too."""
        deadline = time.monotonic() + REPLICATION_TIMEOUT
        while True:
            self.subscriber.sql("select auth.is_revoked('{}')")
            status = self.filter_status()
            if status["state"] == "valid":
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"the subscriber's filter is {status}, not valid")
            time.sleep(0.05)


def verdict_and_scans(conn, token: str) -> tuple[str, int]:
    """The verdict of `token` ('ok' or 'SQLSTATE message', from public.try_verify) and how
    many index scans of the revocation tables' primary keys it cost in this backend."""
    count = "select sum(pg_stat_get_xact_numscans(i::regclass)) from unnest(%s::text[]) i"
    conn.execute("begin")
    before = conn.execute(count, [list(PKEYS)]).fetchone()[0]
    result = conn.execute("select public.try_verify(%s)", [token]).fetchone()[0]
    after = conn.execute(count, [list(PKEYS)]).fetchone()[0]
    conn.execute("rollback")
    return result, int(after - before)


def assert_cached(conn, token: str) -> None:
    """Makes `conn` verify `token` twice and checks that the first verification looked its
    revocation answers up and the second used the kept ones."""
    assert verdict_and_scans(conn, token)[0] == "ok"
    assert verdict_and_scans(conn, token) == ("ok", 0), "the answers were not kept"


def assert_revoked(conn, token: str) -> None:
    with raises_sqlstate("28000", REVOKED):
        conn.execute("select auth.verify(%s)", [token])


def assert_key_gone(conn, token: str) -> None:
    """A token whose key was deleted: `unknown key` (28000) while another key is active, `no
    verification key is configured` (55000) when none is, as the README documents."""
    try:
        conn.execute("select auth.verify(%s)", [token])
    except psycopg.Error as error:
        expected = {"28000": invalid("unknown key"), "55000": NO_KEY}
        assert error.sqlstate in expected, f"SQLSTATE {error.sqlstate}: {error}"
        assert error.diag.message_primary == expected[error.sqlstate], str(error)
    else:
        raise AssertionError("a token of a deleted key was accepted")


# -- fixtures -------------------------------------------------------------------------------


def _wait_subscription_ready(publisher: Publisher, subscriber: Subscriber) -> None:
    """Until every table has finished its initial copy and the apply worker streams."""
    deadline = time.monotonic() + REPLICATION_TIMEOUT
    while True:
        states = subscriber.sql(
            "select srrelid::regclass::text, srsubstate from pg_subscription_rel order by 1")
        streaming = publisher.sql(
            "select state from pg_stat_replication where application_name = %s",
            (SUBSCRIPTION,))
        if (len(states) == len(TABLES) and all(s == "r" for _, s in states)
                and streaming == [("streaming",)]):
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the subscription is not ready: tables {states}, walsender {streaming}\n"
                f"{subscriber.server_log()[-3000:]}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def link():
    publisher, subscriber = Publisher(), Subscriber()
    try:
        publisher.start()
        subscriber.start()
        publisher.setup_roles_and_extension()
        subscriber.setup_roles_and_extension()
        publisher.sql(f"create publication {PUBLICATION} for table {', '.join(TABLES)}")
        subscriber.sql(
            f"create subscription {SUBSCRIPTION} connection "
            f"'host=127.0.0.1 port={publisher.port} user=postgres dbname=postgres' "
            f"publication {PUBLICATION}")
        _wait_subscription_ready(publisher, subscriber)
        lk = Link(publisher, subscriber)
        lk.add_key(lk.key)
        yield lk
    except BaseException:
        for name, c in (("publisher", publisher), ("subscriber", subscriber)):
            if c.started:
                print(f"---- {name} log ----\n" + c.server_log()[-5000:])
        raise
    finally:
        subscriber.stop()
        publisher.stop()


@pytest.fixture
def lr(link):
    yield link
    link.publisher.close_connections()
    link.subscriber.close_connections()


# -- tests ----------------------------------------------------------------------------------


def test_the_subscription_replicates_the_extension_tables(lr):
    """Set-up sanity (not a regression test for V2): the four tables are subscribed, and a
    key and a revocation written on the publisher arrive on the subscriber."""
    rows = lr.subscriber.sql(
        "select srrelid::regclass::text from pg_subscription_rel order by 1")
    assert sorted(r[0] for r in rows) == sorted(TABLES)
    assert lr.subscriber.sql("select alg from auth.keys where kid = %s", (KID,)) == [("HS256",)]
    session = uuid.uuid4()
    lr.publisher.sql("select auth.revoke_session(%s, 'sanity')", (session,), user=KEY_ADMIN)
    lr.replicate("select exists (select from auth.revoked_sessions where session_id = %s)",
                 (session,), what="a session revocation")
    # A new subscriber connection refuses that session's tokens.
    with raises_sqlstate("28000", REVOKED):
        lr.subscriber_user().execute("select auth.verify(%s)",
                                     [lr.token(session_id=str(session))])


@pytest.mark.parametrize("kind", ["session", "user", "token"])
def test_revocation_applied_by_the_subscription_is_enforced_in_an_existing_connection(lr, kind):
    """(a, b) V2: a session (auth.revoke_session), user (auth.revoke_user) or token
    (auth.revoke_token) revocation made on the publisher by key_admin and applied by the
    subscription must make the subscriber connection that verified the token before (and
    kept the answers) refuse it at its next statement with 28000 `revoked` - as must a new
    connection. Before the fix the apply worker fired no statement trigger, so the existing
    connection kept its cached "not revoked" and accepted the token."""
    sub, session, jti = str(uuid.uuid4()), str(uuid.uuid4()), f"jti-{uuid.uuid4()}"
    lr.signed_out_long_ago(sub)
    token = lr.token(sub=sub, session_id=session, jti=jti)
    existing = lr.subscriber_user()
    assert_cached(existing, token)

    if kind == "session":
        assert lr.publisher.sql("select auth.revoke_session(%s, 'stolen laptop')", (session,),
                                user=KEY_ADMIN) == [(True,)]
        check = "select exists (select from auth.revoked_sessions where session_id = %s)"
        params = (session,)
    elif kind == "user":
        lr.publisher.sql("select auth.revoke_user(%s::text, 'abuse')", (sub,), user=KEY_ADMIN)
        cutoff = lr.publisher.sql(
            "select revoked_before from auth.revoked_users where user_id = %s", (sub,))[0][0]
        check = ("select exists (select from auth.revoked_users "
                 "where user_id = %s and revoked_before = %s)")
        params = (sub, cutoff)
    else:
        assert lr.publisher.sql("select auth.revoke_token(%s, now() + interval '1 hour')",
                                (jti,), user=KEY_ADMIN) == [(True,)]
        check = "select exists (select from auth.revoked_tokens where jti = %s)"
        params = (jti,)
    lr.replicate(check, params, what=f"the {kind} revocation")

    assert_revoked(existing, token)
    assert_revoked(lr.subscriber_user(), token)
    # On the publisher it is refused too (the revocation itself worked).
    assert_revoked(lr.publisher.connect(APP_USER), token)


def test_key_retired_on_the_publisher_is_refused_in_an_existing_connection(lr):
    """(c) V2: auth.retire_key() on the publisher, applied by the subscription (an UPDATE of
    auth.keys), must make an existing subscriber connection that verified a token of that key
    refuse it at its next statement with 28000 `retired key`; tokens of other keys still pass.
    Before the fix the connection kept its cached keyring and accepted the token."""
    key = make_key("HS256", f"lr-retire-{uuid.uuid4()}")
    lr.add_key(key)
    token, other = lr.token(key), lr.token()
    existing = lr.subscriber_user()
    assert existing.execute("select auth.verify(%s) ->> 'sub'", [token]).fetchone()[0]
    assert existing.execute("select auth.verify(%s) ->> 'sub'", [other]).fetchone()[0]

    assert lr.publisher.sql("select auth.retire_key(%s)", (key.kid,), user=KEY_ADMIN) == [(True,)]
    lr.replicate("select exists (select from auth.keys where kid = %s "
                 "and retired_at is not null)", (key.kid,), what="the retirement")

    with raises_sqlstate("28000", invalid("retired key")):
        existing.execute("select auth.verify(%s)", [token])
    assert existing.execute("select auth.verify(%s) ->> 'sub'", [other]).fetchone()[0]
    with raises_sqlstate("28000", invalid("retired key")):
        lr.subscriber_user().execute("select auth.verify(%s)", [token])


@pytest.mark.parametrize("last", [False, True], ids=["other-key-active", "last-active-key"])
def test_key_deleted_on_the_publisher_is_refused_in_an_existing_connection(lr, last):
    """(c) V2: deleting a key row on the publisher (as superuser), applied by the subscription,
    must make an existing subscriber connection that verified a token of that key refuse it at
    its next statement: 28000 `unknown key` while another key is active, or 55000 `no
    verification key is configured` when the deleted key was the last active one (either is
    accepted, as the README documents both). Before the fix the connection kept its cached
    keyring and accepted the token."""
    if last:
        # Only this test's key will be active: retire every other one first.
        lr.publisher.sql("update auth.keys set retired_at = now() where retired_at is null")
        lr.replicate("select not exists (select from auth.keys where retired_at is null)",
                     what="the retirement of every key")
    key = make_key("HS256", f"lr-delete-{uuid.uuid4()}")
    lr.add_key(key)
    token = lr.token(key)
    existing = lr.subscriber_user()
    assert existing.execute("select auth.verify(%s) ->> 'sub'", [token]).fetchone()[0]
    try:
        lr.publisher.sql("delete from auth.keys where kid = %s", (key.kid,))
        lr.replicate("select not exists (select from auth.keys where kid = %s)", (key.kid,),
                     what="the deletion")
        assert_key_gone(existing, token)
        assert_key_gone(lr.subscriber_user(), token)
    finally:
        if last:
            lr.publisher.sql("update auth.keys set retired_at = null where kid = %s", (KID,))
            lr.replicate("select exists (select from auth.keys where kid = %s "
                         "and retired_at is null)", (KID,), what="the module key's return")


def test_key_replaced_on_the_publisher_is_in_force_in_an_existing_connection(lr):
    """(c, key changes) V2: auth.add_key() with an existing kid replaces the key (e.g. a leaked
    HMAC secret rotated under the same kid). Applied by the subscription, an existing
    subscriber connection must refuse tokens signed with the old secret (28000 `bad
    signature`) and accept those signed with the new one. Before the fix it kept the old
    secret: the leaked one stayed usable there."""
    kid = f"lr-replace-{uuid.uuid4()}"
    old, new = make_key("HS256", kid), make_key("HS256", kid)
    assert old.secret_text != new.secret_text
    lr.add_key(old)
    old_token, new_token = lr.token(old), lr.token(new)
    existing = lr.subscriber_user()
    assert existing.execute("select auth.verify(%s) ->> 'sub'", [old_token]).fetchone()[0]

    lr.add_key(new)

    with raises_sqlstate("28000", invalid("bad signature")):
        existing.execute("select auth.verify(%s)", [old_token])
    assert existing.execute("select auth.verify(%s) ->> 'sub'", [new_token]).fetchone()[0]


def test_key_added_on_the_publisher_is_usable_in_an_existing_connection(lr):
    """(key changes) V2: a key added on the publisher and applied by the subscription must be
    usable in a subscriber connection that loaded its keyring before (next statement). Before
    the fix that connection kept its old keyring and refused the new key's tokens with
    `unknown key` (fails closed, but wrong)."""
    existing = lr.subscriber_user()
    assert existing.execute("select auth.verify(%s) ->> 'sub'", [lr.token()]).fetchone()[0]
    key = make_key("HS256", f"lr-add-{uuid.uuid4()}")
    lr.add_key(key)
    claims_ = existing.execute("select auth.verify(%s)", [lr.token(key)]).fetchone()[0]
    assert claims_["role"] == "authenticated"


def test_filter_valid_and_answers_kept_replicated_revocation_is_enforced(lr):
    """(d) V2 with the shared revocation filter valid on the subscriber: a token whose
    subject is in the filter (an old cut-off) is looked up once and its answers kept; its jti
    is then revoked on the publisher. Once applied, the existing connection must refuse it
    (28000 `revoked`). Before the fix the filter correctly flagged the new key, but the
    connection then trusted its kept "not revoked" answer and accepted the token."""
    sub, jti = str(uuid.uuid4()), f"jti-{uuid.uuid4()}"
    lr.signed_out_long_ago(sub)
    lr.wait_for_valid_filter()
    token = lr.token(sub=sub, jti=jti)
    existing = lr.subscriber_user()
    assert_cached(existing, token)
    assert lr.filter_status()["state"] == "valid"

    assert lr.publisher.sql("select auth.revoke_token(%s)", (jti,), user=KEY_ADMIN) == [(True,)]
    lr.replicate("select exists (select from auth.revoked_tokens where jti = %s)", (jti,),
                 what="the token revocation")

    assert_revoked(existing, token)
    assert_revoked(lr.subscriber_user(), token)


def test_filter_valid_token_cleared_by_it_then_revoked_on_the_publisher_is_refused(lr):
    """(d) The subscriber's filter must not cause a miss: a token none of whose keys is in the
    (valid) filter is cleared by it without a lookup; its session is then revoked on the
    publisher. The apply worker's row trigger must add the session to the subscriber's
    filter (a filter that stays valid must count the new key), and the existing connection
    must refuse the token (28000 `revoked`), as must a new one. This path keeps no answers,
    so it does not depend on the statement-level invalidation: expected to pass on the
    pre-fix build too; it guards the filter side of the fix."""
    # Revocation rows exist, so that "all tables empty" is not what clears the token.
    lr.signed_out_long_ago(str(uuid.uuid4()))
    before = lr.wait_for_valid_filter()
    session = str(uuid.uuid4())
    token = lr.token(session_id=session)
    existing = lr.subscriber_user()
    assert verdict_and_scans(existing, token) == ("ok", 0), "the filter did not clear it"

    assert lr.publisher.sql("select auth.revoke_session(%s)", (session,),
                            user=KEY_ADMIN) == [(True,)]
    lr.replicate("select exists (select from auth.revoked_sessions where session_id = %s)",
                 (session,), what="the session revocation")

    after = lr.filter_status()
    if after["state"] == "valid":
        assert after["keys"] > before["keys"] or after["builds"] > before["builds"], (
            f"the replicated key is not in the valid filter: {before} -> {after}")
    assert_revoked(existing, token)
    assert_revoked(lr.subscriber_user(), token)
