"""The LucidAnchor contract as the chain backends see it: artifact, ids, revert reasons.

``contracts/LucidAnchor.sol`` is compiled by ``scripts/compile-contract`` into
``LucidAnchor.json`` next to this module (committed, shipped as package data, and checked
by ``tests/test_anchor_contract.py`` to be exactly what the pinned compiler makes of the
committed source). Loading it here means a deployment never needs Node.js or solc.

Records are keyed by ``(anchoring address, session key)``: see the contract's comment for
why the sender is part of the key (nobody can pre-claim or front-run our ids). The
session key is ``sha256(session_id.encode("utf-8"))``: fixed length whatever the id,
and anyone holding a bundle can recompute it. The root goes on chain as its 32 raw
bytes (a BLAKE3 or SHA-256 Merkle root, hex in the manifest).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lucid_sessions.errors import (
    AlreadyExistsError,
    FormatError,
    InvalidConfigError,
    PipelineError,
)

__all__ = [
    "ENV_KEY",
    "ENV_KEY_FILE",
    "key_bytes",
    "key_from_env",
    "shown_url",
    "AnchorConflict",
    "AnchorRejected",
    "ChainLocation",
    "artifact",
    "decode_revert",
    "root_bytes",
    "session_key",
]

_ZERO = b"\0" * 32


class AnchorConflict(AlreadyExistsError):
    """The session is already anchored, by this address, with another root."""


class AnchorRejected(PipelineError):
    """The chain refused an anchoring transaction (a revert, or the node said no)."""


@cache
def artifact() -> dict[str, Any]:
    """The committed compile artifact: ``abi``, ``bytecode``, ``compiler``, ``sourceSha256``."""
    text = resources.files(__package__).joinpath("LucidAnchor.json").read_text("utf-8")
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("contractName") != "LucidAnchor":
        raise FormatError("LucidAnchor.json is not the LucidAnchor artifact")
    return data


def session_key(session_id: str) -> bytes:
    """The on-chain id of a session: sha256 of its UTF-8 id."""
    if not session_id:
        raise FormatError("session id is empty")
    return hashlib.sha256(session_id.encode("utf-8")).digest()


def root_bytes(root: str) -> bytes:
    """A Merkle root given as 64 hex digits (optionally ``0x``) as 32 bytes; never zero."""
    text = root[2:] if root[:2] in ("0x", "0X") else root
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32 or len(text) != 64:
        raise FormatError(f"root {root!r} is not 32 bytes of hex")
    if raw == _ZERO:
        raise FormatError("root is all zeros, which the contract refuses")
    return raw


def _selector(signature: str) -> bytes:
    from eth_utils.crypto import keccak

    return bytes(keccak(text=signature))[:4]


@cache
def _errors() -> dict[bytes, tuple[str, list[str], list[str]]]:
    """Custom errors of the ABI by selector: (name, argument types, argument names)."""
    found = {}
    for entry in artifact()["abi"]:
        if entry.get("type") == "error":
            types = [arg["type"] for arg in entry["inputs"]]
            names = [arg["name"] for arg in entry["inputs"]]
            found[_selector(f"{entry['name']}({','.join(types)})")] = (entry["name"], types, names)
    return found


def decode_revert(data: str | bytes | None) -> str:
    """A readable reason for revert data: a custom error of the contract with its
    arguments, a ``require`` string, or the raw data when it is neither."""
    from eth_abi.abi import decode

    if isinstance(data, str):
        text = data
        try:
            data = bytes.fromhex(text[2:] if text.startswith("0x") else text)
        except ValueError:
            return text
    if not data:
        return "reverted without a reason"
    selector, body = data[:4], data[4:]
    try:
        if selector == _selector("Error(string)"):
            return str(decode(["string"], body)[0])
        if selector in _errors():
            name, types, names = _errors()[selector]
            values = decode(types, body)
            shown = ", ".join(
                f"{n}={'0x' + v.hex() if isinstance(v, bytes) else v}"
                for n, v in zip(names, values, strict=True)
            )
            return f"{name}({shown})"
    except Exception:  # malformed revert data: fall through to the raw bytes
        pass
    return f"reverted with data 0x{data.hex()}"


@dataclass(frozen=True, slots=True)
class ChainLocation:
    """Where an EVM anchor lives: ``"<chain id>:<contract>:<anchoring address>"``.

    The anchoring address is part of the location because records are keyed by it; a
    verifier should compare it with the cluster's pinned address.
    """

    chain_id: int
    contract: str
    anchorer: str

    def __str__(self) -> str:
        return f"{self.chain_id}:{self.contract}:{self.anchorer}"

    @classmethod
    def parse(cls, text: str) -> ChainLocation:
        parts = text.split(":")
        if len(parts) != 3 or not parts[0].isdigit():
            raise FormatError(f"anchor location {text!r} is not <chain id>:<contract>:<address>")
        return cls(int(parts[0]), parts[1], parts[2])


# The anchoring account's key, shared by the chain backends. It is read here and handed to
# the backend's key class; it never appears in a message, only where it came from.

ENV_KEY = "LUCID_ANCHOR_KEY"
ENV_KEY_FILE = "LUCID_ANCHOR_KEY_FILE"


def key_bytes(secret: str | bytes, *, source: str) -> bytes:
    """A 32-byte secp256k1 private key from hex text (``0x`` optional) or raw bytes."""
    if isinstance(secret, str):
        text = secret.strip()
        text = text[2:] if text[:2] in ("0x", "0X") else text
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = b""
    else:
        raw = bytes(secret)
    if len(raw) != 32:
        raise InvalidConfigError(f"{source} is not a 32-byte hex private key")
    return raw


def key_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(key text, where it came from): ``LUCID_ANCHOR_KEY``, else the file named by
    ``LUCID_ANCHOR_KEY_FILE``."""
    env = os.environ if environ is None else environ
    if env.get(ENV_KEY):
        return env[ENV_KEY], ENV_KEY
    if env.get(ENV_KEY_FILE):
        path = Path(env[ENV_KEY_FILE])
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not ASCII hex"
            raise InvalidConfigError(f"cannot read {ENV_KEY_FILE} {path}: {reason}") from None
        return text, f"{ENV_KEY_FILE} {path}"
    raise InvalidConfigError(f"no anchoring key: set {ENV_KEY} or {ENV_KEY_FILE}")


def shown_url(url: str) -> str:
    """A node's URL without path, query or credentials (they often hold an API key)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
