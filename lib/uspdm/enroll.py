"""Enrolment over SPDM (issue 12), loaded on demand when a GET_CSR or a
SET_CERTIFICATE arrives (uspdm.responder) and dropped after the request; and
the power-fail-safe slot writes (uspdm.identity imports it to write a slot or
to recover from an interrupted write).  One module, so it costs the board one
measured file, not five.

GET_CSR (DSP0274 1.2/1.3) -> CSR: a PKCS#10 request for the device key,
built and signed on the board.

Request: SPDMVersion, 0xED, Param1 (1.3: KeyPairID), Param2 (1.3: request
attributes: bits 0-2 CSRCertModel, 3-5 CSRTrackingTag, 7 Overwrite),
RequesterInfoLength u16, OpaqueDataLength u16, RequesterInfo, OpaqueData.
Response: SPDMVersion, 0x6D, 0, 0, CSRLength u16, Reserved u16, CSRdata.

Checks, in order (each failure the ERROR named): CSR_CAP advertised and
SPDM 1.2+ (UnsupportedRequest); inside an established secure session unless
the board allows enrolment in the clear (SessionRequired); sizes and fields
(InvalidRequest: short message, lengths past the end, OpaqueData > 1024 or
when no opaque format was negotiated or malformed in the general format,
RequesterInfo too long or not a CertificationRequestInfo, 1.3 KeyPairID or
CSRCertModel non-zero (no multi-key connection), a tracking tag with Overwrite
or without the reset flow).

Reset flow (board setting cert_install_reset, CERT_INSTALL_RESET_CAP): the
first GET_CSR answers ERROR ResetRequired (1.3: with a fresh CSRTrackingTag
1-7 in ErrorData; no free tag: Busy; Overwrite drops the pending ones) and is
remembered on flash; after a reset the same request (1.3: with that tag)
gets the CSR.  An unknown tag: UnexpectedRequest.

SET_CERTIFICATE (DSP0274 1.2/1.3) -> SET_CERTIFICATE_RSP: write (or, 1.3,
erase) a certificate slot.

Request: SPDMVersion, 0xEE, Param1 (bits 0-3 SlotID; 1.3: bits 4-6
SetCertModel, bit 7 Erase), Param2 (1.3: KeyPairID), then (not with Erase)
the SPDM certificate chain: Length u16, Reserved u16, RootHash[H], DER
certificates root first.  Response: SPDMVersion, 0x6E, SlotID, 0.

Checks before anything is written (each failure the ERROR named, and the
slot untouched): SET_CERT_CAP advertised and SPDM 1.2+ (UnsupportedRequest);
inside an established secure session unless the board allows enrolment in
the clear (SessionRequired); SlotID < 8 and a supported slot, 1.3 KeyPairID
and SetCertModel 0 (no multi-key connection), Erase without a model, Length
within the message, Reserved 0 (InvalidRequest); slot 0 locked by the board
(1.2 Unspecified, 1.3 OperationFailed); the chain (Unspecified, as libspdm
answers a chain that fails its checks): every certificate well-formed DER,
at most 8, RootHash = Hash(first certificate) (so DIGESTS reports
Hash(this chain buffer)), the leaf an X.509 v3 certificate whose key is this
device's key for the negotiated curve, keyUsage with digitalSignature,
basicConstraints not cA (SPDM 1.3: present and encoded 30 00), no EKU that
is requester-authentication only.  A write that fails: 1.2 Unspecified,
1.3 OperationFailed.  With the reset flow (cert_install_reset) the write is
committed and takes effect at the next boot: ERROR ResetRequired.

PKCS#10 (RFC 2986) certificate signing request built on the board:

    subject, attrs = requester_info(ri)        # validated pieces of RequesterInfo (ValueError)
    cri = request_info(alg, pub_xy, subject, attrs)
    digest = cri_digest(alg, cri)              # what the device key signs
    csr = assemble(alg, cri, rs)               # rs: ECDSA r||s

RequesterInfo (DSP0274 GET_CSR) is a DER CertificationRequestInfo:
SEQUENCE { INTEGER 0, Name, SubjectPublicKeyInfo, [0] Attributes }.  Its
subject and attributes are taken (after a structural check with bounds);
its SubjectPublicKeyInfo is ignored: the CSR always carries the device's
own key.  Empty RequesterInfo: the default subject below, no attributes.

Power-fail-safe certificate slot writes.

A slot file NAME (uspdm/slot<N>_<alg>.der) is only ever replaced through
staging names, each step a single file operation:

  install:  1. create NAME.wip       (may be torn by a power cut)
            2. read it back, compare  (mismatch: removed, OSError)
            3. rename .wip -> .cmt   COMMIT POINT: .cmt only exists complete
            4. remove NAME
            5. rename .cmt -> NAME
  install at the next boot (CERT_INSTALL_RESET flow): steps 1-2, then
            rename .wip -> .pnd (committed; switched over by the boot)
  erase:    remove NAME (one step); with the reset flow an empty .pnd
            (a tombstone) that the boot turns into the removal

recover() runs once per boot (uspdm.identity.Identity, before the first slot
is read): .wip files are dropped (never committed), a .cmt finishes steps 4-5,
a .pnd (boot only) likewise or, when empty, removes NAME.  Every step is
idempotent, so a cut during recovery is recovered by the next boot.  A slot
is therefore always the old chain or the new one, never a mix or empty by
accident.  Renames never target an existing file (FAT and littlefs alike).
The suffixes are this module's own: `uspdm provision` stages under .new
(switched by its last step), and neither touches the other's files.

DER: a minimal encoder and a strict reader (single-byte tags, minimal lengths).
"""
from uspdm import consts as C
from uspdm.compat import const, p16, u16


