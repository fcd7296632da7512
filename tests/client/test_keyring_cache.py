"""The per-backend keyring cache, seen from several connections.

Each backend caches the parsed keyring; a statement-level trigger on auth.keys queues a
relcache invalidation that other backends process when the change commits (and the writing
backend at its next command). These tests check that no connection ever verifies with a
keyring that is stale at the start of its statement.
"""

from __future__ import annotations

import pytest
from psycopg import IsolationLevel

from client_support import claims, invalid, make_key
from conftest import APP_USER, KEY_ADMIN, raises_sqlstate


@pytest.fixture(scope="module")
def keys():
    return {
        "k1": make_key("HS256", kid="k1"),
        "k1b": make_key("HS256", kid="k1"),   # another secret under the same kid
        "k2": make_key("HS256", kid="k2"),
        "rs": make_key("RS256", kid="k1"),    # an RSA key under the same kid
    }


def verify(conn, token, **kwargs):
    return conn.execute("select auth.verify(%s)", [token], **kwargs).fetchone()[0]


def accepts(conn, token, **kwargs) -> bool:
    return verify(conn, token, **kwargs) is not None


def add(conn, key):
    if key.alg.startswith("HS"):
        conn.execute("select auth.add_key(%s, %s, %s)", [key.kid, key.alg, key.secret_text])
    else:
        conn.execute("select auth.add_key(%s, %s, %s)", [key.kid, key.alg, key.public_pem])


@pytest.fixture
def setup(pg, keys):
    """k1 active (added and committed by key_admin); A = app_user has verified with it."""
    admin = pg.connect(KEY_ADMIN)
    add(admin, keys["k1"])
    a = pg.connect(APP_USER)
    token = keys["k1"].sign(claims())
    assert accepts(a, token)  # A's keyring is now cached
    return a, token


def test_committed_retirement_is_seen_by_the_next_statement(pg, setup):
    a, token = setup
    b = pg.connect(KEY_ADMIN, autocommit=False)
    assert b.execute("select auth.retire_key('k1')").fetchone()[0] is True
    # Uncommitted: A still accepts, as often as it asks.
    assert accepts(a, token)
    assert accepts(a, token)
    b.commit()
    with raises_sqlstate("28000", invalid("retired key")):
        verify(a, token)


def test_rolled_back_retirement_changes_nothing(pg, setup):
    a, token = setup
    b = pg.connect(KEY_ADMIN, autocommit=False)
    assert b.execute("select auth.retire_key('k1')").fetchone()[0] is True
    assert accepts(a, token)
    # B's own next statement sees its uncommitted retirement...
    with raises_sqlstate("28000", invalid("retired key")):
        with b.transaction():  # a savepoint, so that B's transaction survives the error
            verify(b, token)
    b.rollback()
    # ...and after the rollback neither B nor A keep it.
    assert accepts(b, token)
    assert accepts(a, token)
    b.commit()


def test_own_uncommitted_key_is_usable_by_the_next_statement(pg, setup, keys):
    a, _ = setup
    b = pg.connect(KEY_ADMIN, autocommit=False)
    token2 = keys["k2"].sign(claims())
    assert accepts(b, keys["k1"].sign(claims()))  # B caches the keyring too
    add(b, keys["k2"])
    assert accepts(b, token2)
    # Nobody else sees it before the commit.
    with raises_sqlstate("28000", invalid("unknown key")):
        verify(a, token2)
    b.commit()
    assert accepts(a, token2)
    assert accepts(b, token2)


def test_own_uncommitted_key_is_forgotten_on_rollback(pg, setup, keys):
    a, _ = setup
    b = pg.connect(KEY_ADMIN, autocommit=False)
    token2 = keys["k2"].sign(claims())
    add(b, keys["k2"])
    assert accepts(b, token2)
    b.rollback()
    with raises_sqlstate("28000", invalid("unknown key")):
        verify(b, token2)
    b.rollback()
    with raises_sqlstate("28000", invalid("unknown key")):
        verify(a, token2)


