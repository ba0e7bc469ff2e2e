"""Host side of SPDM secure sessions (DSP0274 1.1-1.3, DSP0277, DSP0276), CPython.

Independent of lib/uspdm: the key schedule, transcripts, secured-message
framing and every check are computed here with the `cryptography` package
(HKDF-Expand, HMAC, AES-256-GCM, ECDH P-384, ECDSA), so a session that works
end to end means two implementations agree.

    r = SessionRequester(link, version="1.2")        # link: .spdm(req, timeout) and .secured(body, timeout)
    r.init_connection(); r.get_digests(); r.get_certificate(0)
    s = r.key_exchange(slot=0)                        # KEY_EXCHANGE; verifies signature + ResponderVerifyData
    r.finish(s)                                       # FINISH (encrypted, or in the clear)
    # or: s = r.psk_exchange(hint, psk); r.psk_finish(s)  (when the responder uses a context)
    inner = r.in_session(s)                           # a Requester whose transport is the session
    inner.get_measurements()
    r.heartbeat(s); r.key_update(s, all_keys=True); r.end_session(s)

Wire rules implemented (as libspdm reads them): BinConcat = u16 length ||
"spdm1.N " || label || context; salt_0 = 0^H, or 0xFF^H for PSK at SPDM 1.3+;
TH1/TH2 over A || Hash(cert chain buffer) || K || F (PSK: no Ct); 2-byte
sequence numbers over MCTP with a 64-bit counter XORed little-endian into the
IV (big_endian=True: big endian, but only when secured-message 1.0/1.1 is
selected; DSP0277 1.2 fixes little endian); AAD = SessionID || SeqNum ||
Length; 1..32 random padding bytes.
"""
import os
import struct
import time

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac as c_hmac
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from . import requester as R

KEY_EXCHANGE, FINISH, PSK_EXCHANGE, PSK_FINISH = 0xE4, 0xE5, 0xE6, 0xE7
HEARTBEAT, KEY_UPDATE, END_SESSION = 0xE8, 0xE9, 0xEC
VENDOR_DEFINED_REQUEST = 0xFE
KEY_EXCHANGE_RSP, FINISH_RSP, PSK_EXCHANGE_RSP, PSK_FINISH_RSP = 0x64, 0x65, 0x66, 0x67
HEARTBEAT_ACK, KEY_UPDATE_ACK, END_SESSION_ACK = 0x68, 0x69, 0x6C

R.CODE_NAMES.update({
    KEY_EXCHANGE: "KEY_EXCHANGE", FINISH: "FINISH", PSK_EXCHANGE: "PSK_EXCHANGE", PSK_FINISH: "PSK_FINISH",
    HEARTBEAT: "HEARTBEAT", KEY_UPDATE: "KEY_UPDATE", END_SESSION: "END_SESSION",
    KEY_EXCHANGE_RSP: "KEY_EXCHANGE_RSP", FINISH_RSP: "FINISH_RSP", PSK_EXCHANGE_RSP: "PSK_EXCHANGE_RSP",
    PSK_FINISH_RSP: "PSK_FINISH_RSP", HEARTBEAT_ACK: "HEARTBEAT_ACK", KEY_UPDATE_ACK: "KEY_UPDATE_ACK",
    END_SESSION_ACK: "END_SESSION_ACK",
})

UPDATE_KEY, UPDATE_ALL_KEYS, VERIFY_NEW_KEY = 1, 2, 3

CAP_ENCRYPT = 1 << 6
CAP_MAC = 1 << 7
CAP_KEY_EX = 1 << 9
CAP_PSK_REQ = 1 << 10          # requester: PSK_CAP = 01b
CAP_PSK_MASK = 3 << 10
CAP_HBEAT = 1 << 13
CAP_KEY_UPD = 1 << 14
CAP_HANDSHAKE_IN_THE_CLEAR = 1 << 15