# ------------------------------------------------------------------ DER
def der_len(n):
    if n < 0x80:
        return bytes((n,))
    if n < 0x100:
        return bytes((0x81, n))
    if n < 0x10000:
        return bytes((0x82, n >> 8, n & 0xFF))
    raise ValueError("DER length")


def tlv(tag, body):
    return bytes((tag,)) + der_len(len(body)) + body


def uint(b):
    """INTEGER from an unsigned big-endian byte string (minimal encoding)."""
    i = 0
    while i < len(b) - 1 and b[i] == 0:
        i += 1
    b = b[i:]
    if not b:
        b = b"\x00"
    if b[0] & 0x80:
        b = b"\x00" + b
    return tlv(0x02, b)


def ecdsa_sig(rs):
    """Ecdsa-Sig-Value SEQUENCE { r INTEGER, s INTEGER } from r||s."""
    n = len(rs) // 2
    return tlv(0x30, uint(rs[:n]) + uint(rs[n:]))


def read(buf, off, end):
    """One TLV at off (single-byte tags only; minimal-length DER), not past end."""
    if off + 2 > end:
        raise ValueError("DER truncated")
    tag = buf[off]
    if tag & 0x1F == 0x1F:
        raise ValueError("DER long tag")
    ln = buf[off + 1]
    p = off + 2
    if ln & 0x80:
        k = ln & 0x7F
        if k == 0 or k > 2 or p + k > end:
            raise ValueError("DER length")
        ln = 0
        for i in range(k):
            ln = (ln << 8) | buf[p + i]
        if ln < 0x80 or (k == 2 and ln < 0x100):
            raise ValueError("DER non-minimal length")
        p += k
    if p + ln > end:
        raise ValueError("DER truncated")
    return tag, p, p + ln


def children(buf, start, end):
    out = []
    off = start
    while off < end:
        t, s, e = read(buf, off, end)
        out.append((t, s, e))
        off = e
    return out


def expect(buf, off, end, tag):
    t, s, e = read(buf, off, end)
    if t != tag:
        raise ValueError("DER: unexpected tag")
    return s, e


