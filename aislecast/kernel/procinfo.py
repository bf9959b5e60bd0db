"""Resident memory of a process, read from /proc (Linux), for reports and benchmarks."""

from __future__ import annotations

from pathlib import Path

__all__ = ["rss_mib"]


def rss_mib(pid: int | str = "self") -> float | None:
    """VmRSS of ``pid`` (default: this process) in MiB, or ``None`` where it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
