"""PSK_EXCHANGE, responder side (DSP0274, DSP0277): functions of a
uspdm.session.SessionManager `mgr`, loaded on demand (uspdm.demand) when a
requester opens a PSK session, and dropped once PSK_EXCHANGE_RSP is made
(PSK_FINISH: uspdm.sess_fin) or when memory runs short."""
from uspdm.compat import const
from uspdm import demand, keysched, sess_hs
from uspdm.compat import p16, u16
from uspdm.session import PSK_WITH_CONTEXT

# DSP0274 codes used here (private: compiled in, not in the module's dict)
_AEAD_AES_256_GCM = const(0x02)
_CAP_EVENT = const(0x2000000)
_CAP_HBEAT = const(0x2000)
_ERR_INVALID_REQUEST = const(0x01)
_ERR_SESSION_LIMIT_EXCEEDED = const(0x0A)
_ERR_UNEXPECTED_REQUEST = const(0x04)
_ERR_UNSPECIFIED = const(0x05)
_ERR_UNSUPPORTED_REQUEST = const(0x07)
_KEY_SCHEDULE_SPDM = const(0x01)
_PSK_EXCHANGE = const(0xE6)
_V12 = const(0x12)
_V13 = const(0x13)
_PSK_EXCHANGE_RSP = const(0x66)
_POLICY_EVENT_ALL = const(0x02)   # SessionPolicy bit 1 (1.3): needs EVENT_CAP, which we do not have
_PSK_CAP_SHIFT = const(10)
MAX_PSK_HINT = 32


def psk_exchange(mgr, conn, msg, now):
    r = _check(mgr, conn, msg)
    if not isinstance(r, tuple):
        return r   # an ERROR
    msg, hint, smv, summary = r
    r = None
    v = conn.version
    psk = read_psk(mgr, hint)
    if not psk:
        return mgr._err(conn, _ERR_INVALID_REQUEST)
    psk = bytearray(psk)
    s = sess_hs.open_session(mgr, conn, u16(msg, 4), True)
    if s is None:
        keysched.wipe(psk)
        return mgr._err(conn, _ERR_SESSION_LIMIT_EXCEEDED)
    try:
        s.sm_version = smv
        s.policy = msg[3] if v >= _V12 else 0
        hb = mgr.heartbeat if mgr._both(conn, _CAP_HBEAT) else 0
        s.heartbeat = hb
        s.psk_context = mgr.psk_mode == PSK_WITH_CONTEXT
        ctx = mgr.drbg.generate(s.ks.h) if s.psk_context else b""
        opaque = sess_hs.sm_selection(v, smv)
        body = (bytes((v, _PSK_EXCHANGE_RSP, hb, 0)) + p16(s.id >> 16) + b"\x00\x00" + p16(len(ctx))
                + p16(len(opaque)) + summary + ctx + opaque)
        th = sess_hs.th_start(conn)
        th.update(msg)
        th.update(body)
        th1 = th.digest()
        s.ks.handshake(psk, th1, psk=True)
        keysched.wipe(psk)
        sess_hs.handshake_keys(s)
        vd = sess_hs.hmac(s, s.ks.rsp_finished, th1)
        th.update(vd)
        s.th = th
    except Exception:
        mgr.end(s, "PSK_EXCHANGE failed")
        return mgr._err(conn, _ERR_UNSPECIFIED)
    # L and M1 (B, C) of an unfinished CHALLENGE are reset by PSK_EXCHANGE (libspdm); also
    # when it was deferred (uspdm.session_gate), collected by RESPOND_IF_READY
    for fn in ("reset_l", "reset_m1"):
        if hasattr(conn.t, fn):
            getattr(conn.t, fn)()
    s.last_rx = now
    if not s.psk_context:
        demand.need("sess_fin").application_keys(s, th.digest())
        s.th = None
        mgr._log("session %08x established (PSK, no PSK_FINISH)" % s.id)
    return body + vd


def _check(mgr, conn, msg):
    """The request's checks (a function of its own: no piece of this module's code
    needs more than ~0.6 KB of heap in one block): an ERROR to answer, or
    (msg cut to its size, hint, SecuredMessage version, measurement summary hash)."""
    e = mgr._version_checks(conn, msg)
    if e:
        return e
    if not mgr.psk_mode or not (conn.flags & (3 << _PSK_CAP_SHIFT)) or not (conn.req_flags & (3 << _PSK_CAP_SHIFT)):
        return mgr._err(conn, _ERR_UNSUPPORTED_REQUEST, _PSK_EXCHANGE)
    if conn.sel_aead != _AEAD_AES_256_GCM or conn.sel_ks != _KEY_SCHEDULE_SPDM:
        return mgr._err(conn, _ERR_UNEXPECTED_REQUEST)
    v = conn.version
    ok, summary = sess_hs.summary(conn, msg[2])
    if not ok:
        return mgr._err(conn, _ERR_INVALID_REQUEST)
    if len(msg) < 12:
        return mgr._err(conn, _ERR_INVALID_REQUEST)
    hl, cl, ol = u16(msg, 6), u16(msg, 8), u16(msg, 10)
    size = 12 + hl + cl + ol
    if len(msg) < size or hl > MAX_PSK_HINT:
        return mgr._err(conn, _ERR_INVALID_REQUEST)
    msg = msg[:size]
    smv = sess_hs.sm_version(conn, msg[12 + hl + cl:size])
    if smv is None:
        return mgr._err(conn, _ERR_INVALID_REQUEST)
    if v >= _V13 and msg[3] & _POLICY_EVENT_ALL and not (conn.flags & _CAP_EVENT):
        return mgr._err(conn, _ERR_INVALID_REQUEST)
    return msg, msg[12:12 + hl], smv, summary


def read_psk(mgr, hint):
    if mgr.storage is None:
        return None
    name = "uspdm/psk_%s.bin" % ("".join("%02x" % b for b in hint))
    try:
        return mgr.storage.read(name)
    except Exception:
        return None
