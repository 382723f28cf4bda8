"""pytest helper: a real RDP server (scripts/rdp-test-server) run in-process.

``RdpTestServer`` drives the same code as the command-line script, but keeps the child
processes as children of the test process, so they are reaped and can be killed even
when a test fails.  Use it as a context manager::

    with RdpTestServer(auth="nla", user="alice", password="pw") as server:
        connect_to("127.0.0.1", server.port)
        server.screenshot()   # the server's own screen, RGB
        server.kill()         # SIGKILL the RDP server (simulates a crash)
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import shutil
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "rdp-test-server"
INSTALL_SCRIPT = REPO / "scripts" / "install-test-deps.sh"

REQUIRED_PROGRAMS = {
    "Xvfb": "xvfb",
    "xfreerdp": "freerdp2-x11",
    "freerdp-shadow-cli": "freerdp2-shadow-x11",
}

__all__ = ["REQUIRED_PROGRAMS", "RdpTestServer", "load_script", "missing_dependencies"]


def load_script() -> types.ModuleType:
    """scripts/rdp-test-server imported as a module (it has no .py suffix)."""
    name = "rdp_test_server_script"
    if name in sys.modules:
        return sys.modules[name]
    loader = importlib.machinery.SourceFileLoader(name, str(SCRIPT))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


def missing_dependencies() -> list[str]:
    """What the capture tests need and this machine lacks, as readable items."""
    missing = [
        f"{prog} (Debian {pkg})"
        for prog, pkg in REQUIRED_PROGRAMS.items()
        if not shutil.which(prog)
    ]
    try:
        import tkinter  # noqa: F401
    except ImportError:
        missing.append(f"tkinter for {sys.executable} (Debian python3-tk for the system Python)")
    return missing


class RdpTestServer:
    """Xvfb + animated Tk app + freerdp-shadow-cli on 127.0.0.1, in one process group.

    ``port=0`` picks a free port.  ``auth="none"`` serves TLS without credentials,
    ``auth="nla"`` requires ``user``/``password`` (held only as an NT hash on disk).
    ``stop()`` is idempotent and kills the whole group; ``kill()`` SIGKILLs the shadow
    server alone.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        auth: str = "none",
        user: str = "tester",
        password: str | None = None,
        domain: str = "",
        size: tuple[int, int] = (1280, 720),
        fps: float = 10.0,
        state_dir: Path | None = None,
    ) -> None:
        module = load_script()
        self._own_dir = state_dir is None
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="lucid-rdp-test-"))
        self._server = module.TestServer(
            self.state_dir,
            port=port,
            auth=auth,
            user=user,
            password=password,
            domain=domain,
            size=size,
            fps=fps,
            python=sys.executable,
        )
        self.auth = auth
        self.user = user
        self.size = size

    def start(self) -> RdpTestServer:
        """Start (about half a second); raises the script's ServerError on failure."""
        try:
            self._server.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> RdpTestServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self._server.port)

    @property
    def display(self) -> str:
        """The server's X display, e.g. ``":3"``."""
        return str(self._server.display)

    @property
    def pids(self) -> dict[str, int]:
        return dict(self._server.pids)

    def screenshot(self) -> npt.NDArray[np.uint8]:
        """The server's own screen now, as an RGB array (height, width, 3)."""
        from lucid_sessions.capture import X11Source

        with X11Source(self.display, skip_unchanged=False) as source:
            frame = source.grab()
        assert frame is not None
        return frame

    def alive(self) -> bool:
        return bool(self._server.alive())

    def kill(self) -> None:
        """SIGKILL the shadow server only: the RDP server dies, its display stays."""
        self._server.kill_shadow()

    def stop(self) -> None:
        """Kill every process of the server and remove its state directory."""
        self._server.stop()
        if self._own_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
