"""``treevu serve`` as a real process for the crash and storm suites: started on a port,
waited for until ``/readyz`` answers, killed with SIGKILL or stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import SECRET, Database, free_port

FERNET_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


def serve_environment(db: Database, workdir: Path, **extra: str) -> dict[str, str]:
    """The process environment of a test's ``treevu`` command (none of the caller's
    ``TREEVU_*``), with the admin limit lifted."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREEVU_")}
    env.update(
        TREEVU_DATABASE_URL=db.url,
        TREEVU_JWT_SECRET=SECRET,
        TREEVU_ENCRYPTION_KEY=FERNET_KEY,
        TREEVU_DATA_DIR=str(workdir),
        TREEVU_ADMIN_NOTIFICATIONS_PER_MINUTE="10000000",
    )
    env.update(extra)
    return env


class ServeProcess:
    """One ``treevu serve`` on ``port`` (a free one by default), its output in a log file."""

    def __init__(
        self,
        db: Database,
        workdir: Path,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.log_path = workdir / f"serve-{self.port}-{time.monotonic_ns()}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "treevu", "serve", "--port", str(self.port)],
                env=serve_environment(db, workdir, **(env or {})),
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60  # a loaded machine starts slowly
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited:\n{self.output()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.kill()  # not left running after the test gave up on it
                raise AssertionError(f"server not ready:\n{self.output()}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        """SIGKILL: no shutdown of any kind."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
