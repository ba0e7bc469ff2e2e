"""Session test helpers (portable): a minimal SPDM requester built from DSP0274 /
DSP0277 layouts for the session messages, and a responder with sessions.

The requester here reuses lib/ primitives (HKDF, AES-GCM, ECDH) but none of
uspdm.session / uspdm.keysched / uspdm.secured: its key schedule, transcripts
and framing are written from the specification.  The CPython suites check
the same flows against the `cryptography` package."""
from _util import unhex  # noqa: F401

from uspdm import consts as C
from uspdm.crypto import ec, hkdf, sha2
from uspdm.crypto import hmac as _hmac
from uspdm.crypto.gcm import AesGcm
from uspdm.responder import Config, Responder
from uspdm.session import SessionManager, attach  # noqa: F401
from test_spdm_common import drbg, make_identity, make_meas, rd16

SESSION_FLAGS = 0x0000F6C0  # ENCRYPT MAC KEY_EX PSK(01) HBEAT KEY_UPD HANDSHAKE_IN_THE_CLEAR
NO_CLEAR_FLAGS = SESSION_FLAGS & ~0x8000


def make_responder(mgr, version_cfg=None, **cfg):
    c = Config(**cfg)
    c.dhe_priority = [C.DHE_SECP384R1]
    c.aead_priority = [C.AEAD_AES_256_GCM]
    c.key_schedule_priority = [C.KEY_SCHEDULE_SPDM]
    r = Responder(make_identity(("p384",)), make_meas(), drbg(b"rsp"), c)
    attach(r, mgr)
    r.eid = 8
    return r


def le16(v):
    return bytes((v & 0xFF, (v >> 8) & 0xFF))


def le32(v):
    return bytes((v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF, (v >> 24) & 0xFF))


def bc(version, length, label, ctx=b""):
    return le16(length) + b"spdm" + bytes((0x30 + (version >> 4), 0x2E, 0x30 + (version & 15), 0x20)) + label + ctx


def sm_opaque(version, versions=(0x1100,)):
    sm = b"\x01\x01" + bytes((len(versions),)) + b"".join(le16(v) for v in versions)
    el = b"\x00\x00" + le16(len(sm)) + sm
    el += bytes((-len(el)) & 3)
    if version >= 0x12:
        return b"\x01\x00\x00\x00" + el
    return b"FTMD\x01\x01\x00\x00" + el


class Dir:
    def __init__(self, key, iv):
        self.g = AesGcm(key)
        self.iv = iv
        self.seq = 0

    big = False  # True: counter XORed big endian into the IV's last 8 bytes (DSP0277 1.0/1.1 only)

    def nonce(self, seq):
        n = bytearray(self.iv)
        for i in range(8):
            if self.big:
                n[11 - i] ^= (seq >> (8 * i)) & 0xFF
            else:
                n[i] ^= (seq >> (8 * i)) & 0xFF
        return bytes(n)


