"""Bad input of every kind: one clear line on stderr, exit 1, stored data untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from tests.bundles import read_members, write_members
from tests.conftest import Cli, write_images


def _snapshot(folder: Path) -> dict[str, str]:
    """Path -> SHA-256 of every file below ``folder`` (SQLite's -wal/-shm excluded)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


def _one_error_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], err


def test_a_missing_data_dir_is_reported_and_not_created(tmp_path):
    cli = Cli(tmp_path / "nowhere")
    for args in (("ls",), ("show", "ses_x"), ("verify", "ses_x"), ("keys", "rotate")):
        _, _, err = cli(*args, expect=1)
        _one_error_line(err, "does not exist")
    assert not (tmp_path / "nowhere").exists()


def test_a_folder_that_is_not_a_data_dir_is_refused_and_left_alone(tmp_path):
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    write_images(tmp_path / "shots", 2)
    _, _, err = Cli(folder)("import", str(tmp_path / "shots"), "--name", "x", expect=1)
    _one_error_line(err, "not a Lucid Sessions data directory")
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    ("target", "content", "message"),
    [
        ("lucid-data-dir.json", b"{not json", "unreadable"),
        ("lucid-data-dir.json", b'{"format": "x"}', "corrupt"),
        (
            "lucid-data-dir.json",
            b'{"format": "lucid-sessions-data-dir", "version": 9}',
            "version 9",
        ),
        ("metadata.db", b"garbage" * 1000, "metadata database"),
    ],
)
def test_a_corrupt_data_dir_is_reported_and_nothing_is_altered(
    cli, imported, data_dir, target, content, message
):
    session, _ = imported
    (data_dir / target).write_bytes(content)
    for suffix in ("-wal", "-shm"):
        (data_dir / f"metadata.db{suffix}").unlink(missing_ok=True)
    before = _snapshot(data_dir)
    for args in (("ls",), ("show", session), ("verify", session)):
        _, _, err = cli(*args, expect=1)
        _one_error_line(err, message)
    assert _snapshot(data_dir) == before


def test_a_wrong_master_key_is_refused_before_anything_is_written(
    cli, imported, data_dir, tmp_path, monkeypatch
):
    session, _ = imported
    monkeypatch.setenv("LUCID_MASTER_KEY", "22" * 32)
    before = _snapshot(data_dir)
    _, _, err = cli("import", str(tmp_path / "shots"), "--name", "x", expect=1)
    _one_error_line(err, "is not the one this data directory uses")
    _, _, err = cli("frame", session, "--at", "1", "-o", str(tmp_path / "f.png"), expect=1)
    _one_error_line(err, "is not the one this data directory uses")
    _, _, err = cli("keys", "export", session, "-o", str(tmp_path / "k"), expect=1)
    _one_error_line(err, "is not the one")
    _, out, _ = cli("verify", session, expect=1)
    assert out.startswith(f"FAILED: session {session}: manifest: key: the master key")
    assert not (tmp_path / "k").exists()
    assert _snapshot(data_dir) == before


def test_a_malformed_master_key_is_named_without_echoing_it(cli, imported, monkeypatch):
    monkeypatch.setenv("LUCID_MASTER_KEY", "not-a-key-SECRET")
    _, out, err = cli("verify", imported[0], expect=1)
    assert "LUCID_MASTER_KEY" in out + err
    assert "SECRET" not in out + err


def test_an_unreadable_video_is_reported_and_creates_no_session(cli, imported, tmp_path, data_dir):
    junk = tmp_path / "broken.mp4"
    junk.write_bytes(b"\x00\x01 not a video " * 100)
    before = _snapshot(data_dir)
    _, _, err = cli("import", str(junk), "--name", "x", expect=1)
    _one_error_line(err, "cannot read video", "broken.mp4")
    assert _snapshot(data_dir) == before
    _, out, _ = cli("ls")
    assert len(out.strip().splitlines()) == 2


def test_an_image_that_fails_mid_import_leaves_no_session(cli, imported, tmp_path, data_dir):
    shots = tmp_path / "mixed"
    write_images(shots, 4)
    (shots / "shot-002.png").write_bytes(b"truncated png")
    _, _, err = cli("import", str(shots), "--name", "x", expect=1)
    _one_error_line(err, "cannot read image", "shot-002.png")
    _, out, _ = cli("ls")
    assert len(out.strip().splitlines()) == 2
    assert len(list((data_dir / "chunks").iterdir())) == 1


def test_an_empty_image_folder_is_reported(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    _, _, err = cli("import", str(tmp_path / "empty"), "--name", "x", expect=1)
    _one_error_line(err, "no PNG or JPEG images")


def test_a_bundle_of_an_unknown_format_version_is_refused(cli, imported, tmp_path):
    bundle = tmp_path / "b.tar"
    cli("export", imported[0], "-o", str(bundle))
    members = read_members(bundle)
    index = json.loads(members["lucid-bundle.json"])
    index["version"] = 9
    members["lucid-bundle.json"] = json.dumps(index).encode()
    write_members(bundle, members)
    _, _, err = cli("verify", str(bundle), expect=1)
    _one_error_line(err, "bundle format version 9 is not supported")


def test_a_file_that_is_not_a_bundle_is_refused(cli, tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"hello" * 200)
    _, _, err = cli("verify", str(junk), expect=1)
    _one_error_line(err, "is not an evidence bundle")


@pytest.mark.parametrize(
    "args",
    [
        ("show", "ses_missing"),
        ("verify", "ses_missing"),
        ("export", "ses_missing", "-o", "out.tar"),
        ("frame", "ses_missing", "--at", "0", "-o", "f.png"),
        ("keys", "export", "ses_missing", "-o", "k.json"),
    ],
)
def test_a_session_that_does_not_exist_is_named(cli, imported, data_dir, args):
    before = _snapshot(data_dir)
    _, _, err = cli(*args, expect=1)
    _one_error_line(err, "ses_missing")
    assert _snapshot(data_dir) == before


def test_a_failed_export_leaves_no_partial_bundle(cli, imported, data_dir, tmp_path):
    session, _ = imported
    (data_dir / "chunks" / session / "00000000.chunk").unlink()
    out = tmp_path / "b.tar"
    _, _, err = cli("export", session, "-o", str(out), expect=1)
    _one_error_line(err, "chunk 0")
    assert not out.exists() and not list(tmp_path.glob(".b.tar*"))


@pytest.mark.parametrize("value", ["0", "-1", "121", "abc"])
def test_bad_fps_is_refused(cli, tmp_path, value):
    write_images(tmp_path / "s", 2)
    code, _, err = cli("import", str(tmp_path / "s"), "--name", "x", "--fps", value, expect=None)
    assert code in (1, 2) and "fps" in err
