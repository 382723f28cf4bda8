"""Frames, the frame codec and the chunker: everything between a screen and a chunk."""
