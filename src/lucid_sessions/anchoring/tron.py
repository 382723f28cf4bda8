"""The ``tron`` anchor backend: the LucidAnchor contract on TRON, over the node's HTTP API.

:class:`TronAnchor` implements :class:`~lucid_sessions.anchoring.local.Anchor`. For each
session it calls ``anchor(sha256(session id), root)`` (the signature is taken from the
committed artifact, :func:`~lucid_sessions.anchoring.contract.artifact`) in one
``TriggerSmartContract`` transaction and returns
``AnchorReceipt("tron", "<contract>:<anchoring address>", transaction id, block number)``
(records are keyed by the anchoring address, so a verifier needs it).

Why it is built this way:

- **Built and signed here.** The transaction is assembled from a reference block
  (``ref_block_bytes`` = bytes 6..8 of the block number, ``ref_block_hash`` = bytes
  8..16 of the block id: TRON's TaPoS), serialised with tronpy's protobuf types, and its
  id is ``sha256`` of exactly those bytes. The node never builds or signs anything and
  the private key never leaves this process.
- **Broadcast as bytes** (``wallet/broadcasthex``): the node hashes the bytes that were
  signed, so no JSON round trip can change the transaction id; the id the node reports
  is checked against ours.
- **No memo.** Anchoring through a transfer's memo (``raw_data.data``) is avoided on
  purpose: tronpy 0.6.2 leaves that field out when it computes a transaction id offline,
  so its ids for memo transactions are wrong. The contract call needs no memo, and the
  contract (unlike a memo) refuses a second root for the same session.
- **Confirmed through the solidity node** (``walletsolidity/gettransactioninfobyid``),
  which only answers once the block is irreversible; the anchor counts when that answer
  has a block number and ``receipt.result == "SUCCESS"``. A revert is
  :class:`~lucid_sessions.anchoring.contract.AnchorRejected` naming the contract's
  reason (``AlreadyAnchored(...)``, ``ZeroRoot()``).
- **Idempotent**, as the EVM backend: the contract's record (kept per anchoring address,
  see ``contracts/LucidAnchor.sol``) is read first. The same root already there returns
  the receipt of the transaction that wrote it, found through the ``Anchored`` event in
  the block the contract recorded; another root raises
  :class:`~lucid_sessions.anchoring.contract.AnchorConflict`. A transaction sent whose
  confirmation timed out is remembered and waited for again on a retry.
- **Errors**: a node that cannot be reached, answers 5xx/429 or says it is busy, and a
  confirmation that does not come in time, are
  :class:`~lucid_sessions.cluster.interfaces.Unavailable` (callers may retry).

The pure part (:func:`build_anchor_transaction`, :func:`sign_transaction`,
:func:`anchor_call_data`) needs no network and is what the offline tests check. The key
comes from the caller or ``LUCID_ANCHOR_KEY`` / ``LUCID_ANCHOR_KEY_FILE`` and lives only
inside :class:`TronKey`, whose repr shows the address.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from google.protobuf import any_pb2
from tronpy.exceptions import BadAddress, BadKey, BadSignature
from tronpy.keys import PrivateKey, Signature, to_base58check_address, to_raw_address
from tronpy.proto import tron_pb2

from lucid_sessions.anchoring.contract import (
    ENV_KEY,
    ENV_KEY_FILE,
    AnchorConflict,
    AnchorRejected,
    artifact,
    decode_revert,
    key_bytes,
    key_from_env,
    root_bytes,
    session_key,
    shown_url,
)
from lucid_sessions.anchoring.local import AnchorReceipt
from lucid_sessions.cluster.interfaces import Unavailable
from lucid_sessions.errors import FormatError, InvalidConfigError

__all__ = [
    "ENV_KEY",
    "ENV_KEY_FILE",
    "AnchorTransaction",
    "RefBlock",
    "TronAnchor",
    "TronKey",
    "anchor_call_data",
    "build_anchor_transaction",
    "read_anchor",
    "recover_signer",
    "sign_transaction",
]

log = logging.getLogger(__name__)

CHAIN = "tron"
DEFAULT_FEE_LIMIT_SUN = 100_000_000
"""100 TRX: the most one anchor may burn for energy. An anchor costs far less; the limit
only stops a misbehaving contract from draining the account."""
DEFAULT_EXPIRATION_MS = 120_000
DEFAULT_CONFIRM_TIMEOUT_S = 180.0
"""A block is solid once 19 of the 27 super representatives built on it, about a minute
on mainnet; three minutes leaves room for a slow node."""

_ZERO = b"\0" * 32
_TRIGGER_TYPE_URL = "type.googleapis.com/protocol.TriggerSmartContract"
_HTTP_TIMEOUT_S = 15.0
_TRANSIENT_BROADCAST_CODES = frozenset(
    {"SERVER_BUSY", "NO_CONNECTION", "NOT_ENOUGH_EFFECTIVE_CONNECTION", "BLOCK_UNSOLIDIFIED"}
)

T = TypeVar("T")


# --- the contract, from its artifact -------------------------------------------------------


@cache
def _function(name: str) -> tuple[str, list[str], list[str]]:
    """``(signature, input types, output types)`` of a function of the committed ABI."""
    for entry in artifact()["abi"]:
        if entry.get("type") == "function" and entry.get("name") == name:
            inputs = [arg["type"] for arg in entry["inputs"]]
            outputs = [arg["type"] for arg in entry.get("outputs", [])]
            return f"{name}({','.join(inputs)})", inputs, outputs
    raise FormatError(f"LucidAnchor.json has no function {name!r}")


@cache
def _anchored_topic() -> str:
    """Topic 0 of the ``Anchored`` event, hex without ``0x`` as TRON logs write it."""
    for entry in artifact()["abi"]:
        if entry.get("type") == "event" and entry.get("name") == "Anchored":
            types = ",".join(arg["type"] for arg in entry["inputs"])
            return bytes(keccak(text=f"Anchored({types})")).hex()
    raise FormatError("LucidAnchor.json has no Anchored event")


def _selector(signature: str) -> bytes:
    return bytes(keccak(text=signature))[:4]


# --- the pure part -------------------------------------------------------------------------


def anchor_call_data(session_id: str, root: str) -> bytes:
    """ABI call data of ``anchor(session key, root)``: the 4-byte selector, then both words."""
    signature, inputs, _ = _function("anchor")
    return _selector(signature) + abi_encode(inputs, [session_key(session_id), root_bytes(root)])


@dataclass(frozen=True, slots=True)
class RefBlock:
    """The block a transaction refers to (TaPoS): the transaction is only valid on a chain
    that holds this block, and for a while after it."""

    number: int
    block_id: bytes
    """32 bytes: the block number (8 bytes, big-endian), then 24 bytes of the block hash."""
    timestamp_ms: int = 0

    def __post_init__(self) -> None:
        if len(self.block_id) != 32:
            raise FormatError(f"TRON block id is {len(self.block_id)} bytes, not 32")
        if int.from_bytes(self.block_id[:8], "big") != self.number:
            raise FormatError(
                f"TRON block id {self.block_id.hex()} does not start with its number {self.number}"
            )

    @property
    def ref_block_bytes(self) -> bytes:
        return self.number.to_bytes(8, "big")[6:8]

    @property
    def ref_block_hash(self) -> bytes:
        return self.block_id[8:16]

    @classmethod
    def from_block(cls, block: Mapping[str, Any]) -> RefBlock:
        """From a ``wallet/getnowblock`` (or ``getblockbynum``) answer."""
        try:
            header = block["block_header"]["raw_data"]
            return cls(
                int(header["number"]), bytes.fromhex(block["blockID"]), int(header["timestamp"])
            )
        except (KeyError, TypeError, ValueError):
            raise FormatError(
                f"TRON node answered getnowblock without a usable block (keys {sorted(block)})"
            ) from None


@dataclass(frozen=True, slots=True)
class AnchorTransaction:
    """An unsigned anchoring transaction: its serialised ``raw_data`` and its id."""

    raw_data: bytes
    """``protocol.Transaction.raw`` protobuf bytes: what is hashed, signed and sent."""
    txid: str
    """``sha256(raw_data)`` in hex: the id TRON gives the transaction."""
    expiration_ms: int

    def parsed(self) -> Any:
        """The raw data as tronpy's ``protocol.Transaction.raw`` message."""
        raw = tron_pb2.Transaction.raw()
        raw.ParseFromString(self.raw_data)
        return raw


