"""Live checkpoints: signed tree heads while a session records, consistent with its root.

A recording through the real pipeline checkpoints every N chunks; each checkpoint is
signed, anchored and consistent with the next and with the final signed root; a bundle
carries them and ``verify`` checks them. A chunk replaced before a checkpoint (with the
manifest rebuilt and re-signed over it) or a stretch cut off after one fails verification
at that checkpoint; a crash keeps what was checkpointed verifiable.
"""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from lucid_sessions.anchoring import LocalAnchorLog
from lucid_sessions.anchoring.checkpoints import (
    Checkpointer,
    CheckpointStore,
    check_checkpoints,
    consistency_proofs,
    sign_checkpoint,
)
from lucid_sessions.archive.bundle import Bundle, export_to_file
from lucid_sessions.archive.reader import StoredEvidence, load_manifest
from lucid_sessions.archive.verify import summary_lines, verify_evidence
from lucid_sessions.cluster.config import load_config
from lucid_sessions.cluster.pipeline_manager import PipelineManager
from lucid_sessions.cluster.processor_service import ProcessorService
from lucid_sessions.cluster.recorder_service import RecorderService
from lucid_sessions.cluster.storage_service import StorageService
from lucid_sessions.crypto import ClusterKey
from lucid_sessions.errors import InvalidConfigError
from lucid_sessions.manifest import Manifest, ManifestChunk, parse_manifest, signed_message
from lucid_sessions.merkle import MerkleTree, get_hasher, verify_consistency
from lucid_sessions.storage.datadir import DataDir
from lucid_sessions.storage.metadata import ChunkRecord, SessionRecord

INGEST = {
    "name": "checkpoint test",
    "source": "ingest",
    "recording_config": {
        "fps": 20,
        "width": 320,
        "height": 240,
        "quality": "medium",
        "chunk_duration_s": 0.25,
    },
}


