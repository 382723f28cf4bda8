"""The anchor receipt in the evidence, and `verify --chain-url` reading the chain.

Without a URL, verify checks everything else offline and says the anchor was not
checked. With one, the root anchored for the session must be the manifest's: the local
backend's log (a path), or the LucidAnchor contract on a real hardhat chain.
"""

from __future__ import annotations

import asyncio
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from tests import evm_fixtures
from tests.bundles import read_members, write_members
from tests.conftest import Cli

from lucid_sessions.anchoring import LocalAnchorLog
from lucid_sessions.anchoring.job import AnchorJobs
from lucid_sessions.archive.bundle import Bundle
from lucid_sessions.storage.datadir import DataDir


def _anchor(data_dir: Path, session: str, anchor: Any = None) -> dict[str, Any]:
    """Run the anchoring job for an imported session; its final state."""

    async def run() -> dict[str, Any]:
        datadir = DataDir.open(data_dir)
        try:
            backend = anchor or LocalAnchorLog(data_dir / "anchors.jsonl", datadir.cluster_key())
            root = (await datadir.store.get_manifest(session)).manifest
            jobs = AnchorJobs(datadir.store, backend, max_attempts=2, backoff_s=0.05)
            await jobs.submit(session, json.loads(root)["root"])
            state = await jobs.wait(session, timeout=60)
            await jobs.close()
            return state
        finally:
            await datadir.close()

    return asyncio.run(run())


@pytest.fixture
def anchored(
    cli: Cli, imported: tuple[str, Any], tmp_path: Path
) -> tuple[str, dict[str, Any], Path]:
    """An imported session anchored in the data directory's log, and its bundle."""
    session = imported[0]
    state = _anchor(cli.data_dir, session)
    assert state["state"] == "confirmed", state
    bundle = tmp_path / "evidence.tar"
    cli("export", session, "-o", str(bundle))
    return session, state, bundle


def test_the_bundle_carries_the_receipt_and_verify_says_it_was_not_checked(cli, anchored):
    session, state, bundle = anchored
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
    assert names[:6] == [
        "lucid-bundle.json",
        "manifest.json",
        "manifest.sig",
        "public_key.pem",
        "proofs.json",
        "anchor.json",
    ]
    with Bundle(bundle) as opened:
        assert opened.index["anchor"] == "anchor.json"
        assert opened.anchor is not None
        receipt = opened.anchor
    assert receipt["session_id"] == session and receipt["state"] == "confirmed"
    assert receipt["root"] == state["root"]
    assert (receipt["chain"], receipt["transaction"], receipt["block"]) == (
        "local",
        state["transaction"],
        0,
    )
    _, out, _ = cli("verify", str(bundle))
    assert out.startswith(f"OK: session {session}")
    line = (
        "anchor: not checked (no --chain-url); "
        f"receipt says local tx {state['transaction']} block 0"
    )
    assert line in out.splitlines()
    _, out, _ = cli("verify", session)
    assert line in out.splitlines()
    _, out, _ = cli("show", session)
    assert f"confirmed on local at {state['location']} in tx {state['transaction']}, block 0" in out


def test_a_session_without_a_receipt_says_so(cli, imported, tmp_path):
    session = imported[0]
    bundle = tmp_path / "plain.tar"
    cli("export", session, "-o", str(bundle))
    with Bundle(bundle) as opened:
        assert opened.anchor is None and opened.index["anchor"] is None
    _, out, _ = cli("verify", str(bundle))
    assert "anchor: no receipt" in out.splitlines()
    _, _, err = cli("verify", str(bundle), "--chain-url", "/no/such/log", expect=1)
    assert err.startswith("error:") and "--chain" in err
    _, _, err = cli("verify", str(bundle), "--contract", "0x" + "00" * 20, expect=2)
    assert "--chain-url" in err


def test_chain_url_confirms_the_root_in_the_local_log(cli, anchored, tmp_path):
    session, state, bundle = anchored
    log = cli.data_dir / "anchors.jsonl"
    elsewhere = Cli(tmp_path / "no-such-data-dir")
    _, out, _ = elsewhere("verify", str(bundle), "--chain-url", str(log))
    assert out.startswith(f"OK: session {session}")
    assert (
        f"anchor: confirmed on local at {log} in tx {state['transaction']}, block 0 "
        "(entry signed by the manifest's key)"
    ) in out.splitlines()
    _, out, _ = cli("verify", session, "--chain-url", log.as_uri(), "--chain", "local")
    assert "anchor: confirmed on local" in out


def test_chain_url_detects_another_root_a_missing_entry_and_an_edited_log(cli, anchored, tmp_path):
    session, state, bundle = anchored
    key_source = DataDir.open(cli.data_dir)
    signer = key_source.cluster_key()
    asyncio.run(key_source.close())
    other = tmp_path / "other.jsonl"
    asyncio.run(LocalAnchorLog(other, signer).anchor(session, "ab" * 32))
    _, out, _ = cli("verify", str(bundle), "--chain-url", str(other), expect=1)
    first = out.splitlines()[0]
    assert first == (
        f"FAILED: session {session}: anchor: the anchor log {other} holds root {'ab' * 32} "
        f"for this session, not the manifest's {state['root']}"
    )
    assert not any(line.startswith("anchor: confirmed") for line in out.splitlines())

    empty = tmp_path / "empty.jsonl"
    asyncio.run(LocalAnchorLog(empty, signer).anchor("ses_someone_else", "cd" * 32))
    _, out, _ = cli("verify", str(bundle), "--chain-url", str(empty), expect=1)
    assert f"anchor: no root for session {session} in the anchor log {empty}" in out

    edited = tmp_path / "edited.jsonl"
    entry = json.loads((cli.data_dir / "anchors.jsonl").read_text().splitlines()[0])
    entry["time"] = "2000-01-01T00:00:00Z"
    edited.write_text(json.dumps(entry) + "\n")
    _, out, _ = cli("verify", str(bundle), "--chain-url", str(edited), expect=1)
    assert "anchor: the anchor log" in out and "is not intact: entry 0: edited" in out


