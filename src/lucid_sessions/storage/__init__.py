"""Where recordings live: chunk files on the local file system, metadata in a store.

chunk store
    Stored chunks as files, one folder per session, written atomically.
metadata store
    Sessions, chunk records, wrapped data keys and signed manifests behind the
    :class:`~lucid_sessions.storage.metadata.MetadataStore` interface; SQLite is the
    embedded default.
data directory
    The folder that holds both, the cluster's keys and a format marker.
"""
