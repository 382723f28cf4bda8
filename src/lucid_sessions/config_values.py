"""Parsing of single configuration values, shared by every settings loader.

Loaders collect problems in a list instead of raising at the first one, so that a user
sees every mistake in a configuration at once.
"""

from __future__ import annotations

__all__ = ["parse_bool"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def parse_bool(value: object, name: str, errors: list[str]) -> bool:
    """A TOML boolean, or an environment string such as ``true``/``0``/``off``."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text not in _FALSE:
        errors.append(f"{name} must be true or false, not {value!r}")
    return False
