"""A private, headless X display (Xvfb) for an RDP client to draw into.

Only the user running the recorder can connect: the server starts with a random
MIT-MAGIC-COOKIE-1 in a 0600 file and then admits ``SI:localuser:<this user>``, so no
other local account can watch or type into the recorded session.
"""

from __future__ import annotations

import os
import pwd
import secrets
import select
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from ..errors import CaptureError
from ._proc import kill_group, require_program, spawn
from ._xcb import XConnection, XGone

__all__ = ["PrivateDisplay"]


def _xauth_entry(cookie: bytes) -> bytes:
    """One Xauthority record matching any display (FamilyWild, empty display number)."""

    def field(value: bytes) -> bytes:
        return struct.pack(">H", len(value)) + value

    return (
        struct.pack(">H", 0xFFFF)
        + field(b"")
        + field(b"")
        + field(b"MIT-MAGIC-COOKIE-1")
        + field(cookie)
    )


class PrivateDisplay:
    """An Xvfb screen of ``width`` x ``height`` on a free display number.

    ``start()`` returns once clients can connect (bounded by ``start_timeout``);
    ``stop()`` is idempotent and kills the server's process group.
    """

    def __init__(self, width: int, height: int, *, start_timeout: float = 10.0) -> None:
        self.width = width
        self.height = height
        self.start_timeout = start_timeout
        self.display = ""
        self.xauthority: Path | None = None
        self.conn: XConnection | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def pid(self) -> int | None:
        """The Xvfb process id (its process group id too), once started."""
        return self._proc.pid if self._proc else None

    def env(self) -> dict[str, str]:
        """Environment entries a child needs to draw on this display."""
        if not self.display or self.xauthority is None:
            raise CaptureError("the private display is not running")
        return {"DISPLAY": self.display, "XAUTHORITY": str(self.xauthority)}

    def start(self) -> None:
        """Start Xvfb; raises ``CaptureError`` (and cleans up) if it does not come up."""
        xvfb = require_program("Xvfb", "xvfb")
        self._dir = Path(tempfile.mkdtemp(prefix="lucid-xvfb-"))
        cookie = secrets.token_bytes(16)
        self.xauthority = self._dir / "Xauthority"
        fd = os.open(self.xauthority, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(_xauth_entry(cookie))
        read_end, write_end = os.pipe()
        try:
            with open(self._dir / "xvfb.log", "wb") as log:
                self._proc = spawn(
                    [
                        xvfb,
                        "-displayfd",
                        str(write_end),
                        "-auth",
                        str(self.xauthority),
                        "-screen",
                        "0",
                        f"{self.width}x{self.height}x24",
                        "-nolisten",
                        "tcp",
                        "-noreset",
                        "-dpi",
                        "96",
                    ],
                    env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(write_end,),
                )
            os.close(write_end)
            write_end = -1
            number = self._read_display_number(read_end)
        except BaseException:
            if write_end >= 0:
                os.close(write_end)
            self.stop()
            raise
        finally:
            os.close(read_end)
        self.display = f":{number}"
        try:
            self.conn = XConnection(self.display, cookie=cookie)
            self.conn.allow_local_user(pwd.getpwuid(os.getuid()).pw_name)
        except XGone as exc:
            self.stop()
            raise CaptureError(f"private X display {self.display} is unusable: {exc}") from exc

    def _read_display_number(self, fd: int) -> int:
        deadline = time.monotonic() + self.start_timeout
        data = b""
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CaptureError(f"Xvfb did not start within {self.start_timeout:g} s")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 64)
            if not chunk:
                raise CaptureError(f"Xvfb exited during start-up: {self._log_tail()}")
            data += chunk
        return int(data.strip())

    def _log_tail(self) -> str:
        if self._dir is None:
            return ""
        try:
            text = (self._dir / "xvfb.log").read_text(errors="replace")
        except OSError:
            return ""
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return " | ".join(lines[-3:])

    def alive(self) -> bool:
        """True while the Xvfb process runs."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Kill the server and delete its cookie file (idempotent)."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self._proc is not None:
            kill_group(self._proc)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
