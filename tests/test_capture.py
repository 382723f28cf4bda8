"""Capture sources against a real RDP server (FreeRDP shadow server on 127.0.0.1).

Needs the Debian packages xvfb, freerdp2-x11 and freerdp2-shadow-x11 and a Python with
tkinter; scripts/install-test-deps.sh installs them when run as root, otherwise the
RDP tests skip and say what is missing.  Every wait is bounded; every process a test
starts is stopped (process groups killed), also on failure.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from tests.rdp_fixtures import (
    NLA_PASSWORD,
    NLA_USER,
    SIZE,
    _running,
    _wait_gone,
    no_leaked_processes,  # noqa: F401 - autouse: no server process outlives the module
    picture_difference,
    same_picture,
)
from tests.rdp_server import RdpTestServer, load_script

from lucid_sessions.capture import (
    CaptureSource,
    IngestSource,
    PrivateDisplay,
    RdpConfig,
    RdpSource,
    X11Source,
)
from lucid_sessions.capture.rdp_errors import classify_exit
from lucid_sessions.errors import (
    CaptureAuthError,
    CaptureConnectionError,
    CaptureError,
    InvalidConfigError,
)

Image = npt.NDArray[np.uint8]


# -- helpers --------------------------------------------------------------------------


def _processes_holding(secret: bytes) -> list[str]:
    """Processes whose command line or environment contains ``secret``."""
    hits = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        for part in ("cmdline", "environ"):
            try:
                data = Path(f"/proc/{entry}/{part}").read_bytes()
            except OSError:
                continue
            if secret in data:
                hits.append(f"{entry}/{part}: {data[:80]!r}")
    return hits


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _grab_frame(source: CaptureSource, timeout: float = 5.0) -> Image:
    """The next non-None frame, bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = source.grab()
        if frame is not None:
            return frame
        time.sleep(0.02)
    raise AssertionError(f"no frame within {timeout} s")


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_capture(tls_server: RdpTestServer) -> Iterator[RdpSource]:
    """TLS, no credentials, 16-bit colour over the RDP8 graphics pipeline."""
    config = RdpConfig(
        host="127.0.0.1",
        port=tls_server.port,
        username="viewer",
        password="",
        security="tls",
        width=SIZE[0],
        height=SIZE[1],
        color_depth=16,
        gfx=True,
    )
    with RdpSource(config) as source:
        yield source


@pytest.fixture(scope="module")
def nla_capture(nla_server: RdpTestServer) -> Iterator[RdpSource]:
    """NLA with user and password, 32-bit colour, classic bitmap updates (the defaults)."""
    config = RdpConfig(
        host="127.0.0.1",
        port=nla_server.port,
        username=NLA_USER,
        password=NLA_PASSWORD,
        security="nla",
        width=SIZE[0],
        height=SIZE[1],
    )
    with RdpSource(config) as source:
        yield source


# -- RDP source -----------------------------------------------------------------------


@pytest.mark.parametrize("capture", ["tls_capture", "nla_capture"])
def test_rdp_frames_are_not_blank_and_change_over_time(
    capture: str, request: pytest.FixtureRequest
) -> None:
    source: RdpSource = request.getfixturevalue(capture)
    assert isinstance(source, CaptureSource)
    assert source.alive()
    assert source.size == SIZE
    first = _grab_frame(source)
    assert first.shape == (SIZE[1], SIZE[0], 3)
    assert first.dtype == np.uint8 and first.flags["C_CONTIGUOUS"]
    assert first.std() > 20, "frame is (nearly) one colour"
    assert len(np.unique(first.reshape(-1, 3)[::97], axis=0)) >= 8
    distinct = {first.tobytes()}
    deadline = time.monotonic() + 4.0
    while len(distinct) < 4 and time.monotonic() < deadline:
        frame = source.grab()
        if frame is not None:
            distinct.add(frame.tobytes())
        time.sleep(0.05)
    assert len(distinct) >= 4, f"only {len(distinct)} distinct frames in 4 s"


