"""GET_CAPABILITIES and NEGOTIATE_ALGORITHMS (loaded on demand by uspdm.responder)."""
from uspdm.compat import const, p16, p32, u16, u32
from uspdm.responder import CAP_MASK

# DSP0274 codes used here (private: compiled in, not in the module's dict)
_ALGORITHMS = const(0x63)
_ALG_TYPE_AEAD = const(0x03)
_ALG_TYPE_DHE = const(0x02)
_ALG_TYPE_KEY_SCHEDULE = const(0x05)
_ALG_TYPE_REQ_BASE_ASYM = const(0x04)
_CAPABILITIES = const(0x61)
_CAP_CHUNK = const(0x20000)
_CAP_ENCRYPT = const(0x40)
_CAP_KEY_EX = const(0x200)
_CAP_MAC = const(0x80)
_CAP_MEAS_MASK = const(0x18)
_CAP_MULTI_KEY_MASK = const(0xC000000)
_CAP_PSK_MASK = const(0xC00)
_ERR_INVALID_REQUEST = const(0x01)
_ERR_UNEXPECTED_REQUEST = const(0x04)
_ERR_VERSION_MISMATCH = const(0x41)
_KEY_SCHEDULE_SPDM = const(0x01)
_MAX_CT_EXPONENT = const(0x1F)
_MEAS_SPEC_DMTF = const(0x01)
_MIN_DATA_TRANSFER_SIZE_12 = const(0x2A)
_MULTI_KEY_CONN = const(0x10)
_NEG_ALG_MAX_EXT_10 = const(0x08)
_NEG_ALG_MAX_EXT_11 = const(0x14)
_NEG_ALG_MAX_LENGTH_10 = const(0x40)
_NEG_ALG_MAX_LENGTH_11 = const(0x80)
_OPAQUE_FMT_0 = const(0x01)
_OPAQUE_FMT_1 = const(0x02)
_V10 = const(0x10)
_V11 = const(0x11)
_V12 = const(0x12)
_V13 = const(0x13)
_ASYM_BITS = {"p384": 0x80, "p256": 0x10}            # BaseAsymAlgo TPM_ALG_ECDSA_ECC_NIST_P384/P256
_HASH_BITS = {"sha256": 0x01, "sha384": 0x02}         # BaseHashAlgo TPM_ALG_SHA_256/384
_MEAS_HASH_BITS = {"sha256": 0x02, "sha384": 0x04}    # MeasurementHashAlgo TPM_ALG_SHA_256/384
_CURVE_HASH = {"p256": "sha256", "p384": "sha384"}

_ST_VERSION = const(1)
_ST_CAPS = const(2)
_ST_NEG = const(3)


def _req_flags_ok(f, v):
    """Requester capability flag consistency (DSP0274 GET_CAPABILITIES rules)."""
    cert = (f >> 1) & 1
    chal = (f >> 2) & 1
    enc = (f >> 6) & 1
    mac = (f >> 7) & 1
    mut = (f >> 8) & 1
    kex = (f >> 9) & 1
    psk = (f >> 10) & 3
    encap = (f >> 12) & 1
    hb = (f >> 13) & 1
    ku = (f >> 14) & 1
    hitc = (f >> 15) & 1
    pub = (f >> 16) & 1
    ep = (f >> 22) & 3
    ev = (f >> 25) & 1
    mk = (f >> 26) & 3
    if psk >= 2:
        return False
    if kex or psk:
        if not mac and not enc:
            return False
    else:
        if mac or enc or hitc or hb or ku:
            return False
        if v >= _V13 and ev:
            return False
    if not kex and psk == 1 and hitc:
        return False
    if cert or pub:
        if cert and pub:
            return False
        if not chal and not kex:
            return False
    else:
        if chal or mut:
            return False
        if v >= _V13 and ep == 2:
            return False
    if mut and not kex and not chal:
        return False
    if v == _V11 and mut and not encap:
        return False
    if v >= _V13:
        if ep == 3 or mk == 3:
            return False
        if mk and pub:
            return False
    return True


