"""The ``tron`` anchor backend.

Offline, with a fixed private key and a fixed reference block: the transaction id is
sha256 of the serialised raw data, the signature recovers the configured address, and
the call data equals web3's encoding of the same call on the committed ABI.

The node conversation (getnowblock, broadcasthex, gettransactioninfobyid, the constant
call reading the record) runs against ``TronStub``, a small HTTP server on 127.0.0.1 that
answers in the shapes of java-tron's HTTP API. It stands in only because no TRON node can
run here (no TRON network is reachable and java-tron is not packaged); it checks what a
node would (the signature recovers the owner, the id is sha256 of the raw data) and keeps
the contract's one rule (one root per anchoring address and session id). A test against
a live node runs when ``LUCID_TEST_TRON_URL`` is set, and is skipped otherwise.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pickle
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import base58
import pytest
from coincurve import PublicKey as CoincurvePublicKey
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak
from tronpy.proto import tron_pb2
from tronpy.proto.transaction import calculate_txid_from_raw_data
from web3 import Web3

from lucid_sessions.anchoring.contract import (
    AnchorConflict,
    AnchorRejected,
    artifact,
    session_key,
)
from lucid_sessions.anchoring.tron import (
    ENV_KEY,
    ENV_KEY_FILE,
    RefBlock,
    TronAnchor,
    TronKey,
    anchor_call_data,
    build_anchor_transaction,
    read_anchor,
    recover_signer,
    sign_transaction,
)
from lucid_sessions.cluster.interfaces import Unavailable
from lucid_sessions.errors import FormatError, InvalidConfigError

# A throwaway key made for these tests (it holds nothing on any chain), and its address.
KEY_HEX = "d5627f0d7a903d54bc2914d99e01a323d88b3d59edf2cd87516798cb107c070f"
ADDRESS = "TADiUtmgPjKc7R4og4PapBECRUi8jEXGBa"
CONTRACT = "TNvLY5fZE34TUjEy6Z2ji3uhTA3oCdMpos"
REF_NUMBER = 70_123_456
REF_BLOCK_ID = REF_NUMBER.to_bytes(8, "big") + bytes.fromhex(
    "5d1f0c4e9a7b3c2d11223344556677889900aabbccddeeff"
)
REF_BLOCK = RefBlock(REF_NUMBER, REF_BLOCK_ID, 1_764_000_000_000)
TIMESTAMP_MS = 1_764_000_001_234
EXPIRATION_MS = TIMESTAMP_MS + 120_000
FEE_LIMIT = 50_000_000
SESSION = "ses_2f9c6a1e"
ROOT_A = "a1" * 32
ROOT_B = "b2" * 32
# The transaction id of these inputs, pinned so a change in serialisation cannot pass
# unnoticed (every property below holds for any bytes; this one holds for these).
GOLDEN_TXID = "6952b7aa06bbb0f393021c260cb1824144d41c76e1c64e069c3c379184fdeffb"


def _build(session: str = SESSION, root: str = ROOT_A) -> Any:
    return build_anchor_transaction(
        ADDRESS, CONTRACT, session, root, REF_BLOCK, TIMESTAMP_MS, EXPIRATION_MS, FEE_LIMIT
    )


def _address_of(public_key: bytes) -> str:
    """A base58 TRON address from an uncompressed secp256k1 key, written out here on
    purpose instead of calling tronpy: 0x41, the last 20 bytes of keccak(x || y), base58check."""
    return base58.b58encode_check(b"\x41" + keccak(public_key[1:])[-20:]).decode()


# --- the pure part: ids, signatures, call data ---------------------------------------------


def test_the_transaction_id_is_sha256_of_the_serialised_raw_data():
    tx = _build()
    assert tx.txid == hashlib.sha256(tx.raw_data).hexdigest()
    assert tx.txid == GOLDEN_TXID
    # tronpy's own offline id (correct for contract calls: no memo involved) agrees.
    raw = tx.parsed()
    call = tron_pb2.TriggerSmartContract()
    raw.contract[0].parameter.Unpack(call)
    as_json = {
        "contract": [
            {
                "type": "TriggerSmartContract",
                "parameter": {
                    "type_url": raw.contract[0].parameter.type_url,
                    "value": {
                        "owner_address": call.owner_address.hex(),
                        "contract_address": call.contract_address.hex(),
                        "data": call.data.hex(),
                    },
                },
            }
        ],
        "ref_block_bytes": raw.ref_block_bytes.hex(),
        "ref_block_hash": raw.ref_block_hash.hex(),
        "expiration": raw.expiration,
        "timestamp": raw.timestamp,
        "fee_limit": raw.fee_limit,
    }
    assert calculate_txid_from_raw_data(as_json) == tx.txid


def test_the_same_inputs_give_the_same_transaction_and_others_another():
    assert _build() == _build()
    assert _build(root=ROOT_B).txid != _build().txid
    assert _build(session="ses_other").txid != _build().txid


def test_the_signature_recovers_the_configured_address():
    key = TronKey(KEY_HEX)
    assert key.address == ADDRESS
    tx = _build()
    signed = tron_pb2.Transaction()
    signed.ParseFromString(sign_transaction(tx, key))
    assert signed.raw_data.SerializeToString() == tx.raw_data
    (signature,) = signed.signature
    assert len(signature) == 65 and signature[64] in (0, 1)
    public_key = CoincurvePublicKey.from_signature_and_message(
        bytes(signature), bytes.fromhex(tx.txid), hasher=None
    ).format(compressed=False)
    assert _address_of(public_key) == ADDRESS
    assert recover_signer(tx.txid, bytes(signature)) == ADDRESS
    # And not over anything else: another id recovers another address.
    assert recover_signer(_build(root=ROOT_B).txid, bytes(signature)) != ADDRESS


def test_the_call_data_is_webs_encoding_of_the_same_call():
    contract = Web3().eth.contract(abi=artifact()["abi"])
    sid, root = session_key(SESSION), bytes.fromhex(ROOT_A)
    assert sid == hashlib.sha256(SESSION.encode()).digest()
    expected = contract.encode_abi("anchor", [sid, root])
    assert "0x" + anchor_call_data(SESSION, ROOT_A).hex() == expected
    call = tron_pb2.TriggerSmartContract()
    _build().parsed().contract[0].parameter.Unpack(call)
    assert "0x" + call.data.hex() == expected
    assert base58.b58encode_check(call.owner_address).decode() == ADDRESS
    assert base58.b58encode_check(call.contract_address).decode() == CONTRACT
    assert (call.call_value, call.call_token_value, call.token_id) == (0, 0, 0)


def test_reference_block_expiration_and_fee_limit_are_set_as_tron_defines():
    raw = _build().parsed()
    assert raw.ref_block_bytes == REF_NUMBER.to_bytes(8, "big")[6:8]
    assert raw.ref_block_hash == REF_BLOCK_ID[8:16]
    assert (raw.timestamp, raw.expiration, raw.fee_limit) == (
        TIMESTAMP_MS,
        EXPIRATION_MS,
        FEE_LIMIT,
    )
    assert raw.data == b"", "no memo: tronpy 0.6.2 computes memo transaction ids wrongly"
    (contract,) = raw.contract
    assert contract.type == tron_pb2.Transaction.Contract.ContractType.TriggerSmartContract
    assert contract.parameter.type_url == "type.googleapis.com/protocol.TriggerSmartContract"


def test_a_reference_block_comes_from_getnowblock_and_must_be_consistent():
    block = RefBlock.from_block(
        {
            "blockID": REF_BLOCK_ID.hex(),
            "block_header": {"raw_data": {"number": REF_NUMBER, "timestamp": 5}},
        }
    )
    assert block == RefBlock(REF_NUMBER, REF_BLOCK_ID, 5)
    with pytest.raises(FormatError, match="does not start with its number"):
        RefBlock(REF_NUMBER + 1, REF_BLOCK_ID)
    with pytest.raises(FormatError, match="without a usable block"):
        RefBlock.from_block({"Error": "nope"})


def test_bad_inputs_are_named():
    with pytest.raises(FormatError, match="not 32 bytes of hex"):
        _build(root="abc")
    with pytest.raises(FormatError, match="all zeros"):
        _build(root="00" * 32)
    with pytest.raises(InvalidConfigError, match="contract address 'T123' is not a TRON"):
        build_anchor_transaction(
            ADDRESS, "T123", SESSION, ROOT_A, REF_BLOCK, TIMESTAMP_MS, EXPIRATION_MS
        )
    with pytest.raises(InvalidConfigError, match="expire"):
        build_anchor_transaction(
            ADDRESS, CONTRACT, SESSION, ROOT_A, REF_BLOCK, TIMESTAMP_MS, TIMESTAMP_MS
        )


# --- the key -------------------------------------------------------------------------------


def test_the_key_never_shows(tmp_path):
    key = TronKey("0x" + KEY_HEX)
    anchor = TronAnchor("http://127.0.0.1:1", None, CONTRACT, key)
    for text in (repr(key), str(key), repr(anchor), str(anchor)):
        assert KEY_HEX not in text.lower()
        assert ADDRESS in text
    with pytest.raises(TypeError):
        pickle.dumps(key)
    wrong = KEY_HEX[:-2] + "zz"
    with pytest.raises(InvalidConfigError) as caught:
        TronKey(wrong, source=ENV_KEY)
    assert KEY_HEX[:20] not in str(caught.value) and ENV_KEY in str(caught.value)
    with pytest.raises(InvalidConfigError, match="not a valid secp256k1"):
        TronKey("00" * 32)


def test_the_key_comes_from_the_environment_or_a_file(tmp_path):
    assert TronKey.from_env({ENV_KEY: KEY_HEX}).address == ADDRESS
    path = tmp_path / "anchor.key"
    path.write_text(KEY_HEX + "\n")
    assert TronKey.from_env({ENV_KEY_FILE: str(path)}).address == ADDRESS
    with pytest.raises(InvalidConfigError, match=f"cannot read {ENV_KEY_FILE}"):
        TronKey.from_env({ENV_KEY_FILE: str(tmp_path / "missing")})
    with pytest.raises(InvalidConfigError, match="no anchoring key"):
        TronKey.from_env({})


# --- the node conversation, against the stub -----------------------------------------------


class TronStub:
    """java-tron's HTTP API shapes for the calls the backend makes, with LucidAnchor's rule.

    Transactions are "mined" into ``next_block`` at broadcast; ``gettransactioninfobyid``
    answers ``{}`` for the first ``unconfirmed_polls`` polls (not yet solid), then the info.
    """

    def __init__(self) -> None:
        self.records: dict[tuple[bytes, bytes], tuple[bytes, int, int]] = {}
        self.infos: dict[str, dict[str, Any]] = {}
        self.blocks: dict[int, list[str]] = {}
        self.calls: list[str] = []
        self.broadcasts: list[str] = []
        self.next_block = REF_NUMBER + 10
        self.unconfirmed_polls = 1
        self.polls: dict[str, int] = {}
        self.broadcast_answer: dict[str, Any] | None = None
        self.before_mining: Any = None
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.contract_hex = base58.b58decode_check(CONTRACT)[1:].hex()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                path = self.path.strip("/")
                stub.calls.append(path)
                answer = stub.answer(path, body)
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def answer(self, path: str, body: dict[str, Any]) -> Any:
        if path == "wallet/getnowblock":
            return {
                "blockID": REF_BLOCK_ID.hex(),
                "block_header": {"raw_data": {"number": REF_NUMBER, "timestamp": 1}},
            }
        if path == "wallet/triggerconstantcontract":
            return self._constant(body)
        if path == "wallet/broadcasthex":
            return self._broadcast(body["transaction"])
        if path == "walletsolidity/gettransactioninfobyid":
            txid = body["value"]
            self.polls[txid] = self.polls.get(txid, 0) + 1
            if txid not in self.infos or self.polls[txid] <= self.unconfirmed_polls:
                return {}
            return self.infos[txid]
        if path == "walletsolidity/gettransactioninfobyblocknum":
            return [self.infos[t] for t in self.blocks.get(body["num"], [])]
        return {"Error": f"no such API {path}"}

    def _constant(self, body: dict[str, Any]) -> dict[str, Any]:
        assert body["function_selector"] == "records(address,bytes32)"
        assert body["contract_address"] == CONTRACT and body["visible"] is True
        by, key = abi_decode(["address", "bytes32"], bytes.fromhex(body["parameter"]))
        record = self.records.get((bytes.fromhex(by[2:]), key), (bytes(32), 0, 0))
        result = abi_encode(["bytes32", "uint64", "uint64"], list(record)).hex()
        return {"result": {"result": True}, "energy_used": 500, "constant_result": [result]}

    def _broadcast(self, hex_transaction: str) -> dict[str, Any]:
        signed = tron_pb2.Transaction()
        signed.ParseFromString(bytes.fromhex(hex_transaction))
        raw = signed.raw_data.SerializeToString()
        txid = hashlib.sha256(raw).hexdigest()
        self.broadcasts.append(txid)
        if self.broadcast_answer is not None:
            return {**self.broadcast_answer, "txid": txid}
        call = tron_pb2.TriggerSmartContract()
        signed.raw_data.contract[0].parameter.Unpack(call)
        public_key = CoincurvePublicKey.from_signature_and_message(
            bytes(signed.signature[0]), bytes.fromhex(txid), hasher=None
        ).format(compressed=False)
        if _address_of(public_key) != base58.b58encode_check(call.owner_address).decode():
            return {"result": False, "code": "SIGERROR", "txid": txid, "message": "bad sig"}
        if txid in self.infos:
            return {"result": False, "code": "DUP_TRANSACTION_ERROR", "txid": txid}
        if self.before_mining is not None:
            self.before_mining()
        self._mine(txid, call)
        return {"result": True, "code": "SUCCESS", "txid": txid, "message": ""}

    def _mine(self, txid: str, call: Any) -> None:
        """Run anchor(key, root) as LucidAnchor does, in block ``next_block``."""
        assert call.data[:4] == keccak(text="anchor(bytes32,bytes32)")[:4]
        key, root = call.data[4:36], call.data[36:68]
        by = bytes(call.owner_address[1:])
        block = self.next_block
        self.next_block += 1
        info: dict[str, Any] = {"id": txid, "blockNumber": block, "blockTimeStamp": 1}
        existing = self.records.get((by, key))
        if existing is not None:
            error = keccak(text="AlreadyAnchored(address,bytes32,bytes32)")[:4]
            revert = error + abi_encode(
                ["address", "bytes32", "bytes32"], ["0x" + by.hex(), key, existing[0]]
            )
            info |= {
                "result": "FAILED",
                "resMessage": b"REVERT opcode executed".hex(),
                "contractResult": [revert.hex()],
                "receipt": {"energy_usage_total": 900, "result": "REVERT"},
            }
        else:
            self.records[(by, key)] = (root, 1_764_000_003, block)
            topics = [
                keccak(text="Anchored(bytes32,bytes32,address,uint256)").hex(),
                key.hex(),
                bytes(12).hex() + by.hex(),
            ]
            info |= {
                "contractResult": [""],
                "contract_address": "41" + self.contract_hex,
                "receipt": {"energy_usage_total": 45_000, "result": "SUCCESS"},
                "log": [
                    {
                        "address": self.contract_hex,
                        "topics": topics,
                        "data": abi_encode(["bytes32", "uint256"], [root, 1_764_000_003]).hex(),
                    }
                ],
            }
        self.infos[txid] = info
        self.blocks.setdefault(block, []).append(txid)


@pytest.fixture
def stub() -> Iterator[TronStub]:
    node = TronStub()
    thread = threading.Thread(target=node.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield node
    finally:
        node.server.shutdown()
        node.server.server_close()
        thread.join()


def _anchor(stub: TronStub, **options: Any) -> TronAnchor:
    options = {"confirm_timeout_s": 5.0, "poll_interval_s": 0.01, **options}
    return TronAnchor(stub.url, stub.url, CONTRACT, TronKey(KEY_HEX), **options)


def test_anchor_broadcasts_then_waits_for_the_solidity_node(stub):
    stub.unconfirmed_polls = 2
    receipt = asyncio.run(_anchor(stub).anchor(SESSION, ROOT_A))
    (txid,) = stub.broadcasts
    assert (receipt.chain, receipt.location, receipt.transaction) == (
        "tron",
        f"{CONTRACT}:{ADDRESS}",
        txid,
    )
    assert receipt.block == REF_NUMBER + 10
    assert stub.polls[txid] == 3  # twice "not found", then confirmed
    assert stub.calls[:3] == [
        "wallet/triggerconstantcontract",
        "wallet/getnowblock",
        "wallet/broadcasthex",
    ]
    by = base58.b58decode_check(ADDRESS)[1:]
    assert stub.records[(by, session_key(SESSION))][0] == bytes.fromhex(ROOT_A)


def test_anchoring_again_returns_the_first_receipt_without_a_transaction(stub):
    first = asyncio.run(_anchor(stub).anchor(SESSION, ROOT_A))
    again = asyncio.run(_anchor(stub).anchor(SESSION, ROOT_A))
    assert again == first
    assert len(stub.broadcasts) == 1
    assert stub.calls[-1] == "walletsolidity/gettransactioninfobyblocknum"


def test_concurrent_anchors_share_one_backend(stub):
    anchor = _anchor(stub)

    async def both() -> list[Any]:
        return list(
            await asyncio.gather(
                anchor.anchor(SESSION, ROOT_A),
                anchor.anchor(SESSION, ROOT_A),
                anchor.anchor("ses_other", ROOT_B),
            )
        )

    first, same, other = asyncio.run(both())
    assert first == same and other.transaction != first.transaction
    assert len(stub.broadcasts) == 2  # the same session was sent once


def test_another_root_for_an_anchored_session_is_a_conflict(stub):
    asyncio.run(_anchor(stub).anchor(SESSION, ROOT_A))
    with pytest.raises(AnchorConflict, match=f"session {SESSION} is already anchored"):
        asyncio.run(_anchor(stub).anchor(SESSION, ROOT_B))
    assert len(stub.broadcasts) == 1


def test_a_revert_is_an_error_naming_the_contracts_reason(stub):
    # Another process with the same key anchors ROOT_B between our read and our broadcast.
    by = base58.b58decode_check(ADDRESS)[1:]

    def race() -> None:
        stub.records[(by, session_key(SESSION))] = (bytes.fromhex(ROOT_B), 1, REF_NUMBER + 5)

    stub.before_mining = race
    with pytest.raises(AnchorRejected) as caught:
        asyncio.run(_anchor(stub).anchor(SESSION, ROOT_A))
    message = str(caught.value)
    assert stub.broadcasts[0] in message and "REVERT" in message
    assert "AlreadyAnchored(" in message and f"root=0x{ROOT_B}" in message


def test_a_confirmation_that_does_not_come_is_unavailable_and_a_retry_waits_for_it(stub):
    stub.unconfirmed_polls = 10**6
    anchor = _anchor(stub, confirm_timeout_s=0.3)
    with pytest.raises(Unavailable, match=r"not confirmed by the solidity node within 0\.3 s"):
        asyncio.run(anchor.anchor(SESSION, ROOT_A))
    # As if the transaction still waited in the pool (no record yet): the retry waits for
    # that transaction instead of paying for another.
    stub.records.clear()
    stub.unconfirmed_polls = 0
    receipt = asyncio.run(anchor.anchor(SESSION, ROOT_A))
    assert [receipt.transaction] == stub.broadcasts


def test_a_refused_broadcast_names_the_nodes_code(stub):
    stub.broadcast_answer = {
        "result": False,
        "code": "CONTRACT_VALIDATE_ERROR",
        "message": b"account does not exist".hex(),
    }
    with pytest.raises(AnchorRejected, match="CONTRACT_VALIDATE_ERROR: account does not exist"):
        asyncio.run(_anchor(stub).anchor(SESSION, ROOT_A))
    stub.broadcast_answer = {"result": False, "code": "SERVER_BUSY", "message": "busy"}
    with pytest.raises(Unavailable, match="SERVER_BUSY"):
        asyncio.run(_anchor(stub).anchor(SESSION, ROOT_A))


def test_an_unreachable_node_is_unavailable(stub):
    port = stub.server.server_address[1]
    stub.server.shutdown()
    stub.server.server_close()
    anchor = TronAnchor(f"http://127.0.0.1:{port}", None, CONTRACT, TronKey(KEY_HEX))
    with pytest.raises(Unavailable, match=f"TRON node http://127.0.0.1:{port} unreachable"):
        asyncio.run(anchor.anchor(SESSION, ROOT_A))
    with pytest.raises(Unavailable, match="unreachable"):
        read_anchor(f"http://127.0.0.1:{port}", CONTRACT, SESSION, ADDRESS)


def test_read_anchor_reads_the_record_of_an_address(stub):
    assert read_anchor(stub.url, CONTRACT, SESSION, ADDRESS) is None
    asyncio.run(_anchor(stub).anchor(SESSION, ROOT_A))
    assert read_anchor(stub.url, CONTRACT, SESSION, ADDRESS) == (ROOT_A, 1_764_000_003)
    # Records are kept per anchoring address: any other address has none for this session.
    assert read_anchor(stub.url, CONTRACT, SESSION, CONTRACT) is None


# --- a live node ---------------------------------------------------------------------------


def test_anchor_on_a_live_tron_node():
    url = os.environ.get("LUCID_TEST_TRON_URL")
    if not url:
        pytest.skip("LUCID_TEST_TRON_URL is not set: no TRON node to anchor on")
    missing = [
        v for v in ("LUCID_TEST_TRON_KEY", "LUCID_TEST_TRON_CONTRACT") if not os.environ.get(v)
    ]
    if missing:
        pytest.fail(f"LUCID_TEST_TRON_URL is set but {' and '.join(missing)} not")
    key = TronKey(os.environ["LUCID_TEST_TRON_KEY"], source="LUCID_TEST_TRON_KEY")
    contract = os.environ["LUCID_TEST_TRON_CONTRACT"]
    solidity = os.environ.get("LUCID_TEST_TRON_SOLIDITY_URL") or url
    anchor = TronAnchor(url, solidity, contract, key, confirm_timeout_s=300)
    session, root = f"ses_{uuid.uuid4().hex}", os.urandom(32).hex()
    receipt = asyncio.run(anchor.anchor(session, root))
    assert receipt.chain == "tron" and len(receipt.transaction) == 64 and receipt.block > 0
    found = read_anchor(url, contract, session, key.address)
    assert found is not None and found[0] == root
    assert asyncio.run(anchor.anchor(session, root)) == receipt
