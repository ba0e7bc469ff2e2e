"""Issue 11 (harden): attacks on firmware/device.py (CPython, fake board): a second requester on
the same bus with a spoofed or its own source EID, and floods."""
import pytest

from mctp import serial as mserial
from mctp.requester import Requester

from test_device import FakeBoard


class CountingBoard(FakeBoard):
    def __init__(self, **cfg):
        FakeBoard.__init__(self, **cfg)
        self.writes = []
        st = self._st
        orig = st.write

        def write(name, data):
            self.writes.append((name, bytes(data)))
            return orig(name, data)
        st.write = write


class Peer:
    """A requester with its own source EID on the serial line (or on I2C with phys=ADDR)."""

    def __init__(self, dev, eid, phys=None):
        self.dev = dev
        self.rq = Requester(eid=eid)
        self.dec = mserial.SerialDecoder()
        self.phys = phys

    def request(self, body, dest=0):
        tag, pkts = self.rq.request(dest, body)
        if self.phys is None:
            out = list(self.dec.feed(self.dev.feed(b"".join(mserial.encode_frame(p) for p in pkts))))
        else:
            out = []
            for p in pkts:
                out += [q for _, q in self.dev.feed_i2c(self.phys, bytes(p))]
        for p in out:
            m = self.rq.receive_packet(p)
            if m is not None and m[1] == tag:
                return m[2]
        return None

    def control(self, cmd, data=b""):
        inst = self.rq.next_instance()
        r = self.request(bytes((0x00, 0x80 | inst, cmd)) + bytes(data))
        assert r is not None and r[2] == cmd
        return r[3], r[4:]

    def spdm(self, msg):
        r = self.request(b"\x05" + bytes(msg))
        return None if r is None else r[1:]


def _device(board):
    from device import Device

    return Device(board, log=lambda m: None)


# ------------------------------------------------------------ 11.7: EID by the bus owner only

def test_eid_cannot_be_moved_by_another_requester():
    b = CountingBoard()
    d = _device(b)
    owner, other = Peer(d, 8), Peer(d, 0x20)
    assert owner.control(0x01, b"\x00\x42") == (0, bytes((0x00, 0x42, 0x00)))
    # the attacker: Set rejected (present EID), Force refused, over serial and over I2C
    assert other.control(0x01, b"\x00\x66") == (0, bytes((0x10, 0x42, 0x00)))
    assert other.control(0x01, b"\x01\x66")[0] == 0x01
    spoof = Peer(d, 8, phys=0x1D)     # the owner's EID, from an I2C address
    assert spoof.control(0x01, b"\x01\x66")[0] == 0x01
    assert owner.control(0x02)[1][0] == 0x42
    assert d.ep.eid == 0x42
    # nothing was written: no board setting asks for a persistent EID
    assert b.writes == []


def test_eid_persisted_once_per_owner_never_under_a_flood():
    b = CountingBoard(persist_eid=1)
    d = _device(b)
    owner = Peer(d, 8)
    # the owner floods 40 changes (what the review did in 2.3 s): one flash write
    for i in range(40):
        assert owner.control(0x01, bytes((i & 1, 0x30 + i)))[0] == 0
    assert d.ep.eid == 0x30 + 39
    assert [w for w in b.writes if w[0] == "uspdm/eid.bin"] == [("uspdm/eid.bin", b"\x30")]
    # others flood too: refused, nothing written
    for i in range(40):
        Peer(d, 0x40 + i).control(0x01, bytes((i & 1, 0x70 + i)))
    assert len(b.writes) == 1 and d.ep.eid == 0x30 + 39
    # after a restart the persisted EID is used; a new bus owner may assign once more (one write)
    d2 = _device(b)
    assert d2.ep.eid == 0x30
    Peer(d2, 9).control(0x01, b"\x00\x55")
    assert len(b.writes) == 2 and b._st.read("uspdm/eid.bin") == b"\x55"
    # the same EID again by the next owner: no write at all
    d3 = _device(b)
    Peer(d3, 9).control(0x01, b"\x00\x55")
    assert len(b.writes) == 2


def test_saved_eid_ignored_without_the_setting():
    b = CountingBoard()
    b._st.write("uspdm/eid.bin", b"\x66")   # e.g. written by an attacker under an older firmware
    d = _device(b)
    assert d.ep.eid == 0


# ------------------------------------------------------------ sessions over the device

class DeviceLink:
    """requester transport over a Peer: .spdm / .secured, the board's idle loop run in between."""

    def __init__(self, peer):
        self.p = peer

    def _idle(self):
        for _ in range(100000):
            if not self.p.dev.pending():
                return
            self.p.dev.idle()
        raise AssertionError("idle work does not finish")

    def spdm(self, req, timeout=None):
        self._idle()
        r = self.p.request(b"\x05" + bytes(req))
        if r is None:
            raise TimeoutError("no answer")
        return r[1:]

    def secured(self, body, timeout=None):
        self._idle()
        r = self.p.request(b"\x06" + bytes(body))
        if r is None:
            raise TimeoutError("no answer")
        return r[1:]


def session_requester(peer, **kw):
    from uspdm_tools.session_requester import SessionRequester

    q = SessionRequester(DeviceLink(peer), version="1.2", algs=("p384",), sleep=lambda t: None, **kw)
    q.init_connection()
    return q


# ------------------------------------------------------------ 11.6: eviction never ends a session

