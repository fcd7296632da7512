#!/usr/bin/env python3
"""Driver of the RLS benchmark (run through bench/rls/run.sh, which builds, installs and starts
the cluster; see bench/rls/README.md). In one run, side by side:

  (a) scan: `select count(*) from scan_<variant>` over 1,000,000 rows as role `authenticated`,
      one table per RLS policy variant (literal UUID, auth.uid(), (select auth.uid()),
      Supabase's uid() unwrapped and wrapped, ...), without and with parallelism; wall clock
      and on-CPU time; plus the per-call cost of each uid() without the planner rewrite.
  (b) pgbench: `select auth.authenticate(token)` (HS256, ES256 and EdDSA tokens, a token
      picked at random from a pool of distinct ones for every transaction) + an indexed RLS
      select per transaction, against PostgREST's `set_config('role', ...),
      set_config('request.jwt.claims', ...)` + the same select under a Supabase-style policy:
      TPS and CPU per transaction of alternating runs, and mixed runs (all scripts in one
      pgbench run, per-statement latencies).

    python3 bench/rls/rls_bench.py --dir WORKDIR --port PORT [--library PATH] [--rows N]
        [--runs R] [--pgbench-time S] [--pgbench-rounds R] [--pgbench-tokens N] [--clients C]
        [--threads T] [--algs HS256,ES256,EdDSA] [--modes prepared] [--mixed-modes prepared,simple]
        [--variants a,b,...] [--skip-scan] [--skip-pgbench] [--pg-major M]
"""

import argparse
import hashlib
import os
import re
import resource
import secrets
import subprocess
import sys
import time
import uuid

import jwt
import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from common import check_library, cpu_model, cpu_ns, loadavg, med, payload_json  # noqa: E402

SCAN_TARGET = 1.3  # (a): ours unwrapped / literal, at most
# (b): TPS of the auth.authenticate transaction with a token of this algorithm / TPS of the
# set_config transaction, at least.
TPS_TARGETS = {"HS256": 0.95, "ES256": 0.85, "EdDSA": 0.85}
PGBENCH_ALGS = list(TPS_TARGETS)  # the ones measured (--algs)
ISSUER = "http://127.0.0.1:54321/auth/v1"
USER_GROUPS = 100  # owner = md5((id % 100)::text)::uuid: the user owns 1% of the rows
USER = str(uuid.UUID(hashlib.md5(b"0").hexdigest()))  # = md5('0')::uuid in SQL
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Supabase's auth.uid(), as its auth server (supabase/auth) creates it today: migration
# 20240624145325_recreate_auth_functions (and 20240625163155_set_search_path) -- a LANGUAGE sql
# STABLE function with `set search_path to ''`, no PARALLEL clause (so PARALLEL UNSAFE).
SUPABASE_UID = """
create function supabase_style.uid() returns uuid
    set search_path to ''
as $func$
  select
    coalesce(
      nullif(current_setting('request.jwt.claim.sub', true), ''),
      (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
    )::uuid
$func$ language sql stable;
"""
# The same body without the SET clause, as Supabase defined it before that migration
# (20211202183645_update_auth_uid / the supabase/postgres init scripts): such a function can
# be inlined by the planner, so each row evaluates the expression instead of calling it.
SUPABASE_INLINE_UID = """
create function supabase_inline.uid() returns uuid
as $func$
  select
    coalesce(
      nullif(current_setting('request.jwt.claim.sub', true), ''),
      (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
    )::uuid
$func$ language sql stable;
"""

# (b) informational: the cheapest unverified policy -- no SQL function at all, the claim read
# straight from the setting in an initPlan (what a hand-tuned PostgREST deployment could write).
PLAIN_QUAL = "owner = (select (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid)"

# (a) variants: (name, policy qual, description). "literal" is the reference for the ratios.
SCAN_VARIANTS = [
    ("literal", f"owner = '{USER}'::uuid", "owner = '<uuid>'::uuid (literal; the reference)"),
    ("literal_b", f"owner = '{USER}'::uuid",
     "owner = '<uuid>'::uuid again, another table (A/A control: the noise floor)"),
    ("ours", "owner = auth.uid()", "owner = auth.uid()  [ours, unwrapped]"),
    ("ours_sel", "owner = (select auth.uid())", "owner = (select auth.uid())  [ours, wrapped]"),
    ("supa", "owner = supabase_style.uid()",
     "owner = supabase_style.uid()  [Supabase's definition, unwrapped]"),
    ("supa_sel", "owner = (select supabase_style.uid())",
     "owner = (select supabase_style.uid())  [Supabase, wrapped]"),
    ("supa_inline", "owner = supabase_inline.uid()",
     "owner = supabase_inline.uid()  [Supabase's pre-2024 inlinable definition, unwrapped]"),
]


# --- helpers ---------------------------------------------------------------------------------

def reaped_children_ns(pid):
    """CPU time of the exited and reaped children of `pid` (cutime + cstime of /proc/PID/stat),
    in ns; 1/CLK_TCK (10 ms) resolution. For the postmaster these are the parallel workers and
    the backends that have exited."""
    stat = open(f"/proc/{pid}/stat").read()
    fields = stat[stat.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); cutime and cstime are fields 16 and 17.
    return (int(fields[13]) + int(fields[14])) * 1_000_000_000 // CLK_TCK


def parent_pid(pid):
    stat = open(f"/proc/{pid}/stat").read()
    return int(stat[stat.rindex(")") + 2:].split()[1])


def kid(alg):
    return f"bench-rls-{alg.lower()}"


