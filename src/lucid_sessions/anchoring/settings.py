"""Anchor settings: which backend, where, with which key, and how hard to retry.

Every setting, its variable and its TOML key (``[anchor] key``)::

    backend         LUCID_ANCHOR_BACKEND        backend = "local" | "evm" | "tron"
    node URL        LUCID_ANCHOR_URL            url (EVM JSON-RPC, or TRON full node)
    solidity node   LUCID_ANCHOR_SOLIDITY_URL   solidity_url (TRON; default: the full node)
    contract        LUCID_ANCHOR_CONTRACT       contract (LucidAnchor's address)
    private key     LUCID_ANCHOR_KEY            (environment only: never in a TOML file)
    key file        LUCID_ANCHOR_KEY_FILE       key_file (hex, one line)
    chain id        LUCID_ANCHOR_CHAIN_ID       chain_id (EVM; checked against the node)
    attempts        LUCID_ANCHOR_MAX_ATTEMPTS   max_attempts = 8
    first backoff   LUCID_ANCHOR_BACKOFF_S      backoff_s = 2.0 (doubles per attempt)
    longest backoff LUCID_ANCHOR_MAX_BACKOFF_S  max_backoff_s = 300.0

``local`` (the default) needs none of the chain settings and refuses them: a contract or
URL set with no backend would otherwise anchor silently in the local log. ``evm`` and
``tron`` need the URL, the contract and a key. The private key is kept out of the repr,
and no message built here quotes it or the URL's path (node URLs often carry an API key).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lucid_sessions.errors import InvalidConfigError

__all__ = ["BACKENDS", "AnchorConfig", "describe", "load_anchor"]

BACKENDS = ("local", "evm", "tron")
_HEX_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
_EVM_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_TRON_ADDRESS = re.compile(r"^(T[1-9A-HJ-NP-Za-km-z]{33}|41[0-9a-fA-F]{40})$")


@dataclass(frozen=True, slots=True)
class AnchorConfig:
    backend: str = "local"
    url: str | None = field(default=None, repr=False)
    """EVM JSON-RPC or TRON full node URL (may hold an API key in its path or query)."""
    solidity_url: str | None = field(default=None, repr=False)
    contract: str | None = None
    key: str | None = field(default=None, repr=False)
    """The anchoring account's private key (hex), from ``LUCID_ANCHOR_KEY``."""
    key_file: Path | None = None
    chain_id: int | None = None
    max_attempts: int = 8
    backoff_s: float = 2.0
    max_backoff_s: float = 300.0

    def private_key(self) -> tuple[str, str]:
        """(the key as hex text, where it came from); the source names no secret."""
        if self.key:
            return self.key, "LUCID_ANCHOR_KEY"
        if self.key_file is not None:
            try:
                return self.key_file.read_text(encoding="ascii").strip(), str(self.key_file)
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not ASCII hex"
                raise InvalidConfigError(
                    f"cannot read anchor key file {self.key_file}: {reason}"
                ) from None
        raise InvalidConfigError("no anchoring key: set LUCID_ANCHOR_KEY or LUCID_ANCHOR_KEY_FILE")


def _shown(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}" + (f":{parts.port}" if parts.port else "")


def _number(
    value: object, name: str, errors: list[str], low: float, high: float, kind: type
) -> Any:
    try:
        number = kind(str(value).strip())
    except ValueError:
        errors.append(f"anchor {name} must be a number, not {value!r}")
        return None
    if not low <= number <= high:
        errors.append(f"anchor {name} must be between {low:g} and {high:g}, not {number}")
    return number