class Rig:
    """The pipeline with its local components, checkpointing every ``every`` chunks."""

    def __init__(self, path: Path, every: int = 2) -> None:
        self.path = path
        self.datadir = DataDir.open(path, create=True)
        self.storage = StorageService(self.datadir)
        self.processor = ProcessorService(self.datadir.master_key())
        self.key = self.datadir.cluster_key()
        self.anchors = LocalAnchorLog(path / "anchors.jsonl", self.key)
        self.pipeline = PipelineManager(
            self.storage,
            self.processor,
            master=self.datadir.master_key(),
            signer=self.key,
            anchor=self.anchors,
            evidence_dir=path,
            checkpoint_chunks=every,
            checkpoint_seconds=0,
        )
        self.recorder = RecorderService(self.pipeline)
        self.pipeline.attach_recorder(self.recorder)
        self.checkpoints = CheckpointStore(path)

    async def __aenter__(self) -> Rig:
        await self.pipeline.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.recorder.close()
        await self.pipeline.close()
        await self.processor.close()
        await self.datadir.close()

    async def push_for(self, session_id: str, seconds: float, fps: int = 20) -> None:
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        frames = 0
        while loop.time() < end:
            frame = base.copy()
            frame[frames % 200 : frames % 200 + 20, 10:60] = 255
            await self.recorder.push_frame(session_id, None, frame)
            frames += 1
            await asyncio.sleep(1 / fps)

    async def record(self, seconds: float) -> str:
        sid = (await self.pipeline.create_session(INGEST)).session_id
        await self.pipeline.start_session(sid)
        await self.push_for(sid, seconds)
        await self.pipeline.stop_session(sid)
        await self.pipeline.wait_idle(sid)
        return sid

    async def verify(self, session_id: str):
        loaded = await load_manifest(self.datadir, session_id)
        return loaded, verify_evidence(
            StoredEvidence(self.datadir, loaded), trusted_key=self.key.public_key_bytes()
        )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One session recorded for ~2.5 s in 0.25 s chunks, checkpointed every 2 chunks,
    and its bundle."""
    path = tmp_path_factory.mktemp("checkpoints") / "data"

    async def run():
        async with Rig(path) as rig:
            sid = await rig.record(2.5)
            loaded, report = await rig.verify(sid)
            bundle = path.parent / "evidence.tar"
            await export_to_file(rig.datadir, sid, bundle)
            return sid, loaded, report, rig.checkpoints.list(sid), bundle, rig.key

    return (path, *asyncio.run(run()))


def test_checkpoints_are_signed_every_n_chunks_while_recording(recorded):
    _, sid, loaded, report, checkpoints, _, key = recorded
    manifest = loaded.manifest
    assert manifest.tree_size >= 6
    assert len(checkpoints) >= 2
    sizes = [c.size for c in checkpoints]
    assert sizes == sorted(set(sizes)) and sizes[-1] <= manifest.tree_size
    for checkpoint in checkpoints:
        assert checkpoint.session_id == sid
        assert checkpoint.signature_ok(key.public_key_bytes())
        # each checkpoint's root is the root of that many leaves of the final tree
        tree = MerkleTree(get_hasher(manifest.hash_algorithm))
        tree.extend(bytes.fromhex(c.leaf_hash) for c in manifest.chunks)
        assert tree.root(checkpoint.size).hex() == checkpoint.root
    assert report.ok, report.failures
    assert report.checkpoints == len(checkpoints)
    assert any("live checkpoints: consistent" in line for line in summary_lines(report))


def test_every_checkpoint_is_anchored_under_its_own_id(recorded):
    path, sid, _, _, checkpoints, _, _ = recorded
    anchored = {
        json.loads(line)["session_id"]: json.loads(line)["root"]
        for line in (path / "anchors.jsonl").read_text().splitlines()
    }
    for checkpoint in checkpoints:
        assert anchored[f"{sid}@{checkpoint.size}"] == checkpoint.root
    assert sid in anchored  # the final root too


def test_consistency_proofs_link_each_checkpoint_to_the_next_and_to_the_root(recorded):
    _, _, loaded, _, checkpoints, _, _ = recorded
    manifest = loaded.manifest
    hasher = get_hasher(manifest.hash_algorithm)
    proofs = {
        (p["from_size"], p["to_size"]): p["proof"]
        for p in consistency_proofs(manifest, checkpoints)
    }
    for old, new in zip(checkpoints, [*checkpoints[1:], None], strict=True):
        target = (new.size, new.root) if new else (manifest.tree_size, manifest.root)
        proof = [bytes.fromhex(h) for h in proofs[(old.size, target[0])]]
        assert verify_consistency(
            hasher, old.size, target[0], bytes.fromhex(old.root), bytes.fromhex(target[1]), proof
        )
    assert check_checkpoints(manifest, checkpoints, None, ClusterKey.generate().public_key_bytes())


def test_a_bundle_carries_the_checkpoints_and_verifies(recorded):
    _, _, _, _, checkpoints, bundle_path, key = recorded
    with Bundle(bundle_path) as bundle:
        assert bundle.index["checkpoints"] == "checkpoints.json"
        assert len(bundle.checkpoints) == len(checkpoints)
        report = verify_evidence(bundle, trusted_key=key.public_key_bytes())
    assert report.ok, report.failures
    assert report.checkpoints == len(checkpoints)


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def _write(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _resign(
    manifest: Manifest, chunks: list[ManifestChunk], key: ClusterKey
) -> tuple[bytes, bytes]:
    """The manifest rebuilt over ``chunks`` with a new root, signed again with ``key``."""
    tree = MerkleTree(
        get_hasher(manifest.hash_algorithm), (bytes.fromhex(c.leaf_hash) for c in chunks)
    )
    forged = replace(manifest, chunks=tuple(chunks), tree_size=tree.size, root=tree.root().hex())
    data = forged.to_bytes()
    return data, key.sign(signed_message(data))


def _replace_chunk(members: dict[str, bytes], manifest: Manifest, sequence: int, key: ClusterKey):
    """Replace one chunk's stored bytes (last byte flipped: the header still parses) and
    rebuild, re-sign the manifest over them. Returns the new members."""
    name = f"chunks/{sequence:08d}.chunk"
    data = bytearray(members[name])
    data[-1] ^= 0xFF
    hasher = get_hasher(manifest.hash_algorithm)
    chunks = list(manifest.chunks)
    chunks[sequence] = replace(chunks[sequence], leaf_hash=hasher.leaf_hash(bytes(data)).hex())
    manifest_bytes, signature = _resign(manifest, chunks, key)
    return {
        **members,
        name: bytes(data),
        "manifest.json": manifest_bytes,
        "manifest.sig": signature,
    }


def test_a_chunk_replaced_before_a_checkpoint_fails_at_that_checkpoint(recorded, tmp_path):
    _, _, loaded, _, checkpoints, bundle_path, key = recorded
    members = _members(bundle_path)
    # a chunk inside the first checkpoint: every checkpoint covers it
    forged = tmp_path / "forged.tar"
    _write(forged, _replace_chunk(members, loaded.manifest, 0, key))
    with Bundle(forged) as bundle:
        report = verify_evidence(bundle, trusted_key=key.public_key_bytes())
    assert not report.ok
    assert {f.kind for f in report.failures} == {"checkpoint"}  # chunks and root match
    first = report.first_failure
    assert first is not None
    assert f"checkpoint 0 (size {checkpoints[0].size}" in first.message
    assert "not consistent" in first.message
    assert summary_lines(report)[0].startswith("FAILED:")
    # a chunk after the first checkpoint but before the second: only the later ones fail
    sequence = checkpoints[0].size
    _write(forged, _replace_chunk(members, loaded.manifest, sequence, key))
    with Bundle(forged) as bundle:
        report = verify_evidence(bundle, trusted_key=key.public_key_bytes())
    named = [f.message for f in report.failures]
    assert not any(m.startswith("checkpoint 0 ") for m in named)
    assert any(m.startswith(f"checkpoint 1 (size {checkpoints[1].size}") for m in named)


def test_a_chunk_replaced_in_the_data_directory_fails_at_the_checkpoint(recorded, tmp_path):
    """The same rewrite in the store itself (chunk file and manifest row replaced)."""
    import shutil

    path, sid, loaded, _, checkpoints, _, key = recorded
    copy = tmp_path / "data"
    shutil.copytree(path, copy)
    chunk = copy / "chunks" / sid / f"{1:08d}.chunk"
    members = {f"chunks/{1:08d}.chunk": chunk.read_bytes()}
    forged = _replace_chunk(members, loaded.manifest, 1, key)
    chunk.write_bytes(forged[f"chunks/{1:08d}.chunk"])
    with sqlite3.connect(copy / "metadata.db") as db:
        db.execute(
            "UPDATE manifests SET manifest = ?, signature = ? WHERE session_id = ?",
            (forged["manifest.json"], forged["manifest.sig"], sid),
        )

    async def run():
        datadir = DataDir.open(copy)
        try:
            loaded2 = await load_manifest(datadir, sid)
            return verify_evidence(
                StoredEvidence(datadir, loaded2), trusted_key=key.public_key_bytes()
            )
        finally:
            await datadir.close()

    report = asyncio.run(run())
    assert {f.kind for f in report.failures} == {"checkpoint"}
    assert report.first_failure is not None
    assert report.first_failure.message.startswith(f"checkpoint 0 (size {checkpoints[0].size}")


def test_a_stretch_cut_off_after_a_checkpoint_fails(recorded, tmp_path):
    _, _, loaded, _, checkpoints, bundle_path, key = recorded
    manifest = loaded.manifest
    keep = checkpoints[-1].size - 1
    manifest_bytes, signature = _resign(manifest, list(manifest.chunks[:keep]), key)
    members = {
        name: data
        for name, data in _members(bundle_path).items()
        if not name.startswith("chunks/") or int(name[7:15]) < keep
    }
    index = json.loads(members["lucid-bundle.json"])
    index["chunks"] = list(range(keep))
    members.update(
        {
            "lucid-bundle.json": json.dumps(index).encode(),
            "manifest.json": manifest_bytes,
            "manifest.sig": signature,
        }
    )
    forged = tmp_path / "cut.tar"
    _write(forged, members)
    with Bundle(forged) as bundle:
        report = verify_evidence(bundle, trusted_key=key.public_key_bytes())
    last = len(checkpoints) - 1
    assert any(
        f.message.startswith(f"checkpoint {last} ") and "cut off" in f.message
        for f in report.failures
    ), report.failures


def test_a_checkpoint_signed_by_another_key_or_edited_is_named(recorded):
    _, sid, loaded, _, checkpoints, _, key = recorded
    manifest = loaded.manifest
    other = ClusterKey.generate()
    stranger = sign_checkpoint(
        other, sid, checkpoints[0].size, checkpoints[0].root, manifest.hash_algorithm
    )
    edited = replace(checkpoints[1], root="00" * 32).to_dict()
    problems = check_checkpoints(
        manifest, [stranger, edited, *checkpoints[2:]], None, key.public_key_bytes()
    )
    assert problems[0].startswith("checkpoint 0 ") and "signature" in problems[0]
    assert problems[1].startswith("checkpoint 1 ") and "signature" in problems[1]
    assert check_checkpoints(manifest, ["not json"], None, key.public_key_bytes())[0].startswith(
        "checkpoint 0: malformed"
    )


def test_a_crash_mid_session_keeps_the_checkpoints_valid(tmp_path):
    path = tmp_path / "data"

    async def crash():
        rig = Rig(path)
        await rig.pipeline.start()
        sid = (await rig.pipeline.create_session(INGEST)).session_id
        await rig.pipeline.start_session(sid)
        await rig.push_for(sid, 1.5)
        for _ in range(100):
            if rig.checkpoints.list(sid):
                break
            await asyncio.sleep(0.05)
        checkpoints = rig.checkpoints.list(sid)
        await rig.datadir.close()  # the process dies: no finalisation
        return sid, checkpoints

    sid, before = asyncio.run(crash())
    assert before, "no checkpoint was made before the crash"

    async def restart():
        async with Rig(path) as rig:  # recovers the session as interrupted
            session = await rig.storage.get_session(sid)
            loaded, report = await rig.verify(sid)
            return session, loaded, report, rig.checkpoints.list(sid)

    session, loaded, report, after = asyncio.run(restart())
    assert session.status == "interrupted"
    assert after[: len(before)] == before
    assert loaded.manifest.tree_size >= before[-1].size  # nothing checkpointed was lost
    assert report.ok, report.failures
    assert report.checkpoints == len(after)


# the trigger, without a pipeline


class _Chunks:
    def __init__(self, sequences: list[int]) -> None:
        self.sequences = sequences

    async def get_session(self, session_id: str) -> SessionRecord:
        return SessionRecord(session_id, "n", "recording", "t", "t")

    async def list_chunks(self, session_id: str) -> list[ChunkRecord]:
        hasher = get_hasher("blake3")
        return [
            ChunkRecord(
                session_id,
                s,
                0,
                0,
                1,
                1,
                0,
                1,
                1,
                1,
                1,
                1,
                hasher.leaf_hash(bytes([s])).hex(),
                3,
                "t",
            )
            for s in sorted(self.sequences)
        ]


def test_a_checkpoint_covers_stored_chunks_only_up_to_the_first_gap(tmp_path):
    chunks = _Chunks([0, 1, 3, 4])
    key = ClusterKey.generate()
    store = CheckpointStore(tmp_path)
    checkpointer = Checkpointer(chunks, key, None, store, every_chunks=4, every_seconds=0)

    async def run():
        for _ in range(4):
            checkpointer.stored("ses_gap")
        await checkpointer.finish("ses_gap")
        first = store.list("ses_gap")
        chunks.sequences.append(2)
        assert await checkpointer.checkpoint("ses_gap") is not None
        assert await checkpointer.checkpoint("ses_gap") is None  # nothing new
        return first, store.list("ses_gap")

    first, both = asyncio.run(run())
    assert [c.size for c in first] == [2]
    assert [c.size for c in both] == [2, 5]


def test_the_time_trigger_checkpoints_after_the_interval(tmp_path):
    store = CheckpointStore(tmp_path)
    checkpointer = Checkpointer(
        _Chunks([0, 1]), ClusterKey.generate(), None, store, every_chunks=0, every_seconds=0.05
    )

    async def run():
        checkpointer.stored("ses_time")  # not due yet
        await asyncio.sleep(0.1)
        checkpointer.stored("ses_time")
        await checkpointer.finish("ses_time")

    asyncio.run(run())
    assert [c.size for c in store.list("ses_time")] == [2]


def test_checkpoint_settings_come_from_the_environment_and_toml(tmp_path):
    config = load_config(env={"LUCID_CHECKPOINT_CHUNKS": "25", "LUCID_CHECKPOINT_SECONDS": "30"})
    assert (config.checkpoint_chunks, config.checkpoint_seconds) == (25, 30.0)
    toml = tmp_path / "c.toml"
    toml.write_text("[pipeline]\ncheckpoint_chunks = 0\ncheckpoint_seconds = 5\n")
    config = load_config(file=toml, env={})
    assert (config.checkpoint_chunks, config.checkpoint_seconds) == (0, 5.0)
    assert (load_config(env={}).checkpoint_chunks, load_config(env={}).checkpoint_seconds) == (
        10,
        60.0,
    )
    with pytest.raises(InvalidConfigError, match=r"chunks must be an integer.*checkpoint seconds"):
        load_config(env={"LUCID_CHECKPOINT_CHUNKS": "many", "LUCID_CHECKPOINT_SECONDS": "-1"})


def test_verify_names_nothing_when_a_session_has_no_checkpoints(recorded):
    """A session recorded without checkpoints (or an imported one) verifies as before."""
    _, _, loaded, _, _, _, key = recorded
    assert parse_manifest(loaded.data).session_id == loaded.manifest.session_id
    assert check_checkpoints(loaded.manifest, [], None, key.public_key_bytes()) == []


def test_checkpoints_follow_chunks_stored_through_redis(tmp_path, redis_url, redis_prefix):
    """The coordinated flow (processors in other processes): a chunk counts when the
    coordinator reports it stored, and checkpoints are made from there too."""
    from tests import test_coordination as coordination

    async def scenario():
        rig = coordination.Rig(tmp_path / "data", redis_url, redis_prefix)
        key = rig.datadir.cluster_key()
        rig.pipeline = PipelineManager(
            rig.storage,
            None,
            master=rig.master,
            signer=key,
            anchor=LocalAnchorLog(tmp_path / "data" / "anchors.jsonl", key),
            coordinator=rig.coordinator,
            evidence_dir=tmp_path / "data",
            checkpoint_chunks=2,
            checkpoint_seconds=0,
        )
        rig.recorder = RecorderService(rig.pipeline)
        rig.pipeline.attach_recorder(rig.recorder)
        async with rig:
            await rig.consumer("proc-a")
            sid = (await rig.pipeline.create_session(INGEST)).session_id
            await rig.pipeline.start_session(sid)
            await rig.push_for(sid, 2.0)
            final, _, report = await rig.finish(sid)
            return final, report, CheckpointStore(tmp_path / "data").list(sid)

    final, report, checkpoints = asyncio.run(scenario())
    assert final.status == "completed", final.status_reason
    assert len(checkpoints) >= 2
    assert report.ok, report.failures
    assert report.checkpoints == len(checkpoints)


def test_a_bundle_exported_through_the_api_carries_the_checkpoints(recorded, tmp_path):
    """The API's export streams from the Storage component; with the data directory at
    hand (every served process has it) the checkpoints go in too."""
    import httpx

    from lucid_sessions.api import ApiSettings, create_app

    path, sid, _, _, checkpoints, _, key = recorded
    out = tmp_path / "api.tar"

    async def run() -> None:
        datadir = DataDir.open(path)
        try:
            storage = StorageService(datadir)
            app = create_app(
                pipeline=cast(Any, None),
                storage=storage,
                settings=ApiSettings(evidence_dir=path),
            )
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                response = await client.get(f"/api/v1/sessions/{sid}/export")
                assert response.status_code == 200, response.text
                out.write_bytes(response.content)
        finally:
            await datadir.close()

    asyncio.run(run())
    with Bundle(out) as bundle:
        assert len(bundle.checkpoints) == len(checkpoints)
        report = verify_evidence(bundle, trusted_key=key.public_key_bytes())
    assert report.ok, report.failures
    assert report.checkpoints == len(checkpoints)


def test_a_session_deleted_by_hand_gets_a_tombstone_and_the_log_verifies(tmp_path):
    """A deletion through the pipeline (the API's DELETE, the CLI) is lawful and provable:
    the session log explains the missing session with a signed tombstone."""
    from tests.conftest import Cli

    path = tmp_path / "data"

    async def run() -> str:
        async with Rig(path) as rig:
            sid = await rig.record(0.6)
            await rig.pipeline.delete_session(sid)
            return sid

    sid = asyncio.run(run())
    assert not (path / "chunks" / sid).exists()
    _, out, _ = Cli(path)("log", "verify")
    assert out.startswith("OK") and "1 deleted lawfully (tombstones)" in out, out
    leaves = (path / "log" / "leaves.jsonl").read_text()
    assert '"kind":"tombstone"' in leaves.replace(" ", "") and "deleted by hand" in leaves
