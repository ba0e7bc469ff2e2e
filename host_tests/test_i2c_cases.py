"""MCTP over I2C on the board side, without hardware: firmware/i2c.py capture
and port, Device.feed_i2c, the bridge, the USB serial loop and its REPL
escape, on the simulated bus of boards/sim/i2cbus.py (which produces the
IRQ event sequences of the rp2 and esp32 ports).

Plain functions with plain asserts: pytest runs them on CPython, and
test_i2c.py runs each one again inside MicroPython (wasm).  Expected bytes
come from the DSP0237 worked example in wire-notes section 2 (Get EID,
target 0x1D, source 0x10: `3A 0F 08 21 01 00 08 C8 00 80 02` PEC 56).
"""
import os
import sys

IS_MPY = sys.implementation.name == "micropython"
if not IS_MPY:
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for _p in ("lib", "firmware", "boards/sim"):
        _p = os.path.join(_root, _p)
        if _p not in sys.path:
            sys.path.insert(0, _p)

from bridge import Bridge, vendor_request  # noqa: E402
from i2c import Capture, I2CPort  # noqa: E402
from i2cbus import Bus, SimMachine  # noqa: E402
from mctp import serial as mserial  # noqa: E402
from serve import Service  # noqa: E402
from usb_serial import Escape, serve  # noqa: E402

# The worked example: the write after the address byte 0x3A, and its packet.
EX_WRITE = bytes((0x0F, 0x08, 0x21, 0x01, 0x00, 0x08, 0xC8, 0x00, 0x80, 0x02, 0x56))
EX_PKT = bytes((0x01, 0x00, 0x08, 0xC8, 0x00, 0x80, 0x02))


def _port(m, addr, slots=8, hard=True):
    cap = Capture(slots)
    t = cap.open(m.I2CTarget, 0, addr, prefer_hard=hard)
    return I2CPort(addr, cap, m.I2C(1), t)


class FakeBoard:
    NAME = "fake"
    MCU = "none"

    def __init__(self):
        from uspdm.storage import MemoryStorage

        self._st = MemoryStorage()
        self.t = 0

    def config(self):
        return {"serial_mtu": 64, "default_eid": 0}

    def storage(self):
        return self._st

    def ticks_ms(self):
        self.t += 1
        return self.t


def _device():
    from device import Device

    d = Device(FakeBoard(), log=lambda m: None)
    # MCTP only here: no SPDM context built in the background (it needs a
    # real board: DRBG, keys, a measured signing time)
    if hasattr(d, "_background"):
        d._background = False
    return d


def _modes():
    return (True, False)


def test_worked_example_captured_and_decoded():
    for hard in _modes():
        bus = Bus()
        m = SimMachine(bus, hard)
        p = _port(m, 0x1D, hard=hard)
        assert p.cap.mode == ("hard" if hard else "mem")
        assert m.I2C(1).writeto(0x1D, EX_WRITE) == len(EX_WRITE)
        assert p.pending()
        assert p.recv() == (0x10, EX_PKT)
        assert p.recv() is None and not p.pending()
        assert p.rx.ok == 1 and p.rx.dropped == 0


def test_send_is_the_worked_example_write():
    bus = Bus()
    got = []
    bus.trace = lambda a, d, f: got.append((a, d))
    m = SimMachine(bus)
    p = _port(m, 0x10)
    _port(m, 0x1D)
    assert p.send(0x1D, EX_PKT)
    assert got == [(0x1D, EX_WRITE)]
    assert p.sent == 1


