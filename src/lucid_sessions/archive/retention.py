"""End of life: retention, garbage collection with crypto-shredding, and legal hold.

Retention
    A finished session (``completed``, ``interrupted`` or ``failed``) expires
    ``retention_days`` after it finished (its ``ended_at``, else its last update). The days
    are the session's own (``config["storage_config"]["retention_days"]``, set at
    creation) or else the cluster default (``LUCID_RETENTION_DAYS``; 0 or unset keeps
    forever). Sessions still open never expire.

Garbage collection (:func:`collect_garbage`; the storage component runs it every
``LUCID_GC_INTERVAL_S`` seconds and ``lucid-sessions gc`` on demand)
    For every expired session that is not under legal hold, in this order:

    1. a signed **tombstone** is appended to the cross-session log
       (:mod:`lucid_sessions.anchoring.session_log`): session id, manifest hash, Merkle
       root, time, reason ``retention`` and policy ``retention_days=N``; ``log verify``
       then accepts the session's absence from the store, while a session missing without
       a tombstone stays ``deleted`` (tampering);
    2. the session's record is deleted from the metadata store together with its
       **wrapped data key**, manifest and chunk records (one transaction in SQLite). The
       data key existed nowhere else, so any copy of the chunks (a backup) can no longer
       be decrypted: crypto-shredding;
    3. its chunk files and staged chunks are removed;
    4. an audit entry ``session.gc`` (subject ``gc``) is appended.

    A crash between steps leaves a state the next run finishes: a tombstone is appended
    once per session (idempotent), and chunk folders without a session are orphans.

    **Orphans** are removed too: chunk and staging folders of sessions the store does not
    know, and temporary files (``*.tmp``, ``.*.tmp``, from a crash during an atomic write)
    under ``chunks/`` and ``staging/``, each only when older than a grace period
    (default one hour), so that work in progress is never touched.

    A dry run reports what would go and changes nothing.

Legal hold
    ``config["legal_hold"] = {"reason", "by", "at"}`` on the session record. A held
    session is skipped by garbage collection and refused by every delete (API 409,
    ``LUCID_ERR_3006``; CLI error) until the hold is lifted. Set and lift by the API
    (``PUT``/``DELETE /api/v1/sessions/{id}/hold``, permission ``sessions:hold``, admin
    only) or ``lucid-sessions hold set|lift``, always with a reason; every change is in
    the audit log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lucid_sessions.anchoring.session_log import SessionLog, manifest_sha256
from lucid_sessions.audit import MAX_TEXT, AuditEvent
from lucid_sessions.errors import InvalidConfigError, LucidError, NotFoundError, PipelineError
from lucid_sessions.storage.chunk_store import check_id
from lucid_sessions.storage.metadata import SessionRecord, utc_now

if TYPE_CHECKING:
    from lucid_sessions.cluster.storage_service import StorageService

__all__ = [
    "DEFAULT_ORPHAN_GRACE_S",
    "FINISHED",
    "HOLD_KEY",
    "Expiry",
    "GcReport",
    "LegalHoldError",
    "check_not_held",
    "collect_garbage",
    "expiry_of",
    "hold_of",
    "lift_hold",
    "list_holds",
    "set_hold",
]

log = logging.getLogger(__name__)

HOLD_KEY = "legal_hold"
FINISHED = ("completed", "interrupted", "failed")
DEFAULT_ORPHAN_GRACE_S = 3600.0
REASON = "retention"
GC_SUBJECT = "gc"
_PAGE = 500
_SCANNED = ("chunks", "staging")

Clock = Callable[[], datetime]


def _utc(now: Clock | None) -> datetime:
    return (now or (lambda: datetime.now(UTC)))()


class LegalHoldError(PipelineError):
    """The session is under legal hold: it cannot be deleted until the hold is lifted."""


# legal hold


def hold_of(session: SessionRecord) -> Mapping[str, Any] | None:
    """The session's legal hold (``reason``, ``by``, ``at``), or None."""
    hold = session.config.get(HOLD_KEY) if isinstance(session.config, Mapping) else None
    return hold if isinstance(hold, Mapping) else None


