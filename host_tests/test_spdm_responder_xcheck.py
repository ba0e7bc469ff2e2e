"""Cross-check the SPDM responder against the `cryptography` package (CPython only).

Transcripts (A, B, C, L1) and the SPDM 1.2+ signing prefix are recomputed here
from DSP0274 with hashlib; signatures are verified with the public key taken
from the leaf certificate of the chain the responder served (parsed by
`cryptography`), and the chain itself is checked (issuer signatures, root
hash, DIGESTS entry).  Nothing of the responder's transcript code is used.
"""
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from test_spdm_common import (CHUNK_CAP, Peer, challenge, get_caps, get_cert, get_digests, get_meas, le16, le32,
                              make, neg_algs)

HASH = {"sha256": (hashlib.sha256, hashes.SHA256(), 32), "sha384": (hashlib.sha384, hashes.SHA384(), 48)}
ALG = {"p384": (0x80, 96), "p256": (0x10, 64)}


def split_der(buf):
    out = []
    off = 0
    while off < len(buf):
        n = buf[off + 1]
        hl = 2
        if n & 0x80:
            k = n & 0x7F
            n = int.from_bytes(buf[off + 2:off + 2 + k], "big")
            hl += k
        out.append(buf[off:off + hl + n])
        off += hl + n
    return out


def spdm_prefix(v, ctx):
    return ("dmtf-spdm-v%d.%d.*" % (v >> 4, v & 0xF)).encode() * 4 + b"\x00" * (36 - len(ctx)) + ctx


def check_sig(pub, v, hname, transcript, ctx, sig):
    hf, halg, _ = HASH[hname]
    n = len(sig) // 2
    der = encode_dss_signature(int.from_bytes(sig[:n], "big"), int.from_bytes(sig[n:], "big"))
    if v >= 0x12:
        msg = spdm_prefix(v, ctx) + hf(transcript).digest()
    else:
        msg = transcript
    pub.verify(der, msg, ec.ECDSA(halg))  # raises InvalidSignature


def read_chain(p, v, big_ok=False):
    """GET_CERTIFICATE in 256-byte portions; returns (request/response bytes for B, chain buffer)."""
    b = b""
    buf = b""
    off = 0
    while True:
        q = get_cert(v, 0, off, 256)
        r = p.ok(q, 0x02)
        b += q + r
        n = r[4] | (r[5] << 8)
        buf += r[8:8 + n]
        off += n
        if (r[6] | (r[7] << 8)) == 0:
            return b, buf


def check_chain(buf, hname, alg):
    hf, _, H = HASH[hname]
    assert int.from_bytes(buf[:2], "little") == len(buf) and buf[2:4] == b"\x00\x00"
    certs = [x509.load_der_x509_certificate(c) for c in split_der(buf[4 + H:])]
    assert buf[4:4 + H] == hf(certs[0].public_bytes(encoding=_DER)).digest()
    for parent, child in zip(certs, certs[1:]):
        child.verify_directly_issued_by(parent)
    leaf = certs[-1]
    assert leaf.public_key().curve.name == {"p384": "secp384r1", "p256": "secp256r1"}[alg]
    return leaf.public_key()


from cryptography.hazmat.primitives.serialization import Encoding  # noqa: E402

_DER = Encoding.DER