def test_faults_are_dropped_then_next_served():
    for hard in _modes():
        for kind in ("pec", "truncate"):
            bus = Bus()
            m = SimMachine(bus, hard)
            p = _port(m, 0x1D, hard=hard)
            w = m.I2C(1)
            assert bus.inject(kind, 1, 0x1D)
            w.writeto(0x1D, EX_WRITE)
            assert p.recv() is None
            assert p.rx.dropped == 1
            w.writeto(0x1D, EX_WRITE)
            assert p.recv() == (0x10, EX_PKT)
        bus = Bus()
        m = SimMachine(bus, hard)
        p = _port(m, 0x10, hard=hard)
        _port(m, 0x1D, hard=hard)
        bus.inject("nak", 2)
        assert not p.send(0x1D, EX_PKT)     # one retry, both NAKed
        assert p.nak == 2 and p.send_errors == 1
        assert p.send(0x1D, EX_PKT)
        assert not p.send(0x22, EX_PKT)     # nobody there


def test_other_rejections_counted():
    bus = Bus()
    m = SimMachine(bus)
    p = _port(m, 0x1D)
    w = m.I2C(1)
    bad_cmd = bytearray(EX_WRITE)
    bad_cmd[0] = 0x0E
    w.writeto(0x1D, bad_cmd)
    bad_src = bytearray(EX_WRITE)
    bad_src[2] = 0x20           # read bit clear: invalid source address byte
    w.writeto(0x1D, bad_src)
    w.writeto(0x1D, EX_WRITE[:4])
    assert p.recv() is None
    assert p.rx.dropped == 3
    assert p.rx.errors.get("command") == 1


def test_queue_bounded_overflow_counted_in_order():
    for hard in _modes():
        bus = Bus()
        m = SimMachine(bus, hard)
        p = _port(m, 0x1D, slots=4, hard=hard)
        w = m.I2C(1)
        for i in range(6):
            pkt = bytes((0x01, 0x00, 0x08, 0xC8, 0x00, 0x80, 0x02, i))
            w.writeto(0x1D, _encode_after_addr(0x1D, 0x10, pkt))
        assert p.cap.overflow == 2 and p.cap.captured == 4
        got = []
        while True:
            r = p.recv()
            if r is None:
                break
            got.append(r[1][-1])
        assert got == [0, 1, 2, 3]
        w.writeto(0x1D, EX_WRITE)      # room again
        assert p.recv() == (0x10, EX_PKT)


def _encode_after_addr(dest, src, pkt):
    # DSP0237 by hand (independent of mctp.smbus): count, source, packet, PEC
    body = bytes((dest << 1, 0x0F, len(pkt) + 1, (src << 1) | 1)) + pkt
    crc = 0
    for b in body:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return body[1:] + bytes((crc,))


def test_hand_encoder_matches_worked_example():
    assert _encode_after_addr(0x1D, 0x10, EX_PKT) == EX_WRITE


def test_overlong_transfer_dropped_without_using_a_slot():
    bus = Bus()
    m = SimMachine(bus, True)
    p = _port(m, 0x1D)
    m.I2C(1).writeto(0x1D, bytes(300))
    assert p.cap.too_long == 1 and not p.pending()
    m.I2C(1).writeto(0x1D, EX_WRITE)
    assert p.recv() == (0x10, EX_PKT)


def test_mem_mode_truncated_repeat_does_not_reuse_stale_bytes():
    bus = Bus()
    m = SimMachine(bus, False)
    p = _port(m, 0x1D, hard=False)
    w = m.I2C(1)
    w.writeto(0x1D, EX_WRITE)
    assert p.recv() == (0x10, EX_PKT)
    w.writeto(0x1D, EX_WRITE[:6])     # same frame cut short: the tail must not come from the last one
    assert p.recv() is None
    assert p.rx.dropped == 1


def test_multi_packet_message_over_the_bus():
    from mctp.endpoint import Endpoint
    from mctp.requester import Requester

    bus = Bus()
    m = SimMachine(bus)
    a = _port(m, 0x10)
    b = _port(m, 0x1D)
    rq = Requester(eid=8, mtu=64)
    body = bytes((0x05,)) + bytes(range(256)) * 3
    tag, pkts = rq.request(0, body)
    assert len(pkts) == 13
    ep = Endpoint(eid=0x1D)
    seen = []
    ep.register(0x05, lambda src, bd: seen.append(bytes(bd)) or (b"\x05" + bytes(300)))
    out = []
    for pk in pkts:          # the receiver's loop drains its queue as packets arrive
        assert a.send(0x1D, pk)
        src, pk2 = b.recv()
        assert src == 0x10 and pk2 == pk
        out.extend(ep.receive_packet(pk2))
    assert seen == [body]
    for pk in out:
        assert b.send(0x10, pk)
    msg = None
    while a.pending():
        src, pk = a.recv()
        msg = rq.receive_packet(pk) or msg
    assert msg == (0x1D, tag, b"\x05" + bytes(300))


