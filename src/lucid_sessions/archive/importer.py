"""Frames from files: a video (anything FFmpeg reads, through PyAV) or a folder of
PNG/JPEG screenshots taken in name order.

Both yield ``(timestamp_us, pixels)`` with RGB uint8 pixels and timestamps starting at
zero. Unreadable input raises :class:`~lucid_sessions.errors.FormatError` naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from lucid_sessions.errors import FormatError, InvalidConfigError
from lucid_sessions.recording.codec import MAX_HEIGHT, MAX_WIDTH, Pixels

__all__ = ["FrameSource", "open_frames"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_IMAGE_FPS = 1.0


@dataclass(frozen=True, slots=True)
class FrameSource:
    description: str
    total: int | None
    """Frames expected, when known (for progress)."""
    frames: Iterator[tuple[int, Pixels]]


def _check_size(width: int, height: int, where: str) -> None:
    if not (1 <= width <= MAX_WIDTH and 1 <= height <= MAX_HEIGHT):
        raise FormatError(f"{where}: frame size {width}x{height} exceeds {MAX_WIDTH}x{MAX_HEIGHT}")


def _images(folder: Path, fps: float) -> FrameSource:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InvalidConfigError(f"no PNG or JPEG images in {folder}")

    def frames() -> Iterator[tuple[int, Pixels]]:
        for index, path in enumerate(files):
            try:
                with Image.open(path) as image:
                    _check_size(image.width, image.height, str(path))
                    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
            except (UnidentifiedImageError, OSError) as exc:
                raise FormatError(f"cannot read image {path}: {exc}") from exc
            yield round(index * 1_000_000 / fps), np.ascontiguousarray(pixels)

    return FrameSource(f"{len(files)} images in {folder}", len(files), frames())


def _video(path: Path, fps: float | None) -> FrameSource:
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"cannot read video {path}: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise FormatError(f"{path} has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    total = stream.frames or None

    def frames() -> Iterator[tuple[int, Pixels]]:
        step = None if fps is None else 1_000_000 / fps
        next_at = 0.0
        origin: int | None = None
        try:
            for frame in container.decode(stream):
                seconds = frame.time if frame.time is not None else 0.0
                ts = round(seconds * 1_000_000)
                if origin is None:
                    origin = ts
                ts = max(0, ts - origin)
                if step is not None:
                    if ts + 1 < next_at:
                        continue
                    next_at = (ts // step + 1) * step
                _check_size(frame.width, frame.height, str(path))
                yield ts, frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as exc:
            raise FormatError(f"cannot decode video {path}: {exc}") from exc
        finally:
            container.close()

    return FrameSource(f"video {path.name}", total, frames())


def open_frames(path: Path, *, fps: float | None = None) -> FrameSource:
    """Frames from a video file or an image folder. ``fps`` resamples a video (keeping
    the first frame of each interval) and spaces images (default 1 per second)."""
    if fps is not None and not 0 < fps <= 120:
        raise InvalidConfigError(f"--fps must be above 0 and at most 120, not {fps}")
    if not path.exists():
        raise InvalidConfigError(f"{path} does not exist")
    if path.is_dir():
        return _images(path, fps or DEFAULT_IMAGE_FPS)
    return _video(path, fps)
