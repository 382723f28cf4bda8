"""Server side of every component: methods that turn exceptions into gRPC statuses.

Each servicer method is decorated with :func:`unary` or :func:`server_stream`; an
exception escaping the local object ends the call through
:func:`~lucid_sessions.rpc.errors.abort_with`, so every failure crosses with its class
(LucidError) or as a bare "internal error" (anything else, logged here).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc.aio

from lucid_sessions.rpc.errors import abort_with

__all__ = ["server_stream", "unary"]

S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def unary(
    method: Callable[[S, Req, Context], Awaitable[Resp]],
) -> Callable[[S, Req, Context], Awaitable[Resp]]:
    """Wrap a servicer method with one response (its request may be a stream) so
    failures become statuses."""
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: S, request: Req, context: Context) -> Resp:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort_with(context, exc, _where(self, name))

    return wrapper


def server_stream(
    method: Callable[[S, Req, Context], AsyncIterator[Resp]],
) -> Callable[[S, Req, Context], AsyncIterator[Resp]]:
    """Wrap a server-streaming servicer method (an async generator) likewise."""
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: S, request: Req, context: Context) -> AsyncIterator[Resp]:
        try:
            async for message in method(self, request, context):
                yield message
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort_with(context, exc, _where(self, name))

    return wrapper


def _where(servicer: object, name: str) -> str:
    return f"{getattr(type(servicer), 'service', type(servicer).__name__)}/{name}"
