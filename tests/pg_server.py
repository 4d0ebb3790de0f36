"""A throwaway PostgreSQL cluster for the tests, the chaos scenario and the benchmark.

:class:`Cluster` runs Debian's server binaries (``initdb``, ``pg_ctl``) in a temporary
directory: password authentication (scram) on 127.0.0.1 and a free port, so every URL
the tests use carries a password, and the socket in the same directory. As root, the
binaries run as the ``postgres`` user (the server refuses to run as root).

The ``pg_server`` fixture starts one cluster per test session (skipped with a reason
that says how to install the server where the binaries are missing, a failure instead
with ``MASSIVA_REQUIRE_POSTGRES=1``); ``pg_url`` gives each test a journal URL of its
own (a fresh schema in the one database); ``journal_at`` runs a test once per backend.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

__all__ = [
    "INSTALL",
    "PASSWORD",
    "Cluster",
    "JournalAt",
    "find_bindir",
    "journal_at",
    "pg_server",
    "pg_url",
]

#: what a machine without the server binaries needs
INSTALL = "apt-get install postgresql (and pip install 'massiva-frames[postgres]')"

#: the cluster's superuser password: URL-unsafe characters on purpose, so the tests see
#: that no error, log line or journal ever shows it in any encoding.
PASSWORD = "pg-S3cr3t;p@ss/w0rd"


def find_bindir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: ``pg_config --bindir``, the PATH, or
    Debian's ``/usr/lib/postgresql/<version>/bin`` (newest first); None if absent."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            candidates.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)

    def version(path: str) -> tuple[int, ...]:
        digits = Path(path).parent.name
        return tuple(int(p) for p in digits.split(".") if p.isdigit())

    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    candidates += [Path(p) for p in debian]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _psycopg_available() -> bool:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return True


def _runs_as_postgres() -> bool:
    """As root, the server runs as the ``postgres`` user: it must exist."""
    if os.geteuid() != 0:
        return True
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return shutil.which("runuser") is not None


def available() -> bool:
    """Whether a throwaway cluster can run here (server binaries, psycopg, and as root
    a ``postgres`` user to run the server as)."""
    return find_bindir() is not None and _psycopg_available() and _runs_as_postgres()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A PostgreSQL cluster in a temporary directory, on 127.0.0.1 and a free port.

    ``start()``, ``stop()``, ``restart()``; ``url(schema)`` is a journal URL with the
    password in it; ``close()`` stops the server and removes the directory.
    """

    def __init__(self, bindir: Path | None = None) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise RuntimeError(f"PostgreSQL server binaries not found: {INSTALL}")
        self.bindir = found
        self.root = Path(tempfile.mkdtemp(prefix="massiva-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user = "postgres"
        self.database = "massiva"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as_postgres:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(
            "initdb", "-D", str(self.data), "-U", self.user, "-E", "UTF8", "--no-locale",
            "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        self.start()
        self._run("createdb", "-h", str(self.root), "-p", str(self.port), "-U", self.user,
                  self.database)  # fmt: skip

    def _command(self, tool: str, *args: str) -> list[str]:
        command = [str(self.bindir / tool), *args]
        if self._as_postgres:
            return ["runuser", "-u", "postgres", "--", *command]
        return command

    def _run(self, tool: str, *args: str) -> None:
        proc = subprocess.run(self._command(tool, *args), capture_output=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}"
            )

    def start(self) -> None:
        """Start the server and wait until it accepts connections (at most 60 s)."""
        options = (
            f"-k {self.root} -p {self.port} -c listen_addresses=127.0.0.1 "
            "-c max_connections=200 -c shared_buffers=64MB"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                  str(self.root / "server.log"), "-w", "-t", "60", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: open connections are cut, as in a restart)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, pause: float = 0.0) -> None:
        """Stop the server, wait ``pause`` seconds, start it again."""
        self.stop()
        time.sleep(pause)
        self.start()

    def running(self) -> bool:
        """Whether the server answers on its port."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def url(self, schema: str | None = None, **params: str) -> str:
        """A journal URL (password included) on this cluster, with ``schema`` and more
        of the package's URL parameters."""
        query = {"schema": schema, **params} if schema else dict(params)
        tail = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in query.items())
        auth = f"{self.user}:{quote(PASSWORD, safe='')}"
        base = f"postgresql://{auth}@127.0.0.1:{self.port}/{self.database}"
        return f"{base}?{tail}" if tail else base

    def close(self) -> None:
        """Stop the server (if it runs) and remove its directory."""
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Cluster]:
    """One throwaway cluster for the session (skips, or fails under
    ``MASSIVA_REQUIRE_POSTGRES=1``, where the binaries or psycopg are missing)."""
    from conftest import require_or_skip

    require_or_skip("postgres", available(), INSTALL)
    cluster = Cluster()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def pg_url(pg_server: Cluster) -> str:
    """A journal URL of this test's own (a fresh schema), password included."""
    if not pg_server.running():  # a test that stopped the server leaves it for the next
        pg_server.start()
    return pg_server.url(f"t_{uuid.uuid4().hex[:12]}")


class JournalAt:
    """Where a test's journals live, on one backend: ``journal_at()`` (or
    ``journal_at("other")``) is a SQLite file in the test's folder, or a ``postgresql://``
    URL of a schema of the test's own; :meth:`written` tells whether it changed."""

    def __init__(self, backend: str, folder: Path, server: Cluster | None) -> None:
        self.backend = backend
        self._folder = folder
        self._server = server
        self._schemas: dict[str, str] = {}

    def __call__(self, name: str = "j") -> Any:
        if self._server is None:
            return self._folder / f"{name}.db"
        schema = self._schemas.setdefault(name, f"t_{uuid.uuid4().hex[:12]}")
        return self._server.url(schema)

    def written(self, name: str = "j") -> object:
        """Something that changes whenever the journal is written (None: no journal)."""
        if self._server is None:
            path = self._folder / f"{name}.db"
            return path.stat().st_size if path.exists() else None
        import psycopg

        schema = self._schemas.setdefault(name, f"t_{uuid.uuid4().hex[:12]}")
        with psycopg.connect(self._server.url()) as conn:
            found = conn.execute("SELECT to_regnamespace(%s)", (schema,)).fetchone()
            if found is None or found[0] is None:
                return None
            digest = hashlib.sha256()
            for table in ("meta", "rows", "messages", "batches", "runs"):
                rows = conn.execute(f'SELECT * FROM "{schema}".{table} ORDER BY 1').fetchall()
                digest.update(repr(rows).encode())
            return digest.hexdigest()


@pytest.fixture(params=["sqlite", "postgres"])
def journal_at(request: pytest.FixtureRequest, tmp_path: Path) -> JournalAt:
    """The test runs once on a SQLite journal file, once on a PostgreSQL journal."""
    if request.param == "sqlite":
        return JournalAt("sqlite", tmp_path, None)
    server: Cluster = request.getfixturevalue("pg_server")
    if not server.running():
        server.start()
    return JournalAt("postgres", tmp_path, server)
