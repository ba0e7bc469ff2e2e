"""Independent decode of our MCTP frames and control responses with pymctp
(scapy layers: serial/UART and SMBus transport, MCTP transport header and
control messages; its FCS comes from crcmod, its PEC from the crc8 package).

pymctp's UART layer does no byte stuffing, so the test undoes (or applies)
the DSP0253 escapes itself before handing frames over.
"""
import random

import crc8
import crcmod.predefined
import pytest

pymctp = pytest.importorskip("pymctp")
from pymctp.layers.mctp.transport import (  # noqa: E402
    SmbusTransport,
    SmbusTransportPacket,
    TransportHdrPacket,
    UartTransport,
    UartTransportPacket,
)
from pymctp.layers.mctp.types import Smbus7bitAddress  # noqa: E402
import pymctp.layers.mctp.control  # noqa: E402,F401  (binds the control layers)

from mctp import control, serial, smbus  # noqa: E402
from mctp.endpoint import Endpoint  # noqa: E402
from mctp.requester import Requester  # noqa: E402
from mctp.packet import packetize  # noqa: E402


def _unstuff(frame):
    """DSP0253 frame -> (revision, count, packet, fcs_bytes) by hand; the
    packet is the only escaped part."""
    assert frame[0] == 0x7E and frame[-1] == 0x7E
    rev, count = frame[1], frame[2]
    pkt = bytearray()
    i = 3
    while len(pkt) < count:
        b = frame[i]
        if b == 0x7D:
            i += 1
            b = frame[i] ^ 0x20
        else:
            assert b != 0x7E
        pkt.append(b)
        i += 1
    fcs = frame[i:i + 2]
    assert i + 3 == len(frame)
    return rev, count, bytes(pkt), bytes(fcs)


def _stuff(pymctp_frame):
    """Escape the packet bytes of an unescaped UART frame built by pymctp."""
    b = bytes(pymctp_frame)
    head, pkt, tail = b[:3], b[3:-3], b[-3:]
    out = bytearray(head)
    for x in pkt:
        if x in (0x7E, 0x7D):
            out += bytes((0x7D, x ^ 0x20))
        else:
            out.append(x)
    return bytes(out + tail)


def _mcrf4xx(data):
    c = crcmod.predefined.Crc("crc-16-mcrf4xx")
    c.update(data)
    return c.crcValue


def _pec(data):
    h = crc8.crc8()
    h.update(data)
    return h.digest()[0]


