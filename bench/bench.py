#!/usr/bin/env python3
"""Driver of the auth.verify benchmark (run through bench/run.sh, which builds, installs and
starts the cluster): generates the tokens, loads them, times the SQL statements server-side,
runs the plain-Rust timer on the same tokens and prints the comparison, for all 12 algorithms.

    python3 bench/bench.py --dir WORKDIR --port PORT --raw PATH/raw_bench [--tokens N]
                           [--asym-tokens N] [--runs R] [--target-runs R] [--algs A,B,...]
                           [--pg-major M] [--library PATH/pg_session_auth.so]
"""

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import time
import uuid

import jwt
import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from common import check_library, cpu_model, cpu_ns, execution_ms, loadavg, payload_json

# Every algorithm the extension accepts (core/src/algorithm.rs, Algorithm::ALL), in that order.
ALL_ALGS = ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
            "ES256", "ES384", "EdDSA"]
ALGS = list(ALL_ALGS)  # the ones measured (--algs)
HMAC_ALGS = {"HS256", "HS384", "HS512"}
# Targets: auth.verify (gross, per row) / the plain-Rust floor (pg_session_auth_core::verify on
# the same tokens, keys and AWS-LC library, measured in the same run), at most. HS384 and HS512
# have none (informational).
TARGET_ALG = "HS256"  # the cheap one, given more runs (--target-runs)
TARGETS = {"HS256": 2.0, **{alg: 1.2 for alg in ALL_ALGS if alg not in HMAC_ALGS}}
RAW_MEASURES = ["verify", "sig", "parse"]  # "verify" first: it is paired with the SQL run


def kid(alg):
    return f"bench-{alg.lower()}"


def public_pem(private_key):
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def fresh_keys(algs):
    """(signing key for PyJWT, key text for auth.add_key / the Rust timer) per algorithm; a
    key of its own for every algorithm (no key is shared between two algorithms)."""
    keys = {}
    for alg in algs:
        if alg in HMAC_ALGS:
            secret = secrets.token_urlsafe(48)  # 64 ASCII characters (HS512 needs >= 64 bytes)
            keys[alg] = (secret.encode(), secret)
            continue
        if alg[:2] in ("RS", "PS"):
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif alg == "ES256":
            private = ec.generate_private_key(ec.SECP256R1())
        elif alg == "ES384":
            private = ec.generate_private_key(ec.SECP384R1())
        elif alg == "EdDSA":
            private = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(alg)
        keys[alg] = (private, public_pem(private))
    return keys


def key_description(alg):
    return {"HS": "64-byte secret", "RS": "RSA-2048", "PS": "RSA-2048", "ES": "P-256" if alg == "ES256" else "P-384",
            "Ed": "Ed25519"}[alg[:2]]


def generate(workdir, counts):
    """Writes WORKDIR/<alg>.key, WORKDIR/<alg>.tokens (counts[alg] distinct tokens, distinct
    sub/jti) and WORKDIR/<alg>.claims."""
    now = int(time.time())
    keys = fresh_keys(ALGS)
    for alg in ALGS:
        n = counts[alg]
        t0 = time.time()
        signing_key, key_text = keys[alg]
        with open(os.path.join(workdir, f"{alg}.key"), "w") as f:
            f.write(key_text)
        tokens = []
        for i in range(n):
            claims = {
                "iss": "https://bench.example/auth/v1",
                "sub": f"{uuid.uuid4()}",
                "aud": "authenticated",
                "role": "authenticated",
                "email": f"user{i}@bench.example",
                "iat": now,
                "exp": now + 10 * 365 * 86400,
                "jti": f"{alg}-{i}-{secrets.token_hex(8)}",
            }
            tokens.append(jwt.encode(claims, signing_key, algorithm=alg, headers={"kid": kid(alg)}))
        assert len(set(tokens)) == n
        with open(os.path.join(workdir, f"{alg}.tokens"), "w") as f:
            f.write("\n".join(tokens) + "\n")
        with open(os.path.join(workdir, f"{alg}.claims"), "w") as f:
            f.write("\n".join(payload_json(t) for t in tokens) + "\n")
        print(f"  {alg:<5} {n} tokens ({key_description(alg)}) in {time.time() - t0:.1f} s")


