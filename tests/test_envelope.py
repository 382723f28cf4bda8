"""Envelope encryption: wrapped data keys open only under their master key, intact."""

from __future__ import annotations

import base64
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
from lucid_sessions.errors import (
    AlreadyExistsError,
    AuthenticationError,
    EncryptionError,
    FormatError,
    InvalidConfigError,
    StorageError,
    WrongKeyError,
)

MASTER = MasterKey(bytes(range(32)))
OTHER_MASTER = MasterKey(bytes(range(32, 64)))
DATA = DataKey("0123456789abcdef0123456789abcdef", bytes(range(64, 96)))

# Byte ranges of the version-1 wrapped key format (see the module docstring).
MAGIC_AND_VERSION = range(0, 5)
MASTER_KEY_ID = range(5, 13)
AUTHENTICATED = range(13, WRAPPED_KEY_SIZE)  # data key id, nonce, ciphertext, tag


def secret_spellings(key: bytes) -> list[str]:
    """Ways a key could leak into text: hex (both cases), base64, Python bytes repr."""
    return [key.hex(), key.hex().upper(), base64.b64encode(key).decode(), repr(key)[2:-1]]


def flip(data: bytes, bit: int) -> bytes:
    altered = bytearray(data)
    altered[bit // 8] ^= 1 << (bit % 8)
    return bytes(altered)


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_wrap_unwrap_round_trip() -> None:
    wrapped = wrap_data_key(DATA, MASTER)
    assert unwrap_data_key(wrapped, MASTER) == DATA


def test_generated_keys_round_trip() -> None:
    master, data_key = MasterKey.generate(), DataKey.generate()
    assert unwrap_data_key(wrap_data_key(data_key, master), master) == data_key


def test_wrapped_key_has_fixed_size_names_both_keys_and_hides_the_key() -> None:
    wrapped = wrap_data_key(DATA, MASTER)
    assert len(wrapped) == WRAPPED_KEY_SIZE
    assert wrapped_master_key_id(wrapped) == MASTER.key_id
    assert wrapped_data_key_id(wrapped) == DATA.key_id
    assert DATA.key not in wrapped


def test_each_wrap_uses_a_fresh_nonce() -> None:
    assert wrap_data_key(DATA, MASTER) != wrap_data_key(DATA, MASTER)


def test_wrong_master_key_raises_wrong_key_naming_the_expected_id() -> None:
    wrapped = wrap_data_key(DATA, MASTER)
    with pytest.raises(WrongKeyError) as info:
        unwrap_data_key(wrapped, OTHER_MASTER)
    assert MASTER.key_id in str(info.value)
    assert info.value.details["expected_master_key_id"] == MASTER.key_id
    for secret in (MASTER.key, OTHER_MASTER.key, DATA.key):
        for spelling in secret_spellings(secret):
            assert spelling not in str(info.value)


@pytest.mark.parametrize(
    ("positions", "error"),
    [
        (MAGIC_AND_VERSION, FormatError),
        (MASTER_KEY_ID, WrongKeyError),
        (AUTHENTICATED, AuthenticationError),
    ],
    ids=["magic-version", "master-key-id", "authenticated-body"],
)
def test_every_flipped_bit_is_detected(positions: range, error: type[Exception]) -> None:
    wrapped = wrap_data_key(DATA, MASTER)
    for byte in positions:
        for bit in range(8):
            with pytest.raises(error):
                unwrap_data_key(flip(wrapped, byte * 8 + bit), MASTER)


def test_altered_ciphertext_error_names_data_key_but_not_keys() -> None:
    wrapped = flip(wrap_data_key(DATA, MASTER), (WRAPPED_KEY_SIZE - 1) * 8)
    with pytest.raises(AuthenticationError) as info:
        unwrap_data_key(wrapped, MASTER)
    assert DATA.key_id in str(info.value)
    for secret in (MASTER.key, DATA.key):
        for spelling in secret_spellings(secret):
            assert spelling not in str(info.value)


@pytest.mark.parametrize("length", [0, 1, 4, 5, 50, WRAPPED_KEY_SIZE - 1, WRAPPED_KEY_SIZE + 1])
def test_truncated_or_extended_bytes_raise_format_error(length: int) -> None:
    wrapped = wrap_data_key(DATA, MASTER)
    candidate = (wrapped + b"\x00")[:length]
    with pytest.raises(FormatError):
        unwrap_data_key(candidate, MASTER)
    with pytest.raises(FormatError):
        wrapped_master_key_id(candidate)


def test_wrong_magic_raises_format_error() -> None:
    wrapped = wrap_data_key(DATA, MASTER)
    with pytest.raises(FormatError, match="magic"):
        unwrap_data_key(b"XXXX" + wrapped[4:], MASTER)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unknown_version_raises_format_error(version: int) -> None:
    wrapped = wrap_data_key(DATA, MASTER)
    with pytest.raises(FormatError, match="version"):
        unwrap_data_key(wrapped[:4] + bytes([version]) + wrapped[5:], MASTER)


@given(st.binary(max_size=2 * WRAPPED_KEY_SIZE))
def test_random_bytes_never_crash(data: bytes) -> None:
    with pytest.raises((FormatError, EncryptionError)):
        unwrap_data_key(data, MASTER)


@given(
    prefix=st.sampled_from([b"", b"LSWK", b"LSWK\x01"]),
    body=st.binary(min_size=0, max_size=WRAPPED_KEY_SIZE),
)
def test_bytes_with_valid_looking_header_never_crash(prefix: bytes, body: bytes) -> None:
    with pytest.raises((FormatError, EncryptionError)):
        unwrap_data_key((prefix + body)[: WRAPPED_KEY_SIZE + 1], MASTER)


@given(
    edits=st.lists(
        st.tuples(st.integers(0, WRAPPED_KEY_SIZE - 1), st.integers(0, 255)),
        min_size=1,
        max_size=8,
    ),
    cut=st.integers(0, WRAPPED_KEY_SIZE + 3),
)
def test_mutated_wrapped_keys_never_crash(edits: list[tuple[int, int]], cut: int) -> None:
    original = wrap_data_key(DATA, MASTER)
    mutated = bytearray(original + b"\x00\x01\x02")
    for position, value in edits:
        mutated[position] = value
    candidate = bytes(mutated[:cut])
    if candidate == original:
        assert unwrap_data_key(candidate, MASTER) == DATA
        return
    with pytest.raises((FormatError, WrongKeyError, AuthenticationError)):
        unwrap_data_key(candidate, MASTER)


def test_unwrap_rejects_non_bytes() -> None:
    with pytest.raises(FormatError):
        unwrap_data_key("not bytes", MASTER)  # type: ignore[arg-type]


def test_rewrap_moves_the_same_data_key_to_the_new_master() -> None:
    wrapped = wrap_data_key(DATA, MASTER)
    rewrapped = rewrap(wrapped, MASTER, OTHER_MASTER)
    assert wrapped_master_key_id(rewrapped) == OTHER_MASTER.key_id
    assert wrapped_data_key_id(rewrapped) == DATA.key_id
    assert unwrap_data_key(rewrapped, OTHER_MASTER) == DATA
    with pytest.raises(WrongKeyError):
        unwrap_data_key(rewrapped, MASTER)


def test_rewrap_with_wrong_old_key_raises_wrong_key() -> None:
    wrapped = wrap_data_key(DATA, MASTER)
    with pytest.raises(WrongKeyError):
        rewrap(wrapped, OTHER_MASTER, MASTER)


def test_master_key_id_is_a_short_stable_fingerprint_not_the_key() -> None:
    assert len(MASTER.key_id) == 16
    assert all(c in "0123456789abcdef" for c in MASTER.key_id)
    assert MasterKey(bytes(range(32))).key_id == MASTER.key_id
    assert MASTER.key_id != OTHER_MASTER.key_id
    assert MASTER.key_id not in MASTER.key.hex()


def test_master_key_equality_and_hash_follow_the_key() -> None:
    assert MasterKey(bytes(range(32))) == MASTER
    assert MASTER != OTHER_MASTER
    assert len({MASTER, MasterKey(bytes(range(32))), OTHER_MASTER}) == 2


@pytest.mark.parametrize("obj", [MASTER, DATA], ids=["master", "data"])
def test_repr_and_str_show_id_but_not_key(obj: MasterKey | DataKey) -> None:
    for text in (repr(obj), str(obj), f"{obj}", f"{obj!r}"):
        assert obj.key_id in text
        for spelling in secret_spellings(obj.key):
            assert spelling not in text


def test_data_key_generate_gives_random_hex_id_and_32_byte_key() -> None:
    first, second = DataKey.generate(), DataKey.generate()
    assert len(first.key_id) == 32 and all(c in "0123456789abcdef" for c in first.key_id)
    assert len(first.key) == 32
    assert first.key_id != second.key_id and first.key != second.key


@pytest.mark.parametrize(
    ("key_id", "key"),
    [
        ("short", bytes(32)),
        ("0123456789ABCDEF0123456789ABCDEF", bytes(32)),
        ("0123456789abcdef0123456789abcdef", bytes(31)),
    ],
)
def test_data_key_rejects_malformed_fields(key_id: str, key: bytes) -> None:
    with pytest.raises(EncryptionError):
        DataKey(key_id, key)


def test_master_key_rejects_wrong_size_without_echoing_it() -> None:
    key = b"\xa5" * 31
    with pytest.raises(EncryptionError) as info:
        MasterKey(key)
    assert key.hex() not in str(info.value)


def test_key_file_round_trip_with_mode_0600(tmp_path: Path, umask: None) -> None:
    path = tmp_path / "master.key"
    write_key_file(path, MASTER)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert MasterKey.from_file(path) == MASTER
    assert [p.name for p in tmp_path.iterdir()] == ["master.key"]


def test_key_file_mode_is_0600_even_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_key_file(tmp_path / "master.key", MASTER)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "master.key").stat().st_mode) == 0o600


