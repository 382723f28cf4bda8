"""The ``evm`` anchor backend against a real local chain (hardhat node, tests/evm_fixtures.py).

Each test deploys its own LucidAnchor and uses its own session ids, so tests share the
session-wide node without seeing each other's records.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from tests import evm_fixtures
from tests.evm_fixtures import CHAIN_ID, HardhatChain, rpc
from tests.redis_fixtures import free_port

from lucid_sessions.anchoring.contract import AnchorConflict, AnchorRejected, session_key
from lucid_sessions.anchoring.evm import ENV_KEY, EvmAnchor, deploy_contract, read_anchor
from lucid_sessions.cluster.interfaces import Unavailable
from lucid_sessions.errors import InvalidConfigError

# The session-wide fixtures, used here only (conftest.py does not import them).
npm_tools = evm_fixtures.npm_tools
hardhat = evm_fixtures.hardhat

ROOT_A = "a1" * 32
ROOT_B = "b2" * 32


@pytest.fixture
def contract(hardhat: HardhatChain) -> str:
    return deploy_contract(hardhat.url, hardhat.private_key)


@pytest.fixture
def anchor(hardhat: HardhatChain, contract: str) -> EvmAnchor:
    return EvmAnchor(hardhat.url, contract, hardhat.private_key, timeout_s=20)


def session_id() -> str:
    return f"ses_{uuid.uuid4().hex}"


def nonce(chain: HardhatChain, address: str) -> int:
    return int(str(rpc(chain.url, "eth_getTransactionCount", [address, "latest"])), 16)


def test_anchor_then_read_back(hardhat, contract, anchor):
    sid = session_id()
    receipt = asyncio.run(anchor.anchor(sid, ROOT_A))
    assert receipt.chain == "evm"
    assert receipt.location == f"{CHAIN_ID}:{contract}:{hardhat.address}"
    assert receipt.transaction.startswith("0x") and len(receipt.transaction) == 66
    tx = rpc(hardhat.url, "eth_getTransactionReceipt", [receipt.transaction])
    assert isinstance(tx, dict)
    assert int(tx["status"], 16) == 1 and int(tx["blockNumber"], 16) == receipt.block
    assert tx["from"].lower() == hardhat.address.lower()
    assert tx["to"].lower() == contract.lower()
    (event,) = tx["logs"]
    assert event["topics"][1] == "0x" + session_key(sid).hex()
    found = read_anchor(hardhat.url, contract, sid, hardhat.address)
    assert found is not None
    root, when = found
    assert root == ROOT_A and when > 1_600_000_000
    assert read_anchor(hardhat.url, contract, session_id(), hardhat.address) is None


def test_the_same_root_again_sends_nothing_and_returns_the_first_receipt(hardhat, anchor):
    sid = session_id()
    first = asyncio.run(anchor.anchor(sid, ROOT_A))
    sent = nonce(hardhat, hardhat.address)
    again = EvmAnchor(hardhat.url, anchor.contract_address, hardhat.private_key)
    assert asyncio.run(anchor.anchor(sid, ROOT_A)) == first
    assert asyncio.run(again.anchor(sid, "0x" + ROOT_A.upper())) == first
    assert nonce(hardhat, hardhat.address) == sent


def test_another_root_for_the_same_session_is_a_conflict(hardhat, anchor):
    sid = session_id()
    asyncio.run(anchor.anchor(sid, ROOT_A))
    sent = nonce(hardhat, hardhat.address)
    with pytest.raises(AnchorConflict, match=f"session {sid} is already anchored with another"):
        asyncio.run(anchor.anchor(sid, ROOT_B))
    assert nonce(hardhat, hardhat.address) == sent


def test_the_contract_itself_refuses_a_second_anchor(hardhat, contract, anchor):
    """Past the client's own check: the contract reverts, and says why."""
    sid = session_id()
    asyncio.run(anchor.anchor(sid, ROOT_A))
    key = session_key(sid)
    with pytest.raises(AnchorRejected, match=r"the contract refused: AlreadyAnchored\(by=") as e:
        anchor._call(lambda: anchor._send(key, bytes.fromhex(ROOT_B)))
    assert f"root=0x{ROOT_A}" in str(e.value)
    with pytest.raises(AnchorRejected, match=r"ZeroRoot\(\)"):
        anchor._call(lambda: anchor._send(session_key(session_id()), b"\0" * 32))
    # Mined without the client's checks (explicit gas, hardhat's unlocked account): reverted.
    data = "0x" + anchor._contract.encode_abi("anchor", [key, bytes.fromhex(ROOT_B)])[2:]
    call = {"from": hardhat.address, "to": contract, "data": data, "gas": hex(200_000)}
    with pytest.raises(ValueError, match="reverted") as refused:
        rpc(hardhat.url, "eth_sendTransaction", [call])
    tx_hash = refused.value.args[1]["data"]["txHash"]  # hardhat mines it, then reports
    tx = rpc(hardhat.url, "eth_getTransactionReceipt", [tx_hash])
    assert isinstance(tx, dict) and int(tx["status"], 16) == 0
    assert read_anchor(hardhat.url, contract, sid, hardhat.address) is not None
    assert read_anchor(hardhat.url, contract, sid, hardhat.address)[0] == ROOT_A


