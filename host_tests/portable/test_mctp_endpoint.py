"""Endpoint dispatch, EID filtering, control responder and Requester."""
from _util import unhex

from mctp import control, serial, smbus
from mctp.endpoint import Endpoint
from mctp.requester import Requester
from mctp.packet import packetize


def _req(dest, body, src=0x08, tag=0, to=1, mtu=64):
    return packetize(dest, src, tag, to, body, mtu)


def _one(ep, body, dest=None, src=0x08, tag=0, now=0, phys=None):
    """Send a single-message request; return the reassembled response body
    (after checking the response headers) or None."""
    if dest is None:
        dest = ep.eid
    out = []
    for p in _req(dest, body, src, tag):
        out += ep.receive_packet(p, now, phys)
    if not out:
        return None
    body = b""
    for i, p in enumerate(out):
        # response: to the requester, TO=0, same tag, seq i
        assert p[0] == 0x01 and p[1] == src and p[2] == ep.eid
        assert p[3] & 0x0F == tag and (p[3] >> 4) & 3 == i & 3
        assert bool(p[3] & 0x80) == (i == 0) and bool(p[3] & 0x40) == (i == len(out) - 1)
        body += bytes(p[4:])
    return body


def test_get_eid_worked_example():
    # wire-notes worked example: Get EID to null EID, from EID 8, tag 0, TO=1
    ep = Endpoint(eid=0)
    out = ep.receive_packet(unhex("010008C8008002"), 0)
    assert len(out) == 1
    # 00 | instance 0, Rq=0 | cmd 02 | cc 0 | EID 0 | dynamic simple | 0
    assert bytes(out[0]) == unhex("010800C0" "00000200000000")


def test_get_eid_static():
    ep = Endpoint(eid=0x20, static_eid=0x20)
    assert _one(ep, unhex("008302")) == unhex("00030200" "200200")
    ep.eid = 0x21
    assert _one(ep, unhex("008302")) == unhex("00030200" "210300")


def test_set_eid_ops():
    seen = []
    ep = Endpoint(eid=0, on_eid_changed=seen.append)
    # set EID 0x42 (sent to the null EID)
    assert _one(ep, unhex("00810100" "42"), dest=0) == unhex("00010100" "004200")
    assert ep.eid == 0x42 and seen == [0x42] and ep.discovered
    # force to 0x43
    assert _one(ep, unhex("00820101" "43")) == unhex("00020100" "004300")
    assert ep.eid == 0x43 and seen == [0x42, 0x43]
    # the same EID again: no flash write
    assert _one(ep, unhex("00830100" "43")) == unhex("00030100" "004300")
    assert seen == [0x42, 0x43]
    # set discovered: not supported by serial/SMBus bindings (invalid data)
    assert _one(ep, unhex("00840103" "99")) == unhex("00040102")
    ep.discovered_flag = True
    # ... and with a Discovered flag, the EID byte is ignored
    assert _one(ep, unhex("00840103" "99")) == unhex("00040100" "004300")
    assert ep.eid == 0x43
    # invalid EIDs
    assert _one(ep, unhex("00850100" "00")) == unhex("00050102")
    assert _one(ep, unhex("00860101" "FF")) == unhex("00060102")
    # reset without a static EID: invalid data
    assert _one(ep, unhex("00870102" "00")) == unhex("00070102")
    # wrong lengths
    assert _one(ep, unhex("00880100")) == unhex("00080103")
    assert _one(ep, unhex("0089010000" "4200")) == unhex("00090103")
    assert ep.eid == 0x43 and seen == [0x42, 0x43]


def test_set_eid_reset_static():
    seen = []
    ep = Endpoint(eid=0x30, static_eid=0x30, on_eid_changed=seen.append)
    _one(ep, unhex("00810100" "50"))
    assert ep.eid == 0x50
    assert _one(ep, unhex("00820102" "00")) == unhex("00020100" "003000")
    assert ep.eid == 0x30 and seen == [0x50, 0x30]


