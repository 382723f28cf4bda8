"""``python -m lucid_sessions`` is the ``lucid-sessions`` command."""

from lucid_sessions.cli import main

main()
