"""Retention, garbage collection with crypto-shredding, and legal hold.

Expired sessions are gone (chunks, wrapped key, record) and their tombstones verify in the
session log; a chunk copied before cannot be decrypted any more; held sessions survive gc
and every delete until the hold is lifted; a dry run changes nothing; orphans go; holds
are audited.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.conftest import Cli, moving_frames
from tests.test_api_support import ApiCluster, api_fixture, assert_error  # noqa: F401

from lucid_sessions.anchoring.session_log import (
    TOMBSTONE,
    SessionLog,
    StoredSession,
    verify_log,
)
from lucid_sessions.archive.keys import load_data_key
from lucid_sessions.archive.retention import LegalHoldError, expiry_of, set_hold
from lucid_sessions.archive.service import import_frames
from lucid_sessions.cluster.config import load_config
from lucid_sessions.cluster.storage_service import StorageService
from lucid_sessions.crypto import ClusterKey
from lucid_sessions.errors import NotFoundError
from lucid_sessions.storage.datadir import DataDir

LATER = timedelta(days=2)


def later() -> datetime:
    return datetime.now(UTC) + LATER


async def _import(datadir: DataDir, name: str, retention_days: int | None) -> str:
    manifest = await import_frames(datadir, moving_frames(6, fps=2), name=name)
    sid = manifest.session_id
    if retention_days is not None:
        session = await datadir.store.get_session(sid)
        config = {**session.config, "storage_config": {"retention_days": retention_days}}
        await datadir.store.update_session(sid, {"config": config})
    return sid


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A data directory with four finished sessions: expiring (1 day), held (1 day),
    kept long (365 days) and without retention of its own."""
    path = tmp_path / "data"

    async def make() -> dict[str, str]:
        datadir = DataDir.open(path, create=True)
        try:
            sessions = {
                "expiring": await _import(datadir, "expiring", 1),
                "held": await _import(datadir, "held", 1),
                "long": await _import(datadir, "long", 365),
                "default": await _import(datadir, "default", None),
            }
            await set_hold(datadir.store, sessions["held"], reason="case 17", by="test")
            return sessions
        finally:
            await datadir.close()

    yield path, asyncio.run(make())


async def _gc(path: Path, **kwargs):  # type: ignore[no-untyped-def]
    datadir = DataDir.open(path)
    storage = StorageService(datadir, retention_days=kwargs.pop("default_days", 0))
    try:
        return await storage.collect_garbage(now=later, **kwargs)
    finally:
        await storage.shutdown()
        await datadir.close()


def _state(path: Path) -> tuple[list[str], list[str], list[str]]:
    chunks = sorted(str(p.relative_to(path)) for p in (path / "chunks").rglob("*"))
    return chunks, *SessionLog(path).raw()


def test_expired_sessions_are_gone_and_their_tombstones_verify(rig) -> None:
    path, sessions = rig
    sid = sessions["expiring"]

    async def before() -> tuple[str, bytes]:
        datadir = DataDir.open(path)
        try:
            key_id = (await datadir.store.get_session(sid)).key_id
            assert key_id is not None
            return key_id, datadir.chunks.get(sid, 0)
        finally:
            await datadir.close()

    key_id, chunk_copy = asyncio.run(before())  # "a backup" of one chunk
    report = asyncio.run(_gc(path))
    assert [d.session_id for d in report.deleted] == [sid]
    assert [e.session_id for e in report.held] == [sessions["held"]]
    assert not report.errors

    async def after() -> None:
        datadir = DataDir.open(path)
        try:
            with pytest.raises(NotFoundError):
                await datadir.store.get_session(sid)
            with pytest.raises(NotFoundError):
                await datadir.store.get_wrapped_key(key_id)
            with pytest.raises(NotFoundError):  # crypto-shredded: the copy is ciphertext only
                await load_data_key(datadir, key_id)
            assert not (path / "chunks" / sid).exists()
            for kept in ("held", "long", "default"):
                await datadir.store.get_session(sessions[kept])
            (entry,) = (await datadir.store.list_audit(action="session.gc")).items
            assert entry.target == sid and entry.subject == "gc"
            assert entry.details["policy"] == "retention_days=1"
        finally:
            await datadir.close()

    asyncio.run(after())
    assert chunk_copy  # the copy still exists, but no key decrypts it any more
    leaves = SessionLog(path).leaves()
    (tomb,) = [leaf for leaf in leaves if leaf.kind == TOMBSTONE]
    session_leaf = next(leaf for leaf in leaves if leaf.session_id == sid)
    assert tomb.session_id == sid and tomb.reason == "retention"
    assert tomb.policy == "retention_days=1" and tomb.root
    assert tomb.manifest_sha256 == session_leaf.manifest_sha256
    assert SessionLog(path).heads()[-1].size == len(leaves)  # signed
    _, out, _ = Cli(path)("log", "verify")
    assert out.startswith("OK: session log") and "1 deleted lawfully" in out
    # a second run finds nothing more to do
    again = asyncio.run(_gc(path))
    assert not again.deleted and not again.errors and not again.orphans


