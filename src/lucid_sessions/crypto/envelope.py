"""Envelope encryption: per-session data keys, kept only wrapped by a master key.

Glossary
--------
master key
    32 secret bytes held by the operator (a key file or an environment variable). It
    never seals chunks itself; it only wraps data keys, so rotating it means rewrapping
    a few hundred bytes per session, never re-encrypting recordings.
master key id
    16 hex characters of BLAKE3 in key-derivation mode over the master key. It names the
    key publicly (in wrapped keys, logs, error messages) and reveals nothing about it.
data key
    32 random bytes that seal the chunks of one session, named by 32 random hex characters.
wrapped key
    A data key sealed under a master key, in the fixed 101-byte format below.

Wrapped key format, version 1 (all fields fixed length)::

    offset  size  field
    0       4     magic b"LSWK"
    4       1     version (1)
    5       8     master key id (raw bytes of the 16 hex characters)
    13      16    data key id (raw bytes of the 32 hex characters)
    29      24    random nonce
    53      48    XChaCha20-Poly1305(master key, nonce, data key, aad = bytes 0..28)

Binding the header as associated data means neither key id can be edited without
:func:`unwrap_data_key` failing.  Key material never appears in ``repr``, ``str``, log
records or exception messages; only key ids do.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import logging
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import blake3

from lucid_sessions.crypto.xchacha import KEY_SIZE, NONCE_SIZE, TAG_SIZE, XChaCha20Poly1305
from lucid_sessions.errors import (
    AlreadyExistsError,
    AuthenticationError,
    EncryptionError,
    FormatError,
    InvalidConfigError,
    StorageError,
    WrongKeyError,
)

__all__ = [
    "DataKey",
    "MASTER_KEY_ENV",
    "MasterKey",
    "WRAPPED_KEY_SIZE",
    "rewrap",
    "unwrap_data_key",
    "wrap_data_key",
    "wrapped_data_key_id",
    "wrapped_master_key_id",
    "write_key_file",
]

log = logging.getLogger(__name__)

MASTER_KEY_ENV: Final = "LUCID_MASTER_KEY"
"""Default environment variable read by :meth:`MasterKey.from_env`."""

_KEY_ID_CONTEXT: Final = "lucid-sessions 2024-01 master key id v1"
_MASTER_KEY_ID_BYTES: Final = 8
_DATA_KEY_ID_BYTES: Final = 16

_MAGIC: Final = b"LSWK"
_VERSION: Final = 1
_HEADER_SIZE: Final = len(_MAGIC) + 1 + _MASTER_KEY_ID_BYTES + _DATA_KEY_ID_BYTES
WRAPPED_KEY_SIZE: Final = _HEADER_SIZE + NONCE_SIZE + KEY_SIZE + TAG_SIZE
"""Length in bytes of every version-1 wrapped key."""


def _is_lower_hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdef" for c in text)


def _parse_key_text(raw: bytes) -> bytes | None:
    """Return the 32 key bytes encoded in ``raw`` (hex or base64), or None."""
    try:
        text = "".join(raw.decode("ascii").split())
    except UnicodeDecodeError:
        return None
    if len(text) == 2 * KEY_SIZE:
        with contextlib.suppress(ValueError):
            return bytes.fromhex(text)
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == KEY_SIZE else None


def warn_if_exposed(path: Path, what: str) -> None:
    """Log a warning when a secret file is readable by group or others."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077:
        log.warning("%s is accessible by group or others path=%s mode=%04o", what, path, mode)


