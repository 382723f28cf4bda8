"""The data directory: metadata database, chunk files and keys in one folder.

Layout::

    <data dir>/
        lucid-data-dir.json      format marker: version, id of the master key in use
        metadata.db              SQLite metadata store (embedded default)
        chunks/<session>/NNNNNNNN.chunk
        keys/cluster-ed25519.pem the cluster's signing key (0600, created on first use)
        keys/master.key          the master key (0600), only when none is configured

The master key comes, in order, from ``LUCID_MASTER_KEY`` (hex or base64), from the file
named by ``LUCID_MASTER_KEY_FILE``, or from ``keys/master.key``, created on first use.
The marker records the id of the master key the data keys are wrapped with, so opening
with another master key fails at once instead of mixing keys.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from lucid_sessions.crypto import ClusterKey, MasterKey, write_key_file
from lucid_sessions.errors import InvalidConfigError, StorageError, WrongKeyError
from lucid_sessions.storage.chunk_store import ChunkStore, write_atomic
from lucid_sessions.storage.metadata import MetadataStore
from lucid_sessions.storage.sqlite_store import SQLiteStore

__all__ = [
    "DATA_DIR_ENV",
    "MARKER",
    "DataDir",
    "MasterKeySource",
    "default_data_dir",
    "open_data_dir",
    "resolve_master_key",
]

DATA_DIR_ENV = "LUCID_DATA_DIR"
MASTER_KEY_FILE_ENV = "LUCID_MASTER_KEY_FILE"
MARKER = "lucid-data-dir.json"
FORMAT = "lucid-sessions-data-dir"
VERSION = 1


def default_data_dir() -> Path:
    """``$LUCID_DATA_DIR``, else ``$XDG_DATA_HOME/lucid-sessions``, else
    ``~/.local/share/lucid-sessions``."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "lucid-sessions"


@dataclass(frozen=True, slots=True)
class MasterKeySource:
    key: MasterKey
    origin: str
    """``env``, ``file`` or ``data-dir``: where the key came from."""
    path: Path | None = None


def resolve_master_key(
    data_dir: Path, *, key_file: Path | None = None, create: bool = False
) -> MasterKeySource:
    """The configured master key; with ``create``, make ``keys/master.key`` when no key is
    configured and that file does not exist yet."""
    if os.environ.get("LUCID_MASTER_KEY"):
        return MasterKeySource(MasterKey.from_env(), "env")
    file = key_file or (
        Path(os.environ[MASTER_KEY_FILE_ENV]) if os.environ.get(MASTER_KEY_FILE_ENV) else None
    )
    if file is not None:
        if not file.exists():
            raise InvalidConfigError(f"master key file {file} does not exist")
        return MasterKeySource(MasterKey.from_file(file), "file", file)
    path = data_dir / "keys" / "master.key"
    if not path.exists():
        if not create:
            raise InvalidConfigError(
                f"no master key: {path} does not exist and neither LUCID_MASTER_KEY nor "
                f"{MASTER_KEY_FILE_ENV} is set"
            )
        write_key_file(path, MasterKey.generate())
    return MasterKeySource(MasterKey.from_file(path), "data-dir", path)