# ---------------------------------------------------------- PKCS#10 request
# OIDs as full DER TLVs
_EC_PUBKEY = b"\x06\x07\x2a\x86\x48\xce\x3d\x02\x01"
_CURVE = {"p256": b"\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07", "p384": b"\x06\x05\x2b\x81\x04\x00\x22"}
_SIGALG = {"p256": b"\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x02", "p384": b"\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x03"}
_HASH = {"p256": "sha256", "p384": "sha384"}

MAX_RDNS = 16
MAX_ATTRS = 8
MAX_VALUES = 8


def default_subject():
    """O=uspdm, CN=uspdm device"""
    o = tlv(0x31, tlv(0x30, b"\x06\x03\x55\x04\x0a" + tlv(0x0C, b"uspdm")))
    cn = tlv(0x31, tlv(0x30, b"\x06\x03\x55\x04\x03" + tlv(0x0C, b"uspdm device")))
    return tlv(0x30, o + cn)


def _oid(buf, s, e):
    if e <= s or e - s > 32 or buf[e - 1] & 0x80:
        raise ValueError("bad OID")


def _subject(buf, s, e):
    n = 0
    for t, rs, re_ in children(buf, s, e):
        n += 1
        if t != 0x31 or n > MAX_RDNS or rs == re_:
            raise ValueError("bad RDN")
        for t2, as_, ae in children(buf, rs, re_):
            if t2 != 0x30:
                raise ValueError("bad AttributeTypeAndValue")
            kids = children(buf, as_, ae)
            if len(kids) != 2 or kids[0][0] != 0x06 or kids[1][0] & 0x20:
                raise ValueError("bad AttributeTypeAndValue")
            _oid(buf, kids[0][1], kids[0][2])


def _attribute(buf, s, e):
    kids = children(buf, s, e)
    if len(kids) != 2 or kids[0][0] != 0x06 or kids[1][0] != 0x31:
        raise ValueError("bad Attribute")
    _oid(buf, kids[0][1], kids[0][2])
    vals = children(buf, kids[1][1], kids[1][2])
    if not vals or len(vals) > MAX_VALUES:
        raise ValueError("bad Attribute values")
    for t, vs, ve in vals:
        if t & 0x20:
            children(buf, vs, ve)  # constructed: must parse


def requester_info(ri):
    """(subject Name DER, attributes DER bytes) from RequesterInfo; ValueError when malformed."""
    n = len(ri)
    if n == 0:
        return default_subject(), b""
    s, e = expect(ri, 0, n, 0x30)
    if e != n:
        raise ValueError("trailing bytes after RequesterInfo")
    kids = children(ri, s, e)
    if len(kids) != 4:
        raise ValueError("RequesterInfo is not version, subject, key, attributes")
    (tv, vs, ve), (tn, ns, ne), (tk, _ks, _ke), (ta, at_s, at_e) = kids
    if tv != 0x02 or ri[vs:ve] != b"\x00" or tn != 0x30 or tk != 0x30 or ta != 0xA0:
        raise ValueError("RequesterInfo fields")
    _subject(ri, ns, ne)
    attrs = children(ri, at_s, at_e)
    if len(attrs) > MAX_ATTRS:
        raise ValueError("too many attributes")
    for t, as_, ae in attrs:
        if t != 0x30:
            raise ValueError("bad Attribute")
        _attribute(ri, as_, ae)
    # the TLVs are contiguous: the Name's header starts where the version ends
    return bytes(ri[ve:ne]), bytes(ri[at_s:at_e])


def spki(alg, pub_xy):
    alg_id = tlv(0x30, _EC_PUBKEY + _CURVE[alg])
    return tlv(0x30, alg_id + tlv(0x03, b"\x00\x04" + bytes(pub_xy)))


def request_info(alg, pub_xy, subject, attrs):
    return tlv(0x30, b"\x02\x01\x00" + subject + spki(alg, pub_xy) + tlv(0xA0, attrs))


def cri_digest(alg, cri):
    from uspdm.crypto import sha2

    return sha2.new(_HASH[alg], cri).digest()


def assemble(alg, cri, rs):
    sig = tlv(0x03, b"\x00" + ecdsa_sig(rs))
    return tlv(0x30, cri + tlv(0x30, _SIGALG[alg]) + sig)


