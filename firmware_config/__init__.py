"""firmware_config package."""

__all__: list[str] = []