@pytest.mark.parametrize(
    ("capture", "server"), [("tls_capture", "tls_server"), ("nla_capture", "nla_server")]
)
def test_rdp_frame_matches_screenshot_of_server_display(
    capture: str, server: str, request: pytest.FixtureRequest
) -> None:
    """A client frame shows the server's own screen, grabbed at about the same moment.

    Tolerance: mean absolute difference over all channels < 8 (of 255) and more than
    90 % of pixels within 32 levels in every channel, for each of 5 pairs.  This admits
    16-bit colour (up to 7 levels per channel), codec rounding and the counter or a
    shape having moved one step between the two grabs (up to ~3 % of pixels); a
    picture shifted by one 64-pixel tile fails it (checked below).  Measured here:
    mean difference about 1.5-4.5, 97-100 % of pixels within 32.
    """
    source: RdpSource = request.getfixturevalue(capture)
    rdp_server: RdpTestServer = request.getfixturevalue(server)
    last = _grab_frame(source)
    measured = []
    with X11Source(rdp_server.display, skip_unchanged=False) as screen:
        for _ in range(5):
            reference = screen.grab()
            assert reference is not None
            frame = source.grab()
            if frame is None:  # unchanged since the last grab
                frame = last
            last = frame
            measured.append(picture_difference(frame, reference))
            assert same_picture(frame, reference), f"pictures differ: {measured}"
            shifted = np.roll(reference, 64, axis=1)
            assert not same_picture(frame, shifted), "tolerance too loose to notice a shift"
            time.sleep(0.15)


def test_rdp_password_is_on_no_command_line_or_environment(nla_capture: RdpSource) -> None:
    assert nla_capture.alive()
    pids = nla_capture.pids()
    assert set(pids) == {"xvfb", "xfreerdp"}
    assert all(_running(p) for p in pids.values())
    assert _processes_holding(NLA_PASSWORD.encode()) == []
    assert NLA_PASSWORD not in repr(nla_capture.config)


def test_wrong_password_raises_auth_error_quickly_and_cleans_up(
    nla_server: RdpTestServer,
) -> None:
    bad = "not-the-password-123"
    config = RdpConfig(
        host="127.0.0.1", port=nla_server.port, username=NLA_USER, password=bad, security="nla"
    )
    source = RdpSource(config)
    started = time.monotonic()
    with pytest.raises(CaptureAuthError) as info:
        source.start()
    assert time.monotonic() - started < 10.0
    message = str(info.value)
    assert "refused the credentials" in message and NLA_USER in message
    assert bad not in message and bad not in repr(info.value.details)
    client_output = "\n".join(source._tail.lines() if source._tail else [])
    assert "Password:" in client_output  # asked on stdin, answered there, not echoed
    assert bad not in client_output
    assert not source.alive()
    assert _wait_gone(list(source.pids().values())) == []
    source.stop()  # idempotent after a failed start


def test_security_mismatch_is_a_connection_error_not_an_auth_error(
    nla_server: RdpTestServer,
) -> None:
    config = RdpConfig(
        host="127.0.0.1",
        port=nla_server.port,
        username=NLA_USER,
        password=NLA_PASSWORD,
        security="tls",
        connect_timeout=10.0,
    )
    source = RdpSource(config)
    with pytest.raises(CaptureConnectionError) as info:
        source.start()
    assert not isinstance(info.value, CaptureAuthError)
    assert "security negotiation failed" in str(info.value)
    assert _wait_gone(list(source.pids().values())) == []


def test_unreachable_port_raises_connection_error(capture_deps: None) -> None:
    port = _free_port()
    config = RdpConfig(host="127.0.0.1", port=port, username="u", password="secret-pw")
    started = time.monotonic()
    with pytest.raises(CaptureConnectionError) as info:
        RdpSource(config).start()
    assert time.monotonic() - started < 5.0
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "secret-pw" not in str(info.value)


def test_server_killed_mid_capture_ends_the_source(capture_deps: None) -> None:
    with RdpTestServer(auth="none", size=(640, 480)) as server:
        config = RdpConfig(
            host="127.0.0.1",
            port=server.port,
            username="viewer",
            password="",
            security="tls",
            width=640,
            height=480,
        )
        with RdpSource(config) as source:
            _grab_frame(source)
            pids = list(source.pids().values())
            server.kill()
            killed_at = time.monotonic()
            while source.alive() and time.monotonic() - killed_at < 5.0:
                time.sleep(0.02)
            assert not source.alive(), "alive() still True 5 s after the server died"
            with pytest.raises(CaptureConnectionError, match="ended"):
                source.grab()
        assert _wait_gone(pids) == []


