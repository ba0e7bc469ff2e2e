"""CHALLENGE -> CHALLENGE_AUTH (loaded on demand by uspdm.responder)."""
from uspdm.compat import const, p16
from uspdm.responder import SIG_SIZE

# DSP0274 codes used here (private: compiled in, not in the module's dict)
_CAP_CHAL = const(0x04)
_CAP_MEAS_MASK = const(0x18)
_CHALLENGE = const(0x83)
_CHALLENGE_AUTH = const(0x03)
_ERR_INVALID_REQUEST = const(0x01)
_ERR_UNEXPECTED_REQUEST = const(0x04)
_ERR_UNSPECIFIED = const(0x05)
_REQ_CONTEXT_SIZE = const(0x08)
_SUMMARY_ALL = const(0xFF)
_SUMMARY_NONE = const(0x00)
_SUMMARY_TCB = const(0x01)
_V13 = const(0x13)

_ST_NEG = const(3)


def challenge(r, msg):
    if not (r._local() & _CAP_CHAL):
        return r._unsupported(_CHALLENGE)
    if r.state < _ST_NEG:
        return r._error(_ERR_UNEXPECTED_REQUEST)
    v = r.version
    need = 36 + (_REQ_CONTEXT_SIZE if v >= _V13 else 0)
    if len(msg) < need:
        return r._error(_ERR_INVALID_REQUEST)
    slot = msg[2]
    kind = msg[3]
    if kind not in (_SUMMARY_NONE, _SUMMARY_TCB, _SUMMARY_ALL):
        return r._error(_ERR_INVALID_REQUEST)
    if kind and (not (r.flags & _CAP_MEAS_MASK) or not r.meas_spec):
        return r._error(_ERR_INVALID_REQUEST)
    mask = r._slot_mask()
    if slot >= 8 or not (mask >> slot) & 1:
        return r._error(_ERR_INVALID_REQUEST)
    cd = r.identity.chain_digest(slot, r.asym, r.hashname)
    if cd is None:
        return r._error(_ERR_UNSPECIFIED)
    opaque = r._opaque()
    body = bytes((v, _CHALLENGE_AUTH, slot & 0x0F, mask)) + cd + r.drbg.generate(32)
    if kind:
        body += r.meas.summary_hash(kind, r.hashname, r.meas_hashname)
    body += p16(len(opaque)) + opaque
    if v >= _V13:
        body += msg[36:44]
    err = r._size_err(len(body) + SIG_SIZE[r.asym])
    if err is not None:
        return err
    h = r.t.fork_m1()
    h.update(msg[:need])
    h.update(body)
    tdigest = h.digest()
    resp = r._signed(_CHALLENGE, body, b"responder-challenge_auth signing", tdigest, slot)
    # success (or deferred): B and C are consumed by this CHALLENGE_AUTH
    r.t.end_m1()
    if resp[1] == _CHALLENGE_AUTH:
        r.t.auth = True  # delivered (a deferred one: on RESPOND_IF_READY)
    return resp
