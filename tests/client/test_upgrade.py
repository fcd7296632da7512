"""Upgrades: an install of an earlier version, updated with ALTER EXTENSION ... UPDATE, must
equal a fresh install of the current version, keep its data, and work.

The earlier versions' install scripts are kept in tests/upgrade/ exactly as they were generated
(`cargo pgrx schema` at the release's commit). The test copies them into the server's extension
directory for its run (as root, like the rest of the suite) and removes them afterwards. The
upgrade scripts themselves are sql/pg_session_auth--A--B.sql, installed by `cargo pgrx install`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from client_support import make_key, now
from conftest import PG_CONFIG, REPO, SAFETY_OPTIONS, raises_sqlstate

OLD_SCRIPTS = sorted((REPO / "tests" / "upgrade").glob("pg_session_auth--*.sql"))
KID = "upgrade-k"

# Everything the extension owns, with what defines it; compared between an updated and a fresh
# install.
MEMBERS = """
    select pg_describe_object(d.classid, d.objid, d.objsubid) as object,
           case d.classid
               when 'pg_proc'::regclass then pg_get_functiondef(d.objid)
                   || coalesce(' acl=' || (select proacl::text from pg_proc where oid = d.objid), '')
                   || coalesce(' comment=' || obj_description(d.objid, 'pg_proc'), '')
               when 'pg_class'::regclass then (
                   select string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                                     || case when a.attnotnull then ' not null' else '' end
                                     || coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), ''),
                                     ', ' order by a.attnum)
                   from pg_attribute a
                   left join pg_attrdef ad on ad.adrelid = a.attrelid and ad.adnum = a.attnum
                   where a.attrelid = d.objid and a.attnum > 0 and not a.attisdropped)
                   || ' acl=' || coalesce((select relacl::text from pg_class where oid = d.objid), '')
                   || ' comment=' || coalesce(obj_description(d.objid, 'pg_class'), '')
               else ''
           end as definition
    from pg_depend d
    join pg_extension e on e.oid = d.refobjid and d.refclassid = 'pg_extension'::regclass
    where e.extname = 'pg_session_auth' and d.deptype = 'e'
    union all
    select 'trigger ' || t.tgname || ' on ' || t.tgrelid::regclass,
           pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
    from pg_trigger t join pg_class c on c.oid = t.tgrelid
    where c.relnamespace = 'auth'::regnamespace and not t.tgisinternal
    union all
    select 'constraint ' || conname || ' on ' || conrelid::regclass, pg_get_constraintdef(oid)
    from pg_constraint where connamespace = 'auth'::regnamespace
    union all
    select 'index ' || indexrelid::regclass, pg_get_indexdef(indexrelid)
    from pg_index where indrelid in (select oid from pg_class where relnamespace = 'auth'::regnamespace)
    union all
    select 'schema auth', coalesce(nspacl::text, '') || ' owner=' || nspowner::regrole::text
    from pg_namespace where nspname = 'auth'
    union all
    select 'owner of ' || c.relname, c.relowner::regrole::text
    from pg_class c where c.relnamespace = 'auth'::regnamespace
    union all
    select 'config dump', array_to_string(extconfig::regclass[], ',') || ' / '
           || array_to_string(extcondition, ',')
    from pg_extension where extname = 'pg_session_auth'
    order by 1, 2
