"""``lucid-sessions audit``: check the hash-chained audit log, and read it.

``audit verify`` reads every entry and signed head from the data directory's metadata
store and checks them with :func:`lucid_sessions.audit.verify_chain`: one line per
problem, naming the entry's seq and the kind (edited, deleted, inserted, reordered,
signature, rewritten), then a summary line. Exit 0 when the log is intact, 1 when it is
not (or cannot be read). Heads are checked against the data directory's cluster key, or
against ``--trusted-key``. Entries after the latest signed head are covered by no
signature yet; the summary says how many.

``audit ls`` lists entries oldest first, with the API's filters and cursor.

The group registers itself on ``lucid-sessions`` (``main``), so importing this module in
either order with :mod:`lucid_sessions.cli` gives the same command line.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import click

from lucid_sessions.audit import AuditEntry, AuditHead, audit_time, summary_lines, verify_chain
from lucid_sessions.cli import data_dir_option, main, run_async
from lucid_sessions.crypto import load_public_key
from lucid_sessions.storage.datadir import default_data_dir, open_data_dir
from lucid_sessions.storage.sqlite_store import SQLiteStore

__all__ = ["audit"]

_PAGE = 1000


@click.group("audit")
def audit() -> None:
    """Check and read the hash-chained audit log."""


async def _read_log(store: SQLiteStore) -> tuple[list[AuditEntry], list[AuditHead]]:
    entries: list[AuditEntry] = []
    after = 0
    while True:
        page = await store.list_audit(after_seq=after, limit=_PAGE)
        entries.extend(page.items)
        if page.next_after is None:
            break
        after = page.next_after
    return entries, await store.list_audit_heads()


@audit.command("verify")
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
async def audit_verify(trusted_key: Path | None, as_json: bool, data_dir: Path | None) -> None:
    """Check every entry and signed head; name each edited, deleted, inserted or
    reordered entry by its seq. Exits 0 only if the log is intact."""
    datadir = await open_data_dir(data_dir or default_data_dir())
    try:
        if trusted_key is not None:
            trusted: bytes | None = load_public_key(trusted_key.read_bytes())
        else:
            trusted = datadir.existing_cluster_public_key()
        entries, heads = await _read_log(datadir.store)
    finally:
        await datadir.close()
    report = verify_chain(entries, heads, trusted)
    if as_json:
        body = {
            "ok": report.ok,
            "entries": report.entries,
            "heads_checked": report.heads_checked,
            "signed_seq": report.signed_seq,
            "unsigned_tail": report.unsigned_tail,
            "trusted_key_checked": report.trusted_key_checked,
            "signer_fingerprint": report.signer_fingerprint,
            "problems": [p._asdict() for p in report.problems],
        }
        click.echo(json.dumps(body, indent=2))
    else:
        for line in summary_lines(report):
            click.echo(line)
    if not report.ok:
        sys.exit(1)


def _moment(value: datetime | None) -> str | None:
    return None if value is None else audit_time(value)


@audit.command("ls")
@click.option("--subject", default=None, help="Only entries of this subject.")
@click.option("--action", default=None, help="Only this action (session.create, ...).")
@click.option("--target", default=None, help="Only this target (a session id, ...).")
@click.option("--outcome", default=None, help="Only this outcome (success, refused, ...).")
@click.option("--since", type=click.DateTime(), default=None, help="From this UTC time on.")
@click.option("--until", type=click.DateTime(), default=None, help="Before this UTC time.")
@click.option("--after", type=click.IntRange(min=0), default=0, help="Entries after this seq.")
@click.option(
    "--limit", type=click.IntRange(1, 100_000), default=100, show_default=True, help="At most."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@data_dir_option
@run_async
async def audit_ls(
    subject: str | None,
    action: str | None,
    target: str | None,
    outcome: str | None,
    since: datetime | None,
    until: datetime | None,
    after: int,
    limit: int,
    as_json: bool,
    data_dir: Path | None,
) -> None:
    """List audit entries, oldest first."""
    datadir = await open_data_dir(data_dir or default_data_dir())
    try:
        page = await datadir.store.list_audit(
            subject=subject,
            action=action,
            target=target,
            outcome=outcome,
            since=_moment(since),
            until=_moment(until),
            after_seq=after,
            limit=limit,
        )
    finally:
        await datadir.close()
    if not as_json:
        click.echo(
            f"{'SEQ':>6} {'TIME':27} {'SUBJECT':16} {'ROLE':16} {'ACTION':20} OUTCOME  TARGET"
        )
    for e in page.items:
        if as_json:
            fields = {
                "seq": e.seq,
                "time": e.time,
                "subject": e.subject,
                "role": e.role,
                "action": e.action,
                "target": e.target,
                "outcome": e.outcome,
                "request_id": e.request_id,
                "details": dict(e.details),
                "prev": e.prev,
                "hash": e.hash,
            }
            click.echo(json.dumps(fields, ensure_ascii=False))
        else:
            click.echo(
                f"{e.seq:>6} {e.time:27} {e.subject:16} {e.role:16} {e.action:20} "
                f"{e.outcome:8} {e.target}"
            )
    if page.next_after is not None:
        click.echo(f"more entries: --after {page.next_after}", err=True)


main.add_command(audit)
