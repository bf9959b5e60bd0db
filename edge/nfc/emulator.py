"""A card on the far side of nfcpy's udp driver, for tests, benchmarks and the demo.

:class:`CardEmulator` plays a :mod:`~edge.nfc._cards` card on ``udp:HOST:PORT``: it
enters the field (binds the port and listens), answers the reader command by command,
and leaves when the reader switches RF off, when a command wait times out, or after
``vanish_after`` answers (a tag pulled away mid-read or mid-write). It runs on its own
thread because nfcpy blocks; every wait is bounded, so leaving the context is prompt.
"""

from __future__ import annotations

import contextlib
import errno
import random
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import nfc
import nfc.clf
import nfc.tag

from aislecast.kernel.logs import get_logger
from edge.nfc._cards import IsoDepCard, Type2Card, Type3Card, type2_image, type3_blocks

__all__ = [
    "CardEmulator",
    "IsoDepCard",
    "Type2Card",
    "Type3Card",
    "free_udp_port",
    "type2_image",
    "type3_blocks",
]

log = get_logger(__name__)
Card = Type2Card | Type3Card | IsoDepCard


def free_udp_port(low: int = 20000, high: int = 32000) -> int:
    """A UDP port free right now, below the ephemeral range (docs/architecture.md#nfc-with-nfcpy)."""
    for _ in range(500):
        port = random.randrange(low, high)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("0.0.0.0", port))  # noqa: S104 - the udp driver listens there
            except OSError:
                continue
            return port
    raise OSError(errno.EADDRINUSE, f"no free UDP port in {low}-{high}")


class CardEmulator:
    """Present ``card`` to a reader ``presentations`` times (None: until stopped).

    ``gap_s`` (seconds, or a callable giving them) is how long the card stays out of the
    field between presentations. ``presented_at`` holds ``time.monotonic()`` at each
    entry into the field; ``sessions`` counts completed reader sessions.
    """

    def __init__(
        self,
        port: int,
        card: Card,
        *,
        presentations: int | None = None,
        gap_s: float | Callable[[], float] = 0.0,
        timeout: float = 0.25,
        vanish_after: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.port, self.card, self.host = port, card, host
        self.presentations = presentations
        self._gap = gap_s if callable(gap_s) else (lambda: float(gap_s))
        self.timeout = timeout
        self.vanish_after = vanish_after
        self.presented_at: list[float] = []
        self.sessions = 0
        self.commands = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("CardEmulator is not re-entrant")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("0.0.0.0", self.port))  # noqa: S104
            except OSError as exc:
                raise OSError(exc.errno, f"emulator port {self.port} is in use: {exc}") from exc
        self._thread = threading.Thread(target=self._run, name=f"nfc-card {self.port}",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3.0)

    def wait_sessions(self, count: int, timeout: float) -> bool:
        """Block until ``count`` sessions are done (call via ``asyncio.to_thread``)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.sessions >= count, timeout)

    def _run(self) -> None:
        clf = nfc.ContactlessFrontend(f"udp:{self.host}:{self.port}")
        try:
            done = 0
            while not self._stop.is_set() and (
                self.presentations is None or done < self.presentations
            ):
                gap = self._gap()
                if gap > 0 and self._stop.wait(gap):
                    break
                self.presented_at.append(time.monotonic())
                target = self._listen(clf)
                if target is None:
                    break
                self._session(clf, target)
                done += 1
                with self._cond:
                    self.sessions += 1
                    self._cond.notify_all()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("card emulator failed")
        finally:
            with contextlib.suppress(Exception):
                clf.close()

    def _listen(self, clf: Any) -> Any:
        while not self._stop.is_set():
            target = clf.listen(self.card.local_target(), 0.1)
            if target is not None:
                return target
            sock = clf.device.socket
            if sock is None or sock.getsockname()[1] != self.port:
                self.error = f"port {self.port} in use: cannot listen"
                log.error(self.error)
                return None
        return None

    def _session(self, clf: Any, target: Any) -> None:
        handle: Callable[[Any], Any]
        if isinstance(self.card, Type3Card):
            emulation = nfc.tag.emulate(clf, target)
            self.card.bind(emulation)
            cmd: Any = emulation.cmd
            handle = emulation.process_command
        else:
            cmd = self.card.first_command(target)
            handle = self.card.handle
        answered = 0
        while cmd is not None and not self._stop.is_set():
            if self.vanish_after is not None and answered >= self.vanish_after:
                break  # pulled out of the field: go silent
            rsp = handle(bytearray(cmd))
            answered += 1
            self.commands += 1
            try:
                cmd = clf.exchange(rsp, self.timeout)
            except nfc.clf.CommunicationError:  # RFOFF from the reader, or it went quiet
                break
        clf.device.mute()  # leave the field: close the port
