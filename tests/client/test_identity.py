"""Binding a verified identity to a transaction (auth.authenticate) and reading it back (the
claim functions), as non-superusers deployed the way PostgREST deploys: a LOGIN NOINHERIT
role `authenticator` that is granted `anon` and `authenticated` and switches to them.

Covers forgery (client settings never make an identity), scoping (COMMIT, ROLLBACK,
savepoints, errors, autocommit), expiry against each statement's clock, parallel workers,
SECURITY DEFINER and nested calls, role-claim abuse, rejected tokens, request mode (Supabase's
helpers), and generic cached plans."""

from __future__ import annotations

import json
import re
import time

import psycopg
import pytest
from psycopg import sql

from client_support import (
    assemble,
    claims as typical_claims,
    hmac_token,
    invalid,
    json_b64,
    make_key,
    now,
)
from conftest import INITPLAN, INITPLAN_VALUE, PG_MAJOR, collect_notices, raises_sqlstate

USER_A = "0b6f7c0e-8a51-4c0c-9d5e-3c4f1a2b3c01"
USER_B = "1c7a8d1f-9b62-4d1d-8e6f-4d5a2b3c4d02"
USER_C = "2d8b9e2a-ac73-4e2e-9f7a-5e6b3c4d5e03"
SESSION = "3e9caf3b-bd84-4f3f-8a8b-6f7c4d5e6f04"

AUTHENTICATOR = "authenticator"
ROLE_NOT_ALLOWED = "invalid token: role not allowed"  # not (yet) in client_support.REASONS
INVALID_CLAIM_TYPE = invalid("invalid claim type")
WARNING_TEXT = "for this statement only"

OMIT = object()

N_ITEMS = 3000
OWNERS = (USER_A, USER_B, USER_C)


def owner_of(item_id: int) -> str:
    return OWNERS[item_id % 3]


def ids_of(user: str) -> list[int]:
    return [i for i in range(1, N_ITEMS + 1) if owner_of(i) == user]


SETUP = f"""
create role anon nologin;
create role authenticated nologin;
create role {AUTHENTICATOR} login noinherit;
grant anon, authenticated to {AUTHENTICATOR};
create role not_granted nologin;
create role sa_super superuser nologin;
create role definer_owner nologin;

create table public.items (id int primary key, owner uuid not null, note text not null);
insert into public.items
    select g, (array['{USER_A}', '{USER_B}', '{USER_C}']::uuid[])[g % 3 + 1], 'note ' || g
    from generate_series(1, {N_ITEMS}) g;
alter table public.items enable row level security;
create policy items_owner on public.items for select using (owner = auth.uid());
grant select on public.items to anon, authenticated, not_granted, definer_owner;
analyze public.items;
-- The same rows without RLS: filtered only by what the query says.
create table public.items_open as select * from public.items;
grant select on public.items_open to anon, authenticated;
analyze public.items_open;

-- Reports an authentication's outcome instead of raising, so that the state after a failed
-- authentication can be inspected inside the same transaction.
create function public.try_authenticate(t text) returns text language plpgsql as $$
begin
    perform auth.authenticate(t);
    return 'ok';
exception when others then
    return sqlstate || ' ' || sqlerrm;
end $$;

-- A nested caller: authenticates, then reads the identity back in the same function.
create function public.login(t text) returns uuid language plpgsql as $$
begin
    perform auth.authenticate(t);
    return auth.uid();
end $$;

create function public.login_cfg(t text) returns uuid language plpgsql
    set search_path = pg_catalog, pg_temp as $$
begin
    perform auth.authenticate(t);
    return auth.uid();
end $$;

-- Not inlinable (plpgsql), PARALLEL SAFE: calls auth.uid() once per row, in the workers.
create function public.uid_wrap() returns uuid language plpgsql stable parallel safe as $$
begin
    return auth.uid();
end $$;

create function public.my_ids() returns int[] language plpgsql stable as $$
declare
    result int[];
begin
    select array_agg(id order by id) into result from public.items;
    return result;
end $$;

-- Claim functions inside PL/pgSQL expressions, the way application code writes them.
create function public.plpgsql_uid_text() returns text language plpgsql stable as $$
begin
    return auth.uid()::text;
end $$;
create function public.plpgsql_signed_in() returns boolean language plpgsql stable as $$
begin
    if auth.uid() is null then
        return false;
    end if;
    return true;
end $$;
create function public.plpgsql_jwt_sub() returns text language plpgsql stable as $$
begin
    return auth.jwt() ->> 'sub';
end $$;
create function public.plpgsql_declared() returns text language plpgsql stable as $$
declare
    who text := coalesce(auth.user_id(), 'nobody');
begin
    return who;
end $$;

-- SECURITY DEFINER functions owned by another (non-superuser) role.
create function public.sd_identity() returns jsonb language sql stable security definer
    set search_path = pg_catalog, pg_temp as $$
    select jsonb_build_object('uid', auth.uid()::text, 'sub', auth.jwt() ->> 'sub',
                              'role', auth.role(), 'current_user', current_user::text,
                              'visible', (select count(*) from public.items))
$$;
create function public.sd_authenticate(t text) returns jsonb language plpgsql security definer
    set search_path = pg_catalog, pg_temp as $$
begin
    return auth.authenticate(t);
end $$;
create function public.sd_try_authenticate(t text) returns text language plpgsql
    security definer set search_path = pg_catalog, pg_temp as $$
begin
    perform auth.authenticate(t);
    return 'ok';
exception when others then
    return sqlstate || ' ' || sqlerrm;
end $$;
alter function public.sd_identity() owner to definer_owner;
alter function public.sd_authenticate(text) owner to definer_owner;
alter function public.sd_try_authenticate(text) owner to definer_owner;

-- Supabase's helpers, verbatim except that the uuid cast is made non-raising by the caller.
create schema supa;
grant usage on schema supa to public;
create function supa.uid_text() returns text language sql stable as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
    )::text
$$;
create function supa.role() returns text language sql stable as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim.role', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
    )::text
$$;
create function supa.email() returns text language sql stable as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim.email', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
    )::text
$$;
create function supa.jwt() returns jsonb language sql stable as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
$$;
-- Supabase's auth.uid() is `(...)::uuid`; where that cast would raise, auth.uid() is NULL.
create function supa.try_uuid(t text) returns uuid language plpgsql immutable as $$
begin
    return t::uuid;
exception when invalid_text_representation then
    return null;
end $$;
"""


@pytest.fixture(scope="module")
def schema(cluster):
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres",
                         dbname="postgres", autocommit=True) as conn:
        conn.execute(SETUP)
    return cluster


