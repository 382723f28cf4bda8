"""Chunks and evidence through the API, over sessions stored in a real data directory."""

from __future__ import annotations

import base64
import itertools
import threading
import time
from pathlib import Path

import pytest
from tests.test_api_support import ApiCluster, api_fixture, assert_error  # noqa: F401

from lucid_sessions.api import ApiSettings
from lucid_sessions.archive.bundle import Bundle
from lucid_sessions.archive.verify import verify_evidence
from lucid_sessions.crypto import verify_signature
from lucid_sessions.manifest import parse_manifest, signed_message
from lucid_sessions.merkle import get_hasher, verify_inclusion


@pytest.fixture
def stored(api: ApiCluster) -> str:
    """A finished session of three chunks (25 s of frames at 2 fps, 10 s per chunk)."""
    manifest = api.import_session(50, fps=2)
    assert manifest.tree_size == 3
    return manifest.session_id


def _chunks(api: ApiCluster, sid: str, **params: object) -> dict:
    response = api.client.get(f"/api/v1/sessions/{sid}/chunks", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_chunks_are_listed_with_times_from_the_session_start(api: ApiCluster, stored: str) -> None:
    page = _chunks(api, stored)
    assert (page["total"], page["has_next"], page["limit"]) == (3, False, 50)
    items = page["items"]
    assert [c["sequence"] for c in items] == [0, 1, 2]
    assert items[0]["start_s"] == 0
    assert all(c["status"] == "stored" for c in items)
    assert all(a["end_s"] <= b["start_s"] for a, b in itertools.pairwise(items))
    records = api.run(api.storage.list_chunks, stored)
    assert [c["leaf_hash"] for c in items] == [r.leaf_hash for r in records]


def test_chunks_paginate_and_filter_by_time_and_status(api: ApiCluster, stored: str) -> None:
    everything = _chunks(api, stored)["items"]
    page = _chunks(api, stored, limit=2)
    assert [c["sequence"] for c in page["items"]] == [0, 1]
    assert page["total"] == 3 and page["has_next"]
    rest = _chunks(api, stored, limit=2, offset=2)
    assert [c["sequence"] for c in rest["items"]] == [2] and not rest["has_next"]
    for start, end in ((12.0, None), (None, 5.0), (9.8, 10.2), (30.0, None)):
        params = {k: v for k, v in (("start_time", start), ("end_time", end)) if v is not None}
        expected = [
            c["sequence"]
            for c in everything
            if (start is None or c["end_s"] >= start) and (end is None or c["start_s"] <= end)
        ]
        found = _chunks(api, stored, **params)
        assert [c["sequence"] for c in found["items"]] == expected, params
        assert found["total"] == len(expected)
    assert _chunks(api, stored, status="stored")["total"] == 3
    assert _chunks(api, stored, status="failed")["total"] == 0


def test_one_chunk_and_unknown_chunks(api: ApiCluster, stored: str) -> None:
    response = api.client.get(f"/api/v1/sessions/{stored}/chunks/1")
    assert response.status_code == 200
    assert response.json()["sequence"] == 1
    assert_error(api.client.get(f"/api/v1/sessions/{stored}/chunks/9"), 404, "LUCID_ERR_3005")
    assert_error(api.client.get("/api/v1/sessions/nosuch/chunks"), 404, "LUCID_ERR_3001")


def test_a_chunk_download_streams_the_stored_bytes(tmp_path: Path) -> None:
    with ApiCluster(tmp_path / "data", settings=ApiSettings(stream_piece=4096)) as api:
        sid = api.import_session(50, fps=2).session_id
        on_disk = api.datadir.chunks.get(sid, 1)
        url = f"/api/v1/sessions/{sid}/chunks/1/download"
        with api.client.stream("GET", url) as response:
            assert response.status_code == 200
            pieces = list(response.iter_raw())
        assert b"".join(pieces) == on_disk
        assert len(pieces) > 1
        assert response.headers["content-length"] == str(len(on_disk))
        assert response.headers["content-type"] == "application/octet-stream"
        assert (
            response.headers["content-disposition"]
            == f'attachment; filename="{sid}-00000001.chunk"'
        )
        assert_error(
            api.client.get(f"/api/v1/sessions/{sid}/chunks/7/download"), 404, "LUCID_ERR_3005"
        )


def test_the_manifest_comes_with_a_signature_that_holds(api: ApiCluster, stored: str) -> None:
    body = api.client.get(f"/api/v1/sessions/{stored}/manifest").json()
    raw = base64.b64decode(body["manifest_base64"])
    assert parse_manifest(raw).to_dict() == body["manifest"]
    key = bytes.fromhex(body["public_key"])
    assert key == base64.b64decode(body["public_key_base64"])
    assert key == api.datadir.existing_cluster_public_key()
    assert body["signing_context"].encode() + raw == signed_message(raw)
    assert verify_signature(key, bytes.fromhex(body["signature"]), signed_message(raw))
    assert body["algorithm"] == "ed25519"
    assert body["manifest"]["root"] == api.client.get(f"/api/v1/sessions/{stored}").json()["root"]


def test_every_inclusion_proof_leads_to_the_signed_root(api: ApiCluster, stored: str) -> None:
    for sequence in range(3):
        proof = api.client.get(f"/api/v1/sessions/{stored}/proof/{sequence}").json()
        hasher = get_hasher(proof["hash_algorithm"])
        assert proof["tree_size"] == 3
        assert (
            proof["leaf_hash"] == hasher.leaf_hash(api.datadir.chunks.get(stored, sequence)).hex()
        )
        assert verify_inclusion(
            hasher,
            sequence,
            proof["tree_size"],
            bytes.fromhex(proof["leaf_hash"]),
            [bytes.fromhex(p) for p in proof["path"]],
            bytes.fromhex(proof["root"]),
        )
    assert_error(api.client.get(f"/api/v1/sessions/{stored}/proof/3"), 404, "LUCID_ERR_3005")


def test_server_side_verification_names_the_first_bad_chunk(api: ApiCluster, stored: str) -> None:
    good = api.client.get(f"/api/v1/sessions/{stored}/verify").json()
    assert good["ok"] and good["first_failure"] is None
    assert (good["chunks_expected"], good["chunks_checked"]) == (3, 3)
    path = api.datadir.chunks.path(stored, 1)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    bad = api.client.get(f"/api/v1/sessions/{stored}/verify").json()
    assert not bad["ok"]
    assert bad["first_failure"] == {
        "kind": "altered",
        "message": bad["first_failure"]["message"],
        "sequence": 1,
    }
    assert [f["sequence"] for f in bad["failures"]] == [1]
    api.datadir.chunks.path(stored, 2).unlink()
    worse = api.client.get(f"/api/v1/sessions/{stored}/verify").json()
    assert [(f["kind"], f["sequence"]) for f in worse["failures"]] == [
        ("altered", 1),
        ("missing", 2),
    ]


def test_verification_checks_the_trusted_key_when_configured(tmp_path: Path) -> None:
    import asyncio

    from lucid_sessions.storage.datadir import DataDir

    datadir = DataDir.open(tmp_path / "data", create=True)
    real = datadir.cluster_key().public_key_bytes()
    asyncio.run(datadir.close())
    for trusted, ok in ((real, True), (bytes(32), False)):
        settings = ApiSettings(trusted_public_key=trusted)
        with ApiCluster(tmp_path / "data", settings=settings) as api:
            sid = api.import_session(10, fps=2).session_id
            report = api.client.get(f"/api/v1/sessions/{sid}/verify").json()
        assert report["trusted_key_checked"]
        assert report["ok"] is ok
        if not ok:
            assert report["first_failure"]["kind"] == "signature"


def _export(api: ApiCluster, url: str, target: Path) -> Path:
    with api.client.stream("GET", url) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"] == "application/x-tar"
        assert response.headers["content-disposition"].startswith("attachment; filename=")
        with open(target, "wb") as out:
            for piece in response.iter_raw():
                out.write(piece)
    return target


def test_the_exported_bundle_verifies_offline(api: ApiCluster, stored: str, tmp_path: Path) -> None:
    path = _export(api, f"/api/v1/sessions/{stored}/export", tmp_path / "full.tar")
    with Bundle(path) as bundle:
        assert bundle.session_id == stored and not bundle.excerpt
        assert bundle.sequences() == [0, 1, 2]
        report = verify_evidence(bundle, trusted_key=api.datadir.existing_cluster_public_key())
    assert report.ok, report.failures
    assert report.chunks_checked == 3


def test_an_excerpt_carries_only_the_overlapping_chunks_with_proofs(
    api: ApiCluster, stored: str, tmp_path: Path
) -> None:
    url = f"/api/v1/sessions/{stored}/export?from=12&to=30"
    path = _export(api, url, tmp_path / "part.tar")
    with Bundle(path) as bundle:
        assert bundle.excerpt
        assert bundle.sequences() == [1, 2]
        report = verify_evidence(bundle)
    assert report.ok, report.failures
    assert report.chunks_checked == 2


def test_an_export_streams_in_pieces_and_stops_when_the_client_leaves(tmp_path: Path) -> None:
    settings = ApiSettings(stream_piece=16 * 1024, export_buffer=1)
    with ApiCluster(tmp_path / "data", settings=settings) as api:
        sid = api.import_session(50, fps=2).session_id
        url = f"/api/v1/sessions/{sid}/export"
        with api.client.stream("GET", url) as response:
            pieces = list(response.iter_raw())
        assert len(pieces) > 3
        assert max(len(p) for p in pieces) < 64 * 1024
        with api.client.stream("GET", url) as response:
            first = next(response.iter_raw())
            assert first
        deadline = time.monotonic() + 5
        while any(t.name == "lucid-api-evidence" for t in threading.enumerate()):
            assert time.monotonic() < deadline, "the export thread did not stop"
            time.sleep(0.05)


def test_evidence_of_an_unfinished_session_is_404(api: ApiCluster) -> None:
    sid = api.create()["session_id"]
    for suffix in ("manifest", "proof/0", "verify", "export"):
        error = assert_error(
            api.client.get(f"/api/v1/sessions/{sid}/{suffix}"), 404, "LUCID_ERR_3001"
        )
        assert "manifest" in error["message"]
    assert_error(api.client.get("/api/v1/sessions/nosuch/export"), 404, "LUCID_ERR_3001")


def test_an_export_missing_a_stored_chunk_is_refused_before_the_first_byte(
    api: ApiCluster, stored: str, tmp_path: Path
) -> None:
    api.datadir.chunks.path(stored, 1).unlink()
    error = assert_error(api.client.get(f"/api/v1/sessions/{stored}/export"), 404, "LUCID_ERR_3005")
    assert error["details"]["missing"] == [1]
    path = _export(api, f"/api/v1/sessions/{stored}/export?from=21", tmp_path / "tail.tar")
    with Bundle(path) as bundle:
        assert bundle.sequences() == [2]
        assert verify_evidence(bundle).ok
