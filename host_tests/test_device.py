"""firmware/device.py on CPython with a fake board: the board keeps serving
MCTP control while a signature is pending (deferred signing with
ResponseNotReady, advanced only by idle()), and RESPOND_IF_READY delivers a
CHALLENGE_AUTH that the `cryptography` package verifies."""
import os
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec as cec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in ("firmware",):
    _p = os.path.join(ROOT, _p)
    if _p not in sys.path:
        sys.path.insert(0, _p)

from mctp import serial as mserial  # noqa: E402
from mctp.requester import Requester  # noqa: E402
from uspdm.crypto.drbg import HmacDrbg  # noqa: E402
from uspdm.identity import Identity  # noqa: E402
from uspdm.storage import MemoryStorage  # noqa: E402
from uspdm_tools import certs  # noqa: E402


def _identity_vectors():
    blocks, sec = {}, None
    with open(os.path.join(ROOT, "host_tests", "vectors", "spdm_identity.txt")) as f:
        for line in f:
            line = line.strip()
            if line.startswith("["):
                sec = line[1:-1]
                blocks[sec] = {}
            elif "=" in line and sec:
                k, v = line.split("=", 1)
                blocks[sec][k.strip()] = v.strip()
    return blocks


class FakeBoard:
    NAME = "fake"
    MCU = "cpython"

    def __init__(self, **cfg):
        self.cfg = cfg
        self._st = MemoryStorage()
        self._drbg = HmacDrbg(b"\x5a" * 32, b"device test")
        self.t = 1000
        vecs = _identity_vectors()
        ident = Identity(self._st, self._drbg)
        for alg in ("p384", "p256"):
            ident.set_private_key(alg, int(vecs[alg]["key"], 16))
            ident.install_chain(0, alg, bytes.fromhex(vecs[alg]["chain"]))
        self.chain = bytes.fromhex(vecs["p384"]["chain"])

    def config(self):
        d = {"serial_mtu": 64, "default_eid": 0, "asym_priority": ["p384"], "defer_signing": True,
             "ct_exponent": 12, "rdt_exponent": 12}
        d.update(self.cfg)
        return d

    def storage(self):
        return self._st

    def drbg(self):
        return self._drbg

    def ticks_ms(self):
        self.t += 1
        return self.t

    def ticks_diff(self, a, b):
        return a - b

    def measured_files(self):
        return []


class Host:
    """A requester speaking DSP0253 frames straight into Device.feed()."""

    def __init__(self, dev, eid=8):
        self.dev = dev
        self.rq = Requester(eid=eid)
        self.dec = mserial.SerialDecoder()

    def request(self, body):
        tag, pkts = self.rq.request(0, body)
        out = self.dev.feed(b"".join(mserial.encode_frame(p) for p in pkts))
        for p in self.dec.feed(out):
            m = self.rq.receive_packet(p)
            if m is not None and m[1] == tag:
                return m[2]
        raise AssertionError("no answer")

    def spdm(self, msg):
        rsp = self.request(b"\x05" + msg)
        assert rsp[0] == 0x05
        return rsp[1:]


@pytest.fixture
def dev():
    from device import Device

    d = Device(FakeBoard(), log=lambda m: None)
    return d


def vca(h, v=0x12):
    """GET_VERSION, GET_CAPABILITIES, NEGOTIATE_ALGORITHMS (P-384/SHA-384); returns (A, CAPABILITIES)."""
    a = b""
    caps = None
    for req in (b"\x10\x84\x00\x00",
                bytes((v, 0xE1, 0, 0, 0, 12, 0, 0)) + (0x6).to_bytes(4, "little") + (4096).to_bytes(4, "little") * 2,
                bytes((v, 0xE3, 0, 0, 32, 0, 1, 2)) + (0x80).to_bytes(4, "little") + (0x2).to_bytes(4, "little")
                + bytes(16)):
        rsp = h.spdm(req)
        assert rsp[1] != 0x7F, rsp.hex()
        if rsp[1] == 0x61:
            caps = rsp
        a += req + rsp
    return a, caps


KEY_EX_CAP = 1 << 9