def test_device_feed_i2c_and_feed_smbus():
    dev = _device()
    out = dev.feed_i2c(0x10, EX_PKT)
    assert len(out) == 1 and out[0][0] == 0x10
    rsp = out[0][1]
    # response: dest EID 8, src EID 0, SOM|EOM, TO=0, tag 0; Get EID completion 0
    assert rsp[:4] == bytes((0x01, 0x08, 0x00, 0xC0)) and rsp[4:8] == bytes((0x00, 0x00, 0x02, 0x00))
    assert dev.i2c_routes == {8: 0x10}
    w = dev.feed_smbus(EX_WRITE, 0x1D)
    assert len(w) == 1 and w[0][0] == 0x10
    assert w[0][1] == _encode_after_addr(0x10, 0x1D, rsp)
    bad = bytearray(EX_WRITE)
    bad[-1] ^= 1
    assert dev.feed_smbus(bad, 0x1D) == []
    # deferred output is routed by EID: I2C requester -> i2c_out, others -> serial bytes
    assert dev.emit(8, [rsp]) == b"" and dev.i2c_out == [(0x10, rsp)]
    assert dev.emit(9, [rsp]) == mserial.encode_frame(rsp)
    # the same requester moving to the serial port is answered there
    fr = dev.feed(mserial.encode_frame(EX_PKT))
    assert mserial.SerialDecoder().feed(fr) == [rsp]
    assert 8 not in dev.i2c_routes


def test_responder_service_answers_over_i2c():
    bus = Bus()
    m = SimMachine(bus)
    host = _port(m, 0x10)
    prot = _port(m, 0x1D)
    svc = Service(device=_device(), port=prot)
    host.send(0x1D, EX_PKT)
    assert svc.pending()
    svc.step()
    assert not svc.pending()
    src, pkt = host.recv()
    assert src == 0x1D and pkt[4:7] == bytes((0x00, 0x00, 0x02))


def _serial_roundtrip(front, frame, pump=None):
    out = front.serial_in(frame)
    for _ in range(8):
        if pump:
            pump()
        out += front.step()
    return mserial.SerialDecoder().feed(out)


def test_bridge_forwards_and_returns():
    bus = Bus()
    writes = []
    bus.trace = lambda a, d, f: writes.append((a, d))
    m = SimMachine(bus)
    bp = _port(m, 0x10)
    prot = Service(device=_device(), port=_port(m, 0x1D))
    br = Bridge(bp, 0x1D)
    front = Service(bridge=br)
    got = _serial_roundtrip(front, mserial.encode_frame(EX_PKT), prot.step)
    assert writes[0] == (0x1D, EX_WRITE)           # exactly the DSP0237 bytes on the bus
    assert len(got) == 1 and got[0][4:7] == bytes((0x00, 0x00, 0x02))
    assert writes[1][0] == 0x10 and writes[1][1] == _encode_after_addr(0x10, 0x1D, got[0])
    assert br.forwarded == 1 and br.returned == 1


def _vendor(front, cmd, args=b""):
    from mctp.packet import packetize

    pk = packetize(0xFE, 8, 3, 1, vendor_request(cmd, args), 64)[0]
    got = _serial_roundtrip(front, mserial.encode_frame(pk))
    assert len(got) == 1
    body = got[0][4:]
    assert body[:6] == vendor_request(cmd)[:6]
    return body[6], body[7:]


