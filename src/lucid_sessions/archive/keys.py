"""Per-session data keys, kept wrapped by the master key, and master key rotation."""

from __future__ import annotations

import os
from pathlib import Path

from lucid_sessions.crypto import (
    DataKey,
    MasterKey,
    rewrap,
    unwrap_data_key,
    wrap_data_key,
    write_key_file,
)
from lucid_sessions.errors import InvalidConfigError
from lucid_sessions.storage.datadir import DataDir, MasterKeySource
from lucid_sessions.storage.metadata import WrappedKeyRecord, utc_now

__all__ = ["create_data_key", "load_data_key", "rotate_master_key"]


async def create_data_key(datadir: DataDir, session_id: str) -> DataKey:
    """A new data key for a session, stored wrapped under the master key."""
    master = datadir.master_key()
    key = DataKey.generate()
    await datadir.store.put_wrapped_key(
        WrappedKeyRecord(
            key_id=key.key_id,
            session_id=session_id,
            master_key_id=master.key_id,
            wrapped=wrap_data_key(key, master),
            created_at=utc_now(),
        )
    )
    return key


async def load_data_key(datadir: DataDir, key_id: str) -> DataKey:
    record = await datadir.store.get_wrapped_key(key_id)
    master = datadir.master_key()
    if record.master_key_id != master.key_id:
        _finish_interrupted_rotation(datadir, record.master_key_id)
        master = datadir.master_key()
    return unwrap_data_key(record.wrapped, master)


def _finish_interrupted_rotation(datadir: DataDir, wrapped_under: str) -> None:
    """Complete a rotation that crashed after re-wrapping but before replacing the key.

    The re-wrap is one transaction, so the staged ``master.key.new`` holds the key every
    data key is now wrapped with; anything else is left for unwrap to report.
    """
    current = datadir.master_source
    if current.origin != "data-dir" or current.path is None:
        return
    staged = current.path.with_name("master.key.new")
    if not staged.exists():
        return
    new = MasterKey.from_file(staged)
    if new.key_id == wrapped_under:
        os.replace(staged, current.path)
        datadir.set_master_key(MasterKeySource(new, "data-dir", current.path))


async def rotate_master_key(datadir: DataDir, *, new_key_file: Path | None = None) -> MasterKey:
    """Re-wrap every data key under a new master key; chunks are not touched.

    With the embedded default (the key lives in the data directory) a new key is made and
    replaces ``keys/master.key``. With a configured key file or environment variable,
    ``new_key_file`` is required: it is read if it exists, else a new key is written there;
    point ``LUCID_MASTER_KEY_FILE`` at it afterwards. All wrapped keys change in one
    transaction; the old key is no longer needed once this returns.
    """
    current = datadir.master_source
    old = current.key
    staged: Path | None = None
    if new_key_file is not None:
        if not new_key_file.exists():
            write_key_file(new_key_file, MasterKey.generate())
        new = MasterKey.from_file(new_key_file)
        target = MasterKeySource(new, "file", new_key_file)
    elif current.origin == "data-dir" and current.path is not None:
        staged = current.path.with_name("master.key.new")
        if staged.exists():
            staged.unlink()
        new = MasterKey.generate()
        write_key_file(staged, new)
        target = MasterKeySource(new, "data-dir", current.path)
    else:
        raise InvalidConfigError(
            "the master key comes from LUCID_MASTER_KEY or LUCID_MASTER_KEY_FILE: "
            "pass --new-key-file for the new key"
        )
    if new.key_id == old.key_id:
        raise InvalidConfigError("the new master key is the same as the current one")
    records = await datadir.store.list_wrapped_keys()
    updated = [
        WrappedKeyRecord(
            key_id=r.key_id,
            session_id=r.session_id,
            master_key_id=new.key_id,
            wrapped=rewrap(r.wrapped, old, new),
            created_at=r.created_at,
        )
        for r in records
    ]
    await datadir.store.replace_wrapped_keys(updated)
    if staged is not None and current.path is not None:
        os.replace(staged, current.path)
    datadir.set_master_key(target)
    return new
