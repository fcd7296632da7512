"""Driver of bench/sessions/run.sh: create_session and refresh_session TPS under pgbench
against floor transactions that write comparable rows without signing, per signing algorithm
and client count, and the share of a sign-in spent signing.

Printed, never asserted: the benchmark is a measurement and exits 0 whatever the ratios.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

POOL = 10_000
CLAIMS = '{"email": "user@example.com", "app_metadata": {"provider": "email"}}'

SETUP = f"""
drop role if exists bench_issuer, bench_anon;
create role bench_issuer login in role session_auth_issuer;
create role bench_anon login;
create table public.floor_sessions (
    id uuid primary key, user_id text not null, created_at timestamptz not null,
    refreshed_at timestamptz, counter bigint not null default 0, claims jsonb not null,
    user_agent text, ip inet);
create table public.refresh_pool (i int primary key, token text not null);
create table public.floor_pool (i int primary key, id uuid not null, token text not null);
grant insert, select, update on public.floor_sessions, public.refresh_pool, public.floor_pool
    to bench_issuer, bench_anon;
"""

SCRIPTS = {
    "create": f"""\\set u random(1, 1000000)
select access_token from auth.create_session('user-' || :u, '{CLAIMS}', 'bench-agent/1.0', '127.0.0.1');
""",
    "create floor": f"""\\set u random(1, 1000000)
insert into public.floor_sessions (id, user_id, created_at, claims, user_agent, ip)
values (gen_random_uuid(), 'user-' || :u, clock_timestamp(), '{CLAIMS}', 'bench-agent/1.0', '127.0.0.1');
""",
    "refresh": f"""\\set i random(1, {POOL})
with r as (select * from auth.refresh_session((select token from public.refresh_pool where i = :i),
                                             'bench-agent/1.0', '127.0.0.1'))
update public.refresh_pool as p set token = r.refresh_token from r where p.i = :i;
""",
    "refresh floor": f"""\\set i random(1, {POOL})
with s as (update public.floor_sessions as s set counter = s.counter + 1, refreshed_at = clock_timestamp(),
                  user_agent = 'bench-agent/1.0', ip = '127.0.0.1'
           where s.id = (select id from public.floor_pool where i = :i) returning s.counter)
update public.floor_pool as p set token = md5(s.counter::text) from s where p.i = :i;
""",
    "sign": """select auth.sign('{"sub": "user-1", "role": "authenticated", "session_id": "x"}');
""",
    "select 1": """select 1;
""",
}
ROLE = {"create": "bench_issuer", "create floor": "bench_issuer", "refresh": "bench_anon",
        "refresh floor": "bench_anon", "sign": "bench_issuer", "select 1": "bench_issuer"}


def pgbench(args, name: str, clients: int, work: Path) -> float:
    script = work / f"{name.replace(' ', '_')}.sql"
    script.write_text(SCRIPTS[name])
    result = subprocess.run(
        [f"{args.pg_bin}/pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", str(clients),
         "-T", str(args.time), "-f", str(script), "-h", "127.0.0.1", "-p", str(args.port),
         "-U", ROLE[name], "postgres"],
        capture_output=True, text=True)
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", result.stdout)
    if result.returncode != 0 or not match:
        print(result.stdout[-2000:], result.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"pgbench {name} failed")
    return float(match.group(1))


def fill_pools(conn, alg: str) -> None:
    conn.execute("truncate public.refresh_pool, public.floor_pool, public.floor_sessions")
    conn.execute("delete from auth.sessions")
    conn.execute(f"""
        insert into public.refresh_pool (i, token)
        select i, (select refresh_token from auth.create_session('pool-' || i, '{CLAIMS}'))
        from generate_series(1, {POOL}) as i""")
    conn.execute(f"""
        with s as (insert into public.floor_sessions (id, user_id, created_at, claims)
                   select gen_random_uuid(), 'pool-' || i, clock_timestamp(), '{CLAIMS}'
                   from generate_series(1, {POOL}) as i returning id, user_id)
        insert into public.floor_pool (i, id, token)
        select substr(user_id, 6)::int, id, md5(id::text) from s""")
    conn.execute("vacuum analyze public.refresh_pool, public.floor_pool, public.floor_sessions, auth.sessions")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pg-bin", required=True)
    parser.add_argument("--pg-major", type=int, required=True)
    parser.add_argument("--library", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--time", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--algs", default="ES256,EdDSA,HS256")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="scripts-", dir=args.work))
    with psycopg.connect(host="127.0.0.1", port=args.port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        version = conn.execute("show server_version").fetchone()[0]
        assert version.split(".")[0] == str(args.pg_major), version
        maps = conn.execute("select pg_backend_pid()").fetchone()[0]
        mapped = Path(f"/proc/{maps}/maps").read_text()
        assert args.library in mapped, "the server does not run the pinned library"
        conn.execute(SETUP)
        print(f"PostgreSQL {version}; pgbench -M prepared, {args.time} s per run, best of "
              f"{args.rounds} rounds; a pool of {POOL} sessions for the refreshes")
        results = []
        for alg in args.algs.split(","):
            conn.execute("delete from auth.keys")
            kid = conn.execute("select auth.generate_key(%s)", (alg,)).fetchone()[0]
            state = conn.execute("select state from auth.signing_keys() where kid = %s", (kid,)).fetchone()[0]
            assert state == "in_use", state
            fill_pools(conn, alg)
            for clients in (1, 2):
                best = {}
                for name in SCRIPTS:
                    best[name] = max(pgbench(args, name, clients, work) for _ in range(args.rounds))
                sign_cost = 1 / best["sign"] - 1 / best["select 1"]
                share = sign_cost / (1 / best["create"])
                results.append((alg, clients, best, share))
                print(f"\n{alg}, {clients} client(s):")
                for name in SCRIPTS:
                    print(f"  {name:<14} {best[name]:>10.0f} TPS")
                print(f"  create_session / floor: {best['create'] / best['create floor']:.2f}x;"
                      f" refresh_session / floor: {best['refresh'] / best['refresh floor']:.2f}x;"
                      f" signing: {1e6 * sign_cost:.1f} µs per token, {100 * share:.0f}% of a create_session")
    print("\nSummary (TPS, best of rounds):")
    print("alg   | clients | create | floor  | ratio | refresh | floor  | ratio | signing share")
    for alg, clients, best, share in results:
        print(f"{alg:<5} | {clients:>7} | {best['create']:>6.0f} | {best['create floor']:>6.0f} | "
              f"{best['create'] / best['create floor']:.2f}x | {best['refresh']:>7.0f} | "
              f"{best['refresh floor']:>6.0f} | {best['refresh'] / best['refresh floor']:.2f}x | "
              f"{100 * share:.0f}%")


if __name__ == "__main__":
    main()
