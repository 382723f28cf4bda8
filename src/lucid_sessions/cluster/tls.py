"""TLS settings for the REST API and for gRPC between components, and their files.

Each setting, its variable, its TOML key and its ``serve`` option (files are PEM; a
relative path is relative to the working directory)::

    API certificate     LUCID_API_TLS_CERT           [api] tls_cert       --tls-cert
    API key             LUCID_API_TLS_KEY            [api] tls_key        --tls-key
    API client CA       LUCID_API_TLS_CLIENT_CA      [api] tls_client_ca  --tls-client-ca
    gRPC certificate    LUCID_GRPC_TLS_CERT          [grpc] tls_cert      --grpc-tls-cert
    gRPC key            LUCID_GRPC_TLS_KEY           [grpc] tls_key       --grpc-tls-key
    gRPC CA             LUCID_GRPC_TLS_CA            [grpc] tls_ca        --grpc-tls-ca
    gRPC mutual TLS     LUCID_GRPC_REQUIRE_CLIENT_CERT  [grpc] require_client_cert = false
                                                                 --grpc-require-client-cert
    gRPC server name    LUCID_GRPC_TLS_SERVER_NAME   [grpc] tls_server_name

API: with a certificate and key, uvicorn serves HTTPS only; with a client CA too, it
accepts only clients presenting a certificate that chains to it.

gRPC: one certificate per process, used both ways. A process that serves gRPC presents
``tls_cert``; its clients verify the peer's certificate against ``tls_ca`` (the system's
roots when unset) and present ``tls_cert`` as their client certificate when there is
one, so the certificate must allow both server and client authentication (extended key
usages ``serverAuth`` and ``clientAuth``, or none) and name the host the others dial
(``127.0.0.1``, ``localhost``, ...) in its subject alternative names. With
``require_client_cert`` servers refuse any client without a certificate that chains to
``tls_ca``. gRPC TLS is on in a process when ``tls_cert`` or ``tls_ca`` is set. Every
process of a cluster must agree: a plaintext client cannot talk to a TLS server nor the
reverse, and the client's error (:class:`~lucid_sessions.cluster.interfaces.Unavailable`)
says so. ``tls_server_name`` makes clients expect that name in every peer's certificate
instead of the host they dial (gRPC's ``grpc.ssl_target_name_override``), for
certificates that name a service rather than a host; it is never set by default.

The files are read and parsed when the configuration loads, so a missing, unreadable or
malformed file, a key that is not the certificate's or an expired certificate is a
configuration error naming the setting and the file (never a key's contents); they are
read again when the cluster starts.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from lucid_sessions.config_values import parse_bool
from lucid_sessions.errors import InvalidConfigError

__all__ = [
    "VARIABLES",
    "GrpcTls",
    "TlsConfig",
    "check_tls",
    "grpc_tls",
    "load_tls",
    "read_certificates",
    "read_private_key",
    "uvicorn_options",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsConfig:
    api_cert: Path | None = None
    api_key: Path | None = None
    api_client_ca: Path | None = None
    grpc_cert: Path | None = None
    grpc_key: Path | None = None
    grpc_ca: Path | None = None
    require_client_cert: bool = False
    server_name: str | None = None
    """Name expected in peers' certificates instead of the dialled host (explicit only)."""

    @property
    def api(self) -> bool:
        """Whether the API serves HTTPS."""
        return self.api_cert is not None

    @property
    def grpc(self) -> bool:
        """Whether this process speaks TLS on gRPC (as server and as client)."""
        return self.grpc_cert is not None or self.grpc_ca is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class GrpcTls:
    """The gRPC key material, read from the configured files (PEM bytes)."""

    root_certificates: bytes | None
    """Peers' certificates must chain to these; None: the system's roots."""
    certificate_chain: bytes | None
    private_key: bytes | None = field(repr=False)
    require_client_cert: bool
    server_name: str | None


