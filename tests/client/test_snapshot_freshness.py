"""Revocation and key retirement seen from statements whose snapshot is older than the change:
REPEATABLE READ and SERIALIZABLE transactions, a cursor declared before the change, and
parallel plans (forced, or a plain parallel scan under an RLS policy). Verification runs as
the plain role ``app_user``; ``key_admin`` revokes and retires; ``postgres`` only sets up.

The rule under test: a statement never accepts a token whose revocation (or whose key's
retirement) committed before the statement started, whatever snapshot the statement runs
under; and nothing read under an old snapshot outlives that statement - later statements and
later transactions on the same connection refuse the token too.

The defect these tests guard against (V1): in parallel mode the revocation lookup read the
tables with the statement's active snapshot. Under REPEATABLE READ / SERIALIZABLE, or through
a cursor opened earlier, that snapshot predates a revocation whose invalidation the backend
had already processed, so the lookup answered "not revoked" - and that answer was stored in
the connection's long-lived cache, so the revoked token went on being accepted in later
transactions. V4b is the keyring's twin: a keyring reloaded in parallel mode from such a
snapshot still held a key retired before the statement.

Every test runs twice: with ``shared_preload_libraries`` (the shared revocation filter; the
revoked token's keys are in it, so its check reaches the exact lookup - asserted) and with
``session_preload_libraries`` (no filter: every new token is looked up).
"""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest
from psycopg import sql

from client_support import invalid, make_key, now
from conftest import APP_USER, KEY_ADMIN, SAFETY_OPTIONS, raises_sqlstate, running_cluster

KID = "fresh-k"
RETIRING_KID = "fresh-retiring"
REVOKED = invalid("revoked")
RETIRED = invalid("retired key")
KINDS = ("session", "user", "jti")
REVOCATION_TABLES = "auth.revoked_sessions, auth.revoked_users, auth.revoked_tokens"

USER_A = "4a1f2b3c-0d4e-4f5a-8b6c-7d8e9f0a1b01"
USER_B = "5b2a3c4d-1e5f-4a6b-9c7d-8e9f0a1b2c02"
N_ROWS = 4000

SETUP = f"""
create table public.todos (id int primary key, owner uuid not null, title text not null);
insert into public.todos
    select g, (array['{USER_A}', '{USER_B}']::uuid[])[g % 2 + 1], 'todo ' || g
    from generate_series(1, {N_ROWS}) g;
alter table public.todos enable row level security;
create policy todos_owner on public.todos for select using (owner = auth.uid());
grant select on public.todos to {APP_USER};
analyze public.todos;

-- STABLE, so its query runs under the caller's active snapshot (a cursor's: the one taken
-- when the cursor was declared); PERFORM is planned as a full query, so with the forced
-- parallel setting it runs in parallel mode.
create function public.verify_nested(tok text) returns text language plpgsql stable as $$
begin
    perform auth.verify(tok);
    return 'ok';
end $$;
"""

# A parallel plan without any forcing: every parallel cost made free.
PARALLEL_COSTS = ("set local parallel_setup_cost = 0; set local parallel_tuple_cost = 0; "
                  "set local min_parallel_table_scan_size = 0; "
                  "set local max_parallel_workers_per_gather = 2")
RLS_QUERY = "select id from public.todos order by id"


def ids_of(user: str) -> list[int]:
    return [g for g in range(1, N_ROWS + 1) if (USER_A, USER_B)[g % 2] == user]


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["shared", "session"],
                ids=["with-filter", "without-filter"])
def cluster(request):
    """This module's cluster, once with the shared revocation filter and once without."""
    with running_cluster(preload=request.param) as c:
        c.sql(SETUP)
        yield c


def _uid() -> str:
    return str(uuid.uuid4())