class Env:
    def __init__(self, cluster):
        self.cluster = cluster
        self.key = make_key("HS256", kid="id-k1")
        self.other_key = make_key("HS256", kid="id-k1")  # same kid, different secret
        self.su = cluster.connect()
        self.su.execute("select auth.add_key(%s, 'HS256', %s)",
                        [self.key.kid, self.key.secret_text])

    def token(self, sub=USER_A, role="authenticated", ttl=3600, key=None, **extra) -> str:
        t = now()
        payload = {"iat": t, "exp": t + ttl}
        if sub is not OMIT:
            payload["sub"] = sub
        if role is not OMIT:
            payload["role"] = role
        payload.update(extra)
        return (key or self.key).sign(payload)

    def connect(self, user=AUTHENTICATOR):
        return self.cluster.connect(user)

    def alter_database(self, name: str, value: str) -> None:
        self.su.execute(sql.SQL("alter database postgres set {} = {}").format(
            sql.SQL(name), sql.Literal(value)))


@pytest.fixture
def env(schema, pg):
    return Env(pg)


# -- helpers ------------------------------------------------------------------------------


def set_stmt(name: str, value: str, local: bool = False):
    return sql.SQL("set {}{} = {}").format(sql.SQL("local " if local else ""), sql.SQL(name),
                                           sql.Literal(value))


IDENT_SQL = """
    select auth.uid()::text, auth.user_id(), auth.role(), auth.email(), auth.jwt(),
           auth.session_id()::text, current_user::text
"""
IDENT_KEYS = ("uid", "user_id", "role", "email", "jwt", "session_id", "current_user")


def ident(conn) -> dict:
    return dict(zip(IDENT_KEYS, conn.execute(IDENT_SQL).fetchone()))


def assert_no_identity(conn, current_user: str | None = AUTHENTICATOR) -> None:
    got = ident(conn)
    assert {k: v for k, v in got.items() if k != "current_user"} == {
        "uid": None, "user_id": None, "role": None, "email": None, "jwt": None,
        "session_id": None}, got
    if current_user is not None:
        assert got["current_user"] == current_user, got


def authenticate(conn, token: str) -> dict:
    return conn.execute("select auth.authenticate(%s)", [token]).fetchone()[0]


def visible_ids(conn) -> list[int]:
    return [r[0] for r in conn.execute("select id from public.items order by id").fetchall()]


def error_of(conn, query: str, params=None) -> tuple:
    """(sqlstate, primary, detail, hint) of the error the statement raises."""
    try:
        conn.execute(query, params)
    except psycopg.Error as error:
        d = error.diag
        return (error.sqlstate, d.message_primary, d.message_detail, d.message_hint)
    raise AssertionError(f"{query} raised nothing")


# == 1. forgery in verified mode ==========================================================


def test_client_settings_make_no_identity_without_authenticate(env):
    c = env.connect()
    forged = json.dumps({"sub": USER_B, "role": "authenticated", "email": "b@example.com",
                         "exp": now() + 3600, "session_id": SESSION})
    assert_no_identity(c)

    c.execute(set_stmt("request.jwt.claims", forged))
    assert_no_identity(c)
    c.execute("select set_config('request.jwt.claims', %s, false)", [forged])
    assert_no_identity(c)
    for name, value in (("sub", USER_B), ("role", "authenticated"), ("email", "b@x.org")):
        c.execute(set_stmt(f"request.jwt.claim.{name}", value))
    c.execute(set_stmt("request.jwt.claim", forged))
    assert_no_identity(c)

    # Within a transaction, with LOCAL settings, too.
    c.execute("begin")
    c.execute("select set_config('request.jwt.claims', %s, true)", [forged])
    c.execute(set_stmt("request.jwt.claim.sub", USER_B, local=True))
    assert_no_identity(c)
    c.execute("rollback")

    # SET ROLE without authenticate: the role's rights, but no identity, so RLS shows nothing.
    c.execute("set role authenticated")
    assert_no_identity(c, current_user="authenticated")
    assert visible_ids(c) == []
    c.execute("reset role")


def test_client_cannot_set_or_read_the_private_setting(env):
    c = env.connect()
    forged = json.dumps({"sub": USER_B, "role": "authenticated", "exp": now() + 3600})
    for statement, params in (
        (set_stmt("pg_session_auth.claims", forged), None),
        (sql.SQL("reset pg_session_auth.claims"), None),
        ("select set_config('pg_session_auth.claims', %s, false)", [forged]),
        ("select set_config('pg_session_auth.claims', %s, true)", [forged]),
        ("select current_setting('pg_session_auth.claims')", None),
        ("select current_setting('pg_session_auth.claims', true)", None),
        ("show pg_session_auth.claims", None),
        (set_stmt("pg_session_auth.claims_source", "request"), None),
        (sql.SQL("alter role {} set pg_session_auth.claims = {}").format(
            sql.SQL(AUTHENTICATOR), sql.Literal(forged)), None),
        (sql.SQL("alter role {} set pg_session_auth.claims_source = 'request'").format(
            sql.SQL(AUTHENTICATOR)), None),
    ):
        with raises_sqlstate("42501"):
            c.execute(statement, params)
    c.execute("begin")
    with raises_sqlstate("42501"):
        c.execute(set_stmt("pg_session_auth.claims", forged, local=True))
    c.execute("rollback")
    # Not listed for it either.
    rows = c.execute("select name, setting from pg_settings "
                     "where name = 'pg_session_auth.claims'").fetchall()
    assert all(setting is None for _, setting in rows), rows

    # A function of its own with the setting attached: refused at creation or at the call.
    try:
        c.execute(sql.SQL(
            "create function pg_temp.evil() returns text language sql "
            "set pg_session_auth.claims = {} as $$ select auth.uid()::text $$").format(
                sql.Literal(forged)))
    except psycopg.Error as error:
        assert error.sqlstate == "42501", error
    else:
        with raises_sqlstate("42501"):
            c.execute("select pg_temp.evil()")
    assert_no_identity(c)


