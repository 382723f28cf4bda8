"""The ``evm`` anchor backend: the LucidAnchor contract on any EVM chain, over JSON-RPC.

:class:`EvmAnchor` implements :class:`~lucid_sessions.anchoring.local.Anchor`. For each
session it calls ``anchor(sha256(session id), root)`` from the cluster's anchoring
address, with a transaction built and signed here (the node never sees the key), and
returns ``AnchorReceipt("evm", "<chain id>:<contract>:<address>", tx hash, block)``.

- **Idempotent**: before sending, it reads the record. The same root already there
  returns the receipt of the transaction that wrote it (found through the ``Anchored``
  event in the block the contract recorded); another root raises
  :class:`~lucid_sessions.anchoring.contract.AnchorConflict`. A transaction sent but
  not yet mined when the wait ran out is remembered and waited for again on a retry, so
  a retry does not pay for a second transaction.
- **Errors**: a node that cannot be reached, or a transaction not mined or not confirmed
  in time, is :class:`~lucid_sessions.cluster.interfaces.Unavailable` (callers may
  retry); a revert is :class:`~lucid_sessions.anchoring.contract.AnchorRejected` naming
  the contract's reason; a wrong key, address or chain id is
  :class:`~lucid_sessions.errors.InvalidConfigError`.
- **The private key** comes from the caller, or ``LUCID_ANCHOR_KEY`` (hex), or the file
  named by ``LUCID_ANCHOR_KEY_FILE`` (hex). It lives only inside :class:`AnchorKey`, whose
  repr shows the address; no message built here contains it, and errors about a bad key
  name where it came from, never what it was.

web3's synchronous API runs in a worker thread (as the local log's file I/O does): it has
no event-loop-bound HTTP session to leak between the ``asyncio.run`` calls of the CLI and
the long-lived loop of ``serve``, and one lock per backend serialises nonces. Fees are
EIP-1559 when the latest block has a base fee, else a legacy gas price.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests

from lucid_sessions.anchoring.contract import (
    ENV_KEY,
    ENV_KEY_FILE,
    AnchorConflict,
    AnchorRejected,
    ChainLocation,
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
from lucid_sessions.errors import FormatError, InvalidConfigError, LucidError

# Importing web3 or eth_account imports py_ecc, which raises the recursion limit of the
# whole process to 100,000. The rest of the process relies on the default limit: deeply
# nested JSON from a client must end in RecursionError (a clear 422 or format error), not
# in a C stack overflow.
_RECURSION_LIMIT = sys.getrecursionlimit()
try:
    with warnings.catch_warnings():
        # web3 7 imports websockets.legacy for a provider not used here, which warns.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="websockets")
        from eth_account import Account
        from web3 import HTTPProvider, Web3
        from web3.exceptions import (
            ContractLogicError,
            ProviderConnectionError,
            TimeExhausted,
            TransactionNotFound,
            Web3Exception,
            Web3RPCError,
        )
finally:
    sys.setrecursionlimit(_RECURSION_LIMIT)

__all__ = [
    "ENV_KEY",
    "ENV_KEY_FILE",
    "AnchorKey",
    "EvmAnchor",
    "deploy_contract",
    "read_anchor",
]

log = logging.getLogger(__name__)

_ZERO = b"\0" * 32
_GAS_MARGIN = 1.25
_POLL_S = 0.2

T = TypeVar("T")


class AnchorKey:
    """The anchoring account's private key. Signs transactions; never shows the key."""

    __slots__ = ("_account",)

    def __init__(self, secret: str | bytes, *, source: str = "the private key") -> None:
        raw = key_bytes(secret, source=source)
        try:
            self._account = Account.from_key(raw)
        except Exception:
            raise InvalidConfigError(f"{source} is not a valid secp256k1 private key") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AnchorKey:
        """From ``LUCID_ANCHOR_KEY`` or the file named by ``LUCID_ANCHOR_KEY_FILE``."""
        secret, source = key_from_env(environ)
        return cls(secret, source=source)

    @property
    def address(self) -> str:
        """The checksummed account address."""
        return str(self._account.address)

    def sign(self, transaction: dict[str, Any]) -> bytes:
        """The signed raw transaction."""
        return bytes(self._account.sign_transaction(transaction).raw_transaction)

    def __repr__(self) -> str:
        return f"AnchorKey(address={self.address})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("AnchorKey cannot be pickled")


