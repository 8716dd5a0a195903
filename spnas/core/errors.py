"""Errors a user can cause and fix.

Every error that reaches the user is a :class:`SpnasError`: one line that names the place
(file, key path), the bad value and what is allowed. The CLI prints it and exits with status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any


class SpnasError(Exception):
    """A user error: bad input, a missing file, an impossible request."""


class SpaceError(SpnasError):
    """A search-space file or an architecture that does not fit a space."""


class LatencyTableError(SpnasError):
    """A latency table that is malformed or does not cover a space."""


def describe(value: Any, limit: int = 60) -> str:
    """A short ``repr`` of a bad value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plain_key(key: str) -> bool:
    return bool(key) and key.isprintable() and not any(c in key for c in " .[]'\"")


def keypath(*parts: str | int) -> str:
    """Join key parts the way a user reads them: ``blocks[2].search.kernel``."""
    out = ""
    for part in parts:
        if isinstance(part, str) and not _plain_key(part):
            out += f"[{describe(part, 40)}]"  # a key with spaces, dots or control characters, quoted
        elif isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = part
    return out


def flag_name(option_name: str) -> str:
    """The command-line flag of an option field: ``lambda_`` -> ``--lambda``, ``max_latency`` -> ``--max-latency``."""
    return "--" + option_name.rstrip("_").replace("_", "-")