@pytest.mark.parametrize("v", [0x10, 0x11, 0x12, 0x13])
@pytest.mark.parametrize("alg", ["p384", "p256"])
@pytest.mark.parametrize("defer", [False, True])
def test_challenge_and_measurements_verify(v, alg, defer):
    hname = "sha384" if alg == "p384" else "sha256"
    hf, _, H = HASH[hname]
    bit, S = ALG[alg]
    r = make(defer_signing=defer)
    p = Peer(r, v)

    def signed(q, code):
        resp = p.x(q)
        if defer:
            assert resp[1] == 0x7F and resp[2] == 0x42 and resp[5] == q[1]
            while r.work():
                pass
            resp = p.x(bytes((v, 0xFF, q[1], resp[6])))
        assert resp[1] == code
        return resp

    a = p.vca(algs=neg_algs(v, asym=bit, hashes={"sha384": 2, "sha256": 1}[hname]))
    gd = get_digests(v)
    d = p.ok(gd, 0x01)
    bcert, buf = read_chain(p, v)
    pub = check_chain(buf, hname, alg)
    assert d[4:4 + H] == hf(buf).digest()
    ch = challenge(v, 0, 0xFF)
    resp = signed(ch, 0x03)
    body_len = 4 + H + 32 + H + 2 + (8 if v >= 0x13 else 0)
    assert len(resp) == body_len + S and resp[4:4 + H] == hf(buf).digest()
    check_sig(pub, v, hname, a + gd + d + bcert + ch + resp[:body_len], b"responder-challenge_auth signing",
              resp[body_len:])
    # measurements: two unsigned then a signed one; L1 = [A] || messages
    l1 = a if v >= 0x12 else b""
    for op in (0, 1):
        q = get_meas(v, False, op)
        l1 += q + p.ok(q, 0x60)
    q = get_meas(v, True, 0xFF, nonce=bytes(range(32)))
    m = signed(q, 0x60)
    rl = m[5] | (m[6] << 8) | (m[7] << 16)
    o = 8 + rl + 32 + 2 + (m[8 + rl + 32] | (m[8 + rl + 33] << 8)) + (8 if v >= 0x13 else 0)
    assert len(m) == o + S
    check_sig(pub, v, hname, l1 + q + m[:o], b"responder-measurements signing", m[o:])
    # measurement summary hash in CHALLENGE_AUTH = Hash(all blocks of that MEASUREMENTS record)
    assert resp[4 + H + 32:4 + 2 * H + 32] == hf(m[8:8 + rl]).digest()


def test_chunked_flow_verifies_with_small_transfer_size():
    v = 0x13
    dts = 42
    r = make()
    p = Peer(r, v)
    a = p.vca(caps=get_caps(v, flags=0x6 | CHUNK_CAP, dts=dts, mx=65536))

    def large(q):
        e = p.x(q)
        if e[1] != 0x7F:
            return e
        assert e[2] == 0x0F
        h = e[4]
        out = b""
        seq = 0
        while True:
            c = p.x(bytes((v, 0x86, 0, h)) + le16(seq))
            assert c[1] == 0x06 and len(c) <= dts
            out += c[16:] if seq == 0 else c[12:]
            seq += 1
            if c[2] & 1:
                return out

    gc = get_cert(v, 0, 0, 0xFFFF)
    cert = large(gc)
    pub = check_chain(cert[8:], "sha384", "p384")
    ch = challenge(v)
    resp = large(ch)
    bl = 4 + 48 + 32 + 2 + 8
    check_sig(pub, v, "sha384", a + gc + cert + ch + resp[:bl], b"responder-challenge_auth signing", resp[bl:])
    q = get_meas(v, True, 0xFF)
    m = large(q)
    rl = m[5] | (m[6] << 8) | (m[7] << 16)
    o = 8 + rl + 32 + 2 + 8
    check_sig(pub, v, "sha384", a + q + m[:o], b"responder-measurements signing", m[o:])


def test_chunk_send_request_in_transcript():
    v = 0x12
    dts = 64
    r = make(data_transfer_size=dts)
    p = Peer(r, v)
    gv = b"\x10\x84\x00\x00"
    a = gv + p.x(gv)
    gc = get_caps(v, flags=0x6 | CHUNK_CAP)
    a += gc + p.x(gc)
    na = neg_algs(v, ext_a=8, ext_h=4, tables=[(2, 0x10, 1), (3, 2, 0), (4, 0x80, 0), (5, 1, 0)])
    assert len(na) > dts
    parts = [na[:dts - 16]]
    rest = na[dts - 16:]
    while rest:
        parts.append(rest[:dts - 12])
        rest = rest[dts - 12:]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        m = bytes((v, 0x85, 1 if last else 0, 1)) + le16(i) + b"\x00\x00" + le32(len(part))
        if i == 0:
            m += le32(len(na))
        ack = p.x(m + part)
        assert ack[:6] == bytes((v, 0x05, 0, 1)) + le16(i)
    algs = ack[6:]
    assert algs[1] == 0x63
    a += na + algs
    gd = get_digests(v)
    d = p.ok(gd, 0x01)
    bc, buf = read_chain(p, v)
    pub = check_chain(buf, "sha384", "p384")
    ch = challenge(v)
    resp = p.ok(ch, 0x03)
    bl = 4 + 48 + 32 + 2
    check_sig(pub, v, "sha384", a + gd + d + bc + ch + resp[:bl], b"responder-challenge_auth signing", resp[bl:])
