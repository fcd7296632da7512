"""Retiring, removing or replacing a key ends the identities it vouched for, as revocation does.

Deployed the PostgREST way: ``app_user`` (a plain LOGIN role, here granted the
``authenticated`` role that tokens name) authenticates and reads an RLS-protected table;
``key_admin`` (a member of session_auth_admin) manages keys on another connection; the
superuser ``postgres`` only sets up and, in one test, deletes a key row by hand.

The defect these tests guard against (V4): an identity bound by auth.authenticate() before
auth.retire_key() kept working for the rest of its transaction - every claim function went on
returning the claims and RLS went on showing the rows - although retiring a key (as when it
has leaked) is meant to end everything it vouched for from the next statement. The same held
when the key row was deleted or the kid was given other key material. The rule: from the
next statement after the change commits, every claim function and every RLS-protected read
in such a transaction raise 28000; an identity bound with another, still active key is
unaffected.
"""

from __future__ import annotations

import uuid

import pytest

from client_support import invalid, make_key, now
from conftest import APP_USER, KEY_ADMIN, raises_sqlstate

LEAKY = "leaky-k"
STAYS = "stays-k"
RETIRED = invalid("retired key")
USER_A = "8e5d6f7a-4b8c-4d9e-8f0a-2c3d4e5f6a01"
USER_B = "9f6e7a8b-5c9d-4e0f-9a1b-3d4e5f6a7b02"
N_ROWS = 20

SETUP = f"""
create role authenticated nologin;
grant authenticated to {APP_USER};
create table public.notes (id int primary key, owner uuid not null);
insert into public.notes select g, (array['{USER_A}', '{USER_B}']::uuid[])[g % 2 + 1]
    from generate_series(1, {N_ROWS}) g;
alter table public.notes enable row level security;
create policy notes_owner on public.notes for select using (owner = auth.uid());
grant select on public.notes to authenticated;
"""

CLAIM_FUNCTIONS = ("auth.uid()", "auth.jwt()", "auth.user_id()", "auth.role()",
                   "auth.email()", "auth.session_id()")
RLS_SELECT = "select id from public.notes order by id"


def ids_of(user: str) -> list[int]:
    return [g for g in range(1, N_ROWS + 1) if (USER_A, USER_B)[g % 2] == user]


@pytest.fixture(scope="module")
def schema(cluster):
    cluster.sql(SETUP)
    return cluster


class Env:
    def __init__(self, pg):
        self.pg = pg
        self.keys = {LEAKY: make_key("HS256", LEAKY), STAYS: make_key("HS256", STAYS)}
        self.admin = pg.connect(KEY_ADMIN)
        for kid, key in self.keys.items():
            self.admin.execute("select auth.add_key(%s, 'HS256', %s)", [kid, key.secret_text])

    def token(self, kid: str, sub: str) -> tuple[str, dict]:
        t = now()
        claims = {"sub": sub, "role": "authenticated", "email": f"{sub[:4]}@example.com",
                  "session_id": str(uuid.uuid4()), "iat": t, "exp": t + 3600}
        return self.keys[kid].sign(claims), claims

    def bound(self, kid: str, sub: str, isolation: str):
        """An app_user connection in an open transaction that authenticated with a token of
        `kid`, with every claim function and RLS checked to work."""
        token, claims = self.token(kid, sub)
        conn = self.pg.connect(APP_USER)
        conn.execute(f"begin isolation level {isolation}")
        conn.execute("select auth.authenticate(%s)", [token])
        assert_identity(conn, claims)
        return conn, claims


def expected_values(claims: dict) -> tuple:
    return (claims["sub"], claims, claims["sub"], "authenticated", claims["email"],
            claims["session_id"])


def assert_identity(conn, claims: dict) -> None:
    """Every claim function returns the bound claims, and RLS shows the user's rows."""
    got = conn.execute("select " + ", ".join(
        f"{fn}::text" if fn in ("auth.uid()", "auth.session_id()") else fn
        for fn in CLAIM_FUNCTIONS)).fetchone()
    assert got == expected_values(claims), got
    assert [r[0] for r in conn.execute(RLS_SELECT).fetchall()] == ids_of(claims["sub"])


def assert_withdrawn(conn, message: str | None) -> None:
    """Each claim function, and an RLS-protected select, raises 28000 (each in a savepoint,
    so the transaction - and its identity - survive for the next one). With `message` None
    the reason is left open; it must still be an `invalid token: ...` rejection."""
    for statement in [f"select {fn}" for fn in CLAIM_FUNCTIONS] + [RLS_SELECT]:
        conn.execute("savepoint before_read")
        with raises_sqlstate("28000", message) as caught:
            conn.execute(statement)
        assert caught.message.startswith("invalid token: "), (statement, caught.message)
        conn.execute("rollback to savepoint before_read")


@pytest.fixture
def env(schema, pg):
    return Env(pg)


ISOLATIONS = pytest.mark.parametrize("isolation", ["read committed", "repeatable read"])


@ISOLATIONS
def test_retiring_a_key_ends_identities_bound_with_it(env, isolation):
    """app_user authenticated with a token of key K; key_admin retires K on another
    connection (committed). Defect: the open transaction's claim functions and RLS went on
    returning the identity. Must: each claim function and an RLS select raise 28000
    `invalid token: retired key` from the next statement; an identity bound with another,
    still active key keeps working; a new authenticate with K is refused too."""
    a, _ = env.bound(LEAKY, USER_A, isolation)
    b, b_claims = env.bound(STAYS, USER_B, isolation)

    assert env.admin.execute("select auth.retire_key(%s)", [LEAKY]).fetchone()[0] is True

    assert_identity(b, b_claims)                  # another key: unaffected
    assert_withdrawn(a, RETIRED)
    a.execute("rollback")
    b.execute("commit")

    token, _ = env.token(LEAKY, USER_A)
    a.execute("begin")
    with raises_sqlstate("28000", RETIRED):
        a.execute("select auth.authenticate(%s)", [token])
    a.execute("rollback")


@ISOLATIONS
def test_deleting_the_key_row_ends_identities_bound_with_it(env, isolation):
    """As above, but the superuser deletes K's row from auth.keys by hand. Defect: the bound
    identity kept working. Must: the next statement's claim functions and RLS raise 28000;
    the identity of the other key is unaffected."""
    a, _ = env.bound(LEAKY, USER_A, isolation)
    b, b_claims = env.bound(STAYS, USER_B, isolation)

    env.pg.sql("delete from auth.keys where kid = %s", [LEAKY])

    assert_identity(b, b_claims)
    assert_withdrawn(a, None)
    a.execute("rollback")
    b.execute("commit")


@ISOLATIONS
def test_replacing_the_key_material_ends_identities_bound_with_it(env, isolation):
    """As above, but key_admin replaces K with different key material under the same kid
    (auth.add_key with K's kid). Defect: the identity verified with the old material kept
    working. Must: the next statement's claim functions and RLS raise 28000; the identity of
    the other key is unaffected."""
    a, _ = env.bound(LEAKY, USER_A, isolation)
    b, b_claims = env.bound(STAYS, USER_B, isolation)

    replacement = make_key("HS256", LEAKY)
    assert replacement.secret_text != env.keys[LEAKY].secret_text
    env.admin.execute("select auth.add_key(%s, 'HS256', %s)", [LEAKY, replacement.secret_text])

    assert_identity(b, b_claims)
    assert_withdrawn(a, None)
    a.execute("rollback")
    b.execute("commit")
