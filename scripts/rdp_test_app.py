"""Animated X client for the RDP test server: a full-screen Tk window that keeps changing.

It draws a static mosaic of coloured tiles (so a misplaced or scaled picture is easy to
tell from the real one), a big frame counter, a clock and several coloured shapes that
move every frame.  ``--fps`` redraws per second (default 10).  With ``--ready-fd N`` it
writes ``ready`` to file descriptor N once the first frame is on screen and closes it.

Run it with a Python that has tkinter, with ``DISPLAY`` set.
"""

from __future__ import annotations

import argparse
import os
import random
import time
import tkinter as tk

PALETTE = [
    "#1f3b73",
    "#2e7d32",
    "#c62828",
    "#f9a825",
    "#6a1b9a",
    "#00838f",
    "#ef6c00",
    "#37474f",
    "#ad1457",
    "#558b2f",
    "#4527a0",
    "#00695c",
]
TILE = 64


class App:
    """The window and its animation state."""

    def __init__(self, root: tk.Tk, fps: float, ready_fd: int | None) -> None:
        self.root = root
        self.fps = fps
        self.ready_fd = ready_fd
        self.width = root.winfo_screenwidth()
        self.height = root.winfo_screenheight()
        root.geometry(f"{self.width}x{self.height}+0+0")
        root.overrideredirect(True)
        self.canvas = tk.Canvas(
            root, width=self.width, height=self.height, highlightthickness=0, bg="#101010"
        )
        self.canvas.pack()
        self.frame = 0
        self.start = time.monotonic()
        self._draw_mosaic()
        self._make_overlays()

    def _draw_mosaic(self) -> None:
        rng = random.Random(20240611)
        for y in range(0, self.height, TILE):
            for x in range(0, self.width, TILE):
                self.canvas.create_rectangle(
                    x, y, x + TILE, y + TILE, fill=rng.choice(PALETTE), outline=""
                )

    def _make_overlays(self) -> None:
        w, h = self.width, self.height
        size = max(24, h // 6)
        box_w, box_h = size * 4, int(size * 1.6)
        self.canvas.create_rectangle(
            w // 2 - box_w // 2,
            h // 2 - box_h // 2,
            w // 2 + box_w // 2,
            h // 2 + box_h // 2,
            fill="#000000",
            outline="#ffffff",
            width=3,
        )
        self.counter = self.canvas.create_text(
            w // 2, h // 2, text="0", fill="#ffffff", font=("DejaVu Sans", -size, "bold")
        )
        self.canvas.create_rectangle(8, 8, 420, 48, fill="#000000", outline="")
        self.clock = self.canvas.create_text(
            16, 16, anchor="nw", text="", fill="#ffffff", font=("DejaVu Sans Mono", -24, "bold")
        )
        self.shapes: list[tuple[int, int, int, int]] = []
        specs = [
            ("rect", "#ff1744", 0, h // 8, 9, 0),
            ("oval", "#00e676", w // 3, h // 4, 7, 5),
            ("rect", "#2979ff", w // 2, 3 * h // 4, -11, 3),
            ("oval", "#ffea00", 2 * w // 3, h // 6, -6, -7),
            ("rect", "#ffffff", w // 5, 2 * h // 3, 5, -4),
        ]
        for kind, colour, x, y, dx, dy in specs:
            side = max(30, h // 9)
            maker = self.canvas.create_rectangle if kind == "rect" else self.canvas.create_oval
            item = maker(x, y, x + side, y + side, fill=colour, outline="#000000", width=2)
            self.shapes.append((item, dx * max(1, w // 640), dy * max(1, h // 480), side))

    def tick(self) -> None:
        self.frame += 1
        self.canvas.itemconfigure(self.counter, text=str(self.frame))
        elapsed = time.monotonic() - self.start
        self.canvas.itemconfigure(self.clock, text=f"t={elapsed:8.2f}s  frame {self.frame}")
        moved = []
        for item, dx, dy, side in self.shapes:
            x0, y0, *_ = self.canvas.coords(item)
            if not 0 <= x0 + dx <= self.width - side:
                dx = -dx
            if not 0 <= y0 + dy <= self.height - side:
                dy = -dy
            self.canvas.move(item, dx, dy)
            moved.append((item, dx, dy, side))
        self.shapes = moved
        if self.ready_fd is not None:
            self.root.update_idletasks()
            os.write(self.ready_fd, b"ready\n")
            os.close(self.ready_fd)
            self.ready_fd = None
        self.root.after(max(1, int(1000 / self.fps)), self.tick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fps", type=float, default=10.0, help="redraws per second")
    parser.add_argument("--ready-fd", type=int, default=None, help="fd to signal readiness on")
    args = parser.parse_args()
    root = tk.Tk()
    app = App(root, args.fps, args.ready_fd)
    root.after(0, app.tick)
    root.mainloop()


if __name__ == "__main__":
    main()