SIGN_CTX_KEX = b"responder-key_exchange_rsp signing"
SM_SPEC_ID = struct.pack("<I", 0x444D5446)
SM_VERSIONS = (0x1100, 0x1200)
MAX_PAD = 32
MAX_SEQ = (1 << 64) - 1


class SessionError(R.VerificationError):
    """A secured message from the responder that does not decode or authenticate."""


# ------------------------------------------------------------ primitives
def _hash_algo(hash_bit):
    return R.HASHES[hash_bit][1]()


def h_bytes(hash_bit, data):
    return R.hash_bytes(hash_bit, data)


def hmac_bytes(hash_bit, key, data):
    m = c_hmac.HMAC(bytes(key), _hash_algo(hash_bit))
    m.update(bytes(data))
    return m.finalize()


def extract(hash_bit, salt, ikm):
    return hmac_bytes(hash_bit, salt, ikm)


def expand(hash_bit, prk, info, length):
    return HKDFExpand(_hash_algo(hash_bit), length, bytes(info)).derive(bytes(prk))


def bin_concat(version, length, label, context=b""):
    return struct.pack("<H", length) + ("spdm%d.%d " % (version >> 4, version & 0xF)).encode() + label + context


def sm_opaque(version, sm_data):
    el = b"\x00\x00" + struct.pack("<H", len(sm_data)) + sm_data
    el += b"\x00" * ((-len(el)) & 3)
    if version >= 0x12:
        return b"\x01\x00\x00\x00" + el
    return SM_SPEC_ID + b"\x01\x01\x00\x00" + el


def sm_supported_opaque(version, versions=SM_VERSIONS):
    return sm_opaque(version, b"\x01\x01" + bytes((len(versions),)) + b"".join(struct.pack("<H", v) for v in versions))


def parse_sm_selection(version, data):
    """Selected secured-message version from a *_EXCHANGE_RSP opaque field."""
    if version >= 0x12:
        if len(data) < 4 or len(data) % 4:
            raise R.ProtocolError("opaque data of %d bytes is not 1.2 general format" % len(data))
        total, off = data[0], 4
    else:
        if len(data) < 8 or data[:4] != SM_SPEC_ID or data[4] != 1:
            raise R.ProtocolError("opaque data lacks the SPDM 1.1 secured-message header")
        total, off = data[5], 8
    sel = None
    for _ in range(total):
        if off + 4 > len(data):
            raise R.ProtocolError("opaque element overruns")
        eid, vlen = data[off], data[off + 1]
        dlen = R._u16(data, off + 2 + vlen)
        body = off + 4 + vlen
        if body + dlen > len(data):
            raise R.ProtocolError("opaque element overruns")
        if eid == 0 and vlen == 0 and dlen >= 4 and data[body] == 1 and data[body + 1] == 0:
            sel = R._u16(data, body + 2)
        off += (4 + vlen + dlen + 3) & ~3
    if off != len(data):
        raise R.ProtocolError("opaque data: %d trailing bytes" % (len(data) - off))
    if sel is None:
        raise R.ProtocolError("no secured-message version selection in the opaque data")
    return sel


class Direction:
    def __init__(self, key, iv, big=False):
        self.key = bytes(key)
        self.iv = bytes(iv)
        self.seq = 0
        self.big = big
        self.aead = AESGCM(self.key)

    def nonce(self, seq):
        """IV XOR the 64-bit counter: little endian into bytes 0..7 (libspdm's
        default), or big endian into the last 8 bytes (big=True)."""
        ctr = seq.to_bytes(8, "big" if self.big else "little")
        pad = bytes(len(self.iv) - 8)
        ctr = pad + ctr if self.big else ctr + pad
        return bytes(a ^ b for a, b in zip(self.iv, ctr))


