"""firmware/workq.py on CPython (firmware/device.py with a fake board whose signing
is slowed by slow_sign_ms): by default (defer_signing=auto) a slow board answers
CHALLENGE directly, late, within the CT it advertises, as the MCTP answer to the
request's tag, while MCTP control and other requesters are served between the
slices; work that would not fit in CT gets ResponseNotReady, and a job slower
than estimated answers ResponseNotReady before its CT runs out.  Signatures are
checked with the `cryptography` package."""
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec as cec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from test_device import FakeBoard, Host, _chain_buffer, vca
from uspdm_tools import certs

SLOW = 400   # ms of board time per signing job


class SlowBoard(FakeBoard):
    def __init__(self, **cfg):
        cfg.setdefault("defer_signing", "auto")
        cfg.setdefault("slow_sign_ms", SLOW)
        cfg.setdefault("ct_exponent", None)    # from the measured work
        cfg.setdefault("rdt_exponent", None)
        super().__init__(**cfg)

    def sleep_ms(self, ms):
        self.t += ms


class LateHost(Host):
    """Sends a request and collects its answer from feed() or from later idle() calls."""

    def send(self, body):
        tag, pkts = self.rq.request(0, body)
        out = self.dev.feed(b"".join(mserial_frames(pkts)))
        return tag, self.take(out, tag)

    def take(self, out, tag):
        for p in self.dec.feed(out):
            m = self.rq.receive_packet(p)
            if m is not None and m[1] == tag:
                return m[2]
        return None


def mserial_frames(pkts):
    from mctp import serial as mserial

    return [mserial.encode_frame(p) for p in pkts]


def _verify_challenge_auth(board, a, ch, auth):
    sig = auth[-96:]
    prefix = b"dmtf-spdm-v1.2.*" * 4
    ctx = b"responder-challenge_auth signing"
    prefix += bytes(36 - len(ctx)) + ctx
    digest_in = prefix + hashlib.sha384(a + ch + auth[:-96]).digest()
    leaf = x509.load_der_x509_certificate(certs.der_split(board.chain)[-1])
    r, s = int.from_bytes(sig[:48], "big"), int.from_bytes(sig[48:], "big")
    leaf.public_key().verify(encode_dss_signature(r, s), digest_in, cec.ECDSA(hashes.SHA384()))
    assert auth[4:52] == hashlib.sha384(_chain_buffer(board.chain)).digest()


def _run_until(dev, hosts_tags, limit=200000):
    """idle() until every (host, tag) got its answer; returns {tag-key: (answer, board ms)}."""
    got = {}
    t0 = dev.board.t
    for _ in range(limit):
        out = dev.idle()
        if out:
            for i, (h, tag) in enumerate(hosts_tags):
                if i not in got:
                    # each host decodes the bytes; the MCTP destination EID tells whose they are
                    m = h.take(out, tag)
                    if m is not None:
                        got[i] = (m, dev.board.t - t0)
        if len(got) == len(hosts_tags):
            return got
    raise AssertionError("not answered: %r" % (got,))


def _signing(dev):
    return any(r.pending() for r in dev.responders.values())


@pytest.fixture
def slow():
    from device import Device

    logs = []
    d = Device(SlowBoard(), log=logs.append)
    d.logs = logs
    return d


def test_challenge_answered_directly_within_ct(slow):
    h = LateHost(slow)
    v = 0x12
    a, caps = vca(h, v)
    ct_us = 1 << caps[5]
    # CT covers the measured work (KEY_EXCHANGE: at least the slowed signature) with a margin
    assert ct_us >= SLOW * 1000 * 5 // 4, caps[5]
    ch = bytes((v, 0x83, 0, 0)) + bytes(range(32))
    tag, rsp = h.send(b"\x05" + ch)
    assert rsp is None                 # no ResponseNotReady: the answer comes later
    assert _signing(slow)
    # MCTP control is answered while the signature is pending, and it advances only in idle()
    for _ in range(3):
        body = h.request(b"\x00\x81\x02")   # Get Endpoint ID
        assert body[:4] == b"\x00\x01\x02\x00"
    t0 = slow.board.t
    got = _run_until(slow, [(h, tag)])
    auth, took = got[0]
    assert auth[0] == 0x05 and auth[2] == 0x03, auth.hex()
    assert SLOW <= slow.board.t - t0 and took * 1000 < ct_us
    _verify_challenge_auth(slow.board, a, ch, auth[1:])
    assert not _signing(slow)
    # the connection goes on: a signed GET_MEASUREMENTS is answered directly too
    tag, rsp = h.send(b"\x05" + bytes((v, 0xE0, 1, 0)) + bytes(32) + b"\x00")
    assert rsp is None
    m, _ = _run_until(slow, [(h, tag)])[0]
    assert m[2] == 0x60, m.hex()