def test_another_party_cannot_claim_our_session_id(hardhat, contract, anchor):
    """Front-running with a wrong root lands in the attacker's namespace, not ours."""
    sid = session_id()
    attacker = EvmAnchor(hardhat.url, contract, hardhat.other_key)
    asyncio.run(attacker.anchor(sid, ROOT_B))
    receipt = asyncio.run(anchor.anchor(sid, ROOT_A))
    assert receipt.location.endswith(hardhat.address)
    assert read_anchor(hardhat.url, contract, sid, hardhat.address)[0] == ROOT_A
    assert read_anchor(hardhat.url, contract, sid, hardhat.other_address)[0] == ROOT_B


def test_concurrent_anchors_get_their_own_nonces(hardhat, anchor):
    sids = [session_id() for _ in range(5)]

    async def all_of_them():
        return await asyncio.gather(
            *(anchor.anchor(s, f"{i + 1:064x}") for i, s in enumerate(sids))
        )

    receipts = asyncio.run(all_of_them())
    assert len({r.transaction for r in receipts}) == 5
    for i, sid in enumerate(sids):
        assert read_anchor(hardhat.url, anchor.contract_address, sid, hardhat.address)[0] == (
            f"{i + 1:064x}"
        )


def test_a_retry_after_a_mining_timeout_waits_for_the_same_transaction(hardhat, anchor):
    sid = session_id()
    slow = EvmAnchor(hardhat.url, anchor.contract_address, hardhat.private_key, timeout_s=0.5)
    rpc(hardhat.url, "evm_setAutomine", [False])
    try:
        before = nonce(hardhat, hardhat.address)
        with pytest.raises(Unavailable, match=r"not mined within 0\.5 s"):
            asyncio.run(slow.anchor(sid, ROOT_A))
        rpc(hardhat.url, "evm_mine")
    finally:
        rpc(hardhat.url, "evm_setAutomine", [True])
    receipt = asyncio.run(slow.anchor(sid, ROOT_A))
    assert nonce(hardhat, hardhat.address) == before + 1
    assert read_anchor(hardhat.url, anchor.contract_address, sid, hardhat.address)[0] == ROOT_A
    assert asyncio.run(anchor.anchor(sid, ROOT_A)) == receipt


