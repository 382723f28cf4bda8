"""Chunk processing benchmark: a script that prints figures, never a pass/fail test.

What it measures
----------------
corpus
    Deterministic desktop-like 1920x1080 frames from
    :class:`~lucid_sessions.recording.synthetic.DesktopScene`, once plain and once with the
    noisy video region, cut into chunks by :class:`~lucid_sessions.recording.chunker.Chunker`.
    Frames and chunks are built before any clock starts.
pipeline pass
    :meth:`ChunkProcessor.process <lucid_sessions.archive.processor.ChunkProcessor.process>`
    (zstd, XChaCha20-Poly1305, BLAKE3 leaf hash) over every chunk on a thread pool.
zstd-only pass
    ``zstd_compress(chunk, level)`` over the same chunks, same level, same pool. The two
    passes alternate ``--repeats`` times; the ratio uses the best wall time of each and,
    as a check on noise, the median of the per-round ratios.
restic
    When ``restic`` is on PATH: the same corpus written to files, backed up into a fresh
    encrypted repository, against our own pipeline over the same files (read, tile-diff
    codec, processing, atomic fsync'd write through ``ChunkStore``).

Run ``python bench/pipeline.py --help`` for the options; ``bench/README.md`` explains
each printed figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

import lucid_sessions
from benchlib import Report, cpu_model, load_average, version
from lucid_sessions.archive.processor import ChunkProcessor
from lucid_sessions.chunkfile import HEADER_SIZE, QUALITY_LEVELS, open_chunk, zstd_compress
from lucid_sessions.crypto import NONCE_SIZE, DataKey, XChaCha20Poly1305
from lucid_sessions.merkle import get_hasher
from lucid_sessions.recording.chunker import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DURATION_US,
    Chunker,
    RawChunk,
)
from lucid_sessions.recording.codec import decode_frames
from lucid_sessions.recording.synthetic import DesktopScene
from lucid_sessions.storage.chunk_store import ChunkStore

MB = 1_000_000  # figures are in decimal megabytes
TARGET_ZSTD_RATIO = 0.85
TARGET_P99_MS = 30.0
TARGET_RESTIC_RATIO = 3.0
GIL_PROBE_BYTES = 8 * 2**20
STAGES = (
    "zstd",
    "XChaCha20-Poly1305 (cryptography)",
    "header + ciphertext join (copy)",
    "leaf hash (0x00 + stored copy, BLAKE3)",
)
# A throwaway password for a throwaway repository in a temporary folder.
RESTIC_BENCH_PASSWORD = "lucid-sessions-benchmark"


@dataclass
class Corpus:
    name: str
    scene: DesktopScene
    chunks: list[RawChunk]
    timestamps: list[int]
    build_seconds: float
    raw_dir: Path | None = None
    """One file per chunk: that chunk's frames as raw RGB, width*height*3 bytes each."""
    plain_dir: Path | None = None
    """One file per chunk: that chunk's plaintext (encoded frames)."""

    @property
    def frames(self) -> int:
        return len(self.timestamps)

    @property
    def raw_bytes(self) -> int:
        return sum(c.raw_bytes for c in self.chunks)

    @property
    def plain_bytes(self) -> int:
        return sum(len(c.data) for c in self.chunks)

    def first_frame(self, chunk_index: int) -> int:
        return sum(c.frame_count for c in self.chunks[:chunk_index])


@dataclass
class PassStats:
    """One kind of pass, repeated: wall time per round and every chunk's latency."""

    walls: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    out_bytes: int = 0

    @property
    def best(self) -> float:
        return min(self.walls)


# -- machine facts -------------------------------------------------------------------------


def machine_facts(restic: str | None) -> dict[str, Any]:
    import zstandard
    from cryptography.hazmat.backends.openssl.backend import backend

    facts: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0] + f" ({platform.python_implementation()})",
        "lucid_sessions": lucid_sessions.__version__,
        "zstandard": f"{version('zstandard')} (libzstd {zstandard.ZSTD_VERSION[0]}."
        f"{zstandard.ZSTD_VERSION[1]}.{zstandard.ZSTD_VERSION[2]}, "
        f"backend {zstandard.backend})",
        "cryptography": f"{version('cryptography')} ({backend.openssl_version_text()})",
        "blake3": version("blake3"),
        "numpy": version("numpy"),
        "restic": _restic_version(restic) if restic else "not installed",
        "load_average": load_average(),
    }
    return facts


