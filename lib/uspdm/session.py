"""SPDM secure sessions (DSP0274 1.1-1.3, DSP0277, DSP0276): the responder side.

One SessionManager per board holds every open session (across requesters) and
bounds how many there are.  The SPDM responder of a connection (`conn`, one
per requester) calls into it:

    mgr = SessionManager(drbg, storage, max_sessions=2, heartbeat=0, psk_mode=2)
    rsp = mgr.handle_in_clear(conn, msg, now_ms)   # KEY_EXCHANGE, PSK_EXCHANGE,
                                                  # FINISH in the clear, ...; None = not ours
    out = mgr.handle_secured(src_eid, body, now_ms)  # MCTP type 0x06 body -> 0x06 body / None
    mgr.tick(now_ms)                  # heartbeat timeouts (call from the idle loop)
    mgr.end_conn(conn)                # GET_VERSION / connection reset: end its sessions
    mgr.reset()                       # wipe everything
    mgr.cap_flags(version)            # capability bits to advertise for sessions

`conn` is duck-typed (uspdm.responder.Responder provides it): version, flags
(our advertised capabilities), req_flags, asym ('p384'/'p256'), hashname,
meas_hashname, meas_spec, other_params (opaque data format), t.a (the VCA
transcript bytes), identity, meas, sel_dhe, sel_aead, sel_ks (selected
algorithm bits), eid; optional t.reset_l() and session_request(msg, session)
for GET_MEASUREMENTS / GET_DIGESTS / GET_CERTIFICATE inside a session.
VENDOR_DEFINED_REQUEST inside a session goes to `vendor_hook(msg, session)`.

Failure handling follows libspdm's default policy: a secured message for an
unknown session ID is dropped silently; one that fails to decode (wrong
sequence number = replay or reordering, bad Length, bad MAC/tag, counter
exhausted) is answered with ERROR DecryptError inside the session and the
session is ended; a FINISH/PSK_FINISH with a wrong verify HMAC likewise.
All keys and secrets are bytearrays overwritten when a session ends.
"""
from uspdm.compat import const
from uspdm import demand, keysched

# DSP0274 codes used here (private: compiled in, not in the module's dict)
_AEAD_AES_256_GCM = const(0x02)
_CAP_ENCRYPT = const(0x40)
_CAP_HANDSHAKE_IN_THE_CLEAR = const(0x8000)
_CAP_HBEAT = const(0x2000)
_CAP_KEY_EX = const(0x200)
_CAP_KEY_UPD = const(0x4000)
_CAP_MAC = const(0x80)
_CHUNK_GET = const(0x86)
_CHUNK_SEND = const(0x85)
_DHE_SECP384R1 = const(0x10)
_END_SESSION = const(0xEC)
_END_SESSION_ACK = const(0x6C)
_ERROR = const(0x7F)
_ERR_DECRYPT_ERROR = const(0x06)
_ERR_SESSION_REQUIRED = const(0x0B)
_ERR_UNEXPECTED_REQUEST = const(0x04)
_ERR_UNSPECIFIED = const(0x05)
_ERR_UNSUPPORTED_REQUEST = const(0x07)
_ERR_VERSION_MISMATCH = const(0x41)
_FINISH = const(0xE5)
_GET_CERTIFICATE = const(0x82)
_GET_DIGESTS = const(0x81)
_GET_MEASUREMENTS = const(0xE0)
_HEARTBEAT = const(0xE8)
_HEARTBEAT_ACK = const(0x68)
_KEY_EXCHANGE = const(0xE4)
_KEY_SCHEDULE_SPDM = const(0x01)
_KEY_UPDATE = const(0xE9)
_PSK_EXCHANGE = const(0xE6)
_PSK_FINISH = const(0xE7)
_RESPOND_IF_READY = const(0xFF)
_V11 = const(0x11)
_V12 = const(0x12)
_MAX_PAD = const(32)   # uspdm.secured.MAX_PAD

# What stays loaded while sessions live is this module (the secured-message path:
# decode, HEARTBEAT, END_SESSION, in-session requests handed to the responder, expiry)
# with uspdm.keysched, and the AEAD (uspdm.secured with uspdm.crypto.gcm: on the board
# loaded once the handshake's EC work is done, elsewhere at the first secured message).
# Loaded on demand and dropped when not needed:
# uspdm.sess_kex (KEY_EXCHANGE) or uspdm.sess_psk (PSK_EXCHANGE), with uspdm.sess_hs (what
# both share), until the handshake's answer is made; uspdm.sess_fin (FINISH, PSK_FINISH)
# until the handshake ends; uspdm.sess_more (KEY_UPDATE, vendor requests, retries with
# the other nonce byte order or the pre-KEY_UPDATE key, requests that are errors, chunked
# requests inside a session) for the request that needs it.

