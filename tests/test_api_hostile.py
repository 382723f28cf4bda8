"""Hostile input: path traversal in every id, oversized bodies and headers, stalled
bodies, slow handlers, and internal errors that must not leak paths or stack traces."""

from __future__ import annotations

import asyncio
import errno
import io
import os
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from tests.test_api_support import INGEST, RDP, ApiCluster, assert_error

import lucid_sessions
from lucid_sessions.api import ApiSettings, create_app
from lucid_sessions.api.errors import scrub
from lucid_sessions.api.limits import uvicorn_limits
from lucid_sessions.api.routes import api_routes
from lucid_sessions.cluster.interfaces import StorageHealth
from lucid_sessions.errors import ChunkNotFoundError, StorageError
from lucid_sessions.storage.chunk_store import ChunkStore

# ---------------------------------------------------------------------------------------
# Watching the file system: every file opened, listed, created, renamed or removed while
# a test records, through Python's audit hooks (also inside worker threads).

_WATCHED = {
    "open",
    "os.listdir",
    "os.scandir",
    "os.mkdir",
    "os.remove",
    "os.rename",
    "os.rmdir",
    "shutil.rmtree",
    "sqlite3.connect",
}
_touched: list[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _touched is not None and event in _WATCHED and args:
        path = args[0]
        if isinstance(path, str | bytes | os.PathLike):
            _touched.append(os.path.abspath(os.fsdecode(path)))


sys.addaudithook(_audit)


class Touched:
    """The paths touched while the context is open."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __enter__(self) -> Touched:
        global _touched
        _touched = self.paths
        return self

    def __exit__(self, *exc: object) -> None:
        global _touched
        _touched = None


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------------------
# One cluster for the module, with a canary file beside its data directory.


class Hostile:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.outside = base / "outside"
        self.outside.mkdir()
        self.canary = self.outside / "canary.chunk"
        self.canary.write_bytes(b"canary: must never be read or removed")
        self.api = ApiCluster(base / "data")
        self.api.__enter__()
        manifest = self.api.import_session(frames=30, fps=1, name="hostile")
        self.session = manifest.session_id

    def close(self) -> None:
        self.api.__exit__(None, None, None)


@pytest.fixture(name="hostile", scope="module")
def hostile_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    cluster = Hostile(tmp_path_factory.mktemp("hostile"))
    try:
        yield cluster
    finally:
        cluster.close()


def traversal_values(canary: Path) -> list[str]:
    """What an attacker puts in an id, as the URL would carry it."""
    return [
        "..",
        "../..",
        "../../etc/passwd",
        "..%2f..%2fetc%2fpasswd",
        "%2e%2e%2f",
        "%2e%2e",
        "..%2f",
        "%252e%252e%252f",
        "%00",
        "ses%00.chunk",
        "..\\..\\windows\\win.ini",
        "%5c..%5c..%5cetc",
        "/etc/passwd",
        "%2Fetc%2Fpasswd",
        str(canary),
        "../outside/canary",
        "\u2024\u2024",  # one dot leader, twice
        "\uff0e\uff0e\uff0f",  # fullwidth ". . /"
        "\u2025",  # two dot leader
        "x" * 129,
        "x" * 10_000,
        "~root",
        "a b",
        "ses;rm -rf",
    ]


def _parameters() -> list[tuple[str, str, str, str]]:
    """(method, path template, parameter name, location) of every path and query
    parameter of every route, read from the app itself."""
    document = create_app(pipeline=None, storage=None).openapi()  # type: ignore[arg-type]
    found = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                found.append((method.upper(), path, parameter["name"], parameter["in"]))
                if _is_number(parameter["schema"]):
                    NUMBERS.add(parameter["name"])
    return found


def _is_number(schema: dict[str, Any]) -> bool:
    kinds = {s.get("type") for s in schema.get("anyOf", [schema])} - {"null"}
    return bool(kinds) and kinds <= {"integer", "number"}


FREE_TEXT = frozenset({"reason"})
"""Query parameters that are prose, not ids or filters (a legal hold's reason)."""
NUMBERS: set[str] = set()
"""Parameters that are numbers: no traversal value is ever one."""


PARAMETERS = _parameters()


def test_every_route_with_an_id_is_covered() -> None:
    """Every route whose path has a parameter appears in PARAMETERS: none is skipped."""
    covered = {(m, p) for m, p, _, where in PARAMETERS if where == "path"}
    for route in api_routes():
        if "{" in route.path:
            for method in route.methods or ():
                assert (method, route.path) in covered, (method, route.path)


def _url(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path


def _assert_refused(response: Any, data_dir: Path) -> None:
    assert response.status_code in (404, 422), (response.status_code, response.text[:300])
    _assert_common(response)
    text = response.text
    assert "root:" not in text and "must never be read" not in text  # /etc/passwd, canary
    assert str(data_dir) not in text
    assert "Traceback" not in text


def _assert_common(response: Any) -> None:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details", "request_id", "timestamp"}
    assert body["error"]["code"] in ("LUCID_ERR_3001", "LUCID_ERR_3002", "LUCID_ERR_3005")
    assert body["error"]["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize(
    ("method", "path", "name", "where"),
    PARAMETERS,
    ids=[f"{m} {p} {n}" for m, p, n, _ in PARAMETERS],
)
def test_traversal_in_every_id_parameter_is_refused(
    hostile: Hostile, method: str, path: str, name: str, where: str
) -> None:
    client = hostile.api.client
    data_dir = hostile.api.path
    before = _tree(hostile.base / "outside")
    good = {"session_id": hostile.session, "sequence": "0"}
    with Touched() as touched:
        for value in traversal_values(hostile.canary):
            if where == "path":
                # As typed (the client may normalise dot segments), and fully escaped so
                # that the exact value reaches the route.
                for raw in (value, quote(value, safe="")):
                    url = _url(path, {**good, name: raw})
                    response = client.request(method, url, follow_redirects=False)
                    sent = response.request.url.path
                    if response.status_code < 400 and raw not in sent and ".." not in sent:
                        continue  # the client resolved "..": a legitimate other request
                    _assert_refused(response, data_dir)
            else:
                url = _url(path, good)
                response = client.request(method, url, params={name: value}, follow_redirects=False)
                # A free-text filter may match nothing (200); an id or a number must not pass.
                # Prose (a hold's reason) is legal whatever it says: the route may answer
                # by the session's state, but never with a 5xx, and touches nothing outside.
                if name in FREE_TEXT:
                    assert response.status_code < 500, response.text[:300]
                    assert set(response.json()) <= {"error", "session_id", "hold", "reason"}
                elif response.status_code >= 300 or name in NUMBERS:
                    _assert_refused(response, data_dir)
                raw_url = f"{url}?{name}={value}"
                response = client.request(method, raw_url, follow_redirects=False)
                assert response.status_code < 500, response.text[:300]
    outside = [p for p in touched.paths if not p.startswith(str(data_dir)) and _suspicious(p)]
    assert not outside, outside
    assert _tree(hostile.base / "outside") == before


def _suspicious(path: str) -> bool:
    """A touched path that traversal could have produced (not Python's own files)."""
    lowered = path.lower()
    return any(mark in lowered for mark in ("passwd", "win.ini", "canary", "outside", "~root"))


def test_hostile_query_values_never_reach_storage_unchecked(hostile: Hostile) -> None:
    """The label and status filters are ids too: each hostile value is a 422 naming it."""
    for url, name in (
        ("/api/v1/sessions", "project"),
        ("/api/v1/sessions", "environment"),
        ("/api/v1/sessions", "status"),
        (f"/api/v1/sessions/{hostile.session}/chunks", "status"),
    ):
        for value in traversal_values(hostile.canary):
            response = hostile.api.client.get(url, params={name: value})
            error = assert_error(response, 422, "LUCID_ERR_3002")
            assert name in error["message"]


def test_no_file_outside_the_data_dir_appeared(hostile: Hostile) -> None:
    names = {p.name for p in hostile.base.iterdir()}
    assert names == {"data", "outside"}, names
    assert hostile.canary.read_bytes().startswith(b"canary")


# ---------------------------------------------------------------------------------------
# The chunk store refuses the same ids itself (defence in depth).


@pytest.fixture(name="store")
def store_fixture(tmp_path: Path) -> ChunkStore:
    return ChunkStore(tmp_path / "root" / "chunks")


STORE_IDS = [
    "..",
    "../..",
    "../../etc/passwd",
    "../outside",
    "/etc/passwd",
    "/tmp",
    "a/b",
    "..\\..\\windows",
    "a\\b",
    "a\x00b",
    "\u2024\u2024",
    "\uff0e\uff0e",
    "ses\n",
    "",
    "x" * 129,
    "x" * 100_000,
    "%2e%2e",
    ".",
]


@pytest.mark.parametrize("bad", STORE_IDS, ids=lambda v: repr(v)[:40])
def test_the_chunk_store_never_builds_a_path_from_a_traversal_id(
    store: ChunkStore, tmp_path: Path, bad: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "00000000.chunk").write_bytes(b"keep")
    before = _tree(tmp_path)
    with Touched() as touched:
        for call in (
            lambda: store.path(bad, 0),
            lambda: store.put(bad, 0, b"payload"),
            lambda: store.get(bad, 0),
            lambda: store.size(bad, 0),
            lambda: store.sequences(bad),
            lambda: store.delete_session(bad),
        ):
            with pytest.raises(StorageError, match="invalid session id") as raised:
                call()
            assert len(raised.value.message) < 200  # a huge id is not echoed whole
    assert touched.paths == []
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("bad", [-1, 2**53 + 1, "1", "../1", 1.5, True, None, "00000001"])
def test_the_chunk_store_refuses_sequences_that_are_not_plain_ints(
    store: ChunkStore, tmp_path: Path, bad: Any
) -> None:
    with Touched() as touched:
        for call in (
            lambda: store.path("ses_1", bad),
            lambda: store.put("ses_1", bad, b"x"),
            lambda: store.get("ses_1", bad),
        ):
            with pytest.raises(StorageError, match="invalid chunk sequence"):
                call()
    assert touched.paths == []
    assert not (tmp_path / "root").exists()


def test_the_chunk_store_still_takes_good_ids(store: ChunkStore) -> None:
    store.put("ses_ok-1", 2**53, b"x")
    assert store.get("ses_ok-1", 2**53) == b"x"
    assert store.sequences("ses_ok-1") == [2**53]


# ---------------------------------------------------------------------------------------
# Body caps (413), header caps (431), body timeout (408), handler timeout (504).


@pytest.fixture(name="small")
def small_fixture(tmp_path: Path) -> Iterator[ApiCluster]:
    settings = ApiSettings(
        max_body_bytes=4096,
        max_frame_bytes=320 * 240 * 3,
        body_timeout_s=0.3,
        request_timeout_s=0.5,
        max_header_count=30,
        max_header_bytes=1024,
        max_headers_total_bytes=4096,
    )
    with ApiCluster(tmp_path / "data", settings=settings) as cluster:
        yield cluster


def _raw(
    api: ApiCluster,
    method: str,
    path: str,
    pieces: list[bytes],
    *,
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    stall: bool = False,
) -> tuple[int, dict[str, str], bytes]:
    """Drive the app at the ASGI level, the body arriving in ``pieces`` (chunked, no
    Content-Length) and, with ``stall``, never finishing: what TestClient cannot do."""

    async def call() -> tuple[int, dict[str, str], bytes]:
        queue = list(pieces)
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if queue:
                piece = queue.pop(0)
                return {"type": "http.request", "body": piece, "more_body": bool(queue) or stall}
            if stall:
                await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"testserver"), *headers],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        # Bounded: without the limits a stalled body would hang the test instead of failing.
        await asyncio.wait_for(api.app(scope, receive, send), 10)
        start = next(m for m in sent if m["type"] == "http.response.start")
        head = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return start["status"], head, body

    return api.run(call)


class _Answer:
    """A raw ASGI answer shaped like a TestClient response, for assert_error."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status_code, self.headers, self.content = status, headers, body
        self.text = body.decode()

    def json(self) -> Any:
        import json

        return json.loads(self.content)


def test_a_body_declared_too_large_is_413_before_it_is_read(small: ApiCluster) -> None:
    response = small.client.post("/api/v1/sessions", content=b"{" + b" " * 5000 + b"}")
    error = assert_error(response, 413, "LUCID_ERR_3002")
    assert "4096 bytes" in error["message"]
    assert response.headers["connection"] == "close"
    assert small.client.get("/api/v1/sessions").json()["total"] == 0


def test_a_chunked_body_growing_past_the_cap_is_413(small: ApiCluster) -> None:
    json_type = [(b"content-type", b"application/json")]
    status, headers, body = _raw(
        small, "POST", "/api/v1/sessions", [b"{", b" " * 3000, b" " * 3000, b"}"], headers=json_type
    )
    error = assert_error(_Answer(status, headers, body), 413, "LUCID_ERR_3002")
    assert "4096 bytes" in error["message"]
    assert small.client.get("/api/v1/sessions").json()["total"] == 0


def test_a_chunked_body_within_the_cap_is_taken(small: ApiCluster) -> None:
    import json

    data = json.dumps(INGEST).encode()
    pieces = [data[i : i + 50] for i in range(0, len(data), 50)]
    status, _, body = _raw(
        small, "POST", "/api/v1/sessions", pieces, headers=[(b"content-type", b"application/json")]
    )
    assert status == 201, body


def test_a_get_with_a_huge_body_is_413_too(small: ApiCluster) -> None:
    response = small.client.request("GET", "/api/v1/sessions", content=b"x" * 10_000)
    assert_error(response, 413, "LUCID_ERR_3002")


def test_the_frame_route_keeps_its_own_larger_cap(small: ApiCluster) -> None:
    sid = small.create()["session_id"]
    small.client.post(f"/api/v1/sessions/{sid}/start")
    try:
        frame = b"\x10" * (320 * 240 * 3)  # far above max_body_bytes, exactly max_frame_bytes
        params = {"width": 320, "height": 240}
        octets = {"content-type": "application/octet-stream"}
        url = f"/api/v1/sessions/{sid}/frames"
        response = small.client.post(url, content=frame, params=params, headers=octets)
        assert response.status_code == 202, response.text
        error = assert_error(
            small.client.post(url, content=frame + b"x", params=params, headers=octets),
            413,
            "LUCID_ERR_3002",
        )
        assert f"{320 * 240 * 3} bytes" in error["message"]
        status, headers, body = _raw(
            small,
            "POST",
            url,
            [frame[:100_000], frame[100_000:], b"more"],
            headers=[(b"content-type", b"application/octet-stream")],
        )
        assert_error(_Answer(status, headers, body), 413, "LUCID_ERR_3002")
    finally:
        small.client.post(f"/api/v1/sessions/{sid}/stop")


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({f"x-h{i}": "v" for i in range(40)}, "header fields; at most 30"),
        ({"x-long": "v" * 2000}, "'x-long' is"),
        ({f"x-h{i}": "v" * 900 for i in range(6)}, "total"),
        ({"authorization": "Bearer " + "a" * 5000}, "'authorization' is"),
    ],
    ids=["too many", "one too long", "all too long", "a huge token"],
)
def test_header_fields_too_large_are_431(
    small: ApiCluster, headers: dict[str, str], words: str
) -> None:
    response = small.client.get("/api/v1/sessions", headers=headers)
    error = assert_error(response, 431, "LUCID_ERR_3002")
    assert words in error["message"]
    assert "v" * 100 not in response.text  # the value is not mirrored


def test_a_body_that_stops_arriving_is_408(small: ApiCluster) -> None:
    started = time.monotonic()
    status, headers, body = _raw(
        small,
        "POST",
        "/api/v1/sessions",
        [b'{"name": "slow'],
        headers=[(b"content-type", b"application/json")],
        stall=True,
    )
    error = assert_error(_Answer(status, headers, body), 408, "LUCID_ERR_3002")
    assert "0.3 s" in error["message"]
    assert headers["connection"] == "close"
    assert time.monotonic() - started < 5


def test_a_handler_that_does_not_answer_in_time_is_504(
    small: ApiCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def stuck(session_id: str) -> None:
        await asyncio.sleep(30)

    monkeypatch.setattr(small.storage, "get_session", stuck)
    started = time.monotonic()
    response = small.client.get("/api/v1/sessions/ses_slow")
    error = assert_error(response, 504, "LUCID_ERR_3006")
    assert "0.5 s" in error["message"]
    assert time.monotonic() - started < 5


def test_a_streamed_export_is_not_cut_by_the_handler_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ApiSettings(request_timeout_s=0.3, stream_piece=4096, export_buffer=1)
    with ApiCluster(tmp_path / "data", settings=settings) as api:
        manifest = api.import_session(frames=50, fps=2)
        read_chunk = api.storage.read_chunk

        async def slow_read(session_id: str, sequence: int) -> bytes:
            await asyncio.sleep(0.25)
            return await read_chunk(session_id, sequence)

        monkeypatch.setattr(api.storage, "read_chunk", slow_read)
        started = time.monotonic()
        response = api.client.get(f"/api/v1/sessions/{manifest.session_id}/export")
        assert response.status_code == 200, response.text[:300]
        assert time.monotonic() - started > settings.request_timeout_s
        with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
            chunks = [n for n in tar.getnames() if n.endswith(".chunk")]
        assert len(chunks) == manifest.tree_size


def test_uvicorn_options_follow_the_settings() -> None:
    settings = ApiSettings()
    options = uvicorn_limits(settings)
    assert options["http"] == "h11"
    assert options["h11_max_incomplete_event_size"] > settings.max_headers_total_bytes
    assert options["timeout_keep_alive"] == settings.keep_alive_timeout_s
    assert options["limit_concurrency"] == settings.max_concurrency


@pytest.fixture(name="served", scope="module")
def served_fixture() -> Iterator[int]:
    """The app under a real uvicorn with :func:`uvicorn_limits`, on a free port. No
    components: every request here is refused before a route would use one."""
    import threading

    import uvicorn

    settings = ApiSettings(max_body_bytes=4096, body_timeout_s=0.5, max_headers_total_bytes=8192)
    app = create_app(pipeline=None, storage=None, settings=settings)  # type: ignore[arg-type]
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="critical",
        lifespan="off",
        **uvicorn_limits(settings),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield server.servers[0].sockets[0].getsockname()[1]
    server.should_exit = True
    thread.join(10)


def _exchange(port: int, request: bytes, *, then: bytes | None = None) -> bytes:
    """Send ``request`` on a fresh connection (and, after a pause, ``then``); the answer."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        if then is not None:
            time.sleep(0.1)
            sock.sendall(then)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and b'"}}' in answer:
                break
        return answer


def test_uvicorn_refuses_an_oversized_head_before_the_app(served: int) -> None:
    """h11 stops buffering a head that is still incomplete past its limit (a slow or
    endless header block); a complete one that arrived at once reaches the app's 431."""
    head = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000
    answer = _exchange(served, head, then=b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"LUCID_ERR" not in answer  # the app never saw it


def test_a_head_within_uvicorns_limit_but_above_the_apps_is_431(served: int) -> None:
    fields = b"".join(b"X-F%d: %s\r\n" % (i, b"a" * 1000) for i in range(9))
    answer = _exchange(served, b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b'"code":"LUCID_ERR_3002"' in answer


def test_a_real_chunked_body_past_the_cap_is_413(served: int) -> None:
    head = (
        b"POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"%x\r\n%s\r\n" % (3000, b" " * 3000)
    answer = _exchange(served, head + piece, then=piece + piece + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"4096 bytes" in answer


def test_a_real_body_that_stops_arriving_is_408(served: int) -> None:
    head = (
        b"POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    started = time.monotonic()
    answer = _exchange(served, head)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"connection: close" in answer.lower()
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------------------------------
# Field length caps: over-long input is a 422 naming the field.

LONG_FIELDS = [
    ("name", INGEST, ["name"], "n" * 201),
    ("a tag", INGEST, ["tags"], ["t" * 51]),
    ("eleven tags", INGEST, ["tags"], [str(i) for i in range(11)]),
    ("project", INGEST, ["project"], "p" * 65),
    ("environment", INGEST, ["environment"], "e" * 65),
    ("metadata keys", INGEST, ["metadata"], {f"k{i}": i for i in range(51)}),
    ("a metadata key", INGEST, ["metadata"], {"k" * 65: 1}),
    ("metadata size", INGEST, ["metadata"], {"k": "v" * 17_000}),
    ("host", RDP, ["rdp_config", "host"], "h" * 256),
    ("username", RDP, ["rdp_config", "username"], "u" * 257),
    ("domain", RDP, ["rdp_config", "domain"], "d" * 257),
    ("password", RDP, ["rdp_config", "password"], "p" * 501),
    (
        "display",
        {"name": "x", "source": "x11", "x11_config": {"display": ":1"}},
        ["x11_config", "display"],
        "h" * 300 + ":1",
    ),
]


@pytest.mark.parametrize(
    ("base", "where", "value"),
    [pytest.param(b, w, v, id=what) for what, b, w, v in LONG_FIELDS],
)
def test_over_long_fields_are_422_naming_the_field(
    hostile: Hostile, base: dict[str, Any], where: list[str], value: Any
) -> None:
    import copy

    body = copy.deepcopy(base)
    target = body
    for part in where[:-1]:
        target = target[part]
    target[where[-1]] = value
    response = hostile.api.client.post("/api/v1/sessions", json=body)
    error = assert_error(response, 422, "LUCID_ERR_3002")
    assert ".".join(where) in error["message"], error["message"]
    assert "x" * 100 not in response.text and "v" * 100 not in response.text


@pytest.mark.parametrize(
    ("url", "params", "field"),
    [
        ("/api/v1/sessions", {"project": "p" * 65}, "project"),
        ("/api/v1/sessions", {"environment": "e" * 1000}, "environment"),
        ("/api/v1/sessions", {"status": "s" * 1000}, "status"),
        ("/api/v1/sessions/{sid}/chunks", {"status": "s" * 33}, "status"),
        ("/api/v1/sessions/{sid}/chunks", {"limit": "9" * 400}, "limit"),
        ("/api/v1/sessions/{sid}/export", {"from": "1" * 400}, "from"),
    ],
)
def test_over_long_query_values_are_422_naming_them(
    hostile: Hostile, url: str, params: dict[str, str], field: str
) -> None:
    response = hostile.api.client.get(url.format(sid=hostile.session), params=params)
    error = assert_error(response, 422, "LUCID_ERR_3002")
    assert field in error["message"]


def test_an_update_with_an_over_long_name_is_422(hostile: Hostile) -> None:
    response = hostile.api.client.patch(
        f"/api/v1/sessions/{hostile.session}", json={"name": "n" * 201}
    )
    assert "name" in assert_error(response, 422, "LUCID_ERR_3002")["message"]


def test_deeply_nested_metadata_is_a_422_not_a_crash(hostile: Hostile) -> None:
    nested = "[" * 5000 + "]" * 5000
    body = '{"name": "deep", "source": "ingest", "metadata": {"k": ' + nested + "}}"
    response = hostile.api.client.post(
        "/api/v1/sessions", content=body, headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "LUCID_ERR_3002")


# ---------------------------------------------------------------------------------------
# No stack traces, exception reprs or internal paths in any answer.

PACKAGE_DIR = str(Path(lucid_sessions.__file__).parent)


def _leak_free(response: Any, *secrets: str) -> None:
    text = response.text
    for secret in ("Traceback", 'File "', PACKAGE_DIR, "Errno", "OSError(", *secrets):
        assert secret not in text, (secret, text)


def test_a_raw_os_error_with_a_data_dir_path_is_a_plain_500(
    hostile: Hostile, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunk = hostile.api.path / "chunks" / hostile.session / "00000000.chunk"

    async def denied(session_id: str, sequence: int) -> bytes:
        raise PermissionError(errno.EACCES, "Permission denied", str(chunk))

    monkeypatch.setattr(hostile.api.storage, "read_chunk", denied)
    response = hostile.api.client.get(f"/api/v1/sessions/{hostile.session}/chunks/0/download")
    error = assert_error(response, 500, "LUCID_ERR_3006")
    assert error["message"] == "an internal error occurred" and error["details"] == {}
    _leak_free(response, str(hostile.api.path), "PermissionError", "Permission denied")


def test_a_storage_error_caused_by_an_os_error_is_a_plain_500(
    hostile: Hostile, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = hostile.api.path / "metadata.db"

    async def broken(session_id: str) -> None:
        try:
            raise OSError(errno.EIO, "Input/output error", str(where))
        except OSError as exc:
            raise StorageError(f"cannot read {where}: {exc}") from exc

    monkeypatch.setattr(hostile.api.storage, "get_session", broken)
    response = hostile.api.client.get(f"/api/v1/sessions/{hostile.session}")
    assert_error(response, 500, "LUCID_ERR_3007")
    _leak_free(response, str(hostile.api.path), "Input/output")


def test_client_errors_carrying_data_dir_paths_are_scrubbed(
    hostile: Hostile, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunk = hostile.api.path / "chunks" / hostile.session / "00000009.chunk"

    async def missing(session_id: str, sequence: int) -> None:
        raise ChunkNotFoundError(
            f"chunk file {chunk} is gone ({PACKAGE_DIR}/storage/chunk_store.py)",
            details={"path": str(chunk), "paths": [str(chunk)], "nested": {"p": str(chunk)}},
        )

    monkeypatch.setattr(hostile.api.storage, "get_chunk", missing)
    response = hostile.api.client.get(f"/api/v1/sessions/{hostile.session}/chunks/9")
    error = assert_error(response, 404, "LUCID_ERR_3005")
    assert error["message"] == "chunk file <path> is gone (<path>)"
    assert error["details"] == {"path": "<path>", "paths": ["<path>"], "nested": {"p": "<path>"}}
    _leak_free(response, str(hostile.api.path))


def test_health_details_never_show_the_data_dir(
    hostile: Hostile, monkeypatch: pytest.MonkeyPatch
) -> None:
    detail = f"[Errno 13] Permission denied: '{hostile.api.path}'"

    async def sick() -> StorageHealth:
        return StorageHealth(False, 0, 0, "sqlite", detail)

    monkeypatch.setattr(hostile.api.storage, "health", sick)
    response = hostile.api.client.get("/api/v1/health")
    assert response.status_code == 503
    assert str(hostile.api.path) not in response.text
    assert "<path>" in response.json()["storage"]["detail"]


def test_ordinary_answers_do_not_show_internal_paths(hostile: Hostile) -> None:
    client = hostile.api.client
    for url in (
        "/api/v1/health",
        "/api/v1/statistics",
        "/api/v1/metrics",
        "/api/v1/pipeline/status",
        f"/api/v1/sessions/{hostile.session}",
        f"/api/v1/sessions/{hostile.session}/statistics",
        "/openapi.json",
    ):
        response = client.get(url)
        assert response.status_code < 400, (url, response.text[:300])
        _leak_free(response, str(hostile.api.path))


@pytest.mark.parametrize(
    "text",
    [
        "{data}/chunks/ses_1/00000001.chunk",
        "cannot open {data}/metadata.db: locked",
        "[Errno 2] No such file or directory: '{data}'",
        "[Errno 13] Permission denied: '{data}/keys/master.key'",
        'File "{package}/api/app.py", line 3, in create_app',
        "PosixPath('{data}/keys')",
        "sqlite file:{data}/metadata.db?mode=ro",
        "default ~/.local/share/lucid-sessions/chunks",
        "key at '/data'",
        "in C:\\lucid\\data\\chunks",
    ],
)
def test_scrub_removes_data_dir_and_package_paths(tmp_path: Path, text: str) -> None:
    data = tmp_path / "lucid data dir"  # a space too, when quoted
    filled = text.format(data=data, package=PACKAGE_DIR)
    scrubbed = scrub(filled)
    assert "<path>" in scrubbed
    for secret in (str(tmp_path), PACKAGE_DIR, ".local/share", "/data'", "lucid\\data"):
        assert secret not in scrubbed, scrubbed


def test_validation_errors_never_echo_the_input(hostile: Hostile) -> None:
    secret = f"{hostile.api.path}/x\x07" + "z" * 300
    response = hostile.api.client.post(
        "/api/v1/sessions", json={"name": secret, "source": "ingest", "colour": secret}
    )
    assert_error(response, 422, "LUCID_ERR_3002")
    _leak_free(response, str(hostile.api.path), "z" * 50)
