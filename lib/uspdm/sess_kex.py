"""KEY_EXCHANGE, responder side (DSP0274, DSP0277): functions of a
uspdm.session.SessionManager `mgr`, loaded on demand (uspdm.demand) when a
requester opens a certificate session, and dropped once KEY_EXCHANGE_RSP is
made (FINISH: uspdm.sess_fin) or when memory runs short."""
from uspdm.compat import const
from uspdm.responder import signing_prefix
from uspdm import demand, keysched, sess_hs
from uspdm.compat import p16, u16
from uspdm.crypto import sha2

# DSP0274 codes used here (private: compiled in, not in the module's dict)
_AEAD_AES_256_GCM = const(0x02)
_CAP_EVENT = const(0x2000000)
_CAP_HANDSHAKE_IN_THE_CLEAR = const(0x8000)
_CAP_HBEAT = const(0x2000)
_CAP_KEY_EX = const(0x200)
_DHE_SECP384R1 = const(0x10)
_ERR_INVALID_REQUEST = const(0x01)
_ERR_SESSION_LIMIT_EXCEEDED = const(0x0A)
_ERR_UNEXPECTED_REQUEST = const(0x04)
_ERR_UNSPECIFIED = const(0x05)
_ERR_UNSUPPORTED_REQUEST = const(0x07)
_KEY_EXCHANGE = const(0xE4)
_KEY_EXCHANGE_RSP = const(0x64)
_KEY_SCHEDULE_SPDM = const(0x01)
_V12 = const(0x12)
_V13 = const(0x13)
_POLICY_EVENT_ALL = const(0x02)   # SessionPolicy bit 1 (1.3): needs EVENT_CAP, which we do not have
_DHE_SIZE = const(96)  # secp384r1 X||Y

SIGN_CTX_KEX = b"responder-key_exchange_rsp signing"


def key_exchange(mgr, conn, msg, now):
    e = mgr._version_checks(conn, msg)
    if e:
        return e
    if not mgr._both(conn, _CAP_KEY_EX):
        return mgr._err(conn, _ERR_UNSUPPORTED_REQUEST, _KEY_EXCHANGE)
    if conn.sel_dhe != _DHE_SECP384R1 or conn.sel_aead != _AEAD_AES_256_GCM \
            or conn.sel_ks != _KEY_SCHEDULE_SPDM:
        return mgr._err(conn, _ERR_UNEXPECTED_REQUEST)
    v = conn.version
    ok, summary = sess_hs.summary(conn, msg[2])
    if not ok:
        return mgr._err(conn, _ERR_INVALID_REQUEST)
    slot = msg[3]
    mask = conn.identity.provisioned_mask(conn.asym)
    if slot >= 8 or not (mask >> slot) & 1:
        return mgr._err(conn, _ERR_INVALID_REQUEST)
    fixed = 40 + _DHE_SIZE
    if len(msg) < fixed + 2:
        return mgr._err(conn, _ERR_INVALID_REQUEST)
    olen = u16(msg, fixed)
    size = fixed + 2 + olen
    if len(msg) < size:
        return mgr._err(conn, _ERR_INVALID_REQUEST)
    msg = msg[:size]
    smv = sess_hs.sm_version(conn, msg[fixed + 2:size])
    if smv is None:
        return mgr._err(conn, _ERR_INVALID_REQUEST)
    peer = msg[40:fixed]
    from uspdm.crypto import ec

    try:
        ec.validate_public_key(ec.P384, peer)
    except ValueError:
        return mgr._err(conn, _ERR_INVALID_REQUEST)
    cd = conn.identity.chain_digest(slot, conn.asym, conn.hashname)   # (kept: no chain on the heap)
    d_id = conn.identity.slot_key(slot, conn.asym)
    if cd is None or d_id is None:
        return mgr._err(conn, _ERR_UNSPECIFIED)
    if v >= _V13 and msg[6] & _POLICY_EVENT_ALL and not (conn.flags & _CAP_EVENT):
        return mgr._err(conn, _ERR_INVALID_REQUEST)
    s = sess_hs.open_session(mgr, conn, u16(msg, 4), False)
    if s is None:
        return mgr._err(conn, _ERR_SESSION_LIMIT_EXCEEDED)
    s.in_clear = mgr.in_clear and mgr._both(conn, _CAP_HANDSHAKE_IN_THE_CLEAR)
    s.sm_version = smv
    s.policy = msg[6] if v >= _V12 else 0
    s.heartbeat = mgr.heartbeat if mgr._both(conn, _CAP_HBEAT) else 0
    # M1 (B, C) of an unfinished CHALLENGE and L are reset by KEY_EXCHANGE (libspdm)
    for fn in ("reset_l", "reset_m1"):
        if hasattr(conn.t, fn):
            getattr(conn.t, fn)()
    mgr.latest[id(conn)] = s.id
    s.last_rx = now
    gen = _kex_iter(mgr, conn, s, msg, peer, cd, d_id, summary)
    defer = getattr(conn, "defer_work", None)
    if defer is not None and _defer(mgr, conn):
        # the EC work (key pair, ECDH, signature) runs in slices from the
        # board's idle loop; the requester gets ResponseNotReady and
        # collects KEY_EXCHANGE_RSP with RESPOND_IF_READY
        return defer(_KEY_EXCHANGE, demand.pinned("sess_kex", gen))
    return ec.run_iter(gen)


