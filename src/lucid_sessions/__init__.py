"""Lucid Sessions: remote desktop recordings as verifiable evidence.

Glossary
--------
frame
    One RGB screen image with a timestamp in microseconds since the session started.
chunk
    A run of frames that decodes on its own: a keyframe, then changed tiles only.
stored chunk
    A chunk after zstd and XChaCha20-Poly1305, in its on-disk container; its bytes are
    the Merkle leaf, so integrity can be checked without any key.
data key
    The per-session key that seals chunks; kept only wrapped by the master key.
manifest
    The signed summary of a finished session: chunk list, leaf hashes, Merkle root.
bundle
    A self-contained evidence file (chunks, manifest, signature, public key, proofs).
"""

__version__ = "0.1.0"
