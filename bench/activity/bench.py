"""Driver of bench/activity/run.sh: what unusual-activity detection (0.5.0) costs.

(a) auth.refresh_session and auth.create_session transactions per second under pgbench
    (1 and 2 clients, per signing algorithm) with every detection rule enabled ("on") vs every
    rule disabled but refresh_token_reused, which cannot be ("off"), in normal use: the same
    user agent and address every time, so no rule fires (checked with auth.stats()).
(b) auth.verify over the same batch of distinct tokens in one statement with
    pg_session_auth.track_activity on vs off (the shared-memory counters every verify bumps).

On and off are measured side by side in one run, in alternating order round after round, so
load from other work on the machine hits both sides alike. Printed, never asserted: the
benchmark is a measurement and exits 0 whatever the ratios.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import check_library, cpu_model, cpu_ns, execution_ms, loadavg  # noqa: E402

AGENT = "Mozilla/5.0 (X11; Linux x86_64) bench-agent/1.0"
IP = "203.0.113.7"
CLAIMS = '{"email": "user@example.com", "app_metadata": {"provider": "email"}}'
POOL = 10_000  # sessions refreshed, half per client (client k refreshes only its own half)
RETURNING = 50_000  # users who signed in once before (same agent and address)
TARGET = 0.8  # on/off TPS, at least
VERIFY_TARGET_US = 0.1  # track_activity on - off, µs per token, at most

RULES_ON = "update auth.activity_rules set enabled = true where not enabled"
RULES_OFF = "update auth.activity_rules set enabled = false where rule <> 'refresh_token_reused'"

SETUP = f"""
drop role if exists bench_issuer, bench_anon;
create role bench_issuer login in role session_auth_issuer;
create role bench_anon login;
create table public.refresh_pool (i int primary key, token text not null);
grant select, update on public.refresh_pool to bench_anon;
"""

HALF = POOL // 2
SCRIPTS = {
    # Each client refreshes its own half of the pool (pgbench's client_id is 0 or 1), so two
    # clients never present the same session's token.
    "refresh": f"""\\set i :client_id * {HALF} + random(1, {HALF})
with r as (select * from auth.refresh_session((select token from public.refresh_pool where i = :i),
                                             '{AGENT}', '{IP}'))
update public.refresh_pool as p set token = r.refresh_token from r where p.i = :i;
""",
    # Every sign-in a user never seen before.
    "create (new user)": f"""select access_token from auth.create_session('new-' || gen_random_uuid(), '{CLAIMS}', '{AGENT}', '{IP}');
""",
    # A returning user (signed in once before from the same agent and address), at random
    # among RETURNING: known device and network, and far fewer than too_many_sessions' 10
    # sessions an hour per user (the sessions are deleted before every run).
    "create (returning)": f"""\\set u random(1, {RETURNING})
select access_token from auth.create_session('ret-' || :u, '{CLAIMS}', '{AGENT}', '{IP}');
""",
}
ROLE = {"refresh": "bench_anon", "create (new user)": "bench_issuer",
        "create (returning)": "bench_issuer"}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def children_cpu_s(pid: int) -> float:
    """CPU seconds of the reaped children of `pid` (the postmaster: the ended backends)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the ")": state is field 3; cutime and cstime are fields 16 and 17.
    return (int(fields[13]) + int(fields[14])) / CLK_TCK


