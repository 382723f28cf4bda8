"""A minimal libxcb binding (ctypes) for the few X requests the capture layer needs.

Pixels come from python-mss; this module only answers "which windows are mapped where"
and grants the current user access to a private X server.  libxcb never exits the
process when the X server goes away (Xlib's default I/O error handler does), so a dead
display shows up here as ``XGone`` and nothing else.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from typing import Any

__all__ = ["Window", "XConnection", "XGone"]

_MAP_STATE_VIEWABLE = 2
_HOST_MODE_INSERT = 0
_FAMILY_SERVER_INTERPRETED = 5


class XGone(Exception):
    """The X connection could not be opened or has broken."""


class _Cookie(ctypes.Structure):
    _fields_ = [("sequence", ctypes.c_uint)]


class _AuthInfo(ctypes.Structure):
    _fields_ = [
        ("namelen", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("datalen", ctypes.c_int),
        ("data", ctypes.c_char_p),
    ]


class _Screen(ctypes.Structure):
    _fields_ = [
        ("root", ctypes.c_uint32),
        ("default_colormap", ctypes.c_uint32),
        ("white_pixel", ctypes.c_uint32),
        ("black_pixel", ctypes.c_uint32),
        ("current_input_masks", ctypes.c_uint32),
        ("width_in_pixels", ctypes.c_uint16),
        ("height_in_pixels", ctypes.c_uint16),
    ]


class _ScreenIterator(ctypes.Structure):
    _fields_ = [("data", ctypes.POINTER(_Screen)), ("rem", ctypes.c_int), ("index", ctypes.c_int)]


class _WindowAttributesReply(ctypes.Structure):
    _fields_ = [
        ("response_type", ctypes.c_uint8),
        ("backing_store", ctypes.c_uint8),
        ("sequence", ctypes.c_uint16),
        ("length", ctypes.c_uint32),
        ("visual", ctypes.c_uint32),
        ("class_", ctypes.c_uint16),
        ("bit_gravity", ctypes.c_uint8),
        ("win_gravity", ctypes.c_uint8),
        ("backing_planes", ctypes.c_uint32),
        ("backing_pixel", ctypes.c_uint32),
        ("save_under", ctypes.c_uint8),
        ("map_is_installed", ctypes.c_uint8),
        ("map_state", ctypes.c_uint8),
        ("override_redirect", ctypes.c_uint8),
    ]


class _GeometryReply(ctypes.Structure):
    _fields_ = [
        ("response_type", ctypes.c_uint8),
        ("depth", ctypes.c_uint8),
        ("sequence", ctypes.c_uint16),
        ("length", ctypes.c_uint32),
        ("root", ctypes.c_uint32),
        ("x", ctypes.c_int16),
        ("y", ctypes.c_int16),
        ("width", ctypes.c_uint16),
        ("height", ctypes.c_uint16),
        ("border_width", ctypes.c_uint16),
    ]


def _load() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    name = ctypes.util.find_library("xcb") or "libxcb.so.1"
    xcb = ctypes.CDLL(name)
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    vp = ctypes.c_void_p
    sigs: dict[str, tuple[object, list[object]]] = {
        "xcb_connect": (vp, [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]),
        "xcb_connect_to_display_with_auth_info": (
            vp,
            [ctypes.c_char_p, ctypes.POINTER(_AuthInfo), ctypes.POINTER(ctypes.c_int)],
        ),
        "xcb_connection_has_error": (ctypes.c_int, [vp]),
        "xcb_disconnect": (None, [vp]),
        "xcb_get_setup": (vp, [vp]),
        "xcb_setup_roots_iterator": (_ScreenIterator, [vp]),
        "xcb_screen_next": (None, [ctypes.POINTER(_ScreenIterator)]),
        "xcb_change_hosts_checked": (
            _Cookie,
            [vp, ctypes.c_uint8, ctypes.c_uint8, ctypes.c_uint16, ctypes.c_char_p],
        ),
        "xcb_request_check": (vp, [vp, _Cookie]),
        "xcb_query_tree": (_Cookie, [vp, ctypes.c_uint32]),
        "xcb_query_tree_reply": (vp, [vp, _Cookie, ctypes.POINTER(vp)]),
        "xcb_query_tree_children": (ctypes.POINTER(ctypes.c_uint32), [vp]),
        "xcb_query_tree_children_length": (ctypes.c_int, [vp]),
        "xcb_get_window_attributes": (_Cookie, [vp, ctypes.c_uint32]),
        "xcb_get_window_attributes_reply": (
            ctypes.POINTER(_WindowAttributesReply),
            [vp, _Cookie, ctypes.POINTER(vp)],
        ),
        "xcb_get_geometry": (_Cookie, [vp, ctypes.c_uint32]),
        "xcb_get_geometry_reply": (
            ctypes.POINTER(_GeometryReply),
            [vp, _Cookie, ctypes.POINTER(vp)],
        ),
    }
    for fname, (restype, argtypes) in sigs.items():
        func = getattr(xcb, fname)
        func.restype = restype
        func.argtypes = argtypes
    libc.free.argtypes = [vp]
    libc.free.restype = None
    return xcb, libc


_xcb: ctypes.CDLL | None = None
_libc: ctypes.CDLL | None = None


def _libs() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    global _xcb, _libc
    if _xcb is None or _libc is None:
        try:
            _xcb, _libc = _load()
        except OSError as exc:
            raise XGone(f"libxcb is not available: {exc}") from exc
    return _xcb, _libc


def _reply(func: Any, conn: int, cookie: _Cookie) -> Any:
    """Call an ``xcb_*_reply`` function; an X error (a vanished window) gives a null reply."""
    _, libc = _libs()
    err = ctypes.c_void_p()
    reply = func(conn, cookie, ctypes.byref(err))
    if err.value:
        libc.free(err)
    return reply


@dataclass(frozen=True)
class Window:
    """A mapped top-level window and its geometry in root coordinates."""

    wid: int
    x: int
    y: int
    width: int
    height: int


class XConnection:
    """One connection to an X server; used from one thread at a time.

    ``cookie`` authenticates with an MIT-MAGIC-COOKIE-1 value directly, without any
    Xauthority file or environment variable.
    """

    def __init__(self, display: str, *, cookie: bytes | None = None) -> None:
        xcb, _ = _libs()
        screen = ctypes.c_int(0)
        if cookie is None:
            conn = xcb.xcb_connect(display.encode(), ctypes.byref(screen))
        else:
            name = b"MIT-MAGIC-COOKIE-1"
            auth = _AuthInfo(len(name), name, len(cookie), cookie)
            conn = xcb.xcb_connect_to_display_with_auth_info(
                display.encode(), ctypes.byref(auth), ctypes.byref(screen)
            )
        if not conn or xcb.xcb_connection_has_error(conn):
            if conn:
                xcb.xcb_disconnect(conn)
            raise XGone(f"cannot open X display {display}")
        self._conn: int | None = conn
        self.display = display
        it = xcb.xcb_setup_roots_iterator(xcb.xcb_get_setup(conn))
        for _ in range(screen.value):
            xcb.xcb_screen_next(ctypes.byref(it))
        self.root = int(it.data.contents.root)
        self.width = int(it.data.contents.width_in_pixels)
        self.height = int(it.data.contents.height_in_pixels)

    def _c(self) -> int:
        xcb, _ = _libs()
        if self._conn is None:
            raise XGone(f"X connection to {self.display} is closed")
        if xcb.xcb_connection_has_error(self._conn):
            raise XGone(f"X connection to {self.display} broke")
        return self._conn

    def allow_local_user(self, user: str) -> None:
        """Let every process of ``user`` on this host connect without a cookie.

        Adds ``SI:localuser:<user>`` to the server's access list (the server checks the
        peer's uid through the Unix socket).  Raises ``XGone`` if the server refuses.
        """
        xcb, libc = _libs()
        conn = self._c()
        address = b"localuser\0" + user.encode()
        cookie = xcb.xcb_change_hosts_checked(
            conn, _HOST_MODE_INSERT, _FAMILY_SERVER_INTERPRETED, len(address), address
        )
        err = xcb.xcb_request_check(conn, cookie)
        if err:
            libc.free(err)
            raise XGone(f"X server {self.display} refused to add localuser:{user}")

    def viewable_windows(self) -> list[Window]:
        """Top-level windows that are mapped and viewable, bottom to top."""
        xcb, libc = _libs()
        conn = self._c()
        reply = _reply(xcb.xcb_query_tree_reply, conn, xcb.xcb_query_tree(conn, self.root))
        if not reply:
            self._c()
            return []
        try:
            count = xcb.xcb_query_tree_children_length(reply)
            children = xcb.xcb_query_tree_children(reply)
            wids = [int(children[i]) for i in range(count)]
        finally:
            libc.free(reply)
        attr_cookies = [(w, xcb.xcb_get_window_attributes(conn, w)) for w in wids]
        geo_cookies = [(w, xcb.xcb_get_geometry(conn, w)) for w in wids]
        viewable: set[int] = set()
        for wid, ck in attr_cookies:
            attrs = _reply(xcb.xcb_get_window_attributes_reply, conn, ck)
            if attrs:
                if attrs.contents.map_state == _MAP_STATE_VIEWABLE:
                    viewable.add(wid)
                libc.free(attrs)
        windows: list[Window] = []
        for wid, ck in geo_cookies:
            geo = _reply(xcb.xcb_get_geometry_reply, conn, ck)
            if geo:
                g = geo.contents
                if wid in viewable:
                    windows.append(Window(wid, g.x, g.y, g.width, g.height))
                libc.free(geo)
        self._c()
        return windows

    def geometry(self, wid: int) -> Window | None:
        """The window's current geometry, or None if it no longer exists."""
        xcb, libc = _libs()
        conn = self._c()
        geo = _reply(xcb.xcb_get_geometry_reply, conn, xcb.xcb_get_geometry(conn, wid))
        if not geo:
            self._c()
            return None
        try:
            g = geo.contents
            return Window(wid, g.x, g.y, g.width, g.height)
        finally:
            libc.free(geo)

    def close(self) -> None:
        """Disconnect (idempotent)."""
        if self._conn is not None:
            xcb, _ = _libs()
            xcb.xcb_disconnect(self._conn)
            self._conn = None