def test_newcomers_do_not_evict_a_session():
    b = FakeBoard(sessions=1, max_sessions=4)
    d = _device(b)
    victim = session_requester(Peer(d, 8))
    s = victim.open_session(0)
    # the review's attack: GET_VERSION from 4 new requester EIDs (4 connection states fit)
    for e in (0x21, 0x22, 0x23, 0x24):
        assert Peer(d, e).spdm(b"\x10\x84\x00\x00")[1] == 0x04
    assert 8 in d.responders and 0x21 not in d.responders   # the LRU without a session made room
    victim.heartbeat(s)                                      # the session is alive
    victim.in_session(s).get_measurements(0, False)
    # when every connection holds a session, the newcomer is refused (ERROR Busy), nobody evicted
    others = [session_requester(Peer(d, e)) for e in (0x31, 0x32, 0x33)]
    held = [q.open_session(0) for q in others]
    rsp = Peer(d, 0x40).spdm(b"\x10\x84\x00\x00")
    assert rsp == b"\x10\x7f\x03\x00"
    rsp = Peer(d, 0x41).spdm(b"\x12\xe1\x00\x00" + bytes(16))
    assert rsp == b"\x12\x7f\x03\x00"
    victim.heartbeat(s)
    for q, x in zip(others, held):
        q.heartbeat(x)
    # a session ends: its connection may be evicted again
    others[0].end_session(held[0])
    assert Peer(d, 0x40).spdm(b"\x10\x84\x00\x00")[1] == 0x04
    assert 0x31 not in d.responders
    victim.end_session(s)


# ------------------------------------------------------------ 11.4: unauthenticated heap pinning

def chunk_vca(peer, v=0x12):
    """VCA at 1.2 with CHUNK_CAP, so the peer may CHUNK_SEND."""
    for req in (b"\x10\x84\x00\x00",
                bytes((v, 0xE1, 0, 0, 0, 12, 0, 0)) + ((1 << 17) | 0x6).to_bytes(4, "little")
                + (4096).to_bytes(4, "little") * 2,
                bytes((v, 0xE3, 0, 0, 32, 0, 1, 2)) + (0x80).to_bytes(4, "little") + (0x2).to_bytes(4, "little")
                + bytes(16)):
        rsp = peer.spdm(req)
        assert rsp is not None and rsp[1] != 0x7F, rsp


def first_chunk(v=0x12, handle=1, large=4000, size=26):
    """CHUNK_SEND seq 0 announcing a `large`-byte request, carrying `size` bytes (42 on the wire)."""
    return (bytes((v, 0x85, 0, handle)) + (0).to_bytes(2, "little") + b"\x00\x00" + size.to_bytes(4, "little")
            + large.to_bytes(4, "little") + bytes((v, 0xE0)) + bytes(size - 2))


def partial_mctp(dev, src, tag, n):
    """n packets of a message from `src` that never ends (SOM, then middles)."""
    for i in range(n):
        flags = (0x80 if i == 0 else 0) | ((i & 3) << 4) | 0x08 | tag
        dev.feed(mserial.encode_frame(bytes((1, 0, src, flags)) + bytes(64)))


def test_buffered_bytes_have_a_global_cap():
    b = FakeBoard()
    d = _device(b)
    cap = d.buffer_cap
    assert cap == 4096 + 1024 + 64
    # the review's attack: 4 requester EIDs, each a CHUNK_SEND of 4 KB announced by a 42-byte chunk
    # and partial MCTP messages from 4 more
    peers = [Peer(d, 0x20 + i) for i in range(4)]
    for p in peers:
        chunk_vca(p)
        ack = p.spdm(first_chunk())
        assert ack[1] == 0x05 and not ack[2] & 1, ack
    held = d.buffered()
    assert held <= 4 * 64, held          # what arrived, not 4 x 4000 bytes
    for i in range(4):
        partial_mctp(d, 0x40 + i, i, 60)  # 3.8 KB each, never finished
        assert d.buffered() <= cap
    assert d.ep.reasm.over_budget + d.ep.reasm.evicted >= 1 and d.buffered() > 3000
    # a CHUNK_SEND that would go beyond the cap is not buffered either: ERROR Busy (early error)
    d.buffer_cap = d.buffered() + 10      # the flood holds all but 10 bytes of the cap
    ack = peers[0].spdm(first_chunk(handle=2))
    assert ack[1] == 0x05 and ack[2] & 1 and ack[6:10] == b"\x12\x7f\x03\x00", ack   # Busy
    assert d.buffered() <= d.buffer_cap
    d.buffer_cap = cap
    # idle transfers expire (CHUNK_SEND after 5 s without a chunk, MCTP reassembly likewise)
    b.t += 6000
    d.idle()
    assert d.buffered() == 0
    assert all(d.responders[p.rq.eid].inc is None for p in peers)


def test_signed_flow_after_the_pinning_attack():
    from test_device import FakeBoard as FB  # noqa: F401 (same board as the other device tests)

    b = FakeBoard()
    d = _device(b)
    for i in range(3):
        p = Peer(d, 0x20 + i)
        chunk_vca(p)
        p.spdm(first_chunk())
        partial_mctp(d, 0x40 + i, i, 60)
    q = session_requester(Peer(d, 8))
    q.get_digests()
    q.get_certificate(0)
    q.challenge(0)
    q.get_measurements(0xFF, signed=True)