def test_stop_ends_every_process_and_is_idempotent(tls_server: RdpTestServer) -> None:
    config = RdpConfig(
        host="127.0.0.1",
        port=tls_server.port,
        username="viewer",
        password="",
        security="tls",
        width=640,
        height=480,
    )
    source = RdpSource(config)
    source.start()
    pids = list(source.pids().values())
    assert len(pids) == 2 and all(_running(p) for p in pids)
    source.stop()
    source.stop()
    assert _wait_gone(pids, timeout=1.0) == []
    assert not source.alive()
    with pytest.raises(CaptureError):
        source.grab()


# -- failure classification (no server needed) ----------------------------------------


def _config(security: str = "nla") -> RdpConfig:
    return RdpConfig(host="h", username="u", password="pw", security=security)  # type: ignore[arg-type]


def test_logon_failure_exit_status_is_an_auth_error() -> None:
    lines = ["[ERROR][com.freerdp.core] - ERRCONNECT_LOGON_FAILURE [0x00020014]"]
    assert isinstance(classify_exit(_config(), 134, lines, connected=False), CaptureAuthError)


def test_hang_up_during_nla_is_an_auth_error_but_a_drop_after_it_is_not() -> None:
    nla_refused = [
        "rdp_client_transition_to_state CONNECTION_STATE_NEGO --> CONNECTION_STATE_NLA",
        "ERRCONNECT_CONNECT_TRANSPORT_FAILED [0x0002000D]",
        "rdp_client_transition_to_state CONNECTION_STATE_NLA --> CONNECTION_STATE_INITIAL",
    ]
    assert isinstance(classify_exit(_config(), 147, nla_refused, connected=False), CaptureAuthError)
    past_nla = [
        *nla_refused[:1],
        "rdp_client_transition_to_state CONNECTION_STATE_NLA --> CONNECTION_STATE_MCS_CONNECT",
        "ERRCONNECT_CONNECT_TRANSPORT_FAILED [0x0002000D]",
    ]
    err = classify_exit(_config(), 147, past_nla, connected=False)
    assert type(err) is CaptureConnectionError
    ended = classify_exit(_config(), 131, past_nla, connected=True)
    assert type(ended) is CaptureConnectionError and "ended" in str(ended)


# -- configuration --------------------------------------------------------------------


def test_rdp_config_reports_every_error_at_once_and_hides_the_password() -> None:
    with pytest.raises(InvalidConfigError) as info:
        RdpConfig(
            host="",
            port=0,
            username="",
            password="a\nb",
            security="rdp",  # type: ignore[arg-type]
            width=10,
            color_depth=8,
        )
    errors = info.value.details["errors"]
    assert isinstance(errors, list) and len(errors) == 7
    assert "a\nb" not in str(info.value)
    assert "hunter2" not in repr(RdpConfig(host="h", username="u", password="hunter2"))


# -- X11 source -----------------------------------------------------------------------


def test_x11_source_attaches_to_a_display(capture_deps: None) -> None:
    display = PrivateDisplay(320, 200)
    display.start()
    try:
        with X11Source(display.display) as source:
            assert source.size == (320, 200)
            frame = source.grab()
            assert frame is not None and frame.shape == (200, 320, 3)
            assert frame.dtype == np.uint8 and frame.flags["C_CONTIGUOUS"]
            assert source.grab() is None, "an unchanged screen must grab as None"
            assert source.alive()
    finally:
        display.stop()


def _x_setup_status(display: str, uid: int | None) -> int:
    """X connection setup status without credentials, as ``uid``: 1 success, 0 failed."""
    pid = os.fork()
    if pid == 0:  # child: no imports, no threads, just a socket
        code = 99
        try:
            if uid is not None:
                os.setgid(uid)
                os.setuid(uid)
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.settimeout(5.0)
            conn.connect("\0/tmp/.X11-unix/X" + display.lstrip(":"))
            conn.sendall(b"l\0" + struct.pack("<HHHH", 11, 0, 0, 0) + b"\0\0")
            code = conn.recv(1)[0]
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_private_display_admits_this_user_and_refuses_others(capture_deps: None) -> None:
    display = PrivateDisplay(64, 64)
    display.start()
    try:
        assert _x_setup_status(display.display, None) == 1
        assert _x_setup_status(display.display, 65534) == 0  # nobody
    finally:
        display.stop()


