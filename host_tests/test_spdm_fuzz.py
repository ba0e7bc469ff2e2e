"""Property-based robustness test of the SPDM responder (hypothesis, CPython).

Random and mutated requests in random orders (with deferred-signing work
slices interleaved): every answer must be a well-formed SPDM response or
ERROR, handle() never raises, and afterwards a clean GET_VERSION ..
CHALLENGE / signed MEASUREMENTS flow still succeeds and verifies (checked
with the `cryptography` package against a transcript recomputed here).
"""
import hashlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_spdm_common import (CHUNK_CAP, challenge, get_caps, get_cert, get_digests, get_meas, get_version, ids,
                              le16, le32, make, neg_algs)

VERSIONS = [0x10, 0x11, 0x12, 0x13]
RESPONSE_CODES = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x60, 0x61, 0x63, 0x7F}
ERROR_CODES = {0x01, 0x03, 0x04, 0x05, 0x07, 0x0D, 0x0E, 0x0F, 0x41, 0x42, 0x43}


def valid_messages(v):
    return [
        get_version(),
        get_caps(v),
        get_caps(v, flags=0x6 | CHUNK_CAP, dts=48, mx=8192),
        neg_algs(v),
        neg_algs(v, asym=0x10, hashes=0x1, tables=[(2, 0x18, 0), (5, 1, 0)]),
        get_digests(v),
        get_cert(v, 0, 0, 0xFFFF),
        get_cert(v, 0, 100, 50),
        challenge(v, 0, 0xFF),
        get_meas(v, False, 0),
        get_meas(v, True, 0xFF),
        bytes((v, 0xFF, 0x83, 1)),
        bytes((v, 0x86, 0, 1)) + le16(0),
        bytes((v, 0x85, 0, 1)) + le16(0) + b"\x00\x00" + le32(8) + le32(100) + bytes(8),
    ]


@st.composite
def message(draw):
    v = draw(st.sampled_from(VERSIONS))
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(min_size=0, max_size=80))
    base = bytearray(draw(st.sampled_from(valid_messages(v))))
    if kind == 1:
        return bytes(base)
    if kind == 2:  # flip / overwrite bytes
        for _ in range(draw(st.integers(1, 4))):
            if base:
                i = draw(st.integers(0, len(base) - 1))
                base[i] = draw(st.integers(0, 255))
        return bytes(base)
    cut = draw(st.integers(0, len(base)))
    return bytes(base[:cut]) + draw(st.binary(max_size=8))


def well_formed(resp):
    assert resp is not None
    assert len(resp) >= 4
    assert resp[0] in (0x10, 0x11, 0x12, 0x13)
    assert resp[1] in RESPONSE_CODES, resp[:4].hex()
    if resp[1] == 0x7F:
        assert resp[2] in ERROR_CODES, resp[:8].hex()
        if resp[2] == 0x42:
            assert len(resp) == 8
        if resp[2] == 0x0F:
            assert len(resp) == 5
    if resp[1] == 0x04:
        assert resp[0] == 0x10 and len(resp) == 6 + 2 * resp[5]


def clean_flow(r, v):
    gv = get_version()
    a = gv + r.handle(gv)
    gc = get_caps(v)
    c = r.handle(gc)
    assert c[1] == 0x61
    a += gc[:{0x10: 4, 0x11: 12}.get(v, 20)] + c
    na = neg_algs(v)
    al = r.handle(na)
    assert al[1] == 0x63
    a += na + al
    ch = challenge(v)
    resp = r.handle(ch)
    if resp[1] == 0x7F and resp[2] == 0x42:
        while r.work():
            pass
        resp = r.handle(bytes((v, 0xFF, 0x83, resp[6])))
    assert resp[1] == 0x03, resp[:8].hex()
    bl = 4 + 48 + 32 + 2 + (8 if v >= 0x13 else 0)
    d = ids()["p384"][0]
    pub = ec.derive_private_key(d, ec.SECP384R1()).public_key()
    t = a + ch + resp[:bl]
    if v >= 0x12:
        pre = ("dmtf-spdm-v1.%d.*" % (v & 0xF)).encode() * 4 + bytes(4) + b"responder-challenge_auth signing"
        msg = pre + hashlib.sha384(t).digest()
    else:
        msg = t
    sig = resp[bl:]
    pub.verify(encode_dss_signature(int.from_bytes(sig[:48], "big"), int.from_bytes(sig[48:], "big")), msg,
               ec.ECDSA(hashes.SHA384()))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msgs=st.lists(st.tuples(message(), st.integers(0, 3)), max_size=25), defer=st.booleans(),
       v=st.sampled_from(VERSIONS))
def test_random_requests_then_clean_flow(msgs, defer, v):
    r = make(defer_signing=defer, data_transfer_size=64)
    for m, work in msgs:
        resp = r.handle(m)
        well_formed(resp)
        assert r.last_exception is None, repr(r.last_exception)
        for _ in range(work):
            r.work()
    clean_flow(r, v)


@settings(max_examples=150, deadline=None)
@given(msgs=st.lists(message(), min_size=1, max_size=15), v=st.sampled_from([0x12, 0x13]))
def test_mutations_after_negotiation(msgs, v):
    """Start from a negotiated connection so the deeper handlers see the mutations."""
    r = make()
    r.handle(get_version())
    r.handle(get_caps(v, flags=0x6 | CHUNK_CAP, dts=48, mx=8192))
    r.handle(neg_algs(v))
    for m in msgs:
        well_formed(r.handle(m))
        assert r.last_exception is None, repr(r.last_exception)
    clean_flow(r, v)