PSK_NONE = 0
PSK_NO_CONTEXT = 1     # PSK_EXCHANGE_RSP ends the handshake (no PSK_FINISH)
PSK_WITH_CONTEXT = 2   # responder context, PSK_FINISH required

ST_HANDSHAKE = 1
ST_ESTABLISHED = 2

# A half-open session (KEY_EXCHANGE/PSK_EXCHANGE answered, FINISH/PSK_FINISH not received)
# is ended after 2 x (CT + RDT) of its connection, at least this long (ms)
HANDSHAKE_MIN_MS = 2000


# ---------------------------------------------------------------- session
class Session:
    def __init__(self, mgr, conn, sid, psk):
        self.mgr = mgr
        self.conn = conn
        self.id = sid
        self.version = conn.version
        self.hashname = conn.hashname
        self.psk = psk
        self.psk_context = False
        self.in_clear = False
        self.mac_only = not (conn.flags & _CAP_ENCRYPT and conn.req_flags & _CAP_ENCRYPT)
        self.state = ST_HANDSHAKE
        self.ks = keysched.KeySchedule(conn.hashname, conn.version)
        self.th = None          # running transcript hash (A [|| Ct] || K || F)
        self.req = None         # keysched.Direction requester -> responder
        self.rsp = None
        self.req_backup = None  # previous requester key during KEY_UPDATE
        self.req_backup_secret = None
        self.last_ku = None     # last KEY_UPDATE request (UpdateKey/UpdateAllKeys pending verify)
        self.heartbeat = 0
        self.last_rx = 0
        self.policy = 0
        self.sm_version = 0
        self.l = None           # in-session L transcript (GET_MEASUREMENTS)
        self.l_mver = None
        self.eid = getattr(conn, "eid", None)
        self.endian = None      # None until seen: "le" (default) or "be" counter encoding in the nonce
        self.out = None         # this session's own chunk state: a large response (CHUNK_GET) ...
        self.inc = None         # ... and a large request being reassembled (CHUNK_SEND)

    def direction(self, key, iv):
        return keysched.Direction(key, iv, self.mgr.max_seq, self.endian == "be")

    def wipe(self):
        self.ks.wipe()
        for d in (self.req, self.rsp, self.req_backup):
            if d is not None:
                d.wipe()
        keysched.wipe(self.req_backup_secret)
        self.req = self.rsp = self.req_backup = self.req_backup_secret = None
        self.th = None
        self.l = None
        self.out = self.inc = None
        self.state = 0


