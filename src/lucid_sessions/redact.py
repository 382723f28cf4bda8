"""Connection URLs with their credentials hidden, for messages and logs.

Works on the text rather than on :func:`urllib.parse.urlsplit`, because a password with an
unescaped ``/``, ``?`` or ``#`` makes URL parsers cut inside the password and would leak
its tail. The last ``@`` ends the credentials; when in doubt more is hidden, never less.
A user name without a password is hidden too, since some people put the password there
(``redis://secret@host``). Query options whose name mentions a password, secret or token
(and MongoDB's ``authMechanismProperties``) are hidden as well.
"""

from __future__ import annotations

import re

__all__ = ["redact_url", "url_secrets"]

_SECRET_OPTION = re.compile(
    r"(?i)([?&;][^=&;#]*(?:password|secret|token|authmechanismproperties)[^=&;#]*=)[^&;#]*"
)


def redact_url(url: str, *, what: str = "URL") -> str:
    """``url`` with every credential replaced by ``***`` (``<what>`` if it has no scheme)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return f"<{what}>"
    at = rest.rfind("@")
    if at >= 0:
        userinfo, location = rest[:at], rest[at + 1 :]
        user, colon, _ = userinfo.partition(":")
        keep_user = colon and not re.search(r"[/?#]", user)
        rest = f"{user}:***@{location}" if keep_user else f"***@{location}"
    rest = _SECRET_OPTION.sub(r"\1***", rest)
    return f"{scheme}://{rest}"


def url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that :func:`redact_url` hides, to scrub them from messages a
    library built from the URL (three characters at least, to avoid scrubbing noise)."""
    found: list[str] = []
    rest = url.partition("://")[2]
    at = rest.rfind("@")
    if at >= 0:
        user, _, password = rest[:at].partition(":")
        found.append(password or user)
    found += [m.group(0).split("=", 1)[1] for m in _SECRET_OPTION.finditer(rest)]
    return [s for s in found if len(s) >= 3]