def test_set_eid_only_from_the_bus_owner():
    """Issue 11.7: once a bus owner assigned the EID, nobody else moves it (DSP0236: Set EID from
    another bus owner is "assignment rejected"; Force/Reset/Discovered from it: ERROR)."""
    seen = []
    ep = Endpoint(eid=0, static_eid=None, on_eid_changed=seen.append)
    # the bus owner (EID 8 on the serial line) assigns 0x42
    assert _one(ep, unhex("00810100" "42"), dest=0) == unhex("00010100" "004200")
    assert ep.owner == (None, 8)
    # another requester (EID 0x10): Set is rejected with the present EID, Force is an ERROR
    assert _one(ep, unhex("00820100" "66"), src=0x10) == unhex("00020100" "104200")
    assert _one(ep, unhex("00830101" "66"), src=0x10) == unhex("00030101")
    # the owner's EID from another physical address (I2C) is someone else too
    assert _one(ep, unhex("00840101" "66"), src=8, phys=0x1D) == unhex("00040101")
    # invalid data is still invalid data, for anyone
    assert _one(ep, unhex("00850101" "FF"), src=0x10) == unhex("00050102")
    assert ep.eid == 0x42 and seen == [0x42] and ep.refused == 3
    # the owner keeps control: force, set
    assert _one(ep, unhex("00860101" "43")) == unhex("00060100" "004300")
    assert _one(ep, unhex("00870100" "44")) == unhex("00070100" "004400")
    assert seen == [0x42, 0x43, 0x44]
    # a flood from others changes nothing
    for i in range(40):
        _one(ep, bytes((0x00, 0x80 | (i & 0x1F), 0x01, i & 1, 0x50 + i)), src=0x20 + i)
    assert ep.eid == 0x44 and seen == [0x42, 0x43, 0x44] and ep.refused == 43


def test_reset_and_discovered_only_from_the_owner():
    ep = Endpoint(eid=0x30, static_eid=0x30, discovered_flag=True)
    # before any assignment anyone may act (nobody owns the endpoint yet)
    assert _one(ep, unhex("00810100" "50"), src=9) == unhex("00010100" "005000")
    assert _one(ep, unhex("00820102" "00"), src=0x11) == unhex("00020101")
    assert _one(ep, unhex("00830103" "00"), src=0x11) == unhex("00030101")
    assert ep.eid == 0x50
    assert _one(ep, unhex("00840102" "00"), src=9) == unhex("00040100" "003000")
    assert ep.eid == 0x30


def test_version_support():
    ep = Endpoint(eid=9)
    base = _one(ep, unhex("008004FF"))
    assert base[:5] == unhex("0000040001")
    assert base[5:] == unhex("F1F3F300")
    assert _one(ep, unhex("00810400"))[:5] == unhex("0001040001")
    spdm = _one(ep, unhex("00820405"))
    assert spdm[:4] == unhex("00020400") and spdm[4] >= 1 and len(spdm) == 5 + 4 * spdm[4]
    assert _one(ep, unhex("00830401")) == unhex("00030480")  # PLDM: not supported
    assert _one(ep, unhex("00830406")) == unhex("00030480")  # secured: not advertised
    ep.secured = True
    sec = _one(ep, unhex("00830406"))
    assert sec[:4] == unhex("00030400") and sec[4] >= 1 and len(sec) == 5 + 4 * sec[4]
    assert _one(ep, unhex("008404")) == unhex("00040403")
    assert _one(ep, unhex("0085040506")) == unhex("00050403")


def test_message_type_support():
    ep = Endpoint(eid=9)
    assert _one(ep, unhex("009F05")) == unhex("001F0500" "020005")
    ep.secured = True
    assert _one(ep, unhex("008105")) == unhex("00010500" "03000506")
    assert _one(ep, unhex("00810500")) == unhex("00010503")


def test_unsupported_and_non_requests():
    ep = Endpoint(eid=9)
    assert _one(ep, unhex("008003")) == unhex("00000305")  # Get UUID: not implemented
    assert _one(ep, unhex("0080F0")) == unhex("0000F005")
    assert _one(ep, unhex("0001 02".replace(" ", ""))) is None  # a response (Rq=0)
    assert _one(ep, unhex("00C002")) is None  # datagram
    assert _one(ep, unhex("0080")) is None  # too short
    # a control request without TO: it is a response to us, not answered
    out = []
    for p in _req(9, unhex("008002"), to=0):
        out += ep.receive_packet(p, 0)
    assert out == []


def test_eid_filtering():
    ep = Endpoint(eid=9)
    get = unhex("008002")
    assert _one(ep, get, dest=9) is not None
    assert _one(ep, get, dest=0) is not None
    assert _one(ep, get, dest=0xFF) is not None
    assert _one(ep, get, dest=10) is None
    assert _one(ep, get, dest=9, src=0xFF) is None
    assert ep.dropped == 2


