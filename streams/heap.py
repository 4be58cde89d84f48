"""Give freed heap memory back to the operating system.

Thousands of channels that close at once (abandoned calls reaching the idle
timeout) free their memory into glibc's heap, which keeps it: RSS stays at the
peak although Python holds nothing (`bench/memory_abandoned.py`). glibc's
`malloc_trim` returns those free pages. Elsewhere (musl, macOS) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Optional

_libc: Optional[ctypes.CDLL] = None
_checked = False


def _glibc() -> Optional[ctypes.CDLL]:
    global _libc, _checked
    if not _checked:
        _checked = True
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            lib.malloc_trim  # noqa: B018  (raises AttributeError where there is none)
            _libc = lib
        except (OSError, AttributeError):
            _libc = None
    return _libc


def release_free_memory() -> bool:
    """Return free heap pages to the OS; True if anything was released."""
    lib = _glibc()
    return bool(lib.malloc_trim(0)) if lib is not None else False
