"""Cluster configuration: defaults, then an optional TOML file, then ``LUCID_*`` variables.

Every setting, its variable and its TOML key (``[section] key``)::

    data_dir            LUCID_DATA_DIR              data_dir
    targets             LUCID_TARGETS               targets = ["all"]
    api.host / .port    LUCID_API_HOST / _PORT      [api] host = "127.0.0.1", port = 8087
    grpc.host           LUCID_GRPC_HOST             [grpc] host = "127.0.0.1"
    <svc> port          LUCID_<SVC>_PORT            [pipeline|recorder|processor|storage] port
    <svc> address       LUCID_<SVC>_ADDRESS         ... address = "host:port" of a remote one
    master key file     LUCID_MASTER_KEY_FILE       master_key_file
    queue size          LUCID_QUEUE_SIZE            [pipeline] queue_size = 8
    pipeline workers    LUCID_PIPELINE_WORKERS      [pipeline] workers = 2
    processor threads   LUCID_PROCESSOR_THREADS     [processor] threads = 2
    claim timeout       LUCID_CLAIM_TIMEOUT_S       [processor] claim_timeout_s = 15
    retention (days)    LUCID_RETENTION_DAYS        [storage] retention_days = 0 (keep forever)
    gc interval         LUCID_GC_INTERVAL_S         [storage] gc_interval_s = 3600 (0: off)
    free-space reserve  LUCID_STORAGE_RESERVE_BYTES [storage] reserve_bytes = 5 GiB (0: off;
                        below it new recordings are refused and running ones stopped)
                        (with Redis: a chunk entry a processor left unacknowledged this
                        long is claimed by another; see cluster/coordination.py)
    checkpoint chunks   LUCID_CHECKPOINT_CHUNKS     [pipeline] checkpoint_chunks = 10
    checkpoint seconds  LUCID_CHECKPOINT_SECONDS    [pipeline] checkpoint_seconds = 60
                        (a live checkpoint every N stored chunks or T seconds, whichever
                        comes first; 0 turns that trigger off: anchoring/checkpoints.py)
    API TLS             LUCID_API_TLS_CERT / _KEY   [api] tls_cert, tls_key (PEM files)
    API mutual TLS      LUCID_API_TLS_CLIENT_CA     [api] tls_client_ca
    gRPC TLS            LUCID_GRPC_TLS_CERT / _KEY  [grpc] tls_cert, tls_key
    gRPC CA             LUCID_GRPC_TLS_CA           [grpc] tls_ca
    gRPC mutual TLS     LUCID_GRPC_REQUIRE_CLIENT_CERT  [grpc] require_client_cert = false
    gRPC TLS name       LUCID_GRPC_TLS_SERVER_NAME  [grpc] tls_server_name (explicit only)
    MongoDB metadata    LUCID_MONGODB_URI           [mongodb] uri (unset: SQLite in data_dir)
    MongoDB database    LUCID_MONGODB_DATABASE      [mongodb] database = "lucid_sessions"

The MongoDB URI may carry a password: it is kept out of the config's repr, and whatever
names the server names it through :func:`~lucid_sessions.storage.mongo_store.redact_uri`.

TLS settings, what each side presents and verifies: see :mod:`lucid_sessions.cluster.tls`
(the command line passes them as ``tls={field: value}``).

Anchoring (``[anchor]``, ``LUCID_ANCHOR_*``: backend, node, contract, key, retries): see
:mod:`lucid_sessions.anchoring.settings`.

Security settings (``[auth]``, ``[rate_limits]``, ``[redis]``): see
:mod:`lucid_sessions.security.settings`.

Validation collects every error and reports them all at once
(:class:`~lucid_sessions.errors.InvalidConfigError` whose message lists each).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lucid_sessions.anchoring.settings import AnchorConfig, load_anchor
from lucid_sessions.cluster.tls import TlsConfig, check_tls, load_tls
from lucid_sessions.errors import InvalidConfigError
from lucid_sessions.observability import DEFAULT_STORAGE_RESERVE_BYTES
from lucid_sessions.security.settings import SecurityConfig, load_security
from lucid_sessions.storage.datadir import default_data_dir

__all__ = ["COMPONENTS", "DEFAULT_PORTS", "ClusterConfig", "load_config"]

COMPONENTS = ("pipeline", "recorder", "processor", "storage", "api")
DEFAULT_PORTS = {
    "pipeline": 8083,
    "recorder": 8084,
    "processor": 8085,
    "storage": 8086,
    "api": 8087,
}
INTERNAL = ("pipeline", "recorder", "processor", "storage")


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    data_dir: Path = field(default_factory=default_data_dir)
    targets: tuple[str, ...] = ("all",)
    api_host: str = "127.0.0.1"
    grpc_host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    addresses: dict[str, str] = field(default_factory=dict)
    master_key_file: Path | None = None
    queue_size: int = 8
    pipeline_workers: int = 2
    processor_threads: int = 2
    claim_timeout_s: float = 15.0
    checkpoint_chunks: int = 10
    """A live checkpoint after this many stored chunks (0: no chunk trigger)."""
    checkpoint_seconds: float = 60.0
    """A live checkpoint this many seconds after the last one (0: no time trigger)."""
    retention_days: int = 0
    """Default retention of a finished session without its own (0: keep forever)."""
    gc_interval_s: int = 3600
    """The storage component collects garbage this often (0: only on demand)."""
    storage_reserve_bytes: int = DEFAULT_STORAGE_RESERVE_BYTES
    """Free bytes the chunk store's disk must keep (0: no check)."""
    security: SecurityConfig = field(default_factory=SecurityConfig)
    """Token verification, rate limits and Redis (see :mod:`lucid_sessions.security.settings`)."""
    tls: TlsConfig = field(default_factory=TlsConfig)
    """HTTPS for the API, TLS for gRPC (see :mod:`lucid_sessions.cluster.tls`)."""
    mongodb_uri: str | None = field(default=None, repr=False)
    """Metadata in MongoDB instead of the data directory's SQLite (may hold a password)."""
    mongodb_database: str = "lucid_sessions"
    anchor: AnchorConfig = field(default_factory=AnchorConfig)
    """Where session roots are anchored (see :mod:`lucid_sessions.anchoring.settings`)."""

    @property
    def local(self) -> frozenset[str]:
        """Components this process runs."""
        if "all" in self.targets:
            return frozenset(COMPONENTS)
        return frozenset(self.targets)

    @property
    def all_in_one(self) -> bool:
        return self.local == frozenset(COMPONENTS)

    @property
    def grpc_served(self) -> tuple[str, ...]:
        """Internal components this process serves gRPC for (none all-in-one)."""
        if self.all_in_one:
            return ()
        return tuple(c for c in INTERNAL if c in self.local)

    def address(self, component: str) -> str:
        """Where a component runs when it is not local."""
        return self.addresses.get(component) or f"127.0.0.1:{self.ports[component]}"


