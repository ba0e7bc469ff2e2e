"""CHUNK_GET / CHUNK_SEND state (SPDM 1.2+, DSP0274 "Large SPDM message transfer").

CHUNK_RESPONSE: Version | 0x06 | Param1 (bit0 LastChunk) | Param2 Handle |
  ChunkSeqNo u16 | Reserved u16 | ChunkSize u32 | [LargeMessageSize u32, first chunk only] | chunk
CHUNK_SEND:     Version | 0x85 | Param1 (bit0 LastChunk) | Param2 Handle |
  ChunkSeqNo u16 | Reserved u16 | ChunkSize u32 | [LargeMessageSize u32, first chunk only] | chunk
CHUNK_SEND_ACK: Version | 0x05 | Param1 (bit0 EarlyErrorDetected) | Param2 Handle |
  ChunkSeqNo u16 | [response to the large request, after the last chunk]
"""
from uspdm.compat import p16, p32, u16, u32

CHUNK_RESPONSE = 0x06
LAST = 0x01


class Outgoing:
    """A response larger than the requester's DataTransferSize, served by CHUNK_GET."""

    def __init__(self, handle, msg):
        self.handle = handle
        self.msg = msg
        self.seq = 0
        self.off = 0

    def chunk(self, version, dts):
        """Next CHUNK_RESPONSE for the requester's DataTransferSize; returns (bytes, last)."""
        hdr = 12 + (4 if self.seq == 0 else 0)
        room = dts - hdr
        if room <= 0:
            return None, True
        n = min(room, len(self.msg) - self.off)
        last = self.off + n >= len(self.msg)
        # one block of the chunk's size, filled in place (no concatenated copies)
        out = bytearray(hdr + n)
        out[0:4] = bytes((version, CHUNK_RESPONSE, LAST if last else 0, self.handle))
        out[4:6] = p16(self.seq)
        out[8:12] = p32(n)
        if self.seq == 0:
            out[12:16] = p32(len(self.msg))
        out[hdr:hdr + n] = memoryview(self.msg)[self.off:self.off + n]
        self.off += n
        self.seq += 1
        return out, last


class Incoming:
    """Reassembly of a large request sent with CHUNK_SEND.  The buffer grows with what
    actually arrives (a first 42-byte chunk announcing 4 KB pins 42 bytes, not 4 KB);
    `t` is the board time (ms) of the last chunk, for the idle expiry."""

    def __init__(self, handle, size, now=0):
        self.handle = handle
        self.buf = bytearray()
        self.size = size
        self.got = 0
        self.seq = 0
        self.t = now

    def add(self, data, now=None):
        self.buf.extend(data)
        self.got = len(self.buf)
        if now is not None:
            self.t = now

    def done(self):
        return self.got == self.size


def parse_chunk_send(msg):
    """(last, handle, seq, chunk_size, large_size or None, chunk_offset) or None if short."""
    if len(msg) < 12:
        return None
    seq = u16(msg, 4)
    size = u32(msg, 8)
    if seq == 0:
        if len(msg) < 16:
            return None
        return msg[2] & LAST, msg[3], seq, size, u32(msg, 12), 16
    return msg[2] & LAST, msg[3], seq, size, None, 12
