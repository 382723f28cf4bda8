"""The ``lucid-sessions`` command line: parse options, run the archive, report.

Domain errors become one line on stderr (``error: ...``) and exit code 1; usage errors
exit 2 (click's convention); a failed verification exits 1 after naming the first bad
chunk. Progress bars go to stderr so stdout stays parseable (``import`` prints only the
session id there).
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from lucid_sessions import __version__
from lucid_sessions.chunkfile import QUALITY_LEVELS
from lucid_sessions.errors import LucidError
from lucid_sessions.storage.datadir import DATA_DIR_ENV, DataDir, default_data_dir, open_data_dir

T = TypeVar("T")


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def run_async(fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run an async command body; turn domain and OS errors into one-line messages."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return asyncio.run(fn(*args, **kwargs))
        except LucidError as exc:
            _fail(exc.message)
        except OSError as exc:
            name = f" {exc.filename}" if exc.filename else ""
            _fail(f"{exc.strerror or exc}{name and ':'}{name}")
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        raise AssertionError("unreachable")

    return wrapper


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar=DATA_DIR_ENV,
    default=None,
    help=f"Data directory [env {DATA_DIR_ENV}; default ~/.local/share/lucid-sessions].",
)


def quality_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--quality",
        type=click.Choice(list(QUALITY_LEVELS)),
        default="medium",
        show_default=True,
        help=help_text,
    )


def output_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``-o/--output FILE`` (required)."""
    return click.option(
        "-o",
        "--output",
        type=click.Path(path_type=Path, dir_okay=False),
        required=True,
        help=help_text,
    )