def test_a_bundle_with_an_unnamed_or_malformed_receipt_is_refused(cli, anchored, tmp_path):
    _, _, bundle = anchored
    members = read_members(bundle)
    index = json.loads(members["lucid-bundle.json"])
    index["anchor"] = None
    members["lucid-bundle.json"] = json.dumps(index).encode()
    write_members(bundle, members)
    _, _, err = cli("verify", str(bundle), expect=1)
    assert "holds anchor.json but its index does not name it" in err
    index["anchor"] = "anchor.json"
    members["lucid-bundle.json"] = json.dumps(index).encode()
    members["anchor.json"] = b'{"format": "something else"}'
    write_members(bundle, members)
    _, _, err = cli("verify", str(bundle), expect=1)
    assert "anchor.json is not an anchor receipt" in err


# On a real EVM chain (hardhat): skipped when Node.js or the npm tools are unavailable.


# The session-wide fixtures, used here only (conftest.py does not import them).
npm_tools = evm_fixtures.npm_tools
hardhat = evm_fixtures.hardhat


@pytest.fixture
def evm_chain(hardhat: evm_fixtures.HardhatChain) -> evm_fixtures.HardhatChain:
    return hardhat


def test_verify_reads_the_root_from_an_evm_contract(cli, imported, tmp_path, evm_chain):
    from lucid_sessions.anchoring.evm import EvmAnchor, deploy_contract

    session = imported[0]
    contract = deploy_contract(evm_chain.url, evm_chain.private_key)
    anchor = EvmAnchor(evm_chain.url, contract, evm_chain.private_key, timeout_s=20)
    state = _anchor(cli.data_dir, session, anchor)
    assert state["state"] == "confirmed", state
    assert state["chain"] == "evm" and state["anchorer"] == evm_chain.address
    bundle = tmp_path / "evm.tar"
    cli("export", session, "-o", str(bundle))
    elsewhere = Cli(tmp_path / "no-such-data-dir")
    _, out, _ = elsewhere("verify", str(bundle))
    assert (
        f"anchor: not checked (no --chain-url); receipt says evm tx {state['transaction']} "
        f"block {state['block']}"
    ) in out.splitlines()
    _, out, _ = elsewhere(
        "verify",
        str(bundle),
        "--chain-url",
        evm_chain.url,
        "--contract",
        contract,
        "--anchorer",
        evm_chain.address,
    )
    assert out.startswith(f"OK: session {session}")
    assert (
        f"anchor: confirmed on evm at {contract} in tx {state['transaction']}, "
        f"block {state['block']}, by {evm_chain.address}"
    ) in out.splitlines()
    # Unpinned, the contract and the address come from the receipt, and verify says so.
    _, out, _ = elsewhere("verify", str(bundle), "--chain-url", evm_chain.url)
    assert "not pinned" in out

    # What the chain proves: the root recorded for this session by this address in this
    # contract. A contract where the same address anchored another root for the same
    # session (a rewritten history, as someone holding the key could try elsewhere) does
    # not confirm this bundle: its signed root is not the one on chain.
    forged = deploy_contract(evm_chain.url, evm_chain.private_key)
    asyncio.run(
        EvmAnchor(evm_chain.url, forged, evm_chain.private_key, timeout_s=20).anchor(
            session, "ef" * 32
        )
    )
    _, out, _ = elsewhere(
        "verify", str(bundle), "--chain-url", evm_chain.url, "--contract", forged, expect=1
    )
    assert out.splitlines()[0] == (
        f"FAILED: session {session}: anchor: the root on evm at {forged} for this session is "
        f"{'ef' * 32}, not the manifest's {state['root']}"
    )
    # Another anchoring address never anchored this session at all.
    _, out, _ = elsewhere(
        "verify",
        str(bundle),
        "--chain-url",
        evm_chain.url,
        "--contract",
        contract,
        "--anchorer",
        evm_chain.other_address,
        expect=1,
    )
    assert f"anchor: no root for session {session} on evm at {contract}" in out


def test_the_api_shows_the_anchor_state_and_exports_the_receipt(tmp_path):
    from tests.test_api_evidence import _export
    from tests.test_api_support import ApiCluster

    with ApiCluster(tmp_path / "data") as api:
        manifest = api.import_session(20, fps=2)
        sid = manifest.session_id
        assert api.client.get(f"/api/v1/sessions/{sid}").json()["anchor"] is None
        api.run(api.pipeline.anchor_jobs.submit, sid, manifest.root)
        state = api.run(api.pipeline.anchor_jobs.wait, sid)
        shown = api.client.get(f"/api/v1/sessions/{sid}").json()["anchor"]
        path = _export(api, f"/api/v1/sessions/{sid}/export", tmp_path / "api.tar")
        status = api.client.get("/api/v1/pipeline/status").json()
    assert shown == state and shown["state"] == "confirmed" and shown["root"] == manifest.root
    assert status["anchoring"]["backend"] == "local" and status["anchoring"]["confirmed"] == 1
    with Bundle(path) as bundle:
        assert bundle.anchor is not None
        assert bundle.anchor["transaction"] == state["transaction"]