def test_x11_source_sees_the_test_servers_animation(tls_server: RdpTestServer) -> None:
    with X11Source(tls_server.display) as source:
        first = _grab_frame(source)
        assert first.shape == (SIZE[1], SIZE[0], 3)
        second = _grab_frame(source, timeout=3.0)
        assert not np.array_equal(first, second)


def test_x11_source_reports_a_missing_or_dead_display(capture_deps: None) -> None:
    with pytest.raises(CaptureConnectionError, match="cannot open X display"):
        X11Source(":987").start()
    display = PrivateDisplay(64, 64)
    display.start()
    source = X11Source(display.display)
    source.start()
    try:
        assert display.pid is not None
        os.killpg(display.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        with pytest.raises(CaptureConnectionError):
            while time.monotonic() < deadline:
                source.grab()
                time.sleep(0.02)
        assert not source.alive()
    finally:
        source.stop()
        display.stop()


def test_x11_source_rejects_a_non_display_name() -> None:
    with pytest.raises(InvalidConfigError):
        X11Source("localhost")


# -- ingest source --------------------------------------------------------------------


def test_ingest_validates_pushed_frames() -> None:
    source = IngestSource(4, 2)
    source.start()
    good = np.zeros((2, 4, 3), np.uint8)
    bad_inputs: list[object] = [
        np.zeros((4, 2, 3), np.uint8),  # width and height swapped
        np.zeros((2, 4, 4), np.uint8),  # RGBA
        np.zeros((2, 4, 3), np.float32),
        [[0, 0, 0]],
        b"\0" * 24,
    ]
    for bad in bad_inputs:
        with pytest.raises(InvalidConfigError):
            source.push(None, bad)
    for ts in (-1, 1.5, True):
        with pytest.raises(InvalidConfigError):
            source.push(ts, good)  # type: ignore[arg-type]
    source.push(100, good)
    with pytest.raises(InvalidConfigError, match="backwards"):
        source.push(99, good)


def test_ingest_grab_returns_newest_frame_once_and_queue_is_bounded() -> None:
    source = IngestSource(2, 2, max_queue=3)
    assert not source.alive()
    source.start()
    assert source.alive() and source.size == (2, 2)
    assert source.grab() is None
    for i in range(5):
        pixels = np.full((2, 2, 3), i, np.uint8)
        source.push(i * 1000, pixels)
        pixels[:] = 255  # the agent may reuse its buffer at once
    assert source.dropped == 2
    frame = source.grab()
    assert frame is not None and int(frame[0, 0, 0]) == 4
    assert source.superseded == 2
    assert source.grab() is None
    source.close()
    assert not source.alive()
    with pytest.raises(CaptureError):
        source.push(None, np.zeros((2, 2, 3), np.uint8))
    source.stop()
    source.stop()


def test_ingest_rejects_a_bad_size() -> None:
    with pytest.raises(InvalidConfigError):
        IngestSource(0, 10)


# -- the test server itself -----------------------------------------------------------


def test_md4_matches_known_vectors() -> None:
    script = load_script()
    assert script.md4(b"").hex() == "31d6cfe0d16ae931b73c59d7e0c089c0"
    assert script.md4(b"abc").hex() == "a448017aaf21d8525fc10ae87aa6729d"
    digits = b"1234567890" * 8
    assert script.md4(digits).hex() == "e33b4ddc9c38f2199c3e7b164fcc0536"
    assert script.nt_hash("password") == "8846f7eaee8fb117ad06bdd830b7586c"


def test_server_script_start_status_stop(capture_deps: None, tmp_path: Path) -> None:
    script = str(load_script().__file__)
    state = tmp_path / "state"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, script, *args, "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=30,
        )

    started = run("start", "--size", "320x240", "--json")
    assert started.returncode == 0, started.stderr
    info = json.loads(started.stdout)
    pids = list(info["pids"].values())
    try:
        assert info["startup_seconds"] < 5.0
        with socket.create_connection(("127.0.0.1", info["port"]), timeout=2):
            pass
        assert run("status").returncode == 0
    finally:
        stopped = run("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert _wait_gone(pids) == []
    assert run("status").returncode == 3
