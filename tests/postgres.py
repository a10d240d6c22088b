"""A real PostgreSQL server for tests: the Debian binaries (``initdb``, ``pg_ctl``) on a temporary data folder.

>>> server = PostgresServer.start()                     # 127.0.0.1 on a free port, its unix socket in the folder
>>> url = server.create_database()                      # postgresql://mmgraph@127.0.0.1:PORT/db_...
>>> server.stop()                                       # and the folder is gone

PostgreSQL refuses to run as root, so under root the server runs as the ``postgres`` user (Debian's package makes
it) or ``nobody``, and its folder is given to that user. ``fsync`` is off: the tests kill clients, never the server.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

SUPERUSER = "mmgraph"


def server_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: ``$PG_BINDIR``, Debian's newest ``/usr/lib/postgresql/<v>/bin``,
    or the PATH; None when there is no PostgreSQL server here."""
    candidates = [Path(os.environ["PG_BINDIR"])] if os.environ.get("PG_BINDIR") else []

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", path.parent.name))

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).resolve().parent)  # type: ignore[arg-type]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One throwaway PostgreSQL cluster; :meth:`create_database` hands each test its own database."""

    def __init__(self, bindir: Path, root: Path, port: int, user: str | None) -> None:
        self.bindir, self.root, self.port, self.user = bindir, root, port, user
        self.data, self.sockets, self.log = root / "data", root / "sockets", root / "server.log"
        self.options = ""  # the server's command-line settings (port, socket folder, ...), set by start()

    @classmethod
    def start(cls, bindir: Path | None = None, *, timeout: int = 60) -> PostgresServer:
        bindir = bindir or server_bindir()
        if bindir is None:
            raise FileNotFoundError("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
        user = None
        if os.geteuid() == 0:
            user = "postgres" if _user_exists("postgres") else "nobody"
        root = Path(tempfile.mkdtemp(prefix="mmgraph-pg-"))
        server = cls(bindir, root, _free_port(), user)
        try:
            server.sockets.mkdir()
            if user is not None:
                entry = pwd.getpwnam(user)
                for path in (root, server.sockets):
                    os.chown(path, entry.pw_uid, entry.pw_gid)
            server._run("initdb", "-D", str(server.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync")
            server.options = (
                f"-p {server.port} -k {server.sockets} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
            )
            server._run(
                "pg_ctl",
                "-D",
                str(server.data),
                "-l",
                str(server.log),
                "-o",
                server.options,
                "-w",
                "-t",
                str(timeout),
                "start",
            )
        except BaseException:
            server.stop()
            raise
        return server

    def _run(self, program: str, *args: str) -> None:
        cmd = [str(self.bindir / program), *args]
        if self.user is not None:  # as the server's own user
            if shutil.which("runuser"):
                cmd = ["runuser", "-u", self.user, "--", *cmd]
            else:
                cmd = ["su", "-s", "/bin/sh", self.user, "-c", shlex.join(cmd)]
        result = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True)
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{program} failed ({result.returncode}):\n{result.stdout}{result.stderr}{log}")

    def restart(self) -> None:
        """Stop the server (its clients' connections break; committed work is kept) and start it again on the same
        port. ``fast``, not ``immediate``: with ``synchronous_commit=off`` a crash may lose the latest commits."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", self.options, "-w", "start")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        name = f"db_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
