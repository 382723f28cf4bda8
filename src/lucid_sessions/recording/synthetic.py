"""Synthetic desktop: deterministic, desktop-like screen content for benchmarks, demos and tests.

Glossary
--------
scene
    One layout (background, icons, taskbar, overlapping windows) fixed by the settings of a
    :class:`DesktopScene`. Every setting is part of the scene's identity: the same settings give
    the same frames on every run and in any order of calls.
static layer
    Everything that never changes, rendered once per scene.
dynamic parts
    What changes with time, each a pure function of the frame's timestamp and the seed: the
    mouse cursor (moves every frame), the taskbar clock (ticks every second), the terminal (a new
    line every 200 ms, scrolling once full), the document (scrolls for 1 s every 5 s) and, with
    ``noisy_video``, a 480x270 video region (scaled with the layout) whose pixels all change in
    every frame.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from lucid_sessions.errors import InvalidConfigError

__all__ = ["DesktopScene", "Rect"]

Pixels = npt.NDArray[np.uint8]
Mask = npt.NDArray[np.bool_]
Color = tuple[int, int, int]

_FIRST_CHAR, _LAST_CHAR = 32, 126  # printable ASCII; anything else draws as "?" or blank
_GLYPH_W, _GLYPH_H = 6, 11  # cell of Pillow's built-in bitmap font
_TERMINAL_LINE_US = 200_000
_TERMINAL_LINES_AT_START = 12
_SCROLL_PERIOD_US, _SCROLL_START_US, _SCROLL_DURATION_US = 5_000_000, 2_000_000, 1_000_000
_SCROLL_LINES = 9  # document lines moved by one scroll
_BACKGROUNDS: tuple[tuple[Color, Color], ...] = (
    ((18, 62, 112), (74, 138, 178)),
    ((46, 32, 86), (196, 110, 120)),
    ((22, 86, 74), (150, 196, 150)),
    ((58, 110, 165), (58, 110, 165)),  # flat
)
_VOCABULARY = """
session recording chunk evidence audit operator access privileged server policy review the of
and to in for with on by from a an is are was will be must should can report quarterly incident
response network firewall backup retention storage cluster node key rotation compliance control
ticket change window approved pending deployment latency
"""
_WORDS = _VOCABULARY.split()
_CURSOR_ART = """
X........... XX.......... XOX......... XOOX........ XOOOX....... XOOOOX...... XOOOOOX.....
XOOOOOOX.... XOOOOOOOX... XOOOOOOOOX.. XOOOOOOOOOX. XOOOOOOXXXXX XOOOXOOX.... XOOXXOOX....
XOX..XOOX... XX...XOOX... X.....XOOX.. ......XOOX.. .......XX...
"""
_CURSOR = _CURSOR_ART.split()  # rows of the arrow: X outline, O fill, . transparent


@dataclass(frozen=True, slots=True)
class Rect:
    """An axis-aligned pixel rectangle; ``width`` and ``height`` are never negative."""

    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height

    @property
    def empty(self) -> bool:
        return self.width <= 0 or self.height <= 0

    def intersect(self, other: Rect) -> Rect:
        x, y = max(self.x, other.x), max(self.y, other.y)
        return Rect(
            x,
            y,
            max(0, min(self.right, other.right) - x),
            max(0, min(self.bottom, other.bottom) - y),
        )

    def subtract(self, other: Rect) -> list[Rect]:
        """Disjoint non-empty rectangles that together cover ``self`` minus ``other``."""
        cut = self.intersect(other)
        if cut.empty:
            return [] if self.empty else [self]
        parts = (
            Rect(self.x, self.y, self.width, cut.y - self.y),
            Rect(self.x, cut.bottom, self.width, self.bottom - cut.bottom),
            Rect(self.x, cut.y, cut.x - self.x, cut.height),
            Rect(cut.right, cut.y, self.right - cut.right, cut.height),
        )
        return [p for p in parts if not p.empty]

    def inset(self, d: int) -> Rect:
        return Rect(self.x + d, self.y + d, max(0, self.width - 2 * d), max(0, self.height - 2 * d))


@functools.cache
def _glyph_atlas() -> Mask:
    """Printable ASCII of Pillow's built-in bitmap font as masks, shape (95, 11, 6)."""
    count = _LAST_CHAR - _FIRST_CHAR + 1
    sheet = Image.new("L", (count * _GLYPH_W, _GLYPH_H), 0)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default_imagefont()
    for i in range(count):
        draw.text((i * _GLYPH_W, 0), chr(_FIRST_CHAR + i), font=font, fill=255)
    masks: Mask = np.asarray(sheet) > 127
    return masks.reshape(_GLYPH_H, count, _GLYPH_W).transpose(1, 0, 2).copy()


