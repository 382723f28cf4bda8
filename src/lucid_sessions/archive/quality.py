"""Dynamic compression: the zstd level follows the pipeline's headroom.

When chunks take long to get from the chunker to storage compared with the time they
cover (the pipeline is falling behind real time), the level drops one step; when there
is plenty of headroom it rises one step, never above the level of the session's quality.
The level used is recorded per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LEVEL_STEPS", "AdaptiveLevel"]

LEVEL_STEPS = (1, 2, 3, 5, 7, 9, 12, 15)
"""zstd levels the controller moves between, cheapest first."""


@dataclass(slots=True)
class AdaptiveLevel:
    """Chooses the zstd level for the next chunk.

    ``behind`` and ``headroom`` are fractions of a chunk's own duration: a chunk whose
    processing latency exceeds ``behind`` of it lowers the level, one below ``headroom``
    raises it back towards ``target``.
    """

    target: int
    behind: float = 0.5
    headroom: float = 0.1
    level: int = 0

    def __post_init__(self) -> None:
        self.level = self.target

    def observe(self, latency_s: float, chunk_s: float, *, backlog_full: bool = False) -> int:
        """Account for one stored chunk; returns the level for the next one."""
        share = latency_s / max(chunk_s, 0.1)
        steps = [s for s in LEVEL_STEPS if s <= self.target] or [self.target]
        index = max((i for i, s in enumerate(steps) if s <= self.level), default=0)
        if backlog_full or share > self.behind:
            index = max(0, index - 1)
        elif share < self.headroom:
            index = min(len(steps) - 1, index + 1)
        self.level = steps[index]
        return self.level
