"""Request bodies, validated at the edge with pydantic; and the session spec they become.

Every rule answers 422 (``LUCID_ERR_3002``) with a message naming the field. Unknown
fields are refused. The RDP password is a :class:`~pydantic.SecretStr`: accepted on
create, handed to the pipeline separately, never part of the spec, never echoed.

The session spec
----------------
``POST /api/v1/sessions`` calls ``Pipeline.create_session(spec, password=...)`` with
``spec`` a plain dict of exactly this shape (every key present; ``rdp_config`` and
``x11_config`` are None unless the source needs them)::

    {
      "name": str,                       # 1..200 characters, no control characters
      "project": str | None,             # an id: [A-Za-z0-9_-]{1,64}
      "environment": str | None,         # an id: [A-Za-z0-9_-]{1,64}
      "tags": [str, ...],                # at most 10, each 1..50 characters
      "source": "rdp" | "x11" | "ingest",
      "rdp_config": {                    # source "rdp" only
          "host": str,                   # host name, IPv4 or IPv6 literal
          "port": int,                   # 1..65535, default 3389
          "username": str,
          "domain": str,                 # "" when none
          "security": "tls" | "nla",     # default "nla"
          "ignore_cert": bool,           # default true
      } | None,
      "x11_config": {"display": str} | None,   # source "x11" only, e.g. ":10"
      "recording_config": {
          "fps": float,                  # 1..120, default 10
          "width": int, "height": int,   # 320x240..7680x4320, default 1920x1080
          "quality": "low" | "medium" | "high" | "ultra",   # default "medium"
          "compression": "zstd",
          "chunk_duration_s": float,     # 0.5..600, default 10
          "chunk_size_mb": int,          # 1..512, default 8
      },
      "storage_config": {
          "retention_days": int | None,  # 1..36500; None keeps forever
          "max_size_gb": float | None,   # > 0; None for no limit
      },
      "metadata": {str: JSON value},     # at most 50 keys, 16 KiB as JSON
    }

The API reads sessions back from ``SessionRecord``: the pipeline keeps ``source``,
``rdp_config``, ``x11_config``, ``recording_config``, ``storage_config`` and ``metadata``
under those keys in ``SessionRecord.config`` (and the sealed password under
``rdp_password_sealed``, which no answer ever shows).

``PATCH /api/v1/sessions/{id}`` calls ``Pipeline.update_session(id, changes)`` with only
the fields the client sent, among ``name``, ``tags`` (a list), ``project``,
``environment`` (None clears them) and ``metadata`` (replaces the whole mapping).
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)

__all__ = [
    "ID_PATTERN",
    "RdpConfigIn",
    "RecordingConfigIn",
    "SessionCreate",
    "SessionUpdate",
    "StorageConfigIn",
    "X11ConfigIn",
]

ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
"""Session ids (in paths too): the chunk store's own rule."""
LABEL_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_HOST_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_DOTTED_NUMBERS = re.compile(r"^[0-9.]+\Z")
_DISPLAY = re.compile(r"^[A-Za-z0-9._-]{0,253}:[0-9]{1,4}(?:\.[0-9]{1,2})?\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The rules the validators below enforce, stated in the OpenAPI document for clients and
# for the schema fuzzer; the validators, not these patterns, give the 422 messages.
_PLAIN = r"^[^\x00-\x1f\x7f]*$"
_NOT_BLANK = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
_HOST_CHARS = r"^(?:[A-Za-z0-9.-]+|\[?[0-9A-Fa-f:.]+\]?)$"


def _documented(pattern: str) -> dict[str, Any]:
    """``json_schema_extra`` stating a pattern in the document without enforcing it."""
    return {"pattern": pattern}


_MAX_METADATA_BYTES = 16 * 1024
_MAX_METADATA_KEYS = 50
_MAX_METADATA_KEY = 64
# What _check_metadata enforces, stated in the OpenAPI document. Not as pydantic key
# constraints: their errors would name an over-long key, echoing it into the message.
_METADATA_SCHEMA: dict[str, Any] = {
    "maxProperties": _MAX_METADATA_KEYS,
    "propertyNames": {"minLength": 1, "maxLength": _MAX_METADATA_KEY, "pattern": _PLAIN},
    "description": f"At most {_MAX_METADATA_KEYS} keys of 1-{_MAX_METADATA_KEY} characters "
    f"and {_MAX_METADATA_BYTES} bytes as JSON.",
}

Label = Annotated[str, StringConstraints(pattern=LABEL_PATTERN)]
Tag = Annotated[
    str,
    StringConstraints(min_length=1, max_length=50),
    Field(json_schema_extra=_documented(_PLAIN)),
]
Quality = Literal["low", "medium", "high", "ultra"]
Source = Literal["rdp", "x11", "ingest"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


def _check_host(value: str) -> str:
    """A host name (RFC 1123), an IPv4 literal or an IPv6 literal (bare or bracketed)."""
    bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    if ":" in bare:
        try:
            ipaddress.IPv6Address(bare)
        except ValueError:
            raise ValueError("host is not a valid IPv6 address") from None
        return bare
    if _DOTTED_NUMBERS.match(value):
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise ValueError("host is not a valid IPv4 address") from None
        return value
    name = value[:-1] if value.endswith(".") else value
    labels = name.split(".")
    if not 1 <= len(name) <= 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise ValueError("host must be a host name, an IPv4 address or an IPv6 address")
    return value


def _check_text(value: str, what: str) -> str:
    if _CONTROL.search(value):
        raise ValueError(f"{what} must not contain control characters")
    return value


class RdpConfigIn(_Body):
    host: str = Field(min_length=1, max_length=255, json_schema_extra=_documented(_HOST_CHARS))
    port: int = Field(default=3389, ge=1, le=65535)
    username: str = Field(min_length=1, max_length=256, json_schema_extra=_documented(_PLAIN))
    password: SecretStr = Field(
        default=SecretStr(""), max_length=500, json_schema_extra=_documented(r"^[^\r\n\x00]*$")
    )
    domain: str = Field(default="", max_length=256, json_schema_extra=_documented(_PLAIN))
    security: Literal["tls", "nla"] = "nla"
    ignore_cert: bool = True

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return _check_host(value)

    @field_validator("username", "domain")
    @classmethod
    def _plain(cls, value: str) -> str:
        return _check_text(value, "the value")

    @field_validator("password")
    @classmethod
    def _password(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value()
        if any(c in secret for c in "\r\n\0"):
            raise ValueError("password must not contain line breaks or NUL characters")
        if len(secret.encode()) > 500:
            raise ValueError("password must be at most 500 bytes")
        return value

    def spec(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "domain": self.domain,
            "security": self.security,
            "ignore_cert": self.ignore_cert,
        }


class X11ConfigIn(_Body):
    display: str = Field(
        max_length=260,
        description="An X display such as ':10'.",
        # JSON Schema (ECMA-262) has no \Z; "$" there means the end of the string.
        json_schema_extra=_documented(_DISPLAY.pattern.replace("\\Z", "$")),
    )

    @field_validator("display")
    @classmethod
    def _display(cls, value: str) -> str:
        if not _DISPLAY.match(value):
            raise ValueError("display must look like ':10' or 'host:10.0'")
        return value


class RecordingConfigIn(_Body):
    fps: float = Field(default=10.0, ge=1, le=120, allow_inf_nan=False)
    width: int = Field(default=1920, ge=320, le=7680)
    height: int = Field(default=1080, ge=240, le=4320)
    quality: Quality = "medium"
    compression: Literal["zstd"] = "zstd"
    chunk_duration_s: float = Field(default=10.0, ge=0.5, le=600, allow_inf_nan=False)
    chunk_size_mb: int = Field(default=8, ge=1, le=512)


class StorageConfigIn(_Body):
    retention_days: int | None = Field(default=None, ge=1, le=36500)
    max_size_gb: float | None = Field(default=None, gt=0, le=1_000_000, allow_inf_nan=False)


def _check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    if len(value) > _MAX_METADATA_KEYS:
        raise ValueError(f"metadata must have at most {_MAX_METADATA_KEYS} keys")
    if any(not 1 <= len(key) <= _MAX_METADATA_KEY for key in value):
        raise ValueError(f"metadata keys must be 1..{_MAX_METADATA_KEY} characters")
    if any(_CONTROL.search(key) for key in value):
        raise ValueError("metadata keys must not contain control characters")
    try:
        size = len(json.dumps(value, allow_nan=False))
    except (ValueError, RecursionError):
        raise ValueError("metadata must be plain JSON") from None
    if size > _MAX_METADATA_BYTES:
        raise ValueError(f"metadata must be at most {_MAX_METADATA_BYTES} bytes as JSON")
    return value


def _check_tags(value: list[str]) -> list[str]:
    for tag in value:
        _check_text(tag, "tags")
    return value


class SessionCreate(_Body):
    name: str = Field(min_length=1, max_length=200, json_schema_extra=_documented(_NOT_BLANK))
    project: Label | None = None
    environment: Label | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=10)
    source: Source = "rdp"
    rdp_config: RdpConfigIn | None = None
    x11_config: X11ConfigIn | None = None
    recording_config: RecordingConfigIn = Field(default_factory=RecordingConfigIn)
    storage_config: StorageConfigIn = Field(default_factory=StorageConfigIn)
    metadata: dict[str, Any] = Field(default_factory=dict, json_schema_extra=_METADATA_SCHEMA)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name must not be blank")
        return _check_text(value, "name")

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        return _check_tags(value)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_metadata(value)

    @model_validator(mode="after")
    def _source_config(self) -> SessionCreate:
        if self.source == "rdp" and self.rdp_config is None:
            raise ValueError("rdp_config is required when source is 'rdp'")
        if self.source == "x11" and self.x11_config is None:
            raise ValueError("x11_config is required when source is 'x11'")
        if self.source != "rdp" and self.rdp_config is not None:
            raise ValueError(f"rdp_config is not allowed when source is {self.source!r}")
        if self.source != "x11" and self.x11_config is not None:
            raise ValueError(f"x11_config is not allowed when source is {self.source!r}")
        return self

    @property
    def password(self) -> str:
        return "" if self.rdp_config is None else self.rdp_config.password.get_secret_value()

    def spec(self) -> dict[str, Any]:
        """The pipeline's session spec (the module docstring's shape), without password."""
        return {
            "name": self.name,
            "project": self.project,
            "environment": self.environment,
            "tags": list(self.tags),
            "source": self.source,
            "rdp_config": None if self.rdp_config is None else self.rdp_config.spec(),
            "x11_config": None if self.x11_config is None else self.x11_config.model_dump(),
            "recording_config": self.recording_config.model_dump(),
            "storage_config": self.storage_config.model_dump(),
            "metadata": dict(self.metadata),
        }


def _name_not_nullable(schema: dict[str, Any]) -> None:
    """The document for ``SessionUpdate.name``: optional but not nullable (the validator
    refuses null), so only the string branch is stated, with its pattern."""
    branches = schema.pop("anyOf", [])
    schema.pop("default", None)
    schema.update(next(b for b in branches if b.get("type") == "string"))
    schema.update(_documented(_NOT_BLANK))


class SessionUpdate(_Body):
    name: str | None = Field(
        default=None, min_length=1, max_length=200, json_schema_extra=_name_not_nullable
    )
    project: Label | None = None
    environment: Label | None = None
    tags: list[Tag] | None = Field(default=None, max_length=10)
    metadata: dict[str, Any] | None = Field(default=None, json_schema_extra=_METADATA_SCHEMA)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is None:
            raise ValueError("name cannot be removed")
        if not value.strip():
            raise ValueError("name must not be blank")
        return _check_text(value, "name")

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str] | None) -> list[str]:
        return _check_tags(value or [])

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any] | None) -> dict[str, Any]:
        return _check_metadata(value or {})

    @model_validator(mode="after")
    def _something(self) -> SessionUpdate:
        if not self.model_fields_set:
            raise ValueError("give at least one of name, tags, project, environment, metadata")
        return self

    def changes(self) -> dict[str, Any]:
        """Only the fields the client sent; tags as a list, None clearing a label."""
        return {name: getattr(self, name) for name in sorted(self.model_fields_set)}
