"""What every benchmark script shares: the report and the machine facts it prints."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["Report", "cpu_model", "load_average", "version"]


class Report:
    """Figures both as printed lines and as a JSON document."""

    def __init__(self, *, as_json: bool) -> None:
        self.as_json = as_json
        self.data: dict[str, Any] = {}

    def line(self, text: str = "") -> None:
        if not self.as_json:
            print(text, flush=True)

    def progress(self, text: str) -> None:
        print(f"... {text}", file=sys.stderr, flush=True)


def version(dist: str) -> str:
    """The installed version of a distribution, or ``not installed``."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_average() -> str:
    if not hasattr(os, "getloadavg"):
        return "unknown"
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min)"