def build_anchor_transaction(
    owner_address: str,
    contract_address: str,
    session_id: str,
    root: str,
    ref_block: RefBlock,
    timestamp_ms: int,
    expiration_ms: int,
    fee_limit: int = DEFAULT_FEE_LIMIT_SUN,
) -> AnchorTransaction:
    """The ``TriggerSmartContract`` calling ``anchor(session key, root)`` from ``owner_address``.

    Deterministic: the same arguments give the same bytes and the same id. The memo field
    (``raw_data.data``) is never set.
    """
    if expiration_ms <= timestamp_ms:
        raise InvalidConfigError(
            f"TRON transaction would expire ({expiration_ms}) before it was made ({timestamp_ms})"
        )
    if fee_limit <= 0:
        raise InvalidConfigError(f"fee limit must be positive, not {fee_limit} sun")
    call = tron_pb2.TriggerSmartContract(
        owner_address=_raw_address(owner_address, "owner address"),
        contract_address=_raw_address(contract_address, "contract address"),
        data=anchor_call_data(session_id, root),
    )
    contract = tron_pb2.Transaction.Contract(
        type=tron_pb2.Transaction.Contract.ContractType.TriggerSmartContract,
        parameter=any_pb2.Any(type_url=_TRIGGER_TYPE_URL, value=call.SerializeToString()),
    )
    raw = tron_pb2.Transaction.raw(
        ref_block_bytes=ref_block.ref_block_bytes,
        ref_block_hash=ref_block.ref_block_hash,
        expiration=expiration_ms,
        timestamp=timestamp_ms,
        fee_limit=fee_limit,
        contract=[contract],
    )
    raw_data = bytes(raw.SerializeToString())
    return AnchorTransaction(raw_data, hashlib.sha256(raw_data).hexdigest(), expiration_ms)


