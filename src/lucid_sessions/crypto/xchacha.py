"""XChaCha20-Poly1305: the AEAD that seals every stored chunk and every wrapped data key.

The construction is exactly ``AEAD_XChaCha20_Poly1305`` of draft-irtf-cfrg-xchacha-03:
the subkey is ``HChaCha20(key, nonce[:16])`` and the message is sealed with the IETF
ChaCha20-Poly1305 of RFC 8439 under that subkey and the 12-byte nonce
``00000000 || nonce[16:24]``.  Output is therefore byte-for-byte what libsodium's
``crypto_aead_xchacha20poly1305_ietf_encrypt`` produces: ciphertext followed by a
16-byte Poly1305 tag.

Both halves run in OpenSSL through the ``cryptography`` package (ChaCha20-Poly1305 is
several times faster there than in libsodium).  HChaCha20 is derived from one ChaCha20
keystream block: the ChaCha20 block function is HChaCha20's permutation followed by a
feed-forward addition of the input state, so subtracting the known input words (the
constants and the 16-byte nonce) from output words 0-3 and 12-15 yields HChaCha20.

Nothing secret is kept at module level; each call derives its subkey afresh.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from lucid_sessions.errors import AuthenticationError, EncryptionError

__all__ = ["KEY_SIZE", "NONCE_SIZE", "TAG_SIZE", "XChaCha20Poly1305", "hchacha20"]

KEY_SIZE = 32
"""Key length in bytes."""
NONCE_SIZE = 24
"""Nonce length in bytes; random nonces are safe at this size."""
TAG_SIZE = 16
"""Length of the Poly1305 tag appended to every ciphertext."""

_HNONCE_SIZE = 16
_MASK32 = 0xFFFFFFFF
# "expand 32-byte k" as four little-endian words: ChaCha state words 0-3.
_SIGMA = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)
_BLOCK_WORDS = struct.Struct("<16I")
_NONCE_WORDS = struct.Struct("<4I")
_OUTPUT_WORDS = struct.Struct("<8I")
_ZERO_BLOCK = bytes(64)
_IETF_NONCE_PREFIX = bytes(4)


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """Return HChaCha20(key, nonce16): 32 bytes, as defined in draft-irtf-cfrg-xchacha-03 §2.2.

    ``key`` must be 32 bytes and ``nonce16`` 16 bytes, else :class:`EncryptionError`
    (the message states only lengths, never key material).
    """
    if len(key) != KEY_SIZE:
        raise EncryptionError(f"HChaCha20 key must be {KEY_SIZE} bytes, got {len(key)}")
    if len(nonce16) != _HNONCE_SIZE:
        raise EncryptionError(f"HChaCha20 nonce must be {_HNONCE_SIZE} bytes, got {len(nonce16)}")
    # cryptography's 16-byte ChaCha20 "nonce" is counter || nonce, i.e. state words 12-15,
    # which is exactly where HChaCha20 places its 16-byte input.
    encryptor = Cipher(algorithms.ChaCha20(key, nonce16), mode=None).encryptor()
    block = _BLOCK_WORDS.unpack(encryptor.update(_ZERO_BLOCK))
    n0, n1, n2, n3 = _NONCE_WORDS.unpack(nonce16)
    return _OUTPUT_WORDS.pack(
        (block[0] - _SIGMA[0]) & _MASK32,
        (block[1] - _SIGMA[1]) & _MASK32,
        (block[2] - _SIGMA[2]) & _MASK32,
        (block[3] - _SIGMA[3]) & _MASK32,
        (block[12] - n0) & _MASK32,
        (block[13] - n1) & _MASK32,
        (block[14] - n2) & _MASK32,
        (block[15] - n3) & _MASK32,
    )


class XChaCha20Poly1305:
    """XChaCha20-Poly1305 AEAD under one 32-byte key.

    Guarantees: :meth:`encrypt` returns ``ciphertext || tag`` (plaintext length + 16 bytes),
    identical to libsodium's ``crypto_aead_xchacha20poly1305_ietf_encrypt``;
    :meth:`decrypt` returns the plaintext only if the tag authenticates the ciphertext,
    the nonce and the associated data, and raises :class:`AuthenticationError` otherwise.
    The caller owns nonce uniqueness: use 24 random bytes per message.  The key never
    appears in ``repr`` or in exception messages.
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise EncryptionError(
                f"XChaCha20-Poly1305 key must be {KEY_SIZE} bytes, got {len(key)}"
            )
        self._key = bytes(key)

    def __repr__(self) -> str:
        return "XChaCha20Poly1305(<key hidden>)"

    def _aead(self, nonce: bytes) -> tuple[ChaCha20Poly1305, bytes]:
        if len(nonce) != NONCE_SIZE:
            raise EncryptionError(
                f"XChaCha20-Poly1305 nonce must be {NONCE_SIZE} bytes, got {len(nonce)}"
            )
        subkey = hchacha20(self._key, nonce[:_HNONCE_SIZE])
        return ChaCha20Poly1305(subkey), _IETF_NONCE_PREFIX + nonce[_HNONCE_SIZE:]

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes) -> bytes:
        """Seal ``data``; the result is ``ciphertext || 16-byte tag``.

        Raises :class:`EncryptionError` for a nonce that is not 24 bytes or for input
        beyond OpenSSL's single-call limit (2**31 - 1 bytes).
        """
        aead, ietf_nonce = self._aead(nonce)
        try:
            return aead.encrypt(ietf_nonce, data, associated_data)
        except OverflowError as exc:
            raise EncryptionError("data or associated data too long for one AEAD call") from exc

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes) -> bytes:
        """Open ``ciphertext || tag``; the tag is checked before any plaintext is returned.

        Raises :class:`AuthenticationError` when the tag does not match (altered or
        truncated ciphertext, other nonce, other associated data, other key), and
        :class:`EncryptionError` for a nonce that is not 24 bytes.
        """
        aead, ietf_nonce = self._aead(nonce)
        try:
            return aead.decrypt(ietf_nonce, data, associated_data)
        except InvalidTag as exc:
            raise AuthenticationError(
                "XChaCha20-Poly1305 authentication failed: ciphertext, nonce, associated "
                "data or key do not match"
            ) from exc
        except OverflowError as exc:
            raise EncryptionError("data or associated data too long for one AEAD call") from exc