def _upscale(mask: Mask, s: int) -> Mask:
    return np.repeat(np.repeat(mask, s, axis=-2), s, axis=-1) if s > 1 else mask


def _bounds(canvas: Pixels) -> Rect:
    return Rect(0, 0, canvas.shape[1], canvas.shape[0])


def _fill(canvas: Pixels, rect: Rect, color: Color) -> None:
    r = rect.intersect(_bounds(canvas))
    if not r.empty:
        view = canvas[r.y : r.bottom, r.x : r.right]
        view[0] = color  # then whole rows: far faster than broadcasting 3 bytes everywhere
        view[1:] = view[0]


def _spread_first_column(canvas: Pixels) -> None:
    done = 1
    while done < canvas.shape[1]:
        n = min(done, canvas.shape[1] - done)
        canvas[:, done : done + n] = canvas[:, :n]
        done += n


def _stamp(canvas: Pixels, x: int, y: int, mask: Mask, color: Color, clip: Rect) -> None:
    """Set the pixels under ``mask`` (placed at x, y) to ``color``, inside ``clip`` only."""
    r = Rect(x, y, mask.shape[1], mask.shape[0]).intersect(clip).intersect(_bounds(canvas))
    if not r.empty:
        sub = mask[r.y - y : r.bottom - y, r.x - x : r.right - x]
        canvas[r.y : r.bottom, r.x : r.right][sub] = color


@dataclass(frozen=True, slots=True)
class _Window:
    title: str
    outer: Rect
    title_bar: Rect
    body: Rect