# -- corpus --------------------------------------------------------------------------------


def build_corpus(
    name: str, *, noisy: bool, args: argparse.Namespace, files_root: Path | None
) -> Corpus:
    """Frames, chunks and (for restic) files; nothing here is timed as a figure."""
    scene = DesktopScene(width=1920, height=1080, fps=args.fps, seed=args.seed, noisy_video=noisy)
    chunker = Chunker(
        max_duration_us=round(args.chunk_seconds * 1e6), max_bytes=round(args.chunk_mib * 2**20)
    )
    chunks: list[RawChunk] = []
    timestamps: list[int] = []
    raw_dir = plain_dir = None
    if files_root is not None:
        raw_dir, plain_dir = files_root / f"{name}-raw", files_root / f"{name}-plain"
        raw_dir.mkdir()
        plain_dir.mkdir()
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        raw_file = None
        for timestamp, pixels in scene.frames(round(args.seconds * args.fps)):
            closed = chunker.add(timestamp, pixels)
            if closed is not None:
                chunks.append(closed)
            if raw_dir is not None and (raw_file is None or closed is not None):
                stack.close()
                path = raw_dir / f"chunk-{chunker.next_sequence:06d}.rgb"
                raw_file = stack.enter_context(path.open("wb"))
            if raw_file is not None:
                raw_file.write(pixels.data)
            timestamps.append(timestamp)
        last = chunker.flush()
        if last is not None:
            chunks.append(last)
    if plain_dir is not None:
        for chunk in chunks:
            (plain_dir / f"chunk-{chunk.sequence:06d}.lsfc").write_bytes(chunk.data)
    return Corpus(
        name, scene, chunks, timestamps, time.perf_counter() - started, raw_dir, plain_dir
    )


# -- the two timed passes ------------------------------------------------------------------


def _pipeline_task(
    processor: ChunkProcessor, raw: RawChunk, session_id: str, key: DataKey, level: int
) -> tuple[int, float]:
    started = time.perf_counter()
    done = processor.process(raw, session_id=session_id, data_key=key, level=level)
    return len(done.stored), time.perf_counter() - started


def _zstd_task(raw: RawChunk, level: int) -> tuple[int, float]:
    started = time.perf_counter()
    out = zstd_compress(raw.data, level)
    return len(out), time.perf_counter() - started


def _run_pass(
    pool: ThreadPoolExecutor,
    chunks: list[RawChunk],
    task: Callable[[RawChunk], tuple[int, float]],
    stats: PassStats,
) -> None:
    started = time.perf_counter()
    futures = [pool.submit(task, raw) for raw in chunks]
    results = [f.result() for f in futures]
    stats.walls.append(time.perf_counter() - started)
    stats.latencies.extend(seconds for _, seconds in results)
    stats.out_bytes = sum(size for size, _ in results)


def measure_passes(
    corpus: Corpus, pool: ThreadPoolExecutor, *, workers: int, level: int, repeats: int
) -> tuple[PassStats, PassStats]:
    processor = ChunkProcessor(get_hasher("blake3"))
    key = DataKey.generate()
    session = f"bench-{corpus.name}"

    def pipeline(raw: RawChunk) -> tuple[int, float]:
        return _pipeline_task(processor, raw, session, key, level)

    def zstd_only(raw: RawChunk) -> tuple[int, float]:
        return _zstd_task(raw, level)

    warm = corpus.chunks[: 2 * workers]
    _run_pass(pool, warm, pipeline, PassStats())  # threads, zstd contexts, page faults
    _run_pass(pool, warm, zstd_only, PassStats())
    pipe, zstd = PassStats(), PassStats()
    for round_ in range(repeats):  # alternate the order so drift hits both alike
        order = [(zstd_only, zstd), (pipeline, pipe)]
        for task, stats in order if round_ % 2 == 0 else reversed(order):
            _run_pass(pool, corpus.chunks, task, stats)
    return pipe, zstd


