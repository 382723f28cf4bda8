"""A grpc.aio server for any set of components, with the standard health service.

:func:`serve` registers the components it is given (``{"storage": StorageService(...)}``),
marks each one SERVING in the standard ``grpc.health.v1.Health`` service (and the server
as a whole, service ""), binds ``host:port`` (port 0 picks a free port, and the port
bound is returned) and starts. :meth:`RpcServer.stop` marks everything NOT_SERVING
first, then stops with a grace period, so a load balancer polling health drains the
server before it goes.

TLS: pass ``server_credentials`` (:func:`grpc.ssl_server_credentials`); without it the
port is plaintext, which is only for loopback and trusted networks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from lucid_sessions.errors import InvalidConfigError
from lucid_sessions.rpc.channel import MAX_MESSAGE_BYTES
from lucid_sessions.rpc.pipeline import add_pipeline_servicer
from lucid_sessions.rpc.processor import add_processor_servicer
from lucid_sessions.rpc.recorder import add_recorder_servicer
from lucid_sessions.rpc.storage import add_storage_servicer

__all__ = ["COMPONENTS", "HEALTH_SERVICE", "SERVER_OPTIONS", "RpcServer", "serve"]

HEALTH_SERVICE = health.SERVICE_NAME
"""``grpc.health.v1.Health``."""

SERVER_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # gRPC sets SO_REUSEPORT by default, so a second process on a port in use would bind
    # and silently share the traffic; refuse instead.
    ("grpc.so_reuseport", 0),
)


@dataclass(slots=True)
class RpcServer:
    """A started server: what it serves, the port it listens on, and its health."""

    server: grpc.aio.Server
    port: int
    services: tuple[str, ...]
    health: health.aio.HealthServicer

    async def stop(self, grace: float | None = 5.0) -> None:
        """Report NOT_SERVING, then stop; calls in flight get ``grace`` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()


def _address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"{host}:{port}"


_REGISTER: dict[str, Callable[[grpc.aio.Server, Any], str]] = {
    "storage": add_storage_servicer,
    "processor": add_processor_servicer,
    "recorder": add_recorder_servicer,
    "pipeline": add_pipeline_servicer,
}
"""Component name (as in the cluster config) -> the function that serves it."""

COMPONENTS = tuple(_REGISTER)


async def serve(
    components: Mapping[str, Any],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    server_credentials: grpc.ServerCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> tuple[RpcServer, int]:
    """Serve local components on ``host:port``, start, and return the server and the
    port it listens on (the one picked when ``port`` is 0).

    ``components`` maps names from :data:`COMPONENTS` (``storage``, ``processor``,
    ``recorder``, ``pipeline``) to local objects implementing the matching Protocol of
    :mod:`lucid_sessions.cluster.interfaces`. An empty mapping or an unknown name is a
    ValueError. An address that cannot be bound (in use, not local) raises
    InvalidConfigError. ``options`` are added after :data:`SERVER_OPTIONS`.
    """
    unknown = sorted(set(components) - set(_REGISTER))
    if unknown or not components:
        raise ValueError(f"serve() takes one or more of {COMPONENTS}, got {sorted(components)}")
    server = grpc.aio.server(options=[*SERVER_OPTIONS, *options])
    services = [_REGISTER[name](server, local) for name, local in components.items()]
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    for name in services:
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)

    address = _address(host, port)
    try:
        if server_credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, server_credentials)
    except RuntimeError as exc:
        await server.stop(None)
        raise InvalidConfigError(
            f"cannot listen for gRPC on {address}: {exc}", details={"address": address}
        ) from exc
    if bound == 0:
        await server.stop(None)
        raise InvalidConfigError(
            f"cannot listen for gRPC on {address}", details={"address": address}
        )
    await server.start()
    return RpcServer(server=server, port=bound, services=tuple(services), health=checker), bound