@pytest.mark.parametrize("how", ["set", "set_config", "set local", "request source"])
def test_placeholder_claims_before_the_library_is_loaded(cluster_without_preload, how):
    """Without session_preload_libraries, `pg_session_auth.claims` is only a placeholder until
    the first call of one of the extension's functions loads the library: any role may set
    it then. When the library defines the real setting, PostgreSQL re-applies the value with
    the privileges of whoever set it, so a client's value must be dropped."""
    cluster = cluster_without_preload
    c = cluster.connect("app_user")
    forged = json.dumps({"sub": USER_B, "role": "authenticated", "exp": now() + 3600})
    c.execute("begin")
    if how == "set":
        c.execute(set_stmt("pg_session_auth.claims", forged))
    elif how == "set_config":
        c.execute("select set_config('pg_session_auth.claims', %s, false)", [forged])
    elif how == "set local":
        c.execute(set_stmt("pg_session_auth.claims", forged, local=True))
    else:
        c.execute(set_stmt("pg_session_auth.claims_source", "request"))
        c.execute(set_stmt("request.jwt.claims", forged))
    # The first call loads the library.
    assert c.execute("select auth.uid()::text, auth.jwt(), auth.role()").fetchone() == (
        None, None, None)
    assert c.execute("select auth.uid()::text").fetchone()[0] is None
    c.execute("commit")
    assert c.execute("select auth.uid()::text, auth.jwt()").fetchone() == (None, None)
    # app_user may read settings (pg_read_all_settings): the forged value is gone.
    assert c.execute(
        "select coalesce(current_setting('pg_session_auth.claims', true), '')").fetchone()[0] == ""


def test_client_settings_cannot_replace_a_verified_identity(env):
    c = env.connect()
    token_a = env.token(USER_A, email="a@example.com")
    forged = json.dumps({"sub": USER_B, "role": "authenticated", "email": "b@example.com",
                         "exp": now() + 3600})
    c.execute("begin")
    authenticate(c, token_a)
    mine = ident(c)
    assert mine["uid"] == USER_A and mine["email"] == "a@example.com"
    assert mine["current_user"] == "authenticated"

    # request.jwt.claims follows the bound identity: a client cannot rewrite it.
    for statement, params in ((set_stmt("request.jwt.claims", forged, local=True), None),
                              ("select set_config('request.jwt.claims', %s, true)", [forged])):
        c.execute("savepoint forge")
        with raises_sqlstate("42501"):
            c.execute(statement, params)
        c.execute("rollback to savepoint forge")
    c.execute("savepoint forge")
    with raises_sqlstate("42501"):
        c.execute(set_stmt("request.jwt.claim.sub", USER_B, local=True))
    c.execute("rollback to savepoint forge")
    assert ident(c) == mine
    with raises_sqlstate("42501"):
        c.execute("select set_config('pg_session_auth.claims', %s, true)", [forged])
    c.execute("rollback")

    c.execute("begin")
    authenticate(c, token_a)
    # Still unreadable with an identity bound.
    with raises_sqlstate("42501"):
        c.execute("select current_setting('pg_session_auth.claims', true)")
    c.execute("rollback")

    # RESET ROLE: back to the login role, the identity is still the verified one.
    c.execute("begin")
    authenticate(c, token_a)
    c.execute("reset role")
    got = ident(c)
    assert got["current_user"] == AUTHENTICATOR
    assert {k: got[k] for k in ("uid", "jwt")} == {k: mine[k] for k in ("uid", "jwt")}
    c.execute("set local role authenticated")
    assert visible_ids(c) == ids_of(USER_A)
    c.execute("commit")
    assert_no_identity(c)

    # RESET ALL: at most the verified identity remains, never another one.
    def refused_forgery():
        c.execute("savepoint forge")
        with raises_sqlstate("42501"):
            c.execute(set_stmt("request.jwt.claims", forged, local=True))
        c.execute("rollback to savepoint forge")

    c.execute("begin")
    authenticate(c, token_a)
    refused_forgery()
    c.execute("reset all")
    got = ident(c)
    assert got["uid"] in (USER_A, None), got
    assert got["jwt"] in (mine["jwt"], None), got
    assert got["email"] in ("a@example.com", None), got
    refused_forgery()
    got = ident(c)
    assert got["uid"] in (USER_A, None), got
    if got["current_user"] == "authenticated":
        assert visible_ids(c) in (ids_of(USER_A), [])
    c.execute("commit")
    assert_no_identity(c)


# == 2. scoping ===========================================================================


@pytest.mark.parametrize("end", ["commit", "rollback", "abort", "end"])
def test_binding_ends_with_the_transaction(env, end):
    c = env.connect()
    c.execute("begin")
    claims = authenticate(c, env.token(USER_A, email="a@example.com", session_id=SESSION))
    got = ident(c)
    assert got == {"uid": USER_A, "user_id": USER_A, "role": "authenticated",
                   "email": "a@example.com", "jwt": claims, "session_id": SESSION,
                   "current_user": "authenticated"}
    assert visible_ids(c) == ids_of(USER_A)
    # request.jwt.claims is set for SQL written for PostgREST.
    assert json.loads(c.execute("select current_setting('request.jwt.claims')")
                      .fetchone()[0]) == claims
    c.execute(end)
    assert_no_identity(c)
    assert c.execute("select current_setting('request.jwt.claims', true)").fetchone()[0] \
        in (None, "")


def test_rollback_to_savepoint_restores_the_previous_identity(env):
    c = env.connect()
    c.execute("begin")
    authenticate(c, env.token(USER_A))
    c.execute("savepoint s")
    authenticate(c, env.token(USER_B, role="anon"))
    got = ident(c)
    assert (got["uid"], got["role"], got["current_user"]) == (USER_B, "anon", "anon")
    c.execute("rollback to savepoint s")
    got = ident(c)
    assert (got["uid"], got["role"], got["current_user"]) == (USER_A, "authenticated",
                                                              "authenticated")
    assert visible_ids(c) == ids_of(USER_A)

    # Nothing bound before the savepoint: ROLLBACK TO leaves nothing.
    c.execute("commit")
    c.execute("begin")
    c.execute("savepoint s")
    authenticate(c, env.token(USER_B))
    c.execute("rollback to savepoint s")
    assert_no_identity(c)
    c.execute("commit")


def test_release_savepoint_keeps_the_identity(env):
    c = env.connect()
    c.execute("begin")
    authenticate(c, env.token(USER_A))
    c.execute("savepoint s")
    authenticate(c, env.token(USER_B, role="anon"))
    c.execute("release savepoint s")
    got = ident(c)
    assert (got["uid"], got["current_user"]) == (USER_B, "anon")
    c.execute("savepoint t")
    c.execute("savepoint u")
    authenticate(c, env.token(USER_C))
    c.execute("release savepoint t")  # releases u as well
    got = ident(c)
    assert (got["uid"], got["current_user"]) == (USER_C, "authenticated")
    assert visible_ids(c) == ids_of(USER_C)
    c.execute("commit")
    assert_no_identity(c)


