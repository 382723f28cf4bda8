"""``lucid-sessions audit verify`` and ``audit ls`` on a real data directory.

Each kind of tampering is done the way someone with write access to the disk would: with
sqlite3 directly on ``metadata.db``. ``verify`` must exit 1 and name the kind and the seq
of each damaged entry on its own line, and exit 0 on an intact log.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from tests.conftest import Cli

from lucid_sessions.audit import AuditEntry, AuditEvent, chain_entry, sign_head
from lucid_sessions.cluster.storage_service import StorageService
from lucid_sessions.crypto import ClusterKey
from lucid_sessions.storage.datadir import DataDir

SUBJECTS = ("alice", "bob", "carol")
ACTIONS = ("session.create", "session.start", "chunk.download")


def _event(n: int) -> AuditEvent:
    return AuditEvent(
        time=f"2024-05-01T12:00:{n:02d}.000000Z",
        subject=SUBJECTS[n % 3],
        role="admin",
        action=ACTIONS[n % 3],
        target=f"ses_{n % 4}",
        outcome="success" if n % 4 else "failure:409",
        request_id=f"req-{n}",
        details={"n": n},
    )


@pytest.fixture
def logged(data_dir: Path) -> Path:
    """12 entries (seq 1-12) with signed heads at 5, 10 and 12 (the last one on close)."""

    async def fill() -> None:
        service = StorageService(DataDir.open(data_dir, create=True), audit_sign_every=5)
        for n in range(1, 13):
            await service.append_audit(_event(n))
        await service.close()

    asyncio.run(fill())
    return data_dir / "metadata.db"


@contextmanager
def database(path: Path) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(path)) as db, db:
        yield db


def _row(db: sqlite3.Connection, seq: int) -> dict[str, object]:
    db.row_factory = sqlite3.Row
    row = db.execute("SELECT * FROM audit_log WHERE seq=?", (seq,)).fetchone()
    db.row_factory = None
    return dict(row)


def _entry(db: sqlite3.Connection, seq: int) -> AuditEntry:
    row = _row(db, seq)
    return AuditEntry(
        seq=seq,
        time=str(row["time"]),
        subject=str(row["subject"]),
        role=str(row["role"]),
        action=str(row["action"]),
        target=str(row["target"]),
        outcome=str(row["outcome"]),
        request_id=str(row["request_id"]),
        details=json.loads(str(row["details"])),
        prev=str(row["prev"]),
        hash=str(row["hash"]),
    )


def _verify(cli: Cli, *args: str, expect: int) -> list[str]:
    _, out, _ = cli("audit", "verify", *args, expect=expect)
    return out.splitlines()


def test_an_intact_log_verifies_with_exit_0(cli, logged):
    lines = _verify(cli, expect=0)
    assert lines == ["audit log intact: 12 entries, 3 signed heads, latest at entry 12"]


def test_json_reports_the_figures_and_each_problem(cli, logged):
    _, out, _ = cli("audit", "verify", "--json")
    body = json.loads(out)
    assert body["ok"] is True
    assert (body["entries"], body["heads_checked"], body["signed_seq"]) == (12, 3, 12)
    assert body["trusted_key_checked"] is True
    with database(logged) as db:
        db.execute("UPDATE audit_log SET outcome='success' WHERE seq=4")
    _, out, _ = cli("audit", "verify", "--json", expect=1)
    body = json.loads(out)
    assert body["ok"] is False
    assert [(p["kind"], p["seq"]) for p in body["problems"]] == [("edited", 4)]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("subject", "mallory"),
        ("role", "auditor"),
        ("action", "session.read"),
        ("target", "ses_other"),
        ("outcome", "failure:500"),
        ("time", "2024-05-01T11:00:00.000000Z"),
        ("request_id", "req-x"),
        ("details", '{"n": 70}'),
        ("details", "{not json"),
    ],
)
def test_an_edited_field_is_named_as_edited(cli, logged, column, value):
    with database(logged) as db:
        db.execute(f"UPDATE audit_log SET {column}=? WHERE seq=7", (value,))
    lines = _verify(cli, expect=1)
    assert lines[0].startswith("seq 7: edited: entry 7 was edited")
    assert lines[-1].startswith("audit log TAMPERED: 1 problem in 12 entries")


def test_a_deleted_middle_entry_is_named_as_deleted(cli, logged):
    with database(logged) as db:
        db.execute("DELETE FROM audit_log WHERE seq=7")
    lines = _verify(cli, expect=1)
    assert lines[0] == (
        "seq 7: deleted: entry 7 is missing: entry 8 chains to a hash no stored entry has"
    )
    assert len(lines) == 2


def test_a_deleted_tail_after_a_signed_head_is_named_from_its_first_entry(cli, logged):
    with database(logged) as db:
        db.execute("DELETE FROM audit_log WHERE seq > 9")
    lines = _verify(cli, expect=1)
    assert lines[0] == "seq 10: deleted: entries 10-12 are missing: a signed head covers entry 12"
    assert len(lines) == 2


def test_a_deleted_tail_stays_visible_after_more_entries_are_appended(cli, logged, data_dir):
    with database(logged) as db:
        db.execute("DELETE FROM audit_log WHERE seq > 9")

    async def append() -> int:
        service = StorageService(DataDir.open(data_dir), audit_sign_every=0)
        entry = await service.append_audit(_event(13))
        await service.metadata.close()
        return entry.seq

    assert asyncio.run(append()) == 13, "a seq a head named is never reused"
    lines = _verify(cli, expect=1)
    assert lines[0] == "seq 10: deleted: entries 10-12 are missing: a signed head covers entry 12"


def test_a_forged_row_is_named_as_inserted(cli, logged):
    with database(logged) as db:
        prev = _row(db, 6)["hash"]
        db.execute("UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 7")
        db.execute("UPDATE audit_log SET seq = seq - 999 WHERE seq >= 1000")
        forged = chain_entry(_event(99), seq=7, prev=str(prev))
        db.execute(
            "INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                forged.seq,
                forged.time,
                forged.subject,
                forged.role,
                forged.action,
                forged.target,
                forged.outcome,
                forged.request_id,
                json.dumps(dict(forged.details)),
                forged.prev,
                forged.hash,
            ),
        )
    lines = _verify(cli, expect=1)
    assert lines[0].startswith("seq 7: inserted: entry 7 was inserted")
    assert len(lines) == 2


def test_two_rows_with_swapped_seq_are_both_named_as_reordered(cli, logged):
    with database(logged) as db:
        db.execute("UPDATE audit_log SET seq = -1 WHERE seq = 3")
        db.execute("UPDATE audit_log SET seq = 3 WHERE seq = 8")
        db.execute("UPDATE audit_log SET seq = 8 WHERE seq = -1")
    lines = _verify(cli, expect=1)
    assert lines[0].startswith("seq 3: reordered: entry 3 is out of order")
    assert lines[1].startswith("seq 8: reordered: entry 8 is out of order")
    assert len(lines) == 3


def test_a_rewritten_suffix_with_recomputed_hashes_is_caught_by_the_signed_heads(cli, logged):
    """Whoever rewrites entries and recomputes the chain cannot re-sign the heads."""
    with database(logged) as db:
        prev = str(_row(db, 6)["hash"])
        for seq in range(7, 13):
            rewritten = chain_entry(_event(seq + 50), seq=seq, prev=prev)
            db.execute(
                "UPDATE audit_log SET time=?, subject=?, action=?, details=?, prev=?, hash=? "
                "WHERE seq=?",
                (
                    rewritten.time,
                    rewritten.subject,
                    rewritten.action,
                    json.dumps(dict(rewritten.details)),
                    rewritten.prev,
                    rewritten.hash,
                    seq,
                ),
            )
            # role, target, outcome, request_id must match what was hashed
            db.execute(
                "UPDATE audit_log SET role=?, target=?, outcome=?, request_id=? WHERE seq=?",
                (rewritten.role, rewritten.target, rewritten.outcome, rewritten.request_id, seq),
            )
            prev = rewritten.hash
    lines = _verify(cli, expect=1)
    assert lines[0].startswith("seq 10: rewritten: entry 10 does not have the hash")
    assert lines[1].startswith("seq 12: rewritten:")
    assert len(lines) == 3


def test_a_head_re_signed_with_another_key_is_named(cli, logged):
    other = ClusterKey.generate()
    with database(logged) as db:
        (time,) = db.execute("SELECT time FROM audit_heads WHERE seq=10").fetchone()
        forged = sign_head(other, _entry(db, 10), time=time)
        db.execute(
            "UPDATE audit_heads SET signature=?, public_key=? WHERE seq=10",
            (forged.signature, forged.public_key),
        )
    lines = _verify(cli, expect=1)
    assert lines[0] == (
        f"seq 10: signature: the head at entry 10 is signed by key {other.fingerprint()}, "
        "not the trusted key"
    )


def test_a_head_edited_without_re_signing_is_named(cli, logged):
    with database(logged) as db:
        other_hash = _row(db, 9)["hash"]
        db.execute("UPDATE audit_heads SET hash=? WHERE seq=10", (other_hash,))
    lines = _verify(cli, expect=1)
    assert lines[0].startswith("seq 10: signature: the head at entry 10 does not verify")


def test_heads_are_checked_against_a_given_trusted_key(cli, logged, tmp_path):
    other = tmp_path / "other.pem"
    other.write_bytes(ClusterKey.generate().public_key_pem())
    lines = _verify(cli, "--trusted-key", str(other), expect=1)
    assert [line.split(":")[0] for line in lines[:-1]] == ["seq 5", "seq 10", "seq 12"]
    assert all(": signature: " in line for line in lines[:-1])
    own = tmp_path / "own.pem"
    cli("keys", "public", "-o", str(own))
    _verify(cli, "--trusted-key", str(own), expect=0)


def test_verify_without_a_data_directory_is_an_error(cli):
    _, _, err = cli("audit", "verify", expect=1)
    assert err.startswith("error: data directory")


# audit ls ---------------------------------------------------------------------------------


def test_ls_lists_entries_oldest_first_with_filters(cli, logged):
    _, out, _ = cli("audit", "ls")
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["SEQ", "TIME", "SUBJECT", "ROLE", "ACTION"]
    assert [int(line.split()[0]) for line in lines[1:]] == list(range(1, 13))
    _, out, _ = cli("audit", "ls", "--subject", "bob", "--action", "session.start", "--json")
    found = [json.loads(line) for line in out.splitlines()]
    assert [e["seq"] for e in found] == [1, 4, 7, 10]
    assert all(e["subject"] == "bob" and e["action"] == "session.start" for e in found)
    assert set(found[0]) >= {"request_id", "target", "outcome", "details", "prev", "hash"}
    _, out, _ = cli("audit", "ls", "--outcome", "failure:409", "--json")
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [4, 8, 12]
    _, out, _ = cli(
        "audit", "ls", "--since", "2024-05-01T12:00:03", "--until", "2024-05-01T12:00:05", "--json"
    )
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [3, 4]


def test_ls_pages_with_limit_and_after(cli, logged):
    _, out, err = cli("audit", "ls", "--limit", "5", "--json")
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [1, 2, 3, 4, 5]
    assert "more entries: --after 5" in err
    _, out, err = cli("audit", "ls", "--after", "10", "--json")
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [11, 12]
    assert "more entries" not in err