def _select(priority, offered):
    for bit in priority:
        if offered & bit:
            return bit
    return 0


def get_capabilities(r, msg):
    if r.state != _ST_VERSION:
        return r._error(_ERR_UNEXPECTED_REQUEST)
    v = msg[0]
    if v not in r.cfg.versions or v not in CAP_MASK:
        return r._error(_ERR_VERSION_MISMATCH)
    r._ev = v
    need = 4 if v == _V10 else (12 if v == _V11 else 20)
    if len(msg) < need:
        return r._error(_ERR_INVALID_REQUEST)
    flags = u32(msg, 8) if v >= _V11 else 0
    ct = msg[5] if v >= _V11 else 0
    dts = mx = 0
    if v >= _V11 and not _req_flags_ok(flags, v):
        return r._error(_ERR_INVALID_REQUEST)
    if v >= _V12:
        dts = u32(msg, 12)
        mx = u32(msg, 16)
        if dts < _MIN_DATA_TRANSFER_SIZE_12 or dts > mx:
            return r._error(_ERR_INVALID_REQUEST)
        if not (flags & _CAP_CHUNK) and dts != mx:
            return r._error(_ERR_INVALID_REQUEST)
    if ct > _MAX_CT_EXPONENT:
        return r._error(_ERR_INVALID_REQUEST)
    want_algs = v >= _V13 and (msg[2] & 1)
    if want_algs and not (flags & _CAP_CHUNK):
        return r._error(_ERR_INVALID_REQUEST)
    our = r.our_flags(v)
    c = r.cfg
    # 1.3: Param1 bit 0 tells that the SupportedAlgorithms block follows (libspdm's
    # requester rejects a CAPABILITIES carrying the block without it)
    with_algs = want_algs and (our & _CAP_CHUNK)
    resp = bytes((v, _CAPABILITIES, 1 if with_algs else 0, 0, 0, c.ct_exponent & 0xFF, 0, 0)) + p32(our)
    if v >= _V12:
        # without CHUNK_CAP both sizes must be equal (DSP0274)
        mx_out = c.max_spdm_msg_size if our & _CAP_CHUNK else c.data_transfer_size
        resp += p32(c.data_transfer_size) + p32(mx_out)
    if with_algs:
        resp += _supported_algorithms(r)
    # the negotiated parameters apply to the size check of this response
    r.version, r.req_flags, r.req_dts, r.req_max = v, flags, dts, mx
    r.flags = our
    err = r._size_err(len(resp))
    if err is not None:
        r.version = r.req_flags = r.req_dts = r.req_max = r.flags = 0
        r._ev = v
        return err
    r.req_ct = ct
    r.t.add_a(msg[:need], resp)
    r.state = _ST_CAPS
    r._ev = v
    return resp


def _asym_supported(r):
    m = 0
    for a in r.cfg.asym_priority:
        m |= _ASYM_BITS.get(a, 0)
    return m


def _tables(r):
    c = r.cfg
    return ((_ALG_TYPE_DHE, c.dhe_priority), (_ALG_TYPE_AEAD, c.aead_priority),
            (_ALG_TYPE_REQ_BASE_ASYM, c.req_asym_priority),
            (_ALG_TYPE_KEY_SCHEDULE, c.key_schedule_priority))


def _supported_algorithms(r):
    """SPDM 1.3 SupportedAlgorithms block appended to CAPABILITIES."""
    tabs = b""
    n = 0
    for t, prio in _tables(r):
        bits = 0
        for b in prio:
            bits |= b
        if bits:
            tabs += bytes((t, 0x20)) + p16(bits)
            n += 1
    hb = 0
    for h in ("sha256", "sha384"):
        hb |= _HASH_BITS[h]
    blk = bytes((n, 0)) + p16(30 + len(tabs))
    blk += bytes((_MEAS_SPEC_DMTF if r.cfg.meas_cap else 0, _OPAQUE_FMT_0 | _OPAQUE_FMT_1))
    blk += p32(_asym_supported(r)) + p32(hb) + bytes(12) + bytes((0, 0, 0, 0))
    return blk + tabs