# ---------------------------------------------------------------- GET_CSR
_KEY_PAIRS = const(9)      # uspdm.identity.KEY_PAIRS: 1 device key, 2..9 slot 0..7's own
_MODEL_DEVICE = const(1)   # CertificateInfo / CSRCertModel / SetCertModel: DeviceCert
_GET_CSR = const(0xED)
_CSR = const(0x6D)
_CAP_CSR = const(0x00100000)
_PENDING = "uspdm/csr%d.bin"


def _err(r, code, data=0):
    return r._error(code, data)


def _opaque_ok(r, o):
    """General opaque data format (OPAQUE_FMT_1) well-formed; other formats: not parsed."""
    if r.other_params != C.OPAQUE_FMT_1:
        return True
    n = len(o)
    if n < 4 or n & 3 or o[1] or o[2] or o[3]:
        return False
    off = 4
    for _ in range(o[0]):
        if off + 2 > n:
            return False
        vlen = o[off + 1]
        if off + 4 + vlen > n:
            return False
        dlen = u16(o, off + 2 + vlen)
        end = off + 4 + vlen + dlen
        padded = off + ((end - off + 3) & ~3)
        if padded > n:
            return False
        for i in range(end, padded):
            if o[i]:
                return False
        off = padded
    return off == n


def _fingerprint(r, ri, opaque, kp=0):
    """What makes two GET_CSRs "the same request" across the reset (KeyPairID included)."""
    from uspdm.crypto import sha2

    h = sha2.new("sha256", bytes((r.version, kp)) + r.asym.encode() + p16(len(ri)) + ri + opaque)
    return h.digest()


def _boot_id(r):
    ident = r.identity
    if getattr(ident, "boot_id", None) is None:
        ident.boot_id = r.drbg.generate(8)
    return ident.boot_id


def _reset_flow(r, tag, overwrite, fp):
    """None: go ahead and build the CSR; else the ERROR to answer."""
    st = r.identity.storage
    boot = _boot_id(r)
    v = r.version
    if v < C.V13 or tag == 0:
        if v >= C.V13:
            if overwrite:
                for t in range(1, 8):
                    st.delete(_PENDING % t)
            free = 0
            for t in range(1, 8):
                if not st.exists(_PENDING % t):
                    free = t
                    break
            if not free:
                return _err(r, C.ERR_BUSY)
            tag = free
        else:
            old = st.read(_PENDING % 0)
            if old is not None and old[8:] == fp and old[:8] != boot:
                st.delete(_PENDING % 0)
                return None   # 1.2: the request made before the reset
        st.write(_PENDING % tag, boot + fp)
        return _err(r, C.ERR_RESET_REQUIRED, tag if v >= C.V13 else 0)
    old = st.read(_PENDING % tag)
    if old is None or old[8:] != fp:
        return _err(r, C.ERR_UNEXPECTED_REQUEST)
    if old[:8] == boot:
        return _err(r, C.ERR_RESET_REQUIRED, tag)   # not reset yet
    st.delete(_PENDING % tag)
    return None


def _refused(r, cap, code):
    """The ERROR for a GET_CSR/SET_CERTIFICATE the connection may not send (before
    1.2, the capability not offered, outside a session without enroll_in_clear)."""
    if r.version < C.V12 or not (r.flags & cap):
        return r._unsupported(code)
    if getattr(r, "cur_session", None) is None and not getattr(r.cfg, "enroll_in_clear", False):
        return _err(r, C.ERR_SESSION_REQUIRED)
    return None


