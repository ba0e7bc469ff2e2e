"""DSP0237 SMBus/I2C framing: worked example, PEC check value, rejections."""
from _util import unhex

from mctp import smbus

GET_EID = unhex("010008C8008002")
# target 0x1D, source 0x10 (wire-notes section 2)
GET_EID_WRITE = unhex("3A0F0821010008C800800256")


def _crc8_bitwise(data):
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def test_pec_check_value():
    assert smbus.crc8(b"123456789") == 0xF4
    assert _crc8_bitwise(b"123456789") == 0xF4
    assert smbus.crc8(GET_EID_WRITE[:-1]) == 0x56


def test_worked_example():
    assert smbus.encode(0x1D, 0x10, GET_EID) == GET_EID_WRITE
    assert smbus.decode(GET_EID_WRITE) == (0x10, GET_EID)
    # a target peripheral does not see its address byte
    assert smbus.decode_target(GET_EID_WRITE[1:], 0x1D) == (0x10, GET_EID)
    assert smbus.decode_target(GET_EID_WRITE[1:], 0x1E) is None  # PEC covers the address


def test_round_trip_sizes():
    for n in (0, 1, 64, 200, 250):
        pkt = bytes((0x01, 0x09, 0x08, 0xC0)) + bytes((i * 13) & 0xFF for i in range(n))
        w = smbus.encode(0x20, 0x42, pkt)
        assert len(w) == n + 9
        assert w[0] == 0x40 and w[1] == 0x0F and w[2] == n + 5 and w[3] == 0x85
        assert w[-1] == _crc8_bitwise(w[:-1])
        assert smbus.decode(w) == (0x42, pkt)
    for bad in (251, 300):
        try:
            smbus.encode(0x20, 0x42, bytes(4 + bad))
        except ValueError:
            pass
        else:
            raise AssertionError(bad)


def _with_pec(b):
    b = bytes(b[:-1])
    return b + bytes((_crc8_bitwise(b),))


def test_rejections():
    w = bytearray(GET_EID_WRITE)
    assert smbus.decode(bytes(w)) is not None
    bad_cmd = bytearray(w)
    bad_cmd[1] = 0x0E
    assert smbus.decode(_with_pec(bad_cmd)) is None
    bad_count = bytearray(w)
    bad_count[2] = 0x09
    assert smbus.decode(_with_pec(bad_count)) is None
    bad_count[2] = 0x07
    assert smbus.decode(_with_pec(bad_count)) is None
    bad_src = bytearray(w)
    bad_src[3] = 0x20  # read/write bit of the source must be 1
    assert smbus.decode(_with_pec(bad_src)) is None
    bad_dst = bytearray(w)
    bad_dst[0] = 0x3B
    assert smbus.decode(_with_pec(bad_dst)) is None
    bad_pec = bytearray(w)
    bad_pec[-1] ^= 0xFF
    assert smbus.decode(bytes(bad_pec)) is None
    for i in range(len(w)):
        assert smbus.decode(bytes(w[:i])) is None
    assert smbus.decode(bytes(w) + b"\x00") is None
    assert smbus.decode(None) is None
    assert smbus.decode_target(b"", 0x1D) is None


def test_rx_counters():
    rx = smbus.SmbusRx(0x1D)
    assert rx.feed(GET_EID_WRITE[1:]) == (0x10, GET_EID)
    assert rx.feed(GET_EID_WRITE[1:-1] + b"\x00") is None
    assert rx.feed(b"\x0f") is None
    assert rx.feed(GET_EID_WRITE, with_addr=True) == (0x10, GET_EID)
    assert rx.ok == 2 and rx.dropped == 2
    assert rx.errors.get("pec") == 1
