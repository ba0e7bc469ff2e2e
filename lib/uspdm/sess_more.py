"""The rare paths of the secure sessions, responder side (DSP0274, DSP0277):
KEY_UPDATE, VENDOR_DEFINED_REQUEST inside a session, a secured message that
needs the other nonce byte order or the key before KEY_UPDATE (or fails:
ERROR DecryptError), session requests that arrive where they are errors, and
a request reassembled from CHUNK_SEND inside a session.  Functions of a
uspdm.session.SessionManager `mgr`, loaded on demand (uspdm.demand) and
dropped after the request (uspdm.session_gate): the session's steady state
(heartbeats, in-session measurements) never holds this code."""
from uspdm.compat import const
from uspdm import keysched, secured
from uspdm.session import ST_ESTABLISHED

_CAP_HBEAT = const(0x2000)
_CAP_KEY_UPD = const(0x4000)
_CHALLENGE = const(0x83)
_END_SESSION = const(0xEC)
_ERR_DECRYPT_ERROR = const(0x06)
_ERR_INVALID_REQUEST = const(0x01)
_ERR_UNEXPECTED_REQUEST = const(0x04)
_ERR_UNSPECIFIED = const(0x05)
_ERR_UNSUPPORTED_REQUEST = const(0x07)
_FINISH = const(0xE5)
_GET_CAPABILITIES = const(0xE1)
_GET_CERTIFICATE = const(0x82)
_GET_DIGESTS = const(0x81)
_GET_MEASUREMENTS = const(0xE0)
_GET_VERSION = const(0x84)
_HEARTBEAT = const(0xE8)
_KEY_EXCHANGE = const(0xE4)
_KEY_UPDATE = const(0xE9)
_KEY_UPDATE_ACK = const(0x69)
_NEGOTIATE_ALGORITHMS = const(0xE3)
_PSK_EXCHANGE = const(0xE6)
_PSK_FINISH = const(0xE7)
_VENDOR_DEFINED_REQUEST = const(0xFE)
_KU_UPDATE_KEY = const(1)
_KU_UPDATE_ALL_KEYS = const(2)
_KU_VERIFY_NEW_KEY = const(3)
_SM_LE_ONLY = const(0x1200)  # from DSP0277 1.2 on the counter is XORed into the nonce little endian only


def in_clear(mgr, conn, msg):
    """PSK_FINISH, HEARTBEAT, KEY_UPDATE, END_SESSION in the clear: errors."""
    code = msg[1]
    e = mgr._version_checks(conn, msg)
    if e:
        return e
    # libspdm checks the capability before the session: a request the
    # connection did not negotiate is UnsupportedRequest either way
    if (code == _HEARTBEAT and not mgr._both(conn, _CAP_HBEAT)) \
            or (code == _KEY_UPDATE and not mgr._both(conn, _CAP_KEY_UPD)) \
            or (code == _PSK_FINISH and not (mgr.psk_mode == 2   # PSK_WITH_CONTEXT
                                              and conn.flags & (2 << 10)
                                              and conn.req_flags & (3 << 10))):
        return mgr._err(conn, _ERR_UNSUPPORTED_REQUEST, code)
    return mgr._session_required(conn)


def vendor(mgr, conn, msg, s):
    """VENDOR_DEFINED_REQUEST: the board's hook answers (s: the session it came in,
    or None); UnsupportedRequest without one or when it declines."""
    resp = None
    if mgr.vendor_hook is not None:
        try:
            resp = mgr.vendor_hook(msg, s)
        except Exception:
            resp = mgr._err(conn, _ERR_UNSPECIFIED)
    return resp if resp is not None else mgr._err(conn, _ERR_UNSUPPORTED_REQUEST, _VENDOR_DEFINED_REQUEST)


def _other(mgr, conn, msg, s):
    """The plain answer to a request of an established session that is not
    HEARTBEAT / END_SESSION / one for the responder / KEY_UPDATE."""
    code = msg[1]
    if code == _VENDOR_DEFINED_REQUEST:
        return vendor(mgr, conn, msg, s)
    if code in (_KEY_EXCHANGE, _PSK_EXCHANGE, _FINISH, _PSK_FINISH, _CHALLENGE, _GET_VERSION,
                _GET_CAPABILITIES, _NEGOTIATE_ALGORITHMS):
        return mgr._err(conn, _ERR_UNEXPECTED_REQUEST)
    return mgr._err(conn, _ERR_UNSUPPORTED_REQUEST, code)


def in_session(mgr, s, msg):
    """A request of established session s that uspdm.session does not answer
    itself; returns the secured answer."""
    conn = s.conn
    code = msg[1]
    if code == _KEY_UPDATE:
        return key_update(mgr, s, msg)
    if code == _HEARTBEAT:
        if not mgr._both(conn, _CAP_HBEAT):
            return mgr._encode(s, mgr._err(conn, _ERR_UNSUPPORTED_REQUEST, code))
        # only ever inside a session, so no transport padding: exact size (libspdm)
        return mgr._encode(s, mgr._err(conn, _ERR_INVALID_REQUEST))
    if code == _END_SESSION:
        return mgr._encode(s, mgr._err(conn, _ERR_INVALID_REQUEST))   # not 4 bytes
    return mgr._encode(s, _other(mgr, conn, msg, s))