def test_spdm_dispatch_and_ic():
    calls = []

    def spdm(src, body):
        calls.append((src, bytes(body)))
        return b"\x05\x12\x04\x00\x00" + bytes(body[1:]) * 40

    ep = Endpoint(eid=9)
    ep.register(0x05, spdm)
    req = b"\x05\x10\x84\x00\x00"
    rsp = _one(ep, req, src=0x0A, tag=6)
    assert calls == [(0x0A, req)]
    assert rsp == b"\x05\x12\x04\x00\x00" + req[1:] * 40  # multi-packet response
    assert _one(ep, b"\x85\x10\x84\x00\x00") is None  # IC bit set
    assert _one(ep, b"\x06" + bytes(20)) is None  # no secured handler
    assert _one(ep, b"\x7e\x00") is None  # vendor type
    assert len(calls) == 1
    ep.register(0x06, lambda s, b: None)  # deferred answer
    assert _one(ep, b"\x06" + bytes(20), tag=3) is None
    assert ep.last_tag == 3 and ep.last_src == 8
    out = ep.respond(8, 3, b"\x06" + bytes(100))
    assert len(out) == 2 and out[0][:4] == b"\x01\x08\x09\x83" and out[1][:4] == b"\x01\x08\x09\x53"


def test_large_request_multi_packet():
    ep = Endpoint(eid=9, max_message=4160)
    ep.register(5, lambda s, b: b"\x05" + bytes((len(b) >> 8, len(b) & 0xFF)))
    body = b"\x05" + bytes((i & 0xFF for i in range(4159)))
    assert _one(ep, body) == b"\x05\x10\x40"
    assert _one(ep, body + b"\x00") is None  # over the bound


def test_handler_exception_is_contained():
    def boom(src, body):
        raise ValueError("bug")

    ep = Endpoint(eid=9)
    ep.register(5, boom)
    assert _one(ep, b"\x05\x10\x84\x00\x00") is None
    assert ep.handler_errors == 1 and isinstance(ep.last_error, ValueError)
    assert _one(ep, unhex("008002")) is not None


def test_interleaved_requesters():
    ep = Endpoint(eid=9)
    ep.register(5, lambda s, b: b"\x05" + bytes((s, len(b) & 0xFF)))
    a = _req(9, b"\x05" + bytes(200), src=0x0A, tag=1)
    b = _req(9, b"\x05" + bytes(150), src=0x0B, tag=1)
    out = []
    for i in range(4):
        for s in (a, b):
            if i < len(s):
                out += ep.receive_packet(s[i], 0)
    assert sorted(bytes(p) for p in out) == sorted(
        [b"\x01\x0a\x09\xc1\x05\x0a\xc9", b"\x01\x0b\x09\xc1\x05\x0b\x97"])


def test_requester_round_trip_over_serial_and_smbus():
    ep = Endpoint(eid=0x1D)
    ep.register(5, lambda s, b: b"\x05" + bytes(b[1:]) * 3)
    rq = Requester(eid=0x08)
    dec_dev = serial.SerialDecoder()
    dec_host = serial.SerialDecoder()
    tag, pkts = rq.request(0x1D, b"\x05" + bytes(range(100)))
    assert pkts[0][3] & 0x08  # TO
    wire = b"".join(serial.encode_frame(p) for p in pkts)
    back = b""
    for p in dec_dev.feed(wire):
        for q in ep.receive_packet(p, 0):
            back += serial.encode_frame(q)
    got = None
    for p in dec_host.feed(back):
        m = rq.receive_packet(p, 0)
        if m:
            got = m
    assert got == (0x1D, tag, b"\x05" + bytes(range(100)) * 3)
    # the same over SMBus: host 0x10, device 0x1D
    t2, i2, pkts = rq.control(0x1D, 0x02)
    rsp = None
    for p in pkts:
        w = smbus.encode(0x1D, 0x10, p)
        src, pk = smbus.decode_target(w[1:], 0x1D)
        for q in ep.receive_packet(pk, 0):
            w2 = smbus.encode(src, 0x1D, q)
            m = rq.receive_packet(smbus.decode_target(w2[1:], 0x10)[1], 0)
            if m:
                rsp = m
    assert rsp[0] == 0x1D and rsp[1] == t2
    assert control.parse_response(rsp[2]) == (i2, 0x02, 0, b"\x1d\x00\x00")
    assert t2 == (tag + 1) & 7


def test_garbage_packets_never_raise():
    ep = Endpoint(eid=9)
    for p in (b"", b"\x01", b"\x00\x09\x08\xc8\x00\x80\x02", b"\x01\x09\x08\xc8",
              bytearray(b"\x01\x09\x08\xc8\x00"), memoryview(b"\x01\x09\x08\xc8\x00\x80"), None, 5):
        assert ep.receive_packet(p, 0) == []
    assert _one(ep, unhex("008002")) == unhex("00000200" "090000")
