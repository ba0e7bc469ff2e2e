"""GET_CAPABILITIES and NEGOTIATE_ALGORITHMS (loaded on demand by uspdm.responder)."""
from uspdm import consts as C
from uspdm.compat import const, p16, p32, u16, u32

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
        if v >= C.V13 and ev:
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
        if v >= C.V13 and ep == 2:
            return False
    if mut and not kex and not chal:
        return False
    if v == C.V11 and mut and not encap:
        return False
    if v >= C.V13:
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
        return r._error(C.ERR_UNEXPECTED_REQUEST)
    v = msg[0]
    if v not in r.cfg.versions or v not in C.CAP_MASK:
        return r._error(C.ERR_VERSION_MISMATCH)
    r._ev = v
    need = 4 if v == C.V10 else (12 if v == C.V11 else 20)
    if len(msg) < need:
        return r._error(C.ERR_INVALID_REQUEST)
    flags = u32(msg, 8) if v >= C.V11 else 0
    ct = msg[5] if v >= C.V11 else 0
    dts = mx = 0
    if v >= C.V11 and not _req_flags_ok(flags, v):
        return r._error(C.ERR_INVALID_REQUEST)
    if v >= C.V12:
        dts = u32(msg, 12)
        mx = u32(msg, 16)
        if dts < C.MIN_DATA_TRANSFER_SIZE_12 or dts > mx:
            return r._error(C.ERR_INVALID_REQUEST)
        if not (flags & C.CAP_CHUNK) and dts != mx:
            return r._error(C.ERR_INVALID_REQUEST)
    if ct > C.MAX_CT_EXPONENT:
        return r._error(C.ERR_INVALID_REQUEST)
    want_algs = v >= C.V13 and (msg[2] & 1)
    if want_algs and not (flags & C.CAP_CHUNK):
        return r._error(C.ERR_INVALID_REQUEST)
    our = r.our_flags(v)
    c = r.cfg
    # 1.3: Param1 bit 0 tells that the SupportedAlgorithms block follows (libspdm's
    # requester rejects a CAPABILITIES carrying the block without it)
    with_algs = want_algs and (our & C.CAP_CHUNK)
    resp = bytes((v, C.CAPABILITIES, 1 if with_algs else 0, 0, 0, c.ct_exponent & 0xFF, 0, 0)) + p32(our)
    if v >= C.V12:
        # without CHUNK_CAP both sizes must be equal (DSP0274)
        mx_out = c.max_spdm_msg_size if our & C.CAP_CHUNK else c.data_transfer_size
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
        m |= C.ASYM_BITS.get(a, 0)
    return m


def _tables(r):
    c = r.cfg
    return ((C.ALG_TYPE_DHE, c.dhe_priority), (C.ALG_TYPE_AEAD, c.aead_priority),
            (C.ALG_TYPE_REQ_BASE_ASYM, c.req_asym_priority),
            (C.ALG_TYPE_KEY_SCHEDULE, c.key_schedule_priority))


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
        hb |= C.HASH_BITS[h]
    blk = bytes((n, 0)) + p16(30 + len(tabs))
    blk += bytes((C.MEAS_SPEC_DMTF if r.cfg.meas_cap else 0, C.OPAQUE_FMT_0 | C.OPAQUE_FMT_1))
    blk += p32(_asym_supported(r)) + p32(hb) + bytes(12) + bytes((0, 0, 0, 0))
    return blk + tabs


