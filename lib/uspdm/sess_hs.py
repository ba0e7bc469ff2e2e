"""What KEY_EXCHANGE (uspdm.sess_kex) and PSK_EXCHANGE (uspdm.sess_psk) share,
responder side (DSP0274, DSP0277): the secured-message version in the opaque
data, the measurement summary hash, the session slot, the handshake and
application keys.  Functions of a uspdm.session.SessionManager `mgr` / Session
`s`, loaded with either handshake module and dropped with them once no
handshake is in progress (uspdm.session_gate)."""
from uspdm.compat import const
from uspdm.compat import p16, u16
from uspdm.crypto import hmac as _hmac
from uspdm.crypto import sha2
from uspdm.session import ST_HANDSHAKE, Session

_CAP_MEAS_MASK = const(0x18)
_SUMMARY_ALL = const(0xFF)
_SUMMARY_NONE = const(0x00)
_SUMMARY_TCB = const(0x01)
_OPAQUE_FMT_1 = const(0x02)
_OPAQUE_FMT_MASK = const(0x0F)
_V12 = const(0x12)

SM_SPEC_ID = b"\x46\x54\x4d\x44"   # 0x444D5446 ("DMTF") little endian
SM_VERSIONS = (0x1000, 0x1100, 0x1200)  # secured message (DSP0277) versions we speak


# ------------------------------------------------------------ opaque data
def parse_sm_versions(version, data):
    """Supported secured-message versions listed in a KEY_EXCHANGE/PSK_EXCHANGE
    opaque field (SPDM 1.1 header or the 1.2+ general format).  Returns a list
    of u16 versions, [] when the field carries no such element, raises
    ValueError when the field is malformed."""
    n = len(data)
    if version >= _V12:
        if n & 3 or n < 4:
            raise ValueError("opaque size")
        total = data[0]
        off = 4
    else:
        if n < 8 or data[0:4] != SM_SPEC_ID or data[4] != 1:
            raise ValueError("opaque header")
        total = data[5]
        off = 8
    if total < 1:
        raise ValueError("no opaque element")
    found = []
    for _ in range(total):
        if off + 4 > n:
            raise ValueError("opaque element header")
        eid = data[off]
        vlen = data[off + 1]
        if off + 2 + vlen + 2 > n:
            raise ValueError("opaque element vendor id")
        dlen = u16(data, off + 2 + vlen)
        body = off + 4 + vlen
        end = body + dlen
        padded = (end - off + 3) & ~3
        if off + padded > n:
            raise ValueError("opaque element length")
        if version >= _V12:
            for i in range(end, off + padded):
                if data[i]:
                    raise ValueError("opaque padding")
        if eid == 0 and vlen == 0 and dlen >= 3 and data[body] == 1 and data[body + 1] == 1:
            cnt = data[body + 2]
            if dlen < 3 + 2 * cnt:
                raise ValueError("version list")
            for i in range(cnt):
                found.append(u16(data, body + 3 + 2 * i))
        off += padded
    if off != n:
        raise ValueError("opaque trailing bytes")
    return found


def sm_opaque(version, sm_data):
    """Opaque field with one secured-message element (sm_data after its header)."""
    el = b"\x00\x00" + p16(len(sm_data)) + sm_data
    el += bytes((-len(el)) & 3)
    if version >= _V12:
        return b"\x01\x00\x00\x00" + el
    return SM_SPEC_ID + b"\x01\x01\x00\x00" + el


def sm_selection(version, selected):
    return sm_opaque(version, b"\x01\x00" + p16(selected))


def sm_supported(version, versions):
    return sm_opaque(version, b"\x01\x01" + bytes((len(versions),)) + b"".join(p16(v) for v in versions))


def sm_version(conn, opaque):
    """Selected secured-message version, or None when the opaque data is bad."""
    if not opaque:
        return SM_VERSIONS[-1]
    try:
        offered = parse_sm_versions(conn.version, opaque)
    except ValueError:
        return None
    best = 0
    for v in offered:
        vv = v & 0xFF00
        if vv in SM_VERSIONS and vv > best:
            best = vv
    return best or None


# ------------------------------------------------------------ the handshake
def summary(conn, kind):
    """(ok, bytes) for a MeasurementSummaryHashType request parameter; not ok
    either when SPDM 1.2+ did not select OpaqueDataFmt1 in ALGORITHMS (the
    handshake's opaque data is in that format): ERROR InvalidRequest."""
    if conn.version >= _V12 and (conn.other_params & _OPAQUE_FMT_MASK) != _OPAQUE_FMT_1:
        return False, None
    if kind == _SUMMARY_NONE:
        return True, b""
    if kind not in (_SUMMARY_TCB, _SUMMARY_ALL):
        return False, None
    if not (conn.flags & _CAP_MEAS_MASK) or not conn.meas_spec or not conn.meas_hashname:
        return False, None
    return True, conn.meas.summary_hash(kind, conn.hashname, conn.meas_hashname)


def th_start(conn):
    h = sha2.new(conn.hashname)
    h.update(conn.t.a)
    return h


def hmac(s, key, digest):
    return _hmac.hmac(s.hashname, key, digest)


def open_session(mgr, conn, req_sid, psk):
    """A new half-open Session in mgr, or None when no slot is free."""
    # one half-open handshake per requester: a new one replaces it, so one requester
    # cannot take every slot with handshakes it never finishes
    for x in list(mgr.sessions.values()):
        if x.conn is conn and x.state == ST_HANDSHAKE and x.req is not None:
            mgr.end(x, "replaced by a new handshake")
    if len(mgr.sessions) >= mgr.max_sessions:
        mgr.tick(mgr.now)
    if len(mgr.sessions) >= mgr.max_sessions:
        return None
    r = mgr._new_rsp_id()
    if r is None:
        return None
    sid = (r << 16) | req_sid
    s = Session(mgr, conn, sid, psk)
    mgr.sessions[sid] = s
    mgr.stats["opened"] += 1
    return s


def handshake_keys(s):
    """Session s's handshake traffic keys (its key schedule's handshake secrets)."""
    (rk, ri), (sk, si) = s.ks.hs_keys()
    s.req, s.rsp = s.direction(rk, ri), s.direction(sk, si)