def test_second_authenticate_replaces_the_first(env):
    c = env.connect()
    c.execute("begin")
    authenticate(c, env.token(USER_A, email="a@example.com", session_id=SESSION))
    second = authenticate(c, env.token(USER_B, role="anon"))
    got = ident(c)
    # Replaced as a whole, never merged: no email, no session id left over from the first.
    assert got == {"uid": USER_B, "user_id": USER_B, "role": "anon", "email": None,
                   "jwt": second, "session_id": None, "current_user": "anon"}
    # A token without a role claim leaves the current role as it is.
    third = authenticate(c, env.token(USER_C, role=OMIT))
    got = ident(c)
    assert (got["uid"], got["role"], got["jwt"], got["current_user"]) == (
        USER_C, None, third, "anon")
    c.execute("commit")
    assert_no_identity(c)


def test_an_error_after_authenticate_leaves_no_identity(env):
    c = env.connect()
    c.execute("begin")
    authenticate(c, env.token(USER_A))
    with raises_sqlstate("22012"):
        c.execute("select 1 / 0")
    with raises_sqlstate("25P02"):
        ident(c)
    c.execute("rollback")
    assert_no_identity(c)
    c.execute("begin")
    assert_no_identity(c)
    c.execute("commit")

    # COMMIT of a failed transaction is a rollback, too.
    c.execute("begin")
    authenticate(c, env.token(USER_A))
    with raises_sqlstate("22012"):
        c.execute("select 1 / 0")
    c.execute("commit")
    assert_no_identity(c)


def test_authenticate_in_autocommit_binds_for_one_statement_only(env):
    c = env.connect()
    notices = collect_notices(c)
    token = env.token(USER_A)
    row = c.execute("select auth.authenticate(%s) ->> 'sub', current_user::text",
                    [token]).fetchone()
    assert row[0] == USER_A
    warnings = [n for n in notices if n.severity_nonlocalized == "WARNING"]
    assert len(warnings) == 1 and WARNING_TEXT in warnings[0].message_primary, notices
    assert_no_identity(c)
    assert_no_identity(c)

    # A nested caller in autocommit: same.
    notices.clear()
    assert c.execute("select public.login(%s)::text", [token]).fetchone()[0] == USER_A
    assert any(WARNING_TEXT in (n.message_primary or "") for n in notices), notices
    assert_no_identity(c)

    # Inside a transaction block: no warning.
    notices.clear()
    c.execute("begin")
    authenticate(c, token)
    c.execute("commit")
    assert not [n for n in notices if n.severity_nonlocalized == "WARNING"], notices


def test_multi_statement_query_binds_for_its_implicit_transaction(env):
    c = env.connect()
    notices = collect_notices(c)
    token = env.token(USER_A)
    assert "'" not in token
    cur = c.execute(f"select auth.authenticate('{token}') ->> 'sub'; "
                    "select auth.uid()::text, current_user::text")
    assert cur.fetchone()[0] == USER_A
    assert cur.nextset()
    assert cur.fetchone() == (USER_A, "authenticated")
    # The binding lasted beyond the first statement, so no "this statement only" warning.
    assert not [n for n in notices if WARNING_TEXT in (n.message_primary or "")], notices
    assert_no_identity(c)


def test_session_id_claim_and_sid_fallback(env):
    c = env.connect()
    other = "4fa0b04c-ce95-4a4a-9b9c-7a8d5e6f7a05"
    for extra, expected in (({"session_id": SESSION}, SESSION), ({"sid": SESSION}, SESSION),
                            ({"session_id": SESSION, "sid": other}, SESSION),
                            ({"sid": "not-a-uuid"}, None), ({}, None)):
        c.execute("begin")
        authenticate(c, env.token(USER_A, **extra))
        assert ident(c)["session_id"] == expected, extra
        c.execute("rollback")


# == 3. expiry ============================================================================


def test_identity_expires_at_the_first_statement_after_exp(env):
    env.alter_database("pg_session_auth.leeway", "0")
    c = env.connect()
    exp = now() + 3
    token = env.key.sign({"sub": USER_A, "role": "authenticated", "iat": now(), "exp": exp})
    c.execute("begin")
    authenticate(c, token)
    assert ident(c)["uid"] == USER_A
    assert visible_ids(c) == ids_of(USER_A)
    # One statement that starts before exp and runs past it: every row sees the same value,
    # the per-row wrapper as much as the once-per-statement initPlan.
    rows = c.execute("""
        select public.uid_wrap()::text, auth.uid()::text, pg_sleep(0.5)::text
        from generate_series(1, 8)""").fetchall()
    assert time.time() > exp
    assert {(r[0], r[1]) for r in rows} == {(USER_A, USER_A)}
    # The next statement starts after exp: no identity, RLS shows nothing; the role remains.
    while time.time() < exp + 0.05:
        time.sleep(0.05)
    got = ident(c)
    assert got["uid"] is None and got["jwt"] is None and got["role"] is None, got
    assert got["current_user"] == "authenticated"
    assert visible_ids(c) == []
    assert c.execute("select count(*) from public.items where owner = public.uid_wrap()"
                     ).fetchone()[0] == 0
    with raises_sqlstate("PT401", invalid("expired")):
        c.execute("select auth.check_request()")
    c.execute("rollback")


# == 4. parallel query ====================================================================


# PostgreSQL 16 renamed force_parallel_mode to debug_parallel_query.
FORCE_PARALLEL = "debug_parallel_query" if PG_MAJOR >= 16 else "force_parallel_mode"
PARALLEL = ("set local parallel_setup_cost = 0; set local parallel_tuple_cost = 0; "
            "set local min_parallel_table_scan_size = 0; "
            "set local max_parallel_workers_per_gather = 2; "
            f"set local {FORCE_PARALLEL} = on; set local parallel_leader_participation = off")
SERIAL = f"set local max_parallel_workers_per_gather = 0; set local {FORCE_PARALLEL} = off"

RLS_QUERY = "select id from public.items where note like 'note %' order by id"
WRAPPED_QUERY = ("select id, public.uid_wrap()::text from public.items_open "
                 "where owner = public.uid_wrap() order by id")


def run_in(c, settings: str, query: str):
    c.execute("savepoint p")
    c.execute(settings)
    plan = "\n".join(r[0] for r in c.execute(
        "explain (analyze, verbose, costs off, timing off) " + query).fetchall())
    rows = c.execute(query).fetchall()
    c.execute("rollback to savepoint p")
    return plan, rows


def workers_launched(plan: str) -> int:
    found = re.findall(r"Workers Launched: (\d+)", plan)
    return sum(int(n) for n in found)


