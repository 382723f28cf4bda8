"""Errors raised by Lucid Sessions.

Every error the package raises on purpose derives from :class:`LucidError` and carries
one of the API's error codes, so the CLI and the REST layer can turn it into an exit
code or an error body without knowing where it came from.  Lower-layer errors
(``OSError``, ``sqlite3.Error``, ``zstandard.ZstdError``, ``cryptography.exceptions.InvalidTag``)
are translated at the boundary with ``raise X(...) from exc``.

::

    LucidError
    ├── NotFoundError ................ LUCID_ERR_3001  session (or other object) does not exist
    ├── InvalidConfigError ........... LUCID_ERR_3002  an option or configuration value is wrong
    ├── AlreadyExistsError ........... LUCID_ERR_3003
    ├── NotRecordingError ............ LUCID_ERR_3004  operation needs a recording session
    ├── ChunkNotFoundError ........... LUCID_ERR_3005
    ├── PipelineError ................ LUCID_ERR_3006
    │   └── CaptureError ............. a capture source failed
    │       ├── CaptureConnectionError  the remote desktop could not be reached or dropped
    │       └── CaptureAuthError ..... the remote desktop refused the credentials
    ├── StorageError ................. LUCID_ERR_3007  file system or metadata store failed
    │   └── FormatError .............. stored or supplied bytes do not parse
    ├── CompressionError ............. LUCID_ERR_3008
    ├── EncryptionError .............. LUCID_ERR_3009
    │   ├── WrongKeyError ............ a key does not match what the data was sealed with
    │   └── AuthenticationError ...... ciphertext failed its MAC (altered or misplaced)
    ├── RateLimitError ............... LUCID_ERR_3010
    ├── UnauthenticatedError ......... LUCID_ERR_3011  no, or an invalid, expired or revoked token
    └── ForbiddenError ............... LUCID_ERR_3012  the caller's role lacks the permission
"""

from __future__ import annotations

__all__ = [
    "AlreadyExistsError",
    "AuthenticationError",
    "CaptureAuthError",
    "CaptureConnectionError",
    "CaptureError",
    "ChunkNotFoundError",
    "CompressionError",
    "EncryptionError",
    "ForbiddenError",
    "FormatError",
    "InvalidConfigError",
    "LucidError",
    "NotFoundError",
    "NotRecordingError",
    "PipelineError",
    "RateLimitError",
    "StorageError",
    "UnauthenticatedError",
    "WrongKeyError",
]


class LucidError(Exception):
    """Base of every deliberate error; ``code`` is the API error code."""

    code = "LUCID_ERR_3006"

    def __init__(self, message: str, *, details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, object] = dict(details or {})


class NotFoundError(LucidError):
    code = "LUCID_ERR_3001"


class InvalidConfigError(LucidError):
    code = "LUCID_ERR_3002"


class AlreadyExistsError(LucidError):
    code = "LUCID_ERR_3003"


class NotRecordingError(LucidError):
    code = "LUCID_ERR_3004"


class ChunkNotFoundError(LucidError):
    code = "LUCID_ERR_3005"


class PipelineError(LucidError):
    code = "LUCID_ERR_3006"


class CaptureError(PipelineError):
    """A capture source (RDP client, X display, ingest) failed."""


class CaptureConnectionError(CaptureError):
    """The remote desktop could not be reached, or the connection dropped."""


class CaptureAuthError(CaptureError):
    """The remote desktop refused the credentials."""


class StorageError(LucidError):
    code = "LUCID_ERR_3007"


class FormatError(StorageError):
    """Bytes (a chunk file, a manifest, a bundle, a key file) do not parse."""


class CompressionError(LucidError):
    code = "LUCID_ERR_3008"


class EncryptionError(LucidError):
    code = "LUCID_ERR_3009"


class WrongKeyError(EncryptionError):
    """A key does not match the one the data was sealed with."""


class AuthenticationError(EncryptionError):
    """A ciphertext failed authentication: altered, truncated, or bound to another place."""


class RateLimitError(LucidError):
    code = "LUCID_ERR_3010"


class UnauthenticatedError(LucidError):
    """The request carries no bearer token, or one that is invalid, expired or revoked."""

    code = "LUCID_ERR_3011"


class ForbiddenError(LucidError):
    """The caller is known, but their role does not hold the permission."""

    code = "LUCID_ERR_3012"