def test_key_file_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_text("existing content\n")
    with pytest.raises(AlreadyExistsError):
        write_key_file(path, MASTER)
    assert path.read_text() == "existing content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["master.key"]


def test_key_file_in_missing_directory_raises_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        write_key_file(tmp_path / "missing" / "master.key", MASTER)


@pytest.mark.parametrize(
    "content",
    [
        MASTER.key.hex(),
        MASTER.key.hex().upper() + "\n",
        "  " + MASTER.key.hex()[:32] + "\n  " + MASTER.key.hex()[32:] + "\n\n",
        base64.b64encode(MASTER.key).decode(),
        "\t" + base64.b64encode(MASTER.key).decode() + "\r\n",
    ],
    ids=["hex", "upper-hex", "hex-with-whitespace", "base64", "base64-with-whitespace"],
)
def test_key_file_accepts_hex_and_base64(tmp_path: Path, content: str) -> None:
    path = tmp_path / "master.key"
    path.write_text(content)
    path.chmod(0o600)
    assert MasterKey.from_file(path) == MASTER


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"   \n",
        MASTER.key.hex()[:-2].encode(),
        (MASTER.key.hex() + "00").encode(),
        b"g" * 64,
        base64.b64encode(MASTER.key[:31]),
        base64.b64encode(MASTER.key + b"\x00"),
        MASTER.key,
        "ключ".encode(),
    ],
    ids=[
        "empty",
        "whitespace",
        "short-hex",
        "long-hex",
        "not-hex",
        "short-base64",
        "long-base64",
        "raw-bytes",
        "non-ascii",
    ],
)
def test_malformed_key_file_raises_format_error_naming_file_only(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "master.key"
    path.write_bytes(content)
    with pytest.raises(FormatError) as info:
        MasterKey.from_file(path)
    message = str(info.value)
    assert str(path) in message
    text = content.decode("latin-1").strip()
    if text:
        assert text not in message
    for spelling in secret_spellings(MASTER.key):
        assert spelling not in message


def test_missing_key_file_raises_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="master key file"):
        MasterKey.from_file(tmp_path / "absent.key")


