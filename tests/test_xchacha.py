"""XChaCha20-Poly1305 matches draft-irtf-cfrg-xchacha-03 and libsodium, and rejects tampering."""

from __future__ import annotations

import struct

import nacl.bindings
import pytest
from cryptography.exceptions import InvalidTag
from hypothesis import given, settings
from hypothesis import strategies as st

from lucid_sessions.crypto.xchacha import (
    KEY_SIZE,
    NONCE_SIZE,
    TAG_SIZE,
    XChaCha20Poly1305,
    hchacha20,
)
from lucid_sessions.errors import AuthenticationError, EncryptionError

# Test vectors from draft-irtf-cfrg-xchacha-03 ("XChaCha: eXtended-nonce ChaCha and
# AEAD_XChaCha20_Poly1305", S. Arciszewski, January 2020).

# Section 2.2.1, "Test Vector for the HChaCha20 Block Function".
HCHACHA_KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
HCHACHA_NONCE = bytes.fromhex("000000090000004a0000000031415927")
HCHACHA_OUTPUT = bytes.fromhex("82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc")

# Appendix A.3.1, "AEAD_XChaCha20_Poly1305" example and test vector.
AEAD_KEY = bytes.fromhex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
AEAD_NONCE = bytes.fromhex("404142434445464748494a4b4c4d4e4f5051525354555657")
AEAD_AAD = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
AEAD_PLAINTEXT = (
    b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
    b"the future, sunscreen would be it."
)
AEAD_CIPHERTEXT = bytes.fromhex(
    "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
    "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
    "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
    "21f9664c97637da9768812f615c68b13b52e"
)
AEAD_TAG = bytes.fromhex("c0875924c1c7987947deafd8780acf49")


def reference_hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """HChaCha20 written out from the draft's §2.2 pseudocode, as an independent oracle."""
    mask = 0xFFFFFFFF
    x = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574]
    x += list(struct.unpack("<8I", key)) + list(struct.unpack("<4I", nonce16))

    def rotl(v: int, n: int) -> int:
        return ((v << n) | (v >> (32 - n))) & mask

    def quarter_round(a: int, b: int, c: int, d: int) -> None:
        x[a] = (x[a] + x[b]) & mask
        x[d] = rotl(x[d] ^ x[a], 16)
        x[c] = (x[c] + x[d]) & mask
        x[b] = rotl(x[b] ^ x[c], 12)
        x[a] = (x[a] + x[b]) & mask
        x[d] = rotl(x[d] ^ x[a], 8)
        x[c] = (x[c] + x[d]) & mask
        x[b] = rotl(x[b] ^ x[c], 7)

    for _ in range(10):
        quarter_round(0, 4, 8, 12)
        quarter_round(1, 5, 9, 13)
        quarter_round(2, 6, 10, 14)
        quarter_round(3, 7, 11, 15)
        quarter_round(0, 5, 10, 15)
        quarter_round(1, 6, 11, 12)
        quarter_round(2, 7, 8, 13)
        quarter_round(3, 4, 9, 14)
    return struct.pack("<8I", *x[0:4], *x[12:16])


keys = st.binary(min_size=KEY_SIZE, max_size=KEY_SIZE)
nonces = st.binary(min_size=NONCE_SIZE, max_size=NONCE_SIZE)
# Empty, partial-block, and multi-block (ChaCha blocks are 64 bytes, Poly1305 blocks 16).
plaintexts = st.binary(min_size=0, max_size=700)
aads = st.binary(min_size=0, max_size=100)


def sodium_encrypt(key: bytes, nonce: bytes, data: bytes, aad: bytes) -> bytes:
    result: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(data, aad, nonce, key)
    return result


def sodium_decrypt(key: bytes, nonce: bytes, data: bytes, aad: bytes) -> bytes:
    result: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(data, aad, nonce, key)
    return result


def test_hchacha20_matches_draft_vector() -> None:
    assert hchacha20(HCHACHA_KEY, HCHACHA_NONCE) == HCHACHA_OUTPUT


