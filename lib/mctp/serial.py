"""MCTP over serial (DSP0253) framing.  Pure byte code, no I/O.

Frame: 0x7E | 0x01 | count | escaped packet | FCS hi | FCS lo | 0x7E

  - count = unescaped packet length; only the packet bytes are escaped
    (0x7E -> 7D 5E, 0x7D -> 7D 5D), as libmctp and Linux send them.
  - FCS = CRC-16/MCRF4XX (RFC 1662 FCS-16 without the final complement) over
    revision, count and the unescaped packet, sent MSB first.

encode_frame(packet) -> bytes
fcs16(data, crc=0xFFFF) -> int
SerialDecoder(max_packet=255).feed(data) -> list of packets (bytes)

The decoder is length driven (it never splits on 0x7E, since FCS and count
bytes are raw and may be 0x7E/0x7D), accepts shared and repeated flags and an
escaped FCS, and on any error re-scans the bytes of the failed frame for the
next flag, so a valid frame hidden after garbage or a truncated frame is still
found.  Its buffers are bounded by the maximum frame size.
"""
from uspdm.compat import const

FLAG = const(0x7E)
ESC = const(0x7D)
REVISION = const(0x01)
MAX_PACKET = const(255)


def _make_table():
    try:
        from array import array

        t = array("H", [0] * 256)
    except ImportError:  # pragma: no cover
        t = [0] * 256
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x8408 if c & 1 else c >> 1
        t[i] = c
    return t


_T = _make_table()


def fcs16(data, crc=0xFFFF):
    """CRC-16/MCRF4XX (reflected 0x1021, init 0xFFFF, no final xor)."""
    t = _T
    for b in data:
        crc = (crc >> 8) ^ t[(crc ^ b) & 0xFF]
    return crc


def _clean(data):
    """True if data holds neither 0x7E nor 0x7D."""
    try:
        return data.find(b"\x7e") < 0 and data.find(b"\x7d") < 0
    except AttributeError:  # MicroPython bytearray/memoryview: no find()
        for b in data:
            if b == FLAG or b == ESC:
                return False
        return True


def _escape_into(out, data):
    if _clean(data):
        out.extend(data)
        return
    for b in data:
        if b == FLAG or b == ESC:
            out.append(ESC)
            out.append(b ^ 0x20)
        else:
            out.append(b)


def encode_frame(packet):
    """One DSP0253 frame (bytes) carrying packet (1..255 bytes)."""
    n = len(packet)
    if n < 1 or n > MAX_PACKET:
        raise ValueError("packet length")
    out = bytearray(b"\x7e\x01")
    out.append(n)
    _escape_into(out, packet)
    crc = fcs16(packet, fcs16(out[1:3]))
    out.append(crc >> 8)
    out.append(crc & 0xFF)
    out.append(FLAG)
    return bytes(out)


# decoder states
_HUNT = const(0)  # looking for a flag
_FLAG = const(1)  # after a flag: revision (or more flags)
_LEN = const(2)  # byte count
_DATA = const(3)  # packet bytes
_ESC = const(4)  # after 0x7D inside the packet
_TAIL = const(5)  # FCS (raw or escaped) and closing flag


