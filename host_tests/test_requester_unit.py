"""Requester unit tests on hand-built messages (CPython).

A small scripted responder built here from DSP0274's layouts (libspdm's spdm.h
field order) with `cryptography` keys drives the requester's mechanics
independently of lib/uspdm: version choice, parsers, odd certificate portion
sizes, ResponseNotReady -> RESPOND_IF_READY, LargeResponse -> CHUNK_GET,
CHUNK_SEND, error mapping, and the signing-prefix layout.
"""
import os
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from uspdm_tools import certs, requester as rq


def H(data, algo=hashes.SHA384):
    h = hashes.Hash(algo())
    h.update(data)
    return h.finalize()


def sign_raw(key, msg, algo, size):
    der = key.sign(msg, ec.ECDSA(algo()))
    r, s = utils.decode_dss_signature(der)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


class Scripted:
    """A hand-written SPDM responder (P-384/SHA-384 only) for requester mechanics."""

    def __init__(self, chain_ders, key, versions=(0x10, 0x11, 0x12, 0x13), dts=4096, max_msg=65536,
                 chunk=True, rnr=(), portion_cap=None, blocks=None):
        self.versions = versions
        self.key = key
        self.buf = certs.chain_buffer(chain_ders, hashes.SHA384)
        self.dts, self.max_msg, self.chunk = dts, max_msg, chunk
        self.rnr = dict((c, n) for c, n in rnr)  # request code -> times to answer ResponseNotReady
        self.portion_cap = portion_cap
        self.blocks = blocks or [(1, 0x01, b"\x11" * 48), (2, 0x86, b"MicroPython 1.26")]
        self.v = 0x10
        self.A = self.B = self.L = b""
        self.pending = None
        self.large = None
        self.rx = None
        self.req_dts = None
        self.seen = []

    def err(self, code, data=0, ext=b""):
        return bytes((self.v, 0x7F, code, data)) + ext

    def record(self):
        out = b""
        for idx, t, val in self.blocks:
            dm = bytes((t,)) + struct.pack("<H", len(val)) + val
            out += bytes((idx, 1)) + struct.pack("<H", len(dm)) + dm
        return out

    def handle(self, req):
        self.seen.append(req[1])
        code = req[1]
        if code == 0xFF:  # RESPOND_IF_READY
            if self.pending is None or req[2] != self.pending[0][1] or req[3] != 7:
                return self.err(0x01)
            orig, _ = self.pending
            if self.rnr.get(orig[1], 0) > 0:
                self.rnr[orig[1]] -= 1
                return self.err(0x42, 0, bytes((3, orig[1], 7, 2)))
            self.pending = None
            return self.deliver(self.process(orig))
        if code == 0x86:  # CHUNK_GET
            seq = struct.unpack_from("<H", req, 4)[0]
            msg, pos, s_exp = self.large
            if seq != s_exp or req[3] != 0x42:
                return self.err(0x01)
            room = self.req_dts - (16 if seq == 0 else 12)
            part = msg[pos:pos + room]
            last = pos + len(part) >= len(msg)
            self.large = (msg, pos + len(part), seq + 1)
            hdr = bytes((self.v, 0x06, 1 if last else 0, 0x42)) + struct.pack("<HHI", seq, 0, len(part))
            if seq == 0:
                hdr += struct.pack("<I", len(msg))
            return hdr + part
        if code == 0x85:  # CHUNK_SEND
            seq, _, size = struct.unpack_from("<HHI", req, 4)
            o = 12
            if seq == 0:
                self.rx = (b"", struct.unpack_from("<I", req, 12)[0])
                o = 16
            data, total = self.rx
            data += req[o:o + size]
            self.rx = (data, total)
            ack = bytes((self.v, 0x05, 0, req[3])) + struct.pack("<H", seq)
            if req[2] & 1:
                assert len(data) == total
                return ack + self.deliver(self.process(data))
            return ack
        if len(req) > self.dts:
            return self.err(0x0E)
        if code in self.rnr and self.rnr[code] > 0:
            self.rnr[code] -= 1
            self.pending = (req, None)
            return self.err(0x42, 0, bytes((3, code, 7, 2)))
        return self.deliver(self.process(req))

    def deliver(self, rsp):
        if self.req_dts is not None and len(rsp) > self.req_dts and rsp[1] != 0x7F:
            self.large = (rsp, 0, 0)
            return self.err(0x0F, 0, b"\x42")
        return rsp

    def process(self, req):
        code = req[1]
        if code != 0xE0:
            self.L = b""
        if code == 0x84:
            self.v = 0x10
            rsp = bytes((0x10, 0x04, 0, 0, 0, len(self.versions))) + b"".join(
                struct.pack("<H", v << 8) for v in self.versions)
            self.A = req + rsp
            return rsp
        if code == 0xE1:
            self.v = req[0]
            flags = 0x02 | 0x04 | 0x10 | (0x20000 if self.chunk and self.v >= 0x12 else 0)
            rsp = bytes((self.v, 0x61, 0, 0, 0, 12, 0, 0)) + struct.pack("<I", flags)
            if self.v >= 0x12:
                rsp += struct.pack("<II", self.dts, self.max_msg)
                self.req_dts = struct.unpack_from("<I", req, 12)[0]
            self.A += req + rsp
            return rsp
        if code == 0xE3:
            n = req[2]
            tables = b""
            for i in range(n):
                typ = req[32 + 4 * i]
                tables += bytes((typ, 0x20)) + struct.pack("<H", 0)
            body = struct.pack("<BBIII", 1, 0x02 if self.v >= 0x12 else 0, 0x04, 0x80, 0x02) + bytes(16)
            rsp = bytes((self.v, 0x63, n, 0)) + struct.pack("<H", 4 + 2 + len(body) + len(tables)) + body + tables
            self.A += req + rsp
            return rsp
        if code == 0x81:
            rsp = bytes((self.v, 0x01, 0x01 if self.v >= 0x13 else 0, 0x01)) + H(self.buf)
            self.B = req + rsp
            return rsp
        if code == 0x82:
            off, ln = struct.unpack_from("<HH", req, 4)
            if self.portion_cap:
                ln = min(ln, self.portion_cap)
            part = self.buf[off:off + ln]
            rsp = bytes((self.v, 0x02, req[2], 0)) + struct.pack("<HH", len(part), len(self.buf) - off - len(part)) + part
            self.B += req + rsp
            return rsp
        if code == 0x83:
            body = H(self.buf) + os.urandom(32)
            if req[3]:
                body += H(b"".join(self.record_blocks(self.v)))
            body += b"\x00\x00"
            if self.v >= 0x13:
                body += req[36:44]
            rsp = bytes((self.v, 0x03, req[2], 0x01)) + body
            m1 = self.A + self.B + req + rsp
            rsp += self.sign(m1, b"responder-challenge_auth signing")
            self.B = b""
            return rsp
        if code == 0xE0:
            signed = req[2] & 1
            rec = self.record() if req[3] == 0xFF else b""
            p1 = len(self.blocks) if req[3] == 0 else 0
            rsp = (bytes((self.v, 0x60, p1, 0)) + bytes((len(self.blocks) if rec else 0,)) +
                   struct.pack("<I", len(rec))[:3] + rec + os.urandom(32) + b"\x00\x00")
            if self.v >= 0x13:
                rsp += req[-8:]
            self.L += req + rsp
            if signed:
                l1 = (self.A if self.v >= 0x12 else b"") + self.L
                rsp += self.sign(l1, b"responder-measurements signing")
                self.L = b""
            return rsp
        return self.err(0x07, code)

    def record_blocks(self, v):
        out = []
        for idx, t, val in self.blocks:
            dm = bytes((t,)) + struct.pack("<H", len(val)) + val
            out.append(bytes((idx, 1)) + struct.pack("<H", len(dm)) + dm)
        return out

    def sign(self, transcript, ctx):
        if self.v >= 0x12:
            tag = ("dmtf-spdm-v%d.%d.*" % (self.v >> 4, self.v & 15)).encode()
            msg = tag * 4 + bytes(36 - len(ctx)) + ctx + H(transcript)
        else:
            msg = transcript
        return sign_raw(self.key, msg, hashes.SHA384, 48)


