"""/proc/cpuinfo, read once: the lowest layer, importing nothing heavy (MKL's set-up reads it before torch loads)."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def _fields() -> dict[str, str]:
    """The first processor's `key : value` lines of /proc/cpuinfo, read once (empty where there is no such file)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpuinfo(key: str) -> str | None:
    """The value of /proc/cpuinfo's first `key` line (None where there is none)."""
    return _fields().get(key)