def negotiate_algorithms(r, msg):
    if r.state != _ST_CAPS:
        return r._error(_ERR_UNEXPECTED_REQUEST)
    v = r.version
    n = len(msg)
    if n < 32:
        return r._error(_ERR_INVALID_REQUEST)
    p = _parse_algorithms(r, msg, v, n)
    if not isinstance(p, tuple):
        return p   # an ERROR
    tables, length, opaque_sel, mk = p
    p = _choose(r, msg)
    if not isinstance(p, tuple):
        return p
    asym, hashname, meas_spec, meas_hash = p
    p = None
    return _algorithms(r, msg, v, tables, length, opaque_sel, mk, asym, hashname, meas_spec, meas_hash)


# (negotiate_algorithms in three functions: no piece of this module's code needs more than
# ~0.6 KB of heap in one block when it is loaded again, after a session's EC work)
def _parse_algorithms(r, msg, v, n):
    """The request's structure: an ERROR, or (its AlgStruct tables, its length, the
    opaque data format selected, MULTI_KEY_CONN asked for)."""
    length = u16(msg, 4)
    ext_a = msg[28]
    ext_h = msg[29]
    ntab = msg[2] if v >= _V11 else 0
    if n < 32 + 4 * (ext_a + ext_h) + 4 * ntab:
        return r._error(_ERR_INVALID_REQUEST)
    off = 32 + 4 * (ext_a + ext_h)
    ext_total = ext_a + ext_h
    tables = []
    prev = 0
    for i in range(ntab):
        if n - off < 4:
            return r._error(_ERR_INVALID_REQUEST)
        t = msg[off]
        cnt = msg[off + 1]
        fixed = cnt >> 4
        ext = cnt & 0x0F
        if t < _ALG_TYPE_DHE or t > _ALG_TYPE_KEY_SCHEDULE or (i and t <= prev):
            return r._error(_ERR_INVALID_REQUEST)
        if fixed != 2 or n - off - 4 < 4 * ext:
            return r._error(_ERR_INVALID_REQUEST)
        sup = u16(msg, off + 2)
        if sup == 0:
            return r._error(_ERR_INVALID_REQUEST)
        tables.append((t, sup))
        prev = t
        ext_total += ext
        off += 4 + 4 * ext
    if v >= _V11:
        if ext_total > _NEG_ALG_MAX_EXT_11 or length > _NEG_ALG_MAX_LENGTH_11:
            return r._error(_ERR_INVALID_REQUEST)
    elif ext_total > _NEG_ALG_MAX_EXT_10 or length > _NEG_ALG_MAX_LENGTH_10:
        return r._error(_ERR_INVALID_REQUEST)
    opaque_sel = 0
    if v >= _V12:
        # OtherParamsSupport lists every format the requester reads: select
        # one, general format (1) first, as libspdm does; none known -> none
        offered = msg[7]
        if offered & _OPAQUE_FMT_1:
            opaque_sel = _OPAQUE_FMT_1
        elif offered & _OPAQUE_FMT_0:
            opaque_sel = _OPAQUE_FMT_0
    if off != length:
        return r._error(_ERR_INVALID_REQUEST)
    mk = False
    if v >= _V13 and msg[7] & _MULTI_KEY_CONN:
        # ResponderMultiKeyConn asked for: only with our MULTI_KEY_CAP (libspdm: InvalidRequest)
        if not (r.flags & _CAP_MULTI_KEY_MASK):
            return r._error(_ERR_INVALID_REQUEST)
        mk = True
    return tables, length, opaque_sel, mk


