"""The version of aislecast: written here only (pyproject.toml reads it at build time)."""

from __future__ import annotations

from typing import Final

__all__ = ["__version__"]

__version__: Final = "0.1.0"
