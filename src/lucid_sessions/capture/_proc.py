"""Child processes the capture layer starts: spawning, output tails, group kills.

Every child runs in its own session (so in its own process group); stopping one means
signalling the whole group, which also ends anything the child started itself.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import IO

from ..errors import CaptureError

__all__ = ["OutputTail", "kill_group", "require_program", "spawn"]


def require_program(name: str, package: str) -> str:
    """The absolute path of ``name``, or ``CaptureError`` naming the Debian package."""
    path = shutil.which(name)
    if path is None:
        raise CaptureError(
            f"{name} is not installed (Debian package {package})",
            details={"program": name, "package": package},
        )
    return path


def spawn(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    stdin: int | None = subprocess.DEVNULL,
    stdout: int | IO[bytes] | None = subprocess.DEVNULL,
    stderr: int | IO[bytes] | None = subprocess.DEVNULL,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as the leader of a new session and process group."""
    return subprocess.Popen(
        list(argv),
        env=env,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        pass_fds=tuple(pass_fds),
        start_new_session=True,
        close_fds=True,
    )


def kill_group(proc: subprocess.Popen[bytes], *, grace: float = 2.0) -> None:
    """End ``proc``'s process group: SIGTERM, then SIGKILL after ``grace`` seconds.

    Idempotent; returns once the leader is reaped.  Members that ignore SIGTERM get
    SIGKILL too, because the group id outlives a leader that exits first.
    """
    pgid = proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):  # a SIGKILLed leader always exits
        proc.wait(timeout=5.0)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


class OutputTail:
    """Reads a child's output pipe on a daemon thread, keeping the last ``limit`` lines.

    The lines stay in memory only; callers decide what (if anything) to show.
    """

    def __init__(self, stream: IO[bytes], *, limit: int = 400) -> None:
        self._stream = stream
        self._lines: collections.deque[str] = collections.deque(maxlen=limit)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="capture-output", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for raw in iter(self._stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                with self._lock:
                    self._lines.append(line)
        except (OSError, ValueError):
            return

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the writer to close the pipe."""
        self._thread.join(timeout)

    def lines(self) -> list[str]:
        """A copy of the lines read so far."""
        with self._lock:
            return list(self._lines)
