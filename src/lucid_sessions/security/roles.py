"""Roles and the permissions each one holds: the permission matrix of the seed's security plan.

================ ====== ==== ====== ====== ========== ====== ======== ======== ===== ===== ====
role             create read update delete start/stop read   download control  stats audit hold
                                           /pause     chunks chunks   pipeline       log
================ ====== ==== ====== ====== ========== ====== ======== ======== ===== ===== ====
admin            y      y    y      y      y          y      y        y        y     y     y
session_manager  y      y    y      y      y          y      y        y        y     n     n
session_operator n      y    n      n      y          y      n        y        y     n     n
session_viewer   n      y    n      n      n          y      n        n        y     n     n
auditor          n      y    n      n      n          y      n        n        y     y     n
================ ====== ==== ====== ====== ========== ====== ======== ======== ===== ===== ====

An export of an evidence bundle counts as a download. ``hold`` is ``sessions:hold``: set,
lift and list legal holds, which keep a session from every deletion (admin only). Tokens
are revoked with ``lucid-sessions token revoke`` by whoever holds the data directory or
the Redis URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, get_args

__all__ = ["PERMISSIONS", "ROLES", "ROLE_PERMISSIONS", "Permission", "allowed"]

Permission = Literal[
    "sessions:create",
    "sessions:read",
    "sessions:update",
    "sessions:delete",
    "sessions:control",
    "chunks:read",
    "chunks:download",
    "pipeline:control",
    "statistics:read",
    "audit:read",
    "sessions:hold",
]
"""What a route may need (see :mod:`lucid_sessions.api.auth` for which route needs which)."""
PERMISSIONS: tuple[str, ...] = get_args(Permission)
_ALL = PERMISSIONS

ROLE_PERMISSIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "admin": frozenset(_ALL),
        "session_manager": frozenset(_ALL) - {"audit:read", "sessions:hold"},
        "session_operator": frozenset(
            {
                "sessions:read",
                "sessions:control",
                "chunks:read",
                "pipeline:control",
                "statistics:read",
            }
        ),
        "session_viewer": frozenset({"sessions:read", "chunks:read", "statistics:read"}),
        "auditor": frozenset({"sessions:read", "chunks:read", "statistics:read", "audit:read"}),
    }
)
ROLES: tuple[str, ...] = tuple(ROLE_PERMISSIONS)


def allowed(role: str, permission: str) -> bool:
    """Whether ``role`` holds ``permission`` (an unknown role holds nothing)."""
    return permission in ROLE_PERMISSIONS.get(role, frozenset())