def get_csr(r, msg):
    e = _refused(r, _CAP_CSR, _GET_CSR)
    if e:
        return e
    v = r.version
    c = r.cfg
    n = len(msg)
    if n < 8:
        return _err(r, C.ERR_INVALID_REQUEST)
    ri_len = u16(msg, 4)
    op_len = u16(msg, 6)
    if (op_len > C.MAX_OPAQUE_SIZE or 8 + ri_len + op_len > n
            or ri_len > getattr(c, "max_requester_info", 512)):
        return _err(r, C.ERR_INVALID_REQUEST)
    if op_len and r.other_params == C.OPAQUE_FMT_NONE:
        return _err(r, C.ERR_INVALID_REQUEST)
    ri = msg[8:8 + ri_len]
    opaque = msg[8 + ri_len:8 + ri_len + op_len]
    if op_len and not _opaque_ok(r, opaque):
        return _err(r, C.ERR_INVALID_REQUEST)
    tag = 0
    overwrite = 0
    kp = 1
    reset = getattr(c, "cert_install_reset", False)
    if v >= C.V13:
        p2 = msg[3]
        tag = (p2 >> 3) & 7
        overwrite = p2 & 0x80
        if (p2 & 0x40) or (tag and (overwrite or not reset)):
            return _err(r, C.ERR_INVALID_REQUEST)
        if getattr(r, "mk", False):
            # multi-key connection: a KeyPairID we have (1, or a slot's own 2..9)
            # and CSRCertModel DeviceCert (libspdm: 0 and models > 3 are InvalidRequest;
            # we issue device certificates only)
            kp = msg[2]
            if not 1 <= kp <= _KEY_PAIRS or (p2 & 7) != _MODEL_DEVICE:
                return _err(r, C.ERR_INVALID_REQUEST)
        elif msg[2] or (p2 & 7):
            # no multi-key connection: KeyPairID and CSRCertModel are 0 (libspdm)
            return _err(r, C.ERR_INVALID_REQUEST)
    try:
        subject, attrs = requester_info(ri)
    except (ValueError, IndexError):
        return _err(r, C.ERR_INVALID_REQUEST)
    if reset:
        e = _reset_flow(r, tag, overwrite, _fingerprint(r, ri, opaque, kp if getattr(r, "mk", False) else 0))
        if e is not None:
            return e
    alg = r.asym
    ident = r.identity
    if ident.private_key(alg) is None:
        # a board without a key for this curve makes one now (enrolment of a blank board)
        ident.ensure_key(alg)
    new = None
    if kp != 1 and ident.key_pair(kp, alg) is None:
        # slot kp - 2's own key pair does not exist: it is made now (the CSR's key;
        # SET_CERTIFICATE with this KeyPairID installs it).  One that exists is
        # either in use by the slot's chain or never certified (a slot that stops
        # using its own key pair retires it, below), so repeated GET_CSRs write
        # the flash once, not once each.
        from uspdm.crypto import ec

        new = ec.generate_private_key(ec.P384 if alg == "p384" else ec.P256, r.drbg.generate)
    gen = _csr_gen(ident, alg, subject, attrs, r.drbg.generate(32), bytes((v, _CSR, 0, 0)), kp, new)
    if c.defer_signing or getattr(r, "sess_defer", False):
        # (inside a session too: the board's own policy, not the session's "answer at once")
        # the public key (first use this boot) and the signature run in r.work() slices
        return _defer(r, _GET_CSR, gen)
    from uspdm.crypto import ec

    resp = ec.run_iter(gen)
    e = r._size_err(len(resp))
    return e if e is not None else resp


def _pub_iter(ident, alg, kp=1):
    """Key pair kp's public key: the device key's computed in slices the
    first time this boot, a slot's own (kp 2..9) stored with it."""
    if kp != 1:
        return ident.key_pair(kp, alg)[1]
        yield   # (a generator either way)
    pub = ident._pubs.get(alg)
    if pub is None:
        from uspdm.crypto import ec

        pub = yield from ec.public_key_iter(ec.P384 if alg == "p384" else ec.P256, ident.private_key(alg))
        ident._pubs[alg] = pub
    return pub