class Env:
    def __init__(self, pg):
        self.pg = pg
        self.key = make_key("HS256", KID)
        self.with_filter = pg.preload == "shared"

    # connections
    def user(self) -> psycopg.Connection:
        conn = self.pg.connect(APP_USER)
        # Never a server-side prepared statement: a plan cached before `set local` of a
        # parallel setting would not see it.
        conn.prepare_threshold = None
        return conn

    def admin(self) -> psycopg.Connection:
        return self.pg.connect(KEY_ADMIN)

    # tokens: no role claim, so app_user keeps its role
    def token(self, sub: str | None = None, key=None, **kw) -> str:
        t = now()
        payload = {"sub": sub or _uid(), "iat": t, "exp": t + 3600,
                   "session_id": _uid(), "jti": "jti-" + _uid()}
        payload.update(kw)
        return (key or self.key).sign(payload)

    def revocable(self, kind: str, sub: str | None = None) -> tuple[str, tuple]:
        """A token and the admin statement that revokes it by `kind`."""
        sub = sub or _uid()
        if kind == "session":
            session = _uid()
            return self.token(sub, session_id=session), (
                "select auth.revoke_session(%s)", [session])
        if kind == "user":
            # Issued well before the cut-off the revocation will set.
            return self.token(sub, iat=now() - 5), ("select auth.revoke_user(%s::text)", [sub])
        jti = "jti-" + _uid()
        return self.token(sub, jti=jti), ("select auth.revoke_token(%s)", [jti])

    # the shared filter
    def filter_status(self) -> tuple[str, int]:
        with psycopg.connect(host="127.0.0.1", port=self.pg.port, user="postgres",
                             dbname="postgres", autocommit=True,
                             options=SAFETY_OPTIONS) as conn:
            return conn.execute("select state, keys from auth.revocation_filter()").fetchone()

    def wait_for_valid_filter(self, timeout: float = 20) -> None:
        """Waits until the filter is built (a background worker builds it after a check)."""
        deadline = time.monotonic() + timeout
        while True:
            with psycopg.connect(host="127.0.0.1", port=self.pg.port, user="postgres",
                                 dbname="postgres", autocommit=True,
                                 options=SAFETY_OPTIONS) as conn:
                conn.execute("select auth.is_revoked('{}')")
            state, _ = self.filter_status()
            if state == "valid":
                return
            assert time.monotonic() < deadline, f"revocation filter still {state}"
            time.sleep(0.05)

    def assert_revocation_reaches_lookup(self) -> None:
        """With the filter: it is valid and holds the revocation just made, so the revoked
        token passes it and its check is the exact lookup (the path under test). Without
        the filter every new token is looked up anyway."""
        state, keys = self.filter_status()
        if self.with_filter:
            assert state == "valid" and keys >= 1, (state, keys)
        else:
            assert state == "unavailable", state


@pytest.fixture
def env(pg):
    pg.sql(f"truncate {REVOCATION_TABLES}")
    e = Env(pg)
    pg.sql("select auth.add_key(%s, 'HS256', %s)", [KID, e.key.secret_text], user=KEY_ADMIN)
    if e.with_filter:
        e.wait_for_valid_filter()
    return e


# -- helpers ---------------------------------------------------------------------------------


def force_parallel_setting(conn) -> str:
    """The setting that forces parallel mode: renamed in PostgreSQL 16."""
    version = int(conn.execute("select current_setting('server_version_num')").fetchone()[0])
    return "debug_parallel_query" if version >= 160000 else "force_parallel_mode"


def warm(conn, *tokens: str) -> None:
    """Verifies each token once in autocommit (no parallel mode), so the connection holds a
    keyring and revocation answers cached the ordinary way, and the tokens are known good."""
    for token in tokens:
        assert conn.execute("select auth.verify(%s) is not null", [token]).fetchone()[0] is True


def assert_refused_later(conn, token: str, message: str) -> None:
    """Later transactions on the same connection refuse the token too: nothing read under the
    old snapshot may have been kept. `authenticate` + an RLS select, then a bare verify."""
    conn.execute("begin")
    with raises_sqlstate("28000", message):
        conn.execute("select auth.authenticate(%s)", [token])
        conn.execute(RLS_QUERY)
    conn.execute("rollback")
    conn.execute("begin isolation level repeatable read")
    with raises_sqlstate("28000", message):
        conn.execute("select auth.authenticate(%s)", [token])
    conn.execute("rollback")
    with raises_sqlstate("28000", message):
        conn.execute("select auth.verify(%s)", [token])


def explain(conn, query: str) -> str:
    return "\n".join(r[0] for r in conn.execute("explain (costs off) " + query).fetchall())


# == V1: the reproduction, REPEATABLE READ and SERIALIZABLE, every kind of revocation ========


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("isolation", ["repeatable read", "serializable"])
def test_parallel_statement_in_an_old_snapshot_refuses_a_revoked_token(env, isolation, kind):
    """The reported reproduction. Connection V's transaction took its snapshot before the
    revocation committed; after it, V verifies another valid token (which makes V process the
    invalidation and start a fresh cache generation) and then verifies the revoked token X in
    forced parallel mode. Defect: the parallel statement looked X up under the transaction's
    old snapshot, accepted it, and cached "not revoked" for good, so a later transaction's
    `auth.authenticate(X)` bound the revoked identity and read A's rows. Must be 28000
    `revoked` in the parallel statement and in every later transaction."""
    x, revoke = env.revocable(kind, USER_A)
    y = env.token()
    v, admin = env.user(), env.admin()
    force = force_parallel_setting(v)
    warm(v, x, y)

    v.execute(f"begin isolation level {isolation}")
    v.execute("select 1")              # takes the transaction's snapshot: before the revocation
    admin.execute(*revoke)                        # committed (autocommit)
    env.assert_revocation_reaches_lookup()
    assert v.execute("select auth.verify(%s)->>'sub'", [y]).fetchone()[0] is not None
    v.execute(f"set local {force} = on")
    with raises_sqlstate("28000", REVOKED):
        v.execute("select auth.verify(%s)", [x])
    v.execute("rollback")

    assert_refused_later(v, x, REVOKED)
    # The other token was never revoked.
    assert v.execute("select auth.verify(%s) is not null", [y]).fetchone()[0] is True


# == V1: a cursor declared before the revocation =============================================