def load_anchor(
    raw: Mapping[str, Any], setting: Callable[[Any, str], Any], errors: list[str]
) -> AnchorConfig:
    """``[anchor]`` from the TOML document and ``LUCID_ANCHOR_*`` (``setting`` picks the
    variable over the TOML value); problems are appended to ``errors``."""
    section = raw.get("anchor")
    toml: Mapping[str, Any] = section if isinstance(section, Mapping) else {}
    values: dict[str, Any] = {}
    if "key" in toml:
        errors.append(
            "anchor key must not be in a config file: use LUCID_ANCHOR_KEY or [anchor] key_file"
        )
    backend = str(setting(toml.get("backend"), "LUCID_ANCHOR_BACKEND") or "local").strip()
    if backend not in BACKENDS:
        errors.append(f"anchor backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    values["backend"] = backend
    for name, var in (("url", "LUCID_ANCHOR_URL"), ("solidity_url", "LUCID_ANCHOR_SOLIDITY_URL")):
        url = setting(toml.get(name), var)
        if url:
            text = str(url).strip()
            if urlsplit(text).scheme not in ("http", "https") or not urlsplit(text).hostname:
                errors.append(f"anchor {name.replace('_', ' ')} must be an http(s) URL")
            values[name] = text
    contract = setting(toml.get("contract"), "LUCID_ANCHOR_CONTRACT")
    if contract:
        values["contract"] = str(contract).strip()
    key = setting(None, "LUCID_ANCHOR_KEY")
    if key:
        values["key"] = str(key).strip()
        if not _HEX_KEY.match(values["key"]):
            errors.append("LUCID_ANCHOR_KEY is not a 32-byte hex private key")
    key_file = setting(toml.get("key_file"), "LUCID_ANCHOR_KEY_FILE")
    if key_file:
        values["key_file"] = Path(str(key_file))
        if not values["key_file"].is_file():
            errors.append(f"anchor key file {values['key_file']} does not exist")
    chain_id = setting(toml.get("chain_id"), "LUCID_ANCHOR_CHAIN_ID")
    if chain_id is not None and str(chain_id).strip():
        values["chain_id"] = _number(chain_id, "chain id", errors, 1, 2**63 - 1, int)
    for name, var, low, high, kind in (
        ("max_attempts", "LUCID_ANCHOR_MAX_ATTEMPTS", 1, 1000, int),
        ("backoff_s", "LUCID_ANCHOR_BACKOFF_S", 0.01, 3600, float),
        ("max_backoff_s", "LUCID_ANCHOR_MAX_BACKOFF_S", 0.01, 86400, float),
    ):
        value = setting(toml.get(name), var)
        if value is not None:
            number = _number(value, name.replace("_", " "), errors, low, high, kind)
            if number is not None:
                values[name] = number
    config = AnchorConfig(**{k: v for k, v in values.items() if v is not None})
    if config.backend == "local":
        stray = [
            var
            for var, value in (
                ("url", config.url),
                ("solidity_url", config.solidity_url),
                ("contract", config.contract),
                ("chain_id", config.chain_id),
            )
            if value is not None
        ]
        if stray:
            errors.append(
                f"anchor {', '.join(stray)} set but the anchor backend is local: "
                "set LUCID_ANCHOR_BACKEND (evm or tron)"
            )
    elif config.backend in ("evm", "tron"):
        if not config.url:
            errors.append(f"anchor backend {config.backend} needs LUCID_ANCHOR_URL")
        if not config.contract:
            errors.append(f"anchor backend {config.backend} needs LUCID_ANCHOR_CONTRACT")
        elif config.backend == "evm" and not _EVM_ADDRESS.match(config.contract):
            errors.append(f"anchor contract {config.contract!r} is not an EVM address")
        elif config.backend == "tron" and not _TRON_ADDRESS.match(config.contract):
            errors.append(f"anchor contract {config.contract!r} is not a TRON address")
        if not config.key and config.key_file is None:
            errors.append(
                f"anchor backend {config.backend} needs LUCID_ANCHOR_KEY or LUCID_ANCHOR_KEY_FILE"
            )
        if config.backend == "tron" and config.chain_id is not None:
            errors.append("anchor chain_id applies to the evm backend only")
        if config.backend == "evm" and config.solidity_url is not None:
            errors.append("anchor solidity_url applies to the tron backend only")
    if config.max_backoff_s < config.backoff_s:
        errors.append("anchor max_backoff_s must not be below backoff_s")
    return config


def describe(config: AnchorConfig) -> str:
    """A one-line description for logs: backend, node host, contract; never the key."""
    if config.backend == "local":
        return "local anchor log"
    return f"{config.backend} contract {config.contract} via {_shown(config.url or '')}"