@pytest.mark.parametrize("user", [USER_A, USER_B])
def test_parallel_workers_see_the_bound_identity(env, user):
    c = env.connect()
    c.execute("begin")
    authenticate(c, env.token(user))
    for query in (RLS_QUERY, WRAPPED_QUERY):
        par_plan, par_rows = run_in(c, PARALLEL, query)
        ser_plan, ser_rows = run_in(c, SERIAL, query)
        assert "Gather" in par_plan, par_plan
        assert workers_launched(par_plan) >= 1, par_plan
        assert "Gather" not in ser_plan, ser_plan
        assert par_rows == ser_rows
        assert [r[0] for r in par_rows] == ids_of(user)
    # The wrapper's rows came from the workers, which read the identity per row.
    assert all(r[1] == user for r in par_rows)
    # The RLS policy's call is an initPlan of the leader; the wrapper runs in the workers.
    par_plan, _ = run_in(c, PARALLEL, WRAPPED_QUERY)
    scan = par_plan[par_plan.index("Parallel Seq Scan on public.items_open"):]
    assert "Filter: (items_open.owner = uid_wrap())" in scan, par_plan
    assert re.search(r"Worker \d+:  actual rows=[1-9]", scan), par_plan
    assert "InitPlan" not in par_plan, par_plan
    c.execute("commit")


def test_parallel_workers_without_identity_see_nothing(env):
    c = env.connect()
    c.execute("begin")
    c.execute("set local role authenticated")
    par_plan, par_rows = run_in(c, PARALLEL, WRAPPED_QUERY)
    assert workers_launched(par_plan) >= 1, par_plan
    assert par_rows == []
    c.execute("commit")


# == 5. SECURITY DEFINER and nested calls =================================================


def test_security_definer_function_sees_the_callers_identity(env):
    c = env.connect()
    assert c.execute("select public.sd_identity()").fetchone()[0] == {
        "uid": None, "sub": None, "role": None, "current_user": "definer_owner",
        "visible": 0}
    c.execute("begin")
    authenticate(c, env.token(USER_B))
    assert c.execute("select public.sd_identity()").fetchone()[0] == {
        "uid": USER_B, "sub": USER_B, "role": "authenticated",
        "current_user": "definer_owner", "visible": len(ids_of(USER_B))}
    # And the caller's role is back after the call.
    assert ident(c)["current_user"] == "authenticated"
    c.execute("commit")


def test_nested_authenticate_binds_until_the_end_of_the_transaction(env):
    c = env.connect()
    c.execute("begin")
    assert c.execute("select public.login(%s)::text", [env.token(USER_A)]).fetchone()[0] == USER_A
    got = ident(c)
    assert (got["uid"], got["current_user"]) == (USER_A, "authenticated")
    assert c.execute("select public.login(%s)::text",
                     [env.token(USER_B, role="anon")]).fetchone()[0] == USER_B
    got = ident(c)
    assert (got["uid"], got["current_user"]) == (USER_B, "anon")
    # A function with a SET clause (its own GUC nesting level): the binding survives its exit.
    assert c.execute("select public.login_cfg(%s)::text",
                     [env.token(USER_C)]).fetchone()[0] == USER_C
    got = ident(c)
    assert (got["uid"], got["current_user"]) == (USER_C, "authenticated")
    c.execute("commit")
    assert_no_identity(c)


def test_authenticate_twice_in_one_statement_the_last_one_wins(env):
    c = env.connect()
    ta, tb = env.token(USER_A), env.token(USER_B, role="anon")
    c.execute("begin")
    subs = c.execute("select auth.authenticate(t) ->> 'sub' from (values (1, %s), (2, %s)) "
                     "v(n, t) order by n", [ta, tb]).fetchall()
    assert [s[0] for s in subs] == [USER_A, USER_B]
    got = ident(c)
    assert (got["uid"], got["current_user"]) == (USER_B, "anon")
    c.execute("commit")

    c.execute("begin")
    row = c.execute("select auth.authenticate(%s) ->> 'sub', auth.authenticate(%s) ->> 'sub'",
                    [tb, ta]).fetchone()
    assert row == (USER_B, USER_A)
    got = ident(c)
    assert (got["uid"], got["current_user"]) == (USER_A, "authenticated")
    c.execute("commit")
    assert_no_identity(c)


def test_authenticate_in_security_definer_with_a_role_claim_fails_cleanly(env):
    c = env.connect()
    with_role = env.token(USER_A)
    # Autocommit.
    state, message, _, _ = error_of(c, "select public.sd_authenticate(%s)", [with_role])
    assert state not in ("XX000", "28000"), (state, message)
    assert state == "42501", (state, message)
    assert_no_identity(c)
    # In a transaction, rolled back to a savepoint.
    c.execute("begin")
    c.execute("savepoint s")
    state2, message2, _, _ = error_of(c, "select public.sd_authenticate(%s)", [with_role])
    assert (state2, message2) == (state, message)
    c.execute("rollback to savepoint s")
    assert_no_identity(c)
    # Caught inside the function: nothing of the binding survives, not even the claims that
    # were stored before the role could not be set.
    result = c.execute("select public.sd_try_authenticate(%s)", [with_role]).fetchone()[0]
    assert result.startswith("42501 "), result
    assert_no_identity(c)
    assert c.execute("select current_setting('request.jwt.claims', true)").fetchone()[0] \
        in (None, "")
    c.execute("commit")
    # A bound identity survives a failed attempt to replace it the same way.
    c.execute("begin")
    authenticate(c, env.token(USER_B))
    result = c.execute("select public.sd_try_authenticate(%s)", [with_role]).fetchone()[0]
    assert result.startswith("42501 "), result
    got = ident(c)
    assert (got["uid"], got["current_user"]) == (USER_B, "authenticated")
    c.execute("commit")


def test_authenticate_in_security_definer_without_a_role_claim(env):
    c = env.connect()
    c.execute("begin")
    claims = c.execute("select public.sd_authenticate(%s)",
                       [env.token(USER_C, role=OMIT)]).fetchone()[0]
    assert claims["sub"] == USER_C
    got = ident(c)
    assert (got["uid"], got["role"], got["current_user"]) == (USER_C, None, AUTHENTICATOR)
    c.execute("commit")
    assert_no_identity(c)


# == 6. role-claim abuse ==================================================================


BAD_ROLE_STRINGS = ["postgres", "sa_super", "none", "", '"authenticated"', "Authenticated",
                    "authenticated ", " anon", "no_such_role", "not_granted",
                    "session_auth_admin", "pg_read_all_data", AUTHENTICATOR, "public",
                    "anon,authenticated", "current_user", "definer_owner"]
