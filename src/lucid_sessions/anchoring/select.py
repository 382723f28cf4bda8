"""Choosing the anchor backend from the configuration.

:func:`anchor_for` builds the one :class:`~lucid_sessions.anchoring.local.Anchor` a
pipeline uses. The chain backends are imported only when chosen, so web3 and tronpy are
never loaded by a cluster that anchors locally. The private key is read here (from
``LUCID_ANCHOR_KEY`` or the key file) and handed to the backend's key object, which keeps
it; errors name where it came from, never what it was.
"""

from __future__ import annotations

from pathlib import Path

from lucid_sessions.anchoring.local import Anchor, LocalAnchorLog
from lucid_sessions.anchoring.settings import AnchorConfig
from lucid_sessions.crypto import ClusterKey
from lucid_sessions.errors import InvalidConfigError

__all__ = ["LOCAL_LOG_NAME", "anchor_for", "anchorer_of"]

LOCAL_LOG_NAME = "anchors.jsonl"


def anchor_for(config: AnchorConfig, datadir: Path, signer: ClusterKey) -> Anchor:
    """The backend ``config`` names: ``local`` is ``<datadir>/anchors.jsonl`` signed with
    ``signer``; ``evm`` and ``tron`` are the LucidAnchor contract at ``config.contract``."""
    if config.backend == "local":
        return LocalAnchorLog(datadir / LOCAL_LOG_NAME, signer)
    if not config.url or not config.contract:
        raise InvalidConfigError(f"anchor backend {config.backend} needs a URL and a contract")
    secret, source = config.private_key()
    if config.backend == "evm":
        from lucid_sessions.anchoring.evm import AnchorKey, EvmAnchor

        return EvmAnchor(
            config.url,
            config.contract,
            AnchorKey(secret, source=source),
            chain_id=config.chain_id,
        )
    if config.backend == "tron":
        from lucid_sessions.anchoring.tron import TronAnchor, TronKey

        return TronAnchor(
            config.url, config.solidity_url, config.contract, TronKey(secret, source=source)
        )
    raise InvalidConfigError(f"unknown anchor backend {config.backend!r}")


def anchorer_of(anchor: Anchor) -> str | None:
    """The address the backend anchors from (chain backends), else None."""
    address = getattr(anchor, "address", None)
    return address if isinstance(address, str) else None