def write_new_secret_file(path: Path, data: bytes, what: str) -> None:
    """Create ``path`` holding ``data`` with mode 0600, atomically, never replacing a file.

    The bytes go to a temporary file in the same directory, are fsynced, then linked to
    ``path`` (which fails if ``path`` exists), and the directory is fsynced, so a reader
    sees either no file or the complete file.  Raises :class:`AlreadyExistsError` when
    ``path`` exists and :class:`StorageError` for other file system failures.
    """
    path = Path(path)
    directory = path.parent
    tmp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StorageError(f"cannot create {what} in {directory}: {exc.strerror}") from exc
    try:
        try:
            os.fchmod(fd, 0o600)  # exact mode whatever the umask
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:
            # File systems without hard links: best effort no-clobber, then atomic rename.
            if path.exists():
                raise FileExistsError(path) from None
            os.rename(tmp, path)
        _fsync_directory(directory)
    except FileExistsError as exc:
        raise AlreadyExistsError(f"{what} {path} already exists; refusing to overwrite it") from exc
    except OSError as exc:
        raise StorageError(f"cannot write {what} {path}: {exc.strerror}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, eq=False)
class MasterKey:
    """The operator's 32-byte key-wrapping key.

    Guarantees: ``key_id`` is a public fingerprint derived one-way from the key (BLAKE3
    key derivation with a context string of its own), so it can be logged and stored;
    ``repr``/``str`` show only ``key_id``; equality compares keys in constant time.
    Constructing one from anything but 32 bytes raises :class:`EncryptionError`.
    """

    key: bytes = field(repr=False)
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != KEY_SIZE:
            raise EncryptionError(f"a master key must be {KEY_SIZE} bytes")
        digest = blake3.blake3(self.key, derive_key_context=_KEY_ID_CONTEXT).digest()
        object.__setattr__(self, "key_id", digest[:_MASTER_KEY_ID_BYTES].hex())

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MasterKey):
            return NotImplemented
        return hmac.compare_digest(self.key, other.key)

    def __hash__(self) -> int:
        return hash(self.key_id)

    @classmethod
    def generate(cls) -> MasterKey:
        """Return a new master key from the operating system's CSPRNG."""
        return cls(secrets.token_bytes(KEY_SIZE))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> MasterKey:
        """Load a key file holding 64 hex characters or base64 of 32 bytes.

        Whitespace anywhere is ignored.  Raises :class:`FormatError` naming the file when
        the content is not such a key (the message never quotes the content) and
        :class:`StorageError` when the file cannot be read.  Logs a warning when the file
        is readable by group or others.
        """
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read master key file {path}: {exc.strerror}") from exc
        key = _parse_key_text(raw)
        if key is None:
            raise FormatError(
                f"master key file {path} does not hold a master key: expected 64 hex "
                "characters or base64 of 32 bytes",
                details={"path": str(path)},
            )
        warn_if_exposed(path, "master key file")
        return cls(key)

    @classmethod
    def from_env(cls, var: str = MASTER_KEY_ENV) -> MasterKey:
        """Load the key from environment variable ``var`` (64 hex chars or base64 of 32 bytes).

        Raises :class:`InvalidConfigError` naming the variable when it is unset, empty or
        malformed; its value is never quoted.
        """
        value = os.environ.get(var)
        if not value:
            raise InvalidConfigError(f"environment variable {var} is not set", details={"var": var})
        key = _parse_key_text(value.encode("utf-8", "replace"))
        if key is None:
            raise InvalidConfigError(
                f"environment variable {var} does not hold a master key: expected 64 hex "
                "characters or base64 of 32 bytes",
                details={"var": var},
            )
        return cls(key)


def write_key_file(path: str | os.PathLike[str], key: MasterKey) -> None:
    """Write ``key`` as 64 hex characters to a new file with mode 0600.

    Atomic (temporary file, fsync, link into place) and never overwrites: raises
    :class:`AlreadyExistsError` if ``path`` exists, :class:`StorageError` on other
    file system failures.
    """
    write_new_secret_file(Path(path), (key.key.hex() + "\n").encode("ascii"), "master key file")


@dataclass(frozen=True, eq=False)
class DataKey:
    """A per-session 32-byte key and its public random id (32 lowercase hex characters).

    ``repr``/``str`` show only ``key_id``; equality compares keys in constant time.
    Invalid sizes raise :class:`EncryptionError`.
    """

    key_id: str
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, str) or not _is_lower_hex(
            self.key_id, 2 * _DATA_KEY_ID_BYTES
        ):
            raise EncryptionError(
                f"a data key id must be {2 * _DATA_KEY_ID_BYTES} lowercase hex characters"
            )
        if not isinstance(self.key, bytes) or len(self.key) != KEY_SIZE:
            raise EncryptionError(f"a data key must be {KEY_SIZE} bytes")

    def __repr__(self) -> str:
        return f"DataKey(key_id={self.key_id!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DataKey):
            return NotImplemented
        return self.key_id == other.key_id and hmac.compare_digest(self.key, other.key)

    def __hash__(self) -> int:
        return hash(self.key_id)

    @classmethod
    def generate(cls) -> DataKey:
        """Return a new data key with a random id, both from the OS CSPRNG."""
        return cls(secrets.token_hex(_DATA_KEY_ID_BYTES), secrets.token_bytes(KEY_SIZE))