def check_not_held(session: SessionRecord) -> None:
    """Raise :class:`LegalHoldError` when the session is under legal hold."""
    hold = hold_of(session)
    if hold is not None:
        raise LegalHoldError(
            f"session {session.session_id} is under legal hold ({hold.get('reason', '')!s}, "
            f"set by {hold.get('by', '?')!s} at {hold.get('at', '?')!s}): lift the hold "
            "before deleting it",
            details={"legal_hold": dict(hold)},
        )


def _reason(reason: str) -> str:
    text = reason.strip() if isinstance(reason, str) else ""
    if not text or len(text) > MAX_TEXT:
        raise InvalidConfigError(
            f"a legal hold needs a reason of 1-{MAX_TEXT} characters",
            details={"field": "reason"},
        )
    return text


async def set_hold(
    storage: Any, session_id: str, *, reason: str, by: str, at: str | None = None
) -> SessionRecord:
    """Put the session under legal hold (again: the new reason replaces the old one)."""
    text = _reason(reason)
    session = await storage.get_session(session_id)
    hold = {"reason": text, "by": by, "at": at or utc_now()}
    config = {**session.config, HOLD_KEY: hold}
    record: SessionRecord = await storage.update_session(session_id, {"config": config})
    return record


async def lift_hold(
    storage: Any, session_id: str, *, reason: str
) -> tuple[SessionRecord, Mapping[str, Any]]:
    """Lift the session's legal hold; returns the session and the hold that was lifted.
    PipelineError (409) when the session is not held."""
    _reason(reason)
    session = await storage.get_session(session_id)
    hold = hold_of(session)
    if hold is None:
        raise PipelineError(f"session {session_id} is not under legal hold")
    config = {k: v for k, v in session.config.items() if k != HOLD_KEY}
    record: SessionRecord = await storage.update_session(session_id, {"config": config})
    return record, hold


async def _all_sessions(storage: Any) -> list[SessionRecord]:
    found: list[SessionRecord] = []
    offset = 0
    while True:
        page = await storage.list_sessions(limit=_PAGE, offset=offset)
        found.extend(page.items)
        if not page.has_next or not page.items:
            return found
        offset += len(page.items)


async def list_holds(storage: Any) -> list[SessionRecord]:
    """Every session under legal hold, in the store's order."""
    return [s for s in await _all_sessions(storage) if hold_of(s) is not None]


# retention


@dataclass(frozen=True, slots=True)
class Expiry:
    session_id: str
    status: str
    finished_at: str
    expires_at: str
    days: int
    source: str
    """``session`` (its own storage_config) or ``default`` (the cluster's)."""

    @property
    def policy(self) -> str:
        return f"retention_days={self.days}"


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def retention_of(session: SessionRecord, default_days: int) -> tuple[int, str] | None:
    """The days a session is kept after it finished and where they come from, or None
    to keep it forever."""
    storage_config = session.config.get("storage_config")
    days = storage_config.get("retention_days") if isinstance(storage_config, Mapping) else None
    if isinstance(days, int) and not isinstance(days, bool) and days > 0:
        return days, "session"
    if default_days > 0:
        return default_days, "default"
    return None


def expiry_of(session: SessionRecord, default_days: int) -> Expiry | None:
    """When the session expires (None: it is open, or kept forever)."""
    if session.status not in FINISHED:
        return None
    retention = retention_of(session, default_days)
    if retention is None:
        return None
    days, source = retention
    finished = session.ended_at or session.updated_at
    try:
        expires = _parse_time(finished) + timedelta(days=days)
    except ValueError:
        log.warning("session %s: unreadable end time %r", session.session_id, finished)
        return None
    return Expiry(session.session_id, session.status, finished, _iso(expires), days, source)


# garbage collection


@dataclass(frozen=True, slots=True)
class Deleted:
    session_id: str
    policy: str
    tombstone_index: int
    head_size: int
    chunk_files: int


