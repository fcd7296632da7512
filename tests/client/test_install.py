"""Installing a new build never takes a running server down (scripts/install.sh).

A running backend has the extension's library mapped. `cargo pgrx install` used to copy the
new library over the same file in place, and the backend's code pages changed under it
(SIGILL/SIGBUS: the README's demo cluster died when the test command installed). The install
script renames a new file into place instead: the running backend keeps the old file's inode,
and new backends map the new file.
"""

from __future__ import annotations

import os
import subprocess

from conftest import PG_BIN, REPO, as_postgres, running_cluster



def mapped_library(pid: int) -> tuple[int, str]:
    """(inode, path as /proc shows it) of the pg_session_auth library mapped by `pid`."""
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            if "pg_session_auth" in line and ".so" in line:
                fields = line.split(maxsplit=5)
                return int(fields[4]), fields[5].strip()
    raise AssertionError(f"backend {pid} has not mapped the library")


def test_an_install_leaves_running_servers_their_library():
    library = subprocess.run([f"{PG_BIN}/pg_config", "--pkglibdir"], capture_output=True,
                             text=True, check=True).stdout.strip() + "/pg_session_auth.so"
    with running_cluster() as cluster:
        conn = cluster.connect()
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]
        assert conn.execute("select auth.jwks()").fetchone()[0] == {"keys": []}
        inode, _ = mapped_library(pid)
        assert inode == os.stat(library).st_ino

        subprocess.run(["bash", str(REPO / "scripts" / "install.sh"), f"{PG_BIN}/pg_config",
                        "debug"], check=True, cwd=REPO, timeout=1200)

        # A new file under the old name; the running backend still maps the old one.
        assert os.stat(library).st_ino != inode, "the library was rewritten in place"
        assert mapped_library(pid)[0] == inode
        assert conn.execute("select auth.jwks()").fetchone()[0] == {"keys": []}
        # New backends of this server are forked from the postmaster, which preloaded the
        # old library; they work as before. A restart loads the new one.
        with cluster.connect() as fresh:
            assert fresh.execute("select auth.jwks()").fetchone()[0] == {"keys": []}
        conn.close()
        cluster.close_connections()
        restarted = as_postgres(f"{PG_BIN}/pg_ctl", "-D", str(cluster.datadir), "-m", "fast",
                                "-w", "-l", str(cluster.datadir / "server.log"), "restart")
        assert restarted.returncode == 0, restarted.stderr
        with cluster.connect() as fresh:
            new_pid = fresh.execute("select auth.jwks(), pg_backend_pid()").fetchone()[1]
            assert mapped_library(new_pid)[0] == os.stat(library).st_ino