def _defer(mgr, conn):
    if mgr.defer is not None:
        return mgr.defer
    cfg = getattr(conn, "cfg", None)
    return bool(getattr(cfg, "defer_signing", False))


def _kex_iter(mgr, conn, s, msg, peer, ct, d_id, summary):
    """KEY_EXCHANGE_RSP as a generator (bounded EC slices); returns the response."""
    from uspdm.crypto import ec

    v = conn.version
    try:
        dk = ec.generate_private_key(ec.P384, mgr.drbg.generate)
        pub = yield from ec.public_key_iter(ec.P384, dk)
        z = yield from ec.ecdh_iter(ec.P384, dk, peer, True)   # dk is used once: no scalar blinding
        z = bytearray(z)
        dk = 0
        if mgr.sessions.get(s.id) is not s:
            keysched.wipe(z)
            return mgr._err(conn, _ERR_UNSPECIFIED)
        opaque = sess_hs.sm_selection(v, s.sm_version)
        hb = s.heartbeat
        body = (bytes((v, _KEY_EXCHANGE_RSP, hb, 0)) + p16(s.id >> 16) + b"\x00\x00"
                + mgr.drbg.generate(32) + pub + summary + p16(len(opaque)) + opaque)
        th = sess_hs.th_start(conn)
        if getattr(conn, "mk", False) and conn.dig_d is not None:
            th.update(conn.dig_d)   # SPDM 1.3 multi-key connection: TH = A || D || Ct || K
        th.update(ct)
        th.update(msg)
        th.update(body)
        curve = ec.P384 if conn.asym == "p384" else ec.P256
        digest = th.digest()
        if v >= _V12:
            digest = sha2.new(conn.hashname, signing_prefix(v, SIGN_CTX_KEX) + digest).digest()
        sig = yield from ec.sign_iter(curve, d_id, digest, mgr.drbg.generate(32))
        # the key schedule and the AEAD key setup in slices of their own (in a nearly
        # full heap each is several M instructions on the M0)
        yield
        if mgr.sessions.get(s.id) is not s:
            keysched.wipe(z)
            return mgr._err(conn, _ERR_UNSPECIFIED)
        th.update(sig)
        th1 = th.digest()
        s.ks.handshake(z, th1, psk=False)
        keysched.wipe(z)
        yield
        if mgr.sessions.get(s.id) is not s:
            return mgr._err(conn, _ERR_UNSPECIFIED)
        sess_hs.handshake_keys(s)
        resp = body + sig
        if not s.in_clear:
            vd = sess_hs.hmac(s, s.ks.rsp_finished, th1)
            th.update(vd)
            resp += vd
        s.th = th
    except MemoryError:
        # out of memory half-way: the session goes, and the requester gets ERROR Busy
        # (uspdm.responder: RESPOND_IF_READY, or this request answered at once)
        mgr.end(s, "out of memory")
        raise
    except Exception:
        mgr.end(s, "KEY_EXCHANGE failed")
        return mgr._err(conn, _ERR_UNSPECIFIED)
    return resp