def pgbench_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Bench:
    def __init__(self, args, conn):
        self.args = args
        self.conn = conn
        self.work = Path(tempfile.mkdtemp(prefix="scripts-", dir=args.work))
        backend = conn.execute("select pg_backend_pid()").fetchone()[0]
        self.postmaster = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])

    def stats(self) -> dict[str, int]:
        return dict(self.conn.execute("select name, value from auth.stats()").fetchall())

    def reset(self) -> None:
        """The same starting point for every run, on or off: no sessions but the refresh pool,
        no audit events, no history of the throw-away new users, zeroed counters."""
        c = self.conn
        c.execute("delete from auth.sessions where user_id not like 'pool-%'")
        c.execute("truncate auth.audit_events")
        c.execute("delete from auth.known_sign_ins where user_id like 'new-%'")
        c.execute("vacuum analyze auth.sessions, auth.known_sign_ins, auth.audit_events, public.refresh_pool")
        c.execute("checkpoint")
        c.execute("select auth.reset_stats()")

    def pgbench(self, name: str, clients: int) -> dict:
        script = self.work / f"{re.sub(r'[^a-z]+', '_', name)}.sql"
        script.write_text(SCRIPTS[name])
        server0, client0 = children_cpu_s(self.postmaster), pgbench_cpu_s()
        result = subprocess.run(
            [f"{self.args.pg_bin}/pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j",
             str(clients), "-T", str(self.args.time), "-f", str(script), "-h", "127.0.0.1", "-p",
             str(self.args.port), "-U", ROLE[name], "postgres"],
            capture_output=True, text=True)
        tps = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", result.stdout)
        done = re.search(r"number of transactions actually processed: (\d+)", result.stdout)
        failed = re.search(r"number of failed transactions: (\d+)", result.stdout)
        if result.returncode != 0 or not tps or not done:
            print(result.stdout[-2000:], result.stderr[-2000:], file=sys.stderr)
            raise SystemExit(f"pgbench {name} failed")
        if failed and int(failed.group(1)):
            raise SystemExit(f"pgbench {name}: {failed.group(1)} failed transactions")
        # The backends end with pgbench; give the postmaster a moment to reap them.
        time.sleep(0.3)
        transactions = int(done.group(1))
        server = children_cpu_s(self.postmaster) - server0
        client = pgbench_cpu_s() - client0
        return {"tps": float(tps.group(1)), "transactions": transactions,
                "server_us": 1e6 * server / transactions, "client_us": 1e6 * client / transactions}

    def set_rules(self, on: bool) -> None:
        self.conn.execute(RULES_ON if on else RULES_OFF)
        enabled = self.conn.execute(
            "select count(*) filter (where enabled), count(*) from auth.activity_rules").fetchone()
        assert enabled[0] == (enabled[1] if on else 1), enabled

    def run(self, name: str, clients: int, on: bool) -> dict:
        self.set_rules(on)
        self.reset()
        result = self.pgbench(name, clients)
        stats = self.stats()
        result["fired"] = {k: v for k, v in stats.items() if k.startswith("rules.") and v}
        result["refused"] = {k: v for k, v in stats.items() if k.startswith("refresh_refused.") and v}
        result["counted"] = stats["sessions.refreshed" if name == "refresh" else "sessions.created"]
        return result


def fill_pool(conn) -> None:
    t0 = time.time()
    conn.execute(f"""
        insert into public.refresh_pool (i, token)
        select i, (select refresh_token from auth.create_session('pool-' || i, '{CLAIMS}', '{AGENT}', '{IP}'))
        from generate_series(1, {POOL}) as i""")
    conn.execute(f"""
        select count(*) from generate_series(1, {RETURNING}) as i,
             lateral auth.create_session('ret-' || i, '{CLAIMS}', '{AGENT}', '{IP}')""")
    known = conn.execute("select count(*) from auth.known_sign_ins where user_id like 'ret-%'").fetchone()[0]
    assert known == 2 * RETURNING, known
    conn.execute("vacuum analyze public.refresh_pool, auth.sessions, auth.known_sign_ins")
    print(f"  {POOL} sessions to refresh ({POOL // 2} per client) and {RETURNING} returning users "
          f"signed in once (device and network remembered) in {time.time() - t0:.0f} s")


def use_signing_key(conn, alg: str) -> str:
    kid = conn.execute("select auth.generate_key(%s)", (alg,)).fetchone()[0]
    state = conn.execute("select state from auth.signing_keys() where kid = %s", (kid,)).fetchone()[0]
    if state != "in_use":
        assert conn.execute("select auth.rotate_signing_key()").fetchone()[0] == kid
    state = conn.execute("select state from auth.signing_keys() where kid = %s", (kid,)).fetchone()[0]
    assert state == "in_use", state
    return kid


def sessions_part(args, conn, bench: Bench) -> list:
    """(a): every case, `rounds` on/off pairs in alternating order."""
    results = []
    cases = [(alg, clients, name) for alg in args.algs.split(",") for clients in (1, 2)
             for name in SCRIPTS]
    t0 = time.time()
    for alg in args.algs.split(","):
        kid = use_signing_key(conn, alg)
        print(f"\n{alg} signing key {kid} in use")
        for clients in (1, 2):
            for name in SCRIPTS:
                runs = {True: [], False: []}
                for r in range(args.rounds):
                    for on in ((True, False) if r % 2 == 0 else (False, True)):
                        runs[on].append(bench.run(name, clients, on))
                results.append((alg, clients, name, runs))
                show_case(alg, clients, name, runs)
                print(f"    ({len(results)}/{len(cases)} cases, {time.time() - t0:.0f} s)")
    bench.set_rules(True)
    return results


