"""The command line end to end: import, list, show, export, verify, frame, keys."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.conftest import Cli, moving_frames


def _session_files(data_dir: Path, session: str) -> dict[str, bytes]:
    folder = data_dir / "chunks" / session
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_import_prints_only_the_session_id_and_ls_show_describe_it(cli: Cli, imported):
    session, frames = imported
    assert session.startswith("ses_")
    _, out, _ = cli("ls")
    assert session in out and "completed" in out and "fixture" in out
    _, out, _ = cli("show", session)
    assert f"frames       {len(frames)} " in out
    assert "root" in out and "blake3" in out


def test_frame_at_a_time_equals_the_imported_screenshot(cli: Cli, imported, tmp_path):
    session, frames = imported
    for seconds, index in [(0, 0), (3.4, 6), (7.5, 15), (12.0, 24), (99, 24)]:
        out = tmp_path / f"f{index}.png"
        cli("frame", session, "--at", str(seconds), "-o", str(out))
        got = np.asarray(Image.open(out).convert("RGB"))
        assert np.array_equal(got, frames[index]), f"at {seconds}s"


def test_verify_session_checks_signature_root_and_decodes_every_frame(cli: Cli, imported):
    session, frames = imported
    _, out, _ = cli("verify", session)
    assert out.startswith(f"OK: session {session}")
    assert "(trusted key)" in out
    assert f"{len(frames)} frames" in out


def test_bundle_verifies_on_a_machine_that_never_saw_the_data_dir(cli: Cli, imported, tmp_path):
    session, frames = imported
    bundle = tmp_path / "evidence.tar"
    key = tmp_path / "session.key"
    cli("export", session, "-o", str(bundle))
    cli("keys", "export", session, "-o", str(key))
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    pub = tmp_path / "cluster.pem"
    cli("keys", "public", "-o", str(pub))
    elsewhere = Cli(tmp_path / "no-such-data-dir")
    _, out, _ = elsewhere("verify", str(bundle), "--key-file", str(key), "--trusted-key", str(pub))
    assert out.startswith(f"OK: session {session}")
    assert "(trusted key)" in out and f"{len(frames)} frames" in out
    assert not (tmp_path / "no-such-data-dir").exists()


def test_excerpt_carries_only_the_chunks_of_the_range_with_proofs(cli: Cli, tmp_path):
    from tests.bundles import read_members
    from tests.conftest import write_images

    write_images(tmp_path / "shots", 25)
    _, out, _ = cli("import", str(tmp_path / "shots"), "--name", "long", "--fps", "0.5")
    session = out.strip()  # 25 frames, 2 s apart: chunks 0-8, 10-18, 20-28, 30-38, 40-48 s
    bundle = tmp_path / "excerpt.tar"
    cli("export", session, "-o", str(bundle), "--from", "15", "--to", "31")
    members = read_members(bundle)
    chunks = sorted(n for n in members if n.startswith("chunks/"))
    assert chunks == ["chunks/00000001.chunk", "chunks/00000002.chunk", "chunks/00000003.chunk"]
    _, out, _ = cli("verify", str(bundle))
    assert out.startswith(f"OK: excerpt of session {session}: 3 of 3 chunks")


def test_import_of_a_video_keeps_its_timing_and_resamples_with_fps(cli: Cli, tmp_path):
    import av

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        for _, pixels in moving_frames(30):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    _, out, _ = cli("import", str(path), "--name", "clip")
    _, shown, _ = cli("show", out.strip())
    assert "frames       30 " in shown and "duration     2.900 s" in shown
    _, out, _ = cli("import", str(path), "--name", "clip", "--fps", "5")
    _, shown, _ = cli("show", out.strip())
    assert "frames       15 " in shown


def test_sha256_sessions_verify_too(cli: Cli, tmp_path):
    from tests.conftest import write_images

    write_images(tmp_path / "s", 5)
    _, out, _ = cli("import", str(tmp_path / "s"), "--name", "sha", "--hash", "sha256")
    _, shown, _ = cli("show", out.strip())
    assert "hash         sha256" in shown
    cli("verify", out.strip())


def test_keys_rotate_rewraps_data_keys_and_leaves_chunks_untouched(cli: Cli, imported, data_dir):
    session, _ = imported
    before = _session_files(data_dir, session)
    old_key = (data_dir / "keys" / "master.key").read_bytes()
    _, out, _ = cli("keys", "rotate")
    assert "1 data keys re-wrapped" in out
    assert (data_dir / "keys" / "master.key").read_bytes() != old_key
    assert not (data_dir / "keys" / "master.key.new").exists()
    assert _session_files(data_dir, session) == before
    _, out, _ = cli("verify", session)
    assert out.startswith("OK")


def test_keys_rotate_with_a_configured_key_needs_and_uses_a_new_key_file(
    cli: Cli, tmp_path, monkeypatch
):
    from tests.conftest import write_images

    monkeypatch.setenv("LUCID_MASTER_KEY", "11" * 32)
    write_images(tmp_path / "s", 3)
    _, out, _ = cli("import", str(tmp_path / "s"), "--name", "env-key")
    session = out.strip()
    _, _, err = cli("keys", "rotate", expect=1)
    assert "pass --new-key-file" in err
    new_file = tmp_path / "new.key"
    cli("keys", "rotate", "--new-key-file", str(new_file))
    assert oct(new_file.stat().st_mode & 0o777) == "0o600"
    _, _, err = cli("verify", session, expect=1)
    monkeypatch.delenv("LUCID_MASTER_KEY")
    monkeypatch.setenv("LUCID_MASTER_KEY_FILE", str(new_file))
    _, out, _ = cli("verify", session)
    assert out.startswith("OK") and "3 frames" in out


def test_an_interrupted_rotation_is_completed_on_next_use(cli: Cli, imported, data_dir):
    import asyncio

    from lucid_sessions.archive import keys as keys_module
    from lucid_sessions.storage.datadir import DataDir

    session, _ = imported
    real_replace = os.replace

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after the re-wrap transaction

    async def rotate() -> None:
        datadir = DataDir.open(data_dir)
        keys_module.os.replace = crash
        try:
            await keys_module.rotate_master_key(datadir)
        finally:
            keys_module.os.replace = real_replace
            await datadir.close()

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(rotate())
    assert (data_dir / "keys" / "master.key.new").exists()
    _, out, _ = cli("verify", session)
    assert out.startswith("OK")
    assert not (data_dir / "keys" / "master.key.new").exists()


def test_demo_records_verifies_and_exports(cli: Cli):
    _, out, _ = cli("demo", "--seconds", "3", "--fps", "5", "--resolution", "640x360")
    assert "verify: OK (15 frames decoded)" in out


def test_the_console_script_is_installed_and_documents_every_command():
    exe = shutil.which("lucid-sessions") or str(Path(sys.executable).parent / "lucid-sessions")
    result = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    commands = [
        "import",
        "ls",
        "show",
        "export",
        "verify",
        "frame",
        "render",
        "keys",
        "demo",
        "record",
        "serve",
    ]
    for command in commands:
        assert f"  {command} " in result.stdout or f"  {command}\n" in result.stdout
        assert f"lucid-sessions {command}" in readme, f"README does not document {command}"