def test_reference_oracle_matches_draft_vector() -> None:
    assert reference_hchacha20(HCHACHA_KEY, HCHACHA_NONCE) == HCHACHA_OUTPUT


@given(key=keys, nonce16=st.binary(min_size=16, max_size=16))
def test_hchacha20_matches_reference_for_random_inputs(key: bytes, nonce16: bytes) -> None:
    assert hchacha20(key, nonce16) == reference_hchacha20(key, nonce16)


@pytest.mark.parametrize(
    "nonce16",
    [bytes(16), b"\xff" * 16, b"\xff\xff\xff\xff" + bytes(12), bytes(12) + b"\xff" * 4],
    ids=["zero", "all-ones", "max-counter-word", "max-last-word"],
)
def test_hchacha20_matches_reference_at_word_extremes(nonce16: bytes) -> None:
    # Word 12 is the ChaCha20 block counter in the keystream route; its extreme must not wrap.
    for key in (bytes(32), b"\xff" * 32, HCHACHA_KEY):
        assert hchacha20(key, nonce16) == reference_hchacha20(key, nonce16)


def test_aead_encrypt_matches_draft_vector() -> None:
    sealed = XChaCha20Poly1305(AEAD_KEY).encrypt(AEAD_NONCE, AEAD_PLAINTEXT, AEAD_AAD)
    assert sealed == AEAD_CIPHERTEXT + AEAD_TAG


def test_aead_decrypt_opens_draft_vector() -> None:
    opened = XChaCha20Poly1305(AEAD_KEY).decrypt(AEAD_NONCE, AEAD_CIPHERTEXT + AEAD_TAG, AEAD_AAD)
    assert opened == AEAD_PLAINTEXT


def test_libsodium_agrees_with_draft_vector() -> None:
    assert sodium_encrypt(AEAD_KEY, AEAD_NONCE, AEAD_PLAINTEXT, AEAD_AAD) == (
        AEAD_CIPHERTEXT + AEAD_TAG
    )


@settings(max_examples=200)
@given(key=keys, nonce=nonces, data=plaintexts, aad=aads)
def test_encrypt_matches_libsodium(key: bytes, nonce: bytes, data: bytes, aad: bytes) -> None:
    sealed = XChaCha20Poly1305(key).encrypt(nonce, data, aad)
    assert len(sealed) == len(data) + TAG_SIZE
    assert sealed == sodium_encrypt(key, nonce, data, aad)


@given(key=keys, nonce=nonces, data=plaintexts, aad=aads)
def test_decrypt_opens_libsodium_output(key: bytes, nonce: bytes, data: bytes, aad: bytes) -> None:
    sealed = sodium_encrypt(key, nonce, data, aad)
    assert XChaCha20Poly1305(key).decrypt(nonce, sealed, aad) == data


def test_large_multi_block_message_matches_libsodium() -> None:
    key, nonce = bytes(range(32)), bytes(range(100, 124))
    data = bytes(range(256)) * 4099 + b"tail"  # ~1 MiB, not a multiple of 64
    sealed = XChaCha20Poly1305(key).encrypt(nonce, data, b"aad")
    assert sealed == sodium_encrypt(key, nonce, data, b"aad")
    assert XChaCha20Poly1305(key).decrypt(nonce, sealed, b"aad") == data


