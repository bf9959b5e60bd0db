"""Programs on top of the house: the CLI commands, the demo and its scenarios, the live
view and the reference phone. Nothing below imports from here."""

__all__: list[str] = []