def negotiate_algorithms(r, msg):
    if r.state != _ST_CAPS:
        return r._error(C.ERR_UNEXPECTED_REQUEST)
    v = r.version
    n = len(msg)
    if n < 32:
        return r._error(C.ERR_INVALID_REQUEST)
    length = u16(msg, 4)
    ext_a = msg[28]
    ext_h = msg[29]
    ntab = msg[2] if v >= C.V11 else 0
    if n < 32 + 4 * (ext_a + ext_h) + 4 * ntab:
        return r._error(C.ERR_INVALID_REQUEST)
    off = 32 + 4 * (ext_a + ext_h)
    ext_total = ext_a + ext_h
    tables = []
    prev = 0
    for i in range(ntab):
        if n - off < 4:
            return r._error(C.ERR_INVALID_REQUEST)
        t = msg[off]
        cnt = msg[off + 1]
        fixed = cnt >> 4
        ext = cnt & 0x0F
        if t < C.ALG_TYPE_DHE or t > C.ALG_TYPE_KEY_SCHEDULE or (i and t <= prev):
            return r._error(C.ERR_INVALID_REQUEST)
        if fixed != 2 or n - off - 4 < 4 * ext:
            return r._error(C.ERR_INVALID_REQUEST)
        sup = u16(msg, off + 2)
        if sup == 0:
            return r._error(C.ERR_INVALID_REQUEST)
        tables.append((t, sup))
        prev = t
        ext_total += ext
        off += 4 + 4 * ext
    if v >= C.V11:
        if ext_total > C.NEG_ALG_MAX_EXT_11 or length > C.NEG_ALG_MAX_LENGTH_11:
            return r._error(C.ERR_INVALID_REQUEST)
    elif ext_total > C.NEG_ALG_MAX_EXT_10 or length > C.NEG_ALG_MAX_LENGTH_10:
        return r._error(C.ERR_INVALID_REQUEST)
    opaque_sel = 0
    if v >= C.V12:
        # OtherParamsSupport lists every format the requester reads: select
        # one, general format (1) first, as libspdm does; none known -> none
        offered = msg[7]
        if offered & C.OPAQUE_FMT_1:
            opaque_sel = C.OPAQUE_FMT_1
        elif offered & C.OPAQUE_FMT_0:
            opaque_sel = C.OPAQUE_FMT_0
    if off != length:
        return r._error(C.ERR_INVALID_REQUEST)
    mk = False
    if v >= C.V13 and msg[7] & C.MULTI_KEY_CONN:
        # ResponderMultiKeyConn asked for: only with our MULTI_KEY_CAP (libspdm: InvalidRequest)
        if not (r.flags & C.CAP_MULTI_KEY_MASK):
            return r._error(C.ERR_INVALID_REQUEST)
        mk = True
    req_spec = msg[6]
    req_asym = u32(msg, 8)
    req_hash = u32(msg, 12)
    # base asymmetric algorithm: configured priority, a provisioned curve first
    cands = [a for a in r.cfg.asym_priority if req_asym & C.ASYM_BITS.get(a, 0)]
    asym = None
    for a in cands:
        if r.identity.provisioned_mask(a):
            asym = a
            break
    if asym is None and cands:
        asym = cands[0]
    if asym is None:
        return r._error(C.ERR_INVALID_REQUEST)
    hp = r.cfg.hash_priority or [C.CURVE_HASH[asym]] + [
        h for h in ("sha384", "sha256") if h != C.CURVE_HASH[asym]]
    hashname = None
    for h in hp:
        if req_hash & C.HASH_BITS.get(h, 0):
            hashname = h
            break
    if hashname is None:
        return r._error(C.ERR_INVALID_REQUEST)
    meas_spec = 0
    meas_hash = None
    if r.flags & C.CAP_MEAS_MASK and req_spec & C.MEAS_SPEC_DMTF:
        meas_spec = C.MEAS_SPEC_DMTF
        meas_hash = r.cfg.meas_hash or hashname
    nresp = len(tables)
    resp = bytearray(bytes((v, C.ALGORITHMS, nresp if v >= C.V11 else 0, 0)))
    resp += p16(36 + 4 * nresp if v >= C.V11 else 36)
    other_sel = opaque_sel if v >= C.V12 else 0
    if v >= C.V13 and (r.req_flags & C.CAP_MULTI_KEY_MASK) == 0x04000000:
        other_sel |= C.MULTI_KEY_CONN  # RequesterMultiKeyConnSel: requester is MULTI_KEY_CAP_ONLY
    resp += bytes((meas_spec, other_sel))
    resp += p32(C.MEAS_HASH_BITS[meas_hash] if meas_hash else 0)
    resp += p32(C.ASYM_BITS[asym]) + p32(C.HASH_BITS[hashname])
    resp += bytes(11) + bytes((0, 0, 0, 0, 0))  # Reserved[11], MELSpecSel, ExtAsym/ExtHash counts, Reserved u16
    prio = dict(_tables(r))
    sel = {}
    if v >= C.V11:
        for t, sup in tables:
            sel[t] = _select(prio.get(t, ()), sup)
            resp += bytes((t, 0x20)) + p16(sel[t])
        # what libspdm's responder refuses: a session capability both
        # sides have, without the algorithm it needs
        both = r.flags & r.req_flags
        kex = both & C.CAP_KEY_EX
        psk = (r.flags & C.CAP_PSK_MASK) and (r.req_flags & C.CAP_PSK_MASK)
        if kex and not sel.get(C.ALG_TYPE_DHE):
            return r._error(C.ERR_INVALID_REQUEST)
        if both & (C.CAP_ENCRYPT | C.CAP_MAC) and not sel.get(C.ALG_TYPE_AEAD):
            return r._error(C.ERR_INVALID_REQUEST)
        if kex or psk:
            if sel.get(C.ALG_TYPE_KEY_SCHEDULE) != C.KEY_SCHEDULE_SPDM:
                return r._error(C.ERR_INVALID_REQUEST)
            if v >= C.V12 and opaque_sel != C.OPAQUE_FMT_1:
                return r._error(C.ERR_INVALID_REQUEST)
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
    r.sel_dhe = sel.get(C.ALG_TYPE_DHE, 0)
    r.sel_aead = sel.get(C.ALG_TYPE_AEAD, 0)
    r.sel_ks = sel.get(C.ALG_TYPE_KEY_SCHEDULE, 0)
    r.state = _ST_NEG
    return resp