def test_sessions_can_be_left_out(dev):
    from device import Device

    # default: sessions advertised (KEY_EX_CAP) and MCTP type 0x06 supported
    _, caps = vca(Host(dev))
    assert int.from_bytes(caps[8:12], "little") & KEY_EX_CAP
    assert 0x06 in dev.ep.message_types()
    # sessions=False (a board short of heap): neither, and KEY_EXCHANGE is unsupported
    d = Device(FakeBoard(sessions=False), log=lambda m: None)
    h = Host(d)
    _, caps = vca(h)
    assert not int.from_bytes(caps[8:12], "little") & KEY_EX_CAP
    assert 0x06 not in d.ep.message_types()
    rsp = h.spdm(bytes((0x12, 0xE4, 0, 0)) + bytes(4) + bytes(32) + bytes(96) + bytes(2))
    assert rsp[1] == 0x7F and rsp[2] == 0x07 and rsp[3] == 0xE4   # UnsupportedRequest, KEY_EXCHANGE


def test_control_is_served_while_a_signature_is_pending(dev):
    h = Host(dev)
    v = 0x12
    a, _ = vca(h, v)
    nonce = bytes(range(32))
    ch = bytes((v, 0x83, 0, 0)) + nonce
    rsp = h.spdm(ch)
    # deferred: ERROR ResponseNotReady (0x42) with RDTExponent, RequestCode, Token, RDTM
    assert rsp[1] == 0x7F and rsp[2] == 0x42, rsp.hex()
    assert rsp[5] == 0x83
    token = rsp[6]
    assert dev.pending()
    # MCTP control keeps being answered: nothing of the signature has run yet
    for _ in range(3):
        body = h.request(b"\x00\x81\x02")   # Get Endpoint ID
        assert body[:4] == b"\x00\x01\x02\x00"
        assert dev.pending()
    # the board's loop advances the signature in slices
    steps = 0
    while dev.pending():
        dev.idle()
        steps += 1
        assert steps < 100000
    assert steps > 1
    auth = h.spdm(bytes((v, 0xFF, 0x83, token)))
    assert auth[1] == 0x03, auth.hex()
    # verify CHALLENGE_AUTH independently: M1 = A || C (no B here), 1.2 signing prefix
    H = 48
    sig = auth[-96:]
    m1 = a + ch + auth[:-96]
    prefix = b"dmtf-spdm-v1.2.*" * 4
    ctx = b"responder-challenge_auth signing"
    prefix += bytes(36 - len(ctx)) + ctx
    import hashlib

    digest_in = prefix + hashlib.sha384(m1).digest()
    leaf = x509.load_der_x509_certificate(certs.der_split(dev.board.chain)[-1])
    r, s = int.from_bytes(sig[:48], "big"), int.from_bytes(sig[48:], "big")
    leaf.public_key().verify(encode_dss_signature(r, s), digest_in, cec.ECDSA(hashes.SHA384()))
    assert auth[4:4 + H] == hashlib.sha384(_chain_buffer(dev.board.chain)).digest()


def _chain_buffer(chain):
    import hashlib

    root = certs.der_split(chain)[0]
    body = hashlib.sha384(root).digest() + chain
    return (4 + len(body)).to_bytes(2, "little") + b"\x00\x00" + body


def test_asym_priority_from_a_settings_string():
    # settings files give strings: "p256,p384" must mean P-256 first (both curves provisioned)
    from device import Device

    d = Device(FakeBoard(asym_priority="p256,p384"), log=lambda m: None)
    h = Host(d)
    v = 0x12
    h.spdm(b"\x10\x84\x00\x00")
    h.spdm(bytes((v, 0xE1, 0, 0, 0, 12, 0, 0)) + (0x6).to_bytes(4, "little") + (4096).to_bytes(4, "little") * 2)
    # offer both ECDSA P-256 (bit 4) and P-384 (bit 7) with SHA-256 and SHA-384
    rsp = h.spdm(bytes((v, 0xE3, 0, 0, 32, 0, 1, 2)) + (0x90).to_bytes(4, "little") + (0x3).to_bytes(4, "little")
                 + bytes(16))
    assert rsp[1] == 0x63, rsp.hex()
    # ALGORITHMS: hdr, Length u16, MeasSpecSel, OtherParamsSel, MeasurementHashAlgo u32 at 8,
    # BaseAsymSel u32 at 12, BaseHashSel u32 at 16
    assert int.from_bytes(rsp[12:16], "little") == 0x10
    assert int.from_bytes(rsp[16:20], "little") == 0x1


