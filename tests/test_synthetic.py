"""The synthetic desktop: deterministic, desktop-like, mostly static between frames."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from lucid_sessions.errors import InvalidConfigError
from lucid_sessions.recording.synthetic import DesktopScene, Rect

TILE = 64


def changed_tiles(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """Which 64x64 tiles differ between two frames (edge tiles clipped), as a 2-D grid."""
    height, width, _ = a.shape
    word = np.uint64 if width * 3 % 8 == 0 else np.uint8  # compare 8 bytes at a time if we can
    per_tile = TILE * 3 // np.dtype(word).itemsize
    diff = a.reshape(height, -1).view(word) != b.reshape(height, -1).view(word)
    diff = np.logical_or.reduceat(diff, np.arange(0, height, TILE), axis=0)
    grid: npt.NDArray[np.bool_] = np.logical_or.reduceat(
        diff, np.arange(0, diff.shape[1], per_tile), axis=1
    )
    return grid


def tile_fractions(scene: DesktopScene, count: int) -> npt.NDArray[np.float64]:
    """Fraction of tiles that change from frame i to i + 1, for i in 0 .. count - 1."""
    frames = (pixels for _, pixels in scene.frames(count + 1))
    return np.array([changed_tiles(a, b).mean() for a, b in itertools.pairwise(frames)])


def distinct_colours(frame: npt.NDArray[np.uint8]) -> int:
    step = max(1, min(frame.shape[:2]) // 240)
    sample = frame[::step, ::step].astype(np.uint32)
    return len(np.unique(sample[..., 0] << 16 | sample[..., 1] << 8 | sample[..., 2]))


@pytest.fixture(scope="module")
def plain() -> DesktopScene:
    return DesktopScene()


@pytest.fixture(scope="module")
def noisy() -> DesktopScene:
    return DesktopScene(noisy_video=True)


def test_same_index_gives_identical_frames_in_any_order(plain: DesktopScene) -> None:
    forwards = [plain.frame(i) for i in (0, 7, 95, 400)]
    other = DesktopScene()
    backwards = [other.frame(i) for i in (400, 95, 7, 0)][::-1]
    for a, b, c in zip(forwards, backwards, [plain.frame(i) for i in (0, 7, 95, 400)], strict=True):
        assert a.tobytes() == b.tobytes() == c.tobytes()


def test_noisy_video_is_deterministic_too() -> None:
    a = DesktopScene(width=640, height=360, noisy_video=True, seed=5)
    b = DesktopScene(width=640, height=360, noisy_video=True, seed=5)
    late, early = a.frame(9), a.frame(2)
    assert b.frame(2).tobytes() == early.tobytes() and b.frame(9).tobytes() == late.tobytes()
    assert early.tobytes() != late.tobytes()


def test_frames_are_fresh_writable_c_contiguous_rgb(plain: DesktopScene) -> None:
    first, second = plain.frame(3), plain.frame(3)
    assert first is not second
    assert first.shape == (1080, 1920, 3) and first.dtype == np.uint8
    assert first.flags.c_contiguous and first.flags.writeable
    first[:] = 0
    assert plain.frame(3).tobytes() == second.tobytes()


def test_frames_yields_rounded_microsecond_timestamps() -> None:
    scene = DesktopScene(width=320, height=240, fps=30)
    stamped = list(scene.frames(4))
    assert [t for t, _ in stamped] == [0, 33333, 66667, 100000]
    assert all(np.array_equal(pixels, scene.frame(i)) for i, (_, pixels) in enumerate(stamped))


def test_seed_changes_the_content() -> None:
    a = DesktopScene(width=640, height=480, seed=0).frame(10)
    b = DesktopScene(width=640, height=480, seed=1).frame(10)
    assert changed_tiles(a, b).mean() > 0.5


def test_plain_scene_changes_few_tiles_per_frame_but_never_stands_still(
    plain: DesktopScene,
) -> None:
    fractions = tile_fractions(plain, 150)  # 5 s at 30 fps: one scroll, at 2-3 s
    assert fractions.mean() < 0.10
    assert (fractions > 0).all()  # at least the cursor moves in every frame
    assert fractions[10:50].max() < 0.05  # cursor, terminal and clock only
    assert fractions[61:89].min() > 0.10  # the document scrolls


def test_noisy_video_changes_every_tile_of_its_region(
    plain: DesktopScene, noisy: DesktopScene
) -> None:
    video = noisy.video_rect
    assert plain.video_rect is None and video is not None
    assert (video.width, video.height) == (480, 270)
    inner = (
        slice(-(-video.y // TILE), video.bottom // TILE),
        slice(-(-video.x // TILE), video.right // TILE),
    )
    grids = [changed_tiles(a, b) for a, b in itertools.pairwise(noisy.frame(i) for i in range(21))]
    assert all(grid[inner].all() for grid in grids)
    assert np.mean([grid.mean() for grid in grids]) > tile_fractions(plain, 20).mean() + 0.05


def test_clock_changes_only_across_a_second_boundary(plain: DesktopScene) -> None:
    clock = plain.clock_rect
    assert isinstance(clock, Rect)
    area = (slice(clock.y, clock.bottom), slice(clock.x, clock.right))
    before, last, after = plain.frame(28)[area], plain.frame(29)[area], plain.frame(30)[area]
    assert np.array_equal(before, last)
    assert not np.array_equal(last, after)


@pytest.mark.parametrize(
    ("width", "height"), [(320, 240), (333, 257), (4000, 240), (320, 2000), (7680, 4320)]
)
def test_any_resolution_renders_a_busy_desktop(width: int, height: int) -> None:
    scene = DesktopScene(width=width, height=height, noisy_video=True, seed=3)
    first, later = scene.frame(0), scene.frame(45)
    assert first.shape == (height, width, 3) and first.dtype == np.uint8
    assert distinct_colours(first) >= 12
    assert not np.array_equal(first, later)


def test_full_hd_frame_is_not_blank(plain: DesktopScene) -> None:
    frame = plain.frame(0)
    assert distinct_colours(frame) >= 30
    assert frame.std() > 30


@pytest.mark.parametrize(
    "settings",
    [{"width": 100}, {"height": 100}, {"fps": 0}, {"fps": float("nan")}, {"seed": -1}],
)
def test_invalid_settings_are_rejected(settings: dict[str, Any]) -> None:
    with pytest.raises(InvalidConfigError):
        DesktopScene(**settings)


def test_negative_frame_index_is_rejected(plain: DesktopScene) -> None:
    with pytest.raises(InvalidConfigError):
        plain.frame(-1)