BAD_ROLE_TYPES = [5, None, ["authenticated"], {"name": "authenticated"}, True]


def check_rejected(env, c, token, message):
    with raises_sqlstate("28000", message):
        authenticate(c, token)
    assert_no_identity(c)
    c.execute("begin")
    assert c.execute("select public.try_authenticate(%s)",
                     [token]).fetchone()[0] == f"28000 {message}"
    assert_no_identity(c)
    c.execute("commit")


def test_role_claims_that_may_not_be_assumed(env):
    c = env.connect()
    for role in BAD_ROLE_STRINGS:
        check_rejected(env, c, env.token(USER_A, role=role), ROLE_NOT_ALLOWED)
    for role in BAD_ROLE_TYPES:
        check_rejected(env, c, env.token(USER_A, role=role), INVALID_CLAIM_TYPE)


def test_role_claims_rejected_even_when_listed(env):
    su = env.su
    su.execute("grant sa_super to authenticator")
    try:
        env.alter_database(
            "pg_session_auth.allowed_roles",
            'anon, authenticated,not_granted,sa_super,postgres,none,"authenticated",'
            "Authenticated,no_such_role, ,")
        c = env.connect()
        # Granted, listed, but a superuser; listed but not granted; listed but nonexistent.
        for role in ("sa_super", "postgres", "not_granted", "none", '"authenticated"',
                     "Authenticated", "no_such_role", ""):
            check_rejected(env, c, env.token(USER_A, role=role), ROLE_NOT_ALLOWED)
        for role, expected in (("anon", "anon"), ("authenticated", "authenticated")):
            c.execute("begin")
            authenticate(c, env.token(USER_A, role=role))
            assert ident(c)["current_user"] == expected
            c.execute("commit")
    finally:
        su.execute("revoke sa_super from authenticator")


def test_valid_role_claims_switch_the_role(env):
    c = env.connect()
    for role in ("anon", "authenticated"):
        c.execute("begin")
        authenticate(c, env.token(USER_A, role=role))
        got = ident(c)
        assert (got["current_user"], got["role"]) == (role, role)
        assert c.execute("select session_user::text").fetchone()[0] == AUTHENTICATOR
        c.execute("commit")
        assert ident(c)["current_user"] == AUTHENTICATOR
    # No role claim: the role is unchanged, the identity is bound.
    c.execute("begin")
    authenticate(c, env.token(USER_A, role=OMIT))
    got = ident(c)
    assert (got["uid"], got["role"], got["current_user"]) == (USER_A, None, AUTHENTICATOR)
    c.execute("commit")


def test_custom_role_claim(env):
    env.alter_database("pg_session_auth.role_claim", "db_role")
    c = env.connect()
    c.execute("begin")
    authenticate(c, env.token(USER_A, role="postgres", db_role="anon"))
    got = ident(c)
    assert (got["current_user"], got["role"]) == ("anon", "anon")
    c.execute("commit")
    # The usual claim is no role claim any more: data only.
    c.execute("begin")
    authenticate(c, env.token(USER_A, role="authenticated"))
    got = ident(c)
    assert (got["uid"], got["current_user"], got["role"]) == (USER_A, AUTHENTICATOR, None)
    c.execute("commit")
    check_rejected(env, c, env.token(USER_A, role="anon", db_role="postgres"), ROLE_NOT_ALLOWED)
    check_rejected(env, c, env.token(USER_A, db_role=7), INVALID_CLAIM_TYPE)


# == 7. rejected tokens ===================================================================


def test_nul_in_claims_is_malformed_as_in_verify(env):
    c = env.connect()
    t = now()
    for raw in (
        '{"sub":"a\\u0000b","exp":%d,"role":"authenticated"}' % (t + 600),
        '{"sub":"%s","exp":%d,"x\\u0000":1}' % (USER_A, t + 600),
        '{"sub":"%s","exp":%d,"n":{"a":["ok","\\u0000"]}}' % (USER_A, t + 600),
        '{"sub":"%s","exp":%d,"role":"authenticated\\u0000"}' % (USER_A, t + 600),
    ):
        token = hmac_token({"alg": "HS256", "typ": "JWT", "kid": env.key.kid}, raw.encode(),
                           env.key.private)
        v = error_of(c, "select auth.verify(%s)", [token])
        a = error_of(c, "select auth.authenticate(%s)", [token])
        assert v[:2] == ("28000", invalid("malformed")), v
        assert a == v
        assert_no_identity(c)


def test_authenticate_rejects_what_verify_rejects(env):
    c = env.connect()
    t = now()
    good = typical_claims(sub=USER_A)
    h = {"alg": "HS256", "typ": "JWT", "kid": env.key.kid}
    valid = env.key.sign(good)
    head, body, sig = valid.split(".")
    bad = {
        "empty": "",
        "garbage": "not a token",
        "two parts": f"{head}.{body}",
        "padding": f"{head}=.{body}.{sig}",
        "tampered payload": f"{head}.{json_b64(dict(good, sub=USER_B))}.{sig}",
        "bad signature": f"{head}.{body}.{sig[:-4]}AAAA",
        "other secret": env.other_key.sign(good),
        "unknown kid": env.key.sign(good, kid="nope"),
        "alg none": assemble({"alg": "none", "kid": env.key.kid}, good, b""),
        "alg mismatch": env.key.sign(good, alg="HS512"),
        "jku header": env.key.sign(good, headers={"jku": "https://evil.example/jwks"}),
        "crit header": env.key.sign(good, headers={"crit": ["exp"]}),
        "expired": env.key.sign(dict(good, exp=t - 120)),
        "not yet valid": env.key.sign(dict(good, nbf=t + 3600)),
        "issued in the future": env.key.sign(dict(good, iat=t + 3600)),
        "no exp": env.key.sign({k: v for k, v in good.items() if k != "exp"}),
        "exp as text": env.key.sign(dict(good, exp=str(t + 600))),
        "too large": env.key.sign(dict(good, pad="x" * 9000)),
        "array payload": assemble(h, json.dumps([1, 2]).encode(), b"x" * 32),
        "bad role and expired": env.key.sign(dict(good, exp=t - 120, role="postgres")),
    }
    for name, token in bad.items():
        v = error_of(c, "select auth.verify(%s)", [token])
        a = error_of(c, "select auth.authenticate(%s)", [token])
        assert v[0] == "28000" and v[1].startswith("invalid token: "), (name, v)
        assert a == v, name
        assert_no_identity(c)
    assert error_of(c, "select auth.authenticate(NULL)") == error_of(
        c, "select auth.verify(NULL)")
    # The valid one: same claims from both.
    c.execute("begin")
    assert authenticate(c, valid) == c.execute("select auth.verify(%s)",
                                               [valid]).fetchone()[0]
    c.execute("commit")
    # No key at all: 55000 from both.
    env.su.execute("delete from auth.keys")
    v = error_of(c, "select auth.verify(%s)", [valid])
    assert v[0] == "55000"
    assert error_of(c, "select auth.authenticate(%s)", [valid]) == v
    assert_no_identity(c)


