"""Process figures on demand, for soak runs and operators: `kill -USR1 <edge pid>` writes one line
to stderr, `stats {"process": "edge", "tasks": 5, ...}`. Nothing is served over HTTP, so nothing
is public; the figures cost nothing until asked for.

`native_heap_mib` is the C heap in use (glibc's mallinfo2): memory that Python's own allocators
and tracemalloc never see, where gRPC's native leaks show (issue #16).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import signal
import sys
from typing import Callable

import orjson


@functools.cache
def _mallinfo2():
    """glibc's mallinfo2, or None. ctypes is imported here, on the first stats line: loaded at
    start it would cost every edge ~0.3 MiB (issue #15, idle RSS)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                    "fsmblks", "uordblks", "fordblks", "keepcost")]

    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = MallInfo2
    return fn


def native_heap_bytes() -> int | None:
    """The C heap in use, or None where libc has no mallinfo2 (not glibc, or glibc < 2.33)."""
    fn = _mallinfo2()
    if fn is None:
        return None
    info = fn()
    return info.uordblks + info.hblkhd


def figures(process: str, extra: Callable[[], dict] | None = None) -> dict:
    out = {"process": process, "tasks": len(asyncio.all_tasks()), "gc_objects": len(gc.get_objects()),
           "native_heap_mib": round(heap / 2**20, 2) if (heap := native_heap_bytes()) is not None else None}
    if extra is not None:
        out.update(extra())
    return out


def write_stats(process: str, extra: Callable[[], dict] | None = None) -> None:
    sys.stderr.write("stats " + orjson.dumps(figures(process, extra)).decode() + "\n")
    sys.stderr.flush()


def install(process: str, extra: Callable[[], dict] | None = None) -> None:
    """Answer SIGUSR1 with a stats line (where the loop cannot handle signals, e.g. outside the
    main thread, there are no stats)."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGUSR1, write_stats, process, extra)


def uninstall() -> None:
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
