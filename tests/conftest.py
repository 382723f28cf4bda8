"""Shared fixtures: a fresh data directory, small synthetic frames, a CLI runner."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lucid_sessions.cli import main


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's settings: data directory, keys, tokens, Redis."""
    for var in list(os.environ):
        if var.startswith("LUCID_") and not var.startswith("LUCID_TEST_"):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


_RECURSION_LIMIT = sys.getrecursionlimit()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Test modules that import web3 (py_ecc) raise the recursion limit to 100,000 for the
    whole process; the code under test runs with the default, and so do the tests."""
    sys.setrecursionlimit(_RECURSION_LIMIT)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def moving_frames(
    count: int, width: int = 160, height: int = 96, *, seed: int = 0, fps: int = 10
) -> Iterator[tuple[int, np.ndarray]]:
    """Frames with a static background, a moving box and a per-frame marker row."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    for i in range(count):
        frame = base.copy()
        x = (i * 7) % max(1, width - 20)
        frame[10:30, x : x + 20] = (255, i % 256, 0)
        frame[height - 1, : min(width, i + 1)] = 255
        yield round(i * 1_000_000 / fps), frame


class Cli:
    """Runs ``lucid-sessions`` in-process against one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.runner = CliRunner()

    def __call__(self, *args: str, expect: int | None = 0) -> tuple[int, str, str]:
        result = self.runner.invoke(main, [*args, "--data-dir", str(self.data_dir)])
        if expect is not None and result.exit_code != expect:
            raise AssertionError(
                f"exit {result.exit_code} (wanted {expect}) for {args}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}\n{result.exception!r}"
            )
        return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def cli(data_dir: Path) -> Cli:
    return Cli(data_dir)


def write_images(folder: Path, count: int, width: int = 160, height: int = 96) -> list[np.ndarray]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for i, (_, frame) in enumerate(moving_frames(count, width, height)):
        Image.fromarray(frame).save(folder / f"shot-{i:03d}.png")
        frames.append(frame)
    return frames


@pytest.fixture
def imported(cli: Cli, tmp_path: Path) -> tuple[str, list[np.ndarray]]:
    """A finished session imported from 25 PNG screenshots at 2 fps (chunks of ~5 s)."""
    frames = write_images(tmp_path / "shots", 25)
    _, out, _ = cli("import", str(tmp_path / "shots"), "--name", "fixture", "--fps", "2")
    return out.strip(), frames


from tests.mongo_fixtures import mongo_database, mongodb_uri  # noqa: E402, F401
from tests.rdp_fixtures import capture_deps, nla_server, tls_server  # noqa: E402, F401
from tests.redis_fixtures import private_redis, redis_prefix, redis_url  # noqa: E402, F401
from tests.tls_fixtures import tls_files  # noqa: E402, F401