def range_options(
    start_help: str, end_help: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--from`` and ``--to``: seconds from the session's start (``from_s``, ``to_s``)."""

    def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
        for name, dest, text in (("--to", "to_s", end_help), ("--from", "from_s", start_help)):
            fn = click.option(name, dest, type=click.FloatRange(min=0), default=None, help=text)(fn)
        return fn

    return apply


@contextmanager
def _progress(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr when it is a terminal, silent otherwise."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield bar.update


async def _with_datadir(
    data_dir: Path | None, body: Callable[[DataDir], Awaitable[T]], *, create: bool = False
) -> T:
    datadir = await open_data_dir(data_dir or default_data_dir(), create=create)
    try:
        return await body(datadir)
    finally:
        await datadir.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lucid-sessions")
def main() -> None:
    """Record remote desktop sessions as verifiable evidence.

    Every recording is cut into chunks that play on their own, compressed with zstd,
    encrypted with XChaCha20-Poly1305, hashed into a Merkle tree and described by a
    manifest signed with the cluster's Ed25519 key.
    """


@main.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Session name.")
@click.option(
    "--fps",
    type=float,
    default=None,
    help="Video: keep at most this many frames per second. Images: frames per second (default 1).",
)
@quality_option("Compression quality (zstd level 1, 3, 9, 15).")
@click.option(
    "--hash",
    "hash_algorithm",
    type=click.Choice(["blake3", "sha256"]),
    default="blake3",
    show_default=True,
    help="Merkle tree hash.",
)
@data_dir_option
@run_async
async def import_(
    path: Path,
    name: str,
    fps: float | None,
    quality: str,
    hash_algorithm: str,
    data_dir: Path | None,
) -> None:
    """Build a finished, signed session from a video file or a folder of screenshots.

    PATH is a video (anything FFmpeg reads) or a folder of PNG/JPEG images taken in name
    order. Prints the new session's id.
    """
    from lucid_sessions.archive.importer import open_frames
    from lucid_sessions.archive.service import import_frames

    source = open_frames(path, fps=fps)

    async def body(datadir: DataDir) -> None:
        with _progress(f"importing {source.description}", source.total) as advance:
            manifest = await import_frames(
                datadir,
                source.frames,
                name=name,
                quality=quality,
                fps=fps,
                hash_algorithm=hash_algorithm,
                progress=advance,
            )
        click.echo(manifest.session_id)

    await _with_datadir(data_dir, body, create=True)


@main.command("ls")
@click.option("--status", default=None, help="Only sessions in this status.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@data_dir_option
@run_async
async def ls(status: str | None, as_json: bool, data_dir: Path | None) -> None:
    """List sessions."""
    from lucid_sessions.archive.service import format_bytes

    async def body(datadir: DataDir) -> None:
        offset = 0
        rows = []
        while True:
            page = await datadir.store.list_sessions(status=status, limit=500, offset=offset)
            rows.extend(page.items)
            if not page.has_next:
                break
            offset += len(page.items)
        if as_json:
            for r in rows:
                click.echo(
                    json.dumps(
                        {
                            "session_id": r.session_id,
                            "name": r.name,
                            "status": r.status,
                            "created_at": r.created_at,
                            "chunks": r.chunk_count,
                            "stored_bytes": r.stored_bytes,
                        }
                    )
                )
            return
        click.echo(f"{'SESSION':22} {'STATUS':12} {'CHUNKS':>6} {'SIZE':>9} {'CREATED':20} NAME")
        for r in rows:
            click.echo(
                f"{r.session_id:22} {r.status:12} {r.chunk_count:>6} "
                f"{format_bytes(r.stored_bytes):>9} {r.created_at[:19]:20} {r.name}"
            )

    await _with_datadir(data_dir, body)


@main.command("show")
@click.argument("session")
@data_dir_option
@run_async
async def show(session: str, data_dir: Path | None) -> None:
    """Show one session: status, figures, root and chunks."""
    from lucid_sessions.archive.service import describe_session

    async def body(datadir: DataDir) -> None:
        for line in await describe_session(datadir, session):
            click.echo(line)

    await _with_datadir(data_dir, body)


@main.command("export")
@click.argument("session")
@output_option("Bundle file to write (a tar).")
@range_options(
    "Excerpt start, seconds from the session's start.",
    "Excerpt end, seconds from the session's start.",
)
@data_dir_option
@run_async
async def export(
    session: str, output: Path, from_s: float | None, to_s: float | None, data_dir: Path | None
) -> None:
    """Write a self-contained evidence bundle for SESSION.

    With --from/--to only the chunks overlapping that range go in, each with its
    inclusion proof against the signed root.
    """
    from lucid_sessions.archive.bundle import ExportRange, export_to_file

    if from_s is not None and to_s is not None and to_s < from_s:
        raise click.BadParameter("--to must not be before --from", param_hint="--to")
    excerpt = None
    if from_s is not None or to_s is not None:
        excerpt = ExportRange(
            None if from_s is None else round(from_s * 1e6),
            None if to_s is None else round(to_s * 1e6),
        )

    async def body(datadir: DataDir) -> None:
        record = await datadir.store.get_session(session)
        with _progress("exporting", record.stored_bytes or None) as advance:
            sequences = await export_to_file(
                datadir, session, output, excerpt=excerpt, progress=advance
            )
        click.echo(f"wrote {output} ({len(sequences)} chunks)", err=True)

    await _with_datadir(data_dir, body)


@main.command("verify")
@click.argument("target")
@click.option(
    "--key-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Session data key file (from `keys export`) to decrypt a bundle's chunks.",
)
@click.option(
    "--trusted-key",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Public key (PEM or hex) the manifest must be signed with.",
)
@click.option(
    "--chain-url",
    default=None,
    metavar="URL",
    help="Check the anchor: EVM JSON-RPC or TRON full node URL (for local: the anchors.jsonl "
    "file). Without it the anchor is not checked.",
)
@click.option(
    "--chain",
    type=click.Choice(["evm", "tron", "local"]),
    default=None,
    help="Which backend the URL is (default: the receipt's).",
)
@click.option(
    "--contract",
    default=None,
    metavar="ADDR",
    help="The LucidAnchor contract to read (default: the receipt's; pin it).",
)
@click.option(
    "--anchorer",
    default=None,
    metavar="ADDR",
    help="The cluster's anchoring address (default: the receipt's; pin it).",
)
@data_dir_option
@run_async
async def verify(
    target: str,
    key_file: Path | None,
    trusted_key: Path | None,
    chain_url: str | None,
    chain: str | None,
    contract: str | None,
    anchorer: str | None,
    data_dir: Path | None,
) -> None:
    """Check a session (by id) or an evidence bundle (by path).

    Checks every chunk's hash, the chunk count and order, the Merkle root and the
    manifest signature; with the data key, decrypts and decodes every chunk. With
    --chain-url, the root anchored for the session must be the signed root. Exits 0
    only if everything holds; otherwise names the first bad chunk.
    """
    from lucid_sessions.archive.anchor_check import ChainTarget
    from lucid_sessions.archive.service import verify_target
    from lucid_sessions.archive.verify import summary_lines

    if chain_url is None and (chain or contract or anchorer):
        raise click.UsageError("--chain, --contract and --anchorer need --chain-url")
    target_chain = (
        ChainTarget(chain_url, chain=chain, contract=contract, anchorer=anchorer)
        if chain_url
        else None
    )
    with _progress("verifying", None) as advance:
        report = await verify_target(
            target,
            data_dir=data_dir,
            key_file=key_file,
            trusted_key_file=trusted_key,
            progress=advance,
            chain=target_chain,
        )
    for line in summary_lines(report):
        click.echo(line)
    if not report.ok:
        sys.exit(1)


@main.command("frame")
@click.argument("session")
@click.option(
    "--at",
    "at",
    type=click.FloatRange(min=0),
    required=True,
    help="Seconds from the session's start.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="PNG file to write.",
)
@data_dir_option
@run_async
async def frame(session: str, at: float, output: Path, data_dir: Path | None) -> None:
    """Write the frame on screen at a time as a PNG."""
    from PIL import Image

    from lucid_sessions.archive.reader import SessionReader

    async def body(datadir: DataDir) -> None:
        reader = await SessionReader.open(datadir, session)
        decoded = await reader.frame_at(at)
        Image.fromarray(decoded.pixels).save(output, format="PNG")
        click.echo(f"wrote {output} (frame at {decoded.timestamp_us / 1e6:.3f} s)", err=True)

    await _with_datadir(data_dir, body)


@main.group("keys")
def keys() -> None:
    """Master key rotation and key export."""


@keys.command("rotate")
@click.option(
    "--new-key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="New master key file (read if it exists, else created with a new key). "
    "Required when the current key comes from the environment or a key file.",
)
@data_dir_option
@run_async
async def keys_rotate(new_key_file: Path | None, data_dir: Path | None) -> None:
    """Re-wrap every session's data key under a new master key. Chunks are untouched."""
    from lucid_sessions.archive.keys import rotate_master_key

    async def body(datadir: DataDir) -> None:
        old = datadir.master_key().key_id
        count = len(await datadir.store.list_wrapped_keys())
        new = await rotate_master_key(datadir, new_key_file=new_key_file)
        click.echo(f"rotated master key {old} -> {new.key_id} ({count} data keys re-wrapped)")
        if new_key_file is not None:
            click.echo(f"set LUCID_MASTER_KEY_FILE={new_key_file} from now on", err=True)

    await _with_datadir(data_dir, body)


@keys.command("export")
@click.argument("session")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True)
@data_dir_option
@run_async
async def keys_export(session: str, output: Path, data_dir: Path | None) -> None:
    """Write SESSION's data key to a new 0600 file, for `verify BUNDLE --key-file`."""
    from lucid_sessions.archive.keys import load_data_key
    from lucid_sessions.archive.reader import write_data_key_file

    async def body(datadir: DataDir) -> None:
        record = await datadir.store.get_session(session)
        if record.key_id is None:
            raise LucidError(f"session {session} has no data key")
        key = await load_data_key(datadir, record.key_id)
        write_data_key_file(output, session, key)
        click.echo(f"wrote data key {key.key_id} to {output}", err=True)

    await _with_datadir(data_dir, body)


@keys.command("public")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the PEM here instead of stdout.",
)
@data_dir_option
@run_async
async def keys_public(output: Path | None, data_dir: Path | None) -> None:
    """Print the cluster's public signing key (PEM) for auditors."""

    async def body(datadir: DataDir) -> None:
        key = datadir.cluster_key()
        pem = key.public_key_pem()
        if output is None:
            click.echo(pem.decode(), nl=False)
        else:
            output.write_bytes(pem)
        click.echo(f"fingerprint {key.fingerprint()}", err=True)

    await _with_datadir(data_dir, body)


@main.command("demo")
@click.option("--seconds", type=click.IntRange(1, 3600), default=20, show_default=True)
@click.option("--fps", type=click.IntRange(1, 120), default=10, show_default=True)
@click.option("--resolution", default="1280x720", show_default=True, help="WIDTHxHEIGHT")
@data_dir_option
@run_async
async def demo(seconds: int, fps: int, resolution: str, data_dir: Path | None) -> None:
    """Record a synthetic desktop into a session, then verify and export it."""
    from lucid_sessions.archive.service import parse_resolution, run_demo

    width, height = parse_resolution(resolution)

    async def body(datadir: DataDir) -> None:
        with _progress("recording synthetic desktop", seconds * fps) as advance:
            lines = await run_demo(
                datadir, seconds=seconds, fps=fps, width=width, height=height, progress=advance
            )
        for line in lines:
            click.echo(line)

    await _with_datadir(data_dir, body, create=True)


@main.command("record")
@click.argument("target")
@click.option(
    "--password-file",
    default=None,
    help="File holding the RDP password ('-' reads stdin). Never put it in the URL.",
)
@click.option("--domain", default="", help="RDP domain.")
@click.option("--security", type=click.Choice(["tls", "nla"]), default="nla", show_default=True)
@click.option("--fps", type=click.IntRange(1, 120), default=10, show_default=True)
@click.option(
    "--resolution",
    default="1920x1080",
    show_default=True,
    help="RDP desktop size WIDTHxHEIGHT (x11 records the display's size).",
)
@quality_option("Highest compression level; it drops when behind.")
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop after this many seconds (default: until Ctrl-C or SIGTERM).",
)
@click.option("--name", default=None, help="Session name (default: the target).")
@data_dir_option
@run_async
async def record(
    target: str,
    password_file: str | None,
    domain: str,
    security: str,
    fps: int,
    resolution: str,
    quality: str,
    duration: float | None,
    name: str | None,
    data_dir: Path | None,
) -> None:
    """Record a live session: rdp://USER@HOST[:PORT] or x11://:DISPLAY.

    Records until Ctrl-C, SIGTERM or --duration, then finalises the session and prints its
    id. SIGUSR1 pauses, SIGUSR2 resumes. Exits 0 when the recording ended as asked, 3 when
    it was interrupted (the remote side went away); the session is finalised either way.
    """
    import signal

    from lucid_sessions.archive.service import format_bytes, parse_resolution
    from lucid_sessions.recorder.session_recorder import SessionRecorder, Status
    from lucid_sessions.recorder.target import open_target, read_password

    width, height = parse_resolution(resolution)
    password = read_password(password_file) if password_file else ""
    source, settings = open_target(
        target,
        password=password,
        domain=domain,
        security=security,
        width=width,
        height=height,
    )
    del password
    settings.update({"fps": fps})
    tty = sys.stderr.isatty()
    reports = 0

    def show(status: Status) -> None:
        nonlocal reports
        reports += 1
        line = (
            f"{int(status.elapsed_s) // 60:02d}:{int(status.elapsed_s) % 60:02d} "
            f"{status.fps:5.1f} fps  {status.dropped} dropped  {status.chunks} chunks  "
            f"{format_bytes(status.raw_bytes)} -> {format_bytes(status.stored_bytes)}  "
            f"zstd {status.level}{'  PAUSED' if status.paused else ''}"
        )
        if tty:
            click.echo(f"\r{line}\x1b[K", nl=False, err=True)
        elif reports % 10 == 0:
            click.echo(line, err=True)

    async def body(datadir: DataDir) -> None:
        recorder = SessionRecorder(
            datadir,
            source,
            name=name or target.split("@")[-1],
            fps=fps,
            quality=quality,
            duration_s=duration,
            config=settings,
            on_status=show,
        )
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, recorder.stop, "interrupt")
        loop.add_signal_handler(signal.SIGTERM, recorder.stop, "terminated")
        loop.add_signal_handler(signal.SIGUSR1, recorder.pause)
        loop.add_signal_handler(signal.SIGUSR2, recorder.resume)
        try:
            result = await recorder.run()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
                loop.remove_signal_handler(sig)
        if tty:
            click.echo("", err=True)
        stats = result.stats
        click.echo(result.session_id)
        click.echo(
            f"{result.status}: {stats.captured} frames ({stats.dropped} dropped, "
            f"{stats.unchanged} unchanged), {stats.effective_fps:.1f} fps, "
            f"{result.manifest.tree_size} chunks, root {result.manifest.root}"
            + (f"; {result.reason}" if result.reason else ""),
            err=True,
        )
        if result.status != "completed":
            sys.exit(3)

    await _with_datadir(data_dir, body, create=True)