# -- correctness, outside the clock --------------------------------------------------------


def check_round_trip(corpus: Corpus, level: int) -> list[str]:
    """Problems found (empty when all holds): seal/open, leaf hash, decoded pixels."""
    import zstandard

    problems: list[str] = []
    hasher = get_hasher("blake3")
    processor = ChunkProcessor(hasher)
    key = DataKey.generate()
    session = f"bench-check-{corpus.name}"
    for index in sorted({0, len(corpus.chunks) - 1}):
        raw = corpus.chunks[index]
        done = processor.process(raw, session_id=session, data_key=key, level=level)
        plain = open_chunk(done.stored, session_id=session, sequence=raw.sequence, key=key.key)
        if plain != raw.data:
            problems.append(f"chunk {raw.sequence}: open_chunk does not return the plaintext")
        if hasher.leaf_hash(done.stored) != done.leaf_hash:
            problems.append(f"chunk {raw.sequence}: leaf hash is not that of the stored bytes")
        compressed = zstd_compress(raw.data, level)
        if zstandard.ZstdDecompressor().decompress(compressed) != raw.data:
            problems.append(f"chunk {raw.sequence}: zstd-only output does not round-trip")
        frames = list(decode_frames(plain))
        if len(frames) != raw.frame_count:
            problems.append(f"chunk {raw.sequence}: {len(frames)} frames, not {raw.frame_count}")
        first = corpus.first_frame(index)
        for offset in sorted({0, len(frames) - 1}):
            if not np.array_equal(frames[offset].pixels, corpus.scene.frame(first + offset)):
                problems.append(f"chunk {raw.sequence}: frame {offset} differs from its input")
    return problems


# -- where the time goes, outside the clock of the passes ----------------------------------


def _thread_share(call: Callable[[], object], *, calls: int = 5) -> float:
    """How much a 0.5 ms sleeper thread ran during ``call``, against its idle rate.

    Near 0: the call holds the GIL; near 1: it lets other Python threads run.
    """
    stop = threading.Event()
    ticks = [0]

    def ticker() -> None:
        while not stop.is_set():
            time.sleep(0.0005)
            ticks[0] += 1

    thread = threading.Thread(target=ticker, daemon=True)
    thread.start()
    time.sleep(0.02)
    begin, started = ticks[0], time.perf_counter()
    time.sleep(0.05)
    idle_rate = (ticks[0] - begin) / (time.perf_counter() - started)
    begin, started = ticks[0], time.perf_counter()
    for _ in range(calls):
        call()
    busy_rate = (ticks[0] - begin) / (time.perf_counter() - started)
    stop.set()
    thread.join()
    return busy_rate / idle_rate if idle_rate else 0.0


def stage_breakdown(corpus: Corpus, level: int) -> dict[str, dict[str, float]]:
    """Single-thread seconds of each step of processing, summed over every chunk.

    The steps mirror ``seal_chunk`` and ``Hasher.leaf_hash``: zstd, the AEAD, joining
    header and ciphertext, then the leaf hash (which prefixes 0x00 by concatenation).
    """
    key = DataKey.generate()
    aead, hasher = XChaCha20Poly1305(key.key), get_hasher("blake3")
    header = bytes(HEADER_SIZE)
    aad = header + b"\x00\x10" + b"s" * 16
    totals = dict.fromkeys(STAGES, 0.0)
    for raw in corpus.chunks:
        t0 = time.perf_counter()
        compressed = zstd_compress(raw.data, level)
        t1 = time.perf_counter()
        sealed = aead.encrypt(os.urandom(NONCE_SIZE), compressed, aad)
        t2 = time.perf_counter()
        stored = header + sealed
        t3 = time.perf_counter()
        hasher.leaf_hash(stored)
        t4 = time.perf_counter()
        for stage, seconds in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            totals[stage] += seconds
    big = max(corpus.chunks, key=lambda c: len(c.data))
    blob = os.urandom(GIL_PROBE_BYTES)  # same size for every step, so long calls
    calls: dict[str, Callable[[], object]] = {
        STAGES[0]: lambda: zstd_compress(big.data, level),
        STAGES[1]: lambda: aead.encrypt(os.urandom(NONCE_SIZE), blob, aad),
        STAGES[2]: lambda: header + blob,
        STAGES[3]: lambda: hasher.leaf_hash(blob),
    }
    return {
        stage: {"seconds": totals[stage], "thread_share": _thread_share(calls[stage])}
        for stage in STAGES
    }