def fresh_keys(algs):
    """{alg: (signing key for PyJWT, key text for auth.add_key)}."""
    keys = {}
    for alg in algs:
        if alg == "HS256":
            secret = secrets.token_urlsafe(48)
            keys[alg] = (secret, secret)
            continue
        private = ec.generate_private_key(ec.SECP256R1()) if alg == "ES256" else ed25519.Ed25519PrivateKey.generate()
        public = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        keys[alg] = (private, public)
    return keys


def user_of(group):
    """The user owning the rows with id % USER_GROUPS = group (= md5(group::text)::uuid)."""
    return str(uuid.UUID(hashlib.md5(str(group).encode()).hexdigest()))


def make_token(signing_key, alg="HS256", user=USER, now=None):
    """A token shaped like the access tokens Supabase issues, for `user`; a fresh session_id,
    so every token is distinct. Returns (token, its claims as signed)."""
    now = int(time.time()) if now is None else now
    claims = {
        "iss": ISSUER,
        "sub": user,
        "aud": "authenticated",
        "exp": now + 7 * 86400,
        "iat": now,
        "email": "bench@example.com",
        "phone": "",
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {"email_verified": True},
        "role": "authenticated",
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": now}],
        "session_id": str(uuid.uuid4()),
        "is_anonymous": False,
    }
    token = jwt.encode(claims, signing_key, algorithm=alg, headers={"kid": kid(alg)})
    return token, payload_json(token)


def connect(port, host, user):
    return psycopg.connect(host=host, port=port, user=user, dbname="postgres", autocommit=True)


# --- setup -----------------------------------------------------------------------------------

def setup(admin, rows, notes_rows, keys):
    t0 = time.time()
    admin.execute("create extension if not exists pg_session_auth")  # run.sh created it
    admin.execute("create extension pg_prewarm")
    for alg, (_, key_text) in keys.items():
        admin.execute("select auth.add_key(%s, %s, %s)", (kid(alg), alg, key_text))
    for sql in [
        # Supabase's roles behind PostgREST's LOGIN NOINHERIT authenticator.
        "create role anon nologin noinherit",
        "create role authenticated nologin noinherit",
        "create role authenticator login noinherit",
        "grant anon, authenticated to authenticator",
        "create schema supabase_style",
        "create schema supabase_inline",
        "grant usage on schema supabase_style, supabase_inline to anon, authenticated",
        SUPABASE_UID,
        SUPABASE_INLINE_UID,
        # (a): the same rows in one table per policy variant.
        f"create table scan_rows as select i as id, md5((i % {USER_GROUPS})::text)::uuid as owner "
        f"from generate_series(1, {rows}) i",
    ]:
        admin.execute(sql)
    for name, qual, _ in SCAN_VARIANTS:
        table = f"scan_{name}"
        admin.execute(f"create table {table} (id int not null, owner uuid not null)")
        admin.execute(f"insert into {table} select id, owner from scan_rows order by id")
        admin.execute(f"alter table {table} enable row level security")
        admin.execute(f"create policy owner_reads on {table} for select to authenticated using ({qual})")
        admin.execute(f"grant select on {table} to authenticated")
    admin.execute("drop table scan_rows")
    # (b): an indexed table per policy style, the same rows in both.
    for table, qual in [("notes_ours", "owner = auth.uid()"),
                        ("notes_supa", "owner = (select supabase_style.uid())"),
                        ("notes_plain", PLAIN_QUAL)]:
        admin.execute(f"create table {table} (id bigint primary key, owner uuid not null, body text not null)")
        admin.execute(
            f"insert into {table} select i, md5((i % {USER_GROUPS})::text)::uuid, "
            f"repeat(md5(i::text), 3) from generate_series(1, {notes_rows}) i")
        admin.execute(f"alter table {table} enable row level security")
        admin.execute(f"create policy owner_reads on {table} for select to authenticated using ({qual})")
        admin.execute(f"grant select on {table} to authenticated")
    tables = [f"scan_{name}" for name, _, _ in SCAN_VARIANTS] + ["notes_ours", "notes_supa", "notes_plain"]
    for table in tables:
        admin.execute(f"vacuum (freeze, analyze) {table}")
        admin.execute("select pg_prewarm(%s::regclass)", (table,))
    for index in ["notes_ours_pkey", "notes_supa_pkey", "notes_plain_pkey"]:
        admin.execute("select pg_prewarm(%s::regclass)", (index,))
    size = admin.execute("select pg_size_pretty(pg_relation_size('scan_literal'))").fetchone()[0]
    print(f"  {len(SCAN_VARIANTS)} scan tables of {rows} rows ({size} each; {rows // USER_GROUPS} "
          f"owned by the user), notes_ours / notes_supa / notes_plain of {notes_rows} rows; vacuum (freeze, "
          f"analyze), pg_prewarm into shared_buffers; {time.time() - t0:.1f} s")


# --- (a) scans -------------------------------------------------------------------------------

