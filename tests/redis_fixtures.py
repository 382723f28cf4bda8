"""Redis for the tests: the machine's own when it answers, else a private redis-server.

- ``redis_url`` (session): ``redis://127.0.0.1:6379/0`` when a PING there answers +PONG
  within 0.5 s; otherwise a private ``redis-server`` on a free loopback port, without
  persistence, in a temporary directory, stopped when the session ends. Skips with the
  reason only when neither is possible (redis-server not installed and nothing
  answering; ``scripts/install-test-deps.sh`` installs it as root).
- ``redis_prefix`` (function): a key prefix unique to the test (``lucid-test-<hex>:``);
  every key under it is deleted afterwards (SCAN + DEL), so tests can share a server
  with other people's data and with each other.
- ``private_redis`` (function): a :class:`RedisServer` of the test's own, for tests that
  stop or restart Redis ("Redis restarted mid-session"); stopped at the end.

Everything talks only to 127.0.0.1; every wait is bounded in time, and only processes
started here are stopped, by their own handle.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.servers import free_port, stop_process, wait_until_serving

HOST = "127.0.0.1"
DEFAULT_PORT = 6379
PING_TIMEOUT_S = 0.5
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


def redis_answers(host: str, port: int, timeout: float = PING_TIMEOUT_S) -> bool:
    """Whether ``host:port`` answers a RESP ``PING`` with ``+PONG`` within ``timeout``.

    A server that wants a password (``-NOAUTH``) counts as not answering: the tests
    cannot use it.
    """
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            reply = b""
            while b"\r\n" not in reply and time.monotonic() < deadline:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                data = sock.recv(64)
                if not data:
                    break
                reply += data
    except OSError:
        return False
    return reply.startswith(b"+PONG")


class RedisServer:
    """A private ``redis-server`` on 127.0.0.1: no persistence, its own directory.

    :meth:`restart` keeps the port, so clients holding its URL reconnect to the new
    process (what a Redis restart looks like to the cluster). The data is gone after a
    restart, as with a Redis without persistence.
    """

    def __init__(self, port: int | None = None, directory: Path | None = None) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server is not installed (scripts/install-test-deps.sh)")
        self.port = port or free_port()
        self._own_dir = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="lucid-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> RedisServer:
        """Start the server and wait (bounded) until it answers PING."""
        assert self.binary is not None
        if self.running:
            return self
        options = {
            "port": str(self.port),
            "bind": HOST,
            "save": "",
            "appendonly": "no",
            "dir": str(self.directory),
            "daemonize": "no",
            "protected-mode": "yes",
        }
        argv = [self.binary]
        for name, value in options.items():
            argv += [f"--{name}", value]
        log = (self.directory / "redis.log").open("ab")
        try:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            log.close()
        try:
            wait_until_serving(
                self.process,
                lambda: redis_answers(HOST, self.port, timeout=0.2),
                timeout_s=START_TIMEOUT_S,
                what=f"redis-server on port {self.port}",
                log=self.directory / "redis.log",
            )
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a bounded wait)."""
        process, self.process = self.process, None
        stop_process(process, STOP_TIMEOUT_S)

    def restart(self) -> RedisServer:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def start_private_redis(attempts: int = 3) -> RedisServer:
    """A started private server; retries on a new port if another process took the first."""
    error: Exception | None = None
    for _ in range(attempts):
        server = RedisServer()
        try:
            return server.start()
        except RuntimeError as exc:
            server.cleanup()
            error = exc
    raise RuntimeError(f"could not start a private redis-server: {error}")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis to test against (see the module docstring)."""
    if redis_answers(HOST, DEFAULT_PORT):
        yield f"redis://{HOST}:{DEFAULT_PORT}/0"
        return
    if shutil.which("redis-server") is None:
        pytest.skip(
            f"no Redis answers on {HOST}:{DEFAULT_PORT} and redis-server is not installed "
            "(as root: scripts/install-test-deps.sh)"
        )
    server = start_private_redis()
    try:
        yield server.url
    finally:
        server.cleanup()


def delete_prefixed(url: str, prefix: str, *, max_rounds: int = 10_000) -> int:
    """Delete every key starting with ``prefix``; returns how many were deleted.

    ``prefix`` must hold no glob characters (``*?[]\\``), so the SCAN pattern matches it
    literally.
    """
    import redis

    if any(ch in prefix for ch in "*?[]\\"):
        raise ValueError(f"prefix {prefix!r} holds glob characters")
    deleted = 0
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        cursor = 0
        for _ in range(max_rounds):
            cursor, keys = client.scan(cursor=cursor, match=f"{prefix}*", count=500)
            if keys:
                deleted += int(client.delete(*keys))
            if cursor == 0:
                break
    finally:
        client.close()
    return deleted


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"lucid-test-{uuid.uuid4().hex}:"
    try:
        yield prefix
    finally:
        delete_prefixed(redis_url, prefix)


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, to stop or restart at will; skips without one."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (as root: scripts/install-test-deps.sh)")
    server = start_private_redis()
    try:
        yield server
    finally:
        server.cleanup()
