"""Use cases behind the CLI: import, describe, verify a target, the demo.

Each function takes an opened :class:`DataDir` (or paths) and returns data or lines of
text; the CLI only prints them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from lucid_sessions.archive.anchor_check import ChainTarget, check_anchor
from lucid_sessions.archive.bundle import Bundle, export_to_file
from lucid_sessions.archive.keys import load_data_key
from lucid_sessions.archive.reader import (
    StoredEvidence,
    load_manifest,
    read_data_key_file,
)
from lucid_sessions.archive.verify import Failure, Report, verify_evidence
from lucid_sessions.archive.writer import SessionWriter
from lucid_sessions.crypto import DataKey, load_public_key
from lucid_sessions.errors import InvalidConfigError, LucidError, NotFoundError
from lucid_sessions.manifest import Manifest
from lucid_sessions.recording.codec import Pixels
from lucid_sessions.storage.datadir import DataDir, default_data_dir, open_data_dir

__all__ = [
    "describe_session",
    "format_bytes",
    "import_frames",
    "parse_resolution",
    "run_demo",
    "verify_target",
]


def format_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def parse_resolution(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` within 320x240..7680x4320."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise InvalidConfigError(f"resolution must look like 1920x1080, not {text!r}") from None
    if not (320 <= width <= 7680 and 240 <= height <= 4320):
        raise InvalidConfigError(f"resolution {text} is outside 320x240..7680x4320")
    return width, height


async def import_frames(
    datadir: DataDir,
    frames: Iterator[tuple[int, Pixels]],
    *,
    name: str,
    quality: str = "medium",
    fps: float | None = None,
    hash_algorithm: str = "blake3",
    progress: Callable[[int], None] | None = None,
) -> Manifest:
    """Record ``frames`` into a new finished session. On any failure the partial
    session is removed, so an import either completes or leaves nothing behind."""
    writer = await SessionWriter.create(
        datadir,
        name=name,
        quality=quality,
        fps=fps,
        hash_algorithm=hash_algorithm,
        config={"source": "import"},
    )
    try:
        count = 0
        for timestamp_us, pixels in frames:
            await writer.add_frame(timestamp_us, pixels)
            count += 1
            if progress is not None:
                progress(1)
        if count == 0:
            raise InvalidConfigError("the input holds no frames")
        return await writer.finish()
    except BaseException:
        await writer.discard()
        raise


async def describe_session(datadir: DataDir, session_id: str) -> list[str]:
    record = await datadir.store.get_session(session_id)
    chunks = await datadir.store.list_chunks(session_id)
    duration = (chunks[-1].end_us - chunks[0].start_us) / 1e6 if chunks else 0.0
    frames = sum(c.frame_count for c in chunks)
    unchanged = sum(c.unchanged_count for c in chunks)
    ratio = record.raw_bytes / record.stored_bytes if record.stored_bytes else 0.0
    lines = [
        f"session      {record.session_id}",
        f"name         {record.name}",
        f"status       {record.status}"
        + (f" ({record.status_reason})" if record.status_reason else ""),
        f"created      {record.created_at}",
        f"started      {record.started_at or '-'}",
        f"ended        {record.ended_at or '-'}",
        f"duration     {duration:.3f} s",
        f"frames       {frames} ({unchanged} unchanged)",
        f"chunks       {len(chunks)}",
        f"raw bytes    {format_bytes(record.raw_bytes)}",
        f"stored       {format_bytes(record.stored_bytes)} (ratio {ratio:.1f}:1)",
        f"hash         {record.hash_algorithm}",
        f"root         {record.root or '-'}",
        f"data key     {record.key_id or '-'}",
        f"anchor       {_anchor_summary(record.config.get('anchor'))}",
    ]
    if record.project or record.environment or record.tags:
        lines.append(
            f"labels       project={record.project or '-'} "
            f"environment={record.environment or '-'} tags={','.join(record.tags) or '-'}"
        )
    for c in chunks:
        lines.append(
            f"  chunk {c.sequence:>6}  {c.start_us / 1e6:>10.3f}-{c.end_us / 1e6:<10.3f} s "
            f"{c.frame_count:>5} frames  {format_bytes(c.stored_size):>10}  "
            f"zstd {c.level}  {c.leaf_hash[:16]}"
        )
    return lines


def _anchor_summary(state: object) -> str:
    if not isinstance(state, Mapping):
        return "-"
    chain = state.get("chain")
    if state.get("state") == "confirmed":
        return (
            f"confirmed on {chain} at {state.get('location')} in tx "
            f"{state.get('transaction')}, block {state.get('block')}"
        )
    if state.get("state") == "failed":
        attempts, error = state.get("attempts"), state.get("last_error")
        return f"failed on {chain} after {attempts} attempts: {error}"
    tail = f"; last error: {state.get('last_error')}" if state.get("last_error") else ""
    return f"{state.get('state')} on {chain} ({state.get('attempts') or 0} attempts{tail})"


async def verify_target(
    target: str,
    *,
    data_dir: Path | None,
    key_file: Path | None = None,
    trusted_key_file: Path | None = None,
    progress: Callable[[int], None] | None = None,
    chain: ChainTarget | None = None,
) -> Report:
    """Verify a bundle (``target`` is an existing file) or a session in the data dir.

    With ``chain``, also read the root anchored for the session there and compare it with
    the signed root (a difference, or no root, is an ``anchor`` failure); without it the
    anchor is reported as not checked."""
    trusted = load_public_key(trusted_key_file.read_bytes()) if trusted_key_file else None
    key: DataKey | None = None
    if key_file is not None:
        key_session, key = read_data_key_file(key_file)
    path = Path(target)
    if path.is_file():
        with Bundle(path) as bundle:
            if key is not None and key_session != bundle.session_id:
                raise InvalidConfigError(
                    f"the key file is for session {key_session}, the bundle holds "
                    f"{bundle.session_id}"
                )
            report = verify_evidence(bundle, trusted_key=trusted, data_key=key, progress=progress)
            return _check_chain(report, chain, trusted or bundle.public_key)
    if "/" in target or target.endswith(".tar"):
        raise NotFoundError(f"bundle {target} does not exist")
    datadir = await open_data_dir(data_dir or default_data_dir())
    try:
        loaded = await load_manifest(datadir, target)
        state = (await datadir.store.get_session(target)).config.get("anchor")
        source = StoredEvidence(datadir, loaded, state if isinstance(state, Mapping) else None)
        if trusted is None:
            trusted = datadir.existing_cluster_public_key()
        if key is None:
            try:
                key = await load_data_key(datadir, loaded.manifest.key_id)
            except LucidError as exc:
                report = verify_evidence(source, trusted_key=trusted, progress=progress)
                report.failures.insert(0, Failure("key", exc.message))
                return _check_chain(report, chain, trusted or loaded.public_key)
        report = verify_evidence(source, trusted_key=trusted, data_key=key, progress=progress)
        return _check_chain(report, chain, trusted or loaded.public_key)
    finally:
        await datadir.close()


def _check_chain(report: Report, chain: ChainTarget | None, public_key: bytes) -> Report:
    """Add the on-chain check to ``report`` (see :func:`check_anchor`)."""
    if chain is None or report.session_id is None or report.root is None:
        return report
    finding = check_anchor(
        chain,
        session_id=report.session_id,
        root=report.root,
        receipt=report.anchor_receipt,
        public_key=public_key,
    )
    if finding.ok:
        report.anchor_line = finding.line
    else:
        report.anchor_line = None
        report.failures.append(Failure("anchor", finding.line))
    return report


async def run_demo(
    datadir: DataDir,
    *,
    seconds: int,
    fps: int,
    width: int,
    height: int,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Record a synthetic desktop, verify it, export it; lines describing the result."""
    from lucid_sessions.recording.synthetic import DesktopScene

    scene = DesktopScene(width=width, height=height, fps=fps)
    manifest = await import_frames(
        datadir,
        scene.frames(seconds * fps),
        name="demo: synthetic desktop",
        fps=fps,
        progress=progress,
    )
    loaded = await load_manifest(datadir, manifest.session_id)
    key = await load_data_key(datadir, manifest.key_id)
    report = verify_evidence(
        StoredEvidence(datadir, loaded),
        trusted_key=datadir.existing_cluster_public_key(),
        data_key=key,
    )
    bundle = datadir.path / f"{manifest.session_id}.tar"
    await export_to_file(datadir, manifest.session_id, bundle)
    return [
        f"session {manifest.session_id}: {manifest.tree_size} chunks, root {manifest.root}",
        f"verify: {'OK' if report.ok else 'FAILED'} ({report.frames_decoded} frames decoded)",
        f"bundle: {bundle}",
        f"try: lucid-sessions verify {bundle}",
    ]