def _as_key(private_key: str | bytes | AnchorKey | None) -> AnchorKey:
    if isinstance(private_key, AnchorKey):
        return private_key
    if private_key is None:
        return AnchorKey.from_env()
    return AnchorKey(private_key)


def _web3(rpc_url: str, timeout_s: float) -> Any:
    if urlsplit(rpc_url).scheme not in ("http", "https"):
        raise InvalidConfigError(f"EVM node URL {shown_url(rpc_url)} is not http(s)")
    # No provider-level retries: a node that is down is reported at once as Unavailable,
    # and the callers' retry policy (with idempotent anchors) takes it from there.
    provider = HTTPProvider(
        rpc_url, request_kwargs={"timeout": timeout_s}, exception_retry_configuration=None
    )
    return Web3(provider)


def _checksum(address: str, what: str) -> str:
    if not Web3.is_address(address):
        raise InvalidConfigError(f"{what} {address!r} is not an EVM address")
    return str(Web3.to_checksum_address(address))


def _translated(node: str, call: Callable[[], T]) -> T:
    """``call()``, with web3 and network errors turned into Lucid errors."""
    try:
        return call()
    except LucidError:
        raise
    except ContractLogicError as exc:
        data = exc.data
        if isinstance(data, dict):  # hardhat: {"message": ..., "data": "0x..."}
            data = data.get("data")
        reason = decode_revert(data) if isinstance(data, str | bytes) else str(exc.message)
        raise AnchorRejected(f"the contract refused: {reason}") from None
    except (requests.RequestException, ProviderConnectionError, OSError) as exc:
        raise Unavailable(f"EVM node {node} unreachable: {type(exc).__name__}") from None
    except TimeExhausted as exc:
        raise Unavailable(f"EVM node {node}: {exc}") from None
    except Web3RPCError as exc:
        raise AnchorRejected(f"EVM node {node} refused: {exc.message}") from None
    except Web3Exception as exc:
        raise AnchorRejected(f"EVM node {node}: {type(exc).__name__}: {exc}") from None


