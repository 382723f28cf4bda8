"""The manifest: canonical bytes, strict parsing, time lookups."""

from __future__ import annotations

import json

import pytest

from lucid_sessions.errors import FormatError
from lucid_sessions.manifest import Manifest, ManifestChunk, parse_manifest


def _manifest(n=3):
    chunks = tuple(
        ManifestChunk(i, i * 10_000_000, i * 10_000_000 + 9_900_000, 100, 1000, 500, f"{i:064x}")
        for i in range(n)
    )
    return Manifest(
        session_id="ses_x",
        name="n",
        status="completed",
        created_at="t",
        started_at="t",
        ended_at=None,
        hash_algorithm="blake3",
        key_id="k" * 32,
        tree_size=n,
        root="ab" * 32,
        chunks=chunks,
        metadata={"tags": ["a"]},
    )


def test_canonical_bytes_round_trip():
    manifest = _manifest()
    data = manifest.to_bytes()
    assert parse_manifest(data) == manifest
    assert parse_manifest(data).to_bytes() == data
    assert b" " not in data


def test_chunk_for_time_is_a_lookup():
    manifest = _manifest(5)
    assert manifest.chunk_for_time(0).sequence == 0
    assert manifest.chunk_for_time(25_000_000).sequence == 2
    assert manifest.chunk_for_time(10**12).sequence == 4


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("root"), "root is missing"),
        (lambda d: d.update(version=2), "version 2 is not supported"),
        (lambda d: d.update(hash_algorithm="md5"), "unknown hash_algorithm"),
        (lambda d: d.update(tree_size=9), "tree_size 9"),
        (lambda d: d["chunks"][1].update(sequence=5), r"chunks\[1\] has sequence 5"),
        (lambda d: d["chunks"][0].update(leaf_hash="zz"), "leaf_hash is not hex"),
        (lambda d: d["chunks"][0].update(frame_count="7"), "frame_count has the wrong type"),
        (lambda d: d["chunks"][0].update(end_us=-1), "negative"),
        (lambda d: d.update(root="ab"), "root must be 32 bytes"),
    ],
)
def test_malformed_manifests_are_refused_naming_the_field(edit, message):
    data = json.loads(_manifest().to_bytes())
    edit(data)
    with pytest.raises(FormatError, match=message):
        parse_manifest(json.dumps(data).encode())