@given(
    key=keys,
    nonce=nonces,
    data=st.binary(min_size=0, max_size=200),
    aad=aads,
    bit=st.integers(min_value=0),
)
def test_flipped_bit_in_ciphertext_or_tag_fails(
    key: bytes, nonce: bytes, data: bytes, aad: bytes, bit: int
) -> None:
    sealed = bytearray(XChaCha20Poly1305(key).encrypt(nonce, data, aad))
    bit %= len(sealed) * 8
    sealed[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(AuthenticationError):
        XChaCha20Poly1305(key).decrypt(nonce, bytes(sealed), aad)


@given(key=keys, nonce=nonces, data=plaintexts, aad=aads, bit=st.integers(min_value=0))
def test_flipped_bit_in_nonce_fails(
    key: bytes, nonce: bytes, data: bytes, aad: bytes, bit: int
) -> None:
    sealed = XChaCha20Poly1305(key).encrypt(nonce, data, aad)
    altered = bytearray(nonce)
    bit %= NONCE_SIZE * 8
    altered[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(AuthenticationError):
        XChaCha20Poly1305(key).decrypt(bytes(altered), sealed, aad)


@given(
    key=keys,
    nonce=nonces,
    data=plaintexts,
    aad=st.binary(min_size=1, max_size=100),
    bit=st.integers(min_value=0),
)
def test_flipped_bit_in_associated_data_fails(
    key: bytes, nonce: bytes, data: bytes, aad: bytes, bit: int
) -> None:
    sealed = XChaCha20Poly1305(key).encrypt(nonce, data, aad)
    altered = bytearray(aad)
    bit %= len(aad) * 8
    altered[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(AuthenticationError):
        XChaCha20Poly1305(key).decrypt(nonce, sealed, bytes(altered))


def test_every_bit_of_draft_vector_is_authenticated() -> None:
    aead = XChaCha20Poly1305(AEAD_KEY)
    sealed = AEAD_CIPHERTEXT + AEAD_TAG
    for bit in range(len(sealed) * 8):
        altered = bytearray(sealed)
        altered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(AuthenticationError):
            aead.decrypt(AEAD_NONCE, bytes(altered), AEAD_AAD)


def test_authentication_error_chains_invalid_tag() -> None:
    with pytest.raises(AuthenticationError) as info:
        XChaCha20Poly1305(AEAD_KEY).decrypt(AEAD_NONCE, AEAD_CIPHERTEXT + AEAD_TAG, b"")
    assert isinstance(info.value.__cause__, InvalidTag)


def test_wrong_key_fails_authentication() -> None:
    other = bytes(b ^ 1 for b in AEAD_KEY)
    with pytest.raises(AuthenticationError):
        XChaCha20Poly1305(other).decrypt(AEAD_NONCE, AEAD_CIPHERTEXT + AEAD_TAG, AEAD_AAD)


@pytest.mark.parametrize("length", [0, 1, TAG_SIZE - 1, TAG_SIZE])
def test_truncated_ciphertext_fails_authentication(length: int) -> None:
    with pytest.raises(AuthenticationError):
        XChaCha20Poly1305(AEAD_KEY).decrypt(AEAD_NONCE, (AEAD_CIPHERTEXT + AEAD_TAG)[:length], b"")


def test_empty_message_round_trips_to_a_bare_tag() -> None:
    aead = XChaCha20Poly1305(AEAD_KEY)
    sealed = aead.encrypt(AEAD_NONCE, b"", b"")
    assert len(sealed) == TAG_SIZE
    assert aead.decrypt(AEAD_NONCE, sealed, b"") == b""


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_wrong_key_size_is_rejected_without_echoing_key(length: int) -> None:
    key = bytes([0xA5]) * length
    with pytest.raises(EncryptionError) as info:
        XChaCha20Poly1305(key)
    if length:
        assert key.hex() not in str(info.value)


@pytest.mark.parametrize("length", [0, 12, 16, 23, 25])
def test_wrong_nonce_size_is_rejected(length: int) -> None:
    aead = XChaCha20Poly1305(AEAD_KEY)
    with pytest.raises(EncryptionError):
        aead.encrypt(bytes(length), b"data", b"")
    with pytest.raises(EncryptionError):
        aead.decrypt(bytes(length), AEAD_CIPHERTEXT + AEAD_TAG, b"")


def test_hchacha20_rejects_wrong_sizes() -> None:
    with pytest.raises(EncryptionError):
        hchacha20(bytes(31), bytes(16))
    with pytest.raises(EncryptionError):
        hchacha20(bytes(32), bytes(24))


def test_repr_hides_key() -> None:
    text = repr(XChaCha20Poly1305(AEAD_KEY)) + str(XChaCha20Poly1305(AEAD_KEY))
    assert AEAD_KEY.hex() not in text
    assert "8081828384" not in text
    assert repr(AEAD_KEY)[2:-1] not in text
