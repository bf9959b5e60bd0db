"""Card-side behaviour for the udp emulator: Type 2 memory, Type 4 / HCE phone, Type 3.

Each card answers one reader command at a time (``handle``); the session loop lives in
:mod:`edge.nfc.emulator`. Type 3 reuses nfcpy's own ``Type3TagEmulation``; nfcpy 1.0.4
emulates no other tag type, so Type 2 and ISO-DEP are answered here byte by byte.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import nfc.clf

__all__ = ["IsoDepCard", "Type2Card", "Type3Card", "type2_image", "type3_blocks"]

_NDEF_AID = bytes.fromhex("D2760000850101")
_SW_OK, _SW_NOT_FOUND, _SW_DENIED = b"\x90\x00", b"\x6a\x82", b"\x69\x82"
_SW_BAD_P1P2, _SW_INS = b"\x6b\x00", b"\x6d\x00"
_ACK, _NAK = b"\x0a", b"\x00"


def type2_image(ndef: bytes, *, data_size: int = 144, read_only: bool = False) -> bytearray:
    """Memory of a Type 2 tag (NTAG213-like: 144 data bytes) holding ``ndef``."""
    header = bytearray(16)
    header[0:4] = bytes.fromhex("5312ab34")  # UID0 0x53: not NXP, no GET_VERSION probing
    header[12:16] = bytes([0xE1, 0x10, data_size // 8, 0x0F if read_only else 0x00])
    tlv = bytes([0x03, len(ndef)]) + ndef + b"\xfe" if len(ndef) < 255 else (
        b"\x03\xff" + struct.pack(">H", len(ndef)) + ndef + b"\xfe")
    if len(tlv) > data_size:
        raise ValueError(f"{len(ndef)} byte message does not fit {data_size} byte tag")
    return header + tlv + bytes(data_size - len(tlv))


class Type2Card:
    """NFC Forum Type 2 tag: READ (0x30) returns 16 bytes, WRITE (0xA2) 4 bytes + ACK."""

    brty = "106A"

    def __init__(self, memory: bytearray, uid: bytes = bytes.fromhex("5312ab34cd5678")) -> None:
        self.memory = memory
        self.uid = uid

    def local_target(self) -> Any:
        return nfc.clf.LocalTarget(
            "106A", sens_res=bytearray(b"\x44\x00"), sdd_res=bytearray(self.uid),
            sel_res=bytearray(b"\x00"),
        )

    def first_command(self, target: Any) -> bytes | None:
        return bytes(target.tt2_cmd) if target.tt2_cmd else None

    def handle(self, cmd: bytes | bytearray) -> bytes | None:
        pages = len(self.memory) // 4
        if len(cmd) == 2 and cmd[0] == 0x30:
            start = cmd[1] * 4
            if cmd[1] >= pages:
                return _NAK
            return bytes((self.memory + self.memory[:16])[start:start + 16])  # rolls over
        if len(cmd) == 6 and cmd[0] == 0xA2:
            page = cmd[1]
            writable = self.memory[15] & 0x0F == 0 or page < 3
            if page < 3 or page >= pages or not writable:
                return _NAK
            self.memory[page * 4:page * 4 + 4] = cmd[2:6]
            return _ACK
        return None  # unsupported: a Type 2 tag goes mute


class IsoDepCard:
    """ISO 14443-4 card: a Type 4 NDEF tag, an HCE phone answering our AID, or both.

    ``token`` returns the phone's current 8-byte rotating token; with ``aids`` the card
    answers only those AIDs (others get 6A82, like a phone without our app).
    """

    brty = "106A"

    def __init__(
        self,
        *,
        ndef: bytes | None = None,
        capacity: int = 1024,
        read_only: bool = False,
        token: Callable[[], bytes] | None = None,
        aid: bytes | None = None,
        uid: bytes = bytes.fromhex("08a1b2c3"),
    ) -> None:
        self.ndef_file = bytearray(struct.pack(">H", len(ndef or b"")) + (ndef or b""))
        self.ndef_file += bytes(max(0, capacity + 2 - len(self.ndef_file)))
        self.has_ndef = ndef is not None
        self.read_only = read_only
        self.token = token
        self.aid = aid
        self.uid = uid
        cc = struct.pack(">HBHHBBHHBB", 15, 0x20, 0xF0, 0xF0, 4, 6, 0xE104, capacity + 2, 0,
                         0xFF if read_only else 0x00)
        self._files = {b"\xe1\x03": bytearray(cc), b"\xe1\x04": self.ndef_file}
        self._app: bytes | None = None
        self._file: bytearray | None = None
        self._pcb = 0x02

    def local_target(self) -> Any:
        return nfc.clf.LocalTarget(
            "106A", sens_res=bytearray(b"\x04\x00"), sdd_res=bytearray(self.uid),
            sel_res=bytearray(b"\x20"),
        )

    def first_command(self, target: Any) -> bytes | None:
        self._app = self._file = None
        return bytes(target.tt4_cmd) if target.tt4_cmd else None

    def handle(self, cmd: bytes | bytearray) -> bytes | None:
        if cmd[:1] == b"\xe0":  # RATS -> ATS: FSCI 8 (256 bytes), FWI 8 (~77 ms)
            return bytes.fromhex("0578808002")
        pcb = cmd[0]
        if pcb & 0xE6 == 0x02:  # I-block
            return bytes([pcb & 0x03 | 0x02]) + self._apdu(cmd[1:])
        if pcb & 0xF6 == 0xB2:  # R(NAK): presence check -> R(ACK) with our block number
            return bytes([0xA2 | (pcb & 1)])
        if pcb & 0xF7 == 0xC2:  # S(DESELECT)
            return bytes([pcb])
        return None

    def _apdu(self, apdu: bytes | bytearray) -> bytes:
        if len(apdu) < 4:
            return _SW_INS
        ins, p1, p2 = apdu[1], apdu[2], apdu[3]
        body = apdu[5:5 + apdu[4]] if len(apdu) > 5 else b""
        if ins == 0xA4 and p1 == 0x04:
            return self._select_aid(body)
        if ins == 0xA4 and p1 == 0x00 and self._app == _NDEF_AID:
            self._file = self._files.get(bytes(body))
            return _SW_OK if self._file is not None else _SW_NOT_FOUND
        if ins == 0xB0 and self._file is not None:
            offset, le = p1 << 8 | p2, (apdu[4] or 256) if len(apdu) == 5 else 0
            if offset > len(self._file):
                return _SW_BAD_P1P2
            return bytes(self._file[offset:offset + le]) + _SW_OK
        if ins == 0xD6 and self._file is self.ndef_file:
            offset = p1 << 8 | p2
            if self.read_only:
                return _SW_DENIED
            if offset + len(body) > len(self._file):
                return _SW_BAD_P1P2
            self._file[offset:offset + len(body)] = body
            return _SW_OK
        return _SW_INS

    def _select_aid(self, aid: bytes | bytearray) -> bytes:
        self._app = self._file = None
        if self.token is not None and aid == self.aid:
            return self.token() + _SW_OK
        if self.has_ndef and aid == _NDEF_AID:
            self._app = _NDEF_AID
            return _SW_OK
        return _SW_NOT_FOUND


def type3_blocks(ndef: bytes, *, nmaxb: int = 13) -> list[bytearray]:
    """Blocks of a Type 3 tag: attribute block (block 0) then NDEF data blocks."""
    attr = bytearray(struct.pack(">BBBH4xBB", 0x10, 4, 4, nmaxb, 0, 1))
    attr += struct.pack(">I", len(ndef))[1:]
    attr += struct.pack(">H", sum(attr[0:14]))
    if len(ndef) > nmaxb * 16:
        raise ValueError(f"{len(ndef)} byte message does not fit {nmaxb * 16} byte tag")
    data = ndef + bytes(nmaxb * 16 - len(ndef))
    return [attr] + [bytearray(data[i:i + 16]) for i in range(0, nmaxb * 16, 16)]


class Type3Card:
    """FeliCa-based Type 3 tag, driven by nfcpy's own ``Type3TagEmulation``."""

    brty = "212F"

    def __init__(self, blocks: list[bytearray], idm: bytes = bytes.fromhex("03fe0011aabbccdd")):
        self.blocks = blocks
        self.idm = idm
        self.emulation: Any = None

    def local_target(self) -> Any:
        sensf_res = b"\x01" + self.idm + b"\xff" * 8 + b"\x12\xfc"
        return nfc.clf.LocalTarget("212F", sensf_res=bytearray(sensf_res))

    def bind(self, emulation: Any) -> None:
        self.emulation = emulation
        emulation.add_service(0x0009, self._read, self._write)
        emulation.add_service(0x000B, self._read, lambda *a: False)

    def _read(self, block: int, rb: object, re: object) -> bytearray | None:
        return self.blocks[block] if block < len(self.blocks) else None

    def _write(self, block: int, data: bytearray, wb: object, we: object) -> bool:
        if block >= len(self.blocks):
            return False
        self.blocks[block][:] = data
        return True
