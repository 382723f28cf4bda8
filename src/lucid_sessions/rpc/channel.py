"""Client side of every component: a channel, deadlines, and errors translated back.

A client is built from an address (``"127.0.0.1:8086"``; it then owns the channel and
``close()`` closes it) or from a :class:`grpc.aio.Channel` the caller owns and closes.
Every call carries a deadline: ``timeout`` for metadata calls, ``long_timeout`` for
calls that carry a chunk or wait on a peer (storing or reading chunk bytes, processing,
submitting a chunk under backpressure, connecting a capture source). A call that
misses its deadline or cannot reach the peer raises
:class:`~lucid_sessions.cluster.interfaces.Unavailable` (``None`` means no deadline).
Calls fail fast while the peer is down rather than waiting for it; the channel keeps
reconnecting in the background (within 5 s of the peer's return).

TLS: pass ``credentials`` (see :mod:`.tls`). A connection that fails the way a TLS
mismatch does (a failed handshake or certificate check; the peer closing the connection
while it is set up, which is what a TLS server does to a plaintext client or to a client
without an acceptable certificate) raises Unavailable whose message says so first.

Build a client inside the event loop that will use it: a grpc.aio channel belongs to
one loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self

import grpc
import grpc.aio

from lucid_sessions.cluster.interfaces import Unavailable
from lucid_sessions.rpc.errors import error_from_rpc

__all__ = [
    "CHANNEL_OPTIONS",
    "DEFAULT_LONG_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "MAX_MESSAGE_BYTES",
    "ComponentClient",
    "open_channel",
]

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
"""Largest message either side sends or accepts: room for a 64 MiB chunk several times
over (a raw chunk may exceed the processor's 64 MiB plaintext bound before it is refused
with a proper error rather than a transport one)."""

DEFAULT_TIMEOUT = 30.0
DEFAULT_LONG_TIMEOUT = 300.0

CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # A restarted peer is found again within seconds, not after gRPC's default
    # two-minute reconnect backoff.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)


def open_channel(
    address: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A channel to ``address`` (``host:port``), TLS when ``credentials`` are given.

    ``options`` are added after :data:`CHANNEL_OPTIONS` (a later value wins).
    """
    merged = [*CHANNEL_OPTIONS, *options]
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=merged)
    return grpc.aio.secure_channel(address, credentials, options=merged)


def _tls_hint(details: str, *, tls: bool | None, peer: str) -> str:
    """A sentence naming the likely TLS mismatch behind a failed connection, or "".

    gRPC reports a failed handshake or certificate check on the client in words; a server
    refusing the client's handshake (plaintext, or no or an untrusted client certificate)
    only shows as the socket closing while the connection is set up.
    """
    text = details.lower()
    if tls is not False and any(w in text for w in ("handshake", "verification", "certificate")):
        return (
            f"TLS handshake with {peer} failed: check that it serves TLS and that its "
            "certificate chains to grpc tls_ca and names the host dialled"
        )
    if "socket closed" not in text and "connection reset" not in text:
        return ""
    if tls:
        return (
            f"{peer} closed the connection during the TLS handshake: it may require a "
            "client certificate (grpc require_client_cert) that this process does not "
            "present or that does not chain to its CA"
        )
    if tls is False:
        return (
            f"{peer} closed the connection while it was set up: if it serves TLS, set "
            "grpc tls_ca (LUCID_GRPC_TLS_CA) in this process too"
        )
    return ""


class ComponentClient:
    """Base of the component clients: holds the channel and the stub, makes calls.

    Subclasses set ``service`` (the full gRPC service name) and ``stub_class`` (the
    generated stub).
    """

    service: ClassVar[str]
    stub_class: ClassVar[type[Any]]

    def __init__(
        self,
        target: str | grpc.aio.Channel,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        long_timeout: float | None = DEFAULT_LONG_TIMEOUT,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if isinstance(target, str):
            self._channel = open_channel(target, credentials=credentials, options=options)
            self._owns_channel = True
            self.address: str | None = target
            self.tls: bool | None = credentials is not None
        else:
            if credentials is not None or options:
                raise ValueError("credentials and options apply only to an address")
            self._channel = target
            self._owns_channel = False
            self.address = self.tls = None  # the caller's channel: unknown
        self.timeout = timeout
        self.long_timeout = long_timeout
        self._stub = self.stub_class(self._channel)

    @property
    def channel(self) -> grpc.aio.Channel:
        return self._channel

    def _method(self, name: str) -> str:
        return f"/{self.service}/{name}"

    async def _call(self, name: str, request: Any, *, long: bool = False) -> Any:
        """Call unary method ``name``; a failure raises what :func:`error_from_rpc` gives."""
        timeout = self.long_timeout if long else self.timeout
        try:
            return await getattr(self._stub, name)(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._failure(exc, name) from exc

    def _failure(self, exc: grpc.aio.AioRpcError, name: str) -> Exception:
        """What a failed call to ``name`` raises: :func:`error_from_rpc`'s error, with
        a TLS mismatch named first when the connection failed like one."""
        error = error_from_rpc(exc, self._method(name))
        if not isinstance(error, Unavailable):
            return error
        hint = _tls_hint(exc.details() or "", tls=self.tls, peer=self.address or "the peer")
        if not hint:
            return error
        return Unavailable(f"{hint} ({error.message})", details={**error.details, "tls": self.tls})

    async def _stream(self, name: str, request: Any, *, long: bool = False) -> AsyncIterator[Any]:
        """Call server-streaming method ``name`` and yield its messages."""
        timeout = self.long_timeout if long else self.timeout
        call = getattr(self._stub, name)(request, timeout=timeout)
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as exc:
            raise self._failure(exc, name) from exc
        finally:
            call.cancel()  # a no-op once finished; ends the call if the caller stopped early

    async def serving(self, timeout: float = 2.0) -> bool:
        """Whether the peer's standard health service reports this service SERVING."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=self.service), timeout=timeout
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def close(self) -> None:
        """Close the channel if this client opened it; a given channel stays open."""
        if self._owns_channel:
            await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
