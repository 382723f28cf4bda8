"""The cluster signing key: created once with mode 0600, signs, and verifies strictly."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from lucid_sessions.crypto.signing import (
    ClusterKey,
    load_public_key,
    public_key_fingerprint,
    verify_signature,
)
from lucid_sessions.errors import FormatError, StorageError

# RFC 8032 section 7.1, "TEST 1" (empty message).
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
    "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)

MESSAGE = b'{"session_id": "s-1", "root": "ab"}'


@pytest.fixture(scope="module")
def rfc_key() -> ClusterKey:
    return ClusterKey(Ed25519PrivateKey.from_private_bytes(RFC8032_SECRET))


def test_signs_rfc8032_vector(rfc_key: ClusterKey) -> None:
    assert rfc_key.public_key_bytes() == RFC8032_PUBLIC
    assert rfc_key.sign(b"") == RFC8032_SIGNATURE
    assert verify_signature(RFC8032_PUBLIC, RFC8032_SIGNATURE, b"")


def test_load_or_create_creates_pkcs8_pem_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "cluster.pem"
    old = os.umask(0)
    try:
        key = ClusterKey.load_or_create(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert [p.name for p in tmp_path.iterdir()] == ["cluster.pem"]
    assert verify_signature(key.public_key_bytes(), key.sign(MESSAGE), MESSAGE)


def test_load_or_create_loads_the_same_key_afterwards(tmp_path: Path) -> None:
    path = tmp_path / "cluster.pem"
    created = ClusterKey.load_or_create(path)
    content = path.read_bytes()
    loaded = ClusterKey.load_or_create(path)
    assert loaded.public_key_bytes() == created.public_key_bytes()
    assert path.read_bytes() == content
    assert verify_signature(created.public_key_bytes(), loaded.sign(MESSAGE), MESSAGE)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        RFC8032_SECRET,
    ],
    ids=["empty", "garbage", "bad-pem-body", "raw-secret"],
)
def test_corrupted_key_file_raises_format_error_naming_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "cluster.pem"
    path.write_bytes(content)
    with pytest.raises(FormatError) as info:
        ClusterKey.load_or_create(path)
    assert str(path) in str(info.value)
    assert RFC8032_SECRET.hex() not in str(info.value)
    assert path.read_bytes() == content  # never replaced


def test_truncated_key_file_raises_format_error(tmp_path: Path) -> None:
    path = tmp_path / "cluster.pem"
    ClusterKey.load_or_create(path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(FormatError):
        ClusterKey.load_or_create(path)


def test_non_ed25519_key_file_raises_format_error(tmp_path: Path) -> None:
    path = tmp_path / "cluster.pem"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(FormatError, match="not Ed25519"):
        ClusterKey.load_or_create(path)


def test_encrypted_key_file_raises_format_error(tmp_path: Path) -> None:
    path = tmp_path / "cluster.pem"
    path.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    with pytest.raises(FormatError):
        ClusterKey.load_or_create(path)


def test_key_file_in_missing_directory_raises_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        ClusterKey.load_or_create(tmp_path / "missing" / "cluster.pem")


def test_fingerprint_is_first_16_bytes_of_sha256_of_raw_public_key(rfc_key: ClusterKey) -> None:
    expected = hashlib.sha256(RFC8032_PUBLIC).digest()[:16].hex()
    assert rfc_key.fingerprint() == expected
    assert public_key_fingerprint(RFC8032_PUBLIC) == expected
    assert len(expected) == 32


def test_repr_shows_fingerprint_not_private_key(rfc_key: ClusterKey) -> None:
    text = repr(rfc_key) + str(rfc_key)
    assert rfc_key.fingerprint() in text
    assert RFC8032_SECRET.hex() not in text
    assert repr(RFC8032_SECRET)[2:-1] not in text


def test_verify_rejects_other_key_message_and_altered_signature(rfc_key: ClusterKey) -> None:
    other = ClusterKey.generate()
    signature = rfc_key.sign(MESSAGE)
    assert verify_signature(RFC8032_PUBLIC, signature, MESSAGE)
    assert not verify_signature(other.public_key_bytes(), signature, MESSAGE)
    assert not verify_signature(RFC8032_PUBLIC, signature, MESSAGE + b" ")
    for bit in range(0, 512, 7):
        altered = bytearray(signature)
        altered[bit // 8] ^= 1 << (bit % 8)
        assert not verify_signature(RFC8032_PUBLIC, bytes(altered), MESSAGE)


@pytest.mark.parametrize(
    ("public_key", "signature"),
    [
        (RFC8032_PUBLIC, b""),
        (RFC8032_PUBLIC, RFC8032_SIGNATURE[:63]),
        (RFC8032_PUBLIC, RFC8032_SIGNATURE + b"\x00"),
        (RFC8032_PUBLIC, b"\xff" * 64),
        (RFC8032_PUBLIC[:31], RFC8032_SIGNATURE),
        (b"", RFC8032_SIGNATURE),
        (b"\xff" * 32, RFC8032_SIGNATURE),
        ("not bytes", RFC8032_SIGNATURE),
        (RFC8032_PUBLIC, None),
    ],
)
def test_verify_returns_false_for_malformed_input(public_key: bytes, signature: bytes) -> None:
    assert verify_signature(public_key, signature, b"") is False


@given(public_key=st.binary(max_size=40), signature=st.binary(max_size=70), message=st.binary())
def test_verify_never_raises(public_key: bytes, signature: bytes, message: bytes) -> None:
    assert verify_signature(public_key, signature, message) is False


def test_public_key_pem_round_trips(rfc_key: ClusterKey) -> None:
    pem = rfc_key.public_key_pem()
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert load_public_key(pem) == RFC8032_PUBLIC


@pytest.mark.parametrize(
    "encoded",
    [
        RFC8032_PUBLIC,
        RFC8032_PUBLIC.hex().encode(),
        RFC8032_PUBLIC.hex().upper().encode(),
        b"  " + RFC8032_PUBLIC.hex().encode() + b"\n",
    ],
    ids=["raw", "hex", "upper-hex", "hex-with-whitespace"],
)
def test_load_public_key_accepts_raw_and_hex(encoded: bytes) -> None:
    assert load_public_key(encoded) == RFC8032_PUBLIC


@pytest.mark.parametrize(
    "encoded",
    [
        b"",
        RFC8032_PUBLIC[:31],
        RFC8032_PUBLIC.hex()[:-2].encode(),
        RFC8032_PUBLIC.hex().encode() + b"00",
        b"z" * 64,
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        "ключ".encode() * 8,
    ],
)
def test_load_public_key_rejects_other_input(encoded: bytes) -> None:
    with pytest.raises(FormatError):
        load_public_key(encoded)


def test_load_public_key_rejects_non_ed25519_pem() -> None:
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(FormatError, match="not Ed25519"):
        load_public_key(pem)


@given(st.binary(max_size=200))
def test_load_public_key_never_crashes(data: bytes) -> None:
    try:
        raw = load_public_key(data)
    except FormatError:
        return
    assert len(raw) == 32