class T:
    def __init__(self, r, mutate=None):
        self.r = r
        self.mutate = mutate
        self.count = 0

    def spdm(self, req, timeout):
        self.count += 1
        rsp = self.r.handle(bytes(req))
        if self.mutate:
            rsp = self.mutate(bytes(req), rsp)
        return rsp


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = certs.LabCA(str(tmp_path_factory.mktemp("ca")))
    ca.load_or_create()
    key = ec.generate_private_key(ec.SECP384R1())
    chain = ca.issue_leaf(key.public_key(), "acme:widget:7", use_intermediate=True)
    return ca, key, chain


def full_flow(r, ca, version=None, **kw):
    q = rq.Requester(T(r, kw.pop("mutate", None)), version=version, sleep=lambda s: None, **kw)
    q.init_connection()
    d = q.get_digests()
    progress = []
    buf = q.get_certificate(0, progress=lambda a, b: progress.append((a, b)))
    info = certs.validate_chain(buf, 48, hashes.SHA384, "p384", q.version, ca.root_cert, digest=d[0])
    ch = q.challenge(0)
    count = q.measurement_count()
    m = q.get_measurements()
    assert ch["summary_hash"] == rq.measurement_summary(q.version, q.hash, m["blocks"])
    return q, progress, info, m, count


