"""``lucid-sessions gc`` and ``lucid-sessions hold``: retention and legal hold
(:mod:`lucid_sessions.archive.retention`).

``gc [--dry-run] [--json]`` deletes the sessions whose retention has run out (a signed
tombstone in the session log, the data key destroyed, the chunks deleted), skips those
under legal hold and removes orphaned files; the default retention is
``LUCID_RETENTION_DAYS`` (0 or unset: keep forever) for sessions without their own.
``--dry-run`` lists what would go and changes nothing.

``hold set SESSION --reason R`` / ``hold lift SESSION --reason R`` / ``hold ls`` put a
session under legal hold, lift it and list the held sessions. Every set and lift is
appended to the audit log as subject ``cli:<user>``.

Both register themselves on ``lucid-sessions`` (``main``).
"""

from __future__ import annotations

import getpass
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import click

from lucid_sessions.archive.retention import hold_of, lift_hold, list_holds, set_hold
from lucid_sessions.audit import AuditEvent
from lucid_sessions.cli import data_dir_option, main, run_async
from lucid_sessions.cluster.storage_service import StorageService
from lucid_sessions.errors import LucidError
from lucid_sessions.storage.datadir import default_data_dir, open_data_dir

__all__ = ["gc_command", "hold_group"]


@asynccontextmanager
async def _storage(data_dir: Path | None) -> AsyncIterator[StorageService]:
    from lucid_sessions.cluster.config import load_config

    path = data_dir or default_data_dir()
    config = load_config(data_dir=path)
    datadir = await open_data_dir(path)
    storage = StorageService(datadir, retention_days=config.retention_days, gc_interval_s=0)
    try:
        yield storage
    finally:
        try:
            await storage.shutdown()  # signs the audit head over what this command appended
        finally:
            await datadir.close()


def _cli_subject() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}"


@main.command("gc")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
@data_dir_option
@run_async
async def gc_command(dry_run: bool, as_json: bool, data_dir: Path | None) -> None:
    """Delete expired sessions (tombstone, data key, chunks) and orphaned files.
    Sessions under legal hold are kept."""
    async with _storage(data_dir) as storage:
        report = await storage.collect_garbage(dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for line in report.lines():
            click.echo(line)
    if report.errors:
        raise SystemExit(1)


@main.group("hold")
def hold_group() -> None:
    """Legal hold: a held session is never deleted until the hold is lifted."""


async def _audit(
    storage: StorageService, action: str, session_id: str, reason: str, outcome: str
) -> None:
    await storage.append_audit(
        AuditEvent(
            subject=_cli_subject(),
            role="cli",
            action=action,
            target=session_id,
            outcome=outcome,
            details={"reason": reason},
        )
    )


@hold_group.command("set")
@click.argument("session_id")
@click.option("--reason", required=True, help="Why the session must be kept (recorded).")
@data_dir_option
@run_async
async def hold_set(session_id: str, reason: str, data_dir: Path | None) -> None:
    """Put SESSION_ID under legal hold."""
    async with _storage(data_dir) as storage:
        try:
            record = await set_hold(storage, session_id, reason=reason, by=_cli_subject())
        except LucidError as exc:
            await _audit(storage, "session.hold", session_id, reason, f"failure:{exc.code}")
            raise
        await _audit(storage, "session.hold", session_id, reason, "success")
    hold = hold_of(record) or {}
    click.echo(f"session {session_id} is under legal hold since {hold.get('at')}")


@hold_group.command("lift")
@click.argument("session_id")
@click.option("--reason", required=True, help="Why the hold ends (recorded).")
@data_dir_option
@run_async
async def hold_lift(session_id: str, reason: str, data_dir: Path | None) -> None:
    """Lift the legal hold of SESSION_ID."""
    async with _storage(data_dir) as storage:
        try:
            await lift_hold(storage, session_id, reason=reason)
        except LucidError as exc:
            await _audit(storage, "session.hold_lift", session_id, reason, f"failure:{exc.code}")
            raise
        await _audit(storage, "session.hold_lift", session_id, reason, "success")
    click.echo(f"session {session_id}: legal hold lifted")


@hold_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per held session.")
@data_dir_option
@run_async
async def hold_ls(as_json: bool, data_dir: Path | None) -> None:
    """List the sessions under legal hold."""
    async with _storage(data_dir) as storage:
        held = await list_holds(storage)
    for session in held:
        hold = hold_of(session) or {}
        if as_json:
            click.echo(json.dumps({"session_id": session.session_id, **hold}))
        else:
            click.echo(
                f"{session.session_id}  since {hold.get('at')}  by {hold.get('by')}: "
                f"{hold.get('reason')}"
            )
