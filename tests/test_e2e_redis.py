"""End to end with Redis coordinating the chunk flow: separate `serve` processes (storage,
pipeline, recorder, API and two chunk processors) sharing one Redis stream.

One processor is killed with SIGKILL mid-session: the other claims what it left and the
session completes with every chunk exactly once. Then a private Redis is restarted
(without persistence) mid-session: the pipeline waits, resumes and loses nothing.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from tests.cluster_proc import ServeProcess, api_headers, wait_healthy
from tests.conftest import Cli
from tests.servers import free_port

pytestmark = pytest.mark.slow

INGEST = {
    "name": "e2e with Redis",
    "project": "redis",
    "source": "ingest",
    "recording_config": {
        "fps": 10,
        "width": 320,
        "height": 240,
        "quality": "medium",
        "chunk_duration_s": 0.5,
    },
}
FINAL = {"completed", "interrupted", "failed"}


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


class Frames:
    """Distinct PNG frames pushed to an ingest session through the API."""

    def __init__(self, api: httpx.Client, sid: str) -> None:
        self.api = api
        self.sid = sid
        self.count = 0
        self.base = np.random.default_rng(7).integers(0, 256, (240, 320, 3), dtype=np.uint8)

    def push(self, n: int, every: float = 0.1) -> None:
        for _ in range(n):
            frame = self.base.copy()
            i = self.count
            frame[(i * 9) % 200 : (i * 9) % 200 + 30, 20:90] = (i * 17) % 256
            body = _png(frame)
            for _attempt in range(100):  # the API answers 503 while Redis is down
                pushed = self.api.post(
                    f"/sessions/{self.sid}/frames",
                    content=body,
                    headers={"content-type": "image/png"},
                )
                if pushed.status_code != 503:
                    break
                time.sleep(0.1)
            assert pushed.status_code == 202, pushed.text
            self.count += 1
            time.sleep(every)


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout} s")


class RedisCluster:
    """storage, two processors, pipeline, recorder and API as six processes."""

    def __init__(self, tmp_path: Path, redis_url: str, prefix: str) -> None:
        self.data_dir = tmp_path / "data"
        ports = {name: free_port() for name in ("storage", "pipeline", "recorder", "api")}
        self.api_port = ports["api"]
        env = {f"LUCID_{name.upper()}_PORT": str(port) for name, port in ports.items()}
        env |= {
            "LUCID_REDIS_URL": redis_url,
            "LUCID_REDIS_PREFIX": prefix,
            "LUCID_CLAIM_TIMEOUT_S": "2",
            "LUCID_PROCESSOR_THREADS": "1",
        }
        processor_ports = [free_port(), free_port()]
        self.processors = []
        for i, port in enumerate(processor_ports):
            proc = ServeProcess(
                self.data_dir, env | {"LUCID_PROCESSOR_PORT": str(port)}, targets="processor"
            )
            proc.log = tmp_path / f"serve-processor-{i}.log"
            self.processors.append(proc)
        api_env = env | {"LUCID_PROCESSOR_PORT": str(processor_ports[1])}
        self.procs = [
            ServeProcess(self.data_dir, env, targets="storage"),
            *self.processors,
            ServeProcess(self.data_dir, env, targets="pipeline"),
            ServeProcess(self.data_dir, env, targets="recorder"),
            ServeProcess(self.data_dir, api_env, targets="api"),
        ]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> RedisCluster:
        for proc in self.procs:
            proc.start()
            if proc.targets == "storage":
                time.sleep(1.0)  # it makes the data directory and its keys
            elif proc.targets != "api":
                time.sleep(0.3)
        wait_healthy(self.base, procs=self.procs, timeout=60)
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.targets}\n{p.output()[-3000:]}" for p in self.procs)

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.base}/api/v1", timeout=30, headers=api_headers(self.data_dir)
        )


def _stored(api: httpx.Client, sid: str) -> list[int]:
    return [c["sequence"] for c in api.get(f"/sessions/{sid}/chunks").json()["items"]]


def _finish_and_check(cluster: RedisCluster, api: httpx.Client, sid: str) -> dict:
    assert api.post(f"/sessions/{sid}/stop").status_code == 200
    body: dict = {}

    def final() -> bool:
        nonlocal body
        body = api.get(f"/sessions/{sid}").json()
        return body.get("status") in FINAL

    try:
        _until(final, 90, "the session finishing")
    except AssertionError:
        raise AssertionError(f"{body}\n{cluster.logs()}") from None
    assert body["status"] == "completed", f"{body}\n{cluster.logs()}"
    sequences = _stored(api, sid)
    assert sequences == list(range(len(sequences))), sequences
    assert body["chunk_count"] == len(sequences) >= 4
    verified = api.get(f"/sessions/{sid}/verify").json()
    assert verified["ok"] and verified["chunks_checked"] == len(sequences), verified
    staged = cluster.data_dir / "staging" / sid
    assert not staged.exists() or not any(staged.iterdir())
    return body


def _busy(processors: dict) -> list[str]:
    """The processor processes that have processed at least one chunk."""
    return [k for k, v in processors.items() if k.startswith("processed:") and v > 0]


def test_two_processors_share_a_session_and_one_killed_mid_session_loses_nothing(
    tmp_path, redis_url, redis_prefix
):
    cluster = RedisCluster(tmp_path, redis_url, redis_prefix)
    try:
        cluster.start()
        with cluster.api() as api:
            created = api.post("/sessions", json=INGEST)
            assert created.status_code == 201, created.text
            sid = created.json()["session_id"]
            assert api.post(f"/sessions/{sid}/start").json()["status"] == "recording"
            frames = Frames(api, sid)
            frames.push(15)
            _until(lambda: len(_stored(api, sid)) >= 2, 30, "chunks being stored")
            # Both processors stay alive until both have taken work: they share the stream.
            shared: dict = {}
            for _ in range(20):
                frames.push(5, every=0.05)
                shared = api.get("/pipeline/status").json()["coordination"]["processors"]
                if len(_busy(shared)) == 2:
                    break
            cluster.processors[0].kill9()
            frames.push(15, every=0.05)
            _finish_and_check(cluster, api, sid)
            status = api.get("/pipeline/status").json()
        coordination = status.get("coordination") or {}
        assert coordination.get("outstanding") == 0, status
        assert len(_busy(shared)) == 2, shared
    finally:
        cluster.stop()
    _, out, _ = Cli(cluster.data_dir)("verify", sid)
    assert out.startswith(f"OK: session {sid}")


def test_redis_restarted_mid_session_the_pipeline_waits_and_loses_nothing(tmp_path, private_redis):
    cluster = RedisCluster(tmp_path, private_redis.url, "lucid-e2e:")
    try:
        cluster.start()
        with cluster.api() as api:
            sid = api.post("/sessions", json=INGEST).json()["session_id"]
            assert api.post(f"/sessions/{sid}/start").json()["status"] == "recording"
            frames = Frames(api, sid)
            frames.push(15)
            _until(lambda: len(_stored(api, sid)) >= 2, 30, "chunks being stored")
            frames.push(10, every=0.05)
            # Redis goes away with chunks in flight, and comes back empty (no persistence).
            private_redis.stop()
            time.sleep(1.5)
            private_redis.start()
            frames.push(15)
            _finish_and_check(cluster, api, sid)
        for proc in cluster.procs:
            assert proc.proc is not None and proc.proc.poll() is None, proc.output()
    finally:
        cluster.stop()
    _, out, _ = Cli(cluster.data_dir)("verify", sid)
    assert out.startswith(f"OK: session {sid}")
