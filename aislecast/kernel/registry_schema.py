"""What HQ's ``GET /api/broker/registry`` sends a broker on another host.

HQ renders its credential registry into the broker's two files; a broker host's
``aislecast broker sync`` fetches the rendering and writes them. Both sides decode with
this one struct (HQ in ``hq/broker_feed.py``, the sync in
``aislecast/apps/broker_follow.py``), so the route's shape is stated once. ``passwords``
are Mosquitto ``password_file`` lines, ``user:$7$ITER$salt$hash`` (hashes only: HQ never
keeps a plain password); ``version`` is a digest of both files' text, sent as the ETag.
"""

from __future__ import annotations

import msgspec

__all__ = ["RegistryRendering"]


class RegistryRendering(msgspec.Struct, frozen=True):
    """The broker's password-file lines and ACL text, and the version naming them."""

    version: str
    passwords: list[str]  # "user:$7$ITER$salt$hash" lines (newline-terminated), sorted by user
    acl: str
    users: int
    rendered_at: float = 0.0  # Unix time HQ rendered it