def test_confirmations_are_waited_for(hardhat, anchor):
    sid = session_id()
    patient = EvmAnchor(
        hardhat.url, anchor.contract_address, hardhat.private_key, confirmations=2, timeout_s=0.5
    )
    with pytest.raises(Unavailable, match="has 1 of 2 confirmations"):
        asyncio.run(patient.anchor(sid, ROOT_A))
    rpc(hardhat.url, "evm_mine")
    receipt = asyncio.run(patient.anchor(sid, ROOT_A))
    assert receipt == asyncio.run(anchor.anchor(sid, ROOT_A))


def test_a_node_that_is_down_is_unavailable(hardhat, contract):
    url = f"http://127.0.0.1:{free_port()}"
    down = EvmAnchor(url, contract, hardhat.private_key, timeout_s=5)
    with pytest.raises(Unavailable, match=r"EVM node http://127.0.0.1:\d+ unreachable"):
        asyncio.run(down.anchor(session_id(), ROOT_A))
    with pytest.raises(Unavailable):
        read_anchor(url, contract, session_id(), hardhat.address)
    with pytest.raises(Unavailable):
        deploy_contract(url, hardhat.private_key)


def test_wrong_chain_or_address_is_a_configuration_error(hardhat, contract):
    wrong_chain = EvmAnchor(hardhat.url, contract, hardhat.private_key, chain_id=1)
    with pytest.raises(InvalidConfigError, match=f"is chain {CHAIN_ID}, not the configured 1"):
        asyncio.run(wrong_chain.anchor(session_id(), ROOT_A))
    nowhere = EvmAnchor(hardhat.url, hardhat.other_address, hardhat.private_key)
    with pytest.raises(InvalidConfigError, match="no contract at"):
        asyncio.run(nowhere.anchor(session_id(), ROOT_A))
    with pytest.raises(InvalidConfigError, match="is not an EVM address"):
        EvmAnchor(hardhat.url, "0x1234", hardhat.private_key)


def test_the_private_key_never_appears_in_logs_errors_or_reprs(
    hardhat, contract, caplog, monkeypatch
):
    secret = hardhat.private_key[2:].lower()
    monkeypatch.setenv(ENV_KEY, hardhat.private_key)
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    anchor = EvmAnchor(hardhat.url, contract)  # key from LUCID_ANCHOR_KEY
    assert anchor.address == hardhat.address
    texts += [repr(anchor), str(anchor), repr(anchor._key), repr(vars(anchor))]
    sid = session_id()
    texts.append(repr(asyncio.run(anchor.anchor(sid, ROOT_A))))
    failures = [
        lambda: asyncio.run(anchor.anchor(sid, ROOT_B)),
        lambda: anchor._call(lambda: anchor._send(session_key(sid), bytes.fromhex(ROOT_B))),
        lambda: asyncio.run(
            EvmAnchor(f"http://127.0.0.1:{free_port()}", contract).anchor(sid, ROOT_A)
        ),
        lambda: EvmAnchor(hardhat.url, contract, hardhat.private_key[:-2]),
    ]
    for failure in failures:
        with pytest.raises(Exception) as caught:
            failure()
        texts += [str(caught.value), repr(caught.value), repr(caught.value.__cause__)]
    texts.append(caplog.text)
    assert caplog.records, "expected web3/urllib3 debug logs to check"
    for text in texts:
        assert secret not in text.lower()


def test_losing_a_race_to_ourselves_with_the_same_root_is_not_an_error(
    hardhat, anchor, monkeypatch
):
    """Another process with our key anchored the same root between our read and our send."""
    sid = session_id()
    first = asyncio.run(anchor.anchor(sid, ROOT_A))
    real_record = anchor._record
    reads = []

    def stale_then_real(key):
        reads.append(key)
        return (b"\0" * 32, 0, 0) if len(reads) == 1 else real_record(key)

    monkeypatch.setattr(anchor, "_record", stale_then_real)
    sent = nonce(hardhat, hardhat.address)
    assert asyncio.run(anchor.anchor(sid, ROOT_A)) == first
    assert len(reads) == 2 and nonce(hardhat, hardhat.address) == sent