_SETTINGS: tuple[tuple[str, str, str, str], ...] = (
    # field, section, TOML key, variable
    ("api_cert", "api", "tls_cert", "LUCID_API_TLS_CERT"),
    ("api_key", "api", "tls_key", "LUCID_API_TLS_KEY"),
    ("api_client_ca", "api", "tls_client_ca", "LUCID_API_TLS_CLIENT_CA"),
    ("grpc_cert", "grpc", "tls_cert", "LUCID_GRPC_TLS_CERT"),
    ("grpc_key", "grpc", "tls_key", "LUCID_GRPC_TLS_KEY"),
    ("grpc_ca", "grpc", "tls_ca", "LUCID_GRPC_TLS_CA"),
)
_LABEL = {name: f"{section} {key}" for name, section, key, _ in _SETTINGS}
"""How errors name a file setting: ``api tls_cert``, ``grpc tls_ca``..."""
VARIABLES: dict[str, str] = {
    **{name: var for name, _, _, var in _SETTINGS},
    "require_client_cert": "LUCID_GRPC_REQUIRE_CLIENT_CERT",
    "server_name": "LUCID_GRPC_TLS_SERVER_NAME",
}
"""The environment variable of each :class:`TlsConfig` field."""


def load_tls(
    raw: Mapping[str, Any],
    setting: Callable[[Any, str], Any],
    errors: list[str],
    overrides: Mapping[str, Any] | None = None,
) -> TlsConfig:
    """The TLS settings from the TOML document, the environment (``setting`` picks the
    variable over the TOML value) and ``overrides`` (field names of :class:`TlsConfig`
    from the command line; None means not given). Only the values are parsed here;
    :func:`check_tls` checks the files once the whole configuration is known."""

    def section(name: str) -> Mapping[str, Any]:
        value = raw.get(name)
        return value if isinstance(value, Mapping) else {}

    values: dict[str, Any] = {}
    for name, part, key, var in _SETTINGS:
        path = setting(section(part).get(key), var)
        if path:
            values[name] = Path(str(path))
    require = setting(section("grpc").get("require_client_cert"), VARIABLES["require_client_cert"])
    if require is not None:
        values["require_client_cert"] = parse_bool(require, "grpc require_client_cert", errors)
    name = setting(section("grpc").get("tls_server_name"), VARIABLES["server_name"])
    if name:
        values["server_name"] = str(name).strip()
    config = TlsConfig(**values)
    known = {f.name for f in fields(TlsConfig)}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ValueError(f"unknown TLS overrides {unknown}")
    return replace(config, **given)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidConfigError(
            f"cannot read {what} file {path}: {exc.strerror}", details={"file": str(path)}
        ) from exc


def read_certificates(path: Path, what: str) -> tuple[bytes, list[x509.Certificate]]:
    """The PEM bytes of ``path`` and the certificates in it (one at least)."""
    data = _read(path, what)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise InvalidConfigError(
            f"{what} file {path} holds no PEM certificate", details={"file": str(path)}
        )
    return data, certificates


def read_private_key(path: Path, what: str) -> tuple[bytes, Any]:
    """The PEM bytes of ``path`` and the unencrypted private key in it. Errors name the
    file, never its contents (nothing from the parser is passed on)."""
    data = _read(path, what)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        problem = "is encrypted; give an unencrypted PEM key (and keep the file 0600)"
    except (ValueError, UnsupportedAlgorithm):
        problem = "holds no PEM private key"
    else:
        return data, key
    raise InvalidConfigError(f"{what} file {path} {problem}", details={"file": str(path)})