def sign_transaction(transaction: AnchorTransaction, key: TronKey) -> bytes:
    """The signed ``protocol.Transaction`` bytes, ready for ``wallet/broadcasthex``.

    TRON signs the transaction id itself: secp256k1, 65-byte recoverable ``r || s || v``,
    as tronpy's ``PrivateKey.sign_msg_hash`` makes it.
    """
    signature = key.sign_digest(bytes.fromhex(transaction.txid))
    signed = tron_pb2.Transaction(raw_data=transaction.parsed(), signature=[signature])
    return bytes(signed.SerializeToString())


def recover_signer(txid: str, signature: bytes) -> str:
    """The base58 address whose key made ``signature`` over the transaction id ``txid``."""
    try:
        public_key = Signature(signature).recover_public_key_from_msg_hash(bytes.fromhex(txid))
    except (BadSignature, ValueError) as exc:
        raise FormatError(f"TRON signature recovers no key: {exc}") from None
    return str(public_key.to_base58check_address())


def _raw_address(address: str, what: str) -> bytes:
    """A TRON address (base58 ``T...`` or hex ``41...``) as its 21 raw bytes."""
    try:
        raw = bytes(to_raw_address(address))
    except (BadAddress, ValueError, TypeError):
        raise InvalidConfigError(f"TRON {what} {address!r} is not a TRON address") from None
    if len(raw) != 21 or raw[0] != 0x41:
        raise InvalidConfigError(f"TRON {what} {address!r} is not a TRON address")
    return raw


def _base58(address: str, what: str) -> str:
    return str(to_base58check_address(_raw_address(address, what)))


