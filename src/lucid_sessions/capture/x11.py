"""Capture an existing X display through X11 shared memory (python-mss, XShmGetImage).

Attaching needs what any X client needs: ``DISPLAY``-style name and, if the server
checks cookies, ``XAUTHORITY`` in this process's environment.
"""

from __future__ import annotations

import contextlib
import threading

import mss
import numpy as np

from ..errors import CaptureConnectionError, CaptureError, InvalidConfigError
from .base import Frame

__all__ = ["X11Source", "bgrx_to_rgb"]


def bgrx_to_rgb(raw: bytes | bytearray | memoryview, width: int, height: int) -> Frame:
    """Convert a 32-bit BGRX (X11 ZPixmap, little-endian) image to a new RGB array."""
    src = np.frombuffer(raw, dtype=np.uint8, count=width * height * 4).reshape(height, width, 4)
    out = np.empty((height, width, 3), dtype=np.uint8)
    out[..., 0] = src[..., 2]
    out[..., 1] = src[..., 1]
    out[..., 2] = src[..., 0]
    return out


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class X11Source:
    """A :class:`~lucid_sessions.capture.base.CaptureSource` for an X display such as ``":10"``.

    Guarantees: frames are the whole root window (all screens) at the size read in
    ``start()``; with ``skip_unchanged`` a grab whose pixels equal the previous grab's
    returns ``None`` (an exact comparison of the raw image, about 1 ms at 1920x1080).
    ``alive()`` turns False when a grab finds the X server gone; the display is not
    resized under a running source (a resize is seen as a new source by the caller).
    """

    def __init__(self, display: str, *, skip_unchanged: bool = True) -> None:
        if not display or ":" not in display:
            raise InvalidConfigError(f"not an X display name: {display!r} (expected ':N')")
        self.display = display
        self.skip_unchanged = skip_unchanged
        self._mss: mss.MSS | None = None
        self._size = (0, 0)
        self._prev_raw: bytearray | None = None
        self._prev_region: tuple[int, int, int, int] | None = None
        self._alive = False
        self._lock = threading.Lock()

    def __enter__(self) -> X11Source:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        """Open the display; ``CaptureConnectionError`` if it cannot be opened."""
        try:
            grabber = mss.MSS(display=self.display)
            monitor = grabber.monitors[0]
        except Exception as exc:  # ScreenShotError, or XError from the XCB layer
            raise CaptureConnectionError(
                f"cannot open X display {self.display}: {_why(exc)}",
                details={"display": self.display},
            ) from exc
        with self._lock:
            self._mss = grabber
            self._size = (int(monitor["width"]), int(monitor["height"]))
            self._alive = True

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the display, read in ``start()``."""
        return self._size

    def grab(self) -> Frame | None:
        """The whole display as a new RGB array, or None if unchanged since the last grab."""
        width, height = self._size
        return self.grab_region(0, 0, width, height)

    def grab_region(
        self, left: int, top: int, width: int, height: int, *, force: bool = False
    ) -> Frame | None:
        """A ``width`` x ``height`` rectangle of the display; same rules as ``grab()``.

        ``force`` (or a rectangle different from the previous grab's) always yields a
        frame, never ``None``.
        """
        grabber = self._mss
        if grabber is None:
            raise CaptureError(f"X11 source {self.display} is not started")
        region = (left, top, width, height)
        try:
            shot = grabber.grab({"left": left, "top": top, "width": width, "height": height})
        except Exception as exc:  # mss raises several types (XError, AssertionError) here
            self._alive = False
            raise CaptureConnectionError(
                f"lost X display {self.display}: {_why(exc)}", details={"display": self.display}
            ) from exc
        raw = shot.raw
        if not self.skip_unchanged:
            return bgrx_to_rgb(raw, width, height)
        unchanged = (
            not force
            and self._prev_raw is not None
            and self._prev_region == region
            and raw == self._prev_raw
        )
        self._prev_raw = raw
        self._prev_region = region
        return None if unchanged else bgrx_to_rgb(raw, width, height)

    def alive(self) -> bool:
        """True from ``start()`` until a grab finds the display gone or ``stop()``."""
        return self._alive

    def stop(self) -> None:
        """Close the X connection (idempotent)."""
        with self._lock:
            grabber, self._mss = self._mss, None
            self._alive = False
            self._prev_raw = None
        if grabber is not None:
            # The X server may already be gone; then there is nothing left to release.
            with contextlib.suppress(Exception):
                grabber.close()
