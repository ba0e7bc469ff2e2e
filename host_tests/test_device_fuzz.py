"""The whole device (MCTP framing, control, SPDM responder, sessions) fed
random and mutated traffic: nothing escapes feed(), no handler raises
internally (a caught exception inside the responder or the session code is a
bug that the catch-all would hide), and a clean attestation works afterwards."""
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mctp import serial as mserial
from mctp.requester import Requester
from test_device import FakeBoard, Host, vca

V = 0x12


def _g384():
    from uspdm.crypto import ec

    c = ec.P384
    return c.gx.to_bytes(48, "big") + c.gy.to_bytes(48, "big")   # a valid peer point


G384 = _g384()
TEMPLATES = [
    b"\x10\x84\x00\x00",
    bytes((V, 0xE1, 0, 0, 0, 12, 0, 0)) + (0xF6C6).to_bytes(4, "little") + (4096).to_bytes(4, "little") * 2,
    bytes((V, 0xE3, 4, 0)) + (48).to_bytes(2, "little") + bytes((1, 2)) + (0x80).to_bytes(4, "little")
    + (0x2).to_bytes(4, "little") + bytes(16) + bytes((2, 0x20, 0x10, 0, 3, 0x20, 2, 0, 4, 0x20, 0x80, 0, 5, 0x20, 1, 0)),
    bytes((V, 0x81, 0, 0)),
    bytes((V, 0x82, 0, 0)) + (0).to_bytes(2, "little") + (0x400).to_bytes(2, "little"),
    bytes((V, 0x83, 0, 0xFF)) + bytes(32),
    bytes((V, 0xE0, 1, 0xFF)) + bytes(32) + bytes((0,)),
    bytes((V, 0xE0, 0, 0)),
    bytes((V, 0xE4, 0, 0)) + bytes(4) + bytes(32) + bytes(96) + bytes(2),
    # KEY_EXCHANGE with a valid peer point and secured-message version 1.1 offered (1.2+ opaque format)
    bytes((V, 0xE4, 0, 0)) + (0x1234).to_bytes(2, "little") + bytes(2) + bytes(32) + G384 + (16).to_bytes(2, "little")
    + b"\x01\x00\x00\x00" + b"\x00\x00\x05\x00" + b"\x01\x01\x01\x00\x11" + b"\x00\x00\x00",
    bytes((V, 0xE6, 0, 0)) + bytes(2) + (4).to_bytes(2, "little") + (32).to_bytes(2, "little") + bytes(2)
    + b"lab1" + bytes(32),
    bytes((V, 0xFF, 0x83, 1)),
    bytes((V, 0xFF, 0xE4, 1)),
    bytes((V, 0x86, 0, 0)) + bytes(4),   # CHUNK_GET
    bytes((V, 0x85, 0, 0)) + bytes(8),   # CHUNK_SEND
    bytes((V, 0xE8, 0, 0)),              # HEARTBEAT (outside a session)
    bytes((V, 0xEC, 0, 0)),              # END_SESSION
    bytes((V, 0xFE, 0, 0)) + bytes(8),   # VENDOR_DEFINED
]


def mutate(data, draw):
    data = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.integers(0, 3))
        if kind == 0 and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == 1 and data:
            del data[draw(st.integers(0, len(data) - 1)):]
        elif kind == 2:
            data += draw(st.binary(max_size=40))
        elif kind == 3 and len(data) > 1:
            data[1] = draw(st.integers(0, 255))
    return bytes(data)


@st.composite
def operations(draw):
    ops = []
    for _ in range(draw(st.integers(1, 25))):
        k = draw(st.integers(0, 5))
        if k <= 2:
            ops.append(("spdm", mutate(draw(st.sampled_from(TEMPLATES)), draw)))
        elif k == 3:
            # a live session's ID (filled in when the op runs) or a random one, then random bytes
            ops.append(("secured", (draw(st.booleans()), draw(st.binary(min_size=0, max_size=120)))))
        elif k == 4:
            ops.append(("control", bytes((0x00, 0x80 | draw(st.integers(0, 31)), draw(st.integers(0, 8))))
                        + draw(st.binary(max_size=4))))
        else:
            ops.append(("raw", draw(st.binary(max_size=200))))
    return ops


def _fresh():
    from device import Device

    logs = []
    board = FakeBoard(defer_signing=1)
    board._st.write("uspdm/psk_%s.bin" % b"lab1".hex(), bytes(range(32)))
    d = Device(board, log=logs.append)
    return d, logs


@settings(max_examples=int(os.environ.get("USPDM_FUZZ_EXAMPLES", "200")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations())
def test_device_survives_random_traffic(ops):
    dev, logs = _fresh()
    rq = Requester(eid=8)
    for kind, data in ops:
        if kind == "raw":
            out = dev.feed(data)
        else:
            if kind == "secured":
                live, data = data
                mgr = dev._spdm.sessions if dev._spdm is not None else None
                ids = sorted(mgr.sessions) if mgr is not None and live else []
                if ids:
                    data = ids[0].to_bytes(4, "little") + data
            body = {"spdm": b"\x05", "secured": b"\x06", "control": b""}[kind] + data
            if not body:
                continue
            _, pkts = rq.request(0, body)
            out = dev.feed(b"".join(mserial.encode_frame(p) for p in pkts))
        assert isinstance(out, bytes)
        n = 0
        while dev.pending() and n < 5000:   # the board's loop finishes deferred work
            dev.idle()
            n += 1
    # nothing raised inside: no handler error, no caught exception in a responder
    assert dev.ep.handler_errors == 0, repr(dev.ep.last_error)
    for r in dev.responders.values():
        assert getattr(r, "last_exception", None) is None, repr(r.last_exception)
    assert not [m for m in logs if "error" in m], logs
    # and the device still serves a clean flow
    h = Host(dev)
    h.rq = Requester(eid=9)   # a fresh requester EID: a new connection
    vca(h)
    rsp = h.spdm(bytes((V, 0x83, 0, 0)) + os.urandom(32))
    assert rsp[1] in (0x03, 0x7F)
