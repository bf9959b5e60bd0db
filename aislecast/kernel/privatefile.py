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
import stat
import tempfile
from pathlib import Path

from aislecast.kernel.errors import ConfigError

__all__ = ["check_tls_files", "read_secret", "write_private"]


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


def check_tls_files(section: str, *, ca: str | None, cert: str | None, key: str | None,
                    file: str | None = None) -> None:
    """Refuse, naming ``{section}.tls_*``, TLS settings that cannot work: a missing or
    unreadable file, a certificate without its key (or the other way round), or a private
    key that others than its owner may read (it must be 0600)."""
    if (cert is None) != (key is None):
        missing = "tls_key" if key is None else "tls_cert"
        raise ConfigError(f"{section}.{missing}", "a client certificate needs both tls_cert and "
                          "tls_key", file=file, hint="set both, or neither for server-only TLS")
    for name, path in (("tls_ca", ca), ("tls_cert", cert), ("tls_key", key)):
        if path is None:
            continue
        try:
            st = os.stat(path)
        except OSError as exc:
            raise ConfigError(f"{section}.{name}", f"cannot read {path}: {exc.strerror}", file=file,
                              hint="point it at the PEM file `aislecast hq gateways add --tls` "
                                   "wrote") from None
        if not stat.S_ISREG(st.st_mode) or not os.access(path, os.R_OK):
            raise ConfigError(f"{section}.{name}", f"{path} is not a readable file", file=file,
                              hint="point it at a PEM file this user may read")
        if name == "tls_key" and st.st_mode & 0o077:
            raise ConfigError(f"{section}.tls_key", f"private key {path} is readable by others "
                              f"(mode {stat.S_IMODE(st.st_mode):04o})", file=file,
                              hint=f"chmod 600 {path}")
