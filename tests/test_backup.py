"""`backup` and `restore`: consistent, incremental, verified, tamper-evident."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import Cli, write_images

_SUMMARY = re.compile(r"copied (\d+) \((\d+) chunks")


def _import(cli: Cli, tmp_path: Path, name: str, count: int) -> str:
    write_images(tmp_path / f"shots-{name}", count)
    _, out, _ = cli("import", str(tmp_path / f"shots-{name}"), "--name", name, "--fps", "2")
    return out.strip()


def _backup(cli: Cli, to: Path, *extra: str) -> tuple[int, int, str]:
    """(files copied, chunks copied, stderr)."""
    _, _, err = cli("backup", "--to", str(to), *extra)
    found = _SUMMARY.search(err)
    assert found, err
    return int(found.group(1)), int(found.group(2)), err


def _chunk_files(data_dir: Path, session: str) -> list[Path]:
    return sorted((data_dir / "chunks" / session).glob("*.chunk"))


def test_a_restored_backup_verifies_and_exports_identical_bundles(
    cli: Cli, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    sessions = [_import(cli, tmp_path, "one", 25), _import(cli, tmp_path, "two", 12)]
    before = {}
    for session in sessions:
        cli("export", session, "-o", str(tmp_path / f"{session}.tar"))
        before[session] = (tmp_path / f"{session}.tar").read_bytes()
    # exporting is deterministic: the same session twice gives the same bytes
    cli("export", sessions[0], "-o", str(tmp_path / "again.tar"))
    assert (tmp_path / "again.tar").read_bytes() == before[sessions[0]]

    backup = tmp_path / "backup"
    copied, chunks, err = _backup(cli, backup)
    assert chunks == sum(len(_chunk_files(data_dir, s)) for s in sessions)
    assert "keys/master.key was not copied" in err
    assert not (backup / "keys" / "master.key").exists()
    assert oct((backup / "keys" / "cluster-ed25519.pem").stat().st_mode & 0o777) == "0o600"
    old_inodes = {p: p.stat().st_ino for p in (backup / "chunks").rglob("*.chunk")}

    # a second run copies only what is new: the third session's chunks and changed files
    third = _import(cli, tmp_path, "three", 15)
    sessions.append(third)
    cli("export", third, "-o", str(tmp_path / f"{third}.tar"))
    before[third] = (tmp_path / f"{third}.tar").read_bytes()
    copied2, chunks2, _ = _backup(cli, backup)
    assert chunks2 == len(_chunk_files(data_dir, third)) > 0
    assert copied2 < copied
    assert all(p.stat().st_ino == ino for p, ino in old_inodes.items())
    # and a run with nothing new copies nothing
    assert _backup(cli, backup)[:2] == (0, 0)

    # restore on a "fresh machine": only the backup and the master key from elsewhere
    key = tmp_path / "elsewhere" / "master.key"
    key.parent.mkdir()
    shutil.copy(data_dir / "keys" / "master.key", key)
    monkeypatch.setenv("LUCID_MASTER_KEY_FILE", str(key))
    restored_dir = tmp_path / "restored"
    restored = Cli(restored_dir)
    _, out, err = restored("restore", "--from", str(backup))
    assert "verified 3 of 3 sessions" in err
    assert sorted(line.split()[2].rstrip(":") for line in out.splitlines()) == sorted(sessions)
    assert all(line.startswith("OK: session") for line in out.splitlines())
    assert oct(restored_dir.stat().st_mode & 0o777) == "0o700"
    for name in ("cluster-ed25519.pem", "token-hs256.key"):
        path = restored_dir / "keys" / name
        if path.exists():
            assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct((restored_dir / "metadata.db").stat().st_mode & 0o777) == "0o600"

    for session in sessions:
        _, out, _ = restored("verify", session)
        assert out.startswith(f"OK: session {session}")
        restored("export", session, "-o", str(tmp_path / f"restored-{session}.tar"))
        assert (tmp_path / f"restored-{session}.tar").read_bytes() == before[session]

    # a restore never writes over an existing data directory
    _, _, err = restored("restore", "--from", str(backup), expect=1)
    assert err.startswith("error: restore target") and "not empty" in err


def test_a_tampered_backup_file_is_named_and_nothing_is_restored(
    cli: Cli, data_dir: Path, tmp_path: Path
):
    session = _import(cli, tmp_path, "one", 25)
    backup = tmp_path / "backup"
    _backup(cli, backup, "--include-master-key")
    victim = sorted((backup / "chunks" / session).glob("*.chunk"))[1]
    data = bytearray(victim.read_bytes())
    data[100] ^= 1
    victim.write_bytes(bytes(data))
    target = tmp_path / "restored"
    _, _, err = Cli(target)("restore", "--from", str(backup), expect=1)
    assert err.count("\n") == 1
    assert f"chunks/{session}/{victim.name} (sha256 mismatch)" in err
    assert not target.exists()
    assert not list(tmp_path.glob(".restored.restore-*"))

    victim.unlink()
    _, _, err = Cli(target)("restore", "--from", str(backup), expect=1)
    assert f"chunks/{session}/{victim.name} (missing)" in err


def test_with_the_master_key_included_restore_needs_no_key(
    cli: Cli, data_dir: Path, tmp_path: Path
):
    session = _import(cli, tmp_path, "one", 12)
    backup = tmp_path / "backup"
    _, _, err = _backup(cli, backup, "--include-master-key")
    assert "warning" not in err
    assert oct((backup / "keys" / "master.key").stat().st_mode & 0o777) == "0o600"
    target = tmp_path / "restored"
    _, out, _ = Cli(target)("restore", "--from", str(backup))
    assert out.startswith(f"OK: session {session}")
    assert oct((target / "keys" / "master.key").stat().st_mode & 0o777) == "0o600"


def test_restore_without_a_master_key_says_what_it_needs(cli: Cli, tmp_path: Path):
    _import(cli, tmp_path, "one", 12)
    backup = tmp_path / "backup"
    _backup(cli, backup)
    target = tmp_path / "restored"
    _, _, err = Cli(target)("restore", "--from", str(backup), expect=1)
    assert "LUCID_MASTER_KEY_FILE" in err and "--no-verify" in err
    assert not target.exists()
    Cli(target)("restore", "--from", str(backup), "--no-verify")
    assert (target / "metadata.db").exists()


def test_a_backup_taken_while_a_session_is_written_is_consistent(
    cli: Cli, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    first = _import(cli, tmp_path, "first", 12)
    write_images(tmp_path / "long", 300)
    env = {**os.environ, "LUCID_DATA_DIR": str(data_dir)}
    writer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lucid_sessions",
            "import",
            str(tmp_path / "long"),
            "--name",
            "long",
            "--fps",
            "1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    taken: list[Path] = []
    try:
        while writer.poll() is None and len(taken) < 500:
            backup = tmp_path / f"backup-{len(taken)}"
            _backup(cli, backup, "--include-master-key")
            if _in_flight(backup) and writer.poll() is None:
                taken.append(backup)
            else:
                shutil.rmtree(backup)
    finally:
        out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    long_session = out.decode().strip()
    assert taken, "no backup caught the session while it was being written"
    last = taken[-1]
    for backup in (taken[0], last):
        manifest = json.loads((backup / "backup-manifest.json").read_text())
        target = tmp_path / f"restored-{backup.name}"
        # every completed session in the snapshot verifies (restore exits 1 otherwise),
        # and every chunk the snapshot references is in the backup, whole
        _, out, _ = Cli(target)("restore", "--from", str(backup))
        assert out.startswith(f"OK: session {first}")
        in_flight = _in_flight(target)
        assert in_flight is not None and in_flight[0] == long_session
        chunk_files = sorted(
            rel for rel in manifest["files"] if rel.startswith(f"chunks/{long_session}/")
        )
        assert [f"chunks/{long_session}/{seq:08d}.chunk" for seq in in_flight[1]] == chunk_files
        stored = Cli(target)
        assert stored("ls")[1].count(long_session) == 1
    # an incremental run after the writer finished brings the completed session
    _, chunks, _ = _backup(cli, last, "--include-master-key")
    assert chunks == len(_chunk_files(data_dir, long_session)) - len(in_flight[1])
    target = tmp_path / "restored-final"
    _, out, _ = Cli(target)("restore", "--from", str(last))
    assert f"OK: session {long_session}" in out and f"OK: session {first}" in out


def _in_flight(where: Path) -> tuple[str, list[int]] | None:
    """(id, stored chunk sequences) of a session in the metadata that is not completed."""
    import sqlite3

    conn = sqlite3.connect(f"file:{where / 'metadata.db'}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT session_id FROM sessions WHERE status != 'completed'").fetchone()
        if row is None:
            return None
        seqs = conn.execute(
            "SELECT sequence FROM chunks WHERE session_id = ? ORDER BY 1", (row[0],)
        ).fetchall()
    finally:
        conn.close()
    return row[0], [s for (s,) in seqs]


def test_backup_with_mongodb_metadata_refuses_and_says_mongodump(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    _import(cli, tmp_path, "one", 6)
    monkeypatch.setenv("LUCID_MONGODB_URI", "mongodb://127.0.0.1:1")
    _, _, err = cli("backup", "--to", str(tmp_path / "backup"), expect=1)
    assert err.startswith("error:") and "mongodump" in err
    assert not (tmp_path / "backup").exists()