def test_other_requesters_served_and_ct_respected():
    from device import Device

    # CT set to 2^20 us (about 1 s): two 400 ms jobs fit in 90 % of it, three do not
    slow = Device(SlowBoard(ct_exponent=20), log=lambda m: None)
    v = 0x12
    hs = [LateHost(slow, eid=e) for e in (8, 9, 10)]
    for h in hs:
        vca(h, v)
    ct_ms = slow._spdm.ct_ms
    assert ct_ms == 1048
    ch = bytes((v, 0x83, 0, 0)) + bytes(32)
    t1, r1 = hs[0].send(b"\x05" + ch)
    assert r1 is None
    # a newcomer negotiates during the signature (every answer immediate)
    new = LateHost(slow, eid=11)
    vca(new, v)
    # a second job fits in CT (two estimates) when CT allows it; a third does not: ResponseNotReady now
    t2, r2 = hs[1].send(b"\x05" + ch)
    assert r2 is None
    t3, r3 = hs[2].send(b"\x05" + ch)
    assert r3 is not None and r3[2] == 0x7F and r3[3] == 0x42, r3   # ResponseNotReady
    waiting = [(hs[0], t1), (hs[1], t2)]
    got = _run_until(slow, waiting)
    for i in got:
        assert got[i][0][2] == 0x03 and got[i][1] < ct_ms, (got[i][0].hex(), got[i][1], ct_ms)
    # the third collects its answer with RESPOND_IF_READY
    token = r3[7]
    for _ in range(200000):
        slow.idle()
        if not slow.responders[10].pending():
            break
    auth = hs[2].spdm(bytes((v, 0xFF, 0x83, token)))
    assert auth[1] == 0x03, auth.hex()


def test_slower_than_estimated_answers_not_ready_within_ct(slow):
    h = LateHost(slow)
    v = 0x12
    a, _ = vca(h, v)
    ctx = slow._spdm
    ctx.slow_ms = ctx.ct_ms * 2       # the work now takes longer than the board measured
    ch = bytes((v, 0x83, 0, 0)) + bytes(32)
    tag, rsp = h.send(b"\x05" + ch)
    assert rsp is None
    rnr, took = _run_until(slow, [(h, tag)])[0]
    assert rnr[2] == 0x7F and rnr[3] == 0x42 and rnr[6] == 0x83, rnr.hex()
    assert took < ctx.ct_ms
    assert any("not done after" in m for m in slow.logs)
    for _ in range(200000):
        slow.idle()
        if not _signing(slow):
            break
    auth = h.spdm(bytes((v, 0xFF, 0x83, rnr[7])))
    assert auth[1] == 0x03
    _verify_challenge_auth(slow.board, a, ch, auth)


def test_defer_signing_1_keeps_response_not_ready():
    from device import Device

    d = Device(SlowBoard(defer_signing=1), log=lambda m: None)
    h = LateHost(d)
    v = 0x12
    vca(h, v)
    tag, rsp = h.send(b"\x05" + bytes((v, 0x83, 0, 0)) + bytes(32))
    assert rsp is not None and rsp[2] == 0x7F and rsp[3] == 0x42
    t0 = d.board.t
    while _signing(d):
        assert d.idle() == b""        # nothing sent on its own
    assert d.board.t - t0 >= SLOW     # slow_sign_ms slows the deferred work too
    auth = h.spdm(bytes((v, 0xFF, 0x83, rsp[7])))
    assert auth[1] == 0x03


def test_restart_drops_the_late_answer(slow):
    h = LateHost(slow)
    v = 0x12
    vca(h, v)
    tag, rsp = h.send(b"\x05" + bytes((v, 0x83, 0, 0)) + bytes(32))
    assert rsp is None
    vca(h, v)     # GET_VERSION: the connection restarts, the pending work is forgotten
    assert not _signing(slow)
    for _ in range(50):
        assert slow.idle() == b""


def test_late_answer_goes_back_over_i2c(slow):
    """A request that came over I2C (DSP0237) gets its late answer there too:
    master-written back to the requester's SMBus address."""
    h = LateHost(slow)
    v = 0x12
    vca(h, v)     # over serial first; the I2C request below moves EID 8 to I2C
    rq = h.rq
    tag, pkts = rq.request(0, b"\x05" + bytes((v, 0x83, 0, 0)) + bytes(32))
    out = []
    for p in pkts:
        out += slow.feed_i2c(0x21, p)
    assert out == []          # answered later
    for _ in range(200000):
        assert slow.idle() == b""     # nothing on the serial line
        if slow.i2c_out:
            break
    msg = None
    for addr, p in slow.i2c_out:
        assert addr == 0x21
        msg = rq.receive_packet(p) or msg
    assert msg is not None and msg[1] == tag and msg[2][2] == 0x03, msg


def test_respond_if_ready_on_a_direct_job_turns_it_into_polling(slow):
    """A requester that polls a direct job with RESPOND_IF_READY (it guessed the
    token) gets ResponseNotReady and then collects the answer itself: nothing is
    sent on its own any more."""
    h = LateHost(slow)
    v = 0x12
    vca(h, v)
    tag, rsp = h.send(b"\x05" + bytes((v, 0x83, 0, 0)) + bytes(32))
    assert rsp is None
    token = slow.responders[8].pend.token
    rnr = h.spdm(bytes((v, 0xFF, 0x83, token)))
    assert rnr[1] == 0x7F and rnr[2] == 0x42
    while _signing(slow):
        assert slow.idle() == b""
    assert h.spdm(bytes((v, 0xFF, 0x83, token)))[1] == 0x03


def test_failed_work_answers_an_error(slow):
    """Signing work that fails (a bug, a bad key) ends the direct job with ERROR Unspecified."""
    h = LateHost(slow)
    v = 0x12
    vca(h, v)
    tag, rsp = h.send(b"\x05" + bytes((v, 0x83, 0, 0)) + bytes(32))
    assert rsp is None

    def broken():
        yield
        raise ValueError("signing failed")

    slow.responders[8].pend.gen = broken()
    m, _ = _run_until(slow, [(h, tag)])[0]
    assert m[2] == 0x7F and m[3] == 0x05, m.hex()
    assert not _signing(slow)
