"""Give freed heap memory back to the operating system.

Thousands of channels that close at once (abandoned calls reaching the idle
timeout) free their memory into glibc's heap, which keeps it: RSS stays at the
peak although Python holds nothing (`bench/memory_abandoned.py`). glibc's
`malloc_trim` returns those free pages. Elsewhere (musl, macOS) this is a no-op.

Trimming does not undo the other way glibc keeps a peak: a worker catching up
after a stall allocates a few hundred MB at once across its threads' arenas,
and once live objects are scattered over that space, later allocations touch
it again and RSS creeps back to the peak (a 15 s stall at 150 channels: 520 ->
~700 MB for good). jemalloc returns freed pages on its own (the same stall:
back to ~550 MB), so the images run the worker on it (`LD_PRELOAD`, see
deploy/README.md) and the worker logs which allocator it has.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path
from typing import Optional

JEMALLOC = "libjemalloc.so.2"   # the Debian/Ubuntu package libjemalloc2

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


def allocator() -> str:
    """The malloc this process runs on: "jemalloc" (preloaded), "glibc", or "other"."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:   # not Linux
        return "other"
    if "libjemalloc" in maps:
        return "jemalloc"
    return "glibc" if _glibc() is not None else "other"


def jemalloc_library() -> Optional[str]:
    """The jemalloc shared library name to put in LD_PRELOAD, if one is installed."""
    return ctypes.util.find_library("jemalloc")
