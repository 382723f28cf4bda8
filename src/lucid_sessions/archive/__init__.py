"""Sessions as archives: writing, finalising, reading, exporting and verifying them.

writer
    Frames in, stored chunks and chunk records out; finalisation signs the manifest.
reader
    A finished session's chunks, decrypted and decoded, and the frame at any time.
bundle
    The self-contained evidence file and its reader.
verify
    Checks a session or a bundle and names the first chunk that fails, and why.
"""
