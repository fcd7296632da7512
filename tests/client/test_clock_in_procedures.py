"""Expiry inside procedures and DO blocks that commit in a loop, as the plain role ``app_user``
on an autocommit connection (``postgres`` only sets things up and sets the leeway).

The defect these tests guard against (V3): verification's clock was the start time of the
current statement. In a `CALL` or `DO` that commits in a loop the statement never ends, so
that clock never moved: a token that expired during the loop went on authenticating (and
verifying) transaction after transaction, for as long as the procedure ran. The rule: a
transaction that begins after `exp + leeway` refuses the token - also inside a procedure -
and no claim function in such a transaction returns the identity.

Each loop runs 8 iterations of `pg_sleep(0.5); commit; <check>`; the token expires about
1.5 s after the call starts, with `pg_session_auth.leeway` = 0 (the smallest allowed), so
several transactions begin after the expiry. Times are compared with `transaction_timestamp()`,
which PostgreSQL advances for each transaction a procedure starts.
"""

from __future__ import annotations

import time
import uuid

import pytest
from psycopg import sql

from client_support import invalid, make_key
from conftest import APP_USER, KEY_ADMIN, collect_notices, raises_sqlstate

KID = "clock-k"
EXPIRED = invalid("expired")
ITERATIONS = 8
USER = "6c3b4d5e-2f6a-4b7c-8d9e-0a1b2c3d4e01"
OTHER = "7d4c5e6f-3a7b-4c8d-9e0f-1b2c3d4e5f02"
N_ROWS = 10

# The loops. {declare} declares `tok` (a DO block has no parameters); {check} is the call
# whose outcome is under test. Each iteration sleeps, COMMITs - so the next check runs in a
# transaction that begins after the sleep - and reports what it saw.
CHECK_LOOP = """
{declare}
begin
    for i in 1..{iterations} loop
        perform pg_sleep(0.5);
        commit;
        perform {check}(tok);
        raise notice 'accepted|%', extract(epoch from transaction_timestamp());
    end loop;
end
"""

# Never raises: reports, per transaction, the outcome of auth.authenticate and what every
# path that could show the identity returns afterwards in that transaction.
IDENTITY_LOOP = """
{declare}
    outcome text;
begin
    for i in 1..{iterations} loop
        perform pg_sleep(0.5);
        commit;
        begin
            perform auth.authenticate(tok);
            outcome := 'ok';
        exception when others then
            outcome := sqlstate || ' ' || sqlerrm;
        end;
        raise notice '%|%|%|%|%|%', extract(epoch from transaction_timestamp()), outcome,
            coalesce(auth.uid()::text, ''), coalesce(auth.jwt() ->> 'sub', ''),
            coalesce(auth.user_id(), ''), (select count(*) from public.notes);
    end loop;
end
"""

SETUP = f"""
create table public.notes (id int primary key, owner uuid not null);
insert into public.notes select g, (array['{USER}', '{OTHER}']::uuid[])[g % 2 + 1]
    from generate_series(1, {N_ROWS}) g;
alter table public.notes enable row level security;
create policy notes_owner on public.notes for select using (owner = auth.uid());
grant select on public.notes to {APP_USER};

create procedure public.check_loop_authenticate(tok text) language plpgsql as $$
{CHECK_LOOP.format(declare="declare", check="auth.authenticate", iterations=ITERATIONS)}
$$;
create procedure public.check_loop_verify(tok text) language plpgsql as $$
{CHECK_LOOP.format(declare="declare", check="auth.verify", iterations=ITERATIONS)}
$$;
create procedure public.identity_loop(tok text) language plpgsql as $$
{IDENTITY_LOOP.format(declare="declare", iterations=ITERATIONS)}
$$;
"""


@pytest.fixture(scope="module")
def schema(cluster):
    cluster.sql(SETUP)
    return cluster


class Env:
    def __init__(self, pg):
        self.pg = pg
        self.key = make_key("HS256", KID)
        pg.sql("select auth.add_key(%s, 'HS256', %s)", [KID, self.key.secret_text],
               user=KEY_ADMIN)
        # The smallest leeway there is, so the token expires exactly at `exp`.
        pg.sql("alter database postgres set pg_session_auth.leeway = '0'")

    def expiring_token(self) -> tuple[str, int]:
        """A token (no role claim: app_user keeps its role) that expires 1 to 2 s from now,
        and its `exp`."""
        t = time.time()
        exp = int(t) + 2
        token = self.key.sign({"sub": USER, "iat": int(t), "exp": exp,
                               "session_id": str(uuid.uuid4())})
        return token, exp

    def user(self):
        conn = self.pg.connect(APP_USER)          # autocommit: CALL / DO may COMMIT
        assert conn.execute("show pg_session_auth.leeway").fetchone()[0] == "0"
        return conn


