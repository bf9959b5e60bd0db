"""Secret files: written atomically (owner-only, never half-written); read one line.

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

from aislecast.kernel.errors import ConfigError

__all__ = ["read_secret", "write_private"]


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


def read_secret(path: str, field: str, *, file: str | None = None) -> str:
    """The first line of the secret file ``path`` (a password), or a :class:`ConfigError`
    naming ``field``. The secret itself never appears in a message."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        problem = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(field, f"cannot read {path}: {problem}", file=file,
                          hint="point it at a readable file holding the password") from None
    if not lines or not lines[0]:
        raise ConfigError(field, f"{path} is empty", file=file,
                          hint="write the broker password on its first line")
    return lines[0]
