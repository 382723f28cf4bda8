"""Capture a remote desktop: FreeRDP's ``xfreerdp`` in a private Xvfb, grabbed via X11 SHM.

The password reaches ``xfreerdp`` on its standard input (``/from-stdin:force``) and is
never on a command line, in the environment, in a file or in a log line.  Failure
classification is in :mod:`lucid_sessions.capture.rdp_errors`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import CaptureConnectionError, CaptureError, InvalidConfigError
from ._proc import OutputTail, kill_group, require_program, spawn
from ._xcb import Window, XGone
from .base import Frame
from .rdp_errors import classify_exit
from .x11 import X11Source
from .xvfb import PrivateDisplay

__all__ = ["RdpConfig", "RdpSource"]

log = logging.getLogger(__name__)

Security = Literal["tls", "nla"]


@dataclass(frozen=True, kw_only=True)
class RdpConfig:
    """Where and how to connect.  ``repr()`` never shows the password.

    ``gfx=False`` (the default) asks for classic bitmap updates, which FreeRDP servers
    send losslessly (the picture matches the server's screen exactly); ``gfx=True``
    enables the RDP8 graphics pipeline (often H.264, lossy), with ``color_depth=16``
    the cheaper choice for servers whose pipeline is slow at 1080p.
    """

    host: str
    username: str
    password: str = field(repr=False)
    port: int = 3389
    domain: str = ""
    security: Security = "nla"
    ignore_cert: bool = True
    width: int = 1920
    height: int = 1080
    color_depth: int = 32
    gfx: bool = False
    connect_timeout: float = 20.0

    def __post_init__(self) -> None:
        errors: list[str] = []
        if not self.host or any(c.isspace() or c in "/@" for c in self.host):
            errors.append(f"host must be a host name or address, got {self.host!r}")
        if not 1 <= self.port <= 65535:
            errors.append(f"port must be 1..65535, got {self.port}")
        if not self.username or any(c in self.username for c in "\n\r\0"):
            errors.append("username must be non-empty and contain no line breaks")
        if any(c in self.domain for c in "\n\r\0"):
            errors.append("domain must contain no line breaks")
        if any(c in self.password for c in "\n\r\0"):
            errors.append("password must contain no line breaks or NUL characters")
        if len(self.password.encode()) > 500:
            errors.append("password must be at most 500 bytes")
        if self.security not in ("tls", "nla"):
            errors.append(f"security must be 'tls' or 'nla', got {self.security!r}")
        if not (200 <= self.width <= 8192 and 200 <= self.height <= 8192):
            errors.append(f"size must be 200..8192 each way, got {self.width}x{self.height}")
        if self.color_depth not in (16, 24, 32):
            errors.append(f"color_depth must be 16, 24 or 32, got {self.color_depth}")
        if not 0 < self.connect_timeout <= 300:
            errors.append(f"connect_timeout must be in (0, 300] s, got {self.connect_timeout}")
        if errors:
            raise InvalidConfigError(
                "invalid RDP configuration: " + "; ".join(errors), details={"errors": errors}
            )

    @property
    def target(self) -> str:
        """``host:port`` (``[v6addr]:port`` for IPv6 literals), for messages and /v:."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _xfreerdp_argv(program: str, cfg: RdpConfig) -> list[str]:
    """The client's command line; it carries no secret (the password goes to stdin)."""
    argv = [
        program,
        f"/v:{cfg.target}",
        f"/u:{cfg.username}",
        f"/sec:{cfg.security}",
        "/cert:ignore" if cfg.ignore_cert else "/cert:deny",
        f"/size:{cfg.width}x{cfg.height}",
        f"/bpp:{cfg.color_depth}",
        "/gfx" if cfg.gfx else "-gfx",
        "/from-stdin:force",
        "-clipboard",
        "/audio-mode:2",
        "-decorations",
        "/log-level:WARN",
        "/log-filters:com.freerdp.core.connection:DEBUG",
    ]
    if cfg.domain:
        argv.insert(3, f"/d:{cfg.domain}")
    return argv


class _Processes:
    """What a running RdpSource owns; closed by ``stop()``, the GC or interpreter exit."""

    def __init__(self) -> None:
        self.display: PrivateDisplay | None = None
        self.client: subprocess.Popen[bytes] | None = None
        self.home: Path | None = None

    def close(self) -> None:
        if self.client is not None:
            kill_group(self.client)
        if self.display is not None:
            self.display.stop()
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = None


class RdpSource:
    """A :class:`~lucid_sessions.capture.base.CaptureSource` for one RDP session.

    Guarantees beyond the protocol's: frames show the RDP client's window only (the
    remote desktop at the size the server chose, clipped to the requested size);
    ``start()`` returns once the window is mapped and painted, within
    ``config.connect_timeout``; ``alive()`` turns False as soon as ``xfreerdp`` exits
    (the server closed or dropped the connection); ``stop()`` kills the client's and the
    Xvfb's process groups.
    """

    PAINT_GRACE = 1.5
    """Seconds a mapped but uniformly coloured window is waited on before it counts as painted."""

    def __init__(self, config: RdpConfig) -> None:
        self.config = config
        self._procs = _Processes()
        self._finalizer = weakref.finalize(self, self._procs.close)
        self._x11: X11Source | None = None
        self._tail: OutputTail | None = None
        self._window: Window | None = None
        self._io_lock = threading.Lock()
        self._stopped = False
        self._started = False
        self._delivered = False

    def __enter__(self) -> RdpSource:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Connect; see :meth:`CaptureSource.start`.  Cleans up everything on failure."""
        if self._started:
            raise CaptureError("an RdpSource can be started only once")
        self._started = True
        cfg = self.config
        try:
            program = require_program("xfreerdp", "freerdp2-x11")
            self._preflight()
            display = PrivateDisplay(cfg.width, cfg.height)
            self._procs.display = display
            display.start()
            self._x11 = X11Source(display.display)
            self._x11.start()
            self._launch(program, display)
            self._wait_until_painted()
        except BaseException:
            self.stop()
            raise
        log.info(
            "rdp capture started",
            extra={"target": cfg.target, "user": cfg.username, "display": display.display},
        )
        if self.size != (cfg.width, cfg.height):
            log.warning(
                "rdp server chose another desktop size",
                extra={
                    "target": cfg.target,
                    "requested": (cfg.width, cfg.height),
                    "size": self.size,
                },
            )

    def _preflight(self) -> None:
        """Fail fast and clearly when nothing listens at host:port."""
        cfg = self.config
        try:
            with socket.create_connection(
                (cfg.host, cfg.port), timeout=min(5.0, cfg.connect_timeout)
            ):
                pass
        except socket.gaierror as exc:
            raise CaptureConnectionError(
                f"cannot resolve RDP host {cfg.host!r}: {exc.strerror}",
                details={"host": cfg.host, "port": cfg.port},
            ) from exc
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise CaptureConnectionError(
                f"cannot reach RDP server {cfg.target}: {reason}",
                details={"host": cfg.host, "port": cfg.port},
            ) from exc

    def _launch(self, program: str, display: PrivateDisplay) -> None:
        cfg = self.config
        home = Path(tempfile.mkdtemp(prefix="lucid-xfreerdp-"))
        self._procs.home = home
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "LANG": "C.UTF-8",
            **display.env(),
        }
        client = spawn(
            _xfreerdp_argv(program, cfg),
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._procs.client = client
        assert client.stdout is not None and client.stdin is not None
        self._tail = OutputTail(client.stdout)
        with contextlib.suppress(BrokenPipeError, OSError):
            client.stdin.write(cfg.password.encode() + b"\n")
            client.stdin.flush()
        with contextlib.suppress(OSError):
            client.stdin.close()

    def _wait_until_painted(self) -> None:
        cfg = self.config
        deadline = time.monotonic() + cfg.connect_timeout
        mapped_at: float | None = None
        while True:
            self._raise_if_exited()
            window = self._find_window()
            now = time.monotonic()
            if window is not None:
                mapped_at = mapped_at or now
                frame = self._grab_window(window, force=True)
                if frame is not None and (
                    _is_painted(frame) or now - mapped_at >= self.PAINT_GRACE
                ):
                    self._window = window
                    return
            if now >= deadline:
                what = "no window" if mapped_at is None else "no picture"
                raise CaptureConnectionError(
                    f"RDP connection to {cfg.target}: {what} within {cfg.connect_timeout:g} s",
                    details={"host": cfg.host, "port": cfg.port},
                )
            time.sleep(0.05)

    def _raise_if_exited(self) -> None:
        client = self._procs.client
        if client is None or client.poll() is None:
            return
        if self._tail is not None:
            self._tail.join(2.0)
        lines = self._tail.lines() if self._tail else []
        raise classify_exit(
            self.config, client.returncode, lines, connected=self._window is not None
        )

    # -- sampling --------------------------------------------------------------------

    def _find_window(self) -> Window | None:
        display = self._procs.display
        if display is None or display.conn is None:
            return None
        try:
            windows = display.conn.viewable_windows()
        except XGone:
            return None
        if not windows:
            return None
        return max(windows, key=lambda w: w.width * w.height)

    def _current_window(self) -> Window | None:
        """The client's window now: the known one's geometry, else the largest mapped one."""
        display = self._procs.display
        known = self._window
        if display is not None and display.conn is not None and known is not None:
            try:
                current = display.conn.geometry(known.wid)
            except XGone:
                current = None
            if current is not None:
                return current
        return self._find_window()

    def _grab_window(self, window: Window, *, force: bool) -> Frame | None:
        assert self._x11 is not None
        width = max(0, min(window.width, self.config.width - max(window.x, 0)))
        height = max(0, min(window.height, self.config.height - max(window.y, 0)))
        if width == 0 or height == 0:
            return None
        return self._x11.grab_region(max(window.x, 0), max(window.y, 0), width, height, force=force)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the remote desktop as last seen (clipped to the request)."""
        w = self._window
        if w is None:
            return (self.config.width, self.config.height)
        return (min(w.width, self.config.width), min(w.height, self.config.height))

    @property
    def display(self) -> str:
        """The private X display the client draws on (for diagnostics and tests)."""
        d = self._procs.display
        return d.display if d else ""

    def pids(self) -> dict[str, int]:
        """Process ids this source started: ``xvfb`` and ``xfreerdp`` (each a group leader)."""
        out: dict[str, int] = {}
        if self._procs.display is not None and self._procs.display.pid is not None:
            out["xvfb"] = self._procs.display.pid
        if self._procs.client is not None:
            out["xfreerdp"] = self._procs.client.pid
        return out

    def grab(self) -> Frame | None:
        """See :meth:`CaptureSource.grab`; ``CaptureConnectionError`` once the session ended."""
        with self._io_lock:
            if self._stopped or self._x11 is None:
                raise CaptureError(f"RDP capture of {self.config.target} is stopped")
            self._raise_if_exited()
            previous = self._window
            current = self._current_window()
            if current is None:
                self._raise_if_exited()
                return None
            resized = previous is None or (current.width, current.height) != (
                previous.width,
                previous.height,
            )
            self._window = current
            frame = self._grab_window(current, force=resized or not self._delivered)
            self._delivered = self._delivered or frame is not None
            # A client that exited during the grab may have left its window half torn down.
            self._raise_if_exited()
            return frame

    def alive(self) -> bool:
        """True while the client and its display run and ``stop()`` was not called."""
        procs = self._procs
        return (
            not self._stopped
            and procs.client is not None
            and procs.client.poll() is None
            and procs.display is not None
            and procs.display.alive()
        )

    def stop(self) -> None:
        """Stop the client, the display and their process groups (idempotent)."""
        self._stopped = True
        if self._procs.client is not None:
            kill_group(self._procs.client)
        with self._io_lock:
            if self._x11 is not None:
                self._x11.stop()
                self._x11 = None
        self._finalizer()


def _is_painted(frame: Frame) -> bool:
    """True if the frame is not one uniform colour (a fresh window is plain black)."""
    flat = frame.reshape(-1, 3)
    return bool(np.any(flat != flat[0]))
