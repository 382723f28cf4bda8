"""Running `lucid-sessions serve` as real processes on loopback ports, for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from lucid_sessions.security.tokens import TokenSettings, local_secret, mint_token

COMPONENTS = ("storage", "processor", "pipeline", "recorder", "api")


def api_headers(data_dir: Path, role: str = "admin") -> dict[str, str]:
    """A bearer token for a `serve` process of ``data_dir``: minted, as `lucid-sessions
    token create` does, with the data directory's own secret (made if missing)."""
    key = local_secret(data_dir, create=True)
    assert key is not None
    token, _ = mint_token(
        key, subject=f"e2e-{role}", role=role, ttl_s=3600, settings=TokenSettings()
    )
    return {"Authorization": f"Bearer {token}"}


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


POLLING_LIMITS = {"LUCID_RATE_LIMITS": "creation=1000,status=100000,chunks=100000,bulk=1000"}
"""Tests poll status several times a second, faster than the default budgets allow."""


class ServeProcess:
    """One `lucid-sessions serve` process; stops it (and everything it started) on exit."""

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str],
        targets: str | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.data_dir = data_dir
        self.env = env
        self.targets = targets
        self.args = list(args)
        """More `serve` options."""
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"serve-{targets or 'all'}.log"

    def start(self) -> ServeProcess:
        args = [sys.executable, "-m", "lucid_sessions", "serve", "--data-dir", str(self.data_dir)]
        if self.targets:
            args += ["--target", self.targets]
        args += self.args
        self.proc = subprocess.Popen(
            args,
            env={**os.environ, **POLLING_LIMITS, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
            start_new_session=True,
        )
        return self

    def kill9(self) -> None:
        """SIGKILL the server and everything it started, as a crash would leave it."""
        assert self.proc is not None
        family = descendants(self.proc.pid)
        self.proc.kill()
        self.proc.wait(10)
        for pid in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        family = descendants(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        for pid in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def wait_healthy(
    base_url: str, timeout: float = 30.0, procs: list[ServeProcess] = (), verify: Any = True
) -> None:
    """Wait for ``/api/v1/health`` to answer 200 (``verify``: httpx's, for HTTPS)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.proc is not None and proc.proc.poll() is not None:
                raise AssertionError(f"serve {proc.targets} exited:\n{proc.output()}")
        try:
            response = httpx.get(f"{base_url}/api/v1/health", timeout=2, verify=verify)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.2)
    logs = "\n".join(p.output() for p in procs)
    raise AssertionError(f"cluster not healthy after {timeout} s: {last}\n{logs}")
