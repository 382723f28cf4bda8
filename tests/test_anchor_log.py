"""The local anchor log: append-only, hash-chained, signed; edits are found and named."""

from __future__ import annotations

import asyncio
import json

import pytest

from lucid_sessions.anchoring import LocalAnchorLog
from lucid_sessions.crypto import ClusterKey
from lucid_sessions.errors import StorageError


@pytest.fixture
def log(tmp_path):
    key = ClusterKey.generate()
    anchor_log = LocalAnchorLog(tmp_path / "anchors.jsonl", key)
    for i in range(4):
        asyncio.run(anchor_log.anchor(f"ses_{i}", f"{i:064x}"))
    return anchor_log, key


def _rewrite(path, edit):
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    entries = edit(entries)
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))


def test_receipts_chain_and_verify(log):
    anchor_log, key = log
    receipt = asyncio.run(anchor_log.anchor("ses_1", f"{1:064x}"))
    assert (receipt.chain, receipt.block) == ("local", 1)
    assert anchor_log.verify(key.public_key_bytes()) == []


def test_a_second_root_for_the_same_session_is_refused(log):
    anchor_log, _ = log
    with pytest.raises(StorageError, match="already anchored with another root"):
        asyncio.run(anchor_log.anchor("ses_1", "ff" * 32))


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda e: [*e[:1], {**e[1], "root": "00" * 32}, *e[2:]], "entry 1: edited"),
        (lambda e: [e[0], *e[2:]], "entry 1: out of order"),
        (lambda e: [e[0], e[2], e[1], e[3]], "entry 1: out of order"),
        (lambda e: [*e[:3], {**e[3], "signature": "zz"}], "entry 3: signature"),
    ],
)
def test_edits_removals_and_reorderings_are_named(log, edit, problem):
    anchor_log, key = log
    _rewrite(anchor_log.path, edit)
    assert anchor_log.verify(key.public_key_bytes())[0].startswith(problem)