def test_a_session_deleted_without_tombstone_is_still_tampering(rig) -> None:
    path, sessions = rig
    asyncio.run(_gc(path))

    async def drop() -> None:
        datadir = DataDir.open(path)
        try:
            await datadir.store.delete_session(sessions["long"])  # behind the policy's back
        finally:
            await datadir.close()

    asyncio.run(drop())
    _, out, _ = Cli(path)("log", "verify", expect=1)
    assert "deleted" in out and sessions["long"] in out and sessions["expiring"] not in out


def test_the_global_default_applies_to_sessions_without_their_own(rig, monkeypatch) -> None:
    path, sessions = rig
    monkeypatch.setenv("LUCID_RETENTION_DAYS", "1")
    assert load_config(data_dir=path).retention_days == 1
    report = asyncio.run(_gc(path, default_days=1))
    assert {d.session_id for d in report.deleted} == {sessions["expiring"], sessions["default"]}
    assert {d.policy for d in report.deleted} == {"retention_days=1"}


def test_a_dry_run_changes_nothing(rig) -> None:
    path, sessions = rig
    (path / "chunks" / "ghost_1").mkdir()
    before = _state(path)
    report = asyncio.run(_gc(path, dry_run=True, orphan_grace_s=0))
    assert [e.session_id for e in report.expired] == [sessions["expiring"]]
    assert not report.deleted and report.orphans == ["chunks/ghost_1"]
    assert _state(path) == before
    assert any("would delete" in line for line in report.lines())


def test_held_sessions_survive_gc_and_delete_until_lifted(rig) -> None:
    path, sessions = rig
    held = sessions["held"]
    report = asyncio.run(_gc(path))
    assert held not in {d.session_id for d in report.deleted}

    async def delete_by_hand() -> None:
        datadir = DataDir.open(path)
        try:
            with pytest.raises(LegalHoldError, match="legal hold"):
                await StorageService(datadir).delete_session(held)
            await datadir.store.get_session(held)
        finally:
            await datadir.close()

    asyncio.run(delete_by_hand())
    cli = Cli(path)
    _, out, _ = cli("hold", "ls")
    assert held in out and "case 17" in out
    cli("hold", "lift", held, "--reason", "case closed")
    _, out, _ = cli("hold", "ls")
    assert held not in out
    report = asyncio.run(_gc(path))
    assert [d.session_id for d in report.deleted] == [held]


def test_hold_and_lift_by_cli_are_audited(rig) -> None:
    path, sessions = rig
    sid = sessions["long"]
    cli = Cli(path)
    cli("hold", "set", sid, "--reason", "litigation 4711")
    _, out, _ = cli("hold", "ls", "--json")
    assert {json.loads(line)["session_id"] for line in out.splitlines()} == {
        sid,
        sessions["held"],
    }
    cli("hold", "lift", sid, "--reason", "released")
    _, _, err = cli("hold", "lift", sid, "--reason", "again", expect=1)
    assert "not under legal hold" in err
    _, out, _ = cli("audit", "ls", "--target", sid, "--json")
    entries = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert [(e["action"], e["outcome"]) for e in entries] == [
        ("session.hold", "success"),
        ("session.hold_lift", "success"),
        ("session.hold_lift", "failure:LUCID_ERR_3006"),
    ]
    assert all(e["subject"].startswith("cli:") for e in entries)
    assert entries[0]["details"]["reason"] == "litigation 4711"
    cli("audit", "verify")


def test_orphans_are_removed_after_the_grace_period(rig) -> None:
    path, sessions = rig
    old = time.time() - 7200
    ghost = path / "chunks" / "ghost_1"
    ghost.mkdir()
    (ghost / "00000000.chunk").write_bytes(b"x")
    stale = path / "chunks" / sessions["long"] / ".00000009.chunk.123.tmp"
    stale.write_bytes(b"partial")
    fresh = path / "chunks" / sessions["long"] / ".00000010.chunk.123.tmp"
    fresh.write_bytes(b"partial")
    staged = path / "staging" / "ghost_2"
    staged.mkdir(parents=True)
    for item in (ghost / "00000000.chunk", ghost, stale, staged):
        os.utime(item, (old, old))

    async def run():  # type: ignore[no-untyped-def]
        datadir = DataDir.open(path)
        storage = StorageService(datadir)
        try:
            return await storage.collect_garbage()  # the real clock: grace of one hour
        finally:
            await datadir.close()

    report = asyncio.run(run())
    assert sorted(report.orphans) == sorted(
        [
            "chunks/ghost_1",
            f"chunks/{sessions['long']}/.00000009.chunk.123.tmp",
            "staging/ghost_2",
        ]
    )
    assert not ghost.exists() and not stale.exists() and not staged.exists()
    assert fresh.exists()
    assert not report.deleted  # nothing expired yet with the real clock