def test_defer_auto_answers_directly_when_signing_is_fast():
    # defer_signing="auto" (the boards' default): a board that signs quickly
    # answers CHALLENGE at once (what a requester without RESPOND_IF_READY needs)
    from device import Device
    from spdm_setup import DEFER_AUTO_MS, defer_policy

    # (in slices, answered directly within CT) on a slow board; signed at once on a fast one
    assert defer_policy("auto", DEFER_AUTO_MS + 1) == (True, True) and defer_policy("auto", 5) == (False, False)
    # 1: ResponseNotReady and RESPOND_IF_READY; 0: signed at once however slow
    assert defer_policy(1, 5) == (True, False) and defer_policy(0, 10 ** 6) == (False, False)
    d = Device(FakeBoard(defer_signing="auto"), log=lambda m: None)
    h = Host(d)
    vca(h)
    rsp = h.spdm(bytes((0x12, 0x83, 0, 0)) + bytes(32))
    assert rsp[1] == 0x03, rsp.hex()


def test_versions_setting_limits_what_the_board_offers():
    from device import Device
    from spdm_setup import parse_versions

    assert parse_versions("1.0, 1.1,1.2") == [0x10, 0x11, 0x12]
    assert parse_versions("1.4,x") == []
    d = Device(FakeBoard(versions="1.0,1.1,1.2"), log=lambda m: None)
    rsp = Host(d).spdm(b"\x10\x84\x00\x00")
    n = rsp[5]
    entries = [rsp[6 + 2 * i + 1] for i in range(n)]   # VersionNumberEntry u16 LE: major/minor in the high byte
    assert entries == [0x10, 0x11, 0x12]


def test_signing_served_in_turn_no_requester_starves():
    """Issue 11.5: two requesters that send CHALLENGE again the moment they
    collect their CHALLENGE_AUTH (so one of them always has a signature
    pending) cannot starve a third: pending signatures get slices in turn."""
    from device import Device

    d = Device(FakeBoard(), log=lambda m: None)     # defer_signing=1: ResponseNotReady, RESPOND_IF_READY
    v = 0x12
    ch = bytes((v, 0x83, 0, 0)) + bytes(32)
    peers = {}
    for eid in (0x30, 0x10, 0x20):                  # not in EID order
        h = Host(d, eid)
        vca(h, v)
        peers[eid] = h
    tokens = {}
    for eid in (0x30, 0x10):
        rsp = peers[eid].spdm(ch)
        assert rsp[1] == 0x7F and rsp[2] == 0x42
        tokens[eid] = rsp[6]
    rsp = peers[0x20].spdm(ch)
    assert rsp[1] == 0x7F and rsp[2] == 0x42
    # a second signing request from the same requester meanwhile: Busy (one pending each);
    # the same request sent again: ResponseNotReady for the work already pending
    busy = peers[0x20].spdm(bytes((v, 0x83, 0, 0)) + b"\x01" * 32)
    assert busy[1] == 0x7F and busy[2] == 0x03
    again = peers[0x20].spdm(ch)
    assert again[1] == 0x7F and again[2] == 0x42 and again[6] == rsp[6]
    c_token = rsp[6]
    cycles = {0x30: 0, 0x10: 0}
    for step in range(200000):
        d.idle()
        for eid in (0x30, 0x10):
            r = d.responders[eid]
            if r.pend is not None and r.pend.sig is not None:
                got = peers[eid].spdm(bytes((v, 0xFF, 0x83, tokens[eid])))
                assert got[1] == 0x03
                cycles[eid] += 1
                again = peers[eid].spdm(ch)                 # at once: again pending
                tokens[eid] = again[6]
        rc = d.responders[0x20]
        if rc.pend is not None and rc.pend.sig is not None:
            break
    else:
        raise AssertionError("the third requester's signature never finished")
    auth = peers[0x20].spdm(bytes((v, 0xFF, 0x83, c_token)))
    assert auth[1] == 0x03
    # it waited behind at most about one signature of each other requester
    assert cycles[0x30] <= 2 and cycles[0x10] <= 2, cycles


def test_answer_frames_written_as_made_and_from_the_response_buffer():
    # Device.feed(write=) hands each answer frame to the port as it is made (what the
    # boards do: no allocation as large as the answer), the same bytes feed() returns;
    # an unsigned GET_MEASUREMENTS of all blocks is built in the board's response buffer
    from device import Device

    def run(write):
        d = Device(FakeBoard(), log=lambda m: None)
        h = Host(d)
        vca(h)
        outs = []
        req = bytes((0x12, 0xE0, 0, 0xFF))
        tag, pkts = h.rq.request(0, b"\x05" + req)
        data = b"".join(mserial.encode_frame(p) for p in pkts)
        if write:
            got = []
            assert d.feed(data, got.append) == b""
            outs = got
        else:
            outs = [d.feed(data)]
        assert d._spdm.config.rsp_buffer is d._rbuf and d._rbuf is not None
        return b"".join(outs), len(outs)

    a, n_a = run(False)
    b, n_b = run(True)
    assert a == b and n_a == 1 and n_b > 1   # one frame per MCTP packet
    dec = mserial.SerialDecoder()
    rq = Requester(eid=8)
    msg = None
    for p in dec.feed(b):
        m = rq.receive_packet(p)
        if m is not None:
            msg = m[2]
    assert msg is not None and msg[0] == 0x05 and msg[2] == 0x60