class EvmAnchor:
    """Anchors session roots in a deployed LucidAnchor contract (see the module doc)."""

    def __init__(
        self,
        rpc_url: str,
        contract_address: str,
        private_key: str | bytes | AnchorKey | None = None,
        *,
        chain_id: int | None = None,
        confirmations: int = 1,
        timeout_s: float = 120.0,
    ) -> None:
        if confirmations < 1:
            raise InvalidConfigError(f"confirmations must be at least 1, not {confirmations}")
        if timeout_s <= 0:
            raise InvalidConfigError(f"timeout must be positive, not {timeout_s}")
        self._key = _as_key(private_key)
        self._node = shown_url(rpc_url)
        self.contract_address = _checksum(contract_address, "contract address")
        self.confirmations = confirmations
        self.timeout_s = timeout_s
        self._expected_chain_id = chain_id
        self._chain_id: int | None = None
        self._w3 = _web3(rpc_url, min(timeout_s, 30.0))
        self._contract = self._w3.eth.contract(address=self.contract_address, abi=artifact()["abi"])
        self._lock = threading.Lock()
        self._pending: dict[bytes, tuple[bytes, bytes]] = {}
        """session key -> (root, tx hash) sent but not seen mined."""

    @property
    def address(self) -> str:
        """The anchoring account's address (records are kept under it)."""
        return self._key.address

    def __repr__(self) -> str:
        return (
            f"EvmAnchor(node={self._node}, contract={self.contract_address}, "
            f"address={self.address})"
        )

    async def anchor(self, session_id: str, root: str) -> AnchorReceipt:
        key, raw = session_key(session_id), root_bytes(root)
        return await asyncio.to_thread(self._call, lambda: self._anchor(key, raw, session_id))

    def _call(self, call: Callable[[], T]) -> T:
        with self._lock:
            return _translated(self._node, call)

    def chain_id(self) -> int:
        """The node's chain id, checked once against the one configured."""
        if self._chain_id is None:
            found = int(self._w3.eth.chain_id)
            if self._expected_chain_id is not None and found != self._expected_chain_id:
                raise InvalidConfigError(
                    f"EVM node {self._node} is chain {found}, not the configured "
                    f"{self._expected_chain_id}"
                )
            if not self._w3.eth.get_code(self.contract_address):
                raise InvalidConfigError(
                    f"no contract at {self.contract_address} on chain {found} ({self._node})"
                )
            self._chain_id = found
        return self._chain_id

    def _location(self) -> str:
        return str(ChainLocation(self.chain_id(), self.contract_address, self.address))

    def _record(self, key: bytes) -> tuple[bytes, int, int]:
        root, when, block = self._contract.functions.records(self.address, key).call()
        return bytes(root), int(when), int(block)

    def _anchor(self, key: bytes, raw: bytes, session_id: str) -> AnchorReceipt:
        deadline = time.monotonic() + self.timeout_s
        location = self._location()
        existing, _, block = self._record(key)
        if existing == raw:
            return self._existing_receipt(key, block, location, deadline)
        if existing != _ZERO:
            raise AnchorConflict(
                f"session {session_id} is already anchored with another root "
                f"(0x{existing.hex()}) in {self.contract_address} on chain {self.chain_id()}"
            )
        pending = self._pending.get(key)
        if pending is not None and pending[0] == raw:
            tx_hash = pending[1]
        else:
            try:
                tx_hash = self._send(key, raw)
            except ContractLogicError:
                # Another process with this key may have anchored it since we looked.
                existing, _, block = self._record(key)
                if existing == raw:
                    return self._existing_receipt(key, block, location, deadline)
                raise
            self._pending[key] = (raw, tx_hash)
        receipt = self._wait_mined(tx_hash, deadline)
        del self._pending[key]
        if receipt["status"] != 1:
            existing, _, block = self._record(key)
            if existing == raw:  # another process with this key anchored it first
                return self._existing_receipt(key, block, location, deadline)
            raise AnchorRejected(
                f"anchoring transaction 0x{tx_hash.hex()} for session {session_id} reverted"
            )
        mined = int(receipt["blockNumber"])
        self._wait_confirmed(tx_hash, mined, deadline)
        log.info("anchored session %s in block %d, tx 0x%s", session_id, mined, tx_hash.hex())
        return AnchorReceipt("evm", location, "0x" + tx_hash.hex(), mined)

    def _send(self, key: bytes, raw: bytes) -> bytes:
        """Build, sign and send ``anchor(key, raw)``; the transaction hash.

        Gas estimation runs the call first, so a revert (``AlreadyAnchored``,
        ``ZeroRoot``) surfaces here, decoded, before anything is paid for.
        """
        eth = self._w3.eth
        function = self._contract.functions.anchor(key, raw)
        gas = function.estimate_gas({"from": self.address})
        transaction: dict[str, Any] = function.build_transaction(
            {
                "from": self.address,
                "chainId": self.chain_id(),
                "nonce": eth.get_transaction_count(self.address, "pending"),
                "gas": int(gas * _GAS_MARGIN) + 10_000,
                **self._fees(),
            }
        )
        return bytes(eth.send_raw_transaction(self._key.sign(transaction)))

    def _fees(self) -> dict[str, int]:
        eth = self._w3.eth
        base = eth.get_block("latest").get("baseFeePerGas")
        if base is None:
            return {"gasPrice": int(eth.gas_price)}
        tip = int(eth.max_priority_fee)
        return {"maxPriorityFeePerGas": tip, "maxFeePerGas": 2 * int(base) + tip}

    def _wait_mined(self, tx_hash: bytes, deadline: float) -> Any:
        while True:
            try:
                return self._w3.eth.get_transaction_receipt(tx_hash)
            except TransactionNotFound:
                pass
            if time.monotonic() >= deadline:
                raise Unavailable(
                    f"anchoring transaction 0x{tx_hash.hex()} not mined within "
                    f"{self.timeout_s:g} s; a retry waits for it instead of sending again"
                )
            time.sleep(_POLL_S)

    def _wait_confirmed(self, tx_hash: bytes, mined: int, deadline: float) -> None:
        """Until ``confirmations`` blocks (the one it was mined in included) hold it."""
        while (have := int(self._w3.eth.block_number) - mined + 1) < self.confirmations:
            if time.monotonic() >= deadline:
                raise Unavailable(
                    f"anchoring transaction 0x{tx_hash.hex()} has {have} of "
                    f"{self.confirmations} confirmations after {self.timeout_s:g} s"
                )
            time.sleep(_POLL_S)

    def _existing_receipt(
        self, key: bytes, block: int, location: str, deadline: float
    ) -> AnchorReceipt:
        """The receipt of the transaction that wrote this address's record of ``key``,
        once it has its confirmations (a retry after a confirmation timeout lands here)."""
        event = self._contract.events.Anchored()
        logs = event.get_logs(
            argument_filters={"sessionId": key, "by": self.address},
            from_block=block,
            to_block=block,
        )
        if not logs:
            raise FormatError(
                f"{self.contract_address} records an anchor in block {block} but that block "
                "has no Anchored event for it"
            )
        tx_hash, mined = bytes(logs[0]["transactionHash"]), int(logs[0]["blockNumber"])
        self._wait_confirmed(tx_hash, mined, deadline)
        return AnchorReceipt("evm", location, "0x" + tx_hash.hex(), mined)


