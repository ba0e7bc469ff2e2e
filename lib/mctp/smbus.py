"""MCTP over SMBus/I2C (DSP0237) framing.  Pure byte code, no I/O.

    [dest7<<1|0] [0x0F] [count] [src7<<1|1] [MCTP packet] [PEC]

count = 1 + len(packet) (PEC excluded); PEC = SMBus CRC-8 (poly 0x07, init 0)
over every byte from the destination address byte to the last packet byte.

encode(dest_addr7, src_addr7, packet) -> bytes, starting with dest<<1.  An I2C
    controller write to dest sends encode(...)[1:].
decode(frame) -> (src_addr7, packet) or None (frame includes the dest byte).
decode_target(data, own_addr7) -> (src_addr7, packet) or None, for a target
    peripheral that received everything after its address byte.
SmbusRx(own_addr7): the same with drop counters.
crc8(data, crc=0) -> int
"""
from uspdm.compat import const

COMMAND_MCTP = const(0x0F)
MAX_PAYLOAD = const(250)
MAX_PACKET = const(254)  # 4-byte header + 250


def _make_table():
    t = bytearray(256)
    for i in range(256):
        c = i
        for _ in range(8):
            c = ((c << 1) ^ 0x07) & 0xFF if c & 0x80 else (c << 1) & 0xFF
        t[i] = c
    return bytes(t)


_T = _make_table()


def crc8(data, crc=0):
    """SMBus PEC: CRC-8 poly 0x07, init 0, no reflection, no final xor."""
    t = _T
    for b in data:
        crc = t[crc ^ b]
    return crc


def encode(dest_addr7, src_addr7, packet):
    """The full write (address byte first, PEC last) carrying one MCTP packet."""
    n = len(packet)
    if n < 4 or n > MAX_PACKET:
        raise ValueError("packet length")
    if not (0 <= dest_addr7 < 0x80 and 0 <= src_addr7 < 0x80):
        raise ValueError("address")
    out = bytearray(n + 5)
    out[0] = dest_addr7 << 1
    out[1] = COMMAND_MCTP
    out[2] = n + 1
    out[3] = (src_addr7 << 1) | 1
    out[4:4 + n] = packet
    out[n + 4] = crc8(memoryview(out)[:n + 4])
    return bytes(out)


def check(frame):
    """None if frame (address byte included) is a valid MCTP-over-SMBus
    write, else a short reason string."""
    n = len(frame)
    if n < 9:
        return "short"
    if frame[0] & 1:
        return "dest"
    if frame[1] != COMMAND_MCTP:
        return "command"
    c = frame[2]
    if c < 5 or c + 4 != n:
        return "count"
    if not frame[3] & 1:
        return "source"
    if crc8(memoryview(frame)[:n - 1]) != frame[n - 1]:
        return "pec"
    return None


def decode(frame):
    """(src_addr7, packet) of a full write (address byte first), or None."""
    try:
        if check(frame) is not None:
            return None
        return frame[3] >> 1, bytes(frame[4:len(frame) - 1])
    except Exception:
        return None


def decode_target(data, own_addr7):
    """decode() for a target that did not receive its address byte."""
    try:
        return decode(bytes(((own_addr7 & 0x7F) << 1,)) + bytes(data))
    except Exception:
        return None


class SmbusRx:
    """Target-side receiver with counters: ok, dropped, and per reason
    (errors dict: reason -> count)."""

    def __init__(self, own_addr7):
        self.own_addr7 = own_addr7
        self.ok = 0
        self.dropped = 0
        self.errors = {}

    def feed(self, data, with_addr=False):
        """(src_addr7, packet) or None.  data lacks the address byte unless
        with_addr is true."""
        try:
            frame = bytes(data) if with_addr else bytes(((self.own_addr7 & 0x7F) << 1,)) + bytes(data)
            why = check(frame)
            if why is None and with_addr and frame[0] >> 1 != self.own_addr7:
                why = "address"
        except Exception:
            why = "error"
        if why is not None:
            self.dropped += 1
            self.errors[why] = self.errors.get(why, 0) + 1
            return None
        self.ok += 1
        return frame[3] >> 1, frame[4:len(frame) - 1]
