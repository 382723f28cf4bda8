"""Cryptography of Lucid Sessions: sealing chunks, wrapping keys, signing manifests.

Glossary
--------
XChaCha20-Poly1305
    The AEAD (draft-irtf-cfrg-xchacha-03) that seals chunks and wrapped keys; 24-byte
    random nonces, 16-byte tags (:mod:`.xchacha`).
master key / data key / wrapped key
    Envelope encryption: a per-session data key seals chunks and is stored only wrapped
    by the operator's master key, so master key rotation rewraps keys, not recordings
    (:mod:`.envelope`).
cluster key
    The Ed25519 key that signs session manifests; its public half and fingerprint are
    all an auditor needs (:mod:`.signing`).

No key material ever appears in ``repr``, ``str``, log records or exception messages;
only key ids and fingerprints do.
"""

from lucid_sessions.crypto.envelope import (
    MASTER_KEY_ENV,
    WRAPPED_KEY_SIZE,
    DataKey,
    MasterKey,
    rewrap,
    unwrap_data_key,
    wrap_data_key,
    wrapped_data_key_id,
    wrapped_master_key_id,
    write_key_file,
)
from lucid_sessions.crypto.signing import (
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    ClusterKey,
    load_public_key,
    public_key_fingerprint,
    verify_signature,
)
from lucid_sessions.crypto.xchacha import (
    KEY_SIZE,
    NONCE_SIZE,
    TAG_SIZE,
    XChaCha20Poly1305,
    hchacha20,
)

__all__ = [
    "KEY_SIZE",
    "MASTER_KEY_ENV",
    "NONCE_SIZE",
    "PUBLIC_KEY_SIZE",
    "SIGNATURE_SIZE",
    "TAG_SIZE",
    "WRAPPED_KEY_SIZE",
    "ClusterKey",
    "DataKey",
    "MasterKey",
    "XChaCha20Poly1305",
    "hchacha20",
    "load_public_key",
    "public_key_fingerprint",
    "rewrap",
    "unwrap_data_key",
    "verify_signature",
    "wrap_data_key",
    "wrapped_data_key_id",
    "wrapped_master_key_id",
    "write_key_file",
]
