"""Redis, PostgreSQL and MariaDB server processes of a test's (or a benchmark's) own: started
on a free loopback port under a temporary folder, killed with SIGKILL, started again on the same
port and data — never the machine's own services.

Used by the outage tests (``tests/integration/test_outages.py``) and ``bench/outages.py``. A
missing server binary raises :class:`ServerMissing` (the tests turn it into a skip, or a failure
under ``TREEVU_TEST_REQUIRE_SERVERS=1``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


class ServerMissing(RuntimeError):
    """This machine lacks the server's binaries."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class _OwnServer:
    """A server process in its own process group under a temporary folder: killed with
    SIGKILL (with its children), then removed."""

    root: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


class RedisProcess(_OwnServer):
    """A redis-server without persistence. ``start(*extra)`` passes more arguments (e.g. an
    ACL ``--user`` line); a restart is on the same port."""

    def __init__(self, workdir: Path | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerMissing("redis-server (the binary)")
        self.binary = binary
        self.port = free_port()
        self.root = workdir or Path(tempfile.mkdtemp(prefix="treevu-redis-"))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *extra: str) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.root), *extra],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            while True:
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("redis-server did not start")
                time.sleep(0.01)
        finally:
            client.close()


class PostgresProcess(_OwnServer):
    """A PostgreSQL server: initdb into a temporary folder, then start, SIGKILL (with its whole
    process group) and start again on the same port and data."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
        if not found:
            raise ServerMissing("PostgreSQL's server binaries")
        self.bin = Path(found[-1]).parent
        self.root = Path(tempfile.mkdtemp(prefix="treevu-pg-"))
        self.user = "postgres" if os.geteuid() == 0 else None  # it refuses to run as root
        if self.user:
            shutil.chown(self.root, self.user)
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.port = free_port()
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
             "--no-sync"],
            user=self.user, check=True, capture_output=True,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            self.process = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-k", str(self.root), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                user=self.user, start_new_session=True,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            while self.process.poll() is None and time.monotonic() < deadline:
                if _accepts(self.port):
                    return
                time.sleep(0.05)
            if time.monotonic() > deadline:
                raise AssertionError("postgres did not start")
            time.sleep(0.2)  # the killed server's children are still leaving: try again


class MariaDBProcess(_OwnServer):
    """A MariaDB server, like :class:`PostgresProcess`."""

    def __init__(self) -> None:
        binary = shutil.which("mariadbd", path="/usr/sbin:/usr/bin")
        install = shutil.which("mariadb-install-db")
        if binary is None or install is None:
            raise ServerMissing("MariaDB's server binaries")
        self.bin = binary
        self.root = Path(tempfile.mkdtemp(prefix="treevu-mariadb-"))
        self.data = self.root / "data"
        self.port = free_port()
        subprocess.run(
            [install, "--no-defaults", f"--datadir={self.data}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, capture_output=True,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"mysql+asyncmy://root@127.0.0.1:{self.port}/mysql"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.bin, "--no-defaults", f"--datadir={self.data}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.root / 'sock'}", "--user=root",
             "--innodb-buffer-pool-size=32M", "--skip-log-bin"],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, "mariadbd exited"
            if _accepts(self.port):
                return
            assert time.monotonic() < deadline, "mariadbd did not start"
            time.sleep(0.05)
