"""Edge-device layer: BLE scanning, NFC reading, frame decoders and the simulated store.

Hardware sits behind one interface each (:class:`edge.scanner.Scanner`); the real and
simulated backends are picked in one factory (:func:`edge.scanner.make_scanner`).
"""

from edge.advert import Advertisement

__all__ = ["Advertisement"]