class HostSession:
    """One session's keys and transcript on the requester side."""

    def __init__(self, version, hash_bit, req_sid, psk=False):
        self.version = version
        self.hash_bit = hash_bit
        self.H = R.HASHES[hash_bit][2]
        self.req_sid = req_sid
        self.rsp_sid = None
        self.sid = None
        self.psk = psk
        self.in_clear = False
        self.mac_only = False
        self.psk_context = True
        self.state = "handshake"
        self.transcript = b""      # TH so far (bytes; recomputed in full here)
        self.heartbeat = 0
        self.sm_version = None
        self.req = self.rsp = None
        self.secrets = {}
        self.timings = {}
        self.pad = True
        self.big_endian = False    # counter encoding in the AEAD nonce (see Direction)

    # key schedule -----------------------------------------------------
    def salt0(self):
        return (b"\xff" if self.psk and self.version >= 0x13 else b"\x00") * self.H

    def derive_handshake(self, ikm, th1_hash):
        v, hb, H = self.version, self.hash_bit, self.H
        hs = extract(hb, self.salt0(), ikm)
        req_hs = expand(hb, hs, bin_concat(v, H, b"req hs data", th1_hash), H)
        rsp_hs = expand(hb, hs, bin_concat(v, H, b"rsp hs data", th1_hash), H)
        self.secrets.update(handshake=hs, req_hs=req_hs, rsp_hs=rsp_hs,
                            req_finished=expand(hb, req_hs, bin_concat(v, H, b"finished"), H),
                            rsp_finished=expand(hb, rsp_hs, bin_concat(v, H, b"finished"), H))
        self.req = Direction(*self.key_iv(req_hs))
        self.rsp = Direction(*self.key_iv(rsp_hs))

    def key_iv(self, secret):
        v, hb = self.version, self.hash_bit
        return (expand(hb, secret, bin_concat(v, 32, b"key"), 32), expand(hb, secret, bin_concat(v, 12, b"iv"), 12),
                self.big_endian)

    def derive_application(self, th2_hash):
        v, hb, H = self.version, self.hash_bit, self.H
        salt1 = expand(hb, self.secrets["handshake"], bin_concat(v, H, b"derived"), H)
        master = extract(hb, salt1, b"\x00" * H)
        self.secrets["req_app"] = expand(hb, master, bin_concat(v, H, b"req app data", th2_hash), H)
        self.secrets["rsp_app"] = expand(hb, master, bin_concat(v, H, b"rsp app data", th2_hash), H)
        self.req = Direction(*self.key_iv(self.secrets["req_app"]))
        self.rsp = Direction(*self.key_iv(self.secrets["rsp_app"]))
        self.state = "established"

    def next_secret(self, which):
        v, hb, H = self.version, self.hash_bit, self.H
        new = expand(hb, self.secrets[which], bin_concat(v, H, b"traffic upd"), H)
        self.secrets[which] = new
        return Direction(*self.key_iv(new))

    # secured messages -------------------------------------------------
    def encode(self, spdm, d=None, seq=None, pad=None, sid=None, inner_type=0x05):
        """Secured message body (after MCTP type 0x06) carrying `spdm`."""
        d = d or self.req
        if seq is None:
            seq = d.seq
            if seq >= MAX_SEQ:
                raise SessionError("requester sequence number exhausted")
            d.seq += 1
        sid = self.sid if sid is None else sid
        app = bytes((inner_type,)) + bytes(spdm)
        if self.mac_only:
            hdr = struct.pack("<IHH", sid, seq & 0xFFFF, len(app) + 16)
            tag = d.aead.encrypt(d.nonce(seq), b"", hdr + app)
            return hdr + app + tag
        if pad is None:
            pad = os.urandom(1 + os.urandom(1)[0] % MAX_PAD) if self.pad else b""
        pt = struct.pack("<H", len(app)) + app + pad
        hdr = struct.pack("<IHH", sid, seq & 0xFFFF, len(pt) + 16)
        return hdr + d.aead.encrypt(d.nonce(seq), pt, hdr)

    def decode(self, body, d=None):
        d = d or self.rsp
        seq = d.seq
        d.seq += 1
        if len(body) < 8 + 16:
            raise SessionError("secured response too short (%d bytes)" % len(body))
        sid, wseq, length = struct.unpack_from("<IHH", body, 0)
        if sid != self.sid:
            raise SessionError("secured response for session 0x%08X, ours is 0x%08X" % (sid, self.sid))
        if wseq != seq & 0xFFFF:
            raise SessionError("secured response sequence number %d, expected %d" % (wseq, seq & 0xFFFF))
        if length < 16 or 8 + length > len(body):
            raise SessionError("secured response Length %d does not fit" % length)
        try:
            if self.mac_only:
                d.aead.decrypt(d.nonce(seq), body[8 + length - 16:8 + length], body[:8 + length - 16])
                app = body[8:8 + length - 16]
            else:
                pt = d.aead.decrypt(d.nonce(seq), body[8:8 + length], body[:8])
                n = R._u16(pt, 0)
                if n > len(pt) - 2:
                    raise SessionError("AppDataLength %d beyond the plaintext" % n)
                app = pt[2:2 + n]
        except InvalidTag:
            raise SessionError("secured response fails authentication")
        if not app or app[0] != 0x05:
            raise SessionError("secured response does not carry an SPDM message")
        return app[1:]


