"""Turning an ``xfreerdp`` exit into a clear capture error.

FreeRDP 2.x reports refused credentials in two ways, both handled here:

* Servers that answer the CredSSP exchange with an error (Windows, xrdp) make
  ``xfreerdp`` log ``ERRCONNECT_LOGON_FAILURE`` / ``ERRCONNECT_AUTHENTICATION_FAILED``
  and exit with status 132 or 134 (or 135, 148..159 for account and password states).
* Servers that simply close the socket after a bad NTLM response (FreeRDP's own
  shadow server) leave only ``ERRCONNECT_CONNECT_TRANSPORT_FAILED`` (exit 147), the same
  as any dropped connection.  What tells them apart is *where* the connection died:
  the client's state machine (logged by the ``com.freerdp.core.connection`` DEBUG
  filter) went from ``CONNECTION_STATE_NLA`` straight back to the initial state and
  never got past NLA, i.e. the server hung up on the credentials.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..errors import CaptureAuthError, CaptureConnectionError, CaptureError

if TYPE_CHECKING:
    from .rdp import RdpConfig

__all__ = ["AUTH_EXIT_CODES", "classify_exit", "redact"]

AUTH_EXIT_CODES = frozenset({132, 134, 135, *range(148, 150), *range(151, 160)})
"""xfreerdp 2.x exit statuses that mean "credentials refused" (150 is KDC unreachable)."""

_AUTH_ERRORS = (
    "ERRCONNECT_AUTHENTICATION_FAILED",
    "ERRCONNECT_LOGON_FAILURE",
    "ERRCONNECT_WRONG_PASSWORD",
    "ERRCONNECT_ACCOUNT_LOCKED_OUT",
    "ERRCONNECT_ACCOUNT_DISABLED",
    "ERRCONNECT_ACCOUNT_EXPIRED",
    "ERRCONNECT_ACCOUNT_RESTRICTION",
    "ERRCONNECT_PASSWORD_EXPIRED",
    "ERRCONNECT_PASSWORD_CERTAINLY_EXPIRED",
    "ERRCONNECT_PASSWORD_MUST_CHANGE",
    "ERRCONNECT_LOGON_TYPE_NOT_GRANTED",
    "ERRCONNECT_NO_OR_MISSING_CREDENTIALS",
    "ERRCONNECT_ACCESS_DENIED",
    "ERRCONNECT_CLIENT_REVOKED",
    "STATUS_LOGON_FAILURE",
    "STATUS_WRONG_PASSWORD",
)
_ERRCONNECT = re.compile(r"\b(ERRCONNECT_[A-Z_]+|STATUS_[A-Z_]+)\b")
_TRANSITION = re.compile(r"CONNECTION_STATE_([A-Z_]+) --> CONNECTION_STATE_([A-Z_]+)")

_HINTS = {
    "ERRCONNECT_SECURITY_NEGO_CONNECT_FAILED": "security negotiation failed (try the other "
    "security mode: tls or nla)",
    "ERRCONNECT_TLS_CONNECT_FAILED": "TLS handshake failed",
    "ERRCONNECT_DNS_NAME_NOT_FOUND": "host name not found",
    "ERRCONNECT_CONNECT_FAILED": "connection failed",
    "ERRCONNECT_CONNECT_TRANSPORT_FAILED": "the server closed the connection",
}


def redact(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``***``."""
    return text.replace(secret, "***") if secret else text


def _hung_up_during_nla(lines: list[str]) -> bool:
    """True if the client reached NLA, was sent back from it, and never got past it."""
    left_nla_backwards = False
    for line in lines:
        m = _TRANSITION.search(line)
        if m is None:
            continue
        src, dst = m.groups()
        if src == "NLA":
            if dst == "INITIAL":
                left_nla_backwards = True
            else:
                return False
    return left_nla_backwards


def classify_exit(
    config: RdpConfig, returncode: int, lines: list[str], *, connected: bool
) -> CaptureError:
    """The error to raise for an ``xfreerdp`` that exited with ``returncode``.

    ``lines`` is the client's output; only FreeRDP error names are taken from it, so the
    message carries no raw log text.  ``connected`` says whether the session had been
    up (then the error reports the end of the session, not a failed connect).
    """
    text = "\n".join(lines)
    codes = _ERRCONNECT.findall(text)
    last = codes[-1] if codes else ""
    details: dict[str, object] = {
        "host": config.host,
        "port": config.port,
        "user": config.username,
        "exit_status": returncode,
        "freerdp_error": last,
    }
    auth_code = next((c for c in codes if c in _AUTH_ERRORS), "")
    if not connected and (
        returncode in AUTH_EXIT_CODES
        or auth_code
        or (config.security == "nla" and _hung_up_during_nla(lines))
    ):
        why = auth_code or (
            "the server closed the connection during NLA authentication"
            if returncode not in AUTH_EXIT_CODES
            else f"xfreerdp exit status {returncode}"
        )
        msg = (
            f"RDP server {config.target} refused the credentials of user "
            f"{_qualified_user(config)!r} ({why})"
        )
        return CaptureAuthError(redact(msg, config.password), details=details)
    hint = _HINTS.get(last, last or "no FreeRDP error reported")
    if connected:
        msg = f"RDP session with {config.target} ended: {hint} (xfreerdp exit status {returncode})"
    else:
        msg = (
            f"RDP connection to {config.target} failed: {hint} (xfreerdp exit status {returncode})"
        )
    return CaptureConnectionError(redact(msg, config.password), details=details)


def _qualified_user(config: RdpConfig) -> str:
    return f"{config.domain}\\{config.username}" if config.domain else config.username