def summarize(runs) -> dict:
    med = statistics.median
    on, off = runs[True], runs[False]
    return {
        "on": med(r["tps"] for r in on), "off": med(r["tps"] for r in off),
        "ratio": med(r["tps"] for r in on) / med(r["tps"] for r in off),
        "paired": med(a["tps"] / b["tps"] for a, b in zip(on, off)),
        "cpu_on": med(r["server_us"] for r in on), "cpu_off": med(r["server_us"] for r in off),
        "cpu_ratio": med(r["server_us"] for r in off) / med(r["server_us"] for r in on),
        "fired_on": sum(sum(r["fired"].values()) for r in on),
        "fired_off": sum(sum(r["fired"].values()) for r in off),
        "refused": sum(sum(r["refused"].values()) for r in on + off),
    }


def show_case(alg, clients, name, runs) -> None:
    s = summarize(runs)
    print(f"  {alg}, -c {clients}, {name}:")
    for on in (True, False):
        for i, r in enumerate(runs[on]):
            fired = ", ".join(f"{k}={v}" for k, v in r["fired"].items()) or "none"
            print(f"    rules {'on ' if on else 'off'} round {i + 1}: {r['tps']:8.0f} TPS, "
                  f"server {r['server_us']:6.1f} µs/tx, pgbench {r['client_us']:5.1f} µs/tx, "
                  f"{r['transactions']} tx ({r['counted']} counted); rules fired: {fired}"
                  + (f"; refused: {r['refused']}" if r["refused"] else ""))
    print(f"    on/off: {s['ratio']:.3f} (median TPS {s['on']:.0f} / {s['off']:.0f}), paired "
          f"{s['paired']:.3f}; server CPU per tx off/on {s['cpu_ratio']:.3f} "
          f"({s['cpu_on']:.1f} / {s['cpu_off']:.1f} µs)")


def sessions_summary(results) -> None:
    print("\n(a) Rules on vs off, pgbench -M prepared, medians of the rounds; on/off >= "
          f"{TARGET} is the target")
    header = (f"{'alg':<5} | {'c':>1} | {'transaction':<18} | {'on TPS':>7} | {'off TPS':>7} | "
              f"{'on/off':>6} | {'paired':>6} | {'CPU on':>6} | {'CPU off':>7} | {'off/on':>6} | "
              f"{'fired on':>8} | TPS     | CPU")
    print(header)
    print("-" * len(header))
    met, met_cpu = [], []
    for alg, clients, name, runs in results:
        s = summarize(runs)
        ok = s["ratio"] >= TARGET
        ok_cpu = s["cpu_ratio"] >= TARGET
        met.append(ok)
        met_cpu.append(ok_cpu)
        print(f"{alg:<5} | {clients:>1} | {name:<18} | {s['on']:>7.0f} | {s['off']:>7.0f} | "
              f"{s['ratio']:>6.3f} | {s['paired']:>6.3f} | {s['cpu_on']:>6.1f} | "
              f"{s['cpu_off']:>7.1f} | {s['cpu_ratio']:>6.3f} | {s['fired_on']:>8} | "
              f"{'MET' if ok else 'NOT MET':<7} | {'MET' if ok_cpu else 'NOT MET'}")
    fired = sum(summarize(r)["fired_on"] + summarize(r)["fired_off"] for *_, r in results)
    refused = sum(summarize(r)["refused"] for *_, r in results)
    print(f"TARGET on/off >= {TARGET}: {sum(met)} of {len(met)} met on TPS, {sum(met_cpu)} of "
          f"{len(met_cpu)} on server CPU per transaction. Rules fired in all runs: "
          f"{fired}; refreshes refused: {refused}.")
    print("CPU on/off: server CPU µs per transaction (the ended backends' CPU, reaped by the "
          "postmaster), off/on: its ratio (a TPS ratio on CPU time)")


# ---------------------------------------------------------------- (b) auth.verify, counters

def make_tokens(conn, alg: str, n: int) -> str:
    kid = use_signing_key(conn, alg)
    table = f"verify_{alg.lower()}"
    conn.execute(f"drop table if exists {table}")
    conn.execute(f"""
        create table {table} as
        select auth.sign(jsonb_build_object('sub', gen_random_uuid()::text, 'role', 'authenticated',
                                            'aud', 'authenticated', 'email', 'user' || i || '@bench.example'),
                         interval '10 years') as token
        from generate_series(1, {n}) as i""")
    conn.execute(f"vacuum (analyze, freeze) {table}")
    count, distinct, size = conn.execute(
        f"select count(*), count(distinct token), avg(octet_length(token))::int from {table}").fetchone()
    assert count == distinct == n, (count, distinct)
    print(f"  {table}: {n} distinct {alg} tokens (key {kid}), {size} bytes on average")
    return table