@dataclass(slots=True)
class GcReport:
    dry_run: bool
    time: str
    expired: list[Expiry] = field(default_factory=list)
    """Expired sessions not under hold: deleted (or, in a dry run, to be deleted)."""
    deleted: list[Deleted] = field(default_factory=list)
    held: list[Expiry] = field(default_factory=list)
    """Expired sessions kept because they are under legal hold."""
    orphans: list[str] = field(default_factory=list)
    """Paths (relative to the data directory) removed, or to be removed."""
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "time": self.time,
            "expired": [
                {
                    "session_id": e.session_id,
                    "status": e.status,
                    "finished_at": e.finished_at,
                    "expires_at": e.expires_at,
                    "policy": e.policy,
                    "source": e.source,
                }
                for e in self.expired
            ],
            "deleted": [
                {
                    "session_id": d.session_id,
                    "policy": d.policy,
                    "tombstone_index": d.tombstone_index,
                    "head_size": d.head_size,
                    "chunk_files": d.chunk_files,
                }
                for d in self.deleted
            ],
            "held": [e.session_id for e in self.held],
            "orphans": list(self.orphans),
            "errors": list(self.errors),
        }

    def lines(self) -> list[str]:
        verb = "would delete" if self.dry_run else "deleted"
        out: list[str] = []
        if self.dry_run:
            out += [
                f"{verb} {e.session_id} ({e.policy}, expired {e.expires_at})" for e in self.expired
            ]
        else:
            out += [
                f"{verb} {d.session_id} ({d.policy}; tombstone leaf {d.tombstone_index}, "
                f"log head size {d.head_size}; {d.chunk_files} chunk files)"
                for d in self.deleted
            ]
        out += [
            f"kept {e.session_id}: under legal hold (expired {e.expires_at})" for e in self.held
        ]
        orphan_verb = "would remove" if self.dry_run else "removed"
        out += [f"{orphan_verb} orphan {path}" for path in self.orphans]
        out += [f"error: {message}" for message in self.errors]
        count = len(self.expired) if self.dry_run else len(self.deleted)
        out.append(
            f"{'dry run: ' if self.dry_run else ''}{count} sessions {verb}, {len(self.held)} "
            f"held, {len(self.orphans)} orphans {orphan_verb}"
        )
        return out


async def collect_garbage(
    service: StorageService,
    *,
    default_days: int = 0,
    dry_run: bool = False,
    now: Clock | None = None,
    orphan_grace_s: float = DEFAULT_ORPHAN_GRACE_S,
) -> GcReport:
    """Delete expired sessions (tombstone, key, chunks), skip held ones, remove orphans;
    see the module. Failures for one session are reported and do not stop the others."""
    moment = _utc(now)
    report = GcReport(dry_run=dry_run, time=_iso(moment))
    sessions = await _all_sessions(service.metadata)
    known = {s.session_id for s in sessions}
    for session in sessions:
        expiry = expiry_of(session, default_days)
        if expiry is None or _parse_time(expiry.expires_at) > moment:
            continue
        if hold_of(session) is not None:
            report.held.append(expiry)
            continue
        report.expired.append(expiry)
        if dry_run:
            continue
        try:
            deleted = await _delete_expired(service, expiry)
        except (LucidError, OSError) as exc:  # also: deleted or held meanwhile
            report.errors.append(f"session {expiry.session_id}: {exc}")
            log.error("gc of session %s failed: %s", expiry.session_id, exc)
            continue
        if deleted is not None:
            report.deleted.append(deleted)
    removed_now = {d.session_id for d in report.deleted}
    # An empty store next to chunk folders is more likely the wrong store (the CLI
    # without LUCID_MONGODB_URI) than a cluster whose every session is an orphan.
    folders_kept = not known
    report.orphans = await asyncio.to_thread(
        _orphans,
        service.datadir.path,
        known - removed_now,
        moment.timestamp() - orphan_grace_s,
        dry_run,
        folders_kept,
    )
    if folders_kept and await asyncio.to_thread(_has_session_folders, service.datadir.path):
        report.errors.append(
            "the metadata store holds no session: session folders were left alone "
            "(is this the cluster's store? set LUCID_MONGODB_URI for MongoDB)"
        )
    log.info(
        "gc done dry_run=%s deleted=%d held=%d orphans=%d errors=%d",
        dry_run,
        len(report.deleted),
        len(report.held),
        len(report.orphans),
        len(report.errors),
    )
    return report