def test_key_added_in_a_rolled_back_savepoint_is_forgotten(pg, setup, keys):
    _, _ = setup
    b = pg.connect(KEY_ADMIN, autocommit=False)
    token2 = keys["k2"].sign(claims())
    b.execute("savepoint s")
    add(b, keys["k2"])
    assert accepts(b, token2)
    b.execute("rollback to savepoint s")
    with raises_sqlstate("28000", invalid("unknown key")):
        with b.transaction():
            verify(b, token2)
    b.commit()
    with raises_sqlstate("28000", invalid("unknown key")):
        verify(b, token2)


def test_read_committed_transaction_sees_the_change_at_its_next_statement(pg, setup):
    _, token = setup
    a = pg.connect(APP_USER, autocommit=False)
    a.isolation_level = IsolationLevel.READ_COMMITTED
    assert accepts(a, token)  # transaction open, keyring cached
    b = pg.connect(KEY_ADMIN)
    b.execute("select auth.retire_key('k1')")  # committed (autocommit)
    with raises_sqlstate("28000", invalid("retired key")):
        verify(a, token)
    a.rollback()


@pytest.mark.parametrize("level", [IsolationLevel.REPEATABLE_READ, IsolationLevel.SERIALIZABLE])
def test_repeatable_read_transaction_sees_the_change_at_its_next_statement(pg, setup, keys, level):
    """REPEATABLE READ (and SERIALIZABLE): the transaction's own queries keep their snapshot
    and still show k1 active, but verification reads the keyring with the LATEST snapshot
    (see src/spi_read.rs), so a retirement committed by another connection takes effect at
    A's next statement even inside the open transaction. A key added and committed meanwhile
    is likewise usable at once."""
    _, token = setup
    # A is key_admin here, so that it can also look at auth.keys under its own snapshot.
    a = pg.connect(KEY_ADMIN, autocommit=False)
    a.isolation_level = level
    assert accepts(a, token)  # the snapshot is taken here
    b = pg.connect(KEY_ADMIN)
    b.execute("select auth.retire_key('k1')")
    add(b, keys["k2"])
    # A's snapshot still says k1 is active and k2 does not exist...
    rows = a.execute("select kid, retired_at is null from auth.keys order by kid").fetchall()
    assert rows == [("k1", True)]
    # ...but verification sees the committed state.
    with raises_sqlstate("28000", invalid("retired key")):
        with a.transaction():
            verify(a, token)
    assert accepts(a, keys["k2"].sign(claims()))
    a.rollback()


def test_prepared_verification_sees_the_change(pg, setup):
    a, token = setup
    for _ in range(3):
        assert accepts(a, token, prepare=True)
    pg.connect(KEY_ADMIN).execute("select auth.retire_key('k1')")
    with raises_sqlstate("28000", invalid("retired key")):
        verify(a, token, prepare=True)


def test_writer_sees_its_own_committed_change(pg, setup):
    _, token = setup
    b = pg.connect(KEY_ADMIN)
    assert accepts(b, token)
    b.execute("select auth.retire_key('k1')")
    with raises_sqlstate("28000", invalid("retired key")):
        verify(b, token)


def test_replacing_a_kid_switches_other_connections_to_the_new_key(pg, setup, keys):
    a, old_token = setup
    b = pg.connect(KEY_ADMIN)
    add(b, keys["k1b"])  # same kid, new secret
    new_token = keys["k1b"].sign(claims())
    with raises_sqlstate("28000", invalid("bad signature")):
        verify(a, old_token)
    assert accepts(a, new_token)
    # Same kid, now an RSA key: the HMAC tokens no longer fit it.
    add(b, keys["rs"])
    with raises_sqlstate("28000", invalid("algorithm mismatch")):
        verify(a, new_token)
    assert accepts(a, keys["rs"].sign(claims()))


def test_replacing_a_retired_kid_makes_it_active_again(pg, setup, keys):
    a, token = setup
    b = pg.connect(KEY_ADMIN)
    b.execute("select auth.retire_key('k1')")
    with raises_sqlstate("28000", invalid("retired key")):
        verify(a, token)
    add(b, keys["k1"])
    assert accepts(a, token)


