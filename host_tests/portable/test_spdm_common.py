"""Shared helpers for the SPDM responder portable tests (requests built from
DSP0274 layouts, an independent transcript/signature check) plus smoke tests."""
try:
    import pytest

    parametrize = pytest.mark.parametrize
except ImportError:  # inside MicroPython the arguments come from the host

    def parametrize(*a):
        return lambda f: f

from _util import read_blocks, unhex

from uspdm.crypto import ec, sha2
from uspdm.crypto.drbg import HmacDrbg
from uspdm.identity import Identity
from uspdm.measurements import Measurements
from uspdm.responder import Config, Responder
from uspdm.storage import MemoryStorage

VERSIONS = [0x10, 0x11, 0x12, 0x13]
ERROR = 0x7F
CHUNK_CAP = 0x20000
REQ_FLAGS = 0x6  # CERT_CAP | CHAL_CAP

_IDS = None


def ids():
    global _IDS
    if _IDS is None:
        _IDS = {}
        for b in read_blocks("spdm_identity.txt"):
            _IDS[b["_section"]] = (int(b["key"], 16), unhex(b["chain"]))
    return _IDS


def le16(v):
    return bytes((v & 0xFF, v >> 8))


def le32(v):
    return bytes((v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF, (v >> 24) & 0xFF))


def rd16(b, o):
    return b[o] | (b[o + 1] << 8)


def rd24(b, o):
    return b[o] | (b[o + 1] << 8) | (b[o + 2] << 16)


def rd32(b, o):
    return b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)


def drbg(seed=b"uspdm test"):
    return HmacDrbg(sha2.new("sha256", seed).digest(), b"nonce-0123456789")


def make_identity(algs=("p384", "p256"), slots=(0,)):
    st = MemoryStorage()
    ident = Identity(st, drbg(b"id"))
    for a in algs:
        d, chain = ids()[a]
        ident.set_private_key(a, d)
        for s in slots:
            ident.install_chain(s, a, chain)
    return ident


# Measurement blocks used by the tests: (index, type, form, value)
MEAS_DEF = [(1, 1, "digest", b"firmware image"), (2, 0, "digest", b"rom"),
            (0x41, 6, "raw", b"MicroPython 1.26.0"), (0xFE, 5, "raw", bytes(16))]


def make_meas():
    return Measurements(MEAS_DEF)


def expected_block(index, mtype, form, value, hashname):
    """A DMTF measurement block built independently from the DSP0274 layout."""
    if form == "raw":
        t = mtype | 0x80
        v = value
    else:
        t = mtype
        v = sha2.new(hashname, value).digest()
    return bytes((index, 1)) + le16(3 + len(v)) + bytes((t,)) + le16(len(v)) + v


def make(config=None, ident=None, meas=None, **kw):
    cfg = config or Config()
    for k in kw:
        setattr(cfg, k, kw[k])
    return Responder(ident or make_identity(), meas or make_meas(), drbg(b"rsp"), cfg)


# ---------------------------------------------------------------- requests
def get_version():
    return b"\x10\x84\x00\x00"


def get_caps(v, flags=REQ_FLAGS, ct=10, dts=4096, mx=4096, p1=0):
    if v == 0x10:
        return bytes((v, 0xE1, 0, 0))
    m = bytes((v, 0xE1, p1, 0, 0, ct, 0, 0)) + le32(flags)
    if v >= 0x12:
        m += le32(dts) + le32(mx)
    return m


def neg_algs(v, asym=0x90, hashes=0x3, spec=1, other=2, tables=(), ext_a=0, ext_h=0, length=None, ntab=None):
    """tables: list of (alg_type, supported_bits, ext_count)."""
    tab = b""
    for t, sup, ext in tables:
        tab += bytes((t, 0x20 | ext)) + le16(sup) + bytes(4 * ext)
    body_len = 32 + 4 * (ext_a + ext_h) + len(tab)
    m = bytes((v, 0xE3, len(tables) if ntab is None else ntab, 0)) + le16(body_len if length is None else length)
    m += bytes((spec, other if v >= 0x12 else 0)) + le32(asym) + le32(hashes) + bytes(12)
    m += bytes((ext_a, ext_h, 0, 0)) + bytes(4 * (ext_a + ext_h)) + tab
    return m


