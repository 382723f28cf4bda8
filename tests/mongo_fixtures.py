"""MongoDB for the tests: the one ``LUCID_TEST_MONGODB_URI`` names, else a private nx-27017.

No real ``mongod`` can be installed on the machines these tests run on, so by default they
talk, over the network, to ``nx-27017`` (PyPI, a test dependency): a server speaking
MongoDB's wire protocol, storing in SQLite. It is a stand-in, not MongoDB; the code is
written for real MongoDB, and setting ``LUCID_TEST_MONGODB_URI`` runs the same tests
against one.

- ``mongodb_uri`` (session): ``LUCID_TEST_MONGODB_URI`` when set; otherwise a private
  ``nx-27017`` on a free loopback port with its data in a temporary directory, waited
  for (bounded) until it answers a ``ping``, stopped when the session ends. Skips with
  the reason when nx-27017 is not installed.
- ``mongo_database`` (function): a database name unique to the test
  (``lucid_test_<hex>``), dropped afterwards, so tests can share a server with other
  people's data and with each other.

Where nx-27017 0.8 is known to differ from MongoDB (the store is written for MongoDB and
relies on none of these):

- ``$setOnInsert`` in ``find_one_and_update`` with ``upsert`` is ignored (``update_one``
  with ``upsert`` honours it);
- index names are its own (``idx_<collection>_<fields>``), not the ones asked for;
- an equality filter on a binary value (``{"wrapped": b"..."}``) matches nothing.

Everything started here talks only to 127.0.0.1; every wait is bounded in time, and only
processes started here are stopped, by their own handle.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.redis_fixtures import HOST
from tests.servers import free_port, stop_process, wait_until_serving

ENV_URI = "LUCID_TEST_MONGODB_URI"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
PING_TIMEOUT_MS = 500


def mongo_answers(uri: str, timeout_ms: int = PING_TIMEOUT_MS) -> bool:
    """Whether the server at ``uri`` answers a ``ping`` within ``timeout_ms``."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    client: MongoClient[dict[str, object]] = MongoClient(
        uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms
    )
    try:
        client.admin.command("ping")
    except PyMongoError:
        return False
    finally:
        client.close()
    return True


def is_nx_27017(uri: str) -> bool:
    """Whether the server at ``uri`` is the nx-27017 stand-in (its ``serverStatus`` names
    the process ``nx_27017``; MongoDB's says ``mongod`` or ``mongos``)."""
    from pymongo import MongoClient

    client: MongoClient[dict[str, object]] = MongoClient(uri, serverSelectionTimeoutMS=2000)
    try:
        return str(client.admin.command("serverStatus").get("process", "")).startswith("nx")
    finally:
        client.close()


def _nx_command() -> list[str]:
    """How to run nx-27017: its console script next to this Python, else on PATH."""
    script = Path(sys.executable).with_name("nx-27017")
    if script.exists():
        return [str(script)]
    found = shutil.which("nx-27017")
    if found:
        return [found]
    raise RuntimeError("nx-27017 is not installed (pip install -e '.[test]')")


class NxServer:
    """A private ``nx-27017`` on 127.0.0.1: one SQLite file per database in its own
    directory, in the foreground (so it stops with its process handle)."""

    def __init__(self, port: int | None = None) -> None:
        self.command = _nx_command()
        self.port = port or free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="lucid-nx27017-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://{HOST}:{self.port}/"

    @property
    def log_path(self) -> Path:
        return self.directory / "nx-27017.log"

    def start(self) -> NxServer:
        """Start the server and wait (bounded) until it answers a ping."""
        argv = [
            *self.command,
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.directory / "data"),
            "--log-file",
            str(self.log_path),
            "--pid-file",
            str(self.directory / "nx-27017.pid"),
        ]
        (self.directory / "data").mkdir()
        output = (self.directory / "output.log").open("ab")
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )
        finally:
            output.close()
        try:
            wait_until_serving(
                self.process,
                lambda: mongo_answers(self.uri, timeout_ms=200),
                timeout_s=START_TIMEOUT_S,
                what=f"nx-27017 on port {self.port}",
                log=self.directory / "output.log",
            )
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a bounded wait)."""
        process, self.process = self.process, None
        stop_process(process, STOP_TIMEOUT_S)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_private_nx(attempts: int = 3) -> NxServer:
    """A started private server; retries on a new port if another process took the first."""
    error: Exception | None = None
    for _ in range(attempts):
        server = NxServer()
        try:
            return server.start()
        except RuntimeError as exc:
            server.cleanup()
            error = exc
    raise RuntimeError(f"could not start a private nx-27017: {error}")


@pytest.fixture(scope="session")
def mongodb_uri() -> Iterator[str]:
    """A MongoDB to test against (see the module docstring)."""
    configured = os.environ.get(ENV_URI)
    if configured:
        yield configured
        return
    try:
        _nx_command()
    except RuntimeError as exc:
        pytest.skip(f"{ENV_URI} is not set and {exc}")
    server = start_private_nx()
    try:
        yield server.uri
    finally:
        server.cleanup()


def drop_database(uri: str, name: str) -> None:
    """Drop database ``name`` (bounded in time; a server gone already is fine)."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    client: MongoClient[dict[str, object]] = MongoClient(
        uri, serverSelectionTimeoutMS=2000, connectTimeoutMS=2000
    )
    try:
        client.drop_database(name)
    except PyMongoError:
        pass
    finally:
        client.close()


@pytest.fixture
def mongo_database(mongodb_uri: str) -> Iterator[str]:
    """A database name of this test's own; dropped afterwards."""
    name = f"lucid_test_{uuid.uuid4().hex[:16]}"
    try:
        yield name
    finally:
        drop_database(mongodb_uri, name)
