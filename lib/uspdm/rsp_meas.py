"""GET_MEASUREMENTS (loaded on demand by uspdm.responder; also inside a session)."""
from uspdm.compat import const, p16
from uspdm.responder import SIG_SIZE, Parts

# DSP0274 codes used here (private: compiled in, not in the module's dict)
_CAP_MEAS_MASK = const(0x18)
_CAP_MEAS_SIG = const(0x10)
_ERR_INVALID_REQUEST = const(0x01)
_ERR_UNEXPECTED_REQUEST = const(0x04)
_GET_MEASUREMENTS = const(0xE0)
_MEASUREMENTS = const(0x60)
_MEAS_ATTR_SIGN = const(0x01)
_MEAS_CHANGE_DETECTED = const(0x10)
_MEAS_NO_CHANGE_DETECTED = const(0x20)
_MEAS_OP_COUNT = const(0x00)
_REQ_CONTEXT_SIZE = const(0x08)
_V11 = const(0x11)
_V12 = const(0x12)
_V13 = const(0x13)

_ST_NEG = const(3)


def get_measurements(r, msg):
    if not (r._local() & _CAP_MEAS_MASK):
        r.t.reset_l()
        return r._unsupported(_GET_MEASUREMENTS)
    if r.state < _ST_NEG or not r.meas_spec:
        r.t.reset_l()
        return r._error(_ERR_UNEXPECTED_REQUEST)
    v = r.version
    attrs = msg[2]
    op = msg[3]
    signed = attrs & _MEAS_ATTR_SIGN
    if signed:
        need = 37 if v >= _V11 else 36
    else:
        need = 4
    if v >= _V13:
        need += _REQ_CONTEXT_SIZE
    if len(msg) < need:
        r.t.reset_l()
        return r._error(_ERR_INVALID_REQUEST)
    if signed and not (r.flags & _CAP_MEAS_SIG):
        r.t.reset_l()
        return r._error(_ERR_INVALID_REQUEST)
    slot = 0
    if signed and v >= _V11:
        slot = msg[36] & 0x0F
        if slot >= 8 or not (r._slot_mask() >> slot) & 1:
            r.t.reset_l()
            return r._error(_ERR_INVALID_REQUEST)
    mh = r.meas_hashname
    if op == _MEAS_OP_COUNT:
        p1 = r.meas.count()
        record = b""
        nblocks = 0
    else:
        rec = r.meas.record(op, mh)
        if rec is None:
            r.t.reset_l()
            return r._error(_ERR_INVALID_REQUEST)
        record, nblocks = rec
        p1 = 0
    p2 = 0
    if signed and v >= _V11:
        p2 = slot
        if v >= _V12:
            if r.l_mver is None or r.t.l is None:
                changed = _MEAS_NO_CHANGE_DETECTED
            else:
                changed = _MEAS_NO_CHANGE_DETECTED if r.l_mver == r.meas.version else _MEAS_CHANGE_DETECTED
            p2 |= changed
    return _respond(r, msg, v, need, signed, slot, p1, p2, record, nblocks)


def _respond(r, msg, v, need, signed, slot, p1, p2, record, nblocks):
    """The MEASUREMENTS response (a function of its own: no piece of this module's
    code needs more than ~0.6 KB of heap in one block when it is loaded again)."""
    opaque = r._opaque()
    rlen = len(record)
    ctx = _REQ_CONTEXT_SIZE if v >= _V13 else 0
    n = 8 + rlen + 32 + 2 + len(opaque) + ctx
    err = r._size_err(n + (SIG_SIZE[r.asym] if signed else 0))
    if err is not None:
        r.t.reset_l()
        return err
    hdr = bytes((v, _MEASUREMENTS, p1, p2, nblocks, rlen & 0xFF, (rlen >> 8) & 0xFF, rlen >> 16))
    # Nonce, OpaqueDataLength, OpaqueData, RequesterContext (1.3)
    tail = bytearray(34 + len(opaque) + ctx)
    tail[0:32] = r.drbg.generate(32)
    tail[32:34] = p16(len(opaque))
    tail[34:34 + len(opaque)] = opaque
    if ctx:
        tail[34 + len(opaque):] = msg[need - ctx:need]
    if r.t.l is None:
        r.l_mver = r.meas.version
    h = r.t.fork_l(v >= _V12)
    h.update(msg[:need])
    h.update(hdr)
    h.update(record)
    h.update(tail)
    # GET_MEASUREMENTS ends an unfinished CHALLENGE sequence (M1 reset) unless
    # the connection is already authenticated (libspdm)
    r.t.reset_m1()
    if signed:
        tdigest = h.digest()
        r.t.reset_l()
        # the body stays in parts (the record is the one kept by the measurements: no
        # copy) until the signature is appended, in the board's response buffer when
        # it is delivered (a deferred one holds no large block across requests)
        return r._signed(_GET_MEASUREMENTS, Parts((hdr, record, tail)), b"responder-measurements signing",
                         tdigest, slot)
    r.t.commit_l(h)
    # answered at once: built once (no concatenated copies), in the board's response
    # buffer (allocated at boot; sent before the next request) or in one block of its own
    rb = r.cfg.rsp_buffer
    body = memoryview(rb)[0:n] if rb is not None and n <= len(rb) else bytearray(n)
    body[0:8] = hdr
    body[8:8 + rlen] = record
    body[8 + rlen:n] = tail
    return body
