"""aislecast: in-store proximity marketing (shared contract, CLI and demo)."""

from __future__ import annotations

from aislecast._version import __version__

__all__ = ["__version__"]