def _csr_gen(ident, alg, subject, attrs, extra, hdr, kp=1, new=None):
    # (everything it calls is bound here: the module is dropped after the request)
    from uspdm.crypto import ec

    curve = ec.P384 if alg == "p384" else ec.P256
    if new is not None:
        # a fresh key pair for KeyPairID kp: stored before the CSR goes out
        pub = yield from ec.public_key_iter(curve, new)
        ident.set_key_pair(kp, alg, new, pub)
        d = new
    elif kp != 1:
        d, pub = ident.key_pair(kp, alg)
    else:
        pub = yield from _pub_iter(ident, alg)
        d = ident.private_key(alg)
    cri = request_info(alg, pub, subject, attrs)
    rs = yield from ec.sign_iter(curve, d, cri_digest(alg, cri), extra)
    csr = assemble(alg, cri, rs)
    return hdr + p16(len(csr)) + b"\x00\x00" + csr


def _defer(r, code, gen):
    """ERROR ResponseNotReady; `gen` runs in r.work() slices and RESPOND_IF_READY
    returns the whole response it makes."""
    return r.defer_work(code, gen)


# -------------------------------------------------------- SET_CERTIFICATE
_SET_CERTIFICATE = const(0xEE)
_SET_CERTIFICATE_RSP = const(0x6E)
_CAP_SET_CERT = const(0x00080000)
MAX_CERTS = 8

_KU = b"\x55\x1d\x0f"
_BC = b"\x55\x1d\x13"
_EKU = b"\x55\x1d\x25"
_EKU_RSP = b"\x2b\x06\x01\x04\x01\x83\x1c\x82\x12\x03"
_EKU_REQ = b"\x2b\x06\x01\x04\x01\x83\x1c\x82\x12\x04"


def _fail(r):
    return _err(r, C.ERR_OPERATION_FAILED if r.version >= C.V13 else C.ERR_UNSPECIFIED)


def _tbs(buf, s, e):
    """Children of a Certificate's TBSCertificate; ValueError when malformed."""
    kids = children(buf, s, e)
    if len(kids) != 3 or kids[0][0] != 0x30 or kids[1][0] != 0x30 or kids[2][0] != 0x03:
        raise ValueError("not a Certificate")
    t = children(buf, kids[0][1], kids[0][2])
    if len(t) < 6:
        raise ValueError("short TBSCertificate")
    return t


def check_leaf(buf, s, e, spkis, version):
    """SPDM leaf profile on the DER certificate value [s, e); ValueError."""
    t = _tbs(buf, s, e)
    if t[0][0] != 0xA0 or buf[t[0][1]:t[0][2]] != b"\x02\x01\x02":
        raise ValueError("leaf is not 509 v3")
    if len(t) < 7:
        raise ValueError("short TBSCertificate")
    k = t[6]
    # the SubjectPublicKeyInfo TLV (header included) must be exactly ours
    hdr = len(der_len(k[2] - k[1])) + 1
    if bytes(buf[k[1] - hdr:k[2]]) not in spkis:
        raise ValueError("leaf key is not the device key")
    ku = bc = eku = None
    for x in t[7:]:
        if x[0] != 0xA3:
            continue
        es, ee = expect(buf, x[1], x[2], 0x30)
        if ee != x[2]:
            raise ValueError("extensions")
        for _t, xs, xe in children(buf, es, ee):
            f = children(buf, xs, xe)
            if len(f) < 2 or f[0][0] != 0x06 or f[-1][0] != 0x04:
                raise ValueError("extension")
            oid = buf[f[0][1]:f[0][2]]
            val = (f[-1][1], f[-1][2])
            if oid == _KU:
                ku = val
            elif oid == _BC:
                bc = val
            elif oid == _EKU:
                eku = val
    if ku is None:
        raise ValueError("leaf has no keyUsage")
    bs, be = expect(buf, ku[0], ku[1], 0x03)
    if be - bs < 2 or not buf[bs + 1] & 0x80:
        raise ValueError("keyUsage lacks digitalSignature")
    if bc is not None:
        v = buf[bc[0]:bc[1]]
        if v != b"\x30\x00":
            cs, ce = expect(buf, bc[0], bc[1], 0x30)
            kids = children(buf, cs, ce)
            if kids and kids[0][0] == 0x01 and buf[kids[0][1]:kids[0][2]] != b"\x00":
                raise ValueError("leaf basicConstraints cA TRUE")
            if version >= C.V13:
                raise ValueError("SPDM 1.3 leaf basicConstraints must be 30 00")
    elif version >= C.V13:
        raise ValueError("SPDM 1.3 leaf lacks basicConstraints")
    if eku is not None:
        ls, le = expect(buf, eku[0], eku[1], 0x30)
        oids = [bytes(buf[a:b]) for _t, a, b in children(buf, ls, le)]
        if _EKU_REQ in oids and _EKU_RSP not in oids:
            raise ValueError("leaf EKU is requester-authentication only")