class Req:
    """Requester over an in-process responder `r` (handle) and manager `mgr`."""

    def __init__(self, r, mgr, version, flags=SESSION_FLAGS, eid=8):
        self.r = r
        self.mgr = mgr
        self.v = version
        self.flags = flags
        self.eid = eid
        self.now = 0
        self.a = b""
        self.hn = "sha384"
        self.H = 48
        self.smv = (0x1100,)  # secured-message versions offered in the *_EXCHANGE opaque data

    def x(self, req):
        self.r.now = self.now
        rsp = self.r.handle(req)
        if rsp is not None and len(rsp) >= 8 and rsp[1] == 0x7F and rsp[2] == 0x42:
            # ResponseNotReady: let the board's idle loop finish, then RESPOND_IF_READY
            self.rnr = getattr(self, "rnr", 0) + 1
            while self.r.pending():
                self.r.work()
            rsp = self.r.handle(bytes((req[0], 0xFF, rsp[5], rsp[6])))
        return rsp

    def vca(self):
        v = self.v
        req = bytes((0x10, 0x84, 0, 0))
        rsp = self.x(req)
        self.a = req + rsp
        req = bytes((v, 0xE1, 0, 0, 0, 10, 0, 0)) + le32(self.flags)
        if v >= 0x12:
            req += le32(4096) + le32(4096)
        rsp = self.x(req)
        assert rsp[1] == 0x61, rsp
        self.rsp_flags = rsp[8] | (rsp[9] << 8) | (rsp[10] << 16) | (rsp[11] << 24)
        self.a += req + rsp
        tabs = b""
        n = 0
        if v >= 0x11:
            for t, val in ((2, C.DHE_SECP384R1), (3, C.AEAD_AES_256_GCM), (4, C.ASYM_ECDSA_P384), (5, 1)):
                tabs += bytes((t, 0x20)) + le16(val)
                n += 1
        other = 0x02 if v >= 0x12 else 0
        req = (bytes((v, 0xE3, n, 0)) + le16(32 + len(tabs)) + bytes((1, other)) + le32(C.ASYM_ECDSA_P384)
               + le32(C.HASH_SHA384) + bytes(16) + tabs)
        rsp = self.x(req)
        assert rsp[1] == 0x63, rsp
        self.a += req + rsp
        cb = self.r.identity.chain_buffer(0, "p384", "sha384")
        self.ct = sha2.new("sha384", cb[0]).digest()
        return rsp

    def hmac(self, key, data):
        return _hmac.hmac(self.hn, key, data)

    def h(self, data):
        return sha2.new(self.hn, data).digest()

    def exp(self, prk, label, ctx, n):
        return hkdf.expand(self.hn, prk, bc(self.v, n, label, ctx), n)

    def hs(self, ikm, th1, salt):
        H = self.H
        hs = _hmac.hmac(self.hn, salt, ikm)
        self.hsec = hs
        self.req_hs = self.exp(hs, b"req hs data", th1, H)
        self.rsp_hs = self.exp(hs, b"rsp hs data", th1, H)
        self.req_fin = self.exp(self.req_hs, b"finished", b"", H)
        self.rsp_fin = self.exp(self.rsp_hs, b"finished", b"", H)
        self.tx = Dir(self.exp(self.req_hs, b"key", b"", 32), self.exp(self.req_hs, b"iv", b"", 12))
        self.rx = Dir(self.exp(self.rsp_hs, b"key", b"", 32), self.exp(self.rsp_hs, b"iv", b"", 12))

    def app(self, th2):
        H = self.H
        salt1 = self.exp(self.hsec, b"derived", b"", H)
        master = _hmac.hmac(self.hn, salt1, bytes(H))
        self.req_app = self.exp(master, b"req app data", th2, H)
        self.rsp_app = self.exp(master, b"rsp app data", th2, H)
        self.tx = Dir(self.exp(self.req_app, b"key", b"", 32), self.exp(self.req_app, b"iv", b"", 12))
        self.rx = Dir(self.exp(self.rsp_app, b"key", b"", 32), self.exp(self.rsp_app, b"iv", b"", 12))

    def key_exchange(self, summary=0, rid=0x1234, slot=0):
        v = self.v
        d = ec.generate_private_key(ec.P384, drbg(b"eph" + le16(rid)).generate)
        pub = ec.public_key(ec.P384, d)
        opq = sm_opaque(v, self.smv)
        req = (bytes((v, 0xE4, summary, slot)) + le16(rid) + b"\x00\x00" + bytes(range(32)) + pub
               + le16(len(opq)) + opq)
        rsp = self.x(req)
        if rsp[1] != 0x64:
            return rsp
        o = 40 + 96 + (self.H if summary else 0)
        ol = rd16(rsp, o)
        o += 2 + ol
        sig = rsp[o:o + 96]
        th = self.a + self.ct + req + rsp[:o]
        m = self.h(th)
        if v >= 0x12:
            m = self.h(C.signing_prefix(v, b"responder-key_exchange_rsp signing") + m)
        assert ec.verify(ec.P384, self.r.identity.public_key("p384"), m, sig)
        th += sig
        z = ec.ecdh(ec.P384, d, rsp[40:136])
        self.hs(z, self.h(th), bytes(self.H))
        self.clear = bool(self.flags & self.rsp_flags & 0x8000)
        if not self.clear:
            vd = rsp[o + 96:]
            assert vd == self.hmac(self.rsp_fin, self.h(th))
            th += vd
        else:
            assert len(rsp) == o + 96
        self.th = th
        self.sid = (rd16(rsp, 4) << 16) | rid
        return rsp

    def finish(self, bad=False):
        v = self.v
        hdr = bytes((v, 0xE5, 0, 0))
        vd = self.hmac(self.req_fin, self.h(self.th + hdr))
        if bad:
            vd = bytes((vd[0] ^ 0x80,)) + vd[1:]
        req = hdr + vd
        if self.clear:
            rsp = self.x(req)
        else:
            rsp = self.call(req)
        if rsp is None or rsp[1] != 0x65:
            return rsp
        th = self.th + req
        if self.clear:
            assert rsp[4:] == self.hmac(self.rsp_fin, self.h(th + rsp[:4]))
        self.th = th + rsp
        self.app(self.h(self.th))
        return rsp

    def psk_exchange(self, hint, psk, ctx=True):
        v = self.v
        opq = sm_opaque(v, self.smv)
        rctx = bytes(48)
        req = (bytes((v, 0xE6, 0, 0)) + le16(0x4321) + le16(len(hint)) + le16(len(rctx)) + le16(len(opq))
               + hint + rctx + opq)
        rsp = self.x(req)
        if rsp[1] != 0x66:
            return rsp
        cl, ol = rd16(rsp, 8), rd16(rsp, 10)
        o = 12 + cl + ol
        th = self.a + req + rsp[:o]
        salt = (b"\xff" if v >= 0x13 else b"\x00") * self.H
        self.hs(psk, self.h(th), salt)
        assert rsp[o:] == self.hmac(self.rsp_fin, self.h(th))
        self.th = th + rsp[o:]
        self.sid = (rd16(rsp, 4) << 16) | 0x4321
        self.clear = False
        if not cl:
            self.app(self.h(self.th))
        return rsp

    def psk_finish(self, bad=False):
        hdr = bytes((self.v, 0xE7, 0, 0))
        vd = self.hmac(self.req_fin, self.h(self.th + hdr))
        if bad:
            vd = bytes((vd[0] ^ 1,)) + vd[1:]
        rsp = self.call(hdr + vd)
        if rsp is not None and rsp[1] == 0x67:
            self.th += hdr + vd + rsp
            self.app(self.h(self.th))
        return rsp

    # secured messages
    def wrap(self, spdm, seq=None, sid=None, tamper=None):
        d = self.tx
        if seq is None:
            seq = d.seq
            d.seq += 1
        app = b"\x05" + spdm
        pt = le16(len(app)) + app + b"\xAA\xBB\xCC"
        hdr = le32(self.sid if sid is None else sid) + le16(seq & 0xFFFF) + le16(len(pt) + 16)
        ct = d.g.seal(d.nonce(seq), hdr, pt)
        body = hdr + ct
        if tamper == "ct":
            body = body[:10] + bytes((body[10] ^ 1,)) + body[11:]
        elif tamper == "aad":
            # the header on the wire is the right one; the tag was computed over
            # a different Length: only the AAD check can notice
            bad = hdr[:6] + le16(len(pt) + 17)
            body = hdr + d.g.seal(d.nonce(seq), bad, pt)
        return body

    def unwrap(self, body):
        d = self.rx
        seq = d.seq
        d.seq += 1
        assert body[0:4] == le32(self.sid)
        assert rd16(body, 4) == seq & 0xFFFF, (rd16(body, 4), seq)
        ln = rd16(body, 6)
        pt = d.g.open(d.nonce(seq), body[:8], body[8:8 + ln])
        n = rd16(pt, 0)
        app = pt[2:2 + n]
        assert app[0] == 5
        return app[1:]

    def send(self, body):
        return self.mgr.handle_secured(self.eid, body, self.now)

    def call(self, spdm, **kw):
        out = self.send(self.wrap(spdm, **kw))
        if out is None:
            return None
        return self.unwrap(out)