# == 8. request mode ======================================================================


UNSET = object()


def request_mode_conn(env):
    env.alter_database("pg_session_auth.claims_source", "request")
    return env.connect()


COMPARE_SQL = """
    select auth.uid()::text, supa.try_uuid(supa.uid_text())::text,
           auth.role(), supa.role(),
           auth.email(), supa.email(),
           auth.jwt(), supa.jwt(),
           auth.user_id(), supa.uid_text()
"""


def set_request(c, claims_text, legacy: dict) -> None:
    if claims_text is not UNSET:
        c.execute("select set_config('request.jwt.claims', %s, true)", [claims_text])
    for name, value in legacy.items():
        if value is not UNSET:
            c.execute("select set_config(%s, %s, true)", [f"request.jwt.claim.{name}", value])


def compare(c, label):
    row = c.execute(COMPARE_SQL).fetchone()
    pairs = {"uid": row[0:2], "role": row[2:4], "email": row[4:6], "jwt": row[6:8],
             "user_id": row[8:10]}
    for what, (ours, theirs) in pairs.items():
        assert ours == theirs, (label, what, ours, theirs)


def test_request_mode_matches_supabase_helpers(env):
    c = request_mode_conn(env)
    # Never set at all (a fresh session): no identity, as Supabase.
    compare(c, "fresh session")
    assert_no_identity(c)

    future = now() + 3600
    claim_values = [
        UNSET,
        "",
        json.dumps({"sub": USER_A, "role": "authenticated", "email": "a@example.com",
                    "exp": future, "session_id": SESSION}),
        json.dumps({"sub": USER_B, "role": "anon", "exp": future}),
        json.dumps({"sub": "not-a-uuid", "email": "n@example.com", "exp": future}),
        json.dumps({"sub": USER_C.upper(), "role": "authenticated"}),  # no exp: accepted
        json.dumps({"sub": USER_A.replace("-", ""), "exp": future}),
        json.dumps({"email": "only@example.com", "exp": future}),
    ]
    legacy_subs = [UNSET, "", USER_B, "not-a-uuid"]
    legacy_roles = [UNSET, "", "anon"]
    legacy_emails = [UNSET, "", "legacy@example.com"]
    count = 0
    for claims_text in claim_values:
        for sub in legacy_subs:
            for role in legacy_roles:
                for email in legacy_emails:
                    c.execute("begin")
                    set_request(c, claims_text, {"sub": sub, "role": role, "email": email})
                    compare(c, (claims_text, sub, role, email))
                    c.execute("rollback")
                    count += 1
    assert count == 8 * 4 * 3 * 3
    # Session-level values (what a pooler might leave behind) are read the same way.
    c.execute(set_stmt("request.jwt.claims", claim_values[2]))
    compare(c, "session-level")
    assert ident(c)["uid"] == USER_A


def test_request_mode_non_string_or_empty_claim_values_as_supabase(env):
    """Supabase's helpers return `claims ->> name`: '' for an empty string, the JSON text of
    a number or boolean. Only an empty *setting* counts as absent."""
    c = request_mode_conn(env)
    mismatches = []
    for claims_obj in ({"sub": USER_A, "email": "", "role": "authenticated"},
                       {"sub": USER_A, "role": ""},
                       {"sub": USER_A, "role": 5, "email": 7},
                       {"sub": USER_A, "email": True}):
        c.execute("begin")
        set_request(c, json.dumps(dict(claims_obj, exp=now() + 3600)), {})
        try:
            compare(c, claims_obj)
        except AssertionError as error:
            mismatches.append(error.args[0])
        c.execute("rollback")
    assert not mismatches, mismatches


SUB_FORMS = [
    USER_A, USER_A.upper(), "{" + USER_A + "}", USER_A.replace("-", ""),
    # Accepted by PostgreSQL's uuid input, refused by the extension:
    "{" + USER_A.replace("-", "") + "}", "0b6f-7c0e-8a51-4c0c-9d5e-3c4f-1a2b-3c01",
    "0b6f7c0e-8a514c0c-9d5e3c4f-1a2b3c01",
    # Refused by PostgreSQL's uuid input (Supabase's `::uuid` raises), accepted by the
    # extension: another subject string that maps onto USER_A's uid.
    f"urn:uuid:{USER_A}", f"urn:uuid:{USER_A.upper()}",
    # Refused by both.
    f" {USER_A}", f"{USER_A} ", f"{USER_A}x", USER_A[:-1], "not-a-uuid",
]


def test_uid_parses_sub_exactly_as_postgresql_uuid_input(env):
    """auth.uid() is `sub::uuid` (Supabase's definition), NULL where that cast would raise."""
    c = env.connect()
    mismatches = []
    for sub in SUB_FORMS:
        c.execute("begin")
        authenticate(c, env.token(sub, role=OMIT))
        ours, theirs = c.execute("select auth.uid()::text, supa.try_uuid(auth.user_id())::text"
                                 ).fetchone()
        if ours != theirs:
            mismatches.append((sub, ours, theirs))
        c.execute("rollback")
    assert not mismatches, mismatches


def test_request_mode_uid_parses_sub_exactly_as_supabase(env):
    c = request_mode_conn(env)
    mismatches = []
    for sub in SUB_FORMS:
        for legacy in (False, True):
            c.execute("begin")
            if legacy:
                set_request(c, UNSET, {"sub": sub})
            else:
                set_request(c, json.dumps({"sub": sub, "exp": now() + 3600}), {})
            ours, theirs = c.execute(
                "select auth.uid()::text, supa.try_uuid(supa.uid_text())::text").fetchone()
            if ours != theirs:
                mismatches.append((sub, legacy, ours, theirs))
            c.execute("rollback")
    assert not mismatches, mismatches


def test_request_mode_legacy_whole_claim_setting(env):
    """Supabase's auth.jwt() reads the legacy `request.jwt.claim` setting first."""
    c = request_mode_conn(env)
    c.execute("begin")
    c.execute(set_stmt("request.jwt.claim",
                       json.dumps({"sub": USER_B, "exp": now() + 3600}), local=True))
    compare(c, "legacy request.jwt.claim only")
    c.execute("rollback")


