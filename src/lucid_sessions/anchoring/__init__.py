"""Anchoring: putting a session's Merkle root somewhere it cannot be rewritten.

The embedded default is :class:`~lucid_sessions.anchoring.local.LocalAnchorLog`, an
append-only log of roots, each entry chained to the one before and signed with the
cluster key. Chain backends (TRON, EVM) implement the same :class:`Anchor` interface.
"""

from lucid_sessions.anchoring.local import Anchor, AnchorReceipt, LocalAnchorLog

__all__ = ["Anchor", "AnchorReceipt", "LocalAnchorLog"]
