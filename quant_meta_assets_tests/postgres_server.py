"""A throwaway PostgreSQL server from Debian's `postgresql` package, for the deployment tests.

`initdb` in a fresh temp directory, run as an unprivileged user (PostgreSQL refuses root: as root
we switch to `nobody` with runuser), listening on 127.0.0.1 only at a free port, password auth;
always stopped and removed afterwards. Yields the DAGSTER_PG_* variables deploy/dagster.yaml reads.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

UNPRIVILEGED_USER = "nobody"
PG_USER, PG_PASSWORD, PG_DB = "dagster", "dagster-test-pw", "dagster"


def postgres_bindir() -> Path | None:
    """Where initdb/pg_ctl live: Debian keeps them under /usr/lib/postgresql/<major>/bin (off PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server() -> Iterator[dict[str, str]]:
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not installed (Debian: apt-get install postgresql; .ci/run does)")
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", UNPRIVILEGED_USER, "--"] if as_root else []
    base = Path(tempfile.mkdtemp(prefix="qma-pg-"))  # under /tmp: `nobody` cannot enter pytest's 0700 tmp dirs
    data, log, pwfile = base / "data", base / "server.log", base / "pw"
    pwfile.write_text(PG_PASSWORD + "\n")
    if as_root:
        shutil.chown(base, UNPRIVILEGED_USER)
        shutil.chown(pwfile, UNPRIVILEGED_USER)
    port = _free_port()
    started = False
    try:
        subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, f"--pwfile={pwfile}",
             "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True, text=True, timeout=120,
        )
        options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' -c fsync=off"
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60",
             "start"],
            check=True, capture_output=True, text=True, timeout=90,
        )
        started = True
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=port, user=PG_USER, password=PG_PASSWORD,
                                      dbname="postgres", connect_timeout=10)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {PG_DB}")
        finally:
            connection.close()
        yield {
            "DAGSTER_PG_USERNAME": PG_USER,
            "DAGSTER_PG_PASSWORD": PG_PASSWORD,
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_DB": PG_DB,
            "DAGSTER_PG_PORT": str(port),
        }
    finally:
        if started:
            subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "60",
                            "stop"], capture_output=True, timeout=90)
        shutil.rmtree(base, ignore_errors=True)