def check_chain(r, certs, root_hash, pubs):
    """ValueError unless `certs` (DER, root first) passes the checks above;
    the leaf holds one of the public keys `pubs` (X||Y each)."""
    from uspdm.identity import der_elements

    els = der_elements(certs)
    if len(els) > MAX_CERTS:
        raise ValueError("too many certificates")
    for off, ln in els:
        s, e = expect(certs, off, off + ln, 0x30)
        if e != off + ln:
            raise ValueError("certificate length")
        _tbs(certs, s, e)
    from uspdm.crypto import sha2

    off, ln = els[0]
    if sha2.new(r.hashname, certs[off:off + ln]).digest() != root_hash:
        raise ValueError("RootHash is not the hash of the first certificate")
    off, ln = els[-1]
    s, e = expect(certs, off, off + ln, 0x30)
    check_leaf(certs, s, e, [spki(r.asym, p) for p in pubs], r.version)


def set_certificate(r, msg):
    e = _refused(r, _CAP_SET_CERT, _SET_CERTIFICATE)
    if e:
        return e
    v = r.version
    c = r.cfg
    p1 = msg[2]
    slot = p1 & 0x0F
    erase = False
    kp = 0
    if v >= C.V13:
        model = (p1 >> 4) & 7
        erase = bool(p1 & 0x80)
        kp = msg[3]
        if getattr(r, "mk", False):
            # multi-key connection: KeyPairID non-zero; to write, SetCertModel
            # DeviceCert and a key pair this slot can hold (1 or its own, slot + 2)
            if not kp or (erase and model):
                return _err(r, C.ERR_INVALID_REQUEST)
            if not erase and (model != _MODEL_DEVICE or kp not in (1, slot + 2)
                              or (kp != 1 and r.identity.key_pair(kp, r.asym) is None)):
                return _err(r, C.ERR_INVALID_REQUEST)
        elif kp or model:
            return _err(r, C.ERR_INVALID_REQUEST)
    if slot >= 8 or not (c.supported_slots >> slot) & 1:
        return _err(r, C.ERR_INVALID_REQUEST)
    hsize = 48 if r.hashname == "sha384" else 32
    if not erase:
        n = len(msg)
        if n < 8 + hsize:
            return _err(r, C.ERR_INVALID_REQUEST)
        length = u16(msg, 4)
        if length < 4 + hsize or length > n - 4 or u16(msg, 6):
            return _err(r, C.ERR_INVALID_REQUEST)
    if slot == 0 and getattr(c, "lock_slot0", False):
        return _fail(r)
    ident = r.identity
    at_boot = bool(getattr(c, "cert_install_reset", False))
    if not erase and ident.private_key(r.asym) is None:
        return _err(r, C.ERR_UNSPECIFIED)   # no key for this curve yet: GET_CSR makes it
    if erase:
        own = ident.key_pair_of(slot, r.asym) == slot + 2
        try:
            ident.delete_chain(slot, r.asym, at_boot)
            if own and not at_boot:
                ident.drop_key_pair(slot + 2, r.asym)   # the slot's own key retires with its chain
        except OSError:
            return _fail(r)
    else:
        gen = _install_gen(r, slot, msg[8 + hsize:4 + length], msg[8:8 + hsize], at_boot, kp)
        if (c.defer_signing or getattr(r, "sess_defer", False)) and ident._pubs.get(r.asym) is None and kp < 2:
            # the device's public key is not known yet this boot: computed in slices
            return _defer(r, _SET_CERTIFICATE, gen)
        from uspdm.crypto import ec

        return ec.run_iter(gen)
    if at_boot:
        return _err(r, C.ERR_RESET_REQUIRED)
    return bytes((v, _SET_CERTIFICATE_RSP, slot, 0))