class Scanner:
    """A connection as authenticator (non-superuser); each sample is one transaction:
    `begin; select auth.authenticate(token)` (binds the identity, sets request.jwt.claims and
    switches to role authenticated), then the timed `select count(*)` statements, `commit`."""

    def __init__(self, port, host, token, parallel):
        self.conn = connect(port, host, "authenticator")
        self.token = token
        self.parallel = parallel
        if not parallel:
            self.conn.execute("set max_parallel_workers_per_gather = 0")
        self.pid = self.conn.execute("select pg_backend_pid()").fetchone()[0]
        self.postmaster = parent_pid(self.pid)

    def begin(self):
        self.conn.execute("begin")
        self.conn.execute("select auth.authenticate(%s)", (self.token,))
        role = self.conn.execute("select current_user").fetchone()[0]
        if role != "authenticated":
            sys.exit(f"auth.authenticate() left the role at {role!r}, expected 'authenticated'")

    def commit(self):
        self.conn.execute("commit")

    def sample(self, table, repeat):
        """(wall s, on-CPU s, count) per scan: the statement run `repeat` times. On-CPU is the
        backend's own time plus that of the parallel workers (reaped children of the
        postmaster; no other child exits during part (a): autovacuum is off)."""
        sql = f"select count(*) from {table}"
        self.begin()
        cpu0 = cpu_ns(self.pid)
        kids0 = reaped_children_ns(self.postmaster)
        wall0 = time.perf_counter()
        counts = set()
        for _ in range(repeat):
            counts.add(self.conn.execute(sql).fetchone()[0])
        wall = time.perf_counter() - wall0
        cpu = cpu_ns(self.pid) - cpu0 + reaped_children_ns(self.postmaster) - kids0
        self.commit()
        if len(counts) != 1:
            sys.exit(f"{table}: different counts across repeats: {counts}")
        return wall / repeat, cpu / 1e9 / repeat, counts.pop()

    def explain(self, table, analyze=False):
        self.begin()
        options = "analyze, costs off, timing off, summary off" if analyze else "costs off"
        plan = [r[0] for r in self.conn.execute(f"explain ({options}) select count(*) from {table}")]
        self.commit()
        return plan

    def close(self):
        """Closes the connection and waits until its backend has exited and been reaped, so
        that its CPU time does not land in a later sample's reaped-children reading."""
        self.conn.close()
        for _ in range(200):
            if not os.path.exists(f"/proc/{self.pid}"):
                break
            time.sleep(0.025)


def plan_shape(plan):
    text = "\n".join(plan)
    parts = []
    parts.append("parallel (Gather)" if "Gather" in text else "serial")
    if "InitPlan" in text:
        parts.append("InitPlan")
    filt = [line.strip() for line in plan if "Filter:" in line]
    if filt:
        f = filt[0].replace("Filter: ", "filter ")
        parts.append(f if len(f) < 70 else f[:67] + "...")
    return ", ".join(parts)


def run_scans(args, token):
    print(f"\n== (a) RLS scan: select count(*) from scan_<variant> ({args.rows} rows) as authenticated")
    results = {}
    plans = {}
    reused = set()
    for parallel in (False, True):
        mode = "parallel on" if parallel else "parallel off"
        scanner = Scanner(args.port, args.host, token, parallel)
        for name, _, _ in SCAN_VARIANTS:
            plans[(mode, name)] = scanner.explain(f"scan_{name}")
        measured = [name for name, _, _ in SCAN_VARIANTS]
        if parallel:
            # A variant the planner keeps serial with parallelism on (Supabase's uid() is
            # PARALLEL UNSAFE) runs the very plan measured above: its samples are reused
            # rather than taking several more minutes.
            reused = {n for n in measured
                      if plans[(mode, n)] == plans[("parallel off", n)]
                      and not any("Gather" in line for line in plans[(mode, n)])}
            measured = [n for n in measured if n not in reused]
        # Warm-up: every variant once, the fast ones twice (the first parallel query of a
        # connection also starts workers that load the libraries). The faster scan sizes the
        # repeat count so that a sample lasts about --sample-seconds of CPU (the
        # reaped-children clock ticks in 10 ms steps).
        repeats = {}
        t0 = time.time()
        for name in measured:
            cpu = scanner.sample(f"scan_{name}", 1)[1]
            if cpu < args.sample_seconds:
                cpu = min(cpu, scanner.sample(f"scan_{name}", 1)[1])
            repeats[name] = max(1, min(args.max_repeat, round(args.sample_seconds / max(cpu, 1e-3))))
        print(f"  {mode}: warm-up {time.time() - t0:.1f} s; scans per sample: "
              + ", ".join(f"{n} {repeats[n]}" for n in measured)
              + (f"; serial plan, same as parallel off, samples reused: {', '.join(sorted(reused))}"
                 if reused else ""))
        plans[(mode, "ours", "analyze")] = scanner.explain("scan_ours", analyze=True)
        # One run (round): --fast-samples samples of each fast variant, the slow ones (a single
        # scan lasts longer than a sample) one each, in between. Every variant is sampled in
        # every round, so load that comes and goes on the machine hits all alike, and literal
        # and ours are always sampled seconds apart.
        fast = [n for n in measured if repeats[n] > 1]
        slow = [n for n in measured if repeats[n] == 1]
        schedule = []
        for i in range(max(args.fast_samples, len(slow))):
            if i < args.fast_samples:
                schedule += fast
            if i < len(slow):
                schedule.append(slow[i])
        samples = {name: [] for name in measured}
        t0 = time.time()
        for _ in range(args.runs):
            for name in schedule:
                samples[name].append(scanner.sample(f"scan_{name}", repeats[name]))
        for name in reused:
            samples[name] = results["parallel off"][name]
        print(f"  {mode}: {args.runs} runs in {time.time() - t0:.1f} s ({args.fast_samples} samples "
              f"per run of {', '.join(fast)}; 1 of {', '.join(slow) or 'none'})")
        scanner.close()
        results[mode] = samples
    return results, plans, reused


