"""The stored chunk container: compressed, sealed, and bound to its session and place."""

from __future__ import annotations

import pytest
import zstandard

from lucid_sessions.chunkfile import (
    HEADER_SIZE,
    QUALITY_LEVELS,
    open_chunk,
    parse_header,
    seal_chunk,
    zstd_level,
)
from lucid_sessions.crypto import DataKey
from lucid_sessions.errors import AuthenticationError, FormatError, InvalidConfigError

PLAIN = b"desktop " * 5000
KEY = DataKey.generate()


def _seal(session="ses_a", sequence=3, key=KEY, level=3):
    return seal_chunk(
        PLAIN, session_id=session, sequence=sequence, key_id=key.key_id, key=key.key, level=level
    )


def test_round_trip_and_header_fields():
    stored = _seal()
    header = parse_header(stored)
    assert (header.sequence, header.key_id, header.level) == (3, KEY.key_id, 3)
    assert open_chunk(stored, session_id="ses_a", sequence=3, key=KEY.key) == PLAIN


def test_stored_chunk_is_compressed_before_encryption():
    stored = _seal()
    assert len(stored) < len(PLAIN) / 10
    assert PLAIN[:64] not in stored


@pytest.mark.parametrize("quality", list(QUALITY_LEVELS))
def test_quality_selects_the_zstd_level(quality):
    stored = _seal(level=zstd_level(quality))
    assert parse_header(stored).level == QUALITY_LEVELS[quality]


def test_unknown_quality_is_refused_by_name():
    with pytest.raises(InvalidConfigError, match="quality must be one of"):
        zstd_level("best")


def test_a_chunk_moved_to_another_session_fails_authentication():
    with pytest.raises(AuthenticationError):
        open_chunk(_seal(session="ses_a"), session_id="ses_b", sequence=3, key=KEY.key)


def test_a_renumbered_chunk_fails_authentication():
    stored = bytearray(_seal(sequence=3))
    stored[8] = 4  # the sequence field in the clear header
    with pytest.raises(AuthenticationError):
        open_chunk(bytes(stored), session_id="ses_a", sequence=4, key=KEY.key)


def test_a_chunk_read_at_the_wrong_position_is_refused():
    with pytest.raises(FormatError, match="says it is number 3"):
        open_chunk(_seal(sequence=3), session_id="ses_a", sequence=5, key=KEY.key)


def test_the_wrong_data_key_fails_authentication():
    with pytest.raises(AuthenticationError):
        open_chunk(_seal(), session_id="ses_a", sequence=3, key=DataKey.generate().key)


def test_every_flipped_byte_is_detected():
    stored = _seal()
    for position in range(0, len(stored), max(1, len(stored) // 97)):
        damaged = bytearray(stored)
        damaged[position] ^= 0x01
        with pytest.raises((AuthenticationError, FormatError)):
            open_chunk(bytes(damaged), session_id="ses_a", sequence=3, key=KEY.key)


def test_decompression_is_capped():
    stored = _seal()
    with pytest.raises(Exception) as info:
        open_chunk(stored, session_id="ses_a", sequence=3, key=KEY.key, max_size=1000)
    assert "decompress" in str(info.value)
    assert not isinstance(info.value, zstandard.ZstdError)


def test_header_size_is_stable():
    assert HEADER_SIZE == 56
