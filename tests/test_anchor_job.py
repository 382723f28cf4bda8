"""Anchoring as a durable job: pending, retried with backoff, confirmed or failed, resumed.

The backends here stand in for a flaky network (the real ones are tested against real
nodes in test_anchor_evm.py and test_anchor_tron.py): they fail with ``Unavailable`` a
number of times, then anchor in a real local log.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import moving_frames
from tests.test_pipeline import INGEST

from lucid_sessions.anchoring import AnchorReceipt, LocalAnchorLog
from lucid_sessions.anchoring.job import AnchorJobs
from lucid_sessions.anchoring.select import anchor_for
from lucid_sessions.anchoring.settings import AnchorConfig
from lucid_sessions.api.views import session_out
from lucid_sessions.archive.service import describe_session, import_frames
from lucid_sessions.cluster.config import load_config
from lucid_sessions.cluster.interfaces import Unavailable
from lucid_sessions.cluster.pipeline_manager import PipelineManager
from lucid_sessions.cluster.processor_service import ProcessorService
from lucid_sessions.cluster.recorder_service import RecorderService
from lucid_sessions.cluster.storage_service import StorageService
from lucid_sessions.errors import InvalidConfigError
from lucid_sessions.storage.datadir import DataDir


class Flaky:
    """Fails ``failures`` times with Unavailable, then anchors in a local log."""

    chain = "local"

    def __init__(self, log: LocalAnchorLog, failures: int) -> None:
        self.log = log
        self.failures = failures
        self.calls = 0

    async def anchor(self, session_id: str, root: str) -> AnchorReceipt:
        self.calls += 1
        if self.calls <= self.failures:
            raise Unavailable(f"node unreachable (call {self.calls})")
        return await self.log.anchor(session_id, root)


class Down:
    """A chain that cannot be reached at all."""

    chain = "local"

    async def anchor(self, session_id: str, root: str) -> AnchorReceipt:
        raise Unavailable("node unreachable")


class Recorded:
    """A ``sleep`` that records each delay and the anchor state seen while waiting."""

    def __init__(self) -> None:
        self.jobs: AnchorJobs | None = None
        self.sid = ""
        self.delays: list[float] = []
        self.states: list[dict[str, Any]] = []

    async def __call__(self, seconds: float) -> None:
        assert self.jobs is not None
        self.delays.append(seconds)
        state = await self.jobs.state(self.sid)
        assert state is not None
        self.states.append(state)


async def _imported(datadir: DataDir) -> tuple[str, str]:
    manifest = await import_frames(datadir, moving_frames(12, fps=2), name="job", fps=2)
    return manifest.session_id, manifest.root


def _with_store(tmp_path: Path, scenario: Any) -> Any:
    async def run() -> Any:
        datadir = DataDir.open(tmp_path / "data", create=True)
        try:
            return await scenario(datadir)
        finally:
            await datadir.close()

    return asyncio.run(run())


def test_a_flaky_backend_is_retried_with_backoff_until_confirmed(tmp_path):
    async def scenario(datadir: DataDir) -> tuple[Recorded, dict[str, Any], str, Flaky]:
        sid, root = await _imported(datadir)
        log = LocalAnchorLog(datadir.path / "anchors.jsonl", datadir.cluster_key())
        flaky = Flaky(log, failures=3)
        sleep = Recorded()
        jobs = AnchorJobs(datadir.store, flaky, backoff_s=0.5, max_backoff_s=60, sleep=sleep)
        sleep.jobs, sleep.sid = jobs, sid
        await jobs.submit(sid, root)
        first = await jobs.state(sid)
        assert first is not None and first["state"] == "pending" and first["attempts"] == 0
        final = await jobs.wait(sid, timeout=10)
        return sleep, final, root, flaky

    sleep, final, root, flaky = _with_store(tmp_path, scenario)
    assert flaky.calls == 4
    assert sleep.delays == [0.5, 1.0, 2.0]
    assert [s["state"] for s in sleep.states] == ["pending"] * 3
    assert [s["attempts"] for s in sleep.states] == [1, 2, 3]
    assert sleep.states[2]["last_error"] == "node unreachable (call 3)"
    assert final["state"] == "confirmed"
    assert final["chain"] == "local" and final["root"] == root
    assert final["location"].endswith("anchors.jsonl")
    assert len(final["transaction"]) == 64 and final["block"] == 0
    assert final["attempts"] == 4 and final["last_error"] is None
    assert final["updated_at"]


def test_anchoring_fails_after_the_last_attempt_with_the_reason(tmp_path):
    async def scenario(datadir: DataDir) -> tuple[list[float], dict[str, Any], list[str]]:
        sid, root = await _imported(datadir)
        log = LocalAnchorLog(datadir.path / "anchors.jsonl", datadir.cluster_key())
        delays: list[float] = []

        async def sleep(seconds: float) -> None:
            delays.append(seconds)

        jobs = AnchorJobs(
            datadir.store,
            Flaky(log, failures=100),
            max_attempts=4,
            backoff_s=1.0,
            max_backoff_s=3.0,
            sleep=sleep,
        )
        await jobs.submit(sid, root)
        final = await jobs.wait(sid, timeout=10)
        lines = await describe_session(datadir, sid)
        return delays, final, lines

    delays, final, lines = _with_store(tmp_path, scenario)
    assert delays == [1.0, 2.0, 3.0]  # doubling, capped
    assert final["state"] == "failed" and final["attempts"] == 4
    assert final["last_error"] == "node unreachable (call 4)"
    assert final["transaction"] is None and final["block"] is None
    (line,) = [x for x in lines if x.startswith("anchor")]
    assert "failed on local after 4 attempts: node unreachable (call 4)" in line


def test_another_root_already_anchored_fails_at_once_without_retrying(tmp_path):
    async def scenario(datadir: DataDir) -> tuple[dict[str, Any], Flaky]:
        sid, root = await _imported(datadir)
        log = LocalAnchorLog(datadir.path / "anchors.jsonl", datadir.cluster_key())
        await log.anchor(sid, "ab" * 32)
        flaky = Flaky(log, failures=0)
        jobs = AnchorJobs(datadir.store, flaky, backoff_s=0.01)
        await jobs.submit(sid, root)
        return await jobs.wait(sid, timeout=10), flaky

    final, flaky = _with_store(tmp_path, scenario)
    assert flaky.calls == 1
    assert final["state"] == "failed" and final["attempts"] == 1
    assert "already anchored with another root" in final["last_error"]


def test_submitting_a_confirmed_root_again_changes_nothing(tmp_path):
    async def scenario(datadir: DataDir) -> tuple[dict[str, Any], dict[str, Any] | None, int]:
        sid, root = await _imported(datadir)
        log = LocalAnchorLog(datadir.path / "anchors.jsonl", datadir.cluster_key())
        flaky = Flaky(log, failures=0)
        jobs = AnchorJobs(datadir.store, flaky)
        await jobs.submit(sid, root)
        first = await jobs.wait(sid)
        await jobs.submit(sid, root)
        await asyncio.sleep(0.05)
        return first, await jobs.state(sid), flaky.calls

    first, again, calls = _with_store(tmp_path, scenario)
    assert again == first and calls == 1


class Cluster:
    """Storage, processor, pipeline and recorder in-process, with a chosen anchor."""

    def __init__(self, path: Path, anchor: Any, **kwargs: Any) -> None:
        self.datadir = DataDir.open(path, create=True)
        self.storage = StorageService(self.datadir)
        self.processor = ProcessorService(self.datadir.master_key())
        self.pipeline = PipelineManager(
            self.storage,
            self.processor,
            master=self.datadir.master_key(),
            signer=self.datadir.cluster_key(),
            anchor=anchor,
            **kwargs,
        )
        self.recorder = RecorderService(self.pipeline)
        self.pipeline.attach_recorder(self.recorder)

    async def __aenter__(self) -> Cluster:
        await self.pipeline.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.recorder.close()
        await self.pipeline.close()
        await self.processor.close()
        await self.datadir.close()


def test_a_pending_anchor_is_resumed_after_a_restart(tmp_path):
    """The chain is down while the session finishes and the process stops; the next
    pipeline over the same data directory picks the pending job up and confirms it."""
    import numpy as np

    path = tmp_path / "data"

    async def first_run() -> tuple[str, dict[str, Any]]:
        async with Cluster(path, Down(), anchor_backoff_s=3600, anchor_max_backoff_s=3600) as c:
            sid = (await c.pipeline.create_session(INGEST)).session_id
            await c.pipeline.start_session(sid)
            frame = np.zeros((240, 320, 3), dtype=np.uint8)
            for i in range(8):
                frame[i * 10 : i * 10 + 10, :40] = 255
                await c.recorder.push_frame(sid, None, frame.copy())
                await asyncio.sleep(0.05)
            await c.pipeline.stop_session(sid)
            await c.pipeline.wait_idle(sid)
            deadline = asyncio.get_running_loop().time() + 10
            while True:
                state = await c.pipeline.anchor_jobs.state(sid)
                assert state is not None
                if state["attempts"] >= 1:
                    break
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.02)
            assert c.pipeline.anchor_jobs.running == [sid]
            status = await c.pipeline.pipeline_status()
            assert status["anchoring"]["backend"] == "local"
            assert status["anchoring"]["running"] == 1
            view = session_out(await c.storage.get_session(sid))
            assert view.anchor is not None and view.anchor["state"] == "pending"
            return sid, state

    async def second_run(sid: str) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
        datadir = DataDir.open(path, create=True)
        log = LocalAnchorLog(path / "anchors.jsonl", datadir.cluster_key())
        await datadir.close()
        async with Cluster(path, log) as c:
            final = await c.pipeline.anchor_jobs.wait(sid, timeout=10)
            session = await c.storage.get_session(sid)
            return final, c.pipeline.anchor_jobs.running, session_out(session).model_dump()

    sid, pending = asyncio.run(first_run())
    assert pending["state"] == "pending" and pending["chain"] == "local"
    assert pending["attempts"] == 1 and "node unreachable" in pending["last_error"]
    final, running, view = asyncio.run(second_run(sid))
    assert final["state"] == "confirmed" and final["attempts"] == 2
    assert final["root"] == pending["root"] and final["block"] == 0
    assert running == []
    assert view["anchor"]["state"] == "confirmed"
    assert view["anchor"]["transaction"] == final["transaction"]
    entry = LocalAnchorLog(path / "anchors.jsonl", None).find(sid)  # type: ignore[arg-type]
    assert entry is not None and entry["root"] == pending["root"]


def test_the_anchor_settings_are_read_and_checked_at_once(tmp_path):
    key = tmp_path / "anchor.key"
    key.write_text("11" * 32 + "\n")
    config = load_config(
        env={
            "LUCID_ANCHOR_BACKEND": "evm",
            "LUCID_ANCHOR_URL": "https://node.example/v3/api-key-in-path",
            "LUCID_ANCHOR_CONTRACT": "0x" + "ab" * 20,
            "LUCID_ANCHOR_KEY_FILE": str(key),
            "LUCID_ANCHOR_CHAIN_ID": "31337",
            "LUCID_ANCHOR_MAX_ATTEMPTS": "5",
            "LUCID_ANCHOR_BACKOFF_S": "0.5",
        }
    )
    anchor = config.anchor
    assert (anchor.backend, anchor.chain_id, anchor.max_attempts, anchor.backoff_s) == (
        "evm",
        31337,
        5,
        0.5,
    )
    assert anchor.private_key() == ("11" * 32, str(key))
    assert "api-key-in-path" not in repr(config) and "11" * 32 not in repr(config)
    with pytest.raises(InvalidConfigError) as caught:
        load_config(
            env={
                "LUCID_ANCHOR_BACKEND": "tron",
                "LUCID_ANCHOR_KEY": "not-a-key",
                "LUCID_ANCHOR_MAX_ATTEMPTS": "0",
            }
        )
    errors = caught.value.details["errors"]
    assert "LUCID_ANCHOR_KEY is not a 32-byte hex private key" in errors
    assert "anchor backend tron needs LUCID_ANCHOR_URL" in errors
    assert "anchor backend tron needs LUCID_ANCHOR_CONTRACT" in errors
    assert any("max attempts" in e for e in errors)
    assert "not-a-key" not in caught.value.message
    with pytest.raises(InvalidConfigError, match="backend is local"):
        load_config(env={"LUCID_ANCHOR_CONTRACT": "0x" + "ab" * 20})
    toml = tmp_path / "c.toml"
    toml.write_text('[anchor]\nbackend = "evm"\nkey = "' + "22" * 32 + '"\n')
    with pytest.raises(InvalidConfigError, match="must not be in a config file") as caught:
        load_config(file=toml, env={})
    assert "22" * 32 not in caught.value.message


def test_the_local_backend_is_the_default_and_needs_no_chain_library(tmp_path):
    import subprocess
    import sys

    datadir = DataDir.open(tmp_path / "data", create=True)
    anchor = anchor_for(AnchorConfig(), datadir.path, datadir.cluster_key())
    assert isinstance(anchor, LocalAnchorLog)
    assert anchor.path == datadir.path / "anchors.jsonl"
    asyncio.run(datadir.close())
    code = (
        "import sys; from lucid_sessions.cluster import assembly; "
        "from lucid_sessions.anchoring.select import anchor_for; "
        "print(sorted(m for m in ('web3', 'tronpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