def _abi_address(address: str) -> str:
    """A TRON address as the ABI's 20-byte ``address`` (the TVM drops the 0x41 prefix)."""
    return str(to_checksum_address(_raw_address(address, "address")[1:]))


# --- the key -------------------------------------------------------------------------------


class TronKey:
    """The anchoring account's secp256k1 key. Signs digests; never shows the key."""

    __slots__ = ("_key", "address")

    def __init__(self, secret: str | bytes, *, source: str = "the private key") -> None:
        raw = key_bytes(secret, source=source)
        try:
            self._key = PrivateKey(raw)
        except BadKey:
            raise InvalidConfigError(f"{source} is not a valid secp256k1 private key") from None
        self.address: str = str(self._key.public_key.to_base58check_address())
        """The account's base58 address (``T...``); records are kept under it."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TronKey:
        """From ``LUCID_ANCHOR_KEY`` or the file named by ``LUCID_ANCHOR_KEY_FILE``."""
        secret, source = key_from_env(environ)
        return cls(secret, source=source)

    def sign_digest(self, digest: bytes) -> bytes:
        """The 65-byte recoverable signature of a 32-byte digest."""
        return bytes(self._key.sign_msg_hash(digest).to_bytes())

    def __repr__(self) -> str:
        return f"TronKey(address={self.address})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("TronKey cannot be pickled")


def _as_key(private_key: str | bytes | TronKey | None) -> TronKey:
    if isinstance(private_key, TronKey):
        return private_key
    if private_key is None:
        return TronKey.from_env()
    return TronKey(private_key)


# --- the node ------------------------------------------------------------------------------


def _base_url(url: str | None, what: str) -> str:
    if not url or urlsplit(url).scheme not in ("http", "https"):
        raise InvalidConfigError(f"TRON {what} URL {shown_url(url or '')} is not http(s)")
    return url.rstrip("/")


def _answer(url: str, path: str, response: httpx.Response) -> Any:
    """The JSON a node answered; 5xx/429 and non-JSON are :class:`Unavailable`."""
    where = f"TRON node {shown_url(url)} /{path}"
    if response.status_code >= 500 or response.status_code == 429:
        raise Unavailable(f"{where} answered HTTP {response.status_code}")
    if response.status_code != 200:
        raise AnchorRejected(f"{where} answered HTTP {response.status_code}")
    try:
        answer = response.json()
    except ValueError:
        raise Unavailable(f"{where} answered with something that is not JSON") from None
    if isinstance(answer, dict) and "Error" in answer:
        raise AnchorRejected(f"{where} refused the call: {answer['Error']}")
    return answer


async def _post(http: httpx.AsyncClient, url: str, path: str, body: Mapping[str, Any]) -> Any:
    try:
        response = await http.post(f"{url}/{path}", json=dict(body))
    except httpx.HTTPError as exc:
        raise Unavailable(
            f"TRON node {shown_url(url)} unreachable ({path}): {type(exc).__name__}"
        ) from None
    return _answer(url, path, response)


def _text(value: object) -> str:
    """A node's message: java-tron hex-encodes some of them."""
    if not isinstance(value, str):
        return "" if value is None else str(value)
    try:
        return bytes.fromhex(value).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return value


def _records_request(contract: str, anchorer: str, session_id: str) -> dict[str, Any]:
    """The ``wallet/triggerconstantcontract`` body reading ``records(anchorer, key)``."""
    signature, inputs, _ = _function("records")
    parameter = abi_encode(inputs, [_abi_address(anchorer), session_key(session_id)])
    return {
        "owner_address": anchorer,
        "contract_address": contract,
        "function_selector": signature,
        "parameter": parameter.hex(),
        "visible": True,
    }