def test_bridge_own_commands():
    bus = Bus()
    m = SimMachine(bus)
    br = Bridge(_port(m, 0x10), 0x1D)
    front = Service(bridge=br)
    assert _vendor(front, 1) == (0, bytes((0x10, 0x1D, 1, 1)))
    assert _vendor(front, 2, b"\x2a")[0] == 0 and br.target == 0x2A
    assert _vendor(front, 2, b"\x80")[0] == 2 and br.target == 0x2A
    assert _vendor(front, 3, bytes((1, 1, 0x2A)))[0] == 0
    assert bus.faults == [["pec", 1, 0x2A]]
    assert _vendor(front, 3, bytes((9, 1, 0)))[0] == 2
    st, data = _vendor(front, 4)
    assert st == 0 and len(data) == 14
    assert _vendor(front, 0x55)[0] == 5
    # packets to other EIDs are forwarded (here: nobody at 0x2A -> NAK, counted)
    assert front.serial_in(mserial.encode_frame(EX_PKT)) == b""
    assert br.failed == 1


def test_bridge_software_faults_without_sim_bus():
    class Ctl:
        def __init__(self):
            self.w = []

        def writeto(self, a, d):
            self.w.append(bytes(d))
            return len(d)

    ctl = Ctl()
    p = I2CPort(0x10, Capture(2), ctl)
    assert p.inject("pec", 1) and not p.inject("nak", 1)
    p.send(0x1D, EX_PKT)
    p.send(0x1D, EX_PKT)
    assert ctl.w[1] == EX_WRITE and ctl.w[0][:-1] == EX_WRITE[:-1] and ctl.w[0][-1] != EX_WRITE[-1]
    assert p.inject("truncate", 1)
    p.send(0x1D, EX_PKT)
    assert ctl.w[2] == EX_WRITE[:len(EX_WRITE) // 2]


def test_irq_handlers_do_not_allocate():
    # On MicroPython the handlers run with the heap locked, as in a hard IRQ.
    try:
        import micropython

        lock, unlock = micropython.heap_lock, micropython.heap_unlock
    except (ImportError, AttributeError):
        lock = unlock = lambda: None

    class Irq:
        def __init__(self):
            self.f = 0

        def flags(self):
            return self.f

    class T:
        def __init__(self):
            self.data = EX_WRITE
            self.pos = 0
            self.irqo = Irq()

        def irq(self, handler=None, trigger=0, hard=False):
            return self.irqo

        def readinto(self, buf):
            n = 0
            while n < len(buf) and self.pos < len(self.data):
                buf[n] = self.data[self.pos]
                n += 1
                self.pos += 1
            return n

    class F:
        IRQ_ADDR_MATCH_WRITE = 2
        IRQ_WRITE_REQ = 8
        IRQ_END_WRITE = 32

        def __call__(self, *a, **k):
            return T()

    cap = Capture(2)
    t = cap.open(F(), 0, 0x1D)
    ev = t.irqo
    lock()
    try:
        for _ in range(3):               # the third overflows
            t.pos = 0
            ev.f = 2
            cap._irq_hard(t)
            ev.f = 8
            cap._irq_hard(t)
            ev.f = 32
            cap._irq_hard(t)
    finally:
        unlock()
    assert cap.captured == 2 and cap.overflow == 1
    assert bytes(cap.slots[0][:cap.lens[0]]) == EX_WRITE

    class G:
        IRQ_END_WRITE = 32

        def __call__(self, id, addr, mem=None, mem_addrsize=8):
            o = T()
            o.mem = mem
            return o

    cap = Capture(2)
    t = cap.open(G(), 0, 0x1D, prefer_hard=False)
    assert cap.mode == "mem"
    for i in range(len(EX_WRITE)):
        cap._mem[i] = EX_WRITE[i]
    lock()
    try:
        cap._irq_mem(t)
    finally:
        unlock()
    assert bytes(cap.slots[0][:cap.lens[0]]) == EX_WRITE
    assert cap._mem[0] == 0 and cap._mem[1] == 0


# -- USB serial loop and the REPL escape -------------------------------------

class FakeIO:
    """Bursts of bytes arriving at given times; records what is written."""

    def __init__(self, clock, bursts):
        self.clock = clock
        self.bursts = list(bursts)    # [(time_ms, bytes)]
        self.buf = b""
        self.out = b""

    def _arrive(self):
        while self.bursts and self.bursts[0][0] <= self.clock[0]:
            self.buf += self.bursts.pop(0)[1]

    def ready(self):
        self._arrive()
        return len(self.buf) > 0

    def read_byte(self):
        self._arrive()
        if not self.buf:
            return -1
        b = self.buf[0]
        self.buf = self.buf[1:]
        return b

    def write(self, d):
        self.out += d


def _run_loop(bursts, escape=True, until=3000):
    clock = [1000]
    io = FakeIO(clock, bursts)
    svc = Service(device=_device())
    kb = []

    def sleep_ms(n):
        clock[0] += n
        if clock[0] > until:
            raise KeyboardInterrupt

    calls = [0]

    def ticks_ms():
        calls[0] += 1
        if calls[0] > 200000:        # never hang: a loop that stops sleeping ends the test
            raise KeyboardInterrupt
        return clock[0]

    try:
        r = serve(svc, io, ticks_ms, lambda a, b: a - b, sleep_ms, escape=escape, kbd_intr=kb.append)
    except KeyboardInterrupt:
        r = None
    return r, io, kb


def test_serve_loop_answers_frames():
    fr = mserial.encode_frame(EX_PKT)
    r, io, kb = _run_loop([(1000, fr), (1500, fr[:5]), (1501, fr[5:])])
    assert r is None and kb == [-1, 3]
    got = mserial.SerialDecoder().feed(io.out)
    assert len(got) == 2 and got[0][4:7] == bytes((0x00, 0x00, 0x02))


def test_escape_returns_and_leaves_the_rest_for_the_repl():
    fr = mserial.encode_frame(EX_PKT)
    r, io, kb = _run_loop([(1000, fr), (1400, b"\r\x03\r\x01")])
    assert r == "escape" and kb == [-1, 3]
    assert io.buf == b"\r\x01"          # mpremote's raw-REPL request stays for the REPL
    assert len(mserial.SerialDecoder().feed(io.out)) == 1


def test_no_escape_inside_a_frame_after_noise_or_when_disabled():
    fr = mserial.encode_frame(EX_PKT)
    # inside a frame (decoder busy): not an escape
    r, io, kb = _run_loop([(1000, fr[:4]), (1300, b"\r\x03"), (1301, fr)])
    assert r is None
    assert len(mserial.SerialDecoder().feed(io.out)) == 1
    # right after other bytes (no quiet gap): not an escape
    r, io, kb = _run_loop([(1000, b"\x00\x00"), (1010, b"\r\x03"), (1020, fr)])
    assert r is None and len(mserial.SerialDecoder().feed(io.out)) == 1
    # a lone \r then something else: passed on, not lost
    r, io, kb = _run_loop([(1000, b"\r"), (1005, b"A"), (1400, fr)])
    assert r is None and len(mserial.SerialDecoder().feed(io.out)) == 1
    # disabled
    r, io, kb = _run_loop([(1000, b"\r\x03"), (1400, fr)], escape=False)
    assert r is None and len(mserial.SerialDecoder().feed(io.out)) == 1


def test_escape_detector_rules():
    d = lambda a, b: a - b  # noqa: E731
    e = Escape(True, 100)
    assert not e.byte(13, 0, True, d) and e.state == 1
    assert e.byte(3, 0, True, d)
    e = Escape(True, 100)
    assert not e.byte(13, 0, False, d) and e.state == 0     # frame in progress
    e = Escape(True, 100)
    e.byte(0x7E, 0, True, d)
    assert not e.byte(13, 50, True, d) and e.state == 0     # not quiet long enough
    assert not e.byte(13, 200, True, d) and e.state == 1
    assert not e.byte(4, 200, True, d) and e.state == 0
    # a partial frame abandoned for more than stale_ms no longer blocks the escape
    assert not e.byte(13, 1300, False, d) and e.state == 1
    assert e.byte(3, 1300, False, d)


def test_settings_parse_and_overrides():
    from boardlib import format_settings, load_settings, parse_settings
    from uspdm.storage import MemoryStorage

    d = parse_settings("# c\nmode=bridge\ni2c_addr=0x21 # x\nbad\ni2c_freq=400000\n")
    assert d == {"mode": "bridge", "i2c_addr": 0x21, "i2c_freq": 400000}
    assert parse_settings(format_settings(d)) == d
    st = MemoryStorage()
    base = {"i2c_addr": 0x1D, "mode": "responder"}
    assert load_settings(st, base)["i2c_addr"] == 0x1D
    st.write("uspdm/board.cfg", b"mode=bridge\n")
    assert load_settings(st, base)["i2c_addr"] == 0x10      # bridge default
    st.write("uspdm/i2c_addr.bin", b"\x22")
    assert load_settings(st, base)["i2c_addr"] == 0x22
    st.write("uspdm/i2c_addr.bin", b"\x00")
    st.write("uspdm/board.cfg", b"i2c_addr=0x99\n")
    assert load_settings(st, base)["i2c_addr"] == 0x1D      # invalid -> default


def test_usb_serial_io_with_fake_stdio():
    from usb_serial import UsbSerial

    class In:
        def __init__(self, data):
            self.data = data

        def readinto(self, buf):
            buf[0] = self.data[0]
            self.data = self.data[1:]
            return 1

    class Out:
        def __init__(self):
            self.got = b""

        def write(self, mv):
            n = min(3, len(mv))          # short writes are continued
            self.got += bytes(mv[:n])
            return n

    class Poll:
        def __init__(self, src):
            self.src = src

        def poll(self, t):
            return [(0, 1)] if self.src.data else []

    class IPoll(Poll):
        def ipoll(self, t):
            return iter(self.poll(t))

    for cls in (Poll, IPoll):
        src = In(b"\x7e\x01")
        out = Out()
        u = UsbSerial(src, out, cls(src))
        assert u.ready() and u.read_byte() == 0x7E and u.read_byte() == 0x01
        assert u.read_byte() == -1 and not u.ready()
        u.write(b"abcdefgh")
        assert out.got == b"abcdefgh"


def test_random_transfers_never_raise_and_valid_frames_survive():
    import random

    rnd = random.Random(1234) if not IS_MPY else random
    if IS_MPY:
        random.seed(1234)
    for hard in _modes():
        bus = Bus()
        m = SimMachine(bus, hard)
        p = _port(m, 0x1D, slots=4, hard=hard)
        w = m.I2C(1)
        sent = 0
        got = 0
        for i in range(300):
            k = rnd.getrandbits(2)
            if k == 0:
                data = bytes(rnd.getrandbits(8) for _ in range(rnd.getrandbits(9) % 300))
            elif k == 1:
                data = bytearray(EX_WRITE)
                data[rnd.getrandbits(8) % len(data)] ^= 1 << (rnd.getrandbits(3))
            else:
                data = _encode_after_addr(0x1D, 0x10, EX_PKT[:6] + bytes((i & 0xFF,)))
                sent += 1
            try:
                w.writeto(0x1D, data)
            except OSError:
                pass
            if rnd.getrandbits(1) or p.cap.pending() and ((p.cap._wr - p.cap._rd) & 0xFFFF) >= 3:
                while True:
                    r = p.recv()
                    if r is None:
                        break
                    assert r[0] == 0x10 and r[1][:6] == EX_PKT[:6]
                    got += 1
        while p.recv() is not None:
            got += 1
        assert sent > 50 and got == sent
        assert p.cap.overflow == 0
