"""The command line on a cluster whose metadata is in MongoDB (nx-27017 here, a real
MongoDB when LUCID_TEST_MONGODB_URI is set): it reads and writes the same metadata as the
served cluster, and never falls back to the data directory's SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import Cli, write_images


def test_import_ls_verify_export_and_audit_use_mongodb(
    cli: Cli,
    tmp_path: Path,
    mongodb_uri: str,
    mongo_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LUCID_MONGODB_URI", mongodb_uri)
    monkeypatch.setenv("LUCID_MONGODB_DATABASE", mongo_database)
    write_images(tmp_path / "shots", 5)
    _, out, _ = cli("import", str(tmp_path / "shots"), "--name", "in mongo")
    sid = out.strip()
    _, listing, _ = cli("ls")
    assert sid in listing and "in mongo" in listing
    _, shown, _ = cli("show", sid)
    assert "completed" in shown
    cli("verify", sid)
    bundle = tmp_path / "evidence.tar"
    cli("export", sid, "-o", str(bundle))
    cli("verify", str(bundle))
    cli("audit", "verify")
    assert not (cli.data_dir / "metadata.db").exists()
    # Without the URI the same folder holds no sessions: the metadata really is elsewhere.
    monkeypatch.delenv("LUCID_MONGODB_URI")
    _, listing, _ = cli("ls")
    assert sid not in listing


def test_an_unreachable_mongodb_is_one_clear_error(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("LUCID_MONGODB_URI", f"mongodb://lucid:S3cret-pw@127.0.0.1:{port}/")
    write_images(tmp_path / "shots", 2)
    _, _, err = cli("import", str(tmp_path / "shots"), "--name", "x", expect=1)
    assert err.startswith("error: MongoDB at") and "unreachable" in err
    assert "S3cret-pw" not in err
