"""FINISH and PSK_FINISH, responder side (DSP0274, DSP0277): the end of a
handshake and the session's application keys.  Functions of a
uspdm.session.SessionManager `mgr`, loaded on demand (uspdm.demand) when the
requester finishes a handshake; the modules that computed KEY_EXCHANGE_RSP /
PSK_EXCHANGE_RSP (uspdm.sess_kex, uspdm.sess_psk, uspdm.sess_hs) need not
stay for it (uspdm.session_gate drops them once the answer is made)."""
from uspdm.compat import const
from uspdm.compat import ct_eq
from uspdm.crypto import hmac as _hmac
from uspdm.session import ST_ESTABLISHED, ST_HANDSHAKE

_CAP_HANDSHAKE_IN_THE_CLEAR = const(0x8000)
_CAP_KEY_EX = const(0x200)
_ERROR = const(0x7F)
_ERR_DECRYPT_ERROR = const(0x06)
_ERR_INVALID_REQUEST = const(0x01)
_ERR_UNEXPECTED_REQUEST = const(0x04)
_ERR_UNSUPPORTED_REQUEST = const(0x07)
_FINISH = const(0xE5)
_FINISH_RSP = const(0x65)
_PSK_FINISH_RSP = const(0x67)


def application_keys(s, th2):
    """Session s established: the application traffic keys from Hash(TH2)."""
    s.ks.application(th2)
    for d in (s.req, s.rsp):
        if d is not None:
            d.wipe()
    (rk, ri), (sk, si) = s.ks.app_keys()
    s.req, s.rsp = s.direction(rk, ri), s.direction(sk, si)
    s.state = ST_ESTABLISHED


def _verify(s, msg, h):
    """The transcript hash with msg (FINISH / PSK_FINISH, h bytes of verify data
    after its header) when its RequesterVerifyData is right, else None."""
    th = s.th.copy()
    th.update(msg[:4])
    expect = _hmac.hmac(s.hashname, s.ks.req_finished, th.digest())
    if not ct_eq(expect, msg[4:4 + h]):
        return None
    th.update(msg[4:4 + h])
    return th


def finish_clear(mgr, conn, msg, now):
    e = mgr._version_checks(conn, msg)
    if e:
        return e
    if not mgr._both(conn, _CAP_KEY_EX):
        return mgr._err(conn, _ERR_UNSUPPORTED_REQUEST, _FINISH)
    if not (mgr.in_clear and mgr._both(conn, _CAP_HANDSHAKE_IN_THE_CLEAR)):
        # without HANDSHAKE_IN_THE_CLEAR, FINISH belongs inside the session:
        # SessionRequired (1.2+) / Unspecified (1.1), as libspdm and the
        # Responder-Validator (case 9.11) expect
        return mgr._session_required(conn)
    sid = mgr.latest.get(id(conn))
    s = mgr.sessions.get(sid) if sid is not None else None
    if s is None or s.conn is not conn or s.psk or s.state != ST_HANDSHAKE or not s.in_clear or s.th is None:
        return mgr._err(conn, _ERR_UNEXPECTED_REQUEST)
    resp, ok = finish(mgr, s, msg)
    if ok:
        application_keys(s, s.th.digest())
        s.th = None
        s.last_rx = now
        mgr._log("session %08x established (KEY_EXCHANGE, handshake in the clear)" % s.id)
    elif resp[1] == _ERROR and resp[2] == _ERR_DECRYPT_ERROR:
        mgr.end(s, "FINISH verify data mismatch")
    return resp


def finish(mgr, s, msg):
    """Check a FINISH; return (response, ok).  On success s.th covers TH2."""
    conn = s.conn
    h = s.ks.h
    if msg[2] & 0x01:
        # we never ask for mutual authentication, so no signature may be present
        return mgr._err(conn, _ERR_INVALID_REQUEST), False
    if len(msg) < 4 + h:
        return mgr._err(conn, _ERR_INVALID_REQUEST), False
    th = _verify(s, msg, h)
    if th is None:
        mgr.stats["decrypt_errors"] += 1
        return mgr._err(conn, _ERR_DECRYPT_ERROR), False
    resp = bytes((conn.version, _FINISH_RSP, 0, 0))
    if s.in_clear:
        t2 = th.copy()
        t2.update(resp)
        resp += _hmac.hmac(s.hashname, s.ks.rsp_finished, t2.digest())
    th.update(resp)
    s.th = th
    return resp, True


def finish_in(mgr, s, msg):
    """FINISH inside session s (its handshake keys): the secured answer."""
    resp, ok = finish(mgr, s, msg)
    out = mgr._encode(s, resp)
    if ok and s.id in mgr.sessions:
        application_keys(s, s.th.digest())
        s.th = None
        mgr._log("session %08x established (KEY_EXCHANGE)" % s.id)
    elif not ok and resp[2] == _ERR_DECRYPT_ERROR and s.id in mgr.sessions:
        mgr.end(s, "FINISH verify data mismatch")
    return out


def psk_finish(mgr, s, msg):
    conn = s.conn
    h = s.ks.h
    if len(msg) != 4 + h:
        # only ever inside a session: exact size, as libspdm
        return mgr._encode(s, mgr._err(conn, _ERR_INVALID_REQUEST))
    th = _verify(s, msg, h)
    if th is None:
        mgr.stats["decrypt_errors"] += 1
        out = mgr._encode(s, mgr._err(conn, _ERR_DECRYPT_ERROR))
        if s.id in mgr.sessions:
            mgr.end(s, "PSK_FINISH verify data mismatch")
        return out
    resp = bytes((conn.version, _PSK_FINISH_RSP, 0, 0))
    th.update(resp)
    out = mgr._encode(s, resp)
    if s.id in mgr.sessions:
        application_keys(s, th.digest())
        s.th = None
        mgr._log("session %08x established (PSK)" % s.id)
    return out
