"""The data keys the API needs to decode recordings on the server (player, render).

Keys never leave the server: the API unwraps a session's data key with the master key it
was given (the cluster passes its own, whatever component this process runs), or, for an
app built over an in-process storage component, with that data directory's key.
"""

from __future__ import annotations

from lucid_sessions.api.context import ApiContext
from lucid_sessions.crypto import DataKey, MasterKey, unwrap_data_key
from lucid_sessions.errors import NotFoundError
from lucid_sessions.storage.datadir import DataDir
from lucid_sessions.storage.metadata import SessionRecord

__all__ = ["data_key", "master_key"]


def master_key(ctx: ApiContext) -> MasterKey:
    if ctx.master_key is not None:
        return ctx.master_key
    datadir = getattr(ctx.storage, "datadir", None)
    if isinstance(datadir, DataDir):
        return datadir.master_key()
    raise NotFoundError("playback is not available: this API has no access to the data keys")


async def data_key(ctx: ApiContext, session: SessionRecord) -> DataKey:
    """The session's data key, unwrapped here."""
    if session.key_id is None:
        raise NotFoundError(f"session {session.session_id} has no data key")
    record = await ctx.storage.get_wrapped_key(session.key_id)
    return unwrap_data_key(record.wrapped, master_key(ctx))