class SessionManager:
    def __init__(self, drbg, storage=None, max_sessions=2, heartbeat=0, psk_mode=PSK_WITH_CONTEXT,
                 vendor_hook=None, max_seq=keysched.MAX_SEQ, in_clear=True, log=None, ticks_diff=None,
                 defer=None, replayable_psk=False):
        self.drbg = drbg
        self.storage = storage
        self.max_sessions = max_sessions
        self.heartbeat = heartbeat & 0xFF
        self.log = log
        if psk_mode == PSK_NO_CONTEXT and not replayable_psk:
            # Without a responder context the responder's only fresh input to the PSK key
            # schedule is its 16-bit half of the session ID: a recorded PSK_EXCHANGE replayed
            # a few hundred times opens a session with a recorded session's keys, and its
            # recorded secured messages replay too.  No persistent monotonic counter is mixed
            # into the key schedule here, so PSK is offered with a responder context instead
            # (replayable_psk=True, board setting allow_replayable_psk=1: lab/conformance only).
            self._log("session: psk_mode=1 (no responder context) refused: replayable keys; "
                      "offering PSK with responder context")
            psk_mode = PSK_WITH_CONTEXT
        self.psk_mode = psk_mode
        self.vendor_hook = vendor_hook
        self.max_seq = max_seq
        self.in_clear = in_clear
        self.ticks_diff = ticks_diff  # board.ticks_diff(a, b) = a - b for wrapping millisecond clocks
        self.defer = defer            # KEY_EXCHANGE via ResponseNotReady: None = as the responder's defer_signing
        self.sessions = {}
        self.now = 0      # the latest board time seen (ms): sweeps half-open sessions in _open
        self.latest = {}  # id(conn) -> session ID of the latest KEY_EXCHANGE (FINISH in the clear)
        self.stats = {"opened": 0, "ended": 0, "decrypt_errors": 0, "dropped": 0, "timeouts": 0}
        # a bytearray allocated once by the board (at boot) that responses are sealed into
        # (uspdm.secured.encode); handle_secured then returns a memoryview of it, valid
        # until the next secured response.  None: each response is a new bytearray.
        self.sec_buffer = None

    # ---------------------------------------------------------- config
    def cap_flags(self, version):
        if version < _V11:
            return 0
        f = _CAP_ENCRYPT | _CAP_MAC | _CAP_KEY_EX | _CAP_HBEAT | _CAP_KEY_UPD
        if self.in_clear:
            f |= _CAP_HANDSHAKE_IN_THE_CLEAR
        if self.psk_mode:
            f |= (self.psk_mode & 3) << 10
        return f

    def _log(self, msg):
        if self.log is not None:
            try:
                self.log(msg)
            except Exception:
                pass

    # --------------------------------------------------------- helpers
    def _err(self, conn, code, data=0):
        return bytes((conn.version, _ERROR, code, data))

    def _version_checks(self, conn, msg):
        if conn.version < _V11:
            return self._err(conn, _ERR_UNSUPPORTED_REQUEST, msg[1])
        if msg[0] != conn.version:
            return self._err(conn, _ERR_VERSION_MISMATCH)
        return None

    def _session_required(self, conn):
        if conn.version >= _V12:
            return self._err(conn, _ERR_SESSION_REQUIRED)
        return self._err(conn, _ERR_UNSPECIFIED)

    def _both(self, conn, flag):
        return bool(conn.flags & flag) and bool(conn.req_flags & flag)

    def _new_rsp_id(self):
        for _ in range(64):
            r = self.drbg.generate(2)
            v = r[0] | (r[1] << 8)
            if v in (0, 0xFFFF):
                continue
            clash = False
            for sid in self.sessions:
                if (sid >> 16) == v:
                    clash = True
            if not clash:
                return v
        return None

    def end(self, s, why=""):
        if self.sessions.get(s.id) is s:
            del self.sessions[s.id]
        p = getattr(s.conn, "pend", None)
        if p is not None and getattr(p, "sess", None) is s:
            drop = getattr(s.conn, "_drop_pend", None)
            if drop is not None:
                drop()   # a deferred in-session answer dies with its session (and frees its buffer)
            else:
                s.conn.pend = None
        for k in list(self.latest):
            if self.latest[k] == s.id:
                del self.latest[k]
        s.wipe()
        keysched.scrub_heap()  # copies of the session's secrets in garbage
        self.stats["ended"] += 1
        self._log("session %08x ended%s" % (s.id, (": " + why) if why else ""))

    def end_conn(self, conn):
        for s in list(self.sessions.values()):
            if s.conn is conn:
                self.end(s, "connection reset")

    def reset(self):
        for s in list(self.sessions.values()):
            self.end(s, "reset")
        self.latest = {}

    def count(self):
        return len(self.sessions)

    def tick(self, now):
        self.now = now
        for s in list(self.sessions.values()):
            if s.state == ST_HANDSHAKE and s.req is None:
                s.last_rx = now   # KEY_EXCHANGE still computed (deferred): its window starts after
            elif self._expired(s, now):
                self.stats["timeouts"] += 1
                self.end(s, "heartbeat timeout" if s.state == ST_ESTABLISHED else "handshake timeout")

    def handshake_ms(self, s):
        """How long a half-open session waits for FINISH/PSK_FINISH: twice CT + RDT of its
        connection (the responder's CT and RDT exponents), at least HANDSHAKE_MIN_MS."""
        cfg = getattr(s.conn, "cfg", None)
        ct = min(getattr(cfg, "ct_exponent", 20), 31)
        rdt = min(getattr(cfg, "rdt_exponent", 20), 31)
        t = 2 * (((1 << ct) + (1 << rdt)) // 1000)
        return t if t > HANDSHAKE_MIN_MS else HANDSHAKE_MIN_MS

    def _expired(self, s, now):
        d = self.ticks_diff(now, s.last_rx) if self.ticks_diff is not None else now - s.last_rx
        if s.state == ST_HANDSHAKE:
            return s.req is not None and d > self.handshake_ms(s)
        if s.state != ST_ESTABLISHED or not s.heartbeat:
            return False
        return d > 2000 * s.heartbeat

    def _encode(self, s, spdm):
        """Wrap an SPDM response in the session's current response key (with
        random padding unless MAC-only); on a counter overflow the session ends
        and nothing is sent."""
        from uspdm import secured   # (with the AEAD: uspdm.session_gate)

        pad = b""
        if not s.mac_only:
            pad = self.drbg.generate((self.drbg.generate(1)[0] % _MAX_PAD) + 1)
        try:
            return secured.encode(s.id, s.rsp, spdm, pad, s.mac_only, b"\x05", self.sec_buffer)
        except secured.SecuredError:
            self.end(s, "response sequence number exhausted")
            return None

    # ------------------------------------------------------ in the clear
    def handle_in_clear(self, conn, msg, now=0):
        """Session messages that arrive as plain SPDM (type 0x05).  Returns the
        response, or None for a request code that is not session business."""
        code = msg[1]
        if code not in (_KEY_EXCHANGE, _PSK_EXCHANGE, _FINISH, _PSK_FINISH, _HEARTBEAT, _KEY_UPDATE,
                        _END_SESSION):
            return None
        self.tick(now)   # half-open sessions past their window end before anything else
        if not conn.version or not conn.hashname:
            return bytes((conn.version or msg[0], _ERROR, _ERR_UNEXPECTED_REQUEST, 0))
        # KEY_EXCHANGE (uspdm.sess_kex), PSK_EXCHANGE (uspdm.sess_psk) and FINISH
        # (uspdm.sess_fin) are loaded on demand: needed once per session; the rest are
        # errors (uspdm.sess_more)
        if code == _KEY_EXCHANGE:
            return demand.need("sess_kex").key_exchange(self, conn, msg, now)
        if code == _PSK_EXCHANGE:
            return demand.need("sess_psk").psk_exchange(self, conn, msg, now)
        if code == _FINISH:
            return demand.need("sess_fin").finish_clear(self, conn, msg, now)
        return demand.need("sess_more").in_clear(self, conn, msg)

    def wrapped_request(self, s, msg):
        """A request reassembled from CHUNK_SEND inside session s (uspdm.sess_more)."""
        return demand.need("sess_more").wrapped_request(self, s, msg)

    # ------------------------------------------------------- secured
    def handle_secured(self, src, body, now=0):
        """A secured message (MCTP type 0x06 body, without the type byte).
        Returns the secured response body, or None to send nothing."""
        from uspdm import secured   # (with the AEAD: uspdm.session_gate)

        sid = secured.session_id_of(body)
        s = self.sessions.get(sid) if sid is not None else None
        if s is None or s.req is None or (s.eid is not None and src is not None and s.eid != src):
            # unknown session, another requester's, or KEY_EXCHANGE_RSP not computed yet
            self.stats["dropped"] += 1
            return None
        if self._expired(s, now):
            self.stats["timeouts"] += 1
            self.end(s, "heartbeat timeout")
            self.stats["dropped"] += 1
            return None
        try:
            app = secured.decode(s.id, s.req, body, s.mac_only)
            if s.endian is None and s.req.seq == 2:
                s.endian = "le"
        except secured.SecuredError as e:
            # the other nonce byte order (secured messages 1.0/1.1), the key before
            # KEY_UPDATE, or ERROR DecryptError and the session ends (uspdm.sess_more)
            return demand.need("sess_more").undecoded(self, s, body, e, now)
        return self._app(s, app, now)

    def _app(self, s, app, now):
        s.last_rx = now
        if len(app) < 5 or app[0] != 0x05:
            # not an SPDM message inside: libspdm treats it as an app message; we have none
            return self._encode(s, self._err(s.conn, _ERR_UNSUPPORTED_REQUEST, app[2] if len(app) > 2 else 0))
        return self._in_session(s, bytes(app[1:]), now)

    def _in_session(self, s, msg, now):
        conn = s.conn
        code = msg[1]
        if msg[0] != conn.version:
            return self._encode(s, self._err(conn, _ERR_VERSION_MISMATCH))
        if s.state == ST_HANDSHAKE:
            if code == _FINISH and not s.psk and not s.in_clear:
                return demand.need("sess_fin").finish_in(self, s, msg)
            if code == _PSK_FINISH and s.psk and s.psk_context:
                return demand.need("sess_fin").psk_finish(self, s, msg)
            return self._encode(s, self._err(conn, _ERR_UNEXPECTED_REQUEST))
        # established
        if code == _HEARTBEAT and len(msg) == 4 and self._both(conn, _CAP_HBEAT):
            # (only ever inside a session, so no transport padding: exact size, as libspdm)
            return self._encode(s, bytes((conn.version, _HEARTBEAT_ACK, 0, 0)))
        if code == _END_SESSION and len(msg) == 4:
            out = self._encode(s, bytes((conn.version, _END_SESSION_ACK, 0, 0)))
            if s.id in self.sessions:
                self.end(s, "END_SESSION")
            return out
        if code in (_GET_MEASUREMENTS, _GET_DIGESTS, _GET_CERTIFICATE, _CHUNK_GET, _CHUNK_SEND,
                    0xED, 0xEE, _RESPOND_IF_READY):  # + GET_CSR, SET_CERTIFICATE (deferred: RESPOND_IF_READY)
            fn = getattr(conn, "session_request", None)
            if fn is None:
                return self._encode(s, self._err(conn, _ERR_UNSUPPORTED_REQUEST, code))
            resp = fn(msg, s)
            if resp is None:
                return None
            return self._encode(s, resp)
        # KEY_UPDATE, VENDOR_DEFINED_REQUEST, and what is an error here
        return demand.need("sess_more").in_session(self, s, msg)


# ------------------------------------------------------------ glue
def attach(r, mgr):
    """Give an uspdm.responder.Responder sessions: the session capability bits,
    the session request codes routed to `mgr`, its sessions ended when the
    connection resets, and GET_MEASUREMENTS / GET_DIGESTS / GET_CERTIFICATE
    inside a session (Responder.session_request).  The caller sets `r.now`
    (ms) and `r.eid`."""
    r.sessions = mgr
    return r


SESSION_CONFIG = "uspdm/session.json"
DEFAULT_HEARTBEAT = 60  # seconds


def from_board(drbg, storage, cfg=None, log=None, vendor_hook=None, ticks_diff=None):
    """A SessionManager with the board's settings, from cfg (board.config())
    keys, overridden by a JSON file uspdm/session.json on the board's storage
    (lab/test tuning without a rebuild; uspdm.session_gate.settings reads them):
      max_sessions        concurrent sessions (default 2)
      heartbeat           HeartbeatPeriod in seconds (default 60: a session
                          silent for 2 x 60 s is torn down; 0 = none)
      psk_mode            0 no PSK, 1 PSK without responder context (no
                          PSK_FINISH: refused, see allow_replayable_psk), 2
                          with context (default)
      allow_replayable_psk  1: honour psk_mode=1 although a replayed
                          PSK_EXCHANGE can then repeat a session's keys
                          (lab/conformance runs only; default 0)
      handshake_in_the_clear   offer HANDSHAKE_IN_THE_CLEAR (default True)
      max_seq             sequence-number limit per key (default 2^64-1)
      defer_key_exchange  True: KEY_EXCHANGE answers ResponseNotReady and
                          computes key pair, ECDH and signature in slices
                          from the idle loop; default: as the responder's
                          defer_signing
      keep_session_code   (the board's SessionGate) keep this stack loaded
                          after the last session ends (default 0: dropped)
      warm_session_code   (the board's SessionGate) 1: while the SPDM context is
                          built, load AES (kept as a demand module), its tables
                          and the P-384 comb table, and import the rest of the
                          stack once (its names interned) so that the first
                          KEY_EXCHANGE needs no large contiguous block on a
                          heap that fragments early (default 0)
    """
    from uspdm.session_gate import settings

    return from_settings(drbg, storage, settings(storage, cfg, log), log, vendor_hook, ticks_diff)


def from_settings(drbg, storage, c, log=None, vendor_hook=None, ticks_diff=None):
    """A SessionManager from a settings dict (see from_board)."""
    return SessionManager(drbg, storage, max_sessions=int(c.get("max_sessions", 2)),
                          heartbeat=int(c.get("heartbeat", DEFAULT_HEARTBEAT)),
                          psk_mode=int(c.get("psk_mode", PSK_WITH_CONTEXT)),
                          in_clear=bool(c.get("handshake_in_the_clear", True)), vendor_hook=vendor_hook, log=log,
                          max_seq=int(c.get("max_seq", keysched.MAX_SEQ)), ticks_diff=ticks_diff,
                          defer=c.get("defer_key_exchange"),
                          replayable_psk=bool(c.get("allow_replayable_psk", False)))


def configure(config):
    """Select the session algorithms in a uspdm.responder.Config: DHE secp384r1,
    AEAD AES-256-GCM, the SPDM key schedule."""
    config.dhe_priority = [_DHE_SECP384R1]
    config.aead_priority = [_AEAD_AES_256_GCM]
    config.key_schedule_priority = [_KEY_SCHEDULE_SPDM]
    return config