def test_exposed_key_file_logs_warning_without_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "master.key"
    path.write_text(MASTER.key.hex())
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="lucid_sessions.crypto.envelope"):
        assert MasterKey.from_file(path) == MASTER
    assert "group or others" in caplog.text
    for spelling in secret_spellings(MASTER.key):
        assert spelling not in caplog.text


def test_private_key_file_logs_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "master.key"
    write_key_file(path, MASTER)
    with caplog.at_level(logging.DEBUG):
        MasterKey.from_file(path)
        unwrap_data_key(wrap_data_key(DATA, MASTER), MASTER)
    assert caplog.records == []


def test_from_env_reads_hex_and_base64(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MASTER_KEY_ENV, MASTER.key.hex())
    assert MasterKey.from_env() == MASTER
    monkeypatch.setenv("OTHER_VAR", base64.b64encode(MASTER.key).decode())
    assert MasterKey.from_env("OTHER_VAR") == MASTER


def test_from_env_unset_raises_invalid_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    with pytest.raises(InvalidConfigError, match=MASTER_KEY_ENV):
        MasterKey.from_env()


def test_from_env_malformed_raises_invalid_config_without_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    value = MASTER.key.hex()[:-1]
    monkeypatch.setenv(MASTER_KEY_ENV, value)
    with pytest.raises(InvalidConfigError) as info:
        MasterKey.from_env()
    assert MASTER_KEY_ENV in str(info.value)
    assert value not in str(info.value)
