"""CHALLENGE -> CHALLENGE_AUTH (loaded on demand by uspdm.responder)."""
from uspdm import consts as C
from uspdm.compat import const, p16

_ST_NEG = const(3)


def challenge(r, msg):
    if not (r._local() & C.CAP_CHAL):
        return r._unsupported(C.CHALLENGE)
    if r.state < _ST_NEG:
        return r._error(C.ERR_UNEXPECTED_REQUEST)
    v = r.version
    need = 36 + (C.REQ_CONTEXT_SIZE if v >= C.V13 else 0)
    if len(msg) < need:
        return r._error(C.ERR_INVALID_REQUEST)
    slot = msg[2]
    kind = msg[3]
    if kind not in (C.SUMMARY_NONE, C.SUMMARY_TCB, C.SUMMARY_ALL):
        return r._error(C.ERR_INVALID_REQUEST)
    if kind and (not (r.flags & C.CAP_MEAS_MASK) or not r.meas_spec):
        return r._error(C.ERR_INVALID_REQUEST)
    mask = r._slot_mask()
    if slot >= 8 or not (mask >> slot) & 1:
        return r._error(C.ERR_INVALID_REQUEST)
    cd = r.identity.chain_digest(slot, r.asym, r.hashname)
    if cd is None:
        return r._error(C.ERR_UNSPECIFIED)
    opaque = r._opaque()
    body = bytes((v, C.CHALLENGE_AUTH, slot & 0x0F, mask)) + cd + r.drbg.generate(32)
    if kind:
        body += r.meas.summary_hash(kind, r.hashname, r.meas_hashname)
    body += p16(len(opaque)) + opaque
    if v >= C.V13:
        body += msg[36:44]
    err = r._size_err(len(body) + C.SIG_SIZE[r.asym])
    if err is not None:
        return err
    h = r.t.fork_m1()
    h.update(msg[:need])
    h.update(body)
    tdigest = h.digest()
    resp = r._signed(C.CHALLENGE, body, C.SIGN_CTX_CHALLENGE_AUTH, tdigest, slot)
    # success (or deferred): B and C are consumed by this CHALLENGE_AUTH
    r.t.end_m1()
    if resp[1] == C.CHALLENGE_AUTH:
        r.t.auth = True  # delivered (a deferred one: on RESPOND_IF_READY)
    return resp