def test_settling_after_boot_is_retried_when_it_runs_out_of_memory():
    # the last step of the boot preparation (spdm_setup.settle: the context kept in
    # device.Prepared, the measurement records frozen, the comb table loaded) out of
    # memory, before anything and after the records were frozen: the background work
    # stays on, backs off, settles on a later slice, and the board answers as usual
    import device
    import spdm_setup

    real = spdm_setup.settle
    calls = []

    def short(dev, resident, boot_only):
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("test: short before settling")
        real(dev, resident, boot_only)
        if len(calls) == 2:
            raise MemoryError("test: short after the records were frozen")

    spdm_setup.settle = short
    logs = []
    try:
        d = device.Device(FakeBoard(), log=logs.append)
        for _ in range(200000):
            if not d._background:
                break
            d.idle()
        else:
            raise AssertionError("the background work never finished: %r" % logs[-5:])
    finally:
        spdm_setup.settle = real
    assert len(calls) >= 2, calls
    assert isinstance(d._spdm, device.Prepared)
    assert [m for m in logs if "background work paused" in m], logs
    assert "spdm_setup" not in sys.modules
    h = Host(d)
    vca(h)
    rsp = h.spdm(bytes((0x12, 0xE0, 0, 0)))   # GET_MEASUREMENTS, operation 0
    assert rsp[1] == 0x60 and rsp[2] > 0, rsp.hex()   # (Param1: how many blocks)


@pytest.mark.parametrize("heap,sessions,factor", [(128064, 1, 3), (200064, 1, 1), (128064, 0, 1)])
def test_ct_covers_the_tableless_key_exchange_on_a_small_heap(monkeypatch, heap, sessions, factor):
    # on a heap under uspdm.session_gate.SMALL_HEAP a session runs without the EC comb
    # tables (about 3x slower KEY_EXCHANGE): the board's estimate of KEY_EXCHANGE, and the
    # CT it advertises, count that in; a larger heap, or a board without sessions, does not
    import gc

    import device
    from uspdm.session_gate import SMALL_HEAP

    assert (heap < SMALL_HEAP) == (heap == 128064)
    monkeypatch.setattr(gc, "mem_free", lambda: heap - 1000, raising=False)
    monkeypatch.setattr(gc, "mem_alloc", lambda: 1000, raising=False)
    d = device.Device(FakeBoard(ct_exponent=None, sessions=sessions), log=lambda m: None)
    for _ in range(200000):
        if not d._background:
            break
        d.idle()
    ctx = d._spdm
    from spdm_setup import KEX_SIGNATURES, CT_MARGIN_PCT, _exponent

    assert ctx.kex_ms == ctx.sign_ms * KEX_SIGNATURES * factor
    assert ctx.config.ct_exponent == _exponent(ctx.kex_ms * CT_MARGIN_PCT * 10)


def test_tight_collection_restores_the_ports_threshold(monkeypatch):
    """The boot's frequent collections (spdm_setup._tight) put gc.threshold back as the
    port had it: switching it off instead (-1) made the wasm board's heap grow to
    ~750 KB during its first CHALLENGE, late past CT."""
    import spdm_setup

    class FakeGC:
        def __init__(self):
            self.th = 4096   # the port's own setting

        def threshold(self, *a):
            if a:
                self.th = a[0]
            return self.th

        def collect(self):
            pass

    g = FakeGC()
    monkeypatch.setattr(spdm_setup, "gc", g)
    monkeypatch.setattr(spdm_setup, "_gc_was", None)
    spdm_setup._tight(False)            # not on: nothing to put back
    assert g.th == 4096
    spdm_setup._tight(True)
    assert g.th == spdm_setup.TIGHT_GC
    spdm_setup._tight(True)             # nested: the port's value is still what comes back
    spdm_setup._tight(False)
    assert g.th == 4096
    spdm_setup._tight(False)
    assert g.th == 4096
    g.th = -1                           # a port that collects only when the heap is full
    spdm_setup._tight(True)
    spdm_setup._tight(False)
    assert g.th == -1