def test_many_connections_see_a_retirement(pg, setup):
    _, token = setup
    conns = [pg.connect(APP_USER) for _ in range(6)]
    for conn in conns:
        assert accepts(conn, token)
    pg.connect(KEY_ADMIN).execute("select auth.retire_key('k1')")
    for conn in conns:
        with raises_sqlstate("28000", invalid("retired key")):
            verify(conn, token)


def test_direct_table_changes_by_the_owner_are_seen(pg, setup):
    a, token = setup
    su = pg.connect()
    su.execute("update auth.keys set retired_at = now() where kid = 'k1'")
    with raises_sqlstate("28000", invalid("retired key")):
        verify(a, token)
    su.execute("update auth.keys set retired_at = null where kid = 'k1'")
    assert accepts(a, token)
    su.execute("truncate auth.keys cascade")  # signing_key_material references it
    with raises_sqlstate("55000", "no verification key is configured"):
        verify(a, token)


def test_changes_made_with_session_replication_role_replica_are_seen(pg, setup):
    """A superuser session with session_replication_role = replica (what logical
    replication's apply workers use, and what some restore/ETL tools set) changes the keyring:
    other connections must not keep verifying with the keys from before.

    EXPECTED TO FAIL while sql/finalize.sql creates keys_invalidate_cache as an ordinary
    (ENABLE ORIGIN) trigger: such triggers do not fire in replica mode, so no invalidation is
    queued and every backend that has cached the keyring keeps accepting a retired or even
    deleted key until it reconnects. (Fix: ALTER TABLE auth.keys ENABLE ALWAYS TRIGGER
    keys_invalidate_cache.)"""
    a, token = setup
    su = pg.connect()
    su.execute("set session_replication_role = replica")
    assert su.execute("select auth.retire_key('k1')").fetchone()[0] is True
    # A new connection sees the retirement...
    with raises_sqlstate("28000", invalid("retired key")):
        verify(pg.connect(APP_USER), token)
    # ...and so must the one that had cached the keyring.
    with raises_sqlstate("28000", invalid("retired key")):
        verify(a, token)
    su.execute("delete from auth.keys")
    with raises_sqlstate("55000", "no verification key is configured"):
        verify(a, token)


@pytest.mark.parametrize("one_transaction", [False, True])
def test_drop_and_create_extension_forgets_the_old_keys(pg, setup, keys, one_transaction):
    a, old_token = setup
    su = pg.connect(autocommit=not one_transaction)
    su.execute("drop extension pg_session_auth")
    su.execute("create extension pg_session_auth")
    if one_transaction:
        # Not committed yet: A still has (and may use) the old extension and keys.
        assert accepts(a, old_token)
        su.commit()
    # The new keyring is empty.
    with raises_sqlstate("55000", "no verification key is configured"):
        verify(a, old_token)
    su.autocommit = True
    add(su, keys["k1b"])  # the same kid, another secret
    with raises_sqlstate("28000", invalid("bad signature")):
        verify(a, old_token)
    assert accepts(a, keys["k1b"].sign(claims()))


def test_drop_and_create_extension_with_keys_in_one_transaction(pg, setup, keys):
    a, old_token = setup
    su = pg.connect(autocommit=False)
    su.execute("drop extension pg_session_auth")
    su.execute("create extension pg_session_auth")
    add(su, keys["k1b"])
    su.commit()
    with raises_sqlstate("28000", invalid("bad signature")):
        verify(a, old_token)
    assert accepts(a, keys["k1b"].sign(claims()))


def test_drop_extension_then_verify_in_other_connection(pg, setup, keys):
    """While the extension is dropped, auth.verify does not exist (42883; the schema auth,
    created by CREATE EXTENSION, stays); once the extension is created again with a
    different key, the old token is not accepted."""
    a, old_token = setup
    su = pg.connect()
    su.execute("drop extension pg_session_auth")
    with raises_sqlstate("42883"):
        verify(a, old_token)
    su.execute("create extension pg_session_auth")
    with raises_sqlstate("55000"):
        verify(a, old_token)
    add(su, keys["k1b"])
    with raises_sqlstate("28000", invalid("bad signature")):
        verify(a, old_token)
    assert accepts(a, keys["k1b"].sign(claims()))