@pytest.fixture
def env(schema, pg):
    return Env(pg)


def run_loop(conn, how: str, procedure: str, body: str, token: str) -> None:
    """Runs the loop as `CALL procedure(token)` or as a DO block with the same body."""
    if how == "call":
        conn.execute(sql.SQL("call public.{}({})").format(sql.Identifier(procedure),
                                                         sql.Literal(token)))
    else:
        declare = sql.SQL("declare tok text := {};").format(sql.Literal(token)).as_string(conn)
        block = body.format(declare=declare, iterations=ITERATIONS,
                            check="auth." + procedure.rsplit("_", 1)[-1])
        conn.execute(sql.SQL("do {}").format(sql.Literal(block)))


@pytest.mark.parametrize("check", ["authenticate", "verify"])
@pytest.mark.parametrize("how", ["call", "do"])
def test_token_expiring_during_a_committing_loop_is_refused(env, how, check):
    """A procedure (or DO block) commits in a loop and calls auth.authenticate (or
    auth.verify) with a token that expires ~1.5 s after the call started. Defect: the clock
    was the CALL's start, so every iteration accepted the token and the loop ran to its end.
    Must raise 28000 `expired` in the first transaction that begins at or after `exp` (leeway
    0), before the loop ends; every transaction that accepted it began before `exp`."""
    conn = env.user()
    notices = collect_notices(conn)
    token, exp = env.expiring_token()
    with raises_sqlstate("28000", EXPIRED):
        run_loop(conn, how, f"check_loop_{check}", CHECK_LOOP, token)
    accepted = [float(n.message_primary.split("|")[1]) for n in notices
                if (n.message_primary or "").startswith("accepted|")]
    assert accepted, "the token was refused before it expired"
    assert len(accepted) < ITERATIONS
    assert all(t < exp for t in accepted), (accepted, exp)


@pytest.mark.parametrize("how", ["call", "do"])
def test_no_identity_in_a_procedure_transaction_begun_after_expiry(env, how):
    """In a procedure (or DO block) that commits in a loop, each transaction authenticates
    (catching the error) and then reads every path to the identity: auth.uid(), auth.jwt(),
    auth.user_id() and an RLS-protected count. Defect: transactions that began after the
    token's expiry still bound it, so the claim functions returned the old identity and RLS
    showed its rows. Transactions begun before `exp` see the identity; every one begun at or
    after it must get 28000 `expired` from auth.authenticate and see no identity at all."""
    conn = env.user()
    notices = collect_notices(conn)
    token, exp = env.expiring_token()
    run_loop(conn, how, "identity_loop", IDENTITY_LOOP, token)
    rows = [(n.message_primary or "").split("|") for n in notices]
    rows = [r for r in rows if len(r) == 6]
    assert len(rows) == ITERATIONS, notices
    before = [r for r in rows if float(r[0]) < exp]
    after = [r for r in rows if float(r[0]) >= exp]
    assert before and len(after) >= 2, (rows, exp)
    for started, outcome, uid, sub, user_id, visible in before:
        assert (outcome, uid, sub, user_id, visible) == ("ok", USER, USER, USER,
                                                         str(N_ROWS // 2)), (started, exp)
    for started, outcome, uid, sub, user_id, visible in after:
        assert (outcome, uid, sub, user_id, visible) == ("28000 " + EXPIRED, "", "", "",
                                                         "0"), (started, exp)


def test_revocations_written_late_in_a_procedure_are_kept_long_enough(env, pg):
    """A revocation written by a procedure that has run for a while must be kept (its
    `expires_at`) for max_token_lifetime from the moment it is written, not from the CALL's
    start: tokens issued while the procedure ran may live that long, and a purge must not
    bring them back early."""
    pg.sql("alter database postgres set pg_session_auth.max_token_lifetime = '600'")
    admin = pg.connect(KEY_ADMIN)
    session, user = str(uuid.uuid4()), str(uuid.uuid4())
    admin.execute(sql.SQL("""
        do $$
        begin
            perform pg_sleep(2);
            commit;
            perform auth.revoke_session({session});
            perform auth.revoke_user({user});
        end
        $$""").format(session=sql.Literal(session), user=sql.Literal(user)))
    for table, column, key in (("revoked_sessions", "session_id", session),
                               ("revoked_users", "user_id", user)):
        lead = admin.execute(
            sql.SQL("select extract(epoch from expires_at - (clock_timestamp() + interval '600 s')) "
                    "from auth.{} where {} = %s").format(sql.Identifier(table),
                                                         sql.Identifier(column)),
            [key]).fetchone()[0]
        # Written ~2 s after the DO started: at most a moment before now + lifetime.
        assert float(lead) > -1.5, (table, lead)
