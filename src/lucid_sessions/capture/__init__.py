"""Capture sources: where the recorder's screen images come from.

Glossary
--------
capture source
    Anything implementing :class:`CaptureSource`: ``start``, ``size``, ``grab``,
    ``alive``, ``stop``.
rdp source
    FreeRDP's ``xfreerdp`` connected to a remote desktop, drawing into a private Xvfb
    that is grabbed through X11 shared memory (:class:`RdpSource`, :class:`RdpConfig`).
x11 source
    An existing X display, such as an xrdp session's (:class:`X11Source`).
ingest source
    Frames pushed by an external agent (:class:`IngestSource`).
private display
    An Xvfb only the recorder's user may connect to (:class:`PrivateDisplay`).
"""

from __future__ import annotations

from .base import CaptureSource, Frame
from .ingest import IngestSource, PushedFrame
from .rdp import RdpConfig, RdpSource
from .x11 import X11Source
from .xvfb import PrivateDisplay

__all__ = [
    "CaptureSource",
    "Frame",
    "IngestSource",
    "PrivateDisplay",
    "PushedFrame",
    "RdpConfig",
    "RdpSource",
    "X11Source",
]
