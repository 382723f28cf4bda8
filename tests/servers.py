"""What the fixtures that start a private server (Redis, nx-27017, a hardhat node, `serve`)
share: a free loopback port, a bounded wait until the server answers, a bounded stop."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["free_port", "stop_process", "wait_until_serving"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (at the moment of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_serving(
    process: subprocess.Popen[bytes],
    answers: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    log: Path,
    poll_s: float = 0.05,
) -> None:
    """Return once ``answers()`` is true; raise with the tail of ``log`` when the process
    exits or ``timeout_s`` passes first (the caller stops the process)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if answers():
            return
        time.sleep(poll_s)
    tail = log.read_text(errors="replace")[-1500:] if log.exists() else "(no log)"
    raise RuntimeError(f"{what} did not start:\n{tail}")


def stop_process(process: subprocess.Popen[bytes] | None, timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``; reaps the process."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)
