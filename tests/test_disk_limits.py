"""Size limits, the free-space reserve and a full disk, on a real size-limited tmpfs.

The disk-full and reserve tests mount a small tmpfs (root only; skipped otherwise) over
the data directory's ``chunks`` folder, so chunk writes really fail with ENOSPC while the
metadata (SQLite) stays on the ordinary disk; nothing mocks the write.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lucid_sessions.anchoring import LocalAnchorLog
from lucid_sessions.api.errors import status_for
from lucid_sessions.archive.reader import StoredEvidence, load_manifest
from lucid_sessions.archive.verify import verify_evidence
from lucid_sessions.cluster.config import load_config
from lucid_sessions.cluster.pipeline_manager import PipelineManager
from lucid_sessions.cluster.processor_service import ProcessorService
from lucid_sessions.cluster.recorder_service import RecorderService
from lucid_sessions.cluster.storage_service import StorageService
from lucid_sessions.errors import InvalidConfigError, LucidError, StorageError
from lucid_sessions.observability import DEFAULT_STORAGE_RESERVE_BYTES, Metrics
from lucid_sessions.storage.datadir import DataDir

W, H = 160, 120


def spec(name: str, **storage: object) -> dict[str, object]:
    return {
        "name": name,
        "source": "ingest",
        "recording_config": {
            "fps": 20,
            "width": W,
            "height": H,
            "quality": "medium",
            "chunk_duration_s": 0.5,
        },
        "storage_config": dict(storage),
    }


class Local:
    """The four components in-process over one data directory, with metrics."""

    def __init__(self, path: Path, *, reserve: int = 0) -> None:
        self.datadir = DataDir.open(path, create=True)
        self.storage = StorageService(self.datadir)
        self.processor = ProcessorService(self.datadir.master_key())
        self.metrics = Metrics(reserve_bytes=reserve)
        key = self.datadir.cluster_key()
        self.pipeline = PipelineManager(
            self.storage,
            self.processor,
            master=self.datadir.master_key(),
            signer=key,
            anchor=LocalAnchorLog(path / "anchors.jsonl", key),
            on_chunk=self.metrics.chunk_processed,
            on_storage_error=self.metrics.storage_write_error,
            storage_reserve_bytes=reserve,
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

    async def record(self, sid: str, *, noisy: bool, seconds: float, until_stopped: bool) -> int:
        """Push frames for ``seconds`` (or until the pipeline stops the recording)."""
        rng = np.random.default_rng(1)
        base = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        frames = 0
        while loop.time() < end:
            if until_stopped and (await self.storage.get_session(sid)).status != "recording":
                break
            if noisy:  # incompressible: fills the disk fast
                frame = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            else:
                frame = base.copy()
                frame[frames % 100 : frames % 100 + 20, 10:60] = 255
            try:
                await self.recorder.push_frame(sid, None, frame)
            except LucidError:
                break  # the recording ended
            frames += 1
            await asyncio.sleep(0.05)
        return frames

    async def verify(self, sid: str):
        loaded = await load_manifest(self.datadir, sid)
        return verify_evidence(StoredEvidence(self.datadir, loaded))


def errors_counted(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value("lucid_storage_write_errors_total", {"errno": name})
    return value or 0.0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A data directory whose ``chunks`` folder is a 3 MiB tmpfs: (data dir, mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("mount/umount are not installed")
    data = tmp_path / "data"
    asyncio.run(DataDir.open(data, create=True).close())  # the layout, chunks/ included
    chunks = data / "chunks"
    chunks.mkdir(exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m,mode=0755", "tmpfs", str(chunks)],
        capture_output=True,
        text=True,
        timeout=15,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield data, chunks
    finally:
        result = subprocess.run(["umount", str(chunks)], capture_output=True, timeout=15)
        if result.returncode != 0:
            subprocess.run(["umount", "-l", str(chunks)], capture_output=True, timeout=15)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_the_disk_full_run_keeps_every_complete_chunk(small_disk):
    data, chunks = small_disk

    async def scenario():
        async with Local(data) as c:
            # Earlier evidence on the same disk: a short, well-compressing session.
            before = (await c.pipeline.create_session(spec("before"))).session_id
            await c.pipeline.start_session(before)
            await c.record(before, noisy=False, seconds=1.2, until_stopped=False)
            await c.pipeline.stop_session(before)
            await c.pipeline.wait_idle(before)
            earlier = _files(chunks / before)
            assert earlier, "the first session stored nothing"

            sid = (await c.pipeline.create_session(spec("fills the disk"))).session_id
            await c.pipeline.start_session(sid)
            await c.record(sid, noisy=True, seconds=40, until_stopped=True)
            await c.pipeline.wait_idle(sid, timeout=60)
            session = await c.storage.get_session(sid)
            records = await c.storage.list_chunks(sid)
            return (
                c,
                before,
                earlier,
                sid,
                session,
                records,
                await c.verify(sid),
                await c.verify(before),
            )

    c, before, earlier, sid, session, records, report, report_before = asyncio.run(scenario())
    # the session stopped, finalised with a reason naming the disk error
    assert session.status == "interrupted", (session.status, session.status_reason)
    assert "ENOSPC" in (session.status_reason or ""), session.status_reason
    assert "disk error" in session.status_reason
    # reported: a counter per errno (and the pipeline's own counter)
    assert errors_counted(c.metrics, "ENOSPC") >= 1
    assert c.pipeline.counters["write_errors"] >= 1
    # every chunk file present is a recorded, complete chunk; the tree verifies
    stored = sorted(p.name for p in (chunks / sid).iterdir())
    assert stored == [f"{r.sequence:08d}.chunk" for r in records]
    for r in records:
        assert (chunks / sid / f"{r.sequence:08d}.chunk").stat().st_size == r.stored_size
    assert records, "nothing was stored before the disk filled"
    assert session.chunk_count == len(records)
    assert report.ok, report.failures
    # no temporary files anywhere on the full disk
    assert not [p for p in chunks.rglob("*") if p.name.endswith(".tmp")]
    # what was stored before is untouched and still verifies
    assert _files(chunks / before) == earlier
    assert report_before.ok, report_before.failures


def test_a_session_stops_at_its_size_limit(tmp_path):
    async def scenario():
        async with Local(tmp_path / "data") as c:
            sid = (await c.pipeline.create_session(spec("tiny", max_size_gb=0.00001))).session_id
            await c.pipeline.start_session(sid)
            await c.record(sid, noisy=False, seconds=15, until_stopped=True)
            await c.pipeline.wait_idle(sid, timeout=30)
            return await c.storage.get_session(sid), await c.verify(sid)

    session, report = asyncio.run(scenario())
    assert session.status == "interrupted"
    assert session.status_reason.startswith("stopped by its size limit (max_size_gb=1e-05)")
    assert session.chunk_count >= 1
    assert report.ok, report.failures


def test_below_the_reserve_new_recordings_are_refused_and_running_ones_stop(small_disk):
    data, chunks = small_disk
    free = shutil.disk_usage(chunks).free

    async def scenario():
        async with Local(data, reserve=free + 1024**2) as c:
            sid = (await c.pipeline.create_session(spec("refused"))).session_id
            with pytest.raises(StorageError) as refused:
                await c.pipeline.start_session(sid)
            assert (await c.storage.get_session(sid)).status == "created"

            c.pipeline.storage_reserve_bytes = 0  # room again: it records
            await c.pipeline.start_session(sid)
            await c.record(sid, noisy=False, seconds=0.8, until_stopped=False)
            c.pipeline.storage_reserve_bytes = free + 1024**2  # the disk "fills up"
            await c.record(sid, noisy=False, seconds=15, until_stopped=True)
            await c.pipeline.wait_idle(sid, timeout=30)
            return refused.value, await c.storage.get_session(sid), await c.verify(sid)

    error, session, report = asyncio.run(scenario())
    assert status_for(error) == 507
    assert "less than its reserve" in error.message
    assert error.details["reserve_bytes"] == free + 1024**2
    assert error.details["free_bytes"] <= free
    assert session.status == "interrupted"
    assert session.status_reason.startswith("storage below its free-space reserve")
    assert report.ok, report.failures


def test_the_reserve_is_a_cluster_setting_and_the_metric_follows_it():
    assert load_config(env={}).storage_reserve_bytes == DEFAULT_STORAGE_RESERVE_BYTES
    config = load_config(env={"LUCID_STORAGE_RESERVE_BYTES": "1048576"})
    assert config.storage_reserve_bytes == 1048576
    assert load_config(env={"LUCID_STORAGE_RESERVE_BYTES": "0"}).storage_reserve_bytes == 0
    with pytest.raises(InvalidConfigError, match="storage reserve bytes"):
        load_config(env={"LUCID_STORAGE_RESERVE_BYTES": "lots"})
    metrics = Metrics(reserve_bytes=config.storage_reserve_bytes)
    assert metrics.registry.get_sample_value("lucid_storage_reserve_bytes") == 1048576
    assert errors_counted(metrics, "EIO") == 0
