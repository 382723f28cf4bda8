"""``lucid-sessions render``: a session (or a time range of it) as an H.264 MP4 video.

The file is written next to its destination under a temporary name and renamed when
complete, so an interrupted render leaves no half-written video behind; an existing file
is replaced only with ``--force``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import click

from lucid_sessions.cli import (
    _progress,
    _with_datadir,
    data_dir_option,
    main,
    output_option,
    range_options,
    run_async,
)
from lucid_sessions.storage.datadir import DataDir

__all__ = ["render"]


@main.command("render")
@click.argument("session")
@output_option("MP4 file to write.")
@range_options(
    "Start, seconds from the session's start.",
    "End, seconds from the session's start (default: the end).",
)
@click.option(
    "--speed",
    type=click.FloatRange(0.01, 1000),
    default=1.0,
    show_default=True,
    help="Playback speed: 2 plays twice as fast.",
)
@click.option(
    "--crf",
    type=click.IntRange(0, 51),
    default=23,
    show_default=True,
    help="x264 quality: lower is better and larger.",
)
@click.option(
    "--preset",
    type=click.Choice(["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"]),
    default="ultrafast",
    show_default=True,
    help="x264 speed preset: slower ones give smaller files.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="x264 threads (0: auto).",
)
@click.option(
    "--fragmented",
    is_flag=True,
    help="Write a fragmented MP4 (playable while incomplete; what the API streams).",
)
@click.option(
    "--faststart", is_flag=True, help="Put the index first for web playback (one more pass)."
)
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@data_dir_option
@run_async
async def render(
    session: str,
    output: Path,
    from_s: float | None,
    to_s: float | None,
    speed: float,
    crf: int,
    preset: str,
    threads: int,
    fragmented: bool,
    faststart: bool,
    force: bool,
    data_dir: Path | None,
) -> None:
    """Render SESSION as H.264 video in an MP4 file.

    Frames play at the times they were recorded (divided by --speed); the last frame is
    shown for one frame interval. With --from/--to only that range is rendered, starting
    with the frame on screen at --from.
    """
    from lucid_sessions.archive.render import RenderOptions, RenderPlan, render_session

    if from_s is not None and to_s is not None and to_s <= from_s:
        raise click.BadParameter("--to must be after --from", param_hint="--to")
    if fragmented and faststart:
        raise click.UsageError("--faststart applies to a plain MP4, not with --fragmented")
    if output.exists() and not force:
        raise click.UsageError(f"{output} already exists (use --force to replace it)")
    options = RenderOptions(
        from_s=from_s,
        to_s=to_s,
        speed=speed,
        crf=crf,
        preset=preset,
        threads=threads,
        fragmented=fragmented,
        faststart=faststart,
    )

    async def body(datadir: DataDir) -> None:
        directory = output.parent if str(output.parent) else Path(".")
        fd, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".part", dir=directory)
        os.close(fd)
        partial = Path(name)
        try:
            with contextlib.ExitStack() as stack:
                advance = [lambda n: None]

                def sized(plan: RenderPlan) -> None:
                    bar = _progress("rendering", max(1, plan.duration_us // 1000))
                    advance[0] = stack.enter_context(bar)

                result = await render_session(
                    datadir,
                    session,
                    partial,
                    options,
                    progress=lambda n: advance[0](n),
                    on_plan=sized,
                )
            os.chmod(partial, 0o644 & ~_umask())
            os.replace(partial, output)
        finally:
            partial.unlink(missing_ok=True)
        size = output.stat().st_size
        click.echo(
            f"wrote {output} ({result.frames} frames, {result.width}x{result.height}, "
            f"{result.duration_s:.3f} s, {size / 1e6:.1f} MB)",
            err=True,
        )

    await _with_datadir(data_dir, body)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
