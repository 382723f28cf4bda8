"""The recorder: live capture sources sampled at a steady rate into sessions.

sampler
    The steady clock: grabs, counts dropped and unchanged frames, pause and resume.
session recorder
    Connects a source, records into a new session, finalises it however recording ends.
target
    Parsing ``rdp://USER@HOST:PORT`` and ``x11://:DISPLAY`` into a capture source.
"""