def get_digests(v):
    return bytes((v, 0x81, 0, 0))


def get_cert(v, slot=0, off=0, ln=0xFFFF, p2=0):
    return bytes((v, 0x82, slot, p2)) + le16(off) + le16(ln)


def challenge(v, slot=0, kind=0, nonce=b"\x11" * 32, ctx=b"CTX-0001"):
    return bytes((v, 0x83, slot, kind)) + nonce + (ctx if v >= 0x13 else b"")


def get_meas(v, signed=False, op=0xFF, nonce=b"\x22" * 32, slot=0, ctx=b"CTX-meas", attrs=None):
    a = (1 if signed else 0) if attrs is None else attrs
    m = bytes((v, 0xE0, a, op))
    if signed:
        m += nonce + (bytes((slot,)) if v >= 0x11 else b"")
    if v >= 0x13:
        m += ctx
    return m


# ---------------------------------------------------------------- checks
def prefix(v, context):
    s = ("dmtf-spdm-v1.%d.*" % (v & 0x0F)).encode()
    return s * 4 + bytes(36 - len(context)) + context


def verify_sig(v, asym, hashname, transcript, context, sig):
    d = ids()[asym][0]
    curve = ec.P384 if asym == "p384" else ec.P256
    h = sha2.new(hashname, transcript).digest()
    if v >= 0x12:
        h = sha2.new(hashname, prefix(v, context) + h).digest()
    return ec.verify(curve, ec.public_key(curve, d), h, sig)


def chain_buffer(asym, hashname):
    """SPDM cert chain buffer built independently: Length | Reserved | Hash(root) | certs."""
    der = ids()[asym][1]
    n = der[1]
    if n & 0x80:
        k = n & 0x7F
        n = int.from_bytes(der[2:2 + k], "big") + 2 + k
    else:
        n += 2
    rh = sha2.new(hashname, der[:n]).digest()
    return le16(4 + len(rh) + len(der)) + b"\x00\x00" + rh + der


class Peer:
    """Minimal requester: sends, records A (VCA) and the raw exchanges."""

    def __init__(self, r, v):
        self.r = r
        self.v = v
        self.a = b""

    def x(self, req):
        resp = self.r.handle(req)
        assert resp is not None
        return resp

    def ok(self, req, code):
        resp = self.x(req)
        assert resp[1] == code, "expected 0x%02x, got %s" % (code, bytes(resp[:8]).hex())
        assert resp[0] == self.v or code == 0x04
        return resp

    def vca(self, caps=None, algs=None):
        v = self.v
        gv = get_version()
        a = gv + self.ok(gv, 0x04)
        gc = caps or get_caps(v)
        a += gc[:{0x10: 4, 0x11: 12}.get(v, 20)] + self.ok(gc, 0x61)
        na = algs or neg_algs(v)
        a += na + self.ok(na, 0x63)
        self.a = a
        return a


def err(resp, code, data=None, v=None):
    assert resp[1] == ERROR, "expected ERROR, got %s" % bytes(resp[:8]).hex()
    assert resp[2] == code, "expected error 0x%02x, got 0x%02x" % (code, resp[2])
    if data is not None:
        assert resp[3] == data
    if v is not None:
        assert resp[0] == v, "ERROR version 0x%02x" % resp[0]


def test_basic_flow_all_versions():
    for v in VERSIONS:
        p = Peer(make(), v)
        p.vca()
        d = p.ok(get_digests(v), 0x01)
        c = p.ok(get_cert(v, 0, 0, 0x400), 0x02)
        ch = p.ok(challenge(v), 0x03)
        m = p.ok(get_meas(v, True), 0x60)
        assert len(d) == 4 + 48 and len(c) > 8 and len(ch) > 100 and m[4] == len(MEAS_DEF)


def test_handle_never_raises_on_short_or_garbage():
    r = make()
    for msg in (b"", b"\x10", b"\x10\x84", b"\x12\xe1\x00", b"\xff" * 3, bytes(300)):
        resp = r.handle(msg)
        assert resp is not None and resp[1] == ERROR
