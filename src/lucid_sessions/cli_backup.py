"""``lucid-sessions backup`` and ``restore``: a consistent, incremental copy of a data
directory taken while the cluster runs, and a data directory rebuilt from one.

See :mod:`lucid_sessions.archive.backup` for what a backup holds and why it is
consistent. Progress and the summary go to stderr; ``restore`` prints one verification
line per session on stdout and exits 1 if any session fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lucid_sessions.cli import _progress, data_dir_option, main, run_async
from lucid_sessions.errors import InvalidConfigError
from lucid_sessions.storage.datadir import default_data_dir

__all__ = ["backup_command", "restore_command"]


@main.command("backup")
@click.option(
    "--to",
    "to",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Backup folder: created if missing; a later run copies only what is new.",
)
@click.option(
    "--include-master-key",
    is_flag=True,
    default=False,
    help="Also copy keys/master.key (by default it is left out: keep it apart from the backup).",
)
@data_dir_option
@run_async
async def backup_command(to: Path, include_master_key: bool, data_dir: Path | None) -> None:
    """Back the data directory up into a folder, consistently, while the cluster runs.

    Snapshots the metadata (SQLite online backup), then copies the chunks it references,
    the keys, the session log, anchors and checkpoints. The backup holds the cluster's
    signing key and token secret: protect it like the data directory.
    """
    from lucid_sessions.archive.backup import backup
    from lucid_sessions.archive.service import format_bytes

    source = data_dir or default_data_dir()
    with _progress("backing up", None) as advance:
        result = backup(source, to, include_master_key=include_master_key, progress=advance)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(
        f"backed up {source} to {to} (snapshot {result.snapshot_at}): {result.sessions} "
        f"sessions, {result.files} files; copied {result.copied_files} "
        f"({result.copied_chunks} chunks, {format_bytes(result.copied_bytes)}), "
        f"{result.unchanged_files} unchanged, {result.removed_files} removed",
        err=True,
    )


@main.command("restore")
@click.option(
    "--from",
    "from_",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    required=True,
    help="Backup folder written by `backup`.",
)
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Verify every session of the restored data directory (needs the master key).",
)
@data_dir_option
@run_async
async def restore_command(from_: Path, verify: bool, data_dir: Path | None) -> None:
    """Rebuild a data directory (--data-dir, missing or empty) from a backup.

    Every file is checked against the backup's sha256 manifest first; the data directory
    appears only once complete. The master key comes from the backup if it holds one,
    else from LUCID_MASTER_KEY or LUCID_MASTER_KEY_FILE.
    """
    from lucid_sessions.archive.backup import read_backup_manifest, restore
    from lucid_sessions.archive.service import format_bytes, verify_target
    from lucid_sessions.archive.verify import summary_lines
    from lucid_sessions.storage.datadir import resolve_master_key

    target = data_dir or default_data_dir()
    manifest = read_backup_manifest(from_)
    expected = manifest.get("master_key_id")
    if verify and expected and not manifest.get("master_key_included"):
        try:
            source = resolve_master_key(from_ / "no-master-key-here")
        except InvalidConfigError:
            raise InvalidConfigError(
                "the backup holds no master key: set LUCID_MASTER_KEY or "
                f"LUCID_MASTER_KEY_FILE (key {expected}), or pass --no-verify"
            ) from None
        if source.key.key_id != expected:
            raise InvalidConfigError(
                f"the master key ({source.key.key_id}) is not the one the backup uses ({expected})"
            )
    with _progress("restoring", None) as advance:
        result = restore(from_, target, progress=advance)
    click.echo(
        f"restored {result.files} files ({format_bytes(result.bytes)}) from {from_} "
        f"(snapshot {result.snapshot_at}) to {target}",
        err=True,
    )
    if not verify:
        return
    failed = 0
    for session in result.sessions:
        report = await verify_target(session, data_dir=target)
        click.echo(summary_lines(report)[0])
        failed += not report.ok
    click.echo(
        f"verified {len(result.sessions) - failed} of {len(result.sessions)} sessions", err=True
    )
    if failed:
        sys.exit(1)