def _public(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _check_pair(
    cert_path: Path | None, key_path: Path | None, cert_field: str, key_field: str
) -> list[str]:
    """A certificate and its key: both or neither, readable, and belonging together."""
    cert_name, key_name = _LABEL[cert_field], _LABEL[key_field]
    if cert_path is None and key_path is None:
        return []
    if key_path is None:
        return [f"{cert_name} is set without {key_name}"]
    if cert_path is None:
        return [f"{key_name} is set without {cert_name}"]
    errors: list[str] = []
    certificates: list[x509.Certificate] = []
    key = None
    try:
        _, certificates = read_certificates(cert_path, cert_name)
    except InvalidConfigError as exc:
        errors.append(exc.message)
    try:
        _, key = read_private_key(key_path, key_name)
    except InvalidConfigError as exc:
        errors.append(exc.message)
    if certificates:
        leaf = certificates[0]
        expires = leaf.not_valid_after_utc
        if expires < datetime.datetime.now(datetime.UTC):
            errors.append(f"{cert_name} file {cert_path} expired on {expires:%Y-%m-%d %H:%M} UTC")
        if key is not None and _public(key.public_key()) != _public(leaf.public_key()):
            errors.append(
                f"{key_name} file {key_path} is not the key of {cert_name} file {cert_path}"
            )
    return errors


def _check_ca(path: Path | None, name: str) -> list[str]:
    if path is None:
        return []
    try:
        read_certificates(path, _LABEL[name])
    except InvalidConfigError as exc:
        return [exc.message]
    return []


def check_tls(config: TlsConfig, *, grpc_served: tuple[str, ...] = ()) -> list[str]:
    """Every problem with the TLS settings of a process that serves gRPC for the
    components ``grpc_served`` (empty: it serves none), as messages."""
    errors = _check_pair(config.api_cert, config.api_key, "api_cert", "api_key")
    errors += _check_pair(config.grpc_cert, config.grpc_key, "grpc_cert", "grpc_key")
    errors += _check_ca(config.api_client_ca, "api_client_ca")
    errors += _check_ca(config.grpc_ca, "grpc_ca")
    if config.api_client_ca is not None and config.api_cert is None:
        errors.append("api tls_client_ca (mutual TLS) needs api tls_cert and tls_key")
    if config.require_client_cert:
        if config.grpc_ca is None:
            errors.append(
                "grpc require_client_cert needs grpc tls_ca (the CA client certificates "
                "must chain to)"
            )
        if config.grpc_cert is None:
            errors.append(
                "grpc require_client_cert needs grpc tls_cert and tls_key (presented as "
                "this process's client certificate)"
            )
    if config.grpc and config.grpc_cert is None and grpc_served:
        errors.append(
            f"grpc tls_ca is set but this process serves gRPC ({', '.join(grpc_served)}) "
            "without grpc tls_cert and tls_key; its clients would expect TLS"
        )
    if config.server_name is not None and not config.grpc:
        errors.append("grpc tls_server_name needs gRPC TLS (grpc tls_ca or tls_cert)")
    return errors


def grpc_tls(config: TlsConfig) -> GrpcTls | None:
    """The gRPC key material read from the files, or None when gRPC TLS is off."""
    if not config.grpc:
        return None
    chain = key = root = None
    if config.grpc_cert is not None and config.grpc_key is not None:
        chain, _ = read_certificates(config.grpc_cert, _LABEL["grpc_cert"])
        key, _ = read_private_key(config.grpc_key, _LABEL["grpc_key"])
    if config.grpc_ca is not None:
        root, _ = read_certificates(config.grpc_ca, _LABEL["grpc_ca"])
    return GrpcTls(
        root_certificates=root,
        certificate_chain=chain,
        private_key=key,
        require_client_cert=config.require_client_cert,
        server_name=config.server_name,
    )


def uvicorn_options(config: TlsConfig) -> dict[str, Any]:
    """Keyword arguments for :class:`uvicorn.Config`: HTTPS (and client certificates
    required, with a client CA) when configured, else none."""
    if config.api_cert is None:
        return {}
    options: dict[str, Any] = {
        "ssl_certfile": str(config.api_cert),
        "ssl_keyfile": str(config.api_key),
    }
    if config.api_client_ca is not None:
        options["ssl_ca_certs"] = str(config.api_client_ca)
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options
