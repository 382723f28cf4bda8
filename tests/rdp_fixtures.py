"""Shared pieces for tests against the real RDP test server (FreeRDP shadow server).

Constants, the picture tolerance, the Debian-dependency fixture and module-scoped
servers; conftest.py re-exports the fixtures. Every server is stopped, also on failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from tests.rdp_server import INSTALL_SCRIPT, RdpTestServer, missing_dependencies

Image = npt.NDArray[np.uint8]

NLA_USER = "alice"
NLA_PASSWORD = "correct horse Ω 42"  # a space and a non-ASCII letter on purpose
SIZE = (1280, 720)

# Picture tolerance for "the client shows the server's screen" (see the test docstring).
MAX_MEAN_ABS_DIFF = 8.0
PIXEL_DELTA = 32
MIN_CLOSE_FRACTION = 0.90

PROGRAM_NAMES = {"Xvfb", "xfreerdp", "freerdp-shadow-", "freerdp-shadow-cli"}


def _proc_state(pid: int) -> tuple[str, str, int] | None:
    """(comm, state, ppid) of a process, None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    return comm, fields[0], int(fields[1])


def _running(pid: int) -> bool:
    st = _proc_state(pid)
    return st is not None and st[1] not in ("Z", "X")


def _wait_gone(pids: list[int], timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_running(p) for p in pids):
        time.sleep(0.02)
    return [p for p in pids if _running(p)]


def _our_live_programs() -> list[tuple[int, str]]:
    """Xvfb/xfreerdp/shadow/test-app processes that are children of this test process."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _proc_state(int(entry))
        if not st or st[2] != os.getpid() or st[1] in ("Z", "X"):
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if st[0] in PROGRAM_NAMES or b"rdp_test_app.py" in cmdline:
            found.append((int(entry), st[0]))
    return found


def picture_difference(a: Image, b: Image) -> tuple[float, float]:
    """(mean absolute difference over all channels, fraction of pixels within PIXEL_DELTA)."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float(diff.mean()), float((diff.max(axis=2) <= PIXEL_DELTA).mean())


def same_picture(a: Image, b: Image) -> bool:
    mad, close = picture_difference(a, b)
    return mad < MAX_MEAN_ABS_DIFF and close > MIN_CLOSE_FRACTION


@pytest.fixture(scope="module")
def capture_deps() -> None:
    """Install missing Debian packages (as root), else skip with what is missing."""
    missing = missing_dependencies()
    if missing:
        subprocess.run(
            [str(INSTALL_SCRIPT)],
            env={**os.environ, "PYTHON": sys.executable},
            capture_output=True,
            timeout=900,
            check=False,
        )
        missing = missing_dependencies()
    if missing:
        pytest.skip(
            "capture test dependencies missing: "
            + ", ".join(missing)
            + f"; run {INSTALL_SCRIPT} as root"
        )


@pytest.fixture(scope="module", autouse=True)
def no_leaked_processes() -> Iterator[None]:
    """After the module, no Xvfb/xfreerdp/shadow child may survive (killed and reported)."""
    yield
    leaked = _our_live_programs()
    for pid, _ in leaked:
        os.kill(pid, signal.SIGKILL)
    assert not leaked, f"processes left running: {leaked}"


@pytest.fixture(scope="module")
def tls_server(capture_deps: None) -> Iterator[RdpTestServer]:
    with RdpTestServer(auth="none", size=SIZE) as server:
        yield server


@pytest.fixture(scope="module")
def nla_server(capture_deps: None) -> Iterator[RdpTestServer]:
    with RdpTestServer(auth="nla", user=NLA_USER, password=NLA_PASSWORD, size=SIZE) as server:
        yield server