def _header(master_key_id: str, data_key_id: str) -> bytes:
    return _MAGIC + bytes([_VERSION]) + bytes.fromhex(master_key_id) + bytes.fromhex(data_key_id)


def _parse(wrapped: bytes) -> tuple[bytes, str, str, bytes, bytes]:
    """Split a wrapped key into (header, master key id, data key id, nonce, sealed key)."""
    if not isinstance(wrapped, bytes | bytearray | memoryview):
        raise FormatError("a wrapped data key must be bytes")
    wrapped = bytes(wrapped)
    if len(wrapped) < len(_MAGIC) + 1 or wrapped[: len(_MAGIC)] != _MAGIC:
        raise FormatError("not a wrapped data key (bad magic)")
    version = wrapped[len(_MAGIC)]
    if version != _VERSION:
        raise FormatError(f"unsupported wrapped data key version {version}")
    if len(wrapped) != WRAPPED_KEY_SIZE:
        raise FormatError(f"wrapped data key must be {WRAPPED_KEY_SIZE} bytes, got {len(wrapped)}")
    pos = len(_MAGIC) + 1
    master_key_id = wrapped[pos : pos + _MASTER_KEY_ID_BYTES].hex()
    pos += _MASTER_KEY_ID_BYTES
    data_key_id = wrapped[pos : pos + _DATA_KEY_ID_BYTES].hex()
    pos += _DATA_KEY_ID_BYTES
    nonce = wrapped[pos : pos + NONCE_SIZE]
    pos += NONCE_SIZE
    return wrapped[:_HEADER_SIZE], master_key_id, data_key_id, nonce, wrapped[pos:]


def wrap_data_key(data_key: DataKey, master: MasterKey) -> bytes:
    """Seal ``data_key`` under ``master`` with a fresh random nonce (format in module doc).

    The result names both keys by id and binds both ids to the ciphertext.
    """
    header = _header(master.key_id, data_key.key_id)
    nonce = secrets.token_bytes(NONCE_SIZE)
    sealed = XChaCha20Poly1305(master.key).encrypt(nonce, data_key.key, header)
    return header + nonce + sealed


def unwrap_data_key(wrapped: bytes, master: MasterKey) -> DataKey:
    """Recover the data key sealed in ``wrapped``.

    Raises :class:`FormatError` for bytes that are not a version-1 wrapped key (wrong
    length, magic or version), :class:`WrongKeyError` naming both master key ids when
    ``wrapped`` was made under another master key, and :class:`AuthenticationError` when
    the ciphertext or its header was altered.
    """
    header, master_key_id, data_key_id, nonce, sealed = _parse(wrapped)
    if master_key_id != master.key_id:
        raise WrongKeyError(
            f"data key {data_key_id} is wrapped under master key {master_key_id}, "
            f"not under the loaded master key {master.key_id}",
            details={
                "expected_master_key_id": master_key_id,
                "loaded_master_key_id": master.key_id,
                "data_key_id": data_key_id,
            },
        )
    try:
        key = XChaCha20Poly1305(master.key).decrypt(nonce, sealed, header)
    except AuthenticationError as exc:
        raise AuthenticationError(
            f"wrapped data key {data_key_id} failed authentication under master key "
            f"{master.key_id}: it was altered",
            details={"data_key_id": data_key_id, "master_key_id": master.key_id},
        ) from exc
    return DataKey(data_key_id, key)


def wrapped_master_key_id(wrapped: bytes) -> str:
    """Return the id of the master key ``wrapped`` was made under.

    Raises :class:`FormatError` if ``wrapped`` does not parse.  The id is read from the
    header and is not authenticated until unwrapping.
    """
    return _parse(wrapped)[1]


def wrapped_data_key_id(wrapped: bytes) -> str:
    """Return the id of the data key inside ``wrapped``.

    Raises :class:`FormatError` if ``wrapped`` does not parse.  The id is read from the
    header and is not authenticated until unwrapping.
    """
    return _parse(wrapped)[2]


def rewrap(wrapped: bytes, old: MasterKey, new: MasterKey) -> bytes:
    """Re-seal the data key in ``wrapped`` from ``old`` to ``new`` (master key rotation).

    The data key and its id are unchanged, so chunks sealed with it stay readable; the
    nonce is fresh.  Raises what :func:`unwrap_data_key` raises for ``old``.
    """
    return wrap_data_key(unwrap_data_key(wrapped, old), new)