def _choose(r, msg):
    """The base algorithms selected: an ERROR, or (asym, hash, measurement spec,
    measurement hash)."""
    req_spec = msg[6]
    req_asym = u32(msg, 8)
    req_hash = u32(msg, 12)
    # base asymmetric algorithm: configured priority, a provisioned curve first
    cands = [a for a in r.cfg.asym_priority if req_asym & _ASYM_BITS.get(a, 0)]
    asym = None
    for a in cands:
        if r.identity.provisioned_mask(a):
            asym = a
            break
    if asym is None and cands:
        asym = cands[0]
    if asym is None:
        return r._error(_ERR_INVALID_REQUEST)
    hp = r.cfg.hash_priority or [_CURVE_HASH[asym]] + [
        h for h in ("sha384", "sha256") if h != _CURVE_HASH[asym]]
    hashname = None
    for h in hp:
        if req_hash & _HASH_BITS.get(h, 0):
            hashname = h
            break
    if hashname is None:
        return r._error(_ERR_INVALID_REQUEST)
    meas_spec = 0
    meas_hash = None
    if r.flags & _CAP_MEAS_MASK and req_spec & _MEAS_SPEC_DMTF:
        meas_spec = _MEAS_SPEC_DMTF
        meas_hash = r.cfg.meas_hash or hashname
    return asym, hashname, meas_spec, meas_hash


def _algorithms(r, msg, v, tables, length, opaque_sel, mk, asym, hashname, meas_spec, meas_hash):
    """ALGORITHMS, and the connection's selections."""
    nresp = len(tables)
    resp = bytearray(bytes((v, _ALGORITHMS, nresp if v >= _V11 else 0, 0)))
    resp += p16(36 + 4 * nresp if v >= _V11 else 36)
    other_sel = opaque_sel if v >= _V12 else 0
    if v >= _V13 and (r.req_flags & _CAP_MULTI_KEY_MASK) == 0x04000000:
        other_sel |= _MULTI_KEY_CONN  # RequesterMultiKeyConnSel: requester is MULTI_KEY_CAP_ONLY
    resp += bytes((meas_spec, other_sel))
    resp += p32(_MEAS_HASH_BITS[meas_hash] if meas_hash else 0)
    resp += p32(_ASYM_BITS[asym]) + p32(_HASH_BITS[hashname])
    resp += bytes(11) + bytes((0, 0, 0, 0, 0))  # Reserved[11], MELSpecSel, ExtAsym/ExtHash counts, Reserved u16
    prio = dict(_tables(r))
    sel = {}
    if v >= _V11:
        for t, sup in tables:
            sel[t] = _select(prio.get(t, ()), sup)
            resp += bytes((t, 0x20)) + p16(sel[t])
        # what libspdm's responder refuses: a session capability both
        # sides have, without the algorithm it needs
        both = r.flags & r.req_flags
        kex = both & _CAP_KEY_EX
        psk = (r.flags & _CAP_PSK_MASK) and (r.req_flags & _CAP_PSK_MASK)
        if kex and not sel.get(_ALG_TYPE_DHE):
            return r._error(_ERR_INVALID_REQUEST)
        if both & (_CAP_ENCRYPT | _CAP_MAC) and not sel.get(_ALG_TYPE_AEAD):
            return r._error(_ERR_INVALID_REQUEST)
        if kex or psk:
            if sel.get(_ALG_TYPE_KEY_SCHEDULE) != _KEY_SCHEDULE_SPDM:
                return r._error(_ERR_INVALID_REQUEST)
            if v >= _V12 and opaque_sel != _OPAQUE_FMT_1:
                return r._error(_ERR_INVALID_REQUEST)
    resp = bytes(resp)
    err = r._size_err(len(resp))
    if err is not None:
        return err
    r.t.add_a(msg[:length], resp)
    r.asym = asym
    r.hashname = hashname
    r.meas_hashname = meas_hash
    r.meas_spec = meas_spec
    r.other_params = opaque_sel
    r.mk = mk   # MULTI_KEY_CONN_RSP: DIGESTS carry KeyPairIDs, GET_CSR/SET_CERTIFICATE name one
    r.t.set_hash(hashname)
    # the session algorithms selected (uspdm.session checks them)
    r.sel_dhe = sel.get(_ALG_TYPE_DHE, 0)
    r.sel_aead = sel.get(_ALG_TYPE_AEAD, 0)
    r.sel_ks = sel.get(_ALG_TYPE_KEY_SCHEDULE, 0)
    r.state = _ST_NEG
    return resp
