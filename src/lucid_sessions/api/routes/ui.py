"""The web UI: a static shell (HTML, CSS, JavaScript in ``api/static``) served at ``/``.

The shell itself needs no token: it holds no data. Everything it shows comes from the
authenticated ``/api/v1`` routes, called with the bearer token the user signs in with
(kept in the tab's ``sessionStorage``, sent as ``Authorization: Bearer``, never put in a
URL). These are plain Starlette routes, not API routes: they carry no permission, are
not in the OpenAPI document and are not in :func:`~lucid_sessions.api.routes.api_routes`.

Only the files listed in :data:`FILES` are served (no directory walking), each with a
strict Content-Security-Policy: scripts, styles and connections from this origin only,
images also from ``blob:`` (decoded frames), no framing.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

__all__ = ["FILES", "install_ui"]

FILES = {
    "index.html": "text/html; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "player.js": "text/javascript; charset=utf-8",
}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return (resources.files("lucid_sessions.api") / "static" / name).read_bytes()


async def _index(request: Request) -> Response:
    return Response(_read("index.html"), media_type=FILES["index.html"], headers=_HEADERS)


async def _file(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in FILES:
        return PlainTextResponse("not found", status_code=404, headers=_HEADERS)
    return Response(_read(name), media_type=FILES[name], headers=_HEADERS)


async def _to_index(request: Request) -> Response:
    return RedirectResponse("/", status_code=308)


def install_ui(app: FastAPI) -> None:
    """Add ``/`` and ``/ui/<file>`` to ``app``."""
    app.router.routes.append(Route("/", _index, methods=["GET", "HEAD"], name="ui"))
    app.router.routes.append(Route("/ui/", _to_index, methods=["GET", "HEAD"]))
    app.router.routes.append(Route("/ui/{name}", _file, methods=["GET", "HEAD"], name="ui-file"))
