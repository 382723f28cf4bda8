"""Every tamper class is detected by `verify`, which names the first bad chunk and why.

Each case is run against a session in its data directory and against an exported bundle.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from tests.bundles import read_members, write_members
from tests.conftest import Cli, write_images

from lucid_sessions.crypto import ClusterKey, load_public_key
from lucid_sessions.manifest import signed_message


@pytest.fixture
def sessions(cli: Cli, tmp_path: Path) -> tuple[str, str]:
    """Two finished sessions of 5 chunks each (25 screenshots, 2 s apart)."""
    write_images(tmp_path / "shots", 25)
    ids = []
    for name in ("first", "second"):
        _, out, _ = cli("import", str(tmp_path / "shots"), "--name", name, "--fps", "0.5")
        ids.append(out.strip())
    return ids[0], ids[1]


def _chunk(data_dir: Path, session: str, sequence: int) -> Path:
    return data_dir / "chunks" / session / f"{sequence:08d}.chunk"


def _flip(data: bytes, at: int = 200) -> bytes:
    damaged = bytearray(data)
    damaged[at] ^= 0x40
    return bytes(damaged)


# Each tamper takes (files, other, session): `files` maps "chunks/N" and "manifest" names to
# bytes and is edited in place; `other` holds the second session's chunks.
def flip_byte(files, other, session):
    files["chunks/00000002.chunk"] = _flip(files["chunks/00000002.chunk"])


def delete_chunk(files, other, session):
    del files["chunks/00000003.chunk"]


def swap_chunks(files, other, session):
    a, b = "chunks/00000001.chunk", "chunks/00000003.chunk"
    files[a], files[b] = files[b], files[a]


def foreign_chunk(files, other, session):
    files["chunks/00000002.chunk"] = other["chunks/00000002.chunk"]


def truncate_last(files, other, session):
    files["chunks/00000004.chunk"] = files["chunks/00000004.chunk"][:-100]


def edit_manifest(files, other, session):
    manifest = json.loads(files["manifest.json"])
    manifest["chunks"][1]["end_us"] += 1
    files["manifest.json"] = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def resign_manifest(files, other, session):
    manifest = json.loads(files["manifest.json"])
    manifest["name"] = "forged"
    data = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    forger = ClusterKey.generate()
    files["manifest.json"] = data
    files["manifest.sig"] = forger.sign(signed_message(data))
    files["public_key.pem"] = forger.public_key_pem()


CASES = [
    (flip_byte, "chunk 2: altered"),
    (delete_chunk, "chunk 3: missing"),
    (swap_chunks, "chunk 1: reordered: holds the bytes of chunk 3"),
    (foreign_chunk, "chunk 2: altered"),
    (truncate_last, "chunk 4: truncated"),
    (edit_manifest, "manifest: signature: the manifest signature does not match"),
    (resign_manifest, "manifest: signature: signed by key"),
]


def _apply_to_data_dir(data_dir: Path, session: str, other: str, tamper) -> None:
    """Apply a tamper to the chunk files and the manifest row of a stored session."""
    chunk_dir = data_dir / "chunks" / session
    files = {f"chunks/{p.name}": p.read_bytes() for p in chunk_dir.iterdir()}
    others = {f"chunks/{p.name}": p.read_bytes() for p in (data_dir / "chunks" / other).iterdir()}
    db = sqlite3.connect(data_dir / "metadata.db")
    manifest, signature, public_key = db.execute(
        "SELECT manifest, signature, public_key FROM manifests WHERE session_id=?", (session,)
    ).fetchone()
    files.update({"manifest.json": manifest, "manifest.sig": signature})
    tamper(files, others, session)
    for p in chunk_dir.iterdir():
        p.unlink()
    for name, data in files.items():
        if name.startswith("chunks/"):
            (chunk_dir / name.removeprefix("chunks/")).write_bytes(data)
    if "public_key.pem" in files:
        public_key = load_public_key(files["public_key.pem"])
    db.execute(
        "UPDATE manifests SET manifest=?, signature=?, public_key=? WHERE session_id=?",
        (files["manifest.json"], files["manifest.sig"], public_key, session),
    )
    db.commit()
    db.close()


@pytest.mark.parametrize(("tamper", "expected"), CASES, ids=[c[0].__name__ for c in CASES])
def test_tampering_a_stored_session_is_found_and_located(cli, data_dir, sessions, tamper, expected):
    session, other = sessions
    cli("verify", session)
    _apply_to_data_dir(data_dir, session, other, tamper)
    _, out, _ = cli("verify", session, expect=1)
    first = out.splitlines()[0]
    assert first.startswith(f"FAILED: session {session}: {expected}"), out


@pytest.mark.parametrize(("tamper", "expected"), CASES, ids=[c[0].__name__ for c in CASES])
def test_tampering_a_bundle_is_found_and_located(cli, sessions, tmp_path, tamper, expected):
    session, other = sessions
    bundle, other_bundle = tmp_path / "a.tar", tmp_path / "b.tar"
    cli("export", session, "-o", str(bundle))
    cli("export", other, "-o", str(other_bundle))
    pub = tmp_path / "cluster.pem"
    cli("keys", "public", "-o", str(pub))
    files = read_members(bundle)
    tamper(files, read_members(other_bundle), session)
    write_members(bundle, files)
    _, out, _ = cli("verify", str(bundle), "--trusted-key", str(pub), expect=1)
    first = out.splitlines()[0]
    assert first.startswith(f"FAILED: session {session}: {expected}"), out


def test_a_re_signed_bundle_passes_only_without_a_trusted_key_and_says_so(cli, sessions, tmp_path):
    session, _ = sessions
    bundle = tmp_path / "a.tar"
    cli("export", session, "-o", str(bundle))
    files = read_members(bundle)
    resign_manifest(files, {}, session)
    write_members(bundle, files)
    _, out, _ = cli("verify", str(bundle))
    assert "enclosed, not checked against a trusted key" in out


def test_with_the_data_key_a_foreign_chunk_with_matching_hash_still_fails_to_decrypt(
    cli, sessions, tmp_path
):
    """A manifest re-signed over a foreign chunk passes hashing; decryption catches it."""
    session, other = sessions
    bundle, other_bundle = tmp_path / "a.tar", tmp_path / "b.tar"
    key = tmp_path / "a.key"
    cli("export", session, "-o", str(bundle))
    cli("export", other, "-o", str(other_bundle))
    cli("keys", "export", session, "-o", str(key))
    files = read_members(bundle)
    files["chunks/00000002.chunk"] = read_members(other_bundle)["chunks/00000002.chunk"]
    from lucid_sessions.manifest import parse_manifest
    from lucid_sessions.merkle import MerkleTree, get_hasher

    manifest = json.loads(files["manifest.json"])
    hasher = get_hasher("blake3")
    manifest["chunks"][2]["leaf_hash"] = hasher.leaf_hash(files["chunks/00000002.chunk"]).hex()
    leaves = [bytes.fromhex(c["leaf_hash"]) for c in manifest["chunks"]]
    manifest["root"] = MerkleTree(hasher, leaves).root().hex()
    data = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    parse_manifest(data)
    forger = ClusterKey.generate()
    files.update(
        {
            "manifest.json": data,
            "manifest.sig": forger.sign(signed_message(data)),
            "public_key.pem": forger.public_key_pem(),
        }
    )
    write_members(bundle, files)
    _, out, _ = cli("verify", str(bundle), "--key-file", str(key), expect=1)
    assert out.splitlines()[0].startswith(f"FAILED: session {session}: chunk 2: decrypt")
