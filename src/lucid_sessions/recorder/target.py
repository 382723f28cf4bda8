"""Recording targets given on the command line: ``rdp://USER@HOST:PORT``, ``x11://:N``."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

from lucid_sessions.capture import CaptureSource, RdpConfig, RdpSource, X11Source
from lucid_sessions.errors import InvalidConfigError

__all__ = ["open_target", "read_password"]

_DISPLAY = re.compile(r"^:\d{1,5}(\.\d{1,3})?$")


def read_password(path: str) -> str:
    """The password from a file (``-`` for stdin), without its trailing newline."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise InvalidConfigError(f"cannot read password file {path}: {exc.strerror}") from exc
    return text.rstrip("\r\n")


def open_target(
    url: str,
    *,
    password: str = "",
    domain: str = "",
    security: str = "nla",
    width: int = 1920,
    height: int = 1080,
    ignore_cert: bool = True,
) -> tuple[CaptureSource, dict[str, object]]:
    """The capture source for ``url`` and the connection settings to keep (no password)."""
    parts = urlsplit(url)
    if parts.scheme == "x11":
        display = url[len("x11://") :]
        if not _DISPLAY.match(display):
            raise InvalidConfigError(f"x11 target must look like x11://:99, not {url!r}")
        return X11Source(display), {"source": "x11", "display": display}
    if parts.scheme != "rdp":
        raise InvalidConfigError(f"target must be rdp://USER@HOST[:PORT] or x11://:N, not {url!r}")
    if parts.password is not None:
        raise InvalidConfigError("put the password in --password-file, never in the URL")
    try:
        port = parts.port or 3389
    except ValueError:
        raise InvalidConfigError(f"invalid port in {url!r}") from None
    username = unquote(parts.username or "")
    if not username:
        raise InvalidConfigError("the rdp target needs a user: rdp://USER@HOST[:PORT]")
    config = RdpConfig(
        host=parts.hostname or "",
        port=port,
        username=username,
        password=password,
        domain=domain,
        security=security,  # type: ignore[arg-type]
        width=width,
        height=height,
        ignore_cert=ignore_cert,
    )
    settings: dict[str, object] = {
        "source": "rdp",
        "host": config.host,
        "port": config.port,
        "username": config.username,
        "domain": config.domain,
        "security": config.security,
        "resolution": f"{width}x{height}",
    }
    return RdpSource(config), settings
