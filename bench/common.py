"""Helpers the benchmark drivers share: on-CPU clocks from /proc, the machine's description,
medians, executor timing, and the check that a backend runs the library a benchmark built."""

from __future__ import annotations

import base64
import os
import platform
import statistics
import sys


def cpu_ns(pid):
    """Nanoseconds `pid` has spent on a CPU (/proc/PID/schedstat), or None if unreadable."""
    try:
        return int(open(f"/proc/{pid}/schedstat").read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def sched(pid):
    """(on-CPU ns, ns spent runnable but waiting for a CPU) of `pid` (/proc/PID/schedstat)."""
    try:
        fields = open(f"/proc/{pid}/schedstat").read().split()
        return int(fields[0]), int(fields[1])
    except (OSError, ValueError, IndexError):
        return None


def med(values):
    return statistics.median(list(values))


def loadavg():
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.machine()


def execution_ms(conn, sql):
    """Server-side executor time of one run of `sql` (EXPLAIN ANALYZE, no per-node timing)."""
    plan = conn.execute(f"explain (analyze, timing off, summary on, format json) {sql}").fetchone()[0]
    return plan[0]["Execution Time"]


def payload_json(token):
    """A token's claims as JSON text, as signed."""
    payload = token.split(".")[1]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()


def check_library(conn, library):
    """Confirms the backend runs the library this benchmark built (not someone's later
    install); exits otherwise."""
    pid = conn.execute("select pg_backend_pid()").fetchone()[0]
    try:
        maps = open(f"/proc/{pid}/maps").read()
    except OSError as e:
        print(f"  (could not read the backend's memory map to confirm the library: {e})")
        return
    # Named by the file (PostgreSQL itself may live under a directory called pg_session_auth).
    mapped = sorted({line.split()[-1] for line in maps.splitlines()
                     if os.path.basename(line.split()[-1]).startswith("pg_session_auth")})
    print(f"  backend {pid} has mapped: {', '.join(mapped) or 'nothing named pg_session_auth'}")
    if library and os.path.realpath(library) not in mapped:
        sys.exit(f"the backend did not load {library}; refusing to time another build")