def deploy_contract(
    rpc_url: str,
    private_key: str | bytes | AnchorKey | None = None,
    *,
    timeout_s: float = 120.0,
) -> str:
    """Deploy the committed LucidAnchor bytecode; the new contract's checksummed address."""
    key = _as_key(private_key)
    w3 = _web3(rpc_url, min(timeout_s, 30.0))
    node = shown_url(rpc_url)

    def deploy() -> str:
        factory = w3.eth.contract(abi=artifact()["abi"], bytecode=artifact()["bytecode"])
        constructor = factory.constructor()
        transaction: dict[str, Any] = constructor.build_transaction(
            {
                "from": key.address,
                "chainId": int(w3.eth.chain_id),
                "nonce": w3.eth.get_transaction_count(key.address, "pending"),
            }
        )
        tx_hash = w3.eth.send_raw_transaction(key.sign(transaction))
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout_s)
        if receipt["status"] != 1 or not receipt.get("contractAddress"):
            raise AnchorRejected(f"deploying LucidAnchor failed in transaction {tx_hash.hex()}")
        return str(receipt["contractAddress"])

    return _translated(node, deploy)


def read_anchor(
    rpc_url: str, contract: str, session_id: str, anchorer: str, *, timeout_s: float = 30.0
) -> tuple[str, int] | None:
    """What ``anchorer`` anchored for ``session_id``: (hex root, block time), or None.

    For ``verify --chain-url``: compare the root with the manifest's, and ``anchorer``
    should be the cluster's pinned anchoring address (the receipt's location names it).
    """
    w3 = _web3(rpc_url, timeout_s)
    address = _checksum(contract, "contract address")
    by = _checksum(anchorer, "anchoring address")
    instance = w3.eth.contract(address=address, abi=artifact()["abi"])
    key = session_key(session_id)
    root, when = _translated(shown_url(rpc_url), instance.functions.rootOf(by, key).call)
    if bytes(root) == _ZERO:
        return None
    return bytes(root).hex(), int(when)
