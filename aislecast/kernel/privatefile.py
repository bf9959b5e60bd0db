"""Write a secret file atomically: readable by its owner only, never half-written.

Keys, certificates, the broker's password and ACL files are replaced whole: the data
goes to a temporary file in the same directory (created 0600 by ``mkstemp``, so the
secret is never world-readable, not even for a moment), is flushed to disk, and is then
renamed over the target; the directory is flushed too, so after a crash the target holds
either the old or the new content, never a truncated mix (Mosquitto's dynsec plugin
truncates its file in place, and a crash then locks every client out).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["write_private"]


def write_private(path: Path, data: bytes | str, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically (temp file + fsync + rename), ``mode`` 0600."""
    raw = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
