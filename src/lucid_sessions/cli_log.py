"""``lucid-sessions log``: the cluster-wide session log (:mod:`.anchoring.session_log`).

``log verify`` checks every signed head, that the leaves give each head's root, RFC 9162
consistency between consecutive heads (or the two ``--from``/``--to`` sizes), and compares
the log with the store: a finalised session missing from the log (withheld), a logged
session missing from the store (deleted), a manifest that is not the one its leaf names
(altered). One line per problem, naming its kind; exit 0 only if all holds.

``log show`` lists the signed heads (and how many leaves no head covers yet).

The group registers itself on ``lucid-sessions`` (``main``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from lucid_sessions.anchoring.session_log import (
    SessionLog,
    StoredSession,
    summary_lines,
    verify_log,
)
from lucid_sessions.cli import data_dir_option, main, run_async
from lucid_sessions.crypto import load_public_key
from lucid_sessions.errors import NotFoundError
from lucid_sessions.storage.datadir import DataDir, default_data_dir, open_data_dir

__all__ = ["log_group"]


@click.group("log")
def log_group() -> None:
    """Check and read the cluster-wide log of finalised sessions."""


async def _stored_sessions(datadir: DataDir) -> list[StoredSession]:
    """Every session in the store with its manifest (None when it has none)."""
    found: list[StoredSession] = []
    offset = 0
    while True:
        page = await datadir.store.list_sessions(limit=500, offset=offset)
        for record in page.items:
            try:
                manifest: bytes | None = (
                    await datadir.store.get_manifest(record.session_id)
                ).manifest
            except NotFoundError:
                manifest = None
            found.append(StoredSession(record.session_id, record.status, manifest))
        if not page.has_next:
            return found
        offset += len(page.items)


@log_group.command("verify")
@click.option(
    "--from",
    "from_size",
    type=click.IntRange(min=1),
    default=None,
    help="Check consistency from the signed head of this size ...",
)
@click.option(
    "--to",
    "to_size",
    type=click.IntRange(min=1),
    default=None,
    help="... to the signed head of this size [default: the latest].",
)
@click.option(
    "--trusted-key",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Public key (PEM or hex) the heads must be signed with "
    "[default: the data directory's cluster key].",
)
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
@data_dir_option
@run_async
async def log_verify(
    from_size: int | None,
    to_size: int | None,
    trusted_key: Path | None,
    as_json: bool,
    data_dir: Path | None,
) -> None:
    """Check the session log's heads, leaves and consistency, and compare it with the
    store. Exits 0 only if everything holds."""
    if from_size is not None and to_size is not None and to_size < from_size:
        raise click.BadParameter("--to must not be smaller than --from", param_hint="--to")
    datadir = await open_data_dir(data_dir or default_data_dir())
    try:
        if trusted_key is not None:
            key = load_public_key(trusted_key.read_bytes())
        else:
            key = datadir.existing_cluster_public_key() or b""
        leaf_lines, head_lines = SessionLog(datadir.path).raw()
        stored = await _stored_sessions(datadir)
    finally:
        await datadir.close()
    report = verify_log(
        leaf_lines, head_lines, key, store=stored, from_size=from_size, to_size=to_size
    )
    if as_json:
        latest = report.latest
        body = {
            "ok": report.ok,
            "leaves": report.leaves,
            "heads": report.heads,
            "latest": None if latest is None else latest.to_dict(),
            "unsigned_tail": report.unsigned_tail,
            "sessions_checked": report.sessions_checked,
            "problems": [{"kind": p.kind, "message": p.message} for p in report.problems],
        }
        click.echo(json.dumps(body, indent=2))
    else:
        for line in summary_lines(report):
            click.echo(line)
    if not report.ok:
        sys.exit(1)


@log_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per head.")
@data_dir_option
@run_async
async def log_show(as_json: bool, data_dir: Path | None) -> None:
    """List the log's signed tree heads, oldest first."""
    datadir = await open_data_dir(data_dir or default_data_dir())
    try:
        session_log = SessionLog(datadir.path)
        heads = session_log.heads()
        leaves = session_log.leaves()
    finally:
        await datadir.close()
    if as_json:
        for head in heads:
            click.echo(json.dumps(head.to_dict()))
        return
    click.echo(f"{'SIZE':>6} {'TIME':28} ROOT")
    for head in heads:
        click.echo(f"{head.size:>6} {head.time:28} {head.root}")
    latest = heads[-1].size if heads else 0
    click.echo(f"{len(leaves)} leaves, {len(heads)} heads", err=True)
    if len(leaves) > latest:
        click.echo(f"{len(leaves) - latest} leaves after the latest head", err=True)


main.add_command(log_group)