def test_gc_cli_dry_run_and_run(rig) -> None:
    path, _ = rig
    cli = Cli(path)
    _, out, _ = cli("gc", "--dry-run", "--json")
    body = json.loads(out)
    assert body["dry_run"] is True and body["expired"] == [] and body["deleted"] == []
    _, out, _ = cli("gc")
    assert "0 sessions deleted" in out


def test_expiry_uses_the_end_time_plus_the_days(rig) -> None:
    path, sessions = rig

    async def get():  # type: ignore[no-untyped-def]
        datadir = DataDir.open(path)
        try:
            return await datadir.store.get_session(sessions["expiring"])
        finally:
            await datadir.close()

    session = asyncio.run(get())
    expiry = expiry_of(session, 0)
    assert expiry is not None and expiry.source == "session"
    ended = datetime.fromisoformat((session.ended_at or session.updated_at).replace("Z", "+00:00"))
    expires = datetime.fromisoformat(expiry.expires_at.replace("Z", "+00:00"))
    assert expires - ended == timedelta(days=1)
    assert expiry_of(session.__class__(**{**_fields(session), "status": "recording"}), 5) is None


def _fields(record: object) -> dict[str, object]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}  # type: ignore[attr-defined]


# the session log: tombstones explain a missing session, and cannot be rewritten


def test_tombstones_in_the_log_unit(tmp_path: Path) -> None:
    key = ClusterKey.generate()
    log = SessionLog(tmp_path, key)
    log.append_session("a", b"manifest-a")
    log.append_session("b", b"manifest-b")
    leaf, head = log.append_tombstone(
        "a", log.leaves()[0].manifest_sha256, "ab" * 32, reason="retention", policy="p"
    )
    assert head.size == 3 and leaf.index == 2
    assert log.append_tombstone("a", "x", "y", reason="r", policy="p")[0] == leaf  # idempotent
    public = key.public_key_bytes()
    store = [StoredSession("b", "completed", b"manifest-b")]
    report = verify_log(*log.raw(), public, store=store)
    assert report.ok and report.tombstones == 1
    # editing the tombstone (say, its policy) breaks the signed head
    leaves, heads = log.raw()
    edited = json.loads(leaves[2])
    edited["policy"] = "retention_days=0"
    report = verify_log([*leaves[:2], json.dumps(edited)], heads, public, store=store)
    assert {p.kind for p in report.problems} == {"edited"}


# the API: admin only, 409 on DELETE while held, audited


def test_the_api_sets_and_lifts_holds_and_delete_is_409_while_held(api: ApiCluster) -> None:
    sid = api.import_session(frames=6).session_id
    base = f"/api/v1/sessions/{sid}/hold"
    assert api.client.get(base).json() == {
        "session_id": sid,
        "held": False,
        "reason": None,
        "by": None,
        "at": None,
    }
    assert api.client.put(base, json={}).status_code == 422
    response = api.client.put(base, json={"reason": "subpoena 12"})
    assert response.status_code == 200, response.text
    assert response.json()["held"] is True and response.json()["reason"] == "subpoena 12"
    error = assert_error(api.client.delete(f"/api/v1/sessions/{sid}"), 409, "LUCID_ERR_3006")
    assert "legal hold" in error["message"]
    assert [h["session_id"] for h in api.client.get("/api/v1/holds").json()["items"]] == [sid]
    assert api.client.delete(base).status_code == 422  # a reason is required
    response = api.client.delete(base, params={"reason": "settled"})
    assert response.status_code == 200 and response.json()["held"] is False
    assert_error(api.client.delete(base, params={"reason": "again"}), 409, "LUCID_ERR_3006")
    assert api.client.delete(f"/api/v1/sessions/{sid}").status_code == 204
    holds = api.run(api.storage.list_audit, action="session.hold").items
    lifts = api.run(api.storage.list_audit, action="session.hold_lift").items
    assert [(e.target, e.outcome, e.details["reason"]) for e in holds] == [
        (sid, "success", "subpoena 12")
    ]
    assert [(e.outcome, e.details["reason"]) for e in lifts] == [
        ("success", "settled"),
        ("failure:LUCID_ERR_3006", "again"),
    ]