class DataDir:
    """An opened data directory. Use :meth:`open`; close with :meth:`close`."""

    def __init__(self, path: Path, marker: dict[str, object], *, key_file: Path | None) -> None:
        self.path = path
        self._marker = marker
        self._key_file = key_file
        self._store: MetadataStore | None = None
        self.chunks = ChunkStore(path / "chunks")
        self._master: MasterKeySource | None = None
        self._cluster_key: ClusterKey | None = None

    @property
    def store(self) -> MetadataStore:
        """The metadata store: the one attached (MongoDB), else SQLite, opened on first use."""
        if self._store is None:
            self._store = SQLiteStore(self.path / "metadata.db")
        return self._store

    def attach_store(self, store: MetadataStore) -> None:
        """Keep metadata in ``store`` (MongoDB) instead of ``metadata.db``; it is closed
        with the data directory. Must come before the first use of :attr:`store`."""
        if self._store is not None:
            raise StorageError("the data directory's metadata store is already open")
        self._store = store

    @classmethod
    def open(
        cls, path: Path | str, *, create: bool = False, key_file: Path | None = None
    ) -> DataDir:
        """Open a data directory; with ``create``, make it if it is missing or empty.

        Raises StorageError when the folder is missing (without ``create``), is not a
        data directory, or its marker does not parse. Nothing is written unless
        ``create`` is set and the folder is new.
        """
        path = Path(path).expanduser()
        marker_path = path / MARKER
        if not path.exists():
            if not create:
                raise StorageError(
                    f"data directory {path} does not exist (set --data-dir or "
                    f"{DATA_DIR_ENV}, or import a recording to create one)"
                )
            path.mkdir(parents=True, mode=0o700)
        if not path.is_dir():
            raise StorageError(f"data directory {path} is not a folder")
        if not marker_path.exists():
            if create and not any(path.iterdir()):
                marker: dict[str, object] = {"format": FORMAT, "version": VERSION}
                for sub in ("chunks", "keys"):
                    (path / sub).mkdir(mode=0o700, exist_ok=True)
                write_atomic(marker_path, json.dumps(marker, indent=2).encode())
            else:
                raise StorageError(f"{path} is not a Lucid Sessions data directory (no {MARKER})")
        marker = cls._read_marker(marker_path)
        return cls(path, marker, key_file=key_file)

    @staticmethod
    def _read_marker(marker_path: Path) -> dict[str, object]:
        try:
            data = json.loads(marker_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise StorageError(f"data directory marker {marker_path} is unreadable: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise StorageError(f"data directory marker {marker_path} is corrupt")
        if data.get("version") != VERSION:
            raise StorageError(
                f"data directory format version {data.get('version')} is not supported "
                f"(reads {VERSION})"
            )
        return data

    def _write_marker(self) -> None:
        write_atomic(self.path / MARKER, json.dumps(self._marker, indent=2).encode())

    @property
    def master_key_id(self) -> str | None:
        value = self._marker.get("master_key_id")
        return value if isinstance(value, str) else None

    def master_key(self) -> MasterKey:
        """The master key, checked against the one this data directory uses."""
        if self._master is None:
            expected = self.master_key_id
            source = resolve_master_key(self.path, key_file=self._key_file, create=expected is None)
            if expected is None:
                self._marker["master_key_id"] = source.key.key_id
                self._write_marker()
            elif source.key.key_id != expected:
                raise WrongKeyError(
                    f"the master key ({source.key.key_id}) is not the one this data "
                    f"directory uses ({expected})",
                    details={"expected": expected, "given": source.key.key_id},
                )
            self._master = source
        return self._master.key

    @property
    def master_source(self) -> MasterKeySource:
        self.master_key()
        assert self._master is not None
        return self._master

    def set_master_key(self, source: MasterKeySource) -> None:
        """Record that every data key is now wrapped with ``source``'s key."""
        self._marker["master_key_id"] = source.key.key_id
        self._write_marker()
        self._master = source

    def cluster_key(self) -> ClusterKey:
        if self._cluster_key is None:
            self._cluster_key = ClusterKey.load_or_create(
                self.path / "keys" / "cluster-ed25519.pem"
            )
        return self._cluster_key

    def existing_cluster_public_key(self) -> bytes | None:
        """The cluster's public key if the data directory has one; never creates it."""
        path = self.path / "keys" / "cluster-ed25519.pem"
        if not path.exists():
            return None
        return self.cluster_key().public_key_bytes()

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None


MONGODB_URI_ENV = "LUCID_MONGODB_URI"
MONGODB_DATABASE_ENV = "LUCID_MONGODB_DATABASE"


async def open_data_dir(
    path: Path | str,
    *,
    create: bool = False,
    key_file: Path | None = None,
    mongodb_uri: str | None = None,
    mongodb_database: str | None = None,
) -> DataDir:
    """:meth:`DataDir.open`, with the metadata in MongoDB when a URI is given or
    ``LUCID_MONGODB_URI`` is set: the command line then reads and writes the same
    metadata as a production cluster, while chunks and keys stay in the folder."""
    datadir = DataDir.open(path, create=create, key_file=key_file)
    uri = mongodb_uri or os.environ.get(MONGODB_URI_ENV)
    if not uri:
        return datadir
    from lucid_sessions.storage.mongo_store import MongoStore

    try:
        database = mongodb_database or os.environ.get(MONGODB_DATABASE_ENV) or "lucid_sessions"
        datadir.attach_store(await MongoStore.open(uri, database=database))
    except BaseException:
        await datadir.close()
        raise
    return datadir
