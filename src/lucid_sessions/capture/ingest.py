"""Frames pushed by an external agent (a Python entry point now; API/gRPC later)."""

from __future__ import annotations

import collections
import threading
import time

import numpy as np

from ..errors import CaptureError, InvalidConfigError
from .base import Frame

__all__ = ["IngestSource", "PushedFrame"]


class PushedFrame:
    """A frame as pushed: ``timestamp_us`` (the agent's clock, or None) and its pixels."""

    __slots__ = ("pixels", "received_at", "timestamp_us")

    def __init__(self, timestamp_us: int | None, pixels: Frame, received_at: float) -> None:
        self.timestamp_us = timestamp_us
        self.pixels = pixels
        self.received_at = received_at


class IngestSource:
    """A :class:`~lucid_sessions.capture.base.CaptureSource` fed by ``push()``.

    Guarantees: ``push`` validates before it stores and copies the pixels, so the agent
    may reuse its buffer at once; the queue holds at most ``max_queue`` frames and drops
    the oldest when full (counted in ``dropped``), so a fast agent never grows memory;
    ``grab()`` returns the newest frame not yet grabbed (older queued ones count as
    ``superseded``) or ``None`` when nothing new arrived.  ``push`` may be called from
    any thread; ``grab`` from one.  ``alive()`` is True from ``start()`` until
    ``close()`` (the agent hung up) or ``stop()``.
    """

    def __init__(self, width: int, height: int, *, max_queue: int = 8) -> None:
        errors = []
        if not (1 <= width <= 16384 and 1 <= height <= 16384):
            errors.append(f"size must be 1..16384 each way, got {width}x{height}")
        if max_queue < 1:
            errors.append(f"max_queue must be at least 1, got {max_queue}")
        if errors:
            raise InvalidConfigError("; ".join(errors), details={"errors": errors})
        self._size = (width, height)
        self._queue: collections.deque[PushedFrame] = collections.deque(maxlen=max_queue)
        self._lock = threading.Lock()
        self._state = "new"
        self.dropped = 0
        self.superseded = 0
        self._last_ts: int | None = None

    def start(self) -> None:
        """Begin accepting frames."""
        with self._lock:
            if self._state == "new":
                self._state = "running"

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` every pushed frame must have."""
        return self._size

    def push(self, timestamp_us: int | None, pixels: object) -> None:
        """Queue one frame; ``InvalidConfigError`` if it is not a valid RGB image.

        ``pixels`` must be a numpy ``uint8`` array of shape ``(height, width, 3)``.
        ``timestamp_us`` is None or a non-negative int, not older than the previous one.
        """
        width, height = self._size
        if not isinstance(pixels, np.ndarray):
            raise InvalidConfigError(f"pixels must be a numpy array, got {type(pixels).__name__}")
        if pixels.dtype != np.uint8:
            raise InvalidConfigError(f"pixels must have dtype uint8, got {pixels.dtype}")
        if pixels.shape != (height, width, 3):
            raise InvalidConfigError(
                f"pixels must have shape {(height, width, 3)} (height, width, RGB), "
                f"got {pixels.shape}"
            )
        if timestamp_us is not None and (
            isinstance(timestamp_us, bool) or not isinstance(timestamp_us, int) or timestamp_us < 0
        ):
            raise InvalidConfigError(
                f"timestamp_us must be a non-negative int, got {timestamp_us!r}"
            )
        frame = PushedFrame(
            timestamp_us, np.array(pixels, dtype=np.uint8, order="C"), time.monotonic()
        )
        with self._lock:
            if self._state != "running":
                raise CaptureError(f"ingest source is {self._state}, not accepting frames")
            newest = self._queue[-1].timestamp_us if self._queue else self._last_ts
            if timestamp_us is not None and newest is not None and timestamp_us < newest:
                raise InvalidConfigError(f"timestamp_us went backwards: {timestamp_us} < {newest}")
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append(frame)

    def grab(self) -> Frame | None:
        """The newest pushed frame not grabbed yet (the caller owns it), or None."""
        pushed = self.grab_pushed()
        return None if pushed is None else pushed.pixels

    def grab_pushed(self) -> PushedFrame | None:
        """Like ``grab()``, with the agent's timestamp and the arrival time."""
        with self._lock:
            if self._state == "stopped":
                raise CaptureError("ingest source is stopped")
            if not self._queue:
                return None
            self.superseded += len(self._queue) - 1
            newest = self._queue[-1]
            self._queue.clear()
            if newest.timestamp_us is not None:
                self._last_ts = newest.timestamp_us
        return newest

    def close(self) -> None:
        """The agent is done: no more pushes; ``alive()`` turns False."""
        with self._lock:
            if self._state in ("new", "running"):
                self._state = "closed"

    def alive(self) -> bool:
        """True while running and the agent has not closed."""
        return self._state == "running"

    def stop(self) -> None:
        """Refuse further pushes and grabs and drop queued frames (idempotent)."""
        with self._lock:
            self._state = "stopped"
            self._queue.clear()