class SecureTransport:
    """Requester transport that runs every request through a session."""

    def __init__(self, link, session):
        self.link = link
        self.s = session

    def spdm(self, req, timeout=None):
        body = self.s.encode(req)  # timeout: already cut to the requester's overall deadline
        rsp = self.link.secured(body, timeout)
        return self.s.decode(rsp)


class SessionRequester(R.Requester):
    """Requester with the session messages; everything else as in requester.Requester."""

    def __init__(self, link, version=None, algs=("p384",), psk=True, key_ex=True, encrypt=True, mac=True,
                 hbeat=True, key_upd=True, clear_handshake=False, big_endian=False, sm_versions=SM_VERSIONS,
                 **kw):
        R.Requester.__init__(self, link, version=version, algs=algs, **kw)
        self.link = link
        self.big_endian = big_endian
        self.sm_versions = tuple(sm_versions)   # secured-message versions offered in the opaque data
        f = 0
        if encrypt:
            f |= CAP_ENCRYPT
        if mac:
            f |= CAP_MAC
        if key_ex:
            f |= CAP_KEY_EX
        if psk:
            f |= CAP_PSK_REQ
        if hbeat:
            f |= CAP_HBEAT
        if key_upd:
            f |= CAP_KEY_UPD
        if clear_handshake:
            f |= CAP_HANDSHAKE_IN_THE_CLEAR
        self.session_flags = f
        self.sessions = {}

    # -- VCA with session capabilities and algorithms ----------------------
    def get_capabilities(self):
        v = self.version
        if v == 0x10:
            req = self._hdr(R.GET_CAPABILITIES)
        else:
            flags = self.session_flags | (R.CAP_CHUNK if v >= 0x12 else 0)
            req = self._hdr(R.GET_CAPABILITIES) + struct.pack("<BBHI", 0, self.ct_exponent_req, 0, flags)
            if v >= 0x12:
                req += struct.pack("<II", self.dts, self.max_msg)
        rsp = self.exchange(req, R.CAPABILITIES)
        need = 20 if v >= 0x12 else 12
        if len(rsp) != need:
            raise R.ProtocolError("CAPABILITIES is %d bytes, expected %d" % (len(rsp), need))
        self.ct_exponent = rsp[5]
        self.rsp_flags = R._u32(rsp, 8)
        if v >= 0x12:
            self.rsp_dts = R._u32(rsp, 12)
            self.rsp_max_msg = R._u32(rsp, 16)
        self.A += req + rsp
        return self.rsp_flags

    def negotiate_algorithms(self):
        v = self.version
        asym = hsh = 0
        for a in self.algs:
            asym |= R.ALGS[a][0]
            hsh |= R.ALGS[a][1]
        self._offer = (asym, hsh)
        tables = b""
        ntab = 0
        if v >= 0x11 and self.structure_tables:
            for typ, val in ((R.ALG_TYPE_DHE, R.DHE_SECP384R1), (R.ALG_TYPE_AEAD, R.AEAD_AES_256_GCM),
                             (R.ALG_TYPE_REQ_ASYM, asym), (R.ALG_TYPE_KEY_SCHEDULE, R.KEY_SCHEDULE_SPDM)):
                tables += struct.pack("<BBH", typ, 0x20, val)
                ntab += 1
        self._offer_tables = {R.ALG_TYPE_DHE: 0, R.ALG_TYPE_AEAD: 0, R.ALG_TYPE_REQ_ASYM: 0,
                              R.ALG_TYPE_KEY_SCHEDULE: 0}
        for i in range(ntab):
            self._offer_tables[tables[4 * i]] = R._u16(tables, 4 * i + 2)
        other = self._other_offer()
        length = 32 + len(tables)
        req = (self._hdr(R.NEGOTIATE_ALGORITHMS, ntab) + struct.pack("<HBBII", length, 0x01, other, asym, hsh)
               + b"\x00" * 12 + bytes((0, 0, 0, 0)) + tables)
        rsp = self.exchange(req, R.ALGORITHMS)
        self._parse_algorithms(rsp, other)
        self.A += req + rsp
        return self.asym, self.hash

    # -- helpers ------------------------------------------------------------
    def _both(self, flag):
        return bool(self.session_flags & flag) and bool(self.rsp_flags & flag)

    def _new_req_sid(self):
        while True:
            v = struct.unpack("<H", os.urandom(2))[0]
            if v not in (0, 0xFFFF) and all((s & 0xFFFF) != v for s in self.sessions):
                return v

    def secured_exchange(self, s, req, expect=None, name=None, timeout=None):
        """Send `req` inside session `s` and return the decrypted response
        (ERROR -> ProtocolError unless expect is None)."""
        name = name or R.CODE_NAMES.get(req[1], "0x%02X" % req[1])
        t0 = time.monotonic()
        busy = 0
        while True:
            try:
                body = self.link.secured(s.encode(req), self.budget(
                    timeout if timeout is not None else self.timeout, name))
            except (TimeoutError, OSError) as e:
                raise R.Unreachable("no answer to %s inside the session: %s" % (name, e))
            except Exception as e:
                if type(e).__name__ == "Unreachable":
                    raise R.Unreachable("no answer to %s inside the session: %s" % (name, e))
                raise
            rsp = s.decode(body)
            # ERROR Busy: sent again (the next sequence number), as plain requests and
            # libspdm's requester do (a board short of memory for a moment)
            if len(rsp) >= 4 and rsp[1] == R.ERROR and rsp[2] == R.ERR_BUSY and busy < self.busy_retries:
                busy += 1
                self.sleep(0.1)
                continue
            break
        dt = time.monotonic() - t0
        s.timings[name] = dt
        self.timings.append(R.Timing(name + " (secured)", dt, len(req), len(rsp)))
        if expect is None:
            return rsp
        if len(rsp) < 4:
            raise R.ProtocolError("%s: response shorter than a header" % name)
        if rsp[1] == R.ERROR:
            raise R.ProtocolError("%s failed" % name, code=rsp[2], data=rsp[3], request=req[1], ext=rsp[4:])
        if rsp[0] != self.version or rsp[1] != expect:
            raise R.ProtocolError("%s: unexpected response 0x%02X/0x%02X" % (name, rsp[0], rsp[1]))
        return rsp

    def _check_sm_version(self, s):
        if (s.sm_version & 0xFF00) not in [x & 0xFF00 for x in self.sm_versions]:
            raise R.ProtocolError("responder selected secured-message version 0x%04X we did not offer" % s.sm_version)
        # DSP0277 1.2 defines the counter in the nonce as little endian; only
        # 1.0/1.1 leave room for the big-endian reading
        s.big_endian = self.big_endian and (s.sm_version & 0xFF00) < 0x1200

    # -- KEY_EXCHANGE / FINISH -------------------------------------------------
    def key_exchange(self, slot=0, summary=None, policy=0, public_key=None, opaque=None):
        v = self.version
        if v < 0x11:
            raise R.ProtocolError("sessions need SPDM 1.1 or later")
        if summary is None:
            summary = 0xFF if self.rsp_flags & R.CAP_MEAS_MASK else 0
        if slot not in self.chains:
            raise R.ProtocolError("retrieve the certificate chain of slot %d before KEY_EXCHANGE" % slot)
        s = HostSession(v, self.hash, self._new_req_sid())
        s.big_endian = self.big_endian
        s.in_clear = self._both(CAP_HANDSHAKE_IN_THE_CLEAR)
        s.mac_only = not self._both(CAP_ENCRYPT)
        eph = ec.generate_private_key(ec.SECP384R1())
        nums = eph.public_key().public_numbers()
        exch = nums.x.to_bytes(48, "big") + nums.y.to_bytes(48, "big")
        opq = sm_supported_opaque(v, self.sm_versions) if opaque is None else opaque
        req = (self._hdr(KEY_EXCHANGE, summary, slot) + struct.pack("<HBB", s.req_sid, policy if v >= 0x12 else 0, 0)
               + os.urandom(32) + exch + struct.pack("<H", len(opq)) + opq)
        t0 = time.monotonic()
        rsp = self.exchange(req, KEY_EXCHANGE_RSP, crypto=True)
        self._skip_challenge()   # KEY_EXCHANGE ends an unfinished CHALLENGE sequence (M1)
        H, S = s.H, self.sig_size
        o = 4
        if len(rsp) < 40 + 96 + 2:
            raise R.ProtocolError("KEY_EXCHANGE_RSP too short")
        s.heartbeat = rsp[2]
        s.rsp_sid = R._u16(rsp, 4)
        if rsp[6] != 0:
            raise R.ProtocolError("KEY_EXCHANGE_RSP requests mutual authentication (we did not offer it)")
        o = 40
        peer = rsp[o:o + 96]
        o += 96
        mh = H if summary else 0
        s.summary_hash = rsp[o:o + mh]
        o += mh
        olen = R._u16(rsp, o)
        o += 2
        opq_rsp = rsp[o:o + olen]
        o += olen
        s.sm_version = parse_sm_selection(v, opq_rsp)
        self._check_sm_version(s)
        vd_len = 0 if s.in_clear else H
        if len(rsp) != o + S + vd_len:
            raise R.ProtocolError("KEY_EXCHANGE_RSP is %d bytes, expected %d" % (len(rsp), o + S + vd_len))
        sig = rsp[o:o + S]
        ct = h_bytes(self.hash, self.chains[slot])
        # SPDM 1.3 multi-key connection: the last DIGESTS (D) comes before Ct
        th = self.A + (self.D if self.mk_conn else b"") + ct + req + rsp[:o]
        key = public_key or self.leaf_public_key(slot)
        R.verify_spdm_signature(key, v, self.hash, SIGN_CTX_KEX, th, sig)
        th += sig
        px, py = int.from_bytes(peer[:48], "big"), int.from_bytes(peer[48:], "big")
        try:
            peer_key = ec.EllipticCurvePublicNumbers(px, py, ec.SECP384R1()).public_key()
        except ValueError:
            raise R.VerificationError("responder's ExchangeData is not a P-384 point")
        z = eph.exchange(ec.ECDH(), peer_key)
        th1 = h_bytes(self.hash, th)
        s.derive_handshake(z, th1)
        if not s.in_clear:
            vd = rsp[o + S:]
            if hmac_bytes(self.hash, s.secrets["rsp_finished"], th1) != vd:
                raise R.VerificationError("KEY_EXCHANGE_RSP ResponderVerifyData does not verify")
            th += vd
        s.transcript = th
        s.sid = (s.rsp_sid << 16) | s.req_sid
        s.timings["KEY_EXCHANGE"] = time.monotonic() - t0
        self.sessions[s.sid] = s
        return s

    def finish(self, s, tamper=False):
        v = self.version
        hdr = self._hdr(FINISH, 0, 0)
        vd = hmac_bytes(self.hash, s.secrets["req_finished"], h_bytes(self.hash, s.transcript + hdr))
        if tamper:
            vd = bytes((vd[0] ^ 1,)) + vd[1:]
        req = hdr + vd
        t0 = time.monotonic()
        if s.in_clear:
            rsp = self.exchange(req, FINISH_RSP, crypto=True)
        else:
            rsp = self.secured_exchange(s, req, FINISH_RSP)
        th = s.transcript + req
        want = 4 + (s.H if s.in_clear else 0)
        if len(rsp) != want:
            raise R.ProtocolError("FINISH_RSP is %d bytes, expected %d" % (len(rsp), want))
        if s.in_clear:
            exp = hmac_bytes(self.hash, s.secrets["rsp_finished"], h_bytes(self.hash, th + rsp[:4]))
            if exp != rsp[4:]:
                raise R.VerificationError("FINISH_RSP ResponderVerifyData does not verify")
        th += rsp
        s.transcript = th
        s.derive_application(h_bytes(self.hash, th))
        s.timings["FINISH"] = time.monotonic() - t0
        return s

    # -- PSK ------------------------------------------------------------------
    def psk_exchange(self, hint, psk, summary=None, policy=0, context=None):
        v = self.version
        if v < 0x11:
            raise R.ProtocolError("sessions need SPDM 1.1 or later")
        if summary is None:
            summary = 0xFF if self.rsp_flags & R.CAP_MEAS_MASK else 0
        s = HostSession(v, self.hash, self._new_req_sid(), psk=True)
        s.big_endian = self.big_endian
        s.mac_only = not self._both(CAP_ENCRYPT)
        ctx = context if context is not None else os.urandom(s.H)
        opq = sm_supported_opaque(v, self.sm_versions)
        req = (self._hdr(PSK_EXCHANGE, summary, policy if v >= 0x12 else 0)
               + struct.pack("<HHHH", s.req_sid, len(hint), len(ctx), len(opq)) + hint + ctx + opq)
        t0 = time.monotonic()
        rsp = self.exchange(req, PSK_EXCHANGE_RSP, crypto=True)
        self._skip_challenge()
        H = s.H
        if len(rsp) < 12:
            raise R.ProtocolError("PSK_EXCHANGE_RSP too short")
        s.heartbeat = rsp[2]
        s.rsp_sid = R._u16(rsp, 4)
        clen, olen = R._u16(rsp, 8), R._u16(rsp, 10)
        mh = H if summary else 0
        o = 12
        s.summary_hash = rsp[o:o + mh]
        o += mh
        s.rsp_context = rsp[o:o + clen]
        o += clen
        s.sm_version = parse_sm_selection(v, rsp[o:o + olen])
        self._check_sm_version(s)
        o += olen
        if len(rsp) != o + H:
            raise R.ProtocolError("PSK_EXCHANGE_RSP is %d bytes, expected %d" % (len(rsp), o + H))
        th = self.A + req + rsp[:o]
        th1 = h_bytes(self.hash, th)
        s.derive_handshake(psk, th1)
        if hmac_bytes(self.hash, s.secrets["rsp_finished"], th1) != rsp[o:]:
            raise R.VerificationError("PSK_EXCHANGE_RSP ResponderVerifyData does not verify (wrong PSK?)")
        th += rsp[o:]
        s.transcript = th
        s.sid = (s.rsp_sid << 16) | s.req_sid
        s.psk_context = (self.rsp_flags & CAP_PSK_MASK) == (2 << 10)
        if not s.psk_context:
            if clen:
                raise R.ProtocolError("responder without PSK context sent %d context bytes" % clen)
            s.derive_application(h_bytes(self.hash, th))
        s.timings["PSK_EXCHANGE"] = time.monotonic() - t0
        self.sessions[s.sid] = s
        return s

    def psk_finish(self, s, tamper=False):
        hdr = self._hdr(PSK_FINISH)
        vd = hmac_bytes(self.hash, s.secrets["req_finished"], h_bytes(self.hash, s.transcript + hdr))
        if tamper:
            vd = bytes((vd[0] ^ 1,)) + vd[1:]
        req = hdr + vd
        t0 = time.monotonic()
        rsp = self.secured_exchange(s, req, PSK_FINISH_RSP)
        if len(rsp) != 4:
            raise R.ProtocolError("PSK_FINISH_RSP is %d bytes" % len(rsp))
        s.transcript += req + rsp
        s.derive_application(h_bytes(self.hash, s.transcript))
        s.timings["PSK_FINISH"] = time.monotonic() - t0
        return s

    # -- application phase ---------------------------------------------------
    def heartbeat(self, s):
        rsp = self.secured_exchange(s, self._hdr(HEARTBEAT), HEARTBEAT_ACK)
        if len(rsp) != 4:
            raise R.ProtocolError("HEARTBEAT_ACK is %d bytes" % len(rsp))
        return rsp

    def _check_ack(self, rsp, op, tag):
        if len(rsp) < 4:
            raise R.ProtocolError("KEY_UPDATE_ACK too short")
        if rsp[1] == R.ERROR:
            raise R.ProtocolError("KEY_UPDATE failed", code=rsp[2], data=rsp[3], request=KEY_UPDATE)
        if rsp[1] != KEY_UPDATE_ACK or rsp[2] != op or rsp[3] != tag or len(rsp) != 4:
            raise R.ProtocolError("bad KEY_UPDATE_ACK %s" % rsp.hex())

    def key_update(self, s, all_keys=False):
        """KEY_UPDATE: UpdateKey (requester direction) or UpdateAllKeys (both
        directions), then VerifyNewKey.  The responder answers UpdateAllKeys
        under its new key already (libspdm)."""
        op = UPDATE_ALL_KEYS if all_keys else UPDATE_KEY
        tag = os.urandom(1)[0]
        req = self._hdr(KEY_UPDATE, op, tag)
        body = self.link.secured(s.encode(req), self.budget(self.timeout, "KEY_UPDATE"))
        if all_keys:
            s.rsp = s.next_secret("rsp_app")
        rsp = s.decode(body)
        self._check_ack(rsp, op, tag)
        s.req = s.next_secret("req_app")
        tag2 = os.urandom(1)[0]
        rsp = self.secured_exchange(s, self._hdr(KEY_UPDATE, VERIFY_NEW_KEY, tag2), None)
        self._check_ack(rsp, VERIFY_NEW_KEY, tag2)
        return True

    def end_session(self, s, preserve_clear=False):
        rsp = self.secured_exchange(s, self._hdr(END_SESSION, 1 if preserve_clear else 0), END_SESSION_ACK)
        s.state = "ended"
        self.sessions.pop(s.sid, None)
        return rsp

    def vendor_defined(self, s, standard_id, vendor_id, payload):
        req = (self._hdr(VENDOR_DEFINED_REQUEST) + struct.pack("<HB", standard_id, len(vendor_id)) + vendor_id
               + struct.pack("<H", len(payload)) + payload)
        return self.secured_exchange(s, req, None)

    def in_session(self, s):
        """A Requester sharing this connection's state whose requests travel
        inside session `s` (fresh L transcript: the session's own)."""
        import copy

        inner = copy.copy(self)
        inner.t = SecureTransport(self.link, s)
        inner.L = b""
        inner.in_sess = True
        inner.timings = self.timings
        return inner

    # -- convenience -------------------------------------------------------------
    def open_session(self, slot=0, psk_hint=None, psk=None):
        if psk is not None:
            s = self.psk_exchange(psk_hint or b"", psk)
            if s.psk_context:
                self.psk_finish(s)
            return s
        if slot not in self.chains:
            if not self.digests:
                self.get_digests()
            self.get_certificate(slot)
        s = self.key_exchange(slot)
        self.finish(s)
        return s