@pytest.mark.parametrize("v", [0x10, 0x11, 0x12, 0x13])
def test_flow_each_version(pki, v):
    ca, key, chain = pki
    q, progress, info, m, count = full_flow(Scripted(chain, key), ca, version=rq.version_str(v))
    assert q.version == v
    assert info["device_info"] == "acme:widget:7"
    assert progress[-1][0] == progress[-1][1] == len(certs.chain_buffer(chain, hashes.SHA384))
    assert count == 2 and [b["index"] for b in m["blocks"]] == [1, 2]
    assert m["blocks"][1]["raw_bitstream"] and m["blocks"][1]["value"] == b"MicroPython 1.26"


def test_highest_common_version(pki):
    ca, key, chain = pki
    q, *_ = full_flow(Scripted(chain, key, versions=(0x10, 0x11, 0x12)), ca)
    assert q.version == 0x12
    with pytest.raises(rq.ProtocolError, match="does not support SPDM 1.3"):
        rq.Requester(T(Scripted(chain, key, versions=(0x10, 0x11))), version="1.3").get_version()


@pytest.mark.parametrize("cap", [1, 7, 100, 333])
def test_any_portion_size(pki, cap):
    ca, key, chain = pki
    q, progress, *_ = full_flow(Scripted(chain, key, portion_cap=cap), ca, cert_portion=4096)
    assert all(b - a <= cap for (a, _), (b, _) in zip([(0, 0)] + progress, progress))


def test_response_not_ready(pki):
    ca, key, chain = pki
    r = Scripted(chain, key, rnr=[(0x83, 2), (0xE0, 1)])
    q, *_ = full_flow(r, ca)
    assert r.seen.count(0xFF) == 3
    t = {x.name: x for x in q.timings}
    assert t["CHALLENGE"].retries == 2
    assert [x.retries for x in q.timings if x.name == "GET_MEASUREMENTS"] == [1, 0]


def test_response_not_ready_bounded(pki):
    ca, key, chain = pki
    r = Scripted(chain, key, rnr=[(0x83, 100)])
    q = rq.Requester(T(r), sleep=lambda s: None, rnr_retries=3)
    q.init_connection()
    q.get_digests()
    q.get_certificate(0)
    r.pending = None

    # keep answering ResponseNotReady to RESPOND_IF_READY too
    def again(req, rsp):
        if req[1] == 0xFF:
            return bytes((req[0], 0x7F, 0x42, 0, 3, 0x83, 7, 2))
        return rsp
    q.t.mutate = again
    with pytest.raises(rq.ProtocolError, match="still not ready"):
        q.challenge(0)