def _int(value: object, name: str, errors: list[str], low: int, high: int) -> int:
    try:
        number = int(str(value))
    except ValueError:
        errors.append(f"{name} must be an integer, not {value!r}")
        return low
    if not low <= number <= high:
        errors.append(f"{name} must be between {low} and {high}, not {number}")
    return number


def _load_mongodb(
    toml: dict[str, Any], setting: Any, values: dict[str, Any], errors: list[str]
) -> None:
    """``[mongodb] uri, database`` / ``LUCID_MONGODB_URI``, ``LUCID_MONGODB_DATABASE``.
    Messages never quote the URI: it may hold a password."""
    uri = setting(toml.get("uri"), "LUCID_MONGODB_URI")
    if uri:
        text = str(uri).strip()
        if not text.startswith(("mongodb://", "mongodb+srv://")):
            errors.append("MongoDB URI must start with mongodb:// or mongodb+srv://")
        values["mongodb_uri"] = text
    database = setting(toml.get("database"), "LUCID_MONGODB_DATABASE")
    if database is not None:
        name = str(database).strip()
        if not 0 < len(name) <= 63 or any(ch in name for ch in '/\\. "$'):
            errors.append(
                "MongoDB database name must be 1-63 characters without spaces or any of "
                f'/\\."$, not {name!r}'
            )
        values["mongodb_database"] = name


