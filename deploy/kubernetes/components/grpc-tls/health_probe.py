"""gRPC health probe over TLS: ``python3 health_probe.py SERVICE_NAME PORT``.

Kubernetes' native gRPC probes speak plaintext only, so with gRPC TLS the probes run
this instead. It checks the standard grpc.health.v1 service (overall status) on
127.0.0.1:PORT with the process's own certificate, key and CA (the LUCID_GRPC_TLS_*
files), expecting SERVICE_NAME (or LUCID_GRPC_TLS_SERVER_NAME) in the server's
certificate. Exit status 0 when SERVING, 1 otherwise.
"""

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def read(variable: str) -> bytes | None:
    path = os.environ.get(variable)
    if not path:
        return None
    with open(path, "rb") as file:
        return file.read()


def main() -> int:
    name, port = sys.argv[1], sys.argv[2]
    credentials = grpc.ssl_channel_credentials(
        read("LUCID_GRPC_TLS_CA"), read("LUCID_GRPC_TLS_KEY"), read("LUCID_GRPC_TLS_CERT")
    )
    override = os.environ.get("LUCID_GRPC_TLS_SERVER_NAME") or name
    options = [("grpc.ssl_target_name_override", override)]
    try:
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=4
            )
    except grpc.RpcError as exc:
        print(f"health check failed: {exc.code()}", file=sys.stderr)
        return 1
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
