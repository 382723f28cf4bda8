"""The capture interface every screen source implements.

The recorder asks a source for screen images; it never knows whether they come from an
RDP client, an X display or an external agent.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["CaptureSource", "Frame"]

Frame = npt.NDArray[np.uint8]
"""One screen image: shape ``(height, width, 3)``, dtype ``uint8``, RGB, C-contiguous."""


@runtime_checkable
class CaptureSource(Protocol):
    """A live screen that can be sampled.

    Rules every implementation keeps:

    * Lifecycle: ``start()`` once, then any number of ``grab()``/``alive()`` calls, then
      ``stop()``.  ``stop()`` is idempotent, may be called at any time (also after a failed
      ``start()``) and ends every process the source started, whole process groups
      included.  A source is not restartable: build a new one.
    * Threads: ``grab()`` is called from one thread at a time (the sampler).  ``alive()``,
      ``size`` and ``stop()`` may be called from any thread.
    * Ownership: ``grab()`` returns a new array the caller owns; the source never writes
      to it again, so the caller may keep, modify or hand it to another thread.
    * Errors: only :class:`~lucid_sessions.errors.CaptureError` and its subclasses escape.
      ``CaptureAuthError`` means the remote side refused the credentials,
      ``CaptureConnectionError`` that it could not be reached or went away.  Messages name
      host, port, user and display, never a password.
    """

    def start(self) -> None:
        """Connect and return once the screen can be grabbed (bounded wait).

        Raises ``CaptureAuthError`` for refused credentials, ``CaptureConnectionError`` for
        an unreachable or dropped remote side, ``CaptureError`` for a local failure (a
        missing program, for instance).  On failure everything started is stopped again.
        """
        ...

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the frames ``grab()`` returns now.

        Fixed for the X11 and ingest sources; an RDP server may resize the desktop
        mid-session, so callers compare each frame's shape rather than caching this.
        """
        ...

    def grab(self) -> Frame | None:
        """The current screen as a new ``(height, width, 3)`` uint8 RGB C-contiguous array.

        ``None`` means "known unchanged since the last grab" (nothing new to record).  The
        first grab after ``start()`` returns a frame, except from an ingest source that has
        not been sent one yet.  Raises
        ``CaptureConnectionError`` once the remote side has gone.
        """
        ...

    def alive(self) -> bool:
        """False once the remote side died or the source was stopped; cheap, never blocks."""
        ...

    def stop(self) -> None:
        """Release everything (idempotent); stops every process the source started."""
        ...
