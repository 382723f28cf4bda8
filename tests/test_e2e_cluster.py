"""End to end through the REST API against the real RDP test server.

The cluster runs as real `lucid-sessions serve` processes on loopback ports: once
all-in-one, once as five processes talking gRPC; then all-in-one killed with SIGKILL
mid-recording and restarted.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from tests.cluster_proc import COMPONENTS, ServeProcess, api_headers, wait_healthy
from tests.conftest import Cli
from tests.rdp_fixtures import SIZE
from tests.servers import free_port

pytestmark = pytest.mark.slow


def _spec(server) -> dict:
    return {
        "name": "e2e over TLS",
        "project": "e2e",
        "source": "rdp",
        "rdp_config": {
            "host": "127.0.0.1",
            "port": server.port,
            "username": "viewer",
            "password": "not-used-by-tls",
            "security": "tls",
        },
        "recording_config": {
            "fps": 5,
            "width": SIZE[0],
            "height": SIZE[1],
            "quality": "medium",
            "chunk_duration_s": 1,
        },
    }


def _wait_status(api: httpx.Client, sid: str, statuses: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = api.get(f"/sessions/{sid}").json()
        if body.get("status") in statuses:
            return body
        time.sleep(0.2)
    raise AssertionError(f"session {sid} stayed {body.get('status')}: {body}")


def _wait_chunks(api: httpx.Client, sid: str, count: int, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = api.get(f"/sessions/{sid}/chunks").json()["items"]
        if len(items) >= count:
            return items
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} chunks stored in {timeout} s")


def _full_flow(base: str, server, data_dir: Path, cli: Cli, tmp_path: Path) -> None:
    with httpx.Client(base_url=f"{base}/api/v1", timeout=60, headers=api_headers(data_dir)) as api:
        created = api.post("/sessions", json=_spec(server))
        assert created.status_code == 201, created.text
        sid = created.json()["session_id"]
        assert "not-used-by-tls" not in created.text
        assert api.post(f"/sessions/{sid}/start").json()["status"] == "recording"
        _wait_chunks(api, sid, 1)
        assert api.post(f"/sessions/{sid}/pause").json()["status"] == "paused"
        time.sleep(1.0)
        assert api.post(f"/sessions/{sid}/resume").json()["status"] == "recording"
        time.sleep(1.5)
        api.post(f"/sessions/{sid}/stop").raise_for_status()
        final = _wait_status(api, sid, {"completed", "interrupted", "failed"})
        assert final["status"] == "completed", final
        chunks = api.get(f"/sessions/{sid}/chunks").json()["items"]
        assert len(chunks) >= 2
        download = api.get(f"/sessions/{sid}/chunks/0/download")
        assert download.status_code == 200
        assert int(download.headers["content-length"]) == len(download.content)
        assert download.content == (data_dir / "chunks" / sid / "00000000.chunk").read_bytes()
        listing = api.get("/sessions", params={"project": "e2e"}).json()
        assert listing["total"] == 1 and listing["items"][0]["session_id"] == sid
        bundle = tmp_path / f"{sid}.tar"
        with api.stream("GET", f"/sessions/{sid}/export") as response:
            assert response.status_code == 200
            with bundle.open("wb") as out:
                for piece in response.iter_bytes():
                    out.write(piece)
    _, out, _ = Cli(tmp_path / "elsewhere")("verify", str(bundle))
    assert out.startswith(f"OK: session {sid}")


def test_all_in_one_records_through_the_api_and_the_bundle_verifies(tls_server, tmp_path, cli):
    data_dir = tmp_path / "data"
    port = free_port()
    serve = ServeProcess(data_dir, {"LUCID_API_PORT": str(port)}).start()
    try:
        wait_healthy(f"http://127.0.0.1:{port}", procs=[serve])
        _full_flow(f"http://127.0.0.1:{port}", tls_server, data_dir, cli, tmp_path)
    finally:
        serve.stop()


def _five_processes(tls_server, tmp_path, cli, backends: dict[str, str]) -> None:
    data_dir = tmp_path / "data"
    ports = {name: free_port() for name in COMPONENTS}
    env = {f"LUCID_{name.upper()}_PORT": str(port) for name, port in ports.items()}
    procs = [ServeProcess(data_dir, {**env, **backends}, targets=name) for name in COMPONENTS]
    try:
        for proc in procs:
            proc.start()
            if proc.targets != "api":
                time.sleep(0.3)
        wait_healthy(f"http://127.0.0.1:{ports['api']}", procs=procs, timeout=60)
        _full_flow(f"http://127.0.0.1:{ports['api']}", tls_server, data_dir, cli, tmp_path)
    finally:
        for proc in reversed(procs):
            proc.stop()


def test_five_processes_talking_grpc_record_the_same_flow(tls_server, tmp_path, cli):
    _five_processes(tls_server, tmp_path, cli, {})


def test_five_processes_on_mongodb_and_redis_record_the_same_flow(
    tls_server, tmp_path, cli, mongodb_uri, mongo_database, redis_url, redis_prefix, monkeypatch
):
    """The production shape: metadata in MongoDB (nx-27017 here), rate budgets,
    revocations, the session cache and chunk coordination in Redis."""
    backends = {
        "LUCID_MONGODB_URI": mongodb_uri,
        "LUCID_MONGODB_DATABASE": mongo_database,
        "LUCID_REDIS_URL": redis_url,
        "LUCID_REDIS_PREFIX": redis_prefix,
    }
    for name, value in backends.items():
        monkeypatch.setenv(name, value)  # the CLI checks of the flow read the same metadata
    _five_processes(tls_server, tmp_path, cli, backends)
    assert not (tmp_path / "data" / "metadata.db").exists()


def test_kill_9_mid_recording_then_restart_ends_interrupted_with_every_stored_chunk(
    tls_server, tmp_path, cli
):
    data_dir = tmp_path / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve = ServeProcess(data_dir, {"LUCID_API_PORT": str(port)}).start()
    try:
        wait_healthy(base, procs=[serve])
        with httpx.Client(
            base_url=f"{base}/api/v1", timeout=60, headers=api_headers(data_dir)
        ) as api:
            sid = api.post("/sessions", json=_spec(tls_server)).json()["session_id"]
            api.post(f"/sessions/{sid}/start").raise_for_status()
            stored = len(_wait_chunks(api, sid, 2))
    finally:
        serve.kill9()
    on_disk = len(list((data_dir / "chunks" / sid).glob("*.chunk")))
    assert on_disk >= stored
    serve = ServeProcess(data_dir, {"LUCID_API_PORT": str(port)}).start()
    try:
        wait_healthy(base, procs=[serve])
        with httpx.Client(
            base_url=f"{base}/api/v1", timeout=60, headers=api_headers(data_dir)
        ) as api:
            final = _wait_status(api, sid, {"interrupted", "completed", "failed"})
            assert final["status"] == "interrupted", final
            assert final["chunk_count"] >= stored
    finally:
        serve.stop()
    _, out, _ = cli("verify", sid)
    assert out.startswith(f"OK: session {sid}")
