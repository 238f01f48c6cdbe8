"""The ``Authorization`` header, parsed the same way by every HTTP service.

Accepted (api-contract.md, Decisions): ``Token <key>`` and ``Bearer <key>``, scheme case-insensitive.
"""

from __future__ import annotations

_SCHEMES = frozenset({"token", "bearer"})


def key_from_authorization(header: str | None) -> str | None:
    """The key in an ``Authorization`` header, or None when it is absent or not Token/Bearer."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() not in _SCHEMES or not value:
        return None
    return value