_TLS_OPTIONS: tuple[tuple[str, str, str], ...] = (
    # option, TlsConfig field, help
    ("--tls-cert", "api_cert", "API certificate (PEM); with --tls-key the API serves HTTPS only"),
    ("--tls-key", "api_key", "API private key (PEM, unencrypted)"),
    ("--tls-client-ca", "api_client_ca", "Accept only API clients with a certificate from this CA"),
    ("--grpc-tls-cert", "grpc_cert", "This process's gRPC certificate, served and presented"),
    ("--grpc-tls-key", "grpc_key", "Its private key (PEM, unencrypted)"),
    ("--grpc-tls-ca", "grpc_ca", "CA that peers' gRPC certificates must chain to"),
)


def tls_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The TLS options of ``serve``; each is passed on under the name of its
    :class:`~lucid_sessions.cluster.tls.TlsConfig` field."""
    from lucid_sessions.cluster.tls import VARIABLES

    command = click.option(
        "--grpc-require-client-cert",
        "require_client_cert",
        is_flag=True,
        default=None,
        help="gRPC servers refuse clients without a certificate from --grpc-tls-ca "
        f"[env {VARIABLES['require_client_cert']}].",
    )(command)
    for option, name, help_text in reversed(_TLS_OPTIONS):  # the last applied shows first
        command = click.option(
            option,
            name,
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help=f"{help_text} [env {VARIABLES[name]}].",
        )(command)
    return command


@main.command("serve")
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="TOML configuration file.",
)
@click.option(
    "--target",
    default=None,
    help="Components to run, comma-separated: all (default), pipeline, recorder, "
    "processor, storage, api [env LUCID_TARGETS].",
)
@click.option(
    "--host", default=None, help="API listen address [env LUCID_API_HOST; default 127.0.0.1]."
)
@click.option("--port", type=int, default=None, help="API port [env LUCID_API_PORT; default 8087].")
@tls_options
@data_dir_option
@run_async
async def serve(
    config_file: Path | None,
    target: str | None,
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    **tls: Any,
) -> None:
    """Run the cluster: all five components in one process (default), or some of them.

    All-in-one, components call each other in-process and only the API port listens. With
    --target, every internal component run here serves gRPC on its port (pipeline 8083,
    recorder 8084, processor 8085, storage 8086) and reaches the others at their configured
    addresses. SIGTERM or Ctrl-C stops gracefully.

    TLS: --tls-cert and --tls-key make the API serve HTTPS only. The --grpc-tls-* options
    give each process one certificate, served and presented to peers; with
    --grpc-require-client-cert gRPC is mutual TLS. Certificates must name the host they
    are reached at.
    """
    import signal

    from lucid_sessions.cluster.assembly import Cluster
    from lucid_sessions.cluster.config import load_config

    config = load_config(
        file=config_file,
        targets=target,
        api_host=host,
        api_port=port,
        data_dir=data_dir,
        tls=tls,
    )
    cluster = Cluster(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await cluster.start()
    grpc = "gRPC over TLS" if config.tls.grpc else "gRPC"
    where = [f"{name} {grpc} :{p}" for name, p in sorted(cluster.grpc_ports.items())]
    if cluster.api_port is not None:
        scheme = "https" if config.tls.api else "http"
        where.insert(0, f"API {scheme}://{config.api_host}:{cluster.api_port}/api/v1")
    click.echo(f"serving {', '.join(sorted(config.local))}: {'; '.join(where)}", err=True)
    try:
        await stop.wait()
    finally:
        click.echo("stopping", err=True)
        await cluster.stop()


import lucid_sessions.cli_audit  # noqa: E402  (registers the `audit` group on main)
import lucid_sessions.cli_backup  # noqa: E402  (registers `backup` and `restore` on main)
import lucid_sessions.cli_gc  # noqa: E402  (registers `gc` and the `hold` group on main)
import lucid_sessions.cli_log  # noqa: E402  (registers the `log` group on main)
import lucid_sessions.cli_render  # noqa: E402  (registers the `render` command on main)
import lucid_sessions.cli_token  # noqa: E402, F401  (registers the `token` group on main)
