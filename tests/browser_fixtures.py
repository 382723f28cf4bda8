"""A real browser for the web UI tests: Playwright (sync API) driving Debian's Chromium.

``playwright install`` cannot download browsers here, so the browser is the system's
``/usr/bin/chromium`` (Debian package ``chromium``; scripts/install-test-deps.sh installs
it as root). Tests that need it skip, naming why, when Playwright is not installed or
Chromium is missing and cannot be installed (not root).

The ``browser_context`` fixture is one headless Chromium with a fresh user data directory
per test module (module scope, not session: Playwright's sync API runs an event loop in
the main thread while it is open, and later modules call ``asyncio.run``); each test
opens its own pages (each tab has its own sessionStorage, so its own sign-in). The
``ui_server`` fixture is a real ``lucid-sessions serve`` process over a data directory
with sessions imported before it starts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.cluster_proc import ServeProcess, api_headers, wait_healthy
from tests.conftest import write_images
from tests.servers import free_port

CHROMIUM = Path(os.environ.get("LUCID_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _chromium() -> Path:
    """The Chromium binary, installed with apt as root when missing; else skip."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(
            f"{CHROMIUM} is missing and cannot be installed here (not root): "
            "apt-get install chromium (or run scripts/install-test-deps.sh as root)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"],
        env=env,
        capture_output=True,
        check=False,
    )
    if done.returncode != 0 or not CHROMIUM.exists():
        pytest.skip(f"installing chromium failed: {done.stderr.decode(errors='replace')[-300:]}")
    return CHROMIUM


@pytest.fixture(name="browser_context", scope="module")
def browser_context_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium (persistent context over a fresh user data dir), per module."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install .[test])"
    )
    executable = _chromium()
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(executable),
            headless=True,
            args=CHROMIUM_ARGS,
            accept_downloads=True,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()


@dataclass
class UiServer:
    base_url: str
    data_dir: Path
    sessions: dict[str, str]
    """Session name -> id, of the sessions imported before the server started."""

    def cli(self, *args: str) -> str:
        """Runs ``lucid-sessions ARGS --data-dir DATA`` in a process of its own (the
        browser's event loop owns this one); returns its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "lucid_sessions", *args, "--data-dir", str(self.data_dir)],
            capture_output=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done.stdout.decode()

    def token(self, role: str = "admin") -> str:
        return api_headers(self.data_dir, role)["Authorization"].removeprefix("Bearer ")


@pytest.fixture(name="ui_server", scope="module")
def ui_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    """``lucid-sessions serve`` on a free port over two imported sessions:
    ``playback`` (48 frames at 2 fps, 320x192) and ``tamper`` (same shape)."""
    root = tmp_path_factory.mktemp("ui")
    data_dir = root / "data"
    server = UiServer("", data_dir, {})
    for name in ("playback", "tamper"):
        shots = root / f"shots-{name}"
        write_images(shots, 48, width=320, height=192)
        server.sessions[name] = server.cli(
            "import", str(shots), "--name", name, "--fps", "2"
        ).strip()
    port = free_port()
    serve = ServeProcess(data_dir, {"LUCID_API_PORT": str(port)}).start()
    try:
        server.base_url = f"http://127.0.0.1:{port}"
        wait_healthy(server.base_url, procs=[serve])
        yield server
    finally:
        serve.stop()