def report_scans(args, results, plans, reused):
    print(f"\n(a) RLS scan of {args.rows} rows, select count(*) as role authenticated (non-superuser, "
          f"via authenticator),\n    identity bound by auth.authenticate() in the transaction; no "
          f"index. Medians after a warm-up, of {args.runs} runs x {args.fast_samples} samples (fast "
          f"variants; a sample repeats the scan\n    for ~{args.sample_seconds} s of CPU) or of {args.runs} "
          f"runs x 1 scan (slow variants); ms per scan; ratio = variant / literal.")
    counts = {(mode, n): {s[2] for s in samples[n]} for mode, samples in results.items() for n in samples}
    all_counts = set().union(*counts.values())
    ok = all_counts == {args.rows // USER_GROUPS}
    print(f"    every variant and run returned count = {', '.join(map(str, sorted(all_counts)))}"
          f" -> {'same rows, OK' if ok else 'MISMATCH'}")
    if not ok:
        for key, value in counts.items():
            print(f"      {key}: {value}")
    summary = {}
    for mode, samples in results.items():
        ref_wall = med(s[0] for s in samples["literal"])
        ref_cpu = med(s[1] for s in samples["literal"])
        print(f"\n  {mode}" + (" (max_parallel_workers_per_gather = 0)" if mode == "parallel off"
                              else " (max_parallel_workers_per_gather = 2, the default)"))
        print(f"    {'policy':<86} {'on-CPU ms':>10} {'ratio':>8} {'wall ms':>10} {'ratio':>8}  plan")
        for name, _, desc in SCAN_VARIANTS:
            wall = med(s[0] for s in samples[name])
            cpu = med(s[1] for s in samples[name])
            summary[(mode, name)] = (cpu / ref_cpu, wall / ref_wall, cpu, wall)
            note = " (same plan as parallel off: its samples)" if mode == "parallel on" and name in reused else ""
            print(f"    {desc:<86} {cpu * 1e3:10.1f} {cpu / ref_cpu:7.2f}x {wall * 1e3:10.1f} "
                  f"{wall / ref_wall:7.2f}x  {plan_shape(plans[(mode, name)])}{note}")
        # Spread, for judging how steady the run was.
        print("    min / max over the runs, on-CPU ms (wall ms):")
        for name, _, _ in SCAN_VARIANTS:
            c = [s[1] * 1e3 for s in samples[name]]
            w = [s[0] * 1e3 for s in samples[name]]
            print(f"      {name:<12} {min(c):9.1f} / {max(c):9.1f}   ({min(w):9.1f} / {max(w):9.1f})")
        paired = [o[1] / l[1] for o, l in zip(samples["ours"], samples["literal"])]
        print(f"    ours / literal, median of paired on-CPU ratios (samples taken side by side): "
              f"{med(paired):.3f}x (min {min(paired):.3f}x, max {max(paired):.3f}x)")
        summary[(mode, "paired")] = med(paired)
    print("\n  EXPLAIN of ours, unwrapped (owner = auth.uid()), parallel off:")
    for line in plans[("parallel off", "ours")]:
        print(f"    {line}")
    print("  EXPLAIN (ANALYZE, TIMING OFF) of the same, parallel off:")
    for line in plans[("parallel off", "ours", "analyze")]:
        print(f"    {line}")
    print("  EXPLAIN (ANALYZE, TIMING OFF) of ours, unwrapped, parallel on:")
    for line in plans[("parallel on", "ours", "analyze")]:
        print(f"    {line}")
    if ("parallel on", "supa") in plans:
        print("  EXPLAIN of Supabase's definition, unwrapped, parallel on:")
        for line in plans[("parallel on", "supa")]:
            print(f"    {line}")
    return summary, ok


def per_call_costs(args, token, claims):
    """µs per call, on-CPU, without the planner rewrite: a PL/pgSQL loop assigns each
    expression to a variable (a 'simple expression': a query without FROM, which the support
    function leaves alone), net of the same loop assigning a constant. Run as authenticated
    inside a transaction that auth.authenticate() has bound (except the set_config pair: while
    an identity is bound, request.jwt.claims follows it and refuses other values)."""
    conn = connect(args.port, args.host, "authenticator")
    pid = conn.execute("select pg_backend_pid()").fetchone()[0]
    n = args.calls
    # (label, PL/pgSQL expression, variable type, calls)
    exprs = [("floor: x := null", "null", "uuid", n),
             ("auth.uid()", "auth.uid()", "uuid", n),
             ("supabase_style.uid()", "supabase_style.uid()", "uuid", n),
             ("supabase_inline.uid()", "supabase_inline.uid()", "uuid", n),
             ("auth.authenticate(token)", "auth.authenticate(tok)", "jsonb", n // 5),
             ("auth.verify(token)", "auth.verify(tok)", "jsonb", n // 5),
             ("set_config('role') + set_config('request.jwt.claims')",
              "set_config('role', 'authenticated', true) || set_config('request.jwt.claims', cl, true)",
              "text", n // 5)]
    times = {label: [] for label, *_ in exprs}
    returns = {}
    for rep in range(4):  # the first is a warm-up
        for label, expr, typ, calls in exprs:
            conn.execute("begin")
            if not label.startswith("set_config"):
                conn.execute("select auth.authenticate(%s)", (token,))
            cpu0 = cpu_ns(pid)
            conn.execute(
                f"do $$ declare x {typ}; tok text := '{token}'; cl text := '{claims}'; "
                f"begin for i in 1..{calls} loop x := {expr}; end loop; end $$")
            cpu = (cpu_ns(pid) - cpu0) / 1e3 / calls
            if typ == "uuid":
                returns[label] = conn.execute(f"select {expr}").fetchone()[0]
            conn.execute("commit")
            if rep:
                times[label].append(cpu)
    conn.close()
    floor = med(times["floor: x := null"])
    return {label: med(times[label]) - floor for label, *_ in exprs[1:]}, floor, returns


def report_per_call(args, costs):
    per_call, floor, returns = costs
    print(f"\n  Per call, without the planner rewrite: a PL/pgSQL loop `x := <expr>` ({args.calls} "
          f"calls; {args.calls // 5} for the last three),\n  on-CPU, median of 3, net of the loop "
          f"itself ({floor:.3f} µs):")
    for label, us in per_call.items():
        ret = f"   returns {returns[label]}" if label in returns else ""
        print(f"    {label:<56} {us:8.3f} µs{ret}")
    if "auth.uid()" in per_call:
        print(f"  Without the rewrite, {args.rows} calls of auth.uid() would add about "
              f"{per_call['auth.uid()'] * args.rows / 1e3:.0f} ms to the scan.")


# --- (b) pgbench -----------------------------------------------------------------------------

def token_table(alg):
    return f"pgb_tokens_{alg.lower()}"


def load_token_pools(admin, keys, pool):
    """One table per algorithm of `pool` distinct tokens, pgb_tokens_<alg>(n, token, claims):
    token n belongs to the user owning the rows with id % USER_GROUPS = n % USER_GROUPS, so a
    transaction that picks token n and a row id of that group returns exactly one row. The
    set_config transactions read the claims column of the HS256 pool (the same claims)."""
    t0 = time.time()
    now = int(time.time())
    sizes = []
    for alg, (signing_key, _) in keys.items():
        table = token_table(alg)
        admin.execute(f"create table {table} (n int primary key, token text not null, claims text not null)")
        with admin.cursor() as cur:
            with cur.copy(f"copy {table} (n, token, claims) from stdin") as copy:
                for n in range(1, pool + 1):
                    token, claims = make_token(signing_key, alg, user_of(n % USER_GROUPS), now)
                    copy.write_row((n, token, claims))
        admin.execute(f"grant select on {table} to authenticator")
        admin.execute(f"vacuum (freeze, analyze) {table}")
        admin.execute("select pg_prewarm(%s::regclass)", (table,))
        admin.execute("select pg_prewarm(%s::regclass)", (f"{table}_pkey",))
        distinct, avg_len = admin.execute(
            f"select count(distinct token), avg(octet_length(token))::int from {table}").fetchone()
        if distinct != pool:
            sys.exit(f"{table}: {distinct} distinct tokens, expected {pool}")
        sizes.append(f"{alg} {avg_len} bytes")
    print(f"  token pools for (b): {pool} distinct tokens per algorithm ({', '.join(sizes)} on average), "
          f"one per (random) transaction; {time.time() - t0:.1f} s")


def ours(alg):
    return f"ours_{alg.lower()}"


def pgbench_variants(args):
    """The variants of the alternating runs (the verdicts), in run order within a round."""
    return [ours(alg) for alg in args.algs] + ["set_config"]


def mixed_variants(args):
    return pgbench_variants(args) + ["set_config_plain"]


def pgbench_scripts(args, mode):
    """Writes the transaction scripts for `mode`; returns {variant: path}. Every transaction
    picks a token (or, for set_config, the claims of a token) at random from its pool, and a
    random row owned by that token's user."""
    groups = USER_GROUPS
    pick = (f"\\set n random(1, {args.pgbench_tokens})\n"
            f"\\set id {groups} * random(1, {args.notes_rows // groups - 1}) + :n % {groups}\n")
    scripts = {}
    for alg in args.algs:
        scripts[ours(alg)] = (pick + "begin;\n"
                              f"select auth.authenticate(token) from {token_table(alg)} where n = :n;\n"
                              "select id, owner, body from notes_ours where id = :id;\n"
                              "commit;\n")
    claims_table = token_table("HS256")
    scripts["set_config"] = (pick + "begin;\n"
                             "select set_config('role', 'authenticated', true), "
                             f"set_config('request.jwt.claims', claims, true) from {claims_table} where n = :n;\n"
                             "select id, owner, body from notes_supa where id = :id;\n"
                             "commit;\n")
    scripts["set_config_plain"] = scripts["set_config"].replace("notes_supa", "notes_plain")
    paths = {}
    for name, text in scripts.items():
        path = os.path.join(args.dir, f"{name}_{mode}.sql")
        with open(path, "w") as f:
            f.write(text)
        paths[name] = path
    return paths


def check_transactions(args):
    """Every transaction, run once through psycopg with token / claims n = USER_GROUPS (the
    user of group 0, USER): they must all return the same row, as 'authenticated'."""
    conn = connect(args.port, args.host, "authenticator")
    got = {}
    n = USER_GROUPS
    set_claims = ("select set_config('role', 'authenticated', true), "
                  f"set_config('request.jwt.claims', claims, true) from {token_table('HS256')} where n = %s")
    cases = [(ours(alg), f"select auth.authenticate(token) from {token_table(alg)} where n = %s", "notes_ours")
             for alg in args.algs]
    cases += [("set_config", set_claims, "notes_supa"), ("set_config_plain", set_claims, "notes_plain")]
    for name, first, table in cases:
        conn.execute("begin")
        conn.execute(first, (n,))
        rows = conn.execute(f"select id, owner, body from {table} where id = %s", (USER_GROUPS * 7,)).fetchall()
        other = conn.execute(f"select count(*) from {table} where id = %s", (USER_GROUPS * 7 + 1,)).fetchone()[0]
        role = conn.execute("select current_user").fetchone()[0]
        conn.execute("commit")
        got[name] = (rows, other, role)
    conn.close()
    first = got[ours(args.algs[0])]
    same = (len(set(map(repr, got.values()))) == 1 and len(first[0]) == 1
            and first[1] == 0 and first[2] == "authenticated" and str(first[0][0][1]) == USER)
    print(f"  check: every transaction ({', '.join(got)}) runs as 'authenticated', sees the user's "
          f"row id {USER_GROUPS * 7} and not another user's row -> {'OK' if same else 'MISMATCH'}")
    if not same:
        sys.exit(f"the transactions disagree: {got}")


def wait_for_backends_gone(admin):
    for _ in range(200):
        n = admin.execute("select count(*) from pg_stat_activity where usename = 'authenticator'").fetchone()[0]
        if n == 0:
            break
        time.sleep(0.05)
    time.sleep(0.3)  # let the postmaster reap them


def run_pgbench(args, admin, postmaster, script, seconds, mode):
    """One pgbench run; returns dict(tps, tx, server_us, client_us)."""
    cmd = [args.pgbench, "-n", "-M", mode, "-c", str(args.clients), "-j", str(args.threads),
           "-T", str(seconds), "-h", args.host, "-p", str(args.port), "-U", "authenticator",
           "-f", script, "postgres"]
    wait_for_backends_gone(admin)
    server0 = reaped_children_ns(postmaster)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wait_for_backends_gone(admin)
    server = reaped_children_ns(postmaster) - server0
    out = proc.stdout + proc.stderr
    tps = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
    tx = re.search(r"number of transactions actually processed: (\d+)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    if proc.returncode != 0 or not tps or not tx or "aborted" in out or (failed and int(failed.group(1))):
        sys.exit(f"pgbench failed (rc {proc.returncode}):\n{out}")
    n = int(tx.group(1))
    client = (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) * 1e6
    return {"tps": float(tps.group(1)), "tx": n, "server_us": server / 1e3 / n, "client_us": client / n}


def run_pgbench_mixed(args, admin, scripts, mode):
    """The scripts in one pgbench run (each transaction picks one at random, equal weights),
    with per-statement latencies (-r): every variant under exactly the same load at the same
    time. Returns {variant: (latency ms, transactions, [(ms, statement)])}."""
    variants = mixed_variants(args)
    cmd = [args.pgbench, "-n", "-r", "-M", mode, "-c", str(args.clients), "-j", str(args.threads),
           "-T", str(args.pgbench_time), "-h", args.host, "-p", str(args.port), "-U", "authenticator"]
    for variant in variants:
        cmd += ["-f", scripts[variant] + "@1"]
    cmd.append("postgres")
    wait_for_backends_gone(admin)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 or "aborted" in out:
        sys.exit(f"pgbench failed (rc {proc.returncode}):\n{out}")
    blocks = out.split("SQL script ")[1:]
    result = {}
    for variant in variants:
        block = next(b for b in blocks if b.split(":", 1)[1].split()[0] == scripts[variant])
        latency = float(re.search(r"latency average = ([0-9.]+) ms", block).group(1))
        tx = int(re.search(r"- (\d+) transactions", block).group(1))
        statements = []
        # PostgreSQL 15+ prints a failures column after the latency; 14 does not.
        for line in block.split("statement latencies")[1].splitlines()[1:]:
            m = re.match(r"\s+([0-9.]+)\s+(?:\d+\s+)*(\S.*)", line)
            if m and not m.group(2).startswith("\\set"):
                statements.append((float(m.group(1)), m.group(2)))
        result[variant] = (latency, tx, statements)
    return result


def rounds_order(args):
    """Alternating runs: every variant once per round, the order reversed every other round
    (ABCD DCBA ABCD ...), so that a drift in load hits all variants alike."""
    variants = pgbench_variants(args)
    order = []
    for r in range(args.pgbench_rounds):
        order += variants if r % 2 == 0 else variants[::-1]
    return order


def run_pgbench_part(args, admin):
    variants = pgbench_variants(args)
    print(f"\n== (b) pgbench: -c {args.clients} -j {args.threads} -T {args.pgbench_time}; alternating "
          f"runs ({args.pgbench_rounds} per variant, order {', '.join(variants)}, then reversed, ...): "
          f"{', '.join(args.modes) or 'none'}; mixed runs: {', '.join(args.mixed_modes) or 'none'}")
    check_transactions(args)
    postmaster = parent_pid(int(admin.execute("select pg_backend_pid()").fetchone()[0]))
    results = {"alternating": {}, "mixed": {}}
    for mode in args.modes:
        scripts = pgbench_scripts(args, mode)
        t0 = time.time()
        for variant in variants:  # warm-up: plans, caches
            run_pgbench(args, admin, postmaster, scripts[variant], args.pgbench_warmup, mode)
        runs = {variant: [] for variant in variants}
        for variant in rounds_order(args):
            res = run_pgbench(args, admin, postmaster, scripts[variant], args.pgbench_time, mode)
            runs[variant].append(res)
            print(f"  -M {mode:<8} {variant:<12} tps {res['tps']:9.1f}   server CPU {res['server_us']:7.1f} "
                  f"µs/tx   pgbench CPU {res['client_us']:6.1f} µs/tx   load {loadavg()}")
        print(f"  -M {mode}: {time.time() - t0:.0f} s")
        results["alternating"][mode] = runs
    for mode in args.mixed_modes:
        scripts = pgbench_scripts(args, mode)
        m = run_pgbench_mixed(args, admin, scripts, mode)
        share = len(mixed_variants(args))
        print(f"  -M {mode:<8} mixed run (1/{share} each): latency "
              + ", ".join(f"{v} {m[v][0]:.3f} ms" for v in mixed_variants(args)) + f"   load {loadavg()}")
        results["mixed"][mode] = m
    return results


def report_pgbench(args, results):
    print(f"\n(b) pgbench, one transaction = 4 statements, TCP 127.0.0.1, login role authenticator "
          f"(NOINHERIT; granted anon, authenticated), -c {args.clients} -j {args.threads}:")
    print("    ours_<alg>: begin; select auth.authenticate(token) from pgb_tokens_<alg> where n = :n;")
    print("                select id, owner, body from notes_ours where id = :id; commit;")
    print("    set_config: begin; select set_config('role', 'authenticated', true), "
          "set_config('request.jwt.claims', claims, true)")
    print("                from pgb_tokens_hs256 where n = :n; select id, owner, body from notes_supa "
          "where id = :id; commit;   (PostgREST's way; no verification)")
    print("    notes_ours: using (owner = auth.uid());  notes_supa: using (owner = (select "
          "supabase_style.uid())); both primary key (id).")
    print(f"    (mixed runs only) set_config_plain: the set_config transaction on notes_plain, using "
          f"({PLAIN_QUAL}):\n    the cheapest unverified policy, no SQL function.")
    print(f"    :n = a random token of the pool ({args.pgbench_tokens} distinct tokens per algorithm, "
          f"{USER_GROUPS} users; verified on every call), :id = a random row of that token's user "
          f"(1 row returned).\n    Both sides fetch their token or claims by primary key in the same "
          f"statement.")
    variants = pgbench_variants(args)
    summary = {"alternating": {}, "mixed": {}}
    for mode, runs in results["alternating"].items():
        stats = {}
        for v in variants:
            rs = runs[v]
            stats[v] = (med(r["tps"] for r in rs), med(r["server_us"] for r in rs),
                        med(r["client_us"] for r in rs))
        print(f"\n  -M {mode}: separate runs, -T {args.pgbench_time} s, {args.pgbench_rounds} per variant "
              f"alternating (ABC.. ..CBA), medians")
        print(f"    {'':<12} {'TPS':>9} {'server CPU µs/tx':>17} {'pgbench CPU µs/tx':>18} {'total':>8}")
        for v in variants:
            tps, srv, cli = stats[v]
            print(f"    {v:<12} {tps:9.1f} {srv:17.1f} {cli:18.1f} {srv + cli:8.1f}")
        tps_s, srv_s, cli_s = stats["set_config"]
        print("    TPS of each run, in order of rounds: " + "; ".join(
            f"{v} " + ", ".join(f"{r['tps']:.0f}" for r in runs[v]) for v in variants))
        summary["alternating"][mode] = {}
        for alg in args.algs:
            o = runs[ours(alg)]
            tps_o, srv_o, cli_o = stats[ours(alg)]
            paired = [a["tps"] / b["tps"] for a, b in zip(o, runs["set_config"])]  # round by round
            cpu_est = (srv_s + cli_s) / (srv_o + cli_o)
            print(f"    {alg:<5} TPS ours / set_config: {tps_o / tps_s:.3f}x (ratio of median TPS; target >= "
                  f"{TPS_TARGETS[alg]:g}x); median of the per-round ratios {med(paired):.3f}x; server CPU "
                  f"{srv_o - srv_s:+.1f} µs/tx ({srv_o / srv_s:.3f}x); CPU-bound estimate {cpu_est:.3f}x")
            summary["alternating"][mode][alg] = (tps_o / tps_s, med(paired), srv_o - srv_s, cpu_est)
    for mode, m in results["mixed"].items():
        share = len(mixed_variants(args))
        print(f"\n  -M {mode}: mixed run -- the {share} scripts in one pgbench -r run, each transaction "
              f"picks one at random (1/{share} each),\n    so all see exactly the same load; -T "
              f"{args.pgbench_time} s; ms per statement (latency under load, incl. waiting for a CPU):")
        for variant in mixed_variants(args):
            lat, tx, statements = m[variant]
            print(f"      {variant:<16} latency average {lat:.3f} ms ({tx} transactions)")
            for ms, text in statements:
                print(f"        {ms:7.3f}  {text[:100]}")
        summary["mixed"][mode] = {}
        for alg in args.algs:
            lat = m[ours(alg)][0]
            ratio, plain = m["set_config"][0] / lat, m["set_config_plain"][0] / lat
            print(f"      {alg:<5} latency set_config / ours = {ratio:.3f}x (the TPS ratio it implies); "
                  f"set_config_plain / ours = {plain:.3f}x")
            summary["mixed"][mode][alg] = (ratio, plain)
    return summary


# --- main ------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--library")
    ap.add_argument("--pgbench", default="/usr/lib/postgresql/15/bin/pgbench")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--fast-samples", type=int, default=3,
                    help="samples per run of the variants whose scan is shorter than a sample")
    ap.add_argument("--sample-seconds", type=float, default=0.5,
                    help="CPU time a scan sample should last (fast variants repeat the scan)")
    ap.add_argument("--max-repeat", type=int, default=20)
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--notes-rows", type=int, default=100_000)
    ap.add_argument("--pgbench-time", type=int, default=20)
    ap.add_argument("--pgbench-warmup", type=int, default=3)
    ap.add_argument("--pgbench-rounds", type=int, default=3)
    ap.add_argument("--pgbench-tokens", type=int, default=10_000,
                    help="distinct tokens per algorithm in the pool the transactions pick from")
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--algs", default=",".join(PGBENCH_ALGS),
                    help="token algorithms of the auth.authenticate transactions in (b)")
    ap.add_argument("--pg-major", type=int, help="the major the server must be (checked, printed)")
    ap.add_argument("--modes", default="prepared",
                    help="protocols for the alternating runs (the verdict uses prepared)")
    ap.add_argument("--mixed-modes", default="prepared,simple",
                    help="protocols for one mixed run each (both scripts in one pgbench run)")
    ap.add_argument("--variants", help="comma-separated subset of the scan variants (for "
                    "investigating; the summary needs literal and ours)")
    ap.add_argument("--skip-scan", action="store_true")
    ap.add_argument("--skip-pgbench", action="store_true")
    args = ap.parse_args()
    args.modes = [m for m in args.modes.split(",") if m]
    args.mixed_modes = [m for m in args.mixed_modes.split(",") if m]
    wanted = [a for a in args.algs.split(",") if a]
    if not wanted or any(a not in TPS_TARGETS for a in wanted):
        sys.exit(f"--algs: a subset of {', '.join(PGBENCH_ALGS)}")
    args.algs = [a for a in PGBENCH_ALGS if a in wanted]
    if args.variants:
        keep = args.variants.split(",")
        SCAN_VARIANTS[:] = [v for v in SCAN_VARIANTS if v[0] in keep]

    started = time.time()
    load_before = loadavg()
    admin = connect(args.port, args.host, "postgres")
    server_version = admin.execute("show server_version").fetchone()[0]
    major = int(admin.execute("show server_version_num").fetchone()[0]) // 10000
    if args.pg_major is not None and major != args.pg_major:
        sys.exit(f"the server is PostgreSQL {server_version}, not {args.pg_major}")
    print(f"== setup (PostgreSQL {major}: {server_version})")
    keys = fresh_keys(sorted(set(args.algs) | {"HS256"}, key=PGBENCH_ALGS.index))
    setup(admin, args.rows, args.notes_rows, keys)
    check_library(admin, args.library)
    token, claims = make_token(keys["HS256"][0])
    print(f"  token for (a): HS256, {len(token)} bytes, Supabase-shaped claims ({len(claims)} bytes), sub {USER}")
    if not args.skip_pgbench:
        load_token_pools(admin, keys, args.pgbench_tokens)

    scan_summary = pgb_summary = None
    scan_ok = True
    calls = None
    if not args.skip_scan:
        results, plans, reused = run_scans(args, token)
        calls = per_call_costs(args, token, claims)
    if not args.skip_pgbench:
        pgb = run_pgbench_part(args, admin)
    load_after = loadavg()

    print("\n" + "=" * 100)
    print(f"RLS benchmark. PostgreSQL {major} ({server_version}); {cpu_model()}, {os.cpu_count()} CPUs; "
          f"load average {load_before} before, {load_after} after")
    if not args.skip_scan:
        scan_summary, scan_ok = report_scans(args, results, plans, reused)
        report_per_call(args, calls)
    if not args.skip_pgbench:
        pgb_summary = report_pgbench(args, pgb)

    print("\n" + "=" * 100)
    print("SUMMARY")
    verdicts = []
    if scan_summary:
        cpu_r, wall_r, _, _ = scan_summary[("parallel off", "ours")]
        verdict = "PASS" if cpu_r <= SCAN_TARGET and scan_ok else "FAIL"
        verdicts.append(verdict)
        print(f"(a) RLS scan, {args.rows} rows, owner = auth.uid() unwrapped / literal-UUID policy, "
              f"parallel off, on-CPU: {cpu_r:.3f}x  (target <= {SCAN_TARGET}x) -> {verdict}")
        if ("parallel off", "literal_b") in scan_summary:
            print(f"    A/A control (the literal policy on a second copy of the table): on-CPU "
                  f"{scan_summary[('parallel off', 'literal_b')][0]:.3f}x, wall "
                  f"{scan_summary[('parallel off', 'literal_b')][1]:.3f}x")
        print(f"    same, wall clock {wall_r:.3f}x; paired on-CPU {scan_summary[('parallel off', 'paired')]:.3f}x; "
              f"parallel on: on-CPU {scan_summary[('parallel on', 'ours')][0]:.3f}x, wall "
              f"{scan_summary[('parallel on', 'ours')][1]:.3f}x")
        for mode in ("parallel off", "parallel on"):
            cells = ", ".join(f"{n} {scan_summary[(mode, n)][0]:.2f}x"
                              for n, _, _ in SCAN_VARIANTS if n != "literal")
            print(f"    on-CPU / literal, {mode}: {cells}")
    if pgb_summary:
        for mode, per_alg in pgb_summary["alternating"].items():
            for alg, (ratio, paired, extra_us, cpu_est) in per_alg.items():
                verdict = "PASS" if ratio >= TPS_TARGETS[alg] else "FAIL"
                verdicts.append(verdict)
                print(f"(b) pgbench -M {mode}, {alg:<5}: TPS auth.authenticate()+RLS select / set_config+RLS "
                      f"select: {ratio:.3f}x  (target >= {TPS_TARGETS[alg]:g}x) -> {verdict}")
                print(f"    per-round ratios, median {paired:.3f}x; server CPU {extra_us:+.1f} µs per "
                      f"transaction; CPU-bound estimate {cpu_est:.3f}x")
        for mode, per_alg in pgb_summary["mixed"].items():
            for alg, (ratio, plain) in per_alg.items():
                print(f"    mixed run -M {mode}, {alg:<5} (same load): latency set_config / ours {ratio:.3f}x; "
                      f"vs the cheapest unverified policy (set_config_plain) {plain:.3f}x  (informational)")
    print(f"OVERALL (PostgreSQL {major}): "
          f"{'PASS' if verdicts and all(v == 'PASS' for v in verdicts) else 'FAIL'}"
          f"  ({time.time() - started:.0f} s after the build)")


if __name__ == "__main__":
    main()