def _install_gen(r, slot, certs, root_hash, at_boot, kp=0):
    """kp: the KeyPairID named (multi-key connection), else 0: the leaf may
    hold the device key or the slot's own key pair."""
    ident = r.identity
    if kp < 2:
        pubs = [(yield from _pub_iter(ident, r.asym))]
    else:
        pubs = []
    if kp != 1:
        own = ident.key_pair(slot + 2, r.asym)
        if own is not None:
            pubs.append(own[1])
    try:
        check_chain(r, certs, root_hash, pubs)
    except (ValueError, IndexError):
        return _err(r, C.ERR_UNSPECIFIED)
    own = ident.key_pair_of(slot, r.asym) == slot + 2
    try:
        ident.install_chain(slot, r.asym, certs, check_key=False, at_boot=at_boot)
        if own and not at_boot and ident.key_pair_of(slot, r.asym) != slot + 2:
            # the slot's chain no longer holds its own key pair: retired (a GET_CSR
            # for KeyPairID slot+2 then makes a fresh one)
            ident.drop_key_pair(slot + 2, r.asym)
    except (OSError, ValueError):
        return _fail(r)
    if at_boot:
        return _err(r, C.ERR_RESET_REQUIRED)
    return bytes((r.version, _SET_CERTIFICATE_RSP, slot, 0))


# ----------------------------------------------------------- slot writes
def _stage(name):
    return name.startswith("slot") and (name.endswith(".der.wip") or name.endswith(".der.cmt")
                                        or name.endswith(".der.pnd"))


def _rename(st, old, new):
    fn = getattr(st, "rename", None)
    if fn is not None:
        fn(old, new)
    else:   # a storage without rename (boards/m0): copy, then remove; recover() copes with both present
        st.write(new, st.read(old))
        st.delete(old)


def _switch(st, name, staged):
    if st.exists(name):
        st.delete(name)
    _rename(st, staged, name)


def install(st, name, data, at_boot=False):
    data = bytes(data)
    tmp = name + ".wip"
    if st.exists(tmp):
        st.delete(tmp)
    getattr(st, "create", st.write)(tmp, data)
    if st.read(tmp) != data:
        st.delete(tmp)
        raise OSError("slot write did not verify")
    if at_boot:
        if st.exists(name + ".pnd"):
            st.delete(name + ".pnd")
        _rename(st, tmp, name + ".pnd")
        return
    if st.exists(name + ".pnd"):
        st.delete(name + ".pnd")   # a newer immediate install replaces a pending one
    _rename(st, tmp, name + ".cmt")
    _switch(st, name, name + ".cmt")


def erase(st, name, at_boot=False):
    if at_boot:
        install(st, name, b"", at_boot=True)
        return
    if st.exists(name + ".pnd"):
        st.delete(name + ".pnd")
    if st.exists(name):
        st.delete(name)


def recover(st, folder, boot=True):
    """Finish or roll back interrupted slot writes under `folder`; returns
    the names of the slots it touched."""
    names = st.list(folder)
    pre = folder.rstrip("/") + "/"
    done = []
    for n in names:
        if _stage(n) and n.endswith(".wip"):
            st.delete(pre + n)
    for n in names:
        if _stage(n) and n.endswith(".cmt"):
            base = pre + n[:-4]
            _switch(st, base, pre + n)
            done.append(base)
    if boot:
        for n in names:
            if _stage(n) and n.endswith(".pnd"):
                base = pre + n[:-4]
                staged = pre + n
                if st.read(staged):
                    _switch(st, base, staged)
                else:
                    if st.exists(base):
                        st.delete(base)
                    st.delete(staged)
                done.append(base)
    return done
