"""Opt-in memory probe for the soak's gateway process (:mod:`benchmarks.soak_gateway`).

``AISLECAST_SOAK_PROBE=DIR``: every sample also carries the process's anonymous and
file-backed memory (``/proc/self/smaps_rollup``), SQLite's own heap
(``sqlite3_memory_used``: page caches, outside Python's allocator) and the live Python
objects (``sys.getallocatedblocks``). With ``AISLECAST_SOAK_TRACEMALLOC=1`` as well it
starts :mod:`tracemalloc` (10 frames): samples carry the traced Python heap and
``DIR/tracemalloc-diff.txt`` lists the top allocations by traceback grown between the
second sample's snapshot and the last one. ``AISLECAST_SOAK_TRIM=1``
calls glibc's ``malloc_trim(0)`` before each RSS sample: RSS that goes away under it was
freed memory glibc had kept (fragmentation), not live objects.

Off by default: tracemalloc slows every allocation, so the soak's latency rows are not
comparable with it on.
"""

from __future__ import annotations

import _sqlite3  # the C module; its library exports sqlite3_memory_used
import ctypes
import ctypes.util
import os
import sys
import tracemalloc
from pathlib import Path
from typing import Any

__all__ = ["Probe"]

_FRAMES = 10
_TOP = 25


def _smaps() -> dict[str, int]:
    """kB fields of /proc/self/smaps_rollup that tell heap from mapped files."""
    out: dict[str, int] = {}
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in {"Rss", "Anonymous", "Private_Dirty", "Shared_Clean", "Private_Clean"}:
                out[key.lower()] = int(rest.split()[0])
    except OSError:
        pass
    return out


class Probe:
    def __init__(self) -> None:
        d = os.environ.get("AISLECAST_SOAK_PROBE", "")
        self.dir = Path(d) if d else None
        self.trim = os.environ.get("AISLECAST_SOAK_TRIM") == "1"
        self._trim_fn: Any = None
        if self.trim:
            self._trim_fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        self._sqlite_used: Any = None
        try:
            used = ctypes.CDLL(str(_sqlite3.__file__)).sqlite3_memory_used
            used.restype = ctypes.c_int64
            self._sqlite_used = used
        except (OSError, AttributeError):
            pass
        self.traced = os.environ.get("AISLECAST_SOAK_TRACEMALLOC") == "1"
        self._first: tracemalloc.Snapshot | None = None
        self._last: tracemalloc.Snapshot | None = None
        self._peak: tracemalloc.Snapshot | None = None
        self._peak_size = 0
        if self.dir is not None and self.traced:
            tracemalloc.start(_FRAMES)

    def sample(self, *, snapshot: bool) -> dict[str, Any]:
        """Fields to add to one sample row (empty when the probe is off)."""
        row: dict[str, Any] = {}
        if self._trim_fn is not None:
            self._trim_fn(0)
        if self.dir is None:
            return row
        row["smaps_kb"] = _smaps()
        row["py_blocks"] = sys.getallocatedblocks()
        if self._sqlite_used is not None:
            row["sqlite_mib"] = round(self._sqlite_used() / 2**20, 3)
        if not self.traced:
            return row
        row["traced_mib"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 3)
        if snapshot:
            snap = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)])
            if self._first is None:
                self._first = snap
            self._last = snap
            size = tracemalloc.get_traced_memory()[0]
            if size > self._peak_size:
                self._peak, self._peak_size = snap, size
        return row

    def malloc_stats(self, name: str) -> None:
        """``DIR/NAME``: Python's object allocator's arenas, pools and free blocks
        (``sys._debugmallocstats``, which writes on file descriptor 2)."""
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            with (self.dir / name).open("wb") as f:
                os.dup2(f.fileno(), 2)
                sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)

    def write(self) -> None:
        """``tracemalloc-diff.txt`` (last snapshot against the first) and
        ``tracemalloc-peak.txt`` (the snapshot with the most traced memory against the first)."""
        if self.dir is None or self._first is None or self._last is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        _diff(self._last, self._first, self.dir / "tracemalloc-diff.txt")
        if self._peak is not None:
            _diff(self._peak, self._first, self.dir / "tracemalloc-peak.txt")


def _diff(late: tracemalloc.Snapshot, early: tracemalloc.Snapshot, out: Path) -> None:
    lines = []
    for stat in late.compare_to(early, "traceback")[:_TOP]:
        lines.append(f"{stat.size_diff / 1024:+.1f} KiB ({stat.count_diff:+d} blocks), "
                     f"now {stat.size / 1024:.1f} KiB")
        lines += [f"    {f.filename}:{f.lineno}" for f in stat.traceback]
    out.write_text("\n".join(lines) + "\n")
