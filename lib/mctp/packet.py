"""MCTP (DSP0236) transport header, packetization and reassembly.  Sans-I/O.

Packet = 4-byte transport header + payload:

    byte 0  header version (low nibble, 1)
    byte 1  destination EID
    byte 2  source EID
    byte 3  _SOM(7) _EOM(6) seq(5:4) _TO(3) tag(2:0)

packetize(dest, src, tag, to, body, mtu) -> list of bytearray packets
iter_packets(...)                        -> the same as a generator
parse_header(pkt) -> (dest, src, flags) or None
Reassembler(max_message, max_contexts, timeout_ms).feed(pkt, now_ms)
    -> None, or (src_eid, tag, to, body) when a message completes.

Reassembly is keyed on (source EID, tag, _TO).  Every malformed or out-of-order
packet silently discards the partial message (and is counted); the memory
held is bounded by max_contexts * max_message.
"""
from uspdm.compat import const

_HDR_VERSION = const(1)
_HDR_LEN = const(4)
_SOM = const(0x80)
_EOM = const(0x40)
_TO = const(0x08)

_EID_NULL = const(0)
_EID_BROADCAST = const(0xFF)

BASELINE_MTU = const(64)

# message types (first body byte, bits 6:0; bit 7 = integrity check)
_MSG_CONTROL = const(0x00)
_MSG_SPDM = const(0x05)
_MSG_SECURED_SPDM = const(0x06)


def header(dest, src, som, eom, seq, to, tag):
    """The 4-byte transport header as bytes."""
    f = (seq & 3) << 4 | (tag & 7)
    if som:
        f |= _SOM
    if eom:
        f |= _EOM
    if to:
        f |= _TO
    return bytes((_HDR_VERSION, dest & 0xFF, src & 0xFF, f))


def parse_header(pkt):
    """(dest, src, flags_byte) of a packet, or None if it is too short or has
    the wrong header version."""
    if pkt is None or len(pkt) < _HDR_LEN or (pkt[0] & 0x0F) != _HDR_VERSION:
        return None
    return pkt[1], pkt[2], pkt[3]


def iter_packets(dest, src, tag, to, body, mtu=BASELINE_MTU, mt=None):
    """Yield the packets (bytearray, header + at most mtu payload bytes) of one
    message.  body includes the message-type byte, or mt (an int) is that byte
    and body the rest (no copy of a large body made just to prepend it)."""
    if mtu < 1:
        raise ValueError("mtu")
    pre = 0 if mt is None else 1
    n = len(body) + pre
    if n == 0:
        raise ValueError("empty message")
    mv = memoryview(body)
    base = (tag & 7) | (_TO if to else 0)
    off = 0
    seq = 0
    while off < n:
        k = n - off
        if k > mtu:
            k = mtu
        f = base | (seq << 4)
        if off == 0:
            f |= _SOM
        if off + k >= n:
            f |= _EOM
        p = bytearray(_HDR_LEN + k)
        p[0] = _HDR_VERSION
        p[1] = dest & 0xFF
        p[2] = src & 0xFF
        p[3] = f
        if off == 0 and pre:
            p[_HDR_LEN] = mt
            p[_HDR_LEN + 1:] = mv[0:k - 1]
        else:
            p[_HDR_LEN:] = mv[off - pre:off - pre + k]
        yield p
        off += k
        seq = (seq + 1) & 3


def packetize(dest, src, tag, to, body, mtu=BASELINE_MTU, mt=None):
    """List of packets (bytearray) carrying body (mt: see iter_packets) from src to dest."""
    return list(iter_packets(dest, src, tag, to, body, mtu, mt))


