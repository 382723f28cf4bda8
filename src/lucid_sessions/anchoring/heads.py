"""What every signed tree head shares: a body of named fields, and an Ed25519 signature
by the cluster key over a context string followed by the body's canonical JSON.

The context string differs per kind of head (a session checkpoint, a head of the log
across sessions), so a signature made for one kind never verifies as another.
"""

from __future__ import annotations

from typing import Any, ClassVar

from lucid_sessions.crypto import ClusterKey, verify_signature
from lucid_sessions.manifest import canonical_json

__all__ = ["SignedHead"]


class SignedHead:
    """Mixin for frozen dataclasses with a hex ``signature`` field: subclasses name the
    signed fields (``BODY``) and the context string (``CONTEXT``)."""

    __slots__ = ()
    BODY: ClassVar[tuple[str, ...]]
    CONTEXT: ClassVar[bytes]
    signature: str

    def body(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.BODY}

    def to_dict(self) -> dict[str, Any]:
        return {**self.body(), "signature": self.signature}

    def signed_message(self) -> bytes:
        return self.CONTEXT + canonical_json(self.body())

    def signature_ok(self, public_key: bytes) -> bool:
        try:
            raw = bytes.fromhex(self.signature)
        except ValueError:
            return False
        return verify_signature(public_key, raw, self.signed_message())

    def sign_with(self, key: ClusterKey) -> str:
        """The hex signature of this head's body (its own ``signature`` is ignored)."""
        return key.sign(self.signed_message()).hex()