def test_request_mode_expired_claims_and_check_request(env):
    c = request_mode_conn(env)
    c.execute("begin")
    c.execute("set local role authenticated")
    expired = json.dumps({"sub": USER_A, "role": "authenticated", "email": "a@example.com",
                          "exp": now() - 120})
    set_request(c, expired, {})
    got = ident(c)
    assert (got["uid"], got["jwt"], got["role"], got["email"]) == (None, None, None, None)
    assert visible_ids(c) == []
    with raises_sqlstate("PT401", invalid("expired")):
        c.execute("select auth.check_request()")
    c.execute("rollback")

    # Within the leeway it is still valid (PostgREST admitted it).
    c.execute("begin")
    set_request(c, json.dumps({"sub": USER_A, "exp": now() - 5}), {})
    assert ident(c)["uid"] == USER_A
    c.execute("select auth.check_request()")
    c.execute("rollback")

    for text in (json.dumps({"sub": USER_A, "role": "authenticated", "exp": now() + 600}),
                 json.dumps({"sub": USER_A}), "", UNSET):
        c.execute("begin")
        set_request(c, text, {})
        c.execute("select auth.check_request()")
        c.execute("rollback")
    # Valid claims: RLS by them.
    c.execute("begin")
    c.execute("set local role authenticated")
    set_request(c, json.dumps({"sub": USER_B, "exp": now() + 600}), {})
    assert visible_ids(c) == ids_of(USER_B)
    c.execute("rollback")

    for text in ("not json", "[1, 2]", '"string"'):
        c.execute("begin")
        set_request(c, text, {})
        assert ident(c)["uid"] is None
        with raises_sqlstate("PT401") as caught:
            c.execute("select auth.check_request()")
        assert caught.message.startswith("invalid token: "), caught.message
        c.execute("rollback")


def test_request_mode_sees_authenticate_too(env):
    c = request_mode_conn(env)
    c.execute("begin")
    authenticate(c, env.token(USER_C))
    got = ident(c)
    assert (got["uid"], got["current_user"]) == (USER_C, "authenticated")
    c.execute("commit")
    assert_no_identity(c)


# == 9. generic cached plans ==============================================================


def test_generic_plans_never_bake_in_an_identity(env):
    c = env.connect()
    c.execute("set plan_cache_mode = force_generic_plan")
    c.execute("prepare mine as select array_agg(id order by id) from public.items")
    c.execute("prepare mine_where(int) as select count(*) from public.items "
              "where owner = auth.uid() and id > $1")
    c.execute("begin")
    authenticate(c, env.token(USER_A))
    plan = "\n".join(r[0] for r in c.execute("explain (costs off) execute mine_where(0)"))
    assert INITPLAN in plan, plan
    assert f"(owner = {INITPLAN_VALUE})" in plan, plan
    c.execute("commit")
    for _ in range(3):
        for user in (USER_A, USER_B, USER_C):
            c.execute("begin")
            authenticate(c, env.token(user))
            assert c.execute("execute mine").fetchone()[0] == ids_of(user)
            assert c.execute("execute mine_where(0)").fetchone()[0] == len(ids_of(user))
            c.execute("commit")
        c.execute("begin")
        c.execute("set local role authenticated")
        assert c.execute("execute mine").fetchone()[0] is None
        c.execute("commit")
    # The plan really was a cached generic one.
    rows = c.execute("select name, generic_plans, custom_plans from pg_prepared_statements "
                     "where name in ('mine', 'mine_where') order by name").fetchall()
    assert all(g >= 9 and cu == 0 for _, g, cu in rows), rows


def test_plpgsql_cached_plans_follow_the_identity(env):
    c = env.connect()
    c.execute("set plan_cache_mode = force_generic_plan")
    for _ in range(2):
        for user in (USER_A, USER_B):
            c.execute("begin")
            authenticate(c, env.token(user))
            assert c.execute("select public.my_ids()").fetchone()[0] == ids_of(user)
            c.execute("commit")
    # Switching identity inside one transaction, same role: same cached plan, new identity.
    c.execute("begin")
    for user in (USER_A, USER_B, USER_C, USER_A):
        authenticate(c, env.token(user))
        assert c.execute("select public.my_ids()").fetchone()[0] == ids_of(user)
    c.execute("commit")


def test_explain_shows_the_initplan(env):
    c = env.connect()
    c.execute("begin")
    authenticate(c, env.token(USER_A))
    plan = "\n".join(r[0] for r in c.execute(
        "explain (costs off) select * from public.items"))
    assert INITPLAN in plan, plan
    assert f"Filter: (owner = {INITPLAN_VALUE})" in plan, plan
    c.execute("commit")


# == 10. claim functions inside PL/pgSQL expressions ======================================


READY = "database system is ready to accept connections"


def wait_until_recovered(cluster, ready_before: int, timeout: float = 30.0) -> None:
    """After a backend crash: waits until the postmaster has reinitialized and accepts
    connections again (so that the next test does not meet a server in recovery)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cluster.server_log().count(READY) > ready_before:
            try:
                cluster.sql("select 1")
                return
            except psycopg.OperationalError:
                pass
        time.sleep(0.1)
    raise AssertionError("the server did not recover from the crash")


@pytest.mark.parametrize("function, expected", [
    ("public.plpgsql_uid_text()", USER_A),
    ("public.plpgsql_signed_in()", True),
    ("public.plpgsql_jwt_sub()", USER_A),
    ("public.plpgsql_declared()", USER_A),
])
def test_claim_functions_in_plpgsql_expressions(env, function, expected):
    """`return auth.uid()::text`, `if auth.uid() is null`, `auth.jwt() ->> 'sub'` in
    PL/pgSQL: the planner rewrite must not turn them into something PL/pgSQL's simple
    expression evaluator cannot run (it crashed the backend with SIGSEGV)."""
    c = env.connect()
    ready_before = env.cluster.server_log().count(READY)
    try:
        c.execute("begin")
        authenticate(c, env.token(USER_A))
        assert c.execute(f"select {function}").fetchone()[0] == expected
        c.execute("commit")
        c.execute("begin")
        c.execute("select 1")
        assert c.execute(f"select {function}").fetchone()[0] in (None, False, "nobody")
        c.execute("commit")
    except psycopg.OperationalError as error:
        wait_until_recovered(env.cluster, ready_before)
        pytest.fail(f"the backend crashed evaluating {function}: {error}")