def report_breakdown(report: Report, stages: dict[str, dict[str, float]]) -> None:
    total = sum(s["seconds"] for s in stages.values())
    report.line(
        "  where the time goes (1 thread, all chunks; GIL probed with the largest chunk for "
        f"zstd, {GIL_PROBE_BYTES // 2**20} MiB for the rest)"
    )
    for stage, figures in stages.items():
        share = figures["thread_share"]
        gil = "GIL released" if share >= 0.3 else "holds the GIL"
        report.line(
            f"    {stage:39s} {figures['seconds'] * 1e3:7.1f} ms {figures['seconds'] / total:6.1%}"
            f"  other threads ran {share:4.0%}: {gil}"
        )


# -- restic and our pipeline over the same files -------------------------------------------


def _restic_version(restic: str) -> str:
    out = subprocess.run([restic, "version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or out.stderr.strip()


@dataclass
class BackupRun:
    seconds: float
    input_bytes: int
    detail: dict[str, Any]


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())


def restic_backup(restic: str, source: Path, repo: Path) -> BackupRun:
    """``restic init`` (untimed) then a timed ``restic backup`` of ``source``."""
    env = {
        **os.environ,
        "RESTIC_REPOSITORY": str(repo),
        "RESTIC_PASSWORD": RESTIC_BENCH_PASSWORD,
    }
    subprocess.run(
        [restic, "init", "--no-cache"], env=env, check=True, capture_output=True, text=True
    )
    config = subprocess.run(
        [restic, "cat", "config", "--no-cache", "--json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    started = time.perf_counter()
    done = subprocess.run(
        [restic, "backup", "--no-cache", "--json", "--host", "bench", "."],
        cwd=source,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    summary: dict[str, Any] = {}
    for line in done.stdout.splitlines():
        with contextlib.suppress(ValueError):
            message = json.loads(line)
            if isinstance(message, dict) and message.get("message_type") == "summary":
                summary = message
    version = json.loads(config.stdout).get("version")
    detail = {
        "repository_version": version,
        "bytes_processed": summary.get("total_bytes_processed"),
        "data_added": summary.get("data_added"),
        "restic_reported_seconds": summary.get("total_duration"),
        "stored_bytes": sum(p.stat().st_size for p in repo.rglob("*") if p.is_file()),
    }
    return BackupRun(seconds, sum(p.stat().st_size for p in _files(source)), detail)


def _store_task(
    processor: ChunkProcessor,
    store: ChunkStore,
    raw: RawChunk,
    session_id: str,
    key: DataKey,
    level: int,
) -> int:
    done = processor.process(raw, session_id=session_id, data_key=key, level=level)
    store.put(session_id, raw.sequence, done.stored)
    return len(done.stored)


def _read_frames(path: Path, width: int, height: int) -> Iterator[np.ndarray]:
    """Each frame of a raw file as a new array (the Chunker may keep the last one)."""
    with path.open("rb", buffering=0) as file:
        while True:
            pixels = np.empty((height, width, 3), dtype=np.uint8)
            got = file.readinto(pixels.data.cast("B"))
            if not got:
                return
            if got != pixels.nbytes:
                raise ValueError(f"{path} ends inside a frame")
            yield pixels


def ours_from_raw_files(
    corpus: Corpus,
    pool: ThreadPoolExecutor,
    store_root: Path,
    *,
    level: int,
    args: argparse.Namespace,
) -> BackupRun:
    """Read raw frame files, tile-diff them (Chunker), process, write atomically."""
    assert corpus.raw_dir is not None
    processor, key, session = ChunkProcessor(get_hasher("blake3")), DataKey.generate(), "e2e"
    store = ChunkStore(store_root)
    width, height = corpus.scene.width, corpus.scene.height
    chunker = Chunker(
        max_duration_us=round(args.chunk_seconds * 1e6), max_bytes=round(args.chunk_mib * 2**20)
    )
    files = _files(corpus.raw_dir)
    started = time.perf_counter()
    futures = []
    timestamps = iter(corpus.timestamps)
    for path in files:
        for pixels in _read_frames(path, width, height):
            closed = chunker.add(next(timestamps), pixels)
            if closed is not None:
                futures.append(
                    pool.submit(_store_task, processor, store, closed, session, key, level)
                )
    last = chunker.flush()
    if last is not None:
        futures.append(pool.submit(_store_task, processor, store, last, session, key, level))
    stored = sum(f.result() for f in futures)
    seconds = time.perf_counter() - started
    sequences = store.sequences(session)
    check = open_chunk(store.get(session, 0), session_id=session, sequence=0, key=key.key)
    detail = {
        "chunks": len(sequences),
        "stored_bytes": stored,
        "same_chunks_as_corpus": len(sequences) == len(corpus.chunks)
        and check == corpus.chunks[0].data,
    }
    return BackupRun(seconds, sum(p.stat().st_size for p in files), detail)


def ours_from_plain_files(
    corpus: Corpus, pool: ThreadPoolExecutor, store_root: Path, *, level: int
) -> BackupRun:
    """Read chunk plaintext files, process, write atomically (no codec work)."""
    assert corpus.plain_dir is not None
    processor, key, session = ChunkProcessor(get_hasher("blake3")), DataKey.generate(), "plain"
    store = ChunkStore(store_root)
    files = _files(corpus.plain_dir)
    started = time.perf_counter()
    futures = []
    for path, chunk in zip(files, corpus.chunks, strict=True):
        raw = replace(chunk, data=path.read_bytes())
        futures.append(pool.submit(_store_task, processor, store, raw, session, key, level))
    stored = sum(f.result() for f in futures)
    seconds = time.perf_counter() - started
    return BackupRun(seconds, sum(p.stat().st_size for p in files), {"stored_bytes": stored})


def _alternate(
    repeats: int, first: Callable[[int], BackupRun], second: Callable[[int], BackupRun]
) -> tuple[BackupRun, BackupRun]:
    """Run both ``repeats`` times in alternating order; keep each one's fastest run."""
    a: list[BackupRun] = []
    b: list[BackupRun] = []
    for i in range(repeats):
        if i % 2 == 0:
            a.append(first(i))
            b.append(second(i))
        else:
            b.append(second(i))
            a.append(first(i))
    return min(a, key=lambda r: r.seconds), min(b, key=lambda r: r.seconds)


# -- printing ------------------------------------------------------------------------------


def _mbps(size: int, seconds: float) -> float:
    return size / MB / seconds if seconds > 0 else float("inf")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def _verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


def report_passes(
    report: Report, corpus: Corpus, pipe: PassStats, zstd: PassStats, workers: int
) -> dict[str, Any]:
    n = len(corpus.chunks)
    raw, plain, stored = corpus.raw_bytes, corpus.plain_bytes, pipe.out_bytes
    ratio_best = zstd.best / pipe.best
    ratio_median = statistics.median(z / p for z, p in zip(zstd.walls, pipe.walls, strict=True))
    p50, p99 = _pct(pipe.latencies, 50) * 1e3, _pct(pipe.latencies, 99) * 1e3
    z50, z99 = _pct(zstd.latencies, 50) * 1e3, _pct(zstd.latencies, 99) * 1e3
    out = {
        "frames": corpus.frames,
        "chunks": n,
        "raw_frame_bytes": raw,
        "plaintext_bytes": plain,
        "stored_bytes": stored,
        "zstd_only_bytes": zstd.out_bytes,
        "pipeline_wall_s": pipe.walls,
        "zstd_wall_s": zstd.walls,
        "raw_mb_per_s": _mbps(raw, pipe.best),
        "plaintext_mb_per_s": _mbps(plain, pipe.best),
        "chunks_per_min": n / pipe.best * 60,
        "latency_p50_ms": p50,
        "latency_p99_ms": p99,
        "zstd_raw_mb_per_s": _mbps(raw, zstd.best),
        "zstd_plaintext_mb_per_s": _mbps(plain, zstd.best),
        "zstd_latency_p50_ms": z50,
        "zstd_latency_p99_ms": z99,
        "ratio_raw_to_stored": raw / stored,
        "ratio_plaintext_to_stored": plain / stored,
        "throughput_ratio_to_zstd_best": ratio_best,
        "throughput_ratio_to_zstd_median": ratio_median,
    }
    per_chunk = corpus.frames / n
    report.line(
        f"  chunks               {n} of {plain / n / MB:.1f} MB plaintext and {per_chunk:.1f} "
        f"frames on average ({corpus.frames} frames)"
    )
    report.line(f"  raw frames           {raw / MB:10.1f} MB   (width*height*3 per frame)")
    report.line(f"  chunk plaintext      {plain / MB:10.1f} MB   (tile-diff encoded frames)")
    report.line(f"  stored               {stored / MB:10.1f} MB   (zstd + AEAD + header)")
    report.line(
        f"  compression          raw:stored {raw / stored:.1f}x   plaintext:stored "
        f"{plain / stored:.1f}x"
    )
    report.line(
        f"  pipeline ({workers} threads)  best {pipe.best:.3f} s of {len(pipe.walls)} rounds"
    )
    report.line(f"    raw input          {out['raw_mb_per_s']:10.0f} MB/s")
    report.line(f"    plaintext input    {out['plaintext_mb_per_s']:10.0f} MB/s")
    report.line(f"    chunks/min         {out['chunks_per_min']:10.0f}")
    report.line(
        f"    latency per chunk  p50 {p50:.1f} ms  p99 {p99:.1f} ms "
        f"(target p99 < {TARGET_P99_MS:.0f} ms: {_verdict(p99 < TARGET_P99_MS)})"
    )
    report.line(f"  zstd only ({workers} threads) best {zstd.best:.3f} s")
    report.line(
        f"    plaintext input    {out['zstd_plaintext_mb_per_s']:10.0f} MB/s   "
        f"latency p50 {z50:.1f} ms  p99 {z99:.1f} ms"
    )
    report.line(
        f"  pipeline / zstd-only throughput  {ratio_best:.3f} (best vs best), "
        f"{ratio_median:.3f} (median of rounds)"
    )
    report.line(
        f"    target >= {TARGET_ZSTD_RATIO}: {_verdict(ratio_best >= TARGET_ZSTD_RATIO)} "
        f"(best vs best)"
    )
    return out


def report_restic(
    report: Report,
    label: str,
    theirs: BackupRun,
    ours: BackupRun,
    *,
    ours_says: str,
    target: bool,
) -> dict[str, Any]:
    mine, their = _mbps(ours.input_bytes, ours.seconds), _mbps(theirs.input_bytes, theirs.seconds)
    ratio = mine / their
    report.line(f"  {label}: {theirs.input_bytes / MB:.1f} MB")
    version = theirs.detail["repository_version"]
    own = theirs.detail["restic_reported_seconds"]
    own_text = f", restic's own timer {own:.2f} s" if isinstance(own, int | float) else ""
    report.line(
        f"    {'restic backup':30s} {their:7.0f} MB/s  ({theirs.seconds:6.2f} s wall{own_text}; "
        f"{theirs.detail['stored_bytes'] / MB:.1f} MB on disk, repo v{version})"
    )
    report.line(
        f"    {'ours: ' + ours_says:30s} {mine:7.0f} MB/s  ({ours.seconds:6.2f} s wall; "
        f"{ours.detail['stored_bytes'] / MB:.1f} MB on disk)"
    )
    suffix = f" (target >= {TARGET_RESTIC_RATIO:.0f}x: {_verdict(ratio >= TARGET_RESTIC_RATIO)})"
    report.line(f"    {'ours / restic':30s} {ratio:7.2f}x{suffix if target else ''}")
    if ours.detail.get("same_chunks_as_corpus") is False:
        report.line("    PROBLEM: our run did not store the corpus's chunks")
    return {
        "input_bytes": theirs.input_bytes,
        "restic_seconds": theirs.seconds,
        "restic_mb_per_s": their,
        "restic": theirs.detail,
        "ours_seconds": ours.seconds,
        "ours_mb_per_s": mine,
        "ours": ours.detail,
        "ratio": ratio,
    }


def compare_restic(
    report: Report,
    corpus: Corpus,
    pool: ThreadPoolExecutor,
    restic: str,
    work: Path,
    level: int,
    args: argparse.Namespace,
    processing_raw_mbps: float,
) -> dict[str, Any]:
    assert corpus.raw_dir is not None and corpus.plain_dir is not None
    name = corpus.name
    report.line(
        f"  restic (GOMAXPROCS={os.environ.get('GOMAXPROCS', os.cpu_count())}: Go uses every "
        "cpu; it reads 2 files at once)"
    )
    report.line(f"    vs ours: {args.workers} processing threads plus the reading/codec thread")
    report.progress(f"restic vs ours on {name} raw frame files, {args.restic_repeats} runs each")

    def fresh(kind: str, i: int) -> Path:
        return work / f"{name}-{kind}-{i}"

    def drop(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def restic_run(source: Path, kind: str) -> Callable[[int], BackupRun]:
        def run(i: int) -> BackupRun:
            repo = fresh(f"restic-{kind}", i)
            try:
                return restic_backup(restic, source, repo)
            finally:
                drop(repo)

        return run

    def ours_raw(i: int) -> BackupRun:
        root = fresh("ours-raw", i)
        try:
            return ours_from_raw_files(corpus, pool, root, level=level, args=args)
        finally:
            drop(root)

    def ours_plain(i: int) -> BackupRun:
        root = fresh("ours-plain", i)
        try:
            return ours_from_plain_files(corpus, pool, root, level=level)
        finally:
            drop(root)

    out: dict[str, Any] = {}
    theirs, ours = _alternate(args.restic_repeats, restic_run(corpus.raw_dir, "raw"), ours_raw)
    out["raw_frame_files"] = report_restic(
        report,
        "raw frames, one file per chunk (its frames as RGB, 1920*1080*3 bytes each)",
        theirs,
        ours,
        ours_says="read+codec+process+write",
        target=True,
    )
    their_raw = out["raw_frame_files"]["restic_mb_per_s"]
    out["processing_only_raw_ratio"] = processing_raw_mbps / their_raw
    report.line(
        f"    not like for like: pipeline pass (processing only, codec untimed) "
        f"{processing_raw_mbps:.0f} MB/s of raw frames = {processing_raw_mbps / their_raw:.1f}x"
    )
    report.progress(f"restic vs ours on {name} chunk plaintext files")
    theirs, ours = _alternate(
        args.restic_repeats, restic_run(corpus.plain_dir, "plain"), ours_plain
    )
    out["plaintext_files"] = report_restic(
        report,
        "chunk plaintexts, one file per chunk (the bytes the pipeline pass processes)",
        theirs,
        ours,
        ours_says="read+process+write",
        target=False,
    )
    drop(corpus.raw_dir)
    drop(corpus.plain_dir)
    return out


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark chunk processing (zstd + XChaCha20-Poly1305 + BLAKE3) on a "
        "synthetic 1920x1080 desktop; prints figures.",
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="corpus length (60)")
    parser.add_argument("--fps", type=float, default=10.0, help="frames per second (10)")
    parser.add_argument(
        "--quality", choices=list(QUALITY_LEVELS), default="medium", help="zstd level (medium)"
    )
    parser.add_argument("--workers", type=int, default=2, help="processing threads (2)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of each pass (5)")
    parser.add_argument(
        "--chunk-seconds",
        type=float,
        default=DEFAULT_MAX_DURATION_US / 1e6,
        help="chunk duration bound in seconds (10, the default of Chunker)",
    )
    parser.add_argument(
        "--chunk-mib",
        type=float,
        default=DEFAULT_MAX_BYTES / 2**20,
        help="chunk size bound in MiB of encoded frame data (16, the default of Chunker)",
    )
    parser.add_argument("--seed", type=int, default=0, help="scene seed (0)")
    parser.add_argument(
        "--restic-repeats", type=int, default=2, help="runs of each restic comparison (2)"
    )
    parser.add_argument("--no-restic", action="store_true", help="skip the restic comparison")
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where restic files go")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.repeats < 1 or args.restic_repeats < 1:
        parser.error("--workers, --repeats and --restic-repeats must be at least 1")
    if args.seconds <= 0 or args.fps <= 0 or args.chunk_seconds <= 0 or args.chunk_mib <= 0:
        parser.error("--seconds, --fps, --chunk-seconds and --chunk-mib must be positive")
    return args


@contextlib.contextmanager
def _workspace(args: argparse.Namespace, wanted: bool) -> Iterator[Path | None]:
    if not wanted:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="lucid-bench-", dir=args.tmp_dir) as tmp:
        yield Path(tmp)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report(as_json=args.json)
    level = QUALITY_LEVELS[args.quality]
    restic = None if args.no_restic else shutil.which("restic")
    facts = machine_facts(restic)
    report.data["machine"] = facts
    report.line("Lucid Sessions chunk processing benchmark")
    for name, value in facts.items():
        report.line(f"  {name:16s} {value}")
    bounds = f"{args.chunk_seconds:g} s / {args.chunk_mib:g} MiB"
    defaults = (
        args.chunk_seconds * 1e6 == DEFAULT_MAX_DURATION_US
        and args.chunk_mib * 2**20 == DEFAULT_MAX_BYTES
    )
    settings = {
        "resolution": "1920x1080",
        "seconds": args.seconds,
        "fps": args.fps,
        "quality": args.quality,
        "zstd_level": level,
        "workers": args.workers,
        "repeats": args.repeats,
        "chunk_bounds": bounds,
        "chunk_bounds_are_defaults": defaults,
        "seed": args.seed,
    }
    report.data["settings"] = settings
    report.line(
        f"settings: 1920x1080, {args.seconds:g} s at {args.fps:g} fps per corpus, quality "
        f"{args.quality} (zstd {level}), {args.workers} worker threads, {args.repeats} rounds"
    )
    report.line(
        f"chunk bounds: {bounds} "
        + ("(Chunker defaults)" if defaults else "(CHANGED from the 10 s / 16 MiB defaults)")
    )
    report.line(f"1 MB = {MB} bytes; only processing is timed, corpus and chunks are built first")
    if restic is None:
        report.line(
            "restic not installed: skipped" if not args.no_restic else "restic: --no-restic"
        )
    report.data["corpora"] = {}

    with (
        _workspace(args, restic is not None) as work,
        ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="bench") as pool,
    ):
        for name, noisy in (("plain", False), ("noisy-video", True)):
            report.progress(f"building corpus {name}")
            corpus = build_corpus(name, noisy=noisy, args=args, files_root=work)
            if work is not None:
                os.sync()  # no writeback of our own files during the timed runs
            report.line()
            report.line(f"corpus {name} (built in {corpus.build_seconds:.1f} s, untimed)")
            problems = check_round_trip(corpus, level)
            report.line(
                "  correctness          "
                + ("ok (seal/open, leaf hash, zstd, decoded pixels)" if not problems else "")
            )
            for problem in problems:
                report.line(f"    PROBLEM: {problem}")
            report.progress(f"timing {name}: {args.repeats} rounds of each pass")
            pipe, zstd = measure_passes(
                corpus, pool, workers=args.workers, level=level, repeats=args.repeats
            )
            figures = report_passes(report, corpus, pipe, zstd, args.workers)
            figures["correctness_problems"] = problems
            figures["stages"] = stage_breakdown(corpus, level)
            report_breakdown(report, figures["stages"])
            if restic is not None and work is not None:
                figures["restic"] = compare_restic(
                    report, corpus, pool, restic, work, level, args, figures["raw_mb_per_s"]
                )
            report.data["corpora"][name] = figures
            del corpus

    report.data["load_average_at_end"] = load_average()
    report.line()
    report.line(f"load average at the end: {report.data['load_average_at_end']}")
    if args.json:
        print(json.dumps(report.data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