def _records_result(answer: Any, contract: str, session_id: str) -> tuple[bytes, int, int]:
    """``(root, time, block)`` from a constant call's answer; zeroes when never anchored."""
    result = answer.get("result") if isinstance(answer, dict) else None
    if not isinstance(result, dict) or not result.get("result"):
        reason = _text((result or {}).get("message")) or (result or {}).get("code")
        raise AnchorRejected(
            f"TRON contract {contract} refused to read the record of session {session_id}: "
            f"{reason or 'no reason given'}"
        )
    _, _, outputs = _function("records")
    try:
        root, when, block = abi_decode(outputs, bytes.fromhex(answer["constant_result"][0]))
    except Exception:
        raise FormatError(
            f"TRON contract {contract} answered records() with no record: is it LucidAnchor?"
        ) from None
    return bytes(root), int(when), int(block)


def read_anchor(
    full_node_url: str,
    contract: str,
    session_id: str,
    anchorer: str,
    *,
    timeout_s: float = 30.0,
) -> tuple[str, int] | None:
    """What ``anchorer`` anchored for ``session_id``: (hex root, block time), or None.

    For ``verify --chain-url``, as :func:`lucid_sessions.anchoring.evm.read_anchor`: a
    constant call (``wallet/triggerconstantcontract``), no key, nothing broadcast.
    ``anchorer`` should be the cluster's pinned anchoring address.
    """
    url = _base_url(full_node_url, "full node")
    contract = _base58(contract, "contract address")
    anchorer = _base58(anchorer, "anchoring address")
    path = "wallet/triggerconstantcontract"
    try:
        with httpx.Client(timeout=timeout_s) as http:
            response = http.post(
                f"{url}/{path}", json=_records_request(contract, anchorer, session_id)
            )
    except httpx.HTTPError as exc:
        raise Unavailable(
            f"TRON node {shown_url(url)} unreachable ({path}): {type(exc).__name__}"
        ) from None
    root, when, _ = _records_result(_answer(url, path, response), contract, session_id)
    if root == _ZERO:
        return None
    return root.hex(), when


