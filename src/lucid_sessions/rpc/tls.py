"""gRPC credentials from the cluster's TLS key material (:class:`GrpcTls`).

The same material gives both sides: :func:`server_credentials` for :func:`.serve`
(the certificate, and the CA clients must chain to when client certificates are
required) and :func:`channel_credentials` plus :func:`channel_options` for a client
(the CA to verify servers against, and the certificate presented as client certificate).
Credentials objects are not bound to an event loop, so one serves every channel.
"""

from __future__ import annotations

from typing import Any

import grpc

from lucid_sessions.cluster.tls import GrpcTls

__all__ = ["channel_credentials", "channel_options", "server_credentials"]


def server_credentials(tls: GrpcTls) -> grpc.ServerCredentials:
    """What a server presents; with ``require_client_cert``, clients must present a
    certificate chaining to ``root_certificates``. (Without it no CA is passed: gRPC
    would then ask for a client certificate without verifying it, which proves nothing.)"""
    if tls.certificate_chain is None or tls.private_key is None:
        raise ValueError("a gRPC server needs a certificate and its key")
    return grpc.ssl_server_credentials(
        [(tls.private_key, tls.certificate_chain)],
        root_certificates=tls.root_certificates if tls.require_client_cert else None,
        require_client_auth=tls.require_client_cert,
    )


def channel_credentials(tls: GrpcTls) -> grpc.ChannelCredentials:
    """What a client verifies servers against and presents as its own certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=tls.root_certificates,
        private_key=tls.private_key,
        certificate_chain=tls.certificate_chain,
    )


def channel_options(tls: GrpcTls) -> tuple[tuple[str, Any], ...]:
    """Channel options for TLS: the name expected in server certificates instead of the
    dialled host, only when configured (it stops tying a peer's certificate to the
    address dialled, so it is never a default)."""
    if tls.server_name:
        return (("grpc.ssl_target_name_override", tls.server_name),)
    return ()