def load(conn, workdir, counts):
    conn.execute("create extension if not exists pg_session_auth")
    for alg in ALGS:
        with open(os.path.join(workdir, f"{alg}.key")) as f:
            conn.execute("select auth.add_key(%s, %s, %s)", (kid(alg), alg, f.read()))
        table = f"tokens_{alg.lower()}"
        conn.execute(f"drop table if exists {table}")
        conn.execute(f"create table {table} (token text not null)")
        with open(os.path.join(workdir, f"{alg}.tokens")) as f:
            tokens = [line.strip() for line in f if line.strip()]
        with conn.cursor() as cur:
            with cur.copy(f"copy {table} (token) from stdin") as copy:
                for token in tokens:
                    copy.write_row((token,))
        claims_table = f"claims_{alg.lower()}"
        conn.execute(f"drop table if exists {claims_table}")
        conn.execute(f"create table {claims_table} (claims text not null)")
        with open(os.path.join(workdir, f"{alg}.claims")) as f:
            with conn.cursor() as cur:
                with cur.copy(f"copy {claims_table} (claims) from stdin") as copy:
                    for line in f:
                        if line.strip():
                            copy.write_row((line.strip(),))
        conn.execute(f"vacuum (analyze, freeze) {claims_table}")
        conn.execute(f"vacuum (analyze, freeze) {table}")
        count, distinct, avg_len = conn.execute(
            f"select count(*), count(distinct token), avg(octet_length(token))::int from {table}"
        ).fetchone()
        n = counts[alg]
        if count != n or distinct != n:
            sys.exit(f"{table}: {count} rows, {distinct} distinct; expected {n}")
        print(f"  {table}: {count} distinct tokens, {avg_len} bytes on average")


def statements(alg):
    table = f"tokens_{alg.lower()}"
    return {
        "scan": f"select count(token) from {table}",
        "floor": f"select count(octet_length(token)) from {table}",
        "verify": f"select count(auth.verify(token)) from {table}",
        "jsonb": f"select count(claims::jsonb) from claims_{alg.lower()}",
    }


def time_sql(conn, backend_pid, sql, n):
    """(wall-clock executor, on-CPU of the backend for the whole statement) µs per row."""
    cpu_before = cpu_ns(backend_pid)
    ms = execution_ms(conn, sql)
    cpu_after = cpu_ns(backend_pid)
    cpu = None if cpu_before is None else (cpu_after - cpu_before) / 1000.0 / n
    return ms * 1000.0 / n, cpu