def test_chunk_get_and_send(pki):
    ca, key, chain = pki
    r = Scripted(chain, key, dts=42, max_msg=8192)
    q, *_ = full_flow(r, ca, data_transfer_size=64, cert_portion=1024)
    assert 0x86 in r.seen  # CHUNK_GET for large responses
    assert 0x85 in r.seen  # CHUNK_SEND: NEGOTIATE_ALGORITHMS (48 bytes) > 42
    assert any(t.chunks for t in q.timings)


def test_error_mapping(pki):
    ca, key, chain = pki
    q = rq.Requester(T(Scripted(chain, key), mutate=lambda req, rsp: bytes((0x10, 0x7F, 0x04, 0)) if req[1] == 0xE1 else rsp))
    q.get_version()
    with pytest.raises(rq.ProtocolError) as ei:
        q.get_capabilities()
    assert ei.value.code == 0x04 and ei.value.name == "UnexpectedRequest"
    assert "GET_CAPABILITIES" in str(ei.value)

    class Dead:
        def spdm(self, req, timeout):
            raise TimeoutError()
    with pytest.raises(rq.Unreachable):
        rq.Requester(Dead()).get_version()


def _flip(code, pos):
    def m(req, rsp):
        if rsp[1] == code:
            b = bytearray(rsp)
            b[pos] ^= 0x01
            return bytes(b)
        return rsp
    return m


@pytest.mark.parametrize("code,pos,exc", [
    (0x03, -1, rq.VerificationError),       # CHALLENGE_AUTH signature
    (0x03, 10, rq.VerificationError),       # CertChainHash
    (0x03, 60, rq.VerificationError),       # nonce (signed)
    (0x60, 20, rq.VerificationError),       # a measurement value
    (0x63, 8, rq.ProtocolError),            # ALGORITHMS measurement hash: two bits
    (0x01, 5, (certs.ChainError,)),          # DIGESTS entry
])
def test_tampering_detected(pki, code, pos, exc):
    ca, key, chain = pki
    with pytest.raises(exc):
        full_flow(Scripted(chain, key), ca, mutate=_flip(code, pos))


def test_tampered_transcript_history_detected(pki):
    """Changing an earlier message (VERSION entry order) the responder saw differently breaks M1."""
    ca, key, chain = pki

    def m(req, rsp):
        if rsp[1] == 0x61:  # CAPABILITIES: flip the CACHE flag (not used by the requester)
            b = bytearray(rsp)
            b[8] ^= 0x01
            return bytes(b)
        return rsp
    with pytest.raises(rq.VerificationError, match="challenge_auth"):
        full_flow(Scripted(chain, key), ca, mutate=m)


def test_signing_prefix_layout():
    p = rq.signing_prefix(0x12, b"responder-challenge_auth signing")
    assert len(p) == 100
    assert p[:64] == b"dmtf-spdm-v1.2.*" * 4
    assert p[64:68] == bytes(4) and p[68:] == b"responder-challenge_auth signing"
    p = rq.signing_prefix(0x13, b"responder-measurements signing")
    assert p[:16] == b"dmtf-spdm-v1.3.*" and p[64:70] == bytes(6)


def test_measurement_record_parser():
    rec = bytes.fromhex("01010400" "81" "0100" "7f") + bytes.fromhex("fe011300" "05" "1000") + bytes(16)
    bl = rq.parse_measurement_record(rec, 2)
    assert bl[0]["index"] == 1 and bl[0]["raw_bitstream"] and bl[0]["value"] == b"\x7f"
    assert bl[1]["index"] == 0xFE and bl[1]["type"] == 5 and len(bl[1]["value"]) == 16
    with pytest.raises(rq.ProtocolError):
        rq.parse_measurement_record(rec[:-1], 2)
    with pytest.raises(rq.ProtocolError):
        rq.parse_measurement_record(rec, 3)