def load_config(
    *, file: Path | None = None, env: dict[str, str] | None = None, **overrides: Any
) -> ClusterConfig:
    """Defaults <- TOML file <- environment <- explicit overrides (command line)."""
    env = dict(os.environ if env is None else env)
    errors: list[str] = []
    raw: dict[str, Any] = {}
    if file is not None:
        try:
            raw = tomllib.loads(file.read_text())
        except OSError as exc:
            raise InvalidConfigError(f"cannot read config file {file}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise InvalidConfigError(f"config file {file} is not valid TOML: {exc}") from exc
    config = ClusterConfig()
    values: dict[str, Any] = {}
    ports = dict(config.ports)
    addresses: dict[str, str] = {}

    def setting(toml: Any, var: str) -> Any:
        return env[var] if env.get(var) else toml

    def section(name: str) -> dict[str, Any]:
        value = raw.get(name)
        return value if isinstance(value, dict) else {}

    data_dir = setting(raw.get("data_dir"), "LUCID_DATA_DIR")
    if data_dir:
        values["data_dir"] = Path(str(data_dir))
    targets = setting(raw.get("targets"), "LUCID_TARGETS")
    if targets:
        values["targets"] = tuple(
            t.strip() for t in (targets.split(",") if isinstance(targets, str) else targets)
        )
    host = setting(section("api").get("host"), "LUCID_API_HOST")
    if host:
        values["api_host"] = str(host)
    grpc_host = setting(section("grpc").get("host"), "LUCID_GRPC_HOST")
    if grpc_host:
        values["grpc_host"] = str(grpc_host)
    for component in COMPONENTS:
        port = setting(section(component).get("port"), f"LUCID_{component.upper()}_PORT")
        if port is not None:
            ports[component] = _int(port, f"{component} port", errors, 0, 65535)
        address = setting(section(component).get("address"), f"LUCID_{component.upper()}_ADDRESS")
        if address:
            if ":" not in str(address):
                errors.append(f"{component} address must be host:port, not {address!r}")
            addresses[component] = str(address)
    key_file = setting(raw.get("master_key_file"), "LUCID_MASTER_KEY_FILE")
    if key_file:
        values["master_key_file"] = Path(str(key_file))
    for name, var, toml, low, high in (
        ("queue_size", "LUCID_QUEUE_SIZE", section("pipeline").get("queue_size"), 1, 1024),
        ("pipeline_workers", "LUCID_PIPELINE_WORKERS", section("pipeline").get("workers"), 1, 64),
        (
            "processor_threads",
            "LUCID_PROCESSOR_THREADS",
            section("processor").get("threads"),
            1,
            64,
        ),
        (
            "checkpoint_chunks",
            "LUCID_CHECKPOINT_CHUNKS",
            section("pipeline").get("checkpoint_chunks"),
            0,
            1_000_000,
        ),
        (
            "retention_days",
            "LUCID_RETENTION_DAYS",
            section("storage").get("retention_days"),
            0,
            36500,
        ),
        ("gc_interval_s", "LUCID_GC_INTERVAL_S", section("storage").get("gc_interval_s"), 0, 10**7),
        (
            "storage_reserve_bytes",
            "LUCID_STORAGE_RESERVE_BYTES",
            section("storage").get("reserve_bytes"),
            0,
            2**62,
        ),
    ):
        value = setting(toml, var)
        if value is not None:
            values[name] = _int(value, name.replace("_", " "), errors, low, high)
    claim = setting(section("processor").get("claim_timeout_s"), "LUCID_CLAIM_TIMEOUT_S")
    if claim is not None:
        try:
            values["claim_timeout_s"] = float(str(claim))
            if not 0.1 <= values["claim_timeout_s"] <= 3600:
                errors.append(f"claim timeout must be between 0.1 and 3600 s, not {claim}")
        except ValueError:
            errors.append(f"claim timeout must be a number of seconds, not {claim!r}")
    every = setting(section("pipeline").get("checkpoint_seconds"), "LUCID_CHECKPOINT_SECONDS")
    if every is not None:
        try:
            values["checkpoint_seconds"] = float(str(every))
            if not 0 <= values["checkpoint_seconds"] <= 86400:
                errors.append(f"checkpoint seconds must be between 0 and 86400, not {every}")
        except ValueError:
            errors.append(f"checkpoint seconds must be a number of seconds, not {every!r}")
    _load_mongodb(section("mongodb"), setting, values, errors)
    values["security"] = load_security(raw, setting, errors)
    values["tls"] = load_tls(raw, setting, errors, overrides.pop("tls", None))
    values["anchor"] = load_anchor(raw, setting, errors)
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "targets":
            values["targets"] = tuple(t.strip() for t in value.split(","))
        elif key in ("api_port",):
            ports["api"] = _int(value, "api port", errors, 0, 65535)
        else:
            values[key] = value
    config = replace(config, **values, ports=ports, addresses=addresses)
    errors += check_tls(config.tls, grpc_served=config.grpc_served)
    for target in config.targets:
        if target not in (*COMPONENTS, "all"):
            errors.append(f"unknown target {target!r}: choose from all, {', '.join(COMPONENTS)}")
    if errors:
        raise InvalidConfigError(
            "invalid configuration: " + "; ".join(errors), details={"errors": errors}
        )
    return config