def wrapped_request(mgr, s, msg):
    """A request reassembled from CHUNK_SEND inside session s meets the filter an
    unwrapped one meets in the session: None when the responder is to handle it
    (GET_MEASUREMENTS / GET_DIGESTS / GET_CERTIFICATE / GET_CSR / SET_CERTIFICATE),
    else the plain response (an ERROR, or the vendor hook's answer)."""
    conn = s.conn
    code = msg[1]
    if s.state != ST_ESTABLISHED:
        return mgr._err(conn, _ERR_UNEXPECTED_REQUEST)
    if code in (_GET_MEASUREMENTS, _GET_DIGESTS, _GET_CERTIFICATE, 0xED, 0xEE):  # + GET_CSR, SET_CERTIFICATE
        return None
    if code == _HEARTBEAT:
        if not mgr._both(conn, _CAP_HBEAT):
            return mgr._err(conn, _ERR_UNSUPPORTED_REQUEST, code)
        return mgr._err(conn, _ERR_INVALID_REQUEST)   # never 4 bytes when chunked
    if code == _KEY_UPDATE:
        if not mgr._both(conn, _CAP_KEY_UPD):
            return mgr._err(conn, _ERR_UNSUPPORTED_REQUEST, code)
        return mgr._err(conn, _ERR_INVALID_REQUEST)
    if code == _END_SESSION:
        return mgr._err(conn, _ERR_INVALID_REQUEST)
    return _other(mgr, conn, msg, s)


# ------------------------------------------------------- secured
def undecoded(mgr, s, body, e, now):
    """Session s's secured message body failed to decode (SecuredError e): tried with
    the other nonce byte order or the key before KEY_UPDATE, else ERROR DecryptError
    inside the session and the session ends."""
    app = None
    if s.endian is None and s.req.seq == 2 and s.sm_version < _SM_LE_ONLY:
        app = _try_big_endian(s, body)
    if app is None and s.req_backup is not None:
        app = _try_backup(s, body)
    if app is not None:
        return mgr._app(s, app, now)
    mgr.stats["decrypt_errors"] += 1
    mgr._log("session %08x: %s" % (s.id, e))
    out = mgr._encode(s, mgr._err(s.conn, _ERR_DECRYPT_ERROR))
    if s.id in mgr.sessions:
        mgr.end(s, "decrypt error")
    return out


def _try_big_endian(s, body):
    """Counter 1 is the first where the two nonce encodings differ: if the
    little-endian one fails, try big endian and keep whichever works for
    both directions (libspdm's optional ENC_LITTLE_DEC_BOTH).  Only for
    secured-message versions 1.0/1.1, which leave the byte order open;
    DSP0277 1.2 fixes it as little endian (libspdm then uses little
    endian unconditionally), so a 1.2 session never tries this."""
    d = s.req
    d.seq = 1
    d.big = True
    try:
        app = secured.decode(s.id, d, body, s.mac_only)
    except secured.SecuredError:
        d.big = False
        d.seq = 2
        return None
    s.endian = "be"
    s.rsp.big = True
    return app


def _try_backup(s, body):
    """KEY_UPDATE: the requester may still use its previous key (libspdm
    retries with the backup and re-derives the pending new key)."""
    b = s.req_backup
    try:
        app = secured.decode(s.id, b, body, s.mac_only)
    except secured.SecuredError:
        return None
    # keep the pending new key, restarted at sequence number 0
    s.req.wipe()
    key, iv = s.ks.key_iv(s.ks.req_app)
    s.req = s.direction(key, iv)
    return app


# ------------------------------------------------------- KEY_UPDATE
def key_update(mgr, s, msg):
    conn = s.conn
    if not mgr._both(conn, _CAP_KEY_UPD):
        return mgr._encode(s, mgr._err(conn, _ERR_UNSUPPORTED_REQUEST, _KEY_UPDATE))
    if len(msg) != 4:
        return mgr._encode(s, mgr._err(conn, _ERR_INVALID_REQUEST))
    op = msg[2]
    ack = bytes((conn.version, _KEY_UPDATE_ACK, op, msg[3]))
    if op in (_KU_UPDATE_KEY, _KU_UPDATE_ALL_KEYS):
        if s.last_ku is not None:
            return mgr._encode(s, mgr._err(conn, _ERR_INVALID_REQUEST))
        _update_req(s)
        s.last_ku = op
        if op == _KU_UPDATE_ALL_KEYS:
            # the responder commits its new key at once: the ACK already uses it
            new = s.ks.update_secret(s.ks.rsp_app)
            keysched.wipe(s.ks.rsp_app)
            s.ks.rsp_app = new
            s.rsp.wipe()
            key, iv = s.ks.key_iv(new)
            s.rsp = s.direction(key, iv)
        return mgr._encode(s, ack)
    if op == _KU_VERIFY_NEW_KEY:
        if s.last_ku is None:
            return mgr._encode(s, mgr._err(conn, _ERR_INVALID_REQUEST))
        if s.req_backup is not None:
            s.req_backup.wipe()
        keysched.wipe(s.req_backup_secret)
        s.req_backup = s.req_backup_secret = None
        s.last_ku = None
        return mgr._encode(s, ack)
    return mgr._encode(s, mgr._err(conn, _ERR_INVALID_REQUEST))


def _update_req(s):
    if s.req_backup is not None:
        s.req_backup.wipe()
    keysched.wipe(s.req_backup_secret)
    s.req_backup = s.req
    s.req_backup_secret = s.ks.req_app
    s.ks.req_app = s.ks.update_secret(s.req_backup_secret)
    key, iv = s.ks.key_iv(s.ks.req_app)
    s.req = s.direction(key, iv)
