"""The pipeline manager with real local components: state machine, chunk flow, recovery."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from lucid_sessions.anchoring import LocalAnchorLog
from lucid_sessions.archive.reader import StoredEvidence, load_manifest
from lucid_sessions.archive.verify import verify_evidence
from lucid_sessions.cluster.pipeline_manager import PipelineManager
from lucid_sessions.cluster.processor_service import ProcessorService
from lucid_sessions.cluster.recorder_service import RecorderService
from lucid_sessions.cluster.storage_service import StorageService
from lucid_sessions.errors import NotRecordingError, PipelineError
from lucid_sessions.storage.datadir import DataDir

INGEST = {
    "name": "ingest test",
    "source": "ingest",
    "recording_config": {
        "fps": 20,
        "width": 320,
        "height": 240,
        "quality": "medium",
        "chunk_duration_s": 0.5,
    },
}


class Local:
    """The four components wired in-process over one data directory."""

    def __init__(self, path: Path) -> None:
        self.datadir = DataDir.open(path, create=True)
        self.storage = StorageService(self.datadir)
        self.processor = ProcessorService(self.datadir.master_key())
        key = self.datadir.cluster_key()
        self.pipeline = PipelineManager(
            self.storage,
            self.processor,
            master=self.datadir.master_key(),
            signer=key,
            anchor=LocalAnchorLog(path / "anchors.jsonl", key),
        )
        self.recorder = RecorderService(self.pipeline)
        self.pipeline.attach_recorder(self.recorder)

    async def __aenter__(self) -> Local:
        await self.pipeline.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.recorder.close()
        await self.pipeline.close()
        await self.processor.close()
        await self.datadir.close()

    async def push_for(self, session_id: str, seconds: float, fps: int = 20) -> int:
        frames = 0
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            frame = base.copy()
            frame[frames % 200 : frames % 200 + 20, 10:60] = 255
            await self.recorder.push_frame(session_id, None, frame)
            frames += 1
            await asyncio.sleep(1 / fps)
        return frames


def _verify(datadir: DataDir, session_id: str):
    async def run():
        loaded = await load_manifest(datadir, session_id)
        return verify_evidence(StoredEvidence(datadir, loaded))

    return run()


def test_an_ingest_session_goes_through_every_state_and_verifies(tmp_path):
    async def scenario():
        async with Local(tmp_path / "data") as c:
            session = await c.pipeline.create_session(INGEST)
            assert session.status == "created"
            sid = session.session_id
            assert (await c.pipeline.start_session(sid)).status == "recording"
            await c.push_for(sid, 1.2)
            assert (await c.pipeline.pause_session(sid)).status == "paused"
            await asyncio.sleep(0.3)
            assert (await c.pipeline.resume_session(sid)).status == "recording"
            await c.push_for(sid, 1.0)
            await c.pipeline.stop_session(sid)
            await c.pipeline.wait_idle(sid)
            final = await c.storage.get_session(sid)
            report = await _verify(c.datadir, sid)
            return final, report

    final, report = asyncio.run(scenario())
    assert final.status == "completed", final.status_reason
    assert final.chunk_count >= 3
    assert final.config["anchor"]["chain"] == "local"
    assert report.ok, report.failures


def test_invalid_transitions_are_refused_with_their_error_codes(tmp_path):
    async def scenario():
        async with Local(tmp_path / "data") as c:
            sid = (await c.pipeline.create_session(INGEST)).session_id
            with pytest.raises(NotRecordingError):
                await c.pipeline.pause_session(sid)
            with pytest.raises(NotRecordingError):
                await c.pipeline.stop_session(sid)
            await c.pipeline.start_session(sid)
            with pytest.raises(PipelineError, match="cannot go to starting"):
                await c.pipeline.start_session(sid)
            with pytest.raises(PipelineError, match="stop it before deleting"):
                await c.pipeline.delete_session(sid)
            await c.pipeline.stop_session(sid)
            await c.pipeline.wait_idle(sid)
            with pytest.raises(PipelineError):
                await c.pipeline.start_session(sid)
            await c.pipeline.delete_session(sid)

    asyncio.run(scenario())


def test_sessions_left_open_by_a_dead_process_are_finalised_as_interrupted(tmp_path):
    async def crash():
        c = Local(tmp_path / "data")
        await c.pipeline.start()
        sid = (await c.pipeline.create_session(INGEST)).session_id
        await c.pipeline.start_session(sid)
        await c.push_for(sid, 1.5)
        while (await c.storage.get_session(sid)).status == "recording" and not (
            await c.storage.list_chunks(sid)
        ):
            await asyncio.sleep(0.05)
        stored = len(await c.storage.list_chunks(sid))
        await c.datadir.close()  # the process dies: nothing else runs
        return sid, stored

    sid, stored = asyncio.run(crash())
    assert stored >= 1

    async def restart():
        async with Local(tmp_path / "data") as c:
            session = await c.storage.get_session(sid)
            return session, await _verify(c.datadir, sid)

    session, report = asyncio.run(restart())
    assert session.status == "interrupted"
    assert session.chunk_count >= stored
    assert report.ok, report.failures


def test_a_finalised_session_can_no_longer_be_renamed(tmp_path):
    async def scenario():
        async with Local(tmp_path / "data") as c:
            sid = (await c.pipeline.create_session(INGEST)).session_id
            renamed = await c.pipeline.update_session(sid, {"name": "renamed"})
            assert renamed.name == "renamed"
            await c.pipeline.start_session(sid)
            await c.push_for(sid, 0.6)
            await c.pipeline.stop_session(sid)
            await c.pipeline.wait_idle(sid)
            with pytest.raises(PipelineError, match="manifest is final"):
                await c.pipeline.update_session(sid, {"name": "after the fact"})

    asyncio.run(scenario())