@pytest.mark.parametrize("kind", KINDS)
def test_cursor_declared_before_a_revocation_refuses_after_it(env, kind):
    """A READ COMMITTED transaction declares a cursor whose rows verify X (through a STABLE
    function, whose query runs under the cursor's snapshot, in forced parallel mode); the
    first FETCH accepts X. Then the revocation of X commits, V verifies another token, and
    fetches again. Defect: the second FETCH looked X up under the cursor's snapshot (taken
    before the revocation), accepted it and cached the answer, so later transactions accepted
    X too. The FETCH started after the revocation: it must raise 28000 `revoked`, and so must
    every later transaction."""
    x, revoke = env.revocable(kind, USER_A)
    y = env.token()
    v, admin = env.user(), env.admin()
    force = force_parallel_setting(v)
    warm(v, x, y)

    v.execute("begin")                            # read committed
    v.execute(f"set local {force} = on")
    v.execute(sql.SQL("declare c no scroll cursor for "
                      "select n, public.verify_nested({}) from generate_series(1, 3) n"
                      ).format(sql.Literal(x)))
    assert v.execute("fetch next from c").fetchone() == (1, "ok")   # before the revocation
    admin.execute(*revoke)
    env.assert_revocation_reaches_lookup()
    # Another token, in an ordinary (not parallel) statement, as in the reproduction.
    v.execute(f"set local {force} = off")
    assert v.execute("select auth.verify(%s)->>'sub'", [y]).fetchone()[0] is not None
    v.execute(f"set local {force} = on")
    with raises_sqlstate("28000", REVOKED):
        v.execute("fetch next from c")
    v.execute("rollback")

    assert_refused_later(v, x, REVOKED)


# == V1: a plain parallel scan under an RLS policy ===========================================


@pytest.mark.parametrize("other_token_first", [False, True],
                         ids=["scan-first", "other-token-first"])
@pytest.mark.parametrize("kind", KINDS)
def test_parallel_rls_scan_refuses_an_identity_revoked_after_it_was_bound(env, kind,
                                                                         other_token_first):
    """No forcing setting: a REPEATABLE READ transaction binds X (user A) and reads its rows
    through a parallel seq scan under `owner = auth.uid()` (parallel only because the costs
    are made free; EXPLAIN confirms it). The revocation of X commits. Defect: the next
    parallel scan re-checked the identity under the transaction's old snapshot and returned
    A's rows (and, when another token had been verified first on the connection, cached that
    answer for later transactions). Documented: the next statement's claim functions raise
    28000 `revoked`; later transactions refuse X."""
    x, revoke = env.revocable(kind, USER_A)
    y = env.token(USER_B)
    v, admin = env.user(), env.admin()
    warm(v, x, y)

    v.execute("begin isolation level repeatable read")
    assert v.execute("select auth.authenticate(%s)->>'sub'", [x]).fetchone()[0] == USER_A
    v.execute(PARALLEL_COSTS)
    plan = explain(v, RLS_QUERY)
    assert "Gather" in plan and "Parallel Seq Scan on todos" in plan, plan
    assert [r[0] for r in v.execute(RLS_QUERY).fetchall()] == ids_of(USER_A)

    admin.execute(*revoke)
    env.assert_revocation_reaches_lookup()
    if other_token_first:
        assert v.execute("select auth.verify(%s)->>'sub'", [y]).fetchone()[0] == USER_B
    with raises_sqlstate("28000", REVOKED):
        v.execute(RLS_QUERY)
    v.execute("rollback")

    assert_refused_later(v, x, REVOKED)


# == V4b: the keyring's twin =================================================================


def test_parallel_statement_after_a_key_was_retired_refuses_its_tokens(env):
    """A REPEATABLE READ transaction took its snapshot; then `auth.retire_key(kid)` commits on
    another connection. Defect: the next (forced parallel) statement reloaded the keyring under
    the transaction's old snapshot, so the retired key was still active - the token was
    accepted, and a later `auth.authenticate` in the same transaction reused that stale
    keyring. Both must raise 28000 `retired key`, and a later transaction too."""
    retiring = make_key("HS256", RETIRING_KID)
    admin = env.admin()
    admin.execute("select auth.add_key(%s, 'HS256', %s)", [RETIRING_KID, retiring.secret_text])
    t = env.token(USER_A, key=retiring)
    other = env.token(USER_B)                     # signed with the key that stays active
    v = env.user()
    force = force_parallel_setting(v)
    warm(v, t, other)

    v.execute("begin isolation level repeatable read")
    v.execute("select 1")              # takes the transaction's snapshot: before the retirement
    assert admin.execute("select auth.retire_key(%s)", [RETIRING_KID]).fetchone()[0] is True
    v.execute(f"set local {force} = on")
    v.execute("savepoint before_check")
    with raises_sqlstate("28000", RETIRED):
        v.execute("select auth.verify(%s)", [t])
    v.execute("rollback to savepoint before_check")
    with raises_sqlstate("28000", RETIRED):
        v.execute("select auth.authenticate(%s)", [t])
    v.execute("rollback")

    assert_refused_later(v, t, RETIRED)
    # The other key is unaffected.
    assert v.execute("select auth.verify(%s)->>'sub'", [other]).fetchone()[0] == USER_B