class SerialDecoder:
    """Streaming DSP0253 decoder.

    feed(data) -> list of complete packets (bytes) with a good FCS.
    Counters: frames (good), dropped (all errors), err_fcs, err_len, err_rev,
    err_abort (flag inside a frame / truncated), skipped (bytes outside frames).
    """

    def __init__(self, max_packet=MAX_PACKET, min_packet=4):
        self.max_packet = max_packet
        self.min_packet = min_packet
        self.frames = 0
        self.dropped = 0
        self.err_fcs = 0
        self.err_len = 0
        self.err_rev = 0
        self.err_abort = 0
        self.skipped = 0
        self.reset()

    def reset(self):
        self._state = _HUNT
        self._raw = bytearray()  # raw bytes of the frame in progress (from its flag)
        self._pkt = None  # preallocated unescaped packet
        self._n = 0  # bytes of _pkt filled
        self._count = 0
        self._tail = None  # candidate FCS+flag encodings (raw, escaped)
        self._tpos = 0

    def buffered(self):
        return len(self._raw) + (len(self._pkt) if self._pkt is not None else 0)

    def feed(self, data):
        out = []
        try:
            if not isinstance(data, bytes):
                data = bytes(data)
            self._run(data, out)
        except Exception:  # never raise on wire data
            self.dropped += 1
            self.reset()
        return out

    def _run(self, data, out):
        # Segments still to scan, last one first.  An error re-queues the raw
        # bytes of the failed frame after its opening flag; each error drops
        # at least that flag, so this terminates, without recursion.
        stack = [(data, 0)]
        while stack:
            seg, i = stack.pop()
            r = self._scan(seg, i, out)
            if r is not None:
                if r[1] < len(seg):
                    stack.append((seg, r[1]))
                if r[0]:
                    stack.append((r[0], 0))

    def _scan(self, data, i, out):
        n = len(data)
        mv = memoryview(data)
        fstart = i  # where the current frame's bytes start in data
        while i < n:
            st = self._state
            if st == _HUNT:
                j = data.find(b"\x7e", i)
                if j < 0:
                    self.skipped += n - i
                    return None
                self.skipped += j - i
                fstart = j
                self._state = _FLAG
                i = j + 1
                continue
            err = False
            if st == _DATA:
                # bulk copy up to the next flag/escape byte
                k = self._n
                end = i + self._count - k
                if end > n:
                    end = n
                j = data.find(b"\x7e", i, end)
                e = data.find(b"\x7d", i, end)
                if j < 0 or (0 <= e < j):
                    j = e
                if j < 0:
                    j = end
                if j > i:
                    self._pkt[k:k + j - i] = mv[i:j]
                    k += j - i
                    self._n = k
                    i = j
                if k == self._count:
                    self._start_tail()
                elif i < end:
                    i += 1
                    if data[j] == FLAG:
                        self.err_abort += 1
                        err = True
                    else:
                        self._state = _ESC
                if not err:
                    continue
            else:
                b = data[i]
                i += 1
                if st == _FLAG:
                    if b == FLAG:
                        # repeated flag: the frame starts at this one
                        fstart = i - 1
                        if self._raw:
                            self._raw = bytearray()
                    elif b == REVISION:
                        self._state = _LEN
                    else:
                        self.err_rev += 1
                        err = True
                elif st == _LEN:
                    if b < self.min_packet or b > self.max_packet:
                        self.err_len += 1
                        err = True
                    else:
                        self._count = b
                        self._pkt = bytearray(b)
                        self._n = 0
                        self._state = _DATA
                elif st == _ESC:
                    if b == FLAG:
                        self.err_abort += 1
                        err = True
                    else:
                        self._pkt[self._n] = b ^ 0x20
                        self._n += 1
                        if self._n == self._count:
                            self._start_tail()
                        else:
                            self._state = _DATA
                else:  # _TAIL
                    p = self._tpos
                    raw, esc = self._tail
                    ok_raw = raw is not None and raw[p] == b
                    ok_esc = esc is not None and p < len(esc) and esc[p] == b
                    self._tpos = p + 1
                    if ok_raw and p == 2 or ok_esc and p + 1 == len(esc):
                        out.append(bytes(self._pkt))
                        self.frames += 1
                        self._pkt = None
                        self._tail = None
                        # the closing flag may also open the next frame
                        self._state = _FLAG
                        if self._raw:
                            self._raw = bytearray()
                        fstart = i - 1
                    elif ok_raw or ok_esc:
                        self._tail = (raw if ok_raw else None, esc if ok_esc else None)
                    else:
                        self.err_fcs += 1
                        err = True
            if err:
                raw = self._raw
                raw.extend(mv[fstart:i])
                self.dropped += 1
                self._state = _HUNT
                self._pkt = None
                self._tail = None
                self._raw = bytearray()
                return (bytes(raw[1:]) if len(raw) > 1 else None), i
        if self._state != _HUNT:
            self._raw.extend(mv[fstart:n])
        return None

    def _start_tail(self):
        t = _T
        c = (0xFFFF >> 8) ^ t[(0xFFFF ^ REVISION) & 0xFF]
        c = (c >> 8) ^ t[(c ^ self._count) & 0xFF]
        c = fcs16(self._pkt, c)
        hi = c >> 8
        lo = c & 0xFF
        raw = bytes((hi, lo, FLAG))
        esc = None
        if hi == FLAG or hi == ESC or lo == FLAG or lo == ESC:
            e = bytearray()
            _escape_into(e, raw[:2])
            e.append(FLAG)
            esc = bytes(e)
        self._tail = (raw, esc)
        self._tpos = 0
        self._state = _TAIL
