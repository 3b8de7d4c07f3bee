"""A throwaway PostgreSQL server for contract tests: its own data directory, a Unix socket only, stopped and deleted after.

``scripts/install`` installs Debian's ``postgresql`` (the server binaries live in
``/usr/lib/postgresql/<version>/bin``).  The server runs as the ``postgres`` OS user
when the tests run as root (``initdb`` refuses root), listens on no TCP port at all
(``listen_addresses=''``) but on a socket in its own temporary directory, so it
never collides with another server or test, and runs without fsync (the data is
thrown away).  ``PostgresServer.new_database()`` makes a fresh empty database and
returns its SQLAlchemy URL (``postgresql+psycopg://postgres@/<db>?host=<socket dir>``).

Without the binaries the fixture skips, except under CI (``CI=true``), where they
must be there and their absence is an error.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT_S = 60  # pg_ctl -w -t: only bounds a broken start; a normal one takes about a second
PORT = 5432  # only names the socket file inside our own directory


def server_bindir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``: Debian's newest ``/usr/lib/postgresql/*/bin``, else on PATH."""

    def version(initdb: str) -> int:
        number = Path(initdb).parts[4]  # /usr/lib/postgresql/<version>/bin/initdb
        return int(number) if number.isdigit() else 0

    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if versions:
        return Path(versions[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """One running server (see the module doc); ``stop()`` ends it and deletes its files."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.user = "postgres" if os.geteuid() == 0 else None  # the OS user the server runs as (None: ourselves)
        self.root = Path(tempfile.mkdtemp(prefix="cortex-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "run"
        self.log = self.root / "server.log"
        self._databases = 0
        self._running = False
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            user=self.user,
            check=True,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S + 30,
            cwd=self.root,
        )

    def _start(self) -> None:
        self.sockets.mkdir()
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in (self.root, self.sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--no-locale",
        )
        options = f"-c listen_addresses='' -k {self.sockets} -p {PORT} -c fsync=off -c full_page_writes=off"
        self._running = True
        self._run(
            str(self.bindir / "pg_ctl"),
            "start",
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
        )

    def new_database(self) -> str:
        """Create an empty database; its SQLAlchemy URL."""
        self._databases += 1
        name = f"cortex_test_{self._databases}"
        self._run(str(self.bindir / "createdb"), "-h", str(self.sockets), "-p", str(PORT), "-U", "postgres", name)
        return f"postgresql+psycopg://postgres@/{name}?host={self.sockets}&port={PORT}"

    def stop(self) -> None:
        """Stop the server (immediately: nothing is kept) and delete its directory."""
        try:
            if self._running:
                self._running = False
                self._run(str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "immediate", "-w")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def postgres_or_skip() -> PostgresServer:
    """A started server; skips the test if PostgreSQL is not installed (an error under CI, which installs it)."""
    bindir = server_bindir()
    missing = bindir is None or not (bindir / "pg_ctl").exists()
    if not missing and os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing = True
    if missing or bindir is None:
        message = "PostgreSQL server binaries (or the postgres OS user) not found: scripts/install installs Debian's postgresql"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return PostgresServer(bindir)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole test session (each test asks it for a fresh database)."""
    server = postgres_or_skip()
    try:
        yield server
    finally:
        server.stop()