class TronAnchor:
    """Anchors session roots in a deployed LucidAnchor contract on TRON (see the module doc).

    ``solidity_node_url`` defaults to the full node's: TronGrid serves both APIs on one
    host, a java-tron node serves ``walletsolidity`` on its own port (8091). Pass ``http``
    to share a client or add headers (TronGrid's ``TRON-PRO-API-KEY``); otherwise each
    anchor opens its own, so no connection outlives the event loop that made it.
    """

    def __init__(
        self,
        full_node_url: str,
        solidity_node_url: str | None,
        contract_address: str,
        private_key: str | bytes | TronKey | None = None,
        *,
        fee_limit_sun: int = DEFAULT_FEE_LIMIT_SUN,
        confirm_timeout_s: float = DEFAULT_CONFIRM_TIMEOUT_S,
        expiration_ms: int = DEFAULT_EXPIRATION_MS,
        poll_interval_s: float = 1.0,
        max_poll_interval_s: float = 5.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        if fee_limit_sun <= 0:
            raise InvalidConfigError(f"fee limit must be positive, not {fee_limit_sun} sun")
        if confirm_timeout_s <= 0 or poll_interval_s <= 0 or expiration_ms <= 0:
            raise InvalidConfigError(
                "confirm timeout, poll interval and expiration must be positive"
            )
        self._key = _as_key(private_key)
        self.full_node_url = _base_url(full_node_url, "full node")
        self.solidity_node_url = _base_url(solidity_node_url or full_node_url, "solidity node")
        self.contract_address = _base58(contract_address, "contract address")
        self.fee_limit_sun = fee_limit_sun
        self.confirm_timeout_s = confirm_timeout_s
        self.expiration_ms = expiration_ms
        self.poll_interval_s = poll_interval_s
        self.max_poll_interval_s = max(max_poll_interval_s, poll_interval_s)
        self._http = http
        self._pending: dict[bytes, tuple[bytes, AnchorTransaction]] = {}
        """session key -> (root, transaction) broadcast but not seen confirmed."""
        self._locks: dict[bytes, asyncio.Lock] = {}
        """One lock per session in flight: a confirmation takes about a minute, so anchors
        of different sessions must not queue behind each other (TRON has no nonces)."""

    @property
    def address(self) -> str:
        """The anchoring account's address (records are kept under it)."""
        return self._key.address

    @property
    def location(self) -> str:
        """A receipt's location: ``<contract>:<anchoring address>``."""
        return f"{self.contract_address}:{self.address}"

    def __repr__(self) -> str:
        return (
            f"TronAnchor(node={shown_url(self.full_node_url)}, contract={self.contract_address}, "
            f"address={self.address})"
        )

    async def anchor(self, session_id: str, root: str) -> AnchorReceipt:
        key, raw = session_key(session_id), root_bytes(root)
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                if self._http is not None:
                    return await self._anchor(self._http, key, raw, session_id)
                async with httpx.AsyncClient(timeout=_HTTP_TIMEOUT_S) as http:
                    return await self._anchor(http, key, raw, session_id)
        finally:
            if not lock.locked():
                self._locks.pop(key, None)

    async def _record(self, http: httpx.AsyncClient, session_id: str) -> tuple[bytes, int, int]:
        answer = await _post(
            http,
            self.full_node_url,
            "wallet/triggerconstantcontract",
            _records_request(self.contract_address, self.address, session_id),
        )
        return _records_result(answer, self.contract_address, session_id)

    async def _anchor(
        self, http: httpx.AsyncClient, key: bytes, raw: bytes, session_id: str
    ) -> AnchorReceipt:
        deadline = time.monotonic() + self.confirm_timeout_s
        existing, _, block = await self._record(http, session_id)
        if existing == raw:
            return await self._existing_receipt(http, key, block, deadline)
        if existing != _ZERO:
            raise AnchorConflict(
                f"session {session_id} is already anchored with another root "
                f"(0x{existing.hex()}) by {self.address} in TRON contract {self.contract_address}"
            )
        pending = self._pending.get(key)
        if pending is not None and pending[0] == raw and pending[1].expiration_ms > _now_ms():
            transaction = pending[1]
        else:
            transaction = await self._send(http, session_id, raw)
            self._pending[key] = (raw, transaction)
        info = await self._poll(
            deadline,
            lambda: self._transaction_info(http, transaction.txid),
            f"anchoring transaction {transaction.txid} for session {session_id} not confirmed "
            f"by the solidity node within {self.confirm_timeout_s:g} s; a retry waits for it "
            "instead of sending again",
        )
        del self._pending[key]
        failure = _failure(info)
        if failure:
            existing, _, block = await self._record(http, session_id)
            if existing == raw:  # another process with this key anchored it first
                return await self._existing_receipt(http, key, block, deadline)
            raise AnchorRejected(
                f"anchoring transaction {transaction.txid} for session {session_id} failed: "
                f"{failure}",
                details={"txid": transaction.txid, "contract": self.contract_address},
            )
        mined = int(info["blockNumber"])
        log.info("anchored session %s in TRON block %d, tx %s", session_id, mined, transaction.txid)
        return AnchorReceipt(CHAIN, self.location, transaction.txid, mined)

    async def _send(
        self, http: httpx.AsyncClient, session_id: str, raw: bytes
    ) -> AnchorTransaction:
        """Build on the head block, sign, broadcast; the transaction."""
        block = RefBlock.from_block(await _post(http, self.full_node_url, "wallet/getnowblock", {}))
        now = _now_ms()
        transaction = build_anchor_transaction(
            self.address,
            self.contract_address,
            session_id,
            raw.hex(),
            block,
            timestamp_ms=now,
            # Counted from the later of our clock and the block's: the network judges
            # expiration by its own head block, so a local clock running late must not
            # make the transaction expire on arrival.
            expiration_ms=max(now, block.timestamp_ms) + self.expiration_ms,
            fee_limit=self.fee_limit_sun,
        )
        signed = sign_transaction(transaction, self._key)
        answer = await _post(
            http, self.full_node_url, "wallet/broadcasthex", {"transaction": signed.hex()}
        )
        if not isinstance(answer, dict):
            raise AnchorRejected(
                f"TRON node {shown_url(self.full_node_url)} broadcast answer is not an object"
            )
        code = str(answer.get("code") or "")
        if answer.get("result") is True or code == "DUP_TRANSACTION_ERROR":
            txid = answer.get("txid")
            if txid and txid != transaction.txid:
                raise AnchorRejected(
                    f"TRON node computed transaction id {txid}, this process {transaction.txid}: "
                    "the transaction was not serialised as the node reads it"
                )
            return transaction
        message = _text(answer.get("message"))
        text = f"TRON node refused anchoring transaction {transaction.txid}: {code or 'no code'}"
        text += f": {message}" if message else ""
        if code in _TRANSIENT_BROADCAST_CODES:
            raise Unavailable(text)
        raise AnchorRejected(text, details={"txid": transaction.txid, "code": code})

    async def _transaction_info(self, http: httpx.AsyncClient, txid: str) -> dict[str, Any] | None:
        """The solidity node's record of ``txid``, or None while it is not irreversible."""
        info = await _post(
            http, self.solidity_node_url, "walletsolidity/gettransactioninfobyid", {"value": txid}
        )
        if not isinstance(info, dict) or not info.get("id") or "blockNumber" not in info:
            return None
        if info["id"] != txid:
            raise FormatError(
                f"TRON solidity node answered for transaction {info['id']}, not {txid}"
            )
        return info

    async def _existing_receipt(
        self, http: httpx.AsyncClient, key: bytes, block: int, deadline: float
    ) -> AnchorReceipt:
        """The receipt of the transaction that wrote this address's record of ``key``.

        The contract records the block; the solidity node lists that block's transaction
        infos, and the one whose ``Anchored`` log carries our key and address is it.
        """
        contract = _raw_address(self.contract_address, "contract address")[1:].hex()
        wanted = [
            _anchored_topic(),
            key.hex(),
            bytes(12).hex() + _raw_address(self.address, "address")[1:].hex(),
        ]

        async def find() -> AnchorReceipt | None:
            infos = await _post(
                http,
                self.solidity_node_url,
                "walletsolidity/gettransactioninfobyblocknum",
                {"num": block},
            )
            for info in infos if isinstance(infos, list) else []:
                for entry in info.get("log") or []:
                    topics = [str(t).lower() for t in entry.get("topics") or []]
                    if str(entry.get("address", "")).lower() == contract and topics == wanted:
                        return AnchorReceipt(
                            CHAIN, self.location, str(info["id"]), int(info["blockNumber"])
                        )
            if infos:
                raise FormatError(
                    f"TRON contract {self.contract_address} records an anchor in block {block} "
                    "but that block has no Anchored event for it"
                )
            return None  # not solid yet

        return await self._poll(
            deadline,
            find,
            f"TRON block {block} holding the anchor is not confirmed by the solidity node "
            f"within {self.confirm_timeout_s:g} s",
        )

    async def _poll(
        self, deadline: float, attempt: Callable[[], Awaitable[T | None]], timeout_message: str
    ) -> T:
        """``attempt()`` until it gives something, with doubling waits, until ``deadline``."""
        delay = self.poll_interval_s
        while True:
            found = await attempt()
            if found is not None:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unavailable(timeout_message)
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, self.max_poll_interval_s)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _failure(info: Mapping[str, Any]) -> str:
    """Why a confirmed transaction did not anchor, or ``""`` when it did."""
    receipt = info.get("receipt") or {}
    outcome = str(receipt.get("result") or "")
    if outcome == "SUCCESS" and info.get("result") != "FAILED":
        return ""
    parts = [outcome or str(info.get("result") or "no result")]
    results = info.get("contractResult") or []
    if results and results[0]:
        parts.append(decode_revert(str(results[0])))
    message = _text(info.get("resMessage"))
    if message:
        parts.append(message)
    if outcome == "OUT_OF_ENERGY":
        parts.append("raise fee_limit_sun or give the account energy")
    return "; ".join(parts)
