"""A real EVM node for the tests: hardhat's, on a free loopback port.

- ``npm_tools`` (session): the directory holding the npm packages pinned in
  ``contracts/package.json`` and ``package-lock.json`` (solc, hardhat 2), installed once by
  ``scripts/compile-contract --tools-dir`` into ``~/.cache/lucid-sessions/npm/<hash>``,
  outside the repository. Skips with npm's reason when Node.js or npm is missing or the
  registry cannot be reached.
- ``hardhat`` (session): ``hardhat node --hostname 127.0.0.1 --port <free>`` started from
  there with a minimal config, waited for (bounded) until JSON-RPC answers
  ``eth_chainId``; yields a :class:`HardhatChain` with its URL and two of hardhat's funded
  test accounts, and is stopped at the end. The node automines: each transaction is
  mined into its own block as soon as it arrives.

The node is run as ``node <tools>/node_modules/hardhat/internal/cli/bootstrap.js``, which
is what ``npx hardhat`` runs, minus the npx process in between: stopping the one process
started here stops the node. Only that process is ever signalled.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.servers import free_port, stop_process, wait_until_serving

ROOT = Path(__file__).resolve().parent.parent
COMPILE_SCRIPT = ROOT / "scripts" / "compile-contract"
HOST = "127.0.0.1"
INSTALL_TIMEOUT_S = 660.0
START_TIMEOUT_S = 45.0
STOP_TIMEOUT_S = 5.0
CHAIN_ID = 31337

# Hardhat's default accounts #0 and #1 ("test test ... junk" mnemonic). These keys are
# public and printed by every `hardhat node`; they hold value only on local test chains.
TEST_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
)
TEST_ADDRESSES = (
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
)

_CONFIG = f"""\
// Written by tests/evm_fixtures.py: a bare local chain for the anchoring tests.
module.exports = {{ networks: {{ hardhat: {{ chainId: {CHAIN_ID} }} }} }};
"""


@dataclass(frozen=True)
class HardhatChain:
    url: str
    private_key: str
    """Account #0's key: funded, used to deploy and anchor."""
    address: str
    other_key: str
    """Account #1's key: another anchoring party."""
    other_address: str


def run_compile_script(*args: str, timeout: float = INSTALL_TIMEOUT_S) -> str:
    """Run ``scripts/compile-contract``; its stdout. Skips the test if npm is unusable."""
    try:
        result = subprocess.run(
            [sys.executable, str(COMPILE_SCRIPT), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"scripts/compile-contract {' '.join(args)} took over {timeout:.0f} s")
    if result.returncode == 3:
        pytest.skip(f"npm tools unavailable: {result.stderr.strip()[:800]}")
    if result.returncode != 0:
        pytest.fail(f"scripts/compile-contract failed (exit {result.returncode}):\n{result.stderr}")
    return result.stdout


def rpc(url: str, method: str, params: list[object] | None = None, timeout: float = 1.0) -> object:
    """One JSON-RPC call; its result (raises OSError or ValueError when it fails)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        reply = json.loads(response.read())
    if "result" not in reply:
        raise ValueError(f"{method}: {reply.get('error')}", reply.get("error"))
    return reply["result"]


@pytest.fixture(scope="session")
def npm_tools() -> Path:
    """The installed pinned npm packages (see the module docstring)."""
    return Path(run_compile_script("--tools-dir").strip())


class HardhatNode:
    """``hardhat node`` on 127.0.0.1, run from the npm tools directory."""

    def __init__(self, tools: Path, port: int | None = None) -> None:
        self.tools = tools
        self.port = port or free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="lucid-hardhat-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _write_config(self) -> Path:
        config = self.tools / "hardhat.config.js"
        if not config.is_file() or config.read_text() != _CONFIG:
            staging = config.with_name(f".hardhat.config.{os.getpid()}.js")
            staging.write_text(_CONFIG)
            staging.replace(config)
        return config

    def start(self) -> HardhatNode:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not installed")
        self._write_config()
        env = {
            **os.environ,
            "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true",
            "DO_NOT_TRACK": "1",
        }
        bootstrap = self.tools / "node_modules" / "hardhat" / "internal" / "cli" / "bootstrap.js"
        argv = [node, str(bootstrap), "node", "--hostname", HOST, "--port", str(self.port)]
        log = (self.directory / "hardhat.log").open("ab")
        try:
            self.process = subprocess.Popen(
                argv,
                cwd=self.tools,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()

        def answers() -> bool:
            try:
                return int(str(rpc(self.url, "eth_chainId", timeout=0.5)), 16) == CHAIN_ID
            except (OSError, ValueError):
                return False

        try:
            wait_until_serving(
                self.process,
                answers,
                timeout_s=START_TIMEOUT_S,
                what=f"hardhat node on port {self.port}",
                log=self.directory / "hardhat.log",
                poll_s=0.1,
            )
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process(process, STOP_TIMEOUT_S)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def hardhat(npm_tools: Path) -> Iterator[HardhatChain]:
    """A running local hardhat chain (see the module docstring)."""
    if shutil.which("node") is None:
        pytest.skip("node (Node.js 18+) is not installed; hardhat needs it")
    error: Exception | None = None
    for _ in range(3):  # another process may take the free port before hardhat binds it
        node = HardhatNode(npm_tools)
        try:
            node.start()
        except RuntimeError as exc:
            node.cleanup()
            error = exc
            continue
        try:
            yield HardhatChain(
                url=node.url,
                private_key=TEST_KEYS[0],
                address=TEST_ADDRESSES[0],
                other_key=TEST_KEYS[1],
                other_address=TEST_ADDRESSES[1],
            )
        finally:
            node.cleanup()
        return
    pytest.fail(f"could not start hardhat node: {error}")
