"""The REST API over the real local components, for the test_api* modules.

:class:`ApiCluster` wires StorageService, ProcessorService, PipelineManager and
RecorderService over one data directory, builds the app with :func:`create_app` and
drives it with Starlette's TestClient. The components run on the TestClient's event
loop (its portal), like the app itself, so pipeline workers and requests share a loop.
"""

from __future__ import annotations

import asyncio
import functools
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

with warnings.catch_warnings():
    # Starlette 1.x suggests httpx2 for its TestClient; httpx is what the project declares.
    warnings.filterwarnings("ignore", message=".*httpx2")
    from starlette.testclient import TestClient

from tests.conftest import moving_frames

from lucid_sessions.anchoring import LocalAnchorLog
from lucid_sessions.api import ApiSettings, ServiceHealth, create_app
from lucid_sessions.api.auth import Authorizer
from lucid_sessions.archive.service import import_frames
from lucid_sessions.cluster.pipeline_manager import PipelineManager
from lucid_sessions.cluster.processor_service import ProcessorService
from lucid_sessions.cluster.recorder_service import RecorderService
from lucid_sessions.cluster.storage_service import StorageService
from lucid_sessions.manifest import Manifest
from lucid_sessions.observability import Metrics
from lucid_sessions.storage.datadir import DataDir

T = TypeVar("T")

INGEST: dict[str, Any] = {
    "name": "ingest via api",
    "source": "ingest",
    "project": "alpha",
    "environment": "test",
    "tags": ["api"],
    "recording_config": {
        "fps": 20,
        "width": 320,
        "height": 240,
        "quality": "medium",
        "chunk_duration_s": 0.5,
    },
}
RDP: dict[str, Any] = {
    "name": "rdp via api",
    "source": "rdp",
    "rdp_config": {
        "host": "rdp.example.test",
        "port": 3389,
        "username": "alice",
        "password": "Sup3r-Secret-Pa55",
        "domain": "CORP",
        "security": "nla",
    },
    "recording_config": {"fps": 10, "width": 1280, "height": 720, "quality": "high"},
}


class ApiCluster:
    """Real components + the app + a TestClient. Use as a context manager."""

    def __init__(
        self,
        path: Path,
        *,
        settings: ApiSettings | None = None,
        authorizer: Authorizer | None = None,
    ) -> None:
        self.path = path
        self.datadir = DataDir.open(path, create=True)
        self.storage = StorageService(self.datadir)
        self.processor = ProcessorService(self.datadir.master_key())
        self.metrics = Metrics()
        key = self.datadir.cluster_key()
        self.pipeline = PipelineManager(
            self.storage,
            self.processor,
            master=self.datadir.master_key(),
            signer=key,
            anchor=LocalAnchorLog(path / "anchors.jsonl", key),
            on_chunk=self.metrics.chunk_processed,
        )
        self.recorder = RecorderService(self.pipeline)
        self.pipeline.attach_recorder(self.recorder)
        self.states = {"pipeline": "running", "recorder": "running", "processor": "running"}
        checks = {name: functools.partial(self._state, name) for name in self.states}
        self.app = create_app(
            pipeline=self.pipeline,
            storage=self.storage,
            recorder=self.recorder,
            health_checks=checks,
            metrics=self.metrics,
            settings=settings,
            authorizer=authorizer,
        )
        self.client = TestClient(self.app, raise_server_exceptions=False)

    def _state(self, name: str) -> ServiceHealth:
        return ServiceHealth(self.states[name])

    def __enter__(self) -> ApiCluster:
        self.client.__enter__()
        self.run(self.pipeline.start)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.recorder.close)
            self.run(self.pipeline.close)
            self.run(self.processor.close)
        finally:
            self.client.__exit__(None, None, None)
            asyncio.run(self.datadir.close())

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run a coroutine function on the app's event loop."""
        portal = self.client.portal
        assert portal is not None
        return portal.call(functools.partial(fn, *args, **kwargs))

    def import_session(self, frames: int = 50, *, fps: int = 2, name: str = "imported") -> Manifest:
        """A finished session made of ``frames`` synthetic frames (10 s per chunk)."""
        return self.run(import_frames, self.datadir, moving_frames(frames, fps=fps), name=name)

    def create(
        self, body: dict[str, Any] | None = None, *, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        response = self.client.post("/api/v1/sessions", json=body or INGEST, headers=headers)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def wait_for(self, session_id: str, statuses: tuple[str, ...], timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            body = self.client.get(f"/api/v1/sessions/{session_id}").json()
            if body["status"] in statuses or time.monotonic() > deadline:
                return dict(body)
            time.sleep(0.05)


@pytest.fixture(name="api")
def api_fixture(tmp_path: Path) -> Iterator[ApiCluster]:
    """An :class:`ApiCluster` on a fresh data directory (import ``api_fixture``)."""
    with ApiCluster(tmp_path / "data") as cluster:
        yield cluster


@pytest.fixture(name="module_api", scope="module")
def module_api_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiCluster]:
    """One :class:`ApiCluster` shared by a module's tests (import ``module_api_fixture``)."""
    with ApiCluster(tmp_path_factory.mktemp("api") / "data") as cluster:
        yield cluster


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The common error body, with the request id echoed in the header."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details", "request_id", "timestamp"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    assert error["request_id"] == response.headers["x-request-id"]
    assert error["timestamp"].endswith("Z")
    assert "Traceback" not in response.text
    return dict(error)
