"""The cluster's Ed25519 signing key, which signs session manifests, and signature checks.

The private key lives in one PEM file (PKCS#8, unencrypted, mode 0600), created on first
use.  Anyone holding the 32-byte public key can check a manifest offline with
:func:`verify_signature`; the public key is named by its fingerprint, the first 16 bytes
of SHA-256 over the raw public key, in hex.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lucid_sessions.crypto.envelope import warn_if_exposed, write_new_secret_file
from lucid_sessions.errors import AlreadyExistsError, FormatError, StorageError

__all__ = [
    "PUBLIC_KEY_SIZE",
    "SIGNATURE_SIZE",
    "ClusterKey",
    "load_public_key",
    "public_key_fingerprint",
    "verify_signature",
]

PUBLIC_KEY_SIZE = 32
"""Length of a raw Ed25519 public key."""
SIGNATURE_SIZE = 64
"""Length of an Ed25519 signature."""

_FINGERPRINT_BYTES = 16


def public_key_fingerprint(public_key: bytes) -> str:
    """Return the hex of the first 16 bytes of SHA-256 over a raw 32-byte public key."""
    return hashlib.sha256(public_key).digest()[:_FINGERPRINT_BYTES].hex()


class ClusterKey:
    """An Ed25519 private key that signs manifests.

    Guarantees: signatures are deterministic Ed25519 (RFC 8032) and verify with
    :func:`verify_signature` against :meth:`public_key_bytes`; ``repr`` shows only the
    fingerprint, never private key material.
    """

    __slots__ = ("_private", "_public_raw")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self._public_raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def __repr__(self) -> str:
        return f"ClusterKey(fingerprint={self.fingerprint()!r})"

    @classmethod
    def generate(cls) -> ClusterKey:
        """Return a new key from the operating system's CSPRNG (not saved anywhere)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: bytes, *, source: str = "cluster key") -> ClusterKey:
        """Parse an unencrypted PKCS#8 PEM Ed25519 private key.

        Raises :class:`FormatError` naming ``source`` for anything else (never quoting
        the content).
        """
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise FormatError(
                f"{source} is not an unencrypted PEM Ed25519 private key",
                details={"source": source},
            ) from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise FormatError(
                f"{source} holds a private key that is not Ed25519", details={"source": source}
            )
        return cls(key)

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> ClusterKey:
        """Load the key at ``path``, creating it first if the file does not exist.

        Creation is atomic with mode 0600 and never replaces a file; if another process
        creates the file concurrently, its key is loaded instead.  Raises
        :class:`FormatError` naming the file when it exists but does not parse, and
        :class:`StorageError` when it cannot be read or written.  Logs a warning when the
        file is readable by group or others.
        """
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            key = cls.generate()
            pem = key._private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            try:
                write_new_secret_file(path, pem, "cluster key file")
            except AlreadyExistsError:
                return cls.load_or_create(path)
            return key
        except OSError as exc:
            raise StorageError(f"cannot read cluster key file {path}: {exc.strerror}") from exc
        key = cls.from_pem(data, source=f"cluster key file {path}")
        warn_if_exposed(path, "cluster key file")
        return key

    def public_key_bytes(self) -> bytes:
        """Return the raw 32-byte public key."""
        return self._public_raw

    def public_key_pem(self) -> bytes:
        """Return the public key as PEM SubjectPublicKeyInfo."""
        return self._private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def fingerprint(self) -> str:
        """Return the public key's fingerprint (32 hex characters)."""
        return public_key_fingerprint(self._public_raw)

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``message``."""
        return self._private.sign(message)


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Return True only if ``signature`` is a valid Ed25519 signature of ``message``.

    ``public_key`` is the raw 32-byte key.  Never raises: malformed keys, signatures or
    arguments of the wrong type all give False.
    """
    try:
        if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
            return False
        Ed25519PublicKey.from_public_bytes(bytes(public_key)).verify(
            bytes(signature), bytes(message)
        )
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def load_public_key(data: bytes) -> bytes:
    """Return the raw 32-byte Ed25519 public key encoded in ``data``.

    Accepts raw 32 bytes, 64 hex characters (surrounding whitespace ignored) or PEM
    SubjectPublicKeyInfo.  Raises :class:`FormatError` for anything else.
    """
    if len(data) == PUBLIC_KEY_SIZE:
        raw = bytes(data)
    else:
        stripped = bytes(data).strip()
        if stripped.startswith(b"-----BEGIN"):
            raw = _raw_from_pem(stripped)
        else:
            try:
                raw = bytes.fromhex(stripped.decode("ascii"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise FormatError(
                    "public key is neither raw 32 bytes, 64 hex characters nor PEM"
                ) from exc
            if len(raw) != PUBLIC_KEY_SIZE:
                raise FormatError("public key is neither raw 32 bytes, 64 hex characters nor PEM")
    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise FormatError("public key is not a valid Ed25519 public key") from exc
    return raw


def _raw_from_pem(pem: bytes) -> bytes:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise FormatError("public key PEM does not parse") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise FormatError("public key PEM holds a key that is not Ed25519")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