"""


def extension_dir() -> Path:
    sharedir = subprocess.run([PG_CONFIG, "--sharedir"], capture_output=True, text=True,
                              check=True).stdout.strip()
    return Path(sharedir) / "extension"


def old_version(script: Path) -> str:
    return script.name.removeprefix("pg_session_auth--").removesuffix(".sql")


@pytest.fixture(scope="module")
def old_scripts_installed():
    """Puts the kept scripts in place (a development install of that version may have left a
    different file under the same name) and restores what was there afterwards."""
    replaced = []
    for script in OLD_SCRIPTS:
        target = extension_dir() / script.name
        replaced.append((target, target.read_bytes() if target.exists() else None))
        shutil.copyfile(script, target)
    yield
    for target, before in replaced:
        if before is None:
            target.unlink(missing_ok=True)
        else:
            target.write_bytes(before)


@pytest.fixture
def databases(pg, old_scripts_installed):
    names = ["upgraded", "fresh"]
    for name in names:
        pg.sql(f"drop database if exists {name} with (force)")
        pg.sql(f"create database {name}")
    yield names
    pg.close_connections()
    for name in names:
        pg.sql(f"drop database if exists {name} with (force)")


def current_version(pg) -> str:
    return pg.sql("select default_version from pg_available_extensions "
                  "where name = 'pg_session_auth'")[0][0]


def test_there_is_an_upgrade_path_to_the_current_version_from_every_kept_release(pg, old_scripts_installed):
    assert OLD_SCRIPTS, "tests/upgrade/ holds no earlier install script"
    current = current_version(pg)
    for script in OLD_SCRIPTS:
        path = pg.sql("select path from pg_extension_update_paths('pg_session_auth') "
                      "where source = %s and target = %s", [old_version(script), current])
        assert path and path[0][0], f"no update path from {old_version(script)} to {current}"


@pytest.mark.parametrize("script", OLD_SCRIPTS, ids=old_version)
def test_an_updated_install_equals_a_fresh_one_and_keeps_its_data(pg, databases, script):
    old = old_version(script)
    key = make_key("HS256", KID)
    session = str(uuid.uuid4())
    upgraded = pg.connect("postgres", dbname="upgraded")
    upgraded.execute(f"create extension pg_session_auth version '{old}'")
    upgraded.execute("select auth.add_key(%s, 'HS256', %s)", [KID, key.secret_text])
    upgraded.execute("select auth.revoke_session(%s)", [session])
    upgraded.execute("alter extension pg_session_auth update")
    assert upgraded.execute("select extversion from pg_extension "
                            "where extname = 'pg_session_auth'").fetchone()[0] == current_version(pg)
    fresh = pg.connect("postgres", dbname="fresh")
    fresh.execute("create extension pg_session_auth")
    assert upgraded.execute(MEMBERS).fetchall() == fresh.execute(MEMBERS).fetchall()

    # The data survived and the updated install works, with the revocation filter.
    t = now()
    claims = {"sub": str(uuid.uuid4()), "iat": t, "exp": t + 600}
    reader = pg.connect("postgres", dbname="upgraded", options=SAFETY_OPTIONS)
    with raises_sqlstate("28000", "invalid token: revoked"):
        reader.execute("select auth.verify(%s)",
                       [key.sign({**claims, "session_id": session})])
    assert reader.execute("select auth.verify(%s) ->> 'sub'",
                          [key.sign(claims)]).fetchone()[0] == claims["sub"]
    # The filter is built by a background worker after the first check asked for it.
    deadline = time.monotonic() + 20
    while reader.execute("select state, keys from auth.revocation_filter()").fetchone() != (
            "valid", 1):
        assert time.monotonic() < deadline, "the filter was not built"
        reader.execute("select auth.is_revoked('{}')")  # a check asks for the build again
        time.sleep(0.05)


def test_a_database_not_yet_updated_looks_every_token_up(pg, databases):
    """The new library over the previous release's objects (before ALTER EXTENSION UPDATE):
    the filter's triggers are missing, so nothing is screened or cached, and revocations are
    still enforced. (0.2.0's: from 0.3.0 on the triggers are the ones the library expects.)"""
    old = "0.2.0"
    key = make_key("HS256", KID)
    session = str(uuid.uuid4())
    su = pg.connect("postgres", dbname="upgraded")
    su.execute(f"create extension pg_session_auth version '{old}'")
    su.execute("select auth.add_key(%s, 'HS256', %s)", [KID, key.secret_text])
    su.execute("select auth.revoke_session(%s)", [session])
    t = now()
    claims = {"sub": str(uuid.uuid4()), "iat": t, "exp": t + 600, "jti": str(uuid.uuid4())}
    reader = pg.connect("postgres", dbname="upgraded")
    scans = ("select sum(pg_stat_get_xact_numscans(i::regclass)) from unnest(array["
             "'auth.revoked_sessions_pkey', 'auth.revoked_users_pkey', "
             "'auth.revoked_tokens_pkey']) i")
    reader.execute("begin")
    before = reader.execute(scans).fetchone()[0]
    for _ in range(2):  # the same token twice: not cached either
        reader.execute("select auth.verify(%s)", [key.sign(claims)])
    assert reader.execute(scans).fetchone()[0] - before == 2 * 2  # user and jti, each time
    reader.execute("rollback")
    with raises_sqlstate("28000", "invalid token: revoked"):
        reader.execute("select auth.verify(%s)", [key.sign({**claims, "session_id": session})])