def time_verify(conn, pid, sql, n):
    cpu0 = cpu_ns(pid)
    ms = execution_ms(conn, sql)
    cpu1 = cpu_ns(pid)
    return ms * 1000.0 / n, (cpu1 - cpu0) / 1000.0 / n


def verify_part(args, conn, dsn):
    """(b): one backend verifies a batch in one statement, track_activity on and off in
    alternating order; then the same with off on both sides (the control: what the method
    reports when nothing differs); then two backends at once."""
    cases = [("HS256", "HS256", args.verify_tokens, args.verify_rounds, ("on", "off")),
             ("HS256 off/off", "HS256", args.verify_tokens, args.verify_rounds, ("off", "off"))]
    if args.verify_asym_tokens:
        cases += [("EdDSA", "EdDSA", args.verify_asym_tokens, args.verify_rounds, ("on", "off")),
                  ("EdDSA off/off", "EdDSA", args.verify_asym_tokens, args.verify_rounds, ("off", "off"))]
    tables = {}
    for _, alg, n, _, _ in cases:
        if alg not in tables:
            tables[alg] = make_tokens(conn, alg, n)
    results = []
    with psycopg.connect(dsn, autocommit=True) as vconn:
        pid = vconn.execute("select pg_backend_pid()").fetchone()[0]
        check_library(vconn, args.library)
        for label, alg, n, rounds, settings in cases:
            sql = f"select count(auth.verify(token)) from {tables[alg]}"
            for setting in ("on", "off", "on", "off"):  # warm-up: keyring, buffers, both paths
                vconn.execute(f"set pg_session_auth.track_activity = {setting}")
                execution_ms(vconn, sql)
            # Side A and side B (A: on, B: off; the control: both off), alternating which goes
            # first; each sample (wall µs, on-CPU µs) per token.
            samples = {"A": [], "B": []}
            counted = {"A": [], "B": []}
            for r in range(rounds):
                for side in (("A", "B") if r % 2 == 0 else ("B", "A")):
                    setting = settings[0 if side == "A" else 1]
                    vconn.execute(f"set pg_session_auth.track_activity = {setting}")
                    before = dict(conn.execute("select name, value from auth.stats()").fetchall())
                    samples[side].append(time_verify(vconn, pid, sql, n))
                    after = dict(conn.execute("select name, value from auth.stats()").fetchall())
                    counted[side].append({k: after[k] - before[k] for k in after
                                          if after[k] != before[k]})
            results.append((label, n, rounds, settings, samples))
            show_verify(label, n, rounds, settings, samples, counted)
        vconn.execute("reset pg_session_auth.track_activity")
    # Two backends at once, each on the batch: the counters are shared memory (striped).
    results.append(verify_concurrent(tables["HS256"], args.verify_tokens,
                                     max(5, args.verify_rounds // 2), dsn))
    return results


def clock_figures(samples, index):
    med = statistics.median
    a = [s[index] for s in samples["A"]]
    b = [s[index] for s in samples["B"]]
    return {"a": med(a), "b": med(b), "diff": med(a) - med(b),
            "paired": med(x - y for x, y in zip(a, b)), "min_a": min(a), "min_b": min(b)}


def show_verify(label, n, rounds, settings, samples, counted) -> None:
    print(f"  {label}: {n} tokens, {rounds} rounds per side (A: track_activity = {settings[0]}, "
          f"B: {settings[1]})")
    for clock, index in (("wall (executor)", 0), ("on-CPU (backend)", 1)):
        f = clock_figures(samples, index)
        print(f"    {clock:<17} A {f['a']:7.3f} µs  B {f['b']:7.3f} µs  A-B {f['diff']:+.3f} µs "
              f"(median of paired {f['paired']:+.3f}; best of each {f['min_a']:.3f} / {f['min_b']:.3f}: "
              f"{f['min_a'] - f['min_b']:+.3f})")
    for side, setting in zip("AB", settings):
        per_token = {k: v / n for k, v in counted[side][0].items()}
        print(f"    counted per token with {setting}: "
              + (", ".join(f"{k} {v:g}" for k, v in per_token.items()) or "nothing"))


def verify_concurrent(table, n, rounds, dsn):
    sql = f"select count(auth.verify(token)) from {table}"
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(2)]
    pids = [c.execute("select pg_backend_pid()").fetchone()[0] for c in conns]
    samples = {"A": [], "B": []}
    try:
        for r in range(rounds + 1):  # round 0 warms up
            for side in (("A", "B") if r % 2 == 0 else ("B", "A")):
                setting = "on" if side == "A" else "off"
                out = [None, None]
                barrier = threading.Barrier(2)

                def work(i):
                    conns[i].execute(f"set pg_session_auth.track_activity = {setting}")
                    barrier.wait()
                    out[i] = time_verify(conns[i], pids[i], sql, n)

                threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                if r:
                    samples[side].extend(out)
    finally:
        for c in conns:
            c.close()
    label = "HS256 2 backends"
    print(f"  {label}: two backends at once, each verifying the {n} tokens, {rounds} rounds per "
          "side (A: on, B: off), a sample per backend")
    for clock, index in (("wall (executor)", 0), ("on-CPU (backend)", 1)):
        f = clock_figures(samples, index)
        print(f"    {clock:<17} A {f['a']:7.3f} µs  B {f['b']:7.3f} µs  A-B {f['diff']:+.3f} µs "
              f"(median of paired {f['paired']:+.3f}; best of each {f['min_a']:.3f} / {f['min_b']:.3f}: "
              f"{f['min_a'] - f['min_b']:+.3f})")
    return (label, n, rounds, ("on", "off"), samples)


def verify_summary(results) -> None:
    print(f"\n(b) auth.verify, track_activity on (A) vs off (B), µs per token: A and B the medians, A-B their\n"
          "difference, paired the median of the differences of the statements run side by side, best A-B\n"
          f"the fastest A minus the fastest B. Target (HS256, on-CPU, paired): <= {VERIFY_TARGET_US} µs. The "
          "control rows\nmeasure off against off: what the method reports when nothing differs.")
    header = (f"{'case':<16} | {'tokens':>6} | {'rounds':>6} | {'clock':<6} | {'A':>7} | {'B':>7} | "
              f"{'A-B':>7} | {'paired':>7} | {'best A-B':>8} | verdict")
    print(header)
    print("-" * len(header))
    for label, n, rounds, settings, samples in results:
        for clock, index in (("on-CPU", 1), ("wall", 0)):
            f = clock_figures(samples, index)
            paired = f"{f['paired']:+7.3f}"
            verdict = ""
            if clock == "on-CPU" and settings[0] == settings[1]:
                verdict = "(control)"
            elif clock == "on-CPU" and label.startswith("HS256"):
                verdict = "MET" if f["paired"] <= VERIFY_TARGET_US else "NOT MET"
            elif clock == "on-CPU":
                verdict = "(no target)"
            print(f"{label:<16} | {n:>6} | {rounds:>6} | {clock:<6} | {f['a']:7.3f} | {f['b']:7.3f} | "
                  f"{f['diff']:+7.3f} | {paired} | {f['min_a'] - f['min_b']:+8.3f} | {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pg-bin", required=True)
    parser.add_argument("--pg-major", type=int, required=True)
    parser.add_argument("--library", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--time", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--algs", default="HS256,EdDSA")
    parser.add_argument("--verify-tokens", type=int, default=10_000)
    parser.add_argument("--verify-asym-tokens", type=int, default=1_000)
    parser.add_argument("--verify-rounds", type=int, default=100)
    parser.add_argument("--skip-sessions", action="store_true", help="only (b)")
    args = parser.parse_args()
    started = time.time()
    load_before = loadavg()
    dsn = f"host=127.0.0.1 port={args.port} user=postgres dbname=postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        version = conn.execute("show server_version").fetchone()[0]
        assert version.split(".")[0] == str(args.pg_major), version
        check_library(conn, args.library)
        assert conn.execute("select value from auth.stats() where name = 'cluster_wide'").fetchone()[0] == 1, \
            "the library is not preloaded: the counters are not the cluster's"
        assert conn.execute("show pg_session_auth.track_activity").fetchone()[0] == "on"
        conn.execute(SETUP)
        print(f"PostgreSQL {version}; {cpu_model()}, {os.cpu_count()} CPUs; load average {load_before}")
        print(f"user agent {AGENT!r}, address {IP} in every sign-in and refresh")

        print("\n== (b) auth.verify with pg_session_auth.track_activity on vs off (SET per session)")
        verify_results = verify_part(args, conn, dsn)

        results = []
        if not args.skip_sessions:
            print(f"\n== (a) rules on vs off: pgbench -M prepared, {args.time} s per run, "
                  f"{args.rounds} on/off pairs per case in alternating order")
            fill_pool(conn)
            results = sessions_part(args, conn, Bench(args, conn))

    print(f"\nSummary. PostgreSQL {version}; {cpu_model()}, {os.cpu_count()} CPUs; load average "
          f"{load_before} before, {loadavg()} after")
    if results:
        sessions_summary(results)
    verify_summary(verify_results)
    print(f"benchmark took {time.time() - started:.0f} s after the build")


if __name__ == "__main__":
    main()