async def _delete_expired(service: StorageService, expiry: Expiry) -> Deleted | None:
    sid = expiry.session_id
    session = await service.metadata.get_session(sid)  # again: a hold may have been set
    check_not_held(session)
    try:
        digest = manifest_sha256((await service.metadata.get_manifest(sid)).manifest)
    except NotFoundError:
        digest = ""  # a session that failed before it had a manifest
    signer = await service.signer()
    session_log = SessionLog(service.datadir.path, signer)
    # 1. the tombstone, in a signed head, before anything is destroyed
    leaf, head = await asyncio.to_thread(
        session_log.append_tombstone,
        sid,
        digest,
        session.root or "",
        reason=REASON,
        policy=expiry.policy,
    )
    # 2. the wrapped data key (crypto-shredding), with the record, manifest, chunk records
    await service.metadata.delete_session(sid)
    # 3. the chunk files and staged chunks
    files = await asyncio.to_thread(service.datadir.chunks.delete_session, sid)
    await asyncio.to_thread(
        shutil.rmtree, service.datadir.path / "staging" / check_id(sid), ignore_errors=True
    )
    # 4. on the record
    await service.append_audit(
        AuditEvent(
            subject=GC_SUBJECT,
            role="system",
            action="session.gc",
            target=sid,
            outcome="success",
            details={
                "reason": REASON,
                "policy": expiry.policy,
                "source": expiry.source,
                "finished_at": expiry.finished_at,
                "tombstone_index": leaf.index,
                "log_head_size": head.size,
                "chunk_files": files,
            },
        )
    )
    log.info("gc deleted session %s (%s), tombstone leaf %d", sid, expiry.policy, leaf.index)
    return Deleted(sid, expiry.policy, leaf.index, head.size, files)


def _is_tmp(name: str) -> bool:
    return name.endswith(".tmp")


def _old(path: Path, cutoff: float) -> bool:
    try:
        return path.lstat().st_mtime < cutoff
    except FileNotFoundError:
        return False


def _has_session_folders(root: Path) -> bool:
    return any(
        (root / name).is_dir() and any(p.is_dir() for p in (root / name).iterdir())
        for name in _SCANNED
    )


def _orphans(
    root: Path, known: set[str], cutoff: float, dry_run: bool, keep_folders: bool = False
) -> list[str]:
    """Remove (or list) session folders the store does not know and stale temporary
    files under chunks/ and staging/; returns their paths relative to ``root``."""
    found: list[str] = []

    def remove(path: Path) -> None:
        found.append(str(path.relative_to(root)))
        if dry_run:
            return
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("cannot remove orphan %s: %s", path, exc.strerror)

    for name in _SCANNED:
        base = root / name
        try:
            entries = sorted(os.listdir(base))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            path = base / entry
            if path.is_dir() and not path.is_symlink():
                if entry not in known:
                    if not keep_folders and _old_tree(path, cutoff):
                        remove(path)
                    continue
                for inner in sorted(os.listdir(path)):
                    if _is_tmp(inner) and _old(path / inner, cutoff):
                        remove(path / inner)
            elif _is_tmp(entry) and _old(path, cutoff):
                remove(path)
    return found


def _old_tree(path: Path, cutoff: float) -> bool:
    """Nothing in the folder (nor the folder) changed since ``cutoff``."""
    if not _old(path, cutoff):
        return False
    try:
        return all(_old(path / name, cutoff) for name in os.listdir(path))
    except OSError:
        return False
