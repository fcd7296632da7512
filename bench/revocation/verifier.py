#!/usr/bin/env python3
"""One concurrent verifier for the purge phase of the revocation benchmark (started by
bench.py). It verifies tokens in a loop, BATCH tokens per statement, cycling over its token
file, until the file STOP exists, and then writes the CLOCK_MONOTONIC time at which each
statement completed (comparable across processes on Linux) to OUT as JSON.

    python3 verifier.py --port P --db DB --tokens FILE --batch 20 --stop STOPFILE --out OUT

Give it more distinct tokens than a backend keeps answers for (10,000 per kind): cycling over
them, every verification then misses the answer cache and looks all three revocation tables
up in their indexes (one query), which is what a purge could get in the way of.
"""

import argparse
import json
import os
import sys
import time

import psycopg

SQL = "select count(auth.verify(t)) from unnest(%s::text[]) as t"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--stop", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    tokens = [line.strip() for line in open(args.tokens) if line.strip()]
    batches = [tokens[i:i + args.batch] for i in range(0, len(tokens) - args.batch + 1, args.batch)]
    conn = psycopg.connect(host=args.host, port=args.port, user="postgres", dbname=args.db,
                           autocommit=True)
    pid = conn.execute("select pg_backend_pid()").fetchone()[0]
    cur = conn.cursor()
    # Warm-up: prepares the statement, loads the keyring and the revocation lookups' plans.
    for batch in batches[:5]:
        cur.execute(SQL, (batch,), prepare=True)
    print(f"READY {pid}", flush=True)

    done = []
    i = 5
    while not os.path.exists(args.stop):
        batch = batches[i % len(batches)]
        cur.execute(SQL, (batch,), prepare=True)
        if cur.fetchone()[0] != len(batch):
            sys.exit("verifier: a batch did not verify completely")
        done.append(time.monotonic())
        i += 1
    conn.close()
    with open(args.out, "w") as f:
        json.dump({"pid": pid, "batch": args.batch, "distinct_tokens": len(tokens), "done": done}, f)


if __name__ == "__main__":
    main()
