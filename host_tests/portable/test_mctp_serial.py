"""DSP0253 serial framing: worked example, CRC check value, escapes, resync."""
from _util import unhex

from mctp import serial

GET_EID = unhex("010008C8008002")
GET_EID_FRAME = unhex("7E010701 0008C800 80022BC1 7E".replace(" ", ""))


def _crc_bitwise(data, crc=0xFFFF):
    # reference: reflected CCITT, bit by bit (RFC 1662 without the final complement)
    for b in data:
        crc ^= b
        for _ in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ 0x8408
            else:
                crc >>= 1
    return crc


def _frame_by_hand(pkt, escape_fcs=False):
    out = bytearray(b"\x7e\x01")
    out.append(len(pkt))
    for b in pkt:
        if b in (0x7E, 0x7D):
            out.extend(bytes((0x7D, b ^ 0x20)))
        else:
            out.append(b)
    c = _crc_bitwise(bytes((1, len(pkt))) + bytes(pkt))
    for b in (c >> 8, c & 0xFF):
        if escape_fcs and b in (0x7E, 0x7D):
            out.extend(bytes((0x7D, b ^ 0x20)))
        else:
            out.append(b)
    out.append(0x7E)
    return bytes(out)


def _find_pkt_with_fcs_byte(value, hi):
    # a packet whose FCS high (or low) byte equals value
    for i in range(65536):
        pkt = bytes((0x01, 0x08, 0x09, 0xC8, 0x05, i >> 8, i & 0xFF))
        c = _crc_bitwise(bytes((1, len(pkt))) + pkt)
        if ((c >> 8) if hi else (c & 0xFF)) == value:
            return pkt
    raise AssertionError("no packet found")


def test_check_value():
    assert serial.fcs16(b"123456789") == 0x6F91
    assert _crc_bitwise(b"123456789") == 0x6F91


def test_worked_example():
    assert serial.encode_frame(GET_EID) == GET_EID_FRAME
    d = serial.SerialDecoder()
    assert d.feed(GET_EID_FRAME) == [GET_EID]
    assert d.frames == 1 and d.dropped == 0


def test_round_trip_sizes():
    d = serial.SerialDecoder()
    for n in (4, 5, 68, 100, 126, 200, 255):
        pkt = bytes((0x01, 0x00, 0x08, 0xC8)) + bytes((i * 7 + n) & 0xFF for i in range(n - 4))
        f = serial.encode_frame(pkt)
        assert f == _frame_by_hand(pkt)
        assert d.feed(f) == [pkt]


def test_escapes_in_packet():
    pkt = bytes((0x01, 0x7E, 0x7D, 0xC8, 0x05, 0x7E, 0x7E, 0x7D, 0x5E, 0x5D, 0x20))
    f = serial.encode_frame(pkt)
    assert f == _frame_by_hand(pkt)
    assert f[4:6] == b"\x7d\x5e" and f[6:8] == b"\x7d\x5d"
    flags = len([b for b in f if b == 0x7E])
    assert flags == 2 + len([b for b in f[-3:-1] if b == 0x7E])
    d = serial.SerialDecoder()
    assert d.feed(f) == [pkt]
    # byte by byte
    out = []
    for i in range(len(f)):
        out += d.feed(f[i:i + 1])
    assert out == [pkt]


def test_fcs_bytes_that_are_flags():
    for value in (0x7E, 0x7D):
        for hi in (True, False):
            pkt = _find_pkt_with_fcs_byte(value, hi)
            f = serial.encode_frame(pkt)
            # the FCS is sent raw (libmctp/Linux)
            assert f == _frame_by_hand(pkt), (value, hi)
            assert f[-3 if hi else -2] == value
            d = serial.SerialDecoder()
            assert d.feed(f) == [pkt]
            # followed by another frame sharing nothing
            assert d.feed(f + GET_EID_FRAME) == [pkt, GET_EID]
            # lenient receive: an escaped FCS is accepted too
            fe = _frame_by_hand(pkt, escape_fcs=True)
            assert fe != f
            assert d.feed(fe) == [pkt]
            # byte by byte
            out = []
            for i in range(len(f)):
                out += d.feed(f[i:i + 1])
            assert out == [pkt]


def test_shared_and_repeated_flags():
    f = GET_EID_FRAME
    d = serial.SerialDecoder()
    shared = f + f[1:] + f[1:]
    assert d.feed(shared) == [GET_EID] * 3
    assert d.feed(b"\x7e\x7e\x7e" + f + b"\x7e\x7e") == [GET_EID]
    assert d.dropped == 0


def test_garbage_and_truncation_resync():
    f = GET_EID_FRAME
    d = serial.SerialDecoder()
    cases = [
        b"\x00\x01\x02garbage",
        f[:1],
        f[:2],  # 7E 01: the next flag is read as a count of 126
        f[:3],
        f[:7],
        f[:-3],  # missing FCS
        b"\x7e\x02\x07",  # bad revision
        b"\x7e\x01\x02",  # count too small
        b"\x7e\x01\x07\x01\x7d",  # escape then flag
        f[:-3] + b"\x00\x00\x7e",  # bad FCS
        bytes(range(256)),
        b"\x7d\x7d\x7e\x01\xff",
    ]
    for g in cases:
        assert d.feed(g + f) == [GET_EID], g
        assert d.feed(g) == []
        assert d.feed(f + f) == [GET_EID, GET_EID], g
    assert d.dropped > 0 and d.err_fcs > 0 and d.err_rev > 0 and d.err_len > 0 and d.err_abort > 0


def test_missing_closing_flag():
    # the next frame's opening flag closes the frame (a shared flag)
    f = GET_EID_FRAME
    d = serial.SerialDecoder()
    assert d.feed(f[:-1] + f) == [GET_EID, GET_EID]
    assert d.feed(f[:-1] + b"\x00" + f) == [GET_EID]
    assert d.err_fcs == 1


def test_bad_fcs_dropped():
    bad = bytearray(GET_EID_FRAME)
    bad[5] ^= 1
    d = serial.SerialDecoder()
    assert d.feed(bytes(bad)) == []
    assert d.err_fcs == 1
    assert d.feed(GET_EID_FRAME) == [GET_EID]


def test_bounded_buffer():
    d = serial.SerialDecoder()
    junk = bytes((i * 37) & 0xFF for i in range(2000))
    for i in range(0, len(junk), 100):
        d.feed(junk[i:i + 100])
        assert d.buffered() <= 2 * 255 + 16
    # a frame that never closes
    d.feed(b"\x7e\x01\xff" + b"\x7d\x5e" * 300)
    assert d.buffered() <= 2 * 255 + 16
    assert d.feed(GET_EID_FRAME) == [GET_EID]


def test_encode_rejects_bad_length():
    for n in (0, 256):
        try:
            serial.encode_frame(bytes(n))
        except ValueError:
            pass
        else:
            raise AssertionError(n)