class Reassembler:
    """Reassembles messages from packets (DSP0236 8.8 rules).

    feed(pkt, now_ms) -> None or (src_eid, tag, to, body).  body is bytes or
    bytearray (owned by the caller).  now_ms is any millisecond counter the
    caller owns; a context idle for more than timeout_ms (or if the counter
    goes backwards, e.g. a ticks_ms wrap) is dropped.

    Counters (ints): messages, dropped (every discarded packet or partial
    message), too_big, evicted, expired, over_budget.

    room: None, or a callable returning how many more bytes may be buffered
    now (a budget the caller shares with its other buffers, e.g. CHUNK_SEND):
    a partial message that would exceed it first evicts the oldest other
    partial message, and is dropped if that is not enough.
    """

    def __init__(self, max_message=4160, max_contexts=4, timeout_ms=5000):
        self.max_message = max_message
        self.max_contexts = max_contexts if max_contexts > 0 else 1
        self.timeout_ms = timeout_ms
        # key -> [buf, next_seq, first_size, last_ms, order]
        self._ctx = {}
        self._order = 0
        self.messages = 0
        self.dropped = 0
        self.too_big = 0
        self.evicted = 0
        self.expired = 0
        self.over_budget = 0
        self.room = None

    def contexts(self):
        """Number of live reassembly contexts."""
        return len(self._ctx)

    def buffered(self):
        """Bytes currently held by partial messages."""
        t = 0
        for c in self._ctx.values():
            t += len(c[0])
        return t

    def reset(self):
        self._ctx = {}

    def expire(self, now_ms):
        """Drop contexts idle for more than timeout_ms."""
        if not self._ctx:
            return
        dead = None
        for k, c in self._ctx.items():
            d = now_ms - c[3]
            if d < 0 or d > self.timeout_ms:
                if dead is None:
                    dead = []
                dead.append(k)
        if dead:
            for k in dead:
                del self._ctx[k]
                self.expired += 1
                self.dropped += 1

    def _evict_oldest(self, keep):
        old = None
        ctx = self._ctx
        for k, c in ctx.items():
            if k != keep and (old is None or c[4] < ctx[old][4]):
                old = k
        if old is None:
            return False
        del ctx[old]
        self.evicted += 1
        self.dropped += 1
        return True

    def _fits(self, size, key):
        """Room for `size` more bytes of partial message `key` in the shared budget
        (evicting the oldest other partial message once if needed)."""
        room = self.room
        if room is None or size <= room():
            return True
        if self._evict_oldest(key) and size <= room():
            return True
        self.over_budget += 1
        self.dropped += 1
        return False

    def feed(self, pkt, now_ms=0):
        try:
            return self._feed(pkt, now_ms)
        except Exception:  # never raise on wire data
            self.dropped += 1
            return None

    def _feed(self, pkt, now_ms):
        n = len(pkt)
        if n < _HDR_LEN:
            self.dropped += 1
            return None
        self.expire(now_ms)
        src = pkt[2]
        f = pkt[3]
        tag = f & 7
        to = 1 if f & _TO else 0
        seq = (f >> 4) & 3
        key = (src << 4) | (to << 3) | tag
        size = n - _HDR_LEN
        ctx = self._ctx
        if f & _SOM:
            if key in ctx:  # a new _SOM drops the partial message
                del ctx[key]
                self.dropped += 1
            if f & _EOM:
                if size == 0:
                    self.dropped += 1
                    return None
                self.messages += 1
                return src, tag, to, bytes(pkt[_HDR_LEN:])
            if size == 0 or size > self.max_message:
                self.dropped += 1
                if size:
                    self.too_big += 1
                return None
            if len(ctx) >= self.max_contexts:
                self._evict_oldest(None)
            if not self._fits(size, key):
                return None
            buf = bytearray(pkt[_HDR_LEN:])
            self._order += 1
            ctx[key] = [buf, (seq + 1) & 3, size, now_ms, self._order]
            return None
        c = ctx.get(key)
        if c is None:
            self.dropped += 1
            return None
        buf = c[0]
        eom = f & _EOM
        if seq != c[1] or (size != c[2] if not eom else size > c[2]):
            del ctx[key]
            self.dropped += 1
            return None
        if len(buf) + size > self.max_message:
            del ctx[key]
            self.dropped += 1
            self.too_big += 1
            return None
        if not self._fits(size, key):
            del ctx[key]
            return None
        buf.extend(memoryview(pkt)[_HDR_LEN:])
        if eom:
            del ctx[key]
            self.messages += 1
            return src, tag, to, buf
        c[1] = (seq + 1) & 3
        c[3] = now_ms
        return None
