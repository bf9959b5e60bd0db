"""hq package."""

__all__: list[str] = []