class RawTimer:
    """bench/raw in --serve mode: one timed plain-Rust pass over an algorithm's tokens per ask."""

    def __init__(self, raw, workdir):
        self.proc = subprocess.Popen(
            [raw, "--dir", workdir, "--algs", ",".join(ALGS), "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        line = self.proc.stdout.readline().strip()
        if line != "READY":
            self.proc.kill()
            sys.exit(f"bench/raw did not start (said {line!r}); every token must verify in Rust")

    def us_per_token(self, alg, measure, n):
        """(wall-clock, on-CPU) µs per token of one pass."""
        cpu_before = cpu_ns(self.proc.pid)
        self.proc.stdin.write(f"{alg} {measure}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().strip()
        cpu_after = cpu_ns(self.proc.pid)
        try:
            wall = float(line)
        except ValueError:
            sys.exit(f"bench/raw: {line!r}")
        cpu = None if cpu_before is None else (cpu_after - cpu_before) / 1000.0 / n
        return wall, cpu

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def fmt(x, width=8, digits=2):
    return f"{x:{width}.{digits}f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--raw", required=True)
    ap.add_argument("--library")
    ap.add_argument("--pg-major", type=int, help="the major the server must be (checked, printed)")
    ap.add_argument("--tokens", type=int, default=10_000, help="tokens per HMAC algorithm")
    ap.add_argument("--asym-tokens", type=int, default=5_000,
                    help="tokens per asymmetric algorithm (their signature check dominates; fewer suffice)")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--target-runs", type=int, default=25,
                    help=f"runs for {TARGET_ALG} (cheap to repeat, and the tightest target)")
    ap.add_argument("--algs", help="comma-separated subset of " + ",".join(ALL_ALGS))
    args = ap.parse_args()
    if args.algs:
        wanted = [a for a in args.algs.split(",") if a]
        unknown = [a for a in wanted if a not in ALL_ALGS]
        if unknown:
            sys.exit(f"unknown algorithm(s): {', '.join(unknown)}; known: {', '.join(ALL_ALGS)}")
        ALGS[:] = [a for a in ALL_ALGS if a in wanted]
    counts = {alg: args.tokens if alg in HMAC_ALGS else args.asym_tokens for alg in ALGS}

    started = time.time()
    load_before = loadavg()
    conn = psycopg.connect(host=args.host, port=args.port, user="postgres", dbname="postgres",
                           autocommit=True)
    server_version = conn.execute("show server_version").fetchone()[0]
    major = int(conn.execute("show server_version_num").fetchone()[0]) // 10000
    if args.pg_major is not None and major != args.pg_major:
        sys.exit(f"the server is PostgreSQL {server_version}, not {args.pg_major}")
    print(f"== PostgreSQL {major} ({server_version})")

    print(f"== generating tokens (fresh keys): {args.tokens} per HMAC algorithm, "
          f"{args.asym_tokens} per asymmetric one")
    t0 = time.time()
    generate(args.dir, counts)
    print(f"  done in {time.time() - t0:.1f} s")

    print("== loading")
    load(conn, args.dir, counts)
    check_library(conn, args.library)

    stmts = {alg: statements(alg) for alg in ALGS}
    backend_pid = conn.execute("select pg_backend_pid()").fetchone()[0]
    print("== plain-Rust timer: loading keys and tokens, checking every token verifies (warm-up)")
    t0 = time.time()
    raw = RawTimer(args.raw, args.dir)
    print(f"  ready in {time.time() - t0:.1f} s")
    print("== SQL warm-up (every statement once; fills the keyring cache and shared buffers)")
    for alg in ALGS:
        for sql in stmts[alg].values():
            execution_ms(conn, sql)

    runs = {alg: args.target_runs if alg == TARGET_ALG else args.runs for alg in ALGS}
    # samples[(clock, side, alg, kind)] = [µs per token, one per run]; clock "wall" or "cpu".
    samples = {}

    def record(side, alg, kind, pair):
        for clock, value in zip(("wall", "cpu"), pair):
            if value is not None:
                samples.setdefault((clock, side, alg, kind), []).append(value)

    print(f"== timed runs: {', '.join(f'{a} {runs[a]}' for a in ALGS)}; each run times the "
          "Rust verify pass right before the SQL statements")
    t0 = time.time()
    for r in range(max(runs.values())):
        for alg in ALGS:
            if r >= runs[alg]:
                continue
            n = counts[alg]
            record("raw", alg, "verify", raw.us_per_token(alg, "verify", n))
            for kind, sql in stmts[alg].items():
                record("sql", alg, kind, time_sql(conn, backend_pid, sql, n))
            for measure in RAW_MEASURES[1:]:
                record("raw", alg, measure, raw.us_per_token(alg, measure, n))
        if r + 1 in (1, args.runs, max(runs.values())) or (r + 1) % 5 == 0:
            print(f"  round {r + 1}/{max(runs.values())} done ({time.time() - t0:.0f} s)")
    raw.close()
    conn.close()

    print()
    print(f"auth.verify benchmark, PostgreSQL {major}: distinct tokens per algorithm "
          f"({args.tokens} per HMAC algorithm, {args.asym_tokens} per asymmetric one), one statement "
          f"per table; medians of {', '.join(f'{a} {runs[a]}' for a in ALGS)} runs after a warm-up")
    print(f"PostgreSQL {major} ({server_version}); {cpu_model()}, {os.cpu_count()} CPUs; "
          f"load average {load_before} before, {loadavg()} after")
    print("µs per token (row).")
    clocks = [c for c in ("wall", "cpu") if c != "cpu" or ("cpu", "sql", ALGS[0], "verify") in samples]
    for clock in clocks:
        print()
        if clock == "wall":
            print("Wall clock. SQL: server-side executor time, EXPLAIN (ANALYZE, TIMING OFF) / rows; "
                  "Rust: Instant around the pass.")
        else:
            print("On-CPU time (/proc/PID/schedstat of the backend and of the Rust timer; insensitive "
                  "to waiting for a CPU\non a busy machine; the SQL figure includes the statement's "
                  "parse/plan/EXPLAIN overhead, which the call floor nets out).")
        report(clock, samples)
    legend()
    details(samples, clocks)
    met = verdicts(samples, clocks)
    print()
    for clock in sorted(clocks, key=lambda c: c != "cpu"):
        m = met[clock]
        print(f"TARGETS ({'on-CPU time' if clock == 'cpu' else 'wall clock'}): {sum(m.values())} of "
              f"{len(m)} met" + (f"; not met: {', '.join(a for a, ok in m.items() if not ok)}"
                                 if not all(m.values()) else ""))
    print(f"PostgreSQL {major}; benchmark took {time.time() - started:.0f} s after the builds")


def ratios(clock, samples, alg):
    """(gross µs, call floor µs, raw verify µs, raw sig µs, paired ratio) of one algorithm."""
    med = statistics.median
    sql = samples[(clock, "sql", alg, "verify")]
    rust = samples[(clock, "raw", alg, "verify")]
    return (med(sql), med(samples[(clock, "sql", alg, "floor")]), med(rust),
            med(samples[(clock, "raw", alg, "sig")]), med(s / r for s, r in zip(sql, rust)))


def report(clock, samples):
    header = (f"{'algorithm':<9} | {'auth.verify':>11} | {'call floor':>10} | {'net':>8} | "
              f"{'raw verify':>10} | {'raw sig':>8} | {'gross/raw':>9} | {'net/raw':>7}")
    print(header)
    print("-" * len(header))
    for alg in ALGS:
        gross, floor, raw, sig, _ = ratios(clock, samples, alg)
        net = gross - floor
        print(f"{alg:<9} | {fmt(gross, 11)} | {fmt(floor, 10, 3)} | {fmt(net, 8)} | "
              f"{fmt(raw, 10)} | {fmt(sig, 8)} | {fmt(gross / raw, 8)}x | {fmt(net / raw, 6)}x")


def verdicts(samples, clocks):
    """The targets: auth.verify (gross) / the plain-Rust floor of the same algorithm, same run.
    Prints one table per clock, on-CPU first; returns {clock: {alg: met}}."""
    met = {}
    for clock in sorted(clocks, key=lambda c: c != "cpu"):
        print()
        print(f"Targets, {'on-CPU time' if clock == 'cpu' else 'wall clock'}: auth.verify vs the "
              "plain-Rust floor (pg_session_auth_core::verify on the same\ntokens and keys, signatures "
              "on the same AWS-LC library, measured in this run beside each SQL run).")
        header = (f"{'algorithm':<9} | {'auth.verify µs':>14} | {'Rust floor µs':>13} | {'ratio':>7} | "
                  f"{'paired':>7} | {'target':>8} | verdict")
        print(header)
        print("-" * (len(header) + 4))
        met[clock] = {}
        for alg in ALGS:
            gross, _, raw, _, paired = ratios(clock, samples, alg)
            target = TARGETS.get(alg)
            if target is None:
                verdict, goal = "(no target)", "-"
            else:
                ok = gross / raw <= target
                met[clock][alg] = ok
                verdict, goal = ("MET" if ok else "NOT MET"), f"<= {target:g}x"
            print(f"{alg:<9} | {fmt(gross, 14)} | {fmt(raw, 13)} | {fmt(gross / raw, 6)}x | "
                  f"{fmt(paired, 6)}x | {goal:>8} | {verdict}")
    return met


def legend():
    print()
    print("auth.verify  select count(auth.verify(token)) from tokens_<alg>  (gross, per row)")
    print("call floor   select count(octet_length(token)) from tokens_<alg>: the same scan and")
    print("             aggregate with one built-in C function call on the same text column")
    print("net          auth.verify - call floor: what calling auth.verify adds per row")
    print("raw verify   pg_session_auth_core::verify in plain Rust: parse, key, signature, claims")
    print("             (the plain-Rust floor of the targets)")
    print("raw sig      parse_compact + key lookup + signature check only, plain Rust")
    print("gross/raw    auth.verify / raw verify; net/raw: net / raw verify")
    print("paired       (targets) median over the runs of auth.verify / the Rust pass taken just before it")
    print("claims::jsonb (details) select count(claims::jsonb) over the tokens' claims as text: the")
    print("             jsonb_in parse a result built through text would cost (auth.verify builds jsonb directly)")


def details(samples, clocks):
    med = statistics.median
    print()
    print("Details, min / median / max over the runs, µs per row" +
          (" (wall clock | on-CPU)" if len(clocks) == 2 else "") + ":")
    rows = [("scan only, count(token)", "sql", "scan"), ("call floor", "sql", "floor"),
            ("auth.verify", "sql", "verify"),
            ("claims::jsonb (jsonb_in of the same claims)", "sql", "jsonb"),
            ("raw verify", "raw", "verify"), ("raw sig", "raw", "sig"),
            ("raw parse_compact", "raw", "parse")]
    for alg in ALGS:
        print(f"  {alg}:")
        for label, side, kind in rows:
            cells = []
            for clock in clocks:
                v = samples[(clock, side, alg, kind)]
                cells.append(f"{min(v):9.3f} {med(v):9.3f} {max(v):9.3f}")
            print(f"    {label:<44} " + " | ".join(cells))
        for label, combine in [("auth.verify / raw verify: best of each",
                                lambda s, r: min(s) / min(r)),
                               ("auth.verify / raw verify: median of paired",
                                lambda s, r: med(a / b for a, b in zip(s, r)))]:
            cells = [f"{combine(samples[(c, 'sql', alg, 'verify')], samples[(c, 'raw', alg, 'verify')]):28.2f}x"
                     for c in clocks]
            print(f"    {label:<44} " + " | ".join(cells))


if __name__ == "__main__":
    main()
