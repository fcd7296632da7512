#!/usr/bin/env python3
"""Driver of the auth.verify benchmark (run through bench/run.sh, which builds, installs and
starts the cluster): generates the tokens, loads them, times the SQL statements server-side,
runs the plain-Rust timer on the same tokens and prints the comparison.

    python3 bench/bench.py --dir WORKDIR --port PORT --raw PATH/raw_bench [--tokens N] [--runs R]
                           [--target-runs R]
                           [--library PATH/pg_session_auth.so]
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

ALGS = ["HS256", "ES256", "RS256", "EdDSA"]
TARGET_ALG = "HS256"
TARGET_RATIO = 3.0
RAW_MEASURES = ["verify", "sig", "parse"]  # "verify" first: it is paired with the SQL run


def kid(alg):
    return f"bench-{alg.lower()}"


def public_pem(private_key):
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def fresh_keys():
    """(signing key for PyJWT, key text for auth.add_key / the Rust timer) per algorithm."""
    keys = {}
    secret = secrets.token_urlsafe(48)  # 64 ASCII characters: the HMAC secret is their bytes
    keys["HS256"] = (secret.encode(), secret)
    p256 = ec.generate_private_key(ec.SECP256R1())
    keys["ES256"] = (p256, public_pem(p256))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys["RS256"] = (rsa_key, public_pem(rsa_key))
    ed = ed25519.Ed25519PrivateKey.generate()
    keys["EdDSA"] = (ed, public_pem(ed))
    return keys


def generate(workdir, n):
    """Writes WORKDIR/<alg>.key and WORKDIR/<alg>.tokens (n distinct tokens, distinct sub/jti)."""
    now = int(time.time())
    keys = fresh_keys()
    for alg in ALGS:
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


def load(conn, workdir, n):
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
    ap.add_argument("--tokens", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--target-runs", type=int, default=25,
                    help=f"runs for {TARGET_ALG}, the algorithm with a target (cheap to repeat)")
    args = ap.parse_args()

    started = time.time()
    load_before = loadavg()
    print(f"== generating {args.tokens} tokens per algorithm (fresh keys)")
    t0 = time.time()
    generate(args.dir, args.tokens)
    print(f"  done in {time.time() - t0:.1f} s")

    conn = psycopg.connect(host=args.host, port=args.port, user="postgres", dbname="postgres",
                           autocommit=True)
    server_version = conn.execute("show server_version").fetchone()[0]
    print("== loading")
    load(conn, args.dir, args.tokens)
    check_library(conn, args.library)

    stmts = {alg: statements(alg) for alg in ALGS}
    backend_pid = conn.execute("select pg_backend_pid()").fetchone()[0]
    print("== plain-Rust timer: loading keys and tokens, checking every token verifies (warm-up)")
    raw = RawTimer(args.raw, args.dir)
    print("== SQL warm-up (every statement once; fills the keyring cache and shared buffers)")
    for alg in ALGS:
        for sql in stmts[alg].values():
            execution_ms(conn, sql)

    n = args.tokens
    runs = {alg: args.target_runs if alg == TARGET_ALG else args.runs for alg in ALGS}
    # samples[(clock, side, alg, kind)] = [µs per token, one per run]; clock "wall" or "cpu".
    samples = {}

    def record(side, alg, kind, pair):
        for clock, value in zip(("wall", "cpu"), pair):
            if value is not None:
                samples.setdefault((clock, side, alg, kind), []).append(value)

    print(f"== timed runs: {', '.join(f'{a} {runs[a]}' for a in ALGS)}; each run times the "
          "Rust verify pass right before the SQL statements")
    for r in range(max(runs.values())):
        for alg in ALGS:
            if r >= runs[alg]:
                continue
            record("raw", alg, "verify", raw.us_per_token(alg, "verify", n))
            for kind, sql in stmts[alg].items():
                record("sql", alg, kind, time_sql(conn, backend_pid, sql, n))
            for measure in RAW_MEASURES[1:]:
                record("raw", alg, measure, raw.us_per_token(alg, measure, n))
        if r + 1 in (1, args.runs, max(runs.values())) or (r + 1) % 5 == 0:
            print(f"  round {r + 1}/{max(runs.values())} done")
    raw.close()
    conn.close()

    print()
    print(f"auth.verify benchmark: {n} distinct tokens per algorithm, one statement per table; "
          f"medians of {', '.join(f'{a} {runs[a]}' for a in ALGS)} runs after a warm-up")
    print(f"PostgreSQL {server_version}; {cpu_model()}, {os.cpu_count()} CPUs; "
          f"load average {load_before} before, {loadavg()} after")
    print("µs per token (row).")
    verdicts = []
    clocks = [c for c in ("wall", "cpu") if ("cpu" != c or ("cpu", "sql", TARGET_ALG, "verify") in samples)]
    for clock in clocks:
        print()
        if clock == "wall":
            print("Wall clock. SQL: server-side executor time, EXPLAIN (ANALYZE, TIMING OFF) / rows; "
                  "Rust: Instant around the pass.")
        else:
            print("On-CPU time (/proc/PID/schedstat of the backend and of the Rust timer; insensitive "
                  "to waiting for a CPU\non a busy machine; the SQL figure includes the statement's "
                  "parse/plan/EXPLAIN overhead, which the floor nets out).")
        verdicts.append(report(clock, samples, runs))
    legend()
    details(samples, clocks)
    print()
    for clock, (gross, net, paired, sql, rust) in zip(clocks, verdicts):
        verdict = "MET" if gross <= TARGET_RATIO else "NOT MET"
        print(f"TARGET {TARGET_ALG} ({'wall clock' if clock == 'wall' else 'on-CPU time'}): "
              f"auth.verify <= {TARGET_RATIO:g}x raw Rust parse+HMAC -> {verdict}: {gross:.2f}x "
              f"({sql:.2f} vs {rust:.2f} µs); net of the floor {net:.2f}x; "
              f"median of paired runs {paired:.2f}x")
    print(f"(benchmark took {time.time() - started:.0f} s after the builds)")


def report(clock, samples, runs):
    med = statistics.median
    header = (f"{'algorithm':<9} | {'auth.verify':>11} | {'floor':>6} | {'net':>8} | "
              f"{'raw verify':>10} | {'raw sig':>8} | {'gross/raw':>9} | {'net/raw':>7}")
    print(header)
    print("-" * len(header))
    target = None
    for alg in ALGS:
        sql = samples[(clock, "sql", alg, "verify")]
        rust = samples[(clock, "raw", alg, "verify")]
        gross = med(sql)
        floor = med(samples[(clock, "sql", alg, "floor")])
        net = gross - floor
        raw = med(rust)
        sig = med(samples[(clock, "raw", alg, "sig")])
        paired = med(s / r for s, r in zip(sql, rust))
        print(f"{alg:<9} | {fmt(gross, 11)} | {fmt(floor, 6, 3)} | {fmt(net, 8)} | "
              f"{fmt(raw, 10)} | {fmt(sig, 8)} | {fmt(gross / raw, 8)}x | {fmt(net / raw, 6)}x")
        if alg == TARGET_ALG:
            target = (gross / raw, net / raw, paired, gross, raw)
    return target


def legend():
    print()
    print("auth.verify  select count(auth.verify(token)) from tokens_<alg>  (gross, per row)")
    print("floor        select count(octet_length(token)) from tokens_<alg>: the same scan and")
    print("             aggregate with one built-in C function call on the same text column")
    print("net          auth.verify - floor: what calling auth.verify adds per row")
    print("raw verify   pg_session_auth_core::verify in plain Rust: parse, key, signature, claims")
    print("raw sig      parse_compact + key lookup + signature check only, plain Rust")
    print("gross/raw    auth.verify / raw verify; net/raw: net / raw verify")
    print("claims::jsonb (details) select count(claims::jsonb) over the tokens' claims as text: the")
    print("             jsonb_in parse a result built through text would cost (auth.verify builds jsonb directly)")


def details(samples, clocks):
    med = statistics.median
    print()
    print("Details, min / median / max over the runs, µs per row" +
          (" (wall clock | on-CPU)" if len(clocks) == 2 else "") + ":")
    rows = [("scan only, count(token)", "sql", "scan"), ("floor", "sql", "floor"),
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