def _sample_packets(n=120, seed=7):
    rnd = random.Random(seed)
    pkts = [bytes.fromhex("010008c8008002")]
    for tag in range(8):
        body = bytes([5]) + bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 600)))
        pkts += packetize(rnd.randrange(256), rnd.randrange(255), tag, tag & 1, body, rnd.choice((64, 100, 250)))
    # packets full of flag and escape bytes
    pkts.append(bytes((1, 0x7E, 0x7D, 0xC8, 0x05)) + bytes([0x7E, 0x7D] * 60))
    while len(pkts) < n:
        k = rnd.randrange(4, 255)
        pkts.append(bytes((1, rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
                    + bytes(rnd.choice((0x7E, 0x7D, rnd.randrange(256))) for _ in range(k - 4)))
    return [bytes(p) for p in pkts]


def _check_hdr(h, pkt):
    assert h.version == 1 and h.rsvd == 0
    assert h.dst == pkt[1] and h.src == pkt[2]
    f = pkt[3]
    assert (h.som, h.eom, h.pkt_seq, h.to, h.tag) == (f >> 7, (f >> 6) & 1, (f >> 4) & 3, (f >> 3) & 1, f & 7)


def test_serial_frames_decode_with_pymctp():
    for pkt in _sample_packets():
        frame = serial.encode_frame(pkt)
        rev, count, inner, fcs = _unstuff(frame)
        assert inner == pkt
        flat = bytes((0x7E, rev, count)) + inner + fcs + b"\x7e"
        u = UartTransportPacket(flat)
        assert u.frame_start == 0x7E and u.frame_end == 0x7E
        assert u.protocol_rev == 1 and u.byte_count == len(pkt)
        assert u.fcs == _mcrf4xx(bytes((1, len(pkt))) + pkt)
        assert bytes(u.load) == pkt
        _check_hdr(u.load, pkt)
    assert _mcrf4xx(b"123456789") == 0x6F91


def test_pymctp_frames_decode_with_ours():
    dec = serial.SerialDecoder()
    stream = b""
    pkts = _sample_packets()
    for pkt in pkts:
        u = UartTransport(load=TransportHdrPacket(pkt))
        raw = bytes(u)
        assert raw[1:3] == bytes((1, len(pkt)))
        if 0x7E not in pkt and 0x7D not in pkt:
            assert serial.encode_frame(pkt) == raw
        stream += _stuff(raw)
    # the whole stream, in uneven chunks
    got = []
    rnd = random.Random(3)
    i = 0
    while i < len(stream):
        k = rnd.randrange(1, 90)
        got += dec.feed(stream[i:i + k])
        i += k
    assert got == pkts
    assert dec.dropped == 0


def test_fcs_flag_bytes_against_crcmod():
    # find packets whose FCS holds 0x7E / 0x7D and check both ways
    found = set()
    dec = serial.SerialDecoder()
    for i in range(20000):
        pkt = bytes((1, 9, 8, 0xC8, 5, i >> 8, i & 0xFF))
        c = _mcrf4xx(bytes((1, len(pkt))) + pkt)
        hi, lo = c >> 8, c & 0xFF
        for pos, b in (("hi", hi), ("lo", lo)):
            if b in (0x7E, 0x7D):
                key = (pos, b)
                if key in found:
                    continue
                found.add(key)
                frame = serial.encode_frame(pkt)
                assert frame == bytes(UartTransport(load=TransportHdrPacket(pkt)))
                assert dec.feed(frame + frame) == [pkt, pkt]
    assert len(found) == 4


def test_smbus_frames_decode_with_pymctp():
    rnd = random.Random(5)
    for pkt in _sample_packets():
        if len(pkt) > 254:
            continue
        d, s = rnd.randrange(0x08, 0x78), rnd.randrange(0x08, 0x78)
        w = smbus.encode(d, s, pkt)
        p = SmbusTransportPacket(w)
        assert p.dst_addr == d << 1 and p.src_addr == (s << 1) | 1
        assert p.command_code == 0x0F and p.byte_count == len(pkt) + 1
        assert p.pec == _pec(w[:-1]) == w[-1]
        assert bytes(p.load) == pkt
        _check_hdr(p.load, pkt)
        # pymctp-built frame: identical, and our decoder accepts it
        q = bytes(SmbusTransport(dst_addr=Smbus7bitAddress(d), src_addr=Smbus7bitAddress(s),
                                 load=TransportHdrPacket(pkt)))
        assert q == w
        assert smbus.decode(q) == (s, pkt)
        assert smbus.decode_target(q[1:], d) == (s, pkt)
    assert _pec(b"123456789") == 0xF4


def _ctl(ep, body, dest=None):
    out = []
    for p in packetize(ep.eid if dest is None else dest, 0x08, 1, 1, body, 64):
        out += ep.receive_packet(p, 0)
    assert len(out) == 1
    h = TransportHdrPacket(bytes(out[0]))
    assert h.to == 0 and h.tag == 1 and h.som == 1 and h.eom == 1 and h.dst == 0x08
    return h


# DSP0236 control command codes (mctp.control keeps them as private consts)
CMD_SET_EID, CMD_GET_EID, CMD_GET_VERSION, CMD_GET_MSG_TYPES = 0x01, 0x02, 0x04, 0x05


def test_control_responses_decode_with_pymctp():
    ep = Endpoint(eid=0x1D)
    h = _ctl(ep, control.build_request(3, CMD_GET_EID))
    c = h.payload
    assert c.rq == 0 and c.d == 0 and c.instance_id == 3 and c.cmd_code == 0x02 and c.completion_code == 0
    g = c.payload
    assert g.eid == 0x1D and g.endpoint_type == 0 and g.endpoint_id_type == 0 and g.medium_specific == 0

    seen = []
    ep.on_eid_changed = seen.append
    h = _ctl(ep, control.build_request(4, CMD_SET_EID, b"\x00\x33"), dest=0)
    c = h.payload
    assert c.instance_id == 4 and c.cmd_code == 0x01 and c.completion_code == 0
    s = c.payload
    assert s.eid_assignment_status == 0 and s.eid_allocation_status == 0
    assert s.eid_setting == 0x33 and s.eid_pool_size == 0
    assert seen == [0x33] and h.src == 0x33

    h = _ctl(ep, control.build_request(5, CMD_SET_EID, b"\x00\xff"))
    assert h.payload.completion_code == 0x02

    ep.secured = True
    h = _ctl(ep, control.build_request(6, CMD_GET_MSG_TYPES))
    assert h.payload.completion_code == 0
    assert list(h.payload.payload.msg_type_list) == [0x00, 0x05, 0x06]

    h = _ctl(ep, control.build_request(7, CMD_GET_VERSION, b"\xff"))
    assert h.payload.completion_code == 0
    v = h.payload.payload
    assert v.version_number_entry_count == 1
    # pymctp reads the 4-byte entries little-endian; the wire order is major first
    assert v.version_number_list[0].to_bytes(4, "little") == bytes.fromhex("f1f3f300")

    h = _ctl(ep, control.build_request(8, CMD_GET_VERSION, b"\x01"))
    assert h.payload.completion_code == 0x80

    h = _ctl(ep, control.build_request(9, 0x0A))
    assert h.payload.completion_code == 0x05 and h.payload.cmd_code == 0x0A


def test_requester_packets_decode_with_pymctp():
    rq = Requester(eid=0x08, mtu=64)
    tag, pkts = rq.request(0x1D, b"\x05" + bytes(range(256)) * 2)
    assert len(pkts) == 9
    for i, p in enumerate(pkts):
        h = TransportHdrPacket(bytes(p))
        assert h.to == 1 and h.tag == tag and h.pkt_seq == i & 3
        assert h.som == (i == 0) and h.eom == (i == 8)
        assert h.dst == 0x1D and h.src == 0x08
    assert TransportHdrPacket(bytes(pkts[0])).msg_type == 0x05
