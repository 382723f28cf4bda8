"""Anchoring: putting a session's Merkle root somewhere it cannot be rewritten.

The embedded default is :class:`~lucid_sessions.anchoring.local.LocalAnchorLog`, an
append-only log of roots, each entry chained to the one before and signed with the
cluster key. Chain backends (TRON, EVM) implement the same :class:`Anchor` interface.
:func:`~lucid_sessions.anchoring.select.anchor_for` picks one from the settings
(:mod:`~lucid_sessions.anchoring.settings`, importing web3 or tronpy only when chosen), and
:class:`~lucid_sessions.anchoring.job.AnchorJobs` runs anchoring as a durable job with
retries, its state kept with the session.
"""

from lucid_sessions.anchoring.local import Anchor, AnchorReceipt, LocalAnchorLog

__all__ = ["Anchor", "AnchorReceipt", "LocalAnchorLog"]