class DesktopScene:
    """A deterministic generator of desktop-like RGB frames.

    ``frame(i)`` is a pure function of the settings and ``i``: equal settings give
    byte-identical frames in any order of calls (on one machine; the video region's floating
    point may differ in its last bits between CPUs). Each call returns a new, writable,
    C-contiguous ``uint8`` array of shape ``(height, width, 3)`` that the caller owns.
    Any size from 320x240 up works; the layout scales by whole steps of 1920x1080 and clips.
    A scene keeps small caches, so share one between threads only with a lock.
    """

    def __init__(
        self,
        *,
        width: int = 1920,
        height: int = 1080,
        fps: float = 30,
        seed: int = 0,
        noisy_video: bool = False,
    ) -> None:
        problems: list[str] = []
        if not 320 <= width <= 16384 or not 240 <= height <= 16384:
            problems.append(f"size {width}x{height} is outside 320x240 .. 16384x16384")
        if not (math.isfinite(fps) and fps > 0):
            problems.append(f"fps must be positive, got {fps}")
        if seed < 0:
            problems.append(f"seed must be >= 0, got {seed}")
        if problems:
            raise InvalidConfigError("; ".join(problems), details={"problems": problems})
        self.width, self.height, self.fps = width, height, fps
        self.seed, self.noisy_video = seed, noisy_video
        s = self._scale = max(1, min(width // 1920, height // 1080))
        self._glyphs = _upscale(_glyph_atlas(), s)
        self._gw, self._gh, self._line_h = _GLYPH_W * s, _GLYPH_H * s, 13 * s
        self._cursor_outline = _upscale(np.array([[c == "X" for c in r] for r in _CURSOR]), s)
        self._cursor_fill = _upscale(np.array([[c == "O" for c in r] for r in _CURSOR]), s)
        self._terminal_cache: dict[int, Pixels] = {}
        self._clock_cache: dict[int, Pixels] = {}
        self._layout()
        self._render_static()

    @property
    def clock_rect(self) -> Rect:
        """Where the taskbar clock is drawn; only the clock changes inside it."""
        return self._clock

    @property
    def video_rect(self) -> Rect | None:
        """The visible part of the noisy video region, or None without ``noisy_video``."""
        return self._video_parts[0] if self._video_parts else None

    def timestamp_us(self, index: int) -> int:
        """Microseconds since the first frame: ``round(index * 1e6 / fps)``."""
        return round(index * 1e6 / self.fps)

    def frames(self, count: int) -> Iterator[tuple[int, Pixels]]:
        """Yield ``(timestamp_us, pixels)`` for frames ``0 .. count - 1``."""
        for index in range(count):
            yield self.timestamp_us(index), self.frame(index)

    def frame(self, index: int) -> Pixels:
        """Frame number ``index`` (>= 0) as a new array owned by the caller."""
        if index < 0:
            raise InvalidConfigError(f"frame index must be >= 0, got {index}")
        t = self.timestamp_us(index)
        out = self._base.copy()
        offset = self._doc_offset(t)
        if offset:
            view = self._doc_pages[offset : offset + self._doc_view.height]
            self._paste(out, view, self._doc_view, self._doc_parts)
        lines = _TERMINAL_LINES_AT_START + t // _TERMINAL_LINE_US
        if lines != _TERMINAL_LINES_AT_START:
            self._paste(out, self._terminal(lines), self._term_text, self._term_parts)
        if self._video_parts:
            self._paste(out, self._video(t), self._video_area, self._video_parts)
        self._paste(out, self._clock_face(t // 1_000_000), self._clock, [self._clock])
        x, y = self._cursor_at(t)
        screen = _bounds(out)
        _stamp(out, x, y, self._cursor_outline, (0, 0, 0), screen)
        _stamp(out, x, y, self._cursor_fill, (255, 255, 255), screen)
        return out

    # -- layout and static layer ------------------------------------------------------------

    def _layout(self) -> None:
        s, w, h = self._scale, self.width, self.height
        self._taskbar = Rect(0, h - 40 * s, w, 40 * s)
        dh = self._taskbar.y
        self._desktop = Rect(0, 0, w, dh)

        def window(title: str, x0: float, y0: float, x1: float, y1: float) -> _Window:
            outer = Rect(round(x0 * w), round(y0 * dh), round((x1 - x0) * w), round((y1 - y0) * dh))
            return self._window(title, outer)

        self._doc_win = window("Q3 access review.txt - Editor", 0.07, 0.05, 0.50, 0.82)
        self._files_win = window("Files - /srv/recordings", 0.44, 0.10, 0.83, 0.52)
        self._term_win = window("ops@lucid-rec-01: ~", 0.36, 0.50, 0.72, 0.95)
        windows = [self._doc_win, self._files_win, self._term_win]
        if self.noisy_video:
            vw, vh = min(480 * s, w - 48 * s), min(270 * s, dh - 64 * s)
            outer = Rect(w - vw - 26 * s, 24 * s, vw + 2 * s, vh + 24 * s)
            windows.append(self._window("Media Player - training.mp4", outer))
        self._windows = windows
        self._doc_view = Rect(
            self._doc_win.body.x,
            self._doc_win.body.y + 26 * s,
            self._doc_win.body.width,
            max(0, self._doc_win.body.height - 26 * s),
        )
        self._term_text = self._term_win.body.inset(6 * s)
        clock_w = 8 * self._gw + 16 * s
        self._clock = Rect(
            w - clock_w - 4 * s, self._taskbar.y + s, clock_w, self._taskbar.height - s
        )
        self._doc_parts = self._visible(self._doc_view, windows[1:])
        self._term_parts = self._visible(self._term_text, windows[3:])
        self._video_area = windows[3].body if self.noisy_video else Rect(0, 0, 0, 0)
        self._video_parts = self._visible(self._video_area, []) if self.noisy_video else []

    def _window(self, title: str, outer: Rect) -> _Window:
        s = self._scale
        outer = outer.intersect(self._desktop)
        bar = Rect(outer.x + s, outer.y + s, max(0, outer.width - 2 * s), 22 * s)
        body = Rect(bar.x, bar.bottom, bar.width, max(0, outer.bottom - s - bar.bottom))
        return _Window(title, outer, bar, body)

    def _visible(self, rect: Rect, above: list[_Window]) -> list[Rect]:
        parts = [rect.intersect(self._desktop)]
        for occluder in [w.outer for w in above] + [self._taskbar]:
            parts = [q for p in parts for q in p.subtract(occluder)]
        return parts

    def _text(self, canvas: Pixels, x: int, y: int, text: str, color: Color, clip: Rect) -> None:
        codes = np.frombuffer(text.encode("ascii", "replace"), dtype=np.uint8).astype(np.intp)
        first = max(0, (clip.x - x) // self._gw)
        last = min(codes.size, (clip.right - x) // self._gw + 1)
        if last > first:
            codes = np.clip(codes - _FIRST_CHAR, 0, _LAST_CHAR - _FIRST_CHAR)
            strip = self._glyphs[codes[first:last]].transpose(1, 0, 2).reshape(self._gh, -1)
            _stamp(canvas, x + first * self._gw, y, strip, color, clip)

    def _render_static(self) -> None:
        s, rng = self._scale, random.Random(f"{self.seed}:desktop")
        top, bottom = _BACKGROUNDS[self.seed % len(_BACKGROUNDS)]
        ramp = np.linspace(0.0, 1.0, self.height)[:, None]
        rows = (np.array(top) + (np.array(bottom) - np.array(top)) * ramp).round().astype(np.uint8)
        base = np.empty((self.height, self.width, 3), dtype=np.uint8)
        base[:, 0] = rows
        _spread_first_column(base)
        for i, label in enumerate(["This PC", "Recordings", "Recycle Bin", "Audit.xlsx"]):
            icon = Rect(24 * s, (20 + 78 * i) * s, 40 * s, 40 * s)
            _fill(base, icon, (rng.randrange(90, 250), rng.randrange(90, 250), 80))
            _fill(base, icon.inset(8 * s), (245, 245, 235))
            lx = icon.x + icon.width // 2 - len(label) * self._gw // 2
            self._text(base, lx, icon.bottom + 6 * s, label, (255, 255, 255), self._desktop)
        contents = [self._draw_document, self._draw_files, self._draw_terminal, self._draw_video]
        for win, draw_content in zip(self._windows, contents, strict=False):  # in z-order
            self._draw_window(base, win, active=win is self._term_win)
            draw_content(base)
        self._draw_taskbar(base)
        self._base = base

    def _draw_window(self, canvas: Pixels, win: _Window, *, active: bool) -> None:
        s = self._scale
        _fill(canvas, win.outer, (70, 78, 92))
        _fill(canvas, win.title_bar, (38, 86, 168) if active else (104, 112, 128))
        self._text(
            canvas,
            win.title_bar.x + 8 * s,
            win.title_bar.y + 6 * s,
            win.title,
            (255, 255, 255),
            win.title_bar,
        )
        for k, color in enumerate([(226, 72, 72), (150, 158, 170), (150, 158, 170)]):
            button = Rect(
                win.title_bar.right - (k + 1) * 20 * s, win.title_bar.y + 5 * s, 14 * s, 12 * s
            )
            _fill(canvas, button.intersect(win.title_bar), color)
        _fill(canvas, win.body, (244, 245, 247))

    def _draw_document(self, canvas: Pixels) -> None:
        s, body, view = self._scale, self._doc_win.body, self._doc_view
        toolbar = Rect(body.x, body.y, body.width, 26 * s)
        _fill(canvas, toolbar, (228, 231, 236))
        self._text(
            canvas,
            toolbar.x + 8 * s,
            toolbar.y + 8 * s,
            "File  Edit  View  Insert  Format  Tools  Help",
            (40, 44, 52),
            toolbar,
        )
        rng = random.Random(f"{self.seed}:document")
        chars = max(8, (view.width - 24 * s) // self._gw)
        count = max(90, view.height // self._line_h + 1)
        heading, body_text = (28, 64, 140), (30, 30, 34)
        lines: list[tuple[str, Color]] = []
        for section in itertools.count(1):
            if len(lines) >= count:
                break
            lines.append((f"{section}. " + " ".join(rng.sample(_WORDS, 3)).title(), heading))
            for _ in range(rng.randrange(3, 8)):
                text = " ".join(rng.choice(_WORDS) for _ in range(chars // 4))
                lines.append((text[: chars - rng.randrange(chars // 3 + 1)], body_text))
            lines.append(("", body_text))
        lines = lines[:count]
        content = count * self._line_h
        pages = np.full((content + view.height, view.width, 3), 255, dtype=np.uint8)
        for i, (text, color) in enumerate(lines):
            self._text(pages, 12 * s, i * self._line_h + s, text, color, _bounds(pages))
        pages[content:] = pages[: view.height]
        self._doc_pages, self._doc_content_h = pages, content
        self._paste(canvas, pages, self._doc_view, self._doc_parts)

    def _draw_files(self, canvas: Pixels) -> None:
        s, body, rng = self._scale, self._files_win.body, random.Random(f"{self.seed}:files")
        side = Rect(body.x, body.y, body.width // 4, body.height)
        _fill(canvas, side, (226, 232, 242))
        for i, name in enumerate(["Home", "Desktop", "Recordings", "Exports", "Keys", "Trash"]):
            self._text(
                canvas, side.x + 10 * s, side.y + (10 + 20 * i) * s, name, (40, 50, 70), side
            )
        listing = Rect(side.right, body.y, body.width - side.width, body.height)
        self._text(
            canvas,
            listing.x + 30 * s,
            listing.y + 8 * s,
            "Name                      Size      Modified",
            (90, 96, 108),
            listing,
        )
        for i in range(max(0, (listing.height - 28 * s) // (20 * s))):
            row = Rect(listing.x, listing.y + (26 + 20 * i) * s, listing.width, 20 * s)
            _fill(canvas, row.intersect(listing), (255, 255, 255) if i % 2 else (236, 240, 246))
            kind = rng.randrange(3)
            _fill(
                canvas,
                Rect(row.x + 10 * s, row.y + 4 * s, 12 * s, 12 * s).intersect(listing),
                [(230, 180, 60), (70, 140, 220), (120, 180, 90)][kind],
            )
            name = f"session-{rng.randrange(10**6):06d}" + [".lsr", ".json", ".bundle"][kind]
            text = (
                f"{name:<26}{rng.randrange(1, 999):>4} MB  2024-0{rng.randrange(1, 10)}-1{i % 10}"
            )
            self._text(canvas, row.x + 30 * s, row.y + 5 * s, text, (30, 34, 40), listing)

    def _draw_terminal(self, canvas: Pixels) -> None:
        _fill(canvas, self._term_win.body, (18, 20, 26))
        self._paste(
            canvas, self._terminal(_TERMINAL_LINES_AT_START), self._term_text, self._term_parts
        )

    def _draw_video(self, canvas: Pixels) -> None:
        _fill(canvas, self._video_area, (0, 0, 0))

    def _draw_taskbar(self, canvas: Pixels) -> None:
        s, bar = self._scale, self._taskbar
        _fill(canvas, bar, (30, 34, 42))
        _fill(canvas, Rect(bar.x, bar.y, bar.width, s), (72, 80, 96))
        start = Rect(6 * s, bar.y + 6 * s, 64 * s, bar.height - 12 * s)
        _fill(canvas, start, (38, 86, 168))
        self._text(canvas, start.x + 14 * s, start.y + 9 * s, "Start", (255, 255, 255), start)
        room = self._clock.x - 80 * s - start.right
        width = min(180 * s, room // len(self._windows))
        for i, win in enumerate(self._windows if width >= 24 * s else []):
            button = Rect(start.right + 10 * s + i * width, start.y, width - 6 * s, start.height)
            _fill(canvas, button, (62, 70, 86) if win is self._term_win else (46, 52, 64))
            self._text(
                canvas, button.x + 8 * s, button.y + 9 * s, win.title, (230, 232, 236), button
            )
        for i in range(3):  # tray icons
            icon = Rect(self._clock.x - (24 + 22 * i) * s, bar.y + 13 * s, 14 * s, 14 * s)
            _fill(canvas, icon, [(120, 200, 120), (200, 200, 210), (230, 170, 60)][i])

    # -- dynamic parts ----------------------------------------------------------------------

    @staticmethod
    def _paste(out: Pixels, image: Pixels, at: Rect, parts: list[Rect]) -> None:
        for p in parts:
            out[p.y : p.bottom, p.x : p.right] = image[
                p.y - at.y : p.bottom - at.y, p.x - at.x : p.right - at.x
            ]

    def _doc_offset(self, t: int) -> int:
        cycles, phase = divmod(t, _SCROLL_PERIOD_US)
        step = _SCROLL_LINES * self._line_h
        progress = min(1.0, max(0.0, (phase - _SCROLL_START_US) / _SCROLL_DURATION_US))
        eased = progress * progress * (3.0 - 2.0 * progress)
        return (cycles * step + int(eased * step)) % self._doc_content_h

    def _terminal(self, lines: int) -> Pixels:
        """The terminal text area after ``lines`` lines of output, with a prompt below."""
        cached = self._terminal_cache.get(lines)
        if cached is not None:
            return cached
        area = self._term_text
        image = np.empty((area.height, area.width, 3), dtype=np.uint8)
        _fill(image, _bounds(image), (18, 20, 26))
        rows = max(1, area.height // self._line_h)
        shown = [self._terminal_line(i) for i in range(max(0, lines - rows + 1), lines)]
        shown.append(("ops@lucid-rec-01:~$ ", (110, 210, 120)))
        for row, (text, color) in enumerate(shown):
            self._text(image, 0, row * self._line_h, text, color, _bounds(image))
        cursor_x = len(shown[-1][0]) * self._gw
        _fill(
            image,
            Rect(cursor_x, (len(shown) - 1) * self._line_h, self._gw, self._gh),
            (200, 200, 200),
        )
        if len(self._terminal_cache) >= 8:
            del self._terminal_cache[next(iter(self._terminal_cache))]
        self._terminal_cache[lines] = image
        return image

    def _terminal_line(self, i: int) -> tuple[str, Color]:
        rng = random.Random(f"{self.seed}:terminal:{i}")
        if i % 7 == 0:
            command = rng.choice(
                [
                    "tail -f /var/log/lucid/recorder.log",
                    "lucid-sessions status",
                    "df -h /srv/recordings",
                    "journalctl -u lucid -n 20",
                ]
            )
            return "ops@lucid-rec-01:~$ " + command, (110, 210, 120)
        level = rng.choice(["INFO", "INFO", "INFO", "DEBUG", "WARN"])
        ms = (9 * 3600 + 41 * 60) * 1000 + i * 200 + rng.randrange(200)  # one line per 200 ms
        text = (
            f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}."
            f"{ms % 1000:03d} {level:<5} chunk={rng.randrange(10**5)} "
            f"session={rng.randrange(16**8):08x} {' '.join(rng.sample(_WORDS, 4))}"
        )
        return text, (236, 196, 90) if level == "WARN" else (200, 204, 212)

    def _clock_face(self, second: int) -> Pixels:
        cached = self._clock_cache.get(second)
        if cached is None:
            clock = self._clock
            cached = np.empty((clock.height, clock.width, 3), dtype=np.uint8)
            _fill(cached, _bounds(cached), (30, 34, 42))
            now = (9 * 3600 + 41 * 60 + self.seed * 7919 + second) % 86400
            text = f"{now // 3600:02d}:{now // 60 % 60:02d}:{now % 60:02d}"
            y = (clock.height - self._gh) // 2
            self._text(cached, 8 * self._scale, y, text, (236, 238, 242), _bounds(cached))
            if len(self._clock_cache) >= 4:
                del self._clock_cache[next(iter(self._clock_cache))]
            self._clock_cache[second] = cached
        return cached

    def _cursor_at(self, t: int) -> tuple[int, int]:
        """Top-left of the cursor: a smooth Lissajous path that stays above the taskbar."""
        seconds, phase = t / 1e6, (self.seed % 97) * 0.37
        x = self.width * (0.5 + 0.4 * math.sin(2 * math.pi * seconds / 9.0 + phase))
        y = self._desktop.height * (0.5 + 0.4 * math.sin(2 * math.pi * seconds / 6.0 + 2 * phase))
        return int(x), min(int(y), self._desktop.height - self._cursor_fill.shape[0])

    def _video(self, t: int) -> Pixels:
        """Moving colour blobs plus per-frame noise, so every tile changes in every frame."""
        area, seconds = self._video_area, t / 1e6
        spin = np.random.default_rng([self.seed, 1])
        speed, phase = spin.uniform(0.3, 1.4, (2, 6)), spin.uniform(0, 2 * np.pi, (2, 6))
        colors = spin.uniform(40, 160, (6, 1, 3)).astype(np.float32)
        cx = area.width * (0.5 + 0.45 * np.sin(speed[0] * seconds + phase[0]))
        cy = area.height * (0.5 + 0.45 * np.sin(speed[1] * seconds + phase[1]))
        gx = np.exp(-(((np.arange(area.width) - cx[:, None]) / (0.18 * area.width)) ** 2))
        gy = np.exp(-(((np.arange(area.height) - cy[:, None]) / (0.22 * area.height)) ** 2))
        # sum over blobs k of gy[k, y] * gx[k, x] * colors[k, c], as one matrix product
        rows = gy.T.astype(np.float32)
        columns = (gx.astype(np.float32)[:, :, None] * colors).reshape(len(colors), -1)
        blobs = rows @ columns
        np.minimum(blobs, 200.0, out=blobs)
        image: Pixels = blobs.astype(np.uint8).reshape(area.height, area.width, 3)
        noise = np.random.default_rng([self.seed, 2, t]).bytes(image.size)
        image += np.frombuffer(noise, dtype=np.uint8).reshape(image.shape) & np.uint8(31)
        return image
