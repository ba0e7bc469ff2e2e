"""SPDM responder (DSP0274 1.0-1.3): authentication and attestation, sans-I/O.

    r = Responder(identity, measurements, drbg, config)  # one per requester (MCTP source EID)
    resp = r.handle(msg)   # msg: SPDM message bytes (MCTP body after the 0x05 type byte);
                           # returns the response bytes (never raises; None only where
                           # DSP0274 says no response is sent)
    r.pending()            # True while deferred work (a signature) is in progress
    r.work()               # one bounded slice of that work (call when idle); returns r.pending()
    r.reset()              # drop all connection state

`identity` is a uspdm.identity.Identity and `measurements` a
uspdm.measurements.Measurements (both may be shared by several responders);
`drbg` has generate(n) -> bytes (nonces, signature hedging).

Config (plain attributes, defaults below):
  versions            [0x10, 0x11, 0x12, 0x13]   SPDM versions offered in VERSION
  asym_priority       ['p384', 'p256']           ECDSA curves, most preferred first
  hash_priority       None  (the curve's own hash first, then the other)
  meas_hash           None  (measurement hash = negotiated base hash) or 'sha256'/'sha384'
  ct_exponent         20    CT = 2**ct_exponent us (the board's measured worst-case signing time)
  rdt_exponent, rdtm  20, 30   ResponseNotReady timing (RDT = 2**rdt_exponent us, RDTM multiplier)
  data_transfer_size  1024  largest single SPDM message we receive (>= 42)
  max_spdm_msg_size   4096  largest reassembled message (CHUNK_SEND buffer / our largest response)
  defer_signing       False True: CHALLENGE and signed GET_MEASUREMENTS answer ERROR
                            ResponseNotReady, the signature runs in work() slices and is
                            delivered on RESPOND_IF_READY
  cert_cap, chal_cap  True  (without cert_cap, CHAL_CAP is not advertised)
  meas_cap            'signed' | 'unsigned' | None  ('signed' without cert_cap: unsigned)
  meas_fresh          False
  chunk_cap           True  (advertised for SPDM 1.2+)
  supported_slots     0xFF  SPDM 1.3 DIGESTS SupportedSlotMask
  opaque              b''   OpaqueData of CHALLENGE_AUTH / MEASUREMENTS (<= 1024 bytes, else none)
  dhe_priority, aead_priority, req_asym_priority, key_schedule_priority
                      []    AlgStruct selections (none yet; bit values, preferred first)

Layout: this module is the resident core (state, dispatch, errors, GET_VERSION,
RESPOND_IF_READY, signing).  Every other request is handled by a
function `handler(r, msg) -> response` in a module loaded on demand
(`_ROUTE` below: uspdm.rsp_vca, rsp_cert, rsp_challenge, rsp_meas,
rsp_chunk_send for CHUNK_SEND and CHUNK_GET, uspdm.chunk for a response
cut into chunks; session requests go to `r.sessions`, see uspdm.session).
uspdm.demand loads them and drops them again when memory runs short.
Handler order: capability, phase, sizes and fields (nothing changed yet),
build, `_size_err`, transcript fork and commit on success, state last.

Extension points: `our_flags(version)`, `reset()`, `_dispatch(msg)` /
`_deliver(resp)`, `_unsupported(code)`, `sessions` (a uspdm.session
SessionManager or None), the negotiated state (`version`, `flags`, `req_flags`, `asym`, `hashname`,
`meas_hashname`, `meas_spec`, `other_params`, `identity`, `meas`, `t`
(uspdm.transcript.Transcript: `a`, `m1`, `l`), `l_mver`), and `last_exception`
(what the catch-all in handle() caught, for logs).

Transcripts: M1 = A||B||C and L1 = [A]||(GET_MEASUREMENTS||MEASUREMENTS)* are running
hashes (uspdm.transcript); they change only when a request succeeds.  Signatures
(SPDM 1.2+) cover Hash(prefix || Hash(transcript)) with the 100-byte signing
context prefix; SPDM 1.0/1.1 sign Hash(transcript).
"""
import gc

from uspdm.compat import const
from uspdm import demand
from uspdm.compat import p16, p32, u16
from uspdm.transcript import Transcript

# DSP0274 codes used here (private: compiled in, not in the module's dict)
_CAP_CERT = const(0x02)
_CAP_CHAL = const(0x04)
_CAP_CHUNK = const(0x20000)
_CAP_MEAS_FRESH = const(0x20)
_CAP_MEAS_NO_SIG = const(0x08)
_CAP_MEAS_SIG = const(0x10)
_CHALLENGE = const(0x83)
_CHUNK_GET = const(0x86)
_CHUNK_SEND = const(0x85)
_DELIVER_ENCAPSULATED_RESPONSE = const(0xEB)
_END_SESSION = const(0xEC)
_ERROR = const(0x7F)
_ERR_BUSY = const(0x03)
_ERR_INVALID_REQUEST = const(0x01)
_ERR_LARGE_RESPONSE = const(0x0F)
_ERR_REQUEST_RESYNCH = const(0x43)
_ERR_REQUEST_TOO_LARGE = const(0x0E)
_ERR_RESPONSE_NOT_READY = const(0x42)
_ERR_RESPONSE_TOO_LARGE = const(0x0D)
_ERR_UNEXPECTED_REQUEST = const(0x04)
_ERR_UNSPECIFIED = const(0x05)
_ERR_UNSUPPORTED_REQUEST = const(0x07)
_ERR_VERSION_MISMATCH = const(0x41)
_FINISH = const(0xE5)
_GET_CAPABILITIES = const(0xE1)
_GET_CERTIFICATE = const(0x82)
_GET_DIGESTS = const(0x81)
_GET_ENCAPSULATED_REQUEST = const(0xEA)
_GET_MEASUREMENTS = const(0xE0)
_GET_VERSION = const(0x84)
_HEARTBEAT = const(0xE8)
_KEY_EXCHANGE = const(0xE4)
_KEY_UPDATE = const(0xE9)
_MAX_OPAQUE_SIZE = const(0x400)
_NEGOTIATE_ALGORITHMS = const(0xE3)
_OPAQUE_FMT_NONE = const(0x00)
_PSK_EXCHANGE = const(0xE6)
_PSK_FINISH = const(0xE7)
_RESPOND_IF_READY = const(0xFF)
_V10 = const(0x10)
_V12 = const(0x12)
_V13 = const(0x13)
_VERSION = const(0x04)

# Capability flags defined per version (DSP0274: CAPABILITIES flags a responder may set)
CAP_MASK = {0x10: 0x0000003F, 0x11: 0x0001FFFF, 0x12: 0x003FFFFF, 0x13: 0x3FFFFFFF}
SIG_SIZE = {"p256": 64, "p384": 96}


def signing_prefix(version, context):
    """SPDM 1.2+ combined signing prefix (100 bytes): 'dmtf-spdm-v1.N.*' x4,
    zero padding, then the context string."""
    v = b"dmtf-spdm-v1." + bytes((0x30 + (version & 0x0F),)) + b".*"
    return v * 4 + bytes(36 - len(context)) + context


# connection states (r.state; the rsp_* modules declare the ones they use likewise)
_ST_NONE = const(0)
_ST_VERSION = const(1)
_ST_CAPS = const(2)
_ST_NEG = const(3)


class Config:
    def __init__(self, **kw):
        self.versions = [0x10, 0x11, 0x12, 0x13]
        self.asym_priority = ["p384", "p256"]
        self.hash_priority = None
        self.meas_hash = None
        self.ct_exponent = 20
        self.rdt_exponent = 20
        self.rdtm = 30
        self.data_transfer_size = 1024
        self.max_spdm_msg_size = 4096
        self.defer_signing = False
        self.cert_cap = True
        self.chal_cap = True
        self.meas_cap = "signed"
        self.meas_fresh = False
        self.chunk_cap = True
        self.supported_slots = 0xFF
        self.opaque = b""
        self.dhe_priority = []
        self.aead_priority = []
        self.req_asym_priority = []
        self.key_schedule_priority = []
        # enrolment over SPDM 1.2+ (GET_CSR, SET_CERTIFICATE: uspdm.enroll, on demand)
        self.csr_cap = False
        self.set_cert_cap = False
        self.enroll_in_clear = False   # lab only: also outside a secure session
        self.lock_slot0 = False        # SET_CERTIFICATE never touches slot 0
        self.cert_install_reset = False  # CERT_INSTALL_RESET_CAP: changes take effect after a reset
        self.multi_key = False         # SPDM 1.3 MULTI_KEY_CAP (negotiated): KeyPairIDs in DIGESTS
        self.max_requester_info = 512
        # a bytearray allocated once by the board (at boot, before the heap fragments)
        # that a response is built in (MEASUREMENTS, CERTIFICATE; a deferred signed one
        # when it is delivered): the response is then a memoryview of it, valid until
        # the next request (nothing in it is kept across requests)
        self.rsp_buffer = None
        for k in kw:
            if not hasattr(self, k):
                raise AttributeError(k)
            setattr(self, k, kw[k])


# (the request-code sets are tuples of consts where they are used: no module names)
# Request code -> (demand module uspdm.<leaf>, handler function(r, msg))
_ROUTE = {
    _GET_CAPABILITIES: ("rsp_vca", "get_capabilities"),
    _NEGOTIATE_ALGORITHMS: ("rsp_vca", "negotiate_algorithms"),
    _GET_DIGESTS: ("rsp_cert", "get_digests"),
    _GET_CERTIFICATE: ("rsp_cert", "get_certificate"),
    _CHALLENGE: ("rsp_challenge", "challenge"),
    _GET_MEASUREMENTS: ("rsp_meas", "get_measurements"),
    _CHUNK_SEND: ("rsp_chunk_send", "chunk_send"),
    _CHUNK_GET: ("rsp_chunk_send", "chunk_get"),
    0xED: ("enroll", "get_csr"),            # GET_CSR
    0xEE: ("enroll", "set_certificate"),    # SET_CERTIFICATE
}


class _Pending:
    def __init__(self, code, token, body, gen, room=False):
        self.code = code
        self.token = token
        self.body = body
        self.gen = gen
        self.sig = None
        self.sess = None   # the session a deferred in-session request (GET_CSR) belongs to
        self.tag = -1   # >= 0: answered directly when done, as the request's MCTP tag (firmware/workq.py)
        self.t0 = 0     # board ms when the request came
        self.room = room   # body ends with the signature's room (filled in place)
        self.snap = None   # the transcripts before the request (restored when it ends in Busy)
        self.req = None    # the request (bytes): the same one sent again gets ResponseNotReady


class Parts:
    """A response body kept as its parts (references, no copy) until its signature
    is appended: a deferred signed MEASUREMENTS holds no ~1 KB block across
    requests, and is assembled once, signature included, when it is delivered
    (Responder._with_sig).  len() is the body's length in bytes."""

    def __init__(self, parts):
        self.parts = parts
        n = 0
        for x in parts:
            n += len(x)
        self.n = n

    def __len__(self):
        return self.n


class Responder:
    def __init__(self, identity, measurements, drbg, config=None):
        self.identity = identity
        self.meas = measurements
        self.drbg = drbg
        self.cfg = config or Config()
        self._handle_ctr = 0
        self._token = 0
        self.last_exception = None  # what the catch-all in handle() caught last (for logs)
        self.sessions = None        # uspdm.session.SessionManager (attach())
        self.now = 0                # ms, set by the board before handle() (session timers)
        self.eid = None
        self.cur_session = None     # the session whose request is being handled (session_request)
        self.on_defer = None        # board hook for work deferred inside a session: f(r, pend, rsp) ->
                                    # rsp, or None when the answer is sent later (firmware/workq.py)
        self.sess_defer = False     # while in a session: the board's defer_signing (GET_CSR uses it)
        self.t = Transcript()
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self):
        if self.sessions is not None:
            self.sessions.end_conn(self)
        self.state = _ST_NONE
        self.version = 0
        self.t.reset()
        self.flags = 0
        self.req_flags = 0
        self.req_ct = 0
        self.req_dts = 0
        self.req_max = 0
        self.asym = None
        self.hashname = None
        self.meas_hashname = None
        self.meas_spec = 0
        self.other_params = 0
        self.out = None
        self.inc = None
        self._drop_pend()
        self.resync = 0
        self.l_mver = None
        self._ev = 0x10
        self.sel_dhe = self.sel_aead = self.sel_ks = 0   # selected in ALGORITHMS (1.1+)
        self.mk = False        # SPDM 1.3 MULTI_KEY_CONN_RSP negotiated (uspdm.rsp_vca)
        self.dig_d = None      # then: the last DIGESTS outside a session (D of the session TH)

    def pending(self):
        return self.pend is not None and self.pend.sig is None

    def _drop_pend(self):
        self.pend = None

    def work(self):
        p = self.pend
        if p is not None and p.sig is None:
            try:
                next(p.gen)
            except StopIteration as e:
                p.sig = e.value
                p.gen = None
            except MemoryError as e:
                self.last_exception = e
                # out of memory half-way: what it held is freed, and RESPOND_IF_READY
                # (or any other request) gets ERROR Busy: the request can be sent again,
                # over the transcripts as they were before it
                p.gen = None
                p.sig = False
                p.body = b""
                sn = p.snap
                if sn is not None:
                    s = p.sess
                    if s is not None:   # in a session: its own L (M1 is the connection's)
                        s.l, s.l_mver = sn[1], sn[2]
                    else:
                        t = self.t
                        t.m1, t.l, self.l_mver, t.auth = sn
                    p.snap = None
                demand.drop()
                gc.collect()
            except Exception:
                # signing failed: forget the request; RESPOND_IF_READY will
                # then get UnexpectedRequest and the requester restarts
                self._drop_pend()
        return self.pending()

    # -------------------------------------------------------------- plumbing
    def _error(self, code, data=0, ext=b"", ver=None):
        return bytes((ver or self._ev, _ERROR, code, data)) + ext

    def _unsupported(self, code):
        return self._error(_ERR_UNSUPPORTED_REQUEST, code)

    def handle(self, msg):
        try:
            return self._handle(bytes(msg))
        except MemoryError as e:
            self.last_exception = e
            return self.out_of_memory()
        except Exception as e:
            self.last_exception = e
            ev = self._ev
            self.reset()
            self.resync = ev  # until GET_VERSION: ERROR RequestResynch in the old version
            return self._error(_ERR_UNSPECIFIED, ver=ev)

    def out_of_memory(self):
        """The answer to a request that ran out of memory: what it held is
        freed (a chunked transfer in progress, demand-loaded code) and the
        requester gets ERROR Busy, so that a retry can succeed.  The
        connection state is kept: handlers change it only once a response
        is built (a half-done request changed nothing)."""
        self.out = None
        self.inc = None
        demand.drop()
        gc.collect()
        return self._error(_ERR_BUSY)

    def _handle(self, msg):
        # ERROR SPDMVersion: the negotiated version, 0x10 before GET_CAPABILITIES
        # succeeded (GET_CAPABILITIES' own field errors use its version)
        self._ev = self.version if self.state >= _ST_CAPS else _V10
        if len(msg) < 4:
            return self._error(_ERR_INVALID_REQUEST)
        code = msg[1]
        if code != _CHUNK_GET:
            self.out = None
        if code != _CHUNK_SEND:
            self.inc = None
        if self.resync and code != _GET_VERSION:
            return self._error(_ERR_REQUEST_RESYNCH, ver=self.resync)
        if self.version >= _V12 and len(msg) > self.cfg.data_transfer_size:
            # larger than our DataTransferSize: must have come with CHUNK_SEND
            return self._error(_ERR_REQUEST_TOO_LARGE)
        return self._deliver(self._dispatch(msg))

    def _dispatch(self, msg):
        ver = msg[0]
        code = msg[1]
        if code == _GET_VERSION:
            return self._get_version(msg)
        p = self.pend
        if p is not None and code != _RESPOND_IF_READY:
            if p.sig is not False:
                if p.req == msg and p.sess is self.cur_session:
                    # the request itself sent again while its work goes on (or waits to be
                    # collected): a requester whose RESPOND_IF_READY got ERROR Busy (a board
                    # short of memory for a moment) sends the request again, as libspdm's
                    # does; ResponseNotReady for the same work, not Busy (which, retried,
                    # ended the request while its signature was still being computed)
                    p.tag = -1   # (collected with RESPOND_IF_READY now: no direct answer)
                    return self._not_ready()
                return self._error(_ERR_BUSY)
            self._drop_pend()   # its work ran out of memory (answered Busy): a new request
        p = None
        # (requests that may arrive before ALGORITHMS, after VERSION / CAPABILITIES)
        if self.state < _ST_NEG and code not in (_GET_CAPABILITIES, _NEGOTIATE_ALGORITHMS, _CHUNK_GET,
                                                 _CHUNK_SEND):
            # order first: the DMTF validator expects UnexpectedRequest (not
            # VersionMismatch) for e.g. GET_MEASUREMENTS before ALGORITHMS
            return self._error(_ERR_UNEXPECTED_REQUEST)
        if self.state == _ST_NONE:
            return self._error(_ERR_UNEXPECTED_REQUEST)
        if self.state >= _ST_CAPS and ver != self.version:
            return self._error(_ERR_VERSION_MISMATCH)
        if code == _RESPOND_IF_READY:
            resp = self._respond_if_ready(msg)
        else:
            rt = _ROUTE.get(code)
            if rt is not None:
                # the transcripts as they were: a request that runs out of memory (now, or in
                # its deferred signature) answers ERROR Busy as if it had not come, so that
                # the one sent again is signed over the same transcript
                t = self.t
                snap = (t.m1, t.l, self.l_mver, t.auth)
                try:
                    resp = getattr(demand.need(rt[0]), rt[1])(self, msg)
                except MemoryError:
                    t.m1, t.l, self.l_mver, t.auth = snap
                    raise
                finally:
                    if rt[0] == "enroll":   # rarely used: dropped again right after the request
                        demand.drop(rt[0], collect=False)
                p = self.pend
                if p is not None and p.snap is None:
                    p.snap = snap
            elif self.sessions is not None and code in (_KEY_EXCHANGE, _FINISH, _PSK_EXCHANGE, _PSK_FINISH,
                                                        _HEARTBEAT, _KEY_UPDATE, _END_SESSION):
                # requests handled inside a session's stack (uspdm.session)
                resp = self.sessions.handle_in_clear(self, msg, self.now)
                if resp is None:
                    return self._unsupported(code)
            else:
                return self._unsupported(code)
        p = self.pend
        if p is not None and p.req is None and code != _RESPOND_IF_READY:
            p.req = msg   # (work this request started)
        p = None
        if resp is not None and resp[1] != _ERROR:
            # L1 is kept after these (every other successful request resets it)
            if code not in (_GET_MEASUREMENTS, _RESPOND_IF_READY, _CHUNK_GET, _CHUNK_SEND):
                self.t.reset_l()
            # requests that end an unfinished CHALLENGE sequence before authentication
            # (GET_MEASUREMENTS does it itself; libspdm_reset_message_buffer_via_request_code)
            if code in (_KEY_EXCHANGE, _FINISH, _PSK_EXCHANGE, _PSK_FINISH, _KEY_UPDATE, _HEARTBEAT,
                        _GET_ENCAPSULATED_REQUEST, _DELIVER_ENCAPSULATED_RESPONSE, _END_SESSION):
                # the requester skipped CHALLENGE completion: M1 restarts (DSP0274),
                # unless already authenticated (Transcript.reset_m1)
                self.t.reset_m1()
        return resp

    def _chunking(self):
        return (self.flags & _CAP_CHUNK) and (self.req_flags & _CAP_CHUNK)

    def _size_err(self, n):
        """ERROR for a response of n bytes that cannot be delivered, else None."""
        if self.version >= _V12 and self.req_max:
            if n > self.req_max or n > self.cfg.max_spdm_msg_size or (
                    n > self.req_dts and not self._chunking()):
                return self._error(_ERR_RESPONSE_TOO_LARGE, 0, p32(n))
        elif n > self.cfg.max_spdm_msg_size:
            return self._error(_ERR_UNSPECIFIED)
        return None

    def _deliver(self, resp):
        if (resp is not None and resp[1] != _ERROR and self.version >= _V12
                and self.req_dts and len(resp) > self.req_dts and self._chunking()):
            self._handle_ctr = (self._handle_ctr + 1) & 0xFF
            # served over several requests: not from the shared response buffer
            self.out = demand.need("chunk").Outgoing(self._handle_ctr, bytes(resp) if isinstance(resp, memoryview)
                                                     else resp)
            return self._error(_ERR_LARGE_RESPONSE, 0, bytes((self._handle_ctr,)))
        return resp

    # ------------------------------------------------------- VCA messages
    def _get_version(self, msg):
        if len(msg) != 4:
            return self._error(_ERR_INVALID_REQUEST, ver=_V10)
        if msg[0] != _V10:
            return self._error(_ERR_VERSION_MISMATCH, ver=_V10)
        self.reset()
        vs = sorted(set(v for v in self.cfg.versions if v in CAP_MASK))
        resp = bytes((_V10, _VERSION, 0, 0, 0, len(vs))) + b"".join(p16(v << 8) for v in vs)
        self.t.add_a(msg[:4], resp)
        self.state = _ST_VERSION
        return resp

    def our_flags(self, v):
        c = self.cfg
        f = 0
        # CHAL_CAP and signed MEAS_CAP need CERT_CAP (no PUB_KEY_ID_CAP here): DSP0274
        # flag rules, asserted by the DMTF validator (2.x.13) and libspdm's requester
        if c.cert_cap:
            f |= _CAP_CERT
            if c.chal_cap:
                f |= _CAP_CHAL
        if c.meas_cap == "signed" and c.cert_cap:
            f |= _CAP_MEAS_SIG
        elif c.meas_cap in ("signed", "unsigned"):
            f |= _CAP_MEAS_NO_SIG
        if c.meas_fresh and c.meas_cap:
            f |= _CAP_MEAS_FRESH
        if c.chunk_cap and v >= _V12:
            f |= _CAP_CHUNK
        if c.cert_cap and v >= _V12:
            if c.set_cert_cap:
                f |= 0x00080000  # SET_CERT_CAP
            if c.csr_cap:
                f |= 0x00100000  # CSR_CAP
            if c.cert_install_reset and (c.set_cert_cap or c.csr_cap):
                f |= 0x00200000  # CERT_INSTALL_RESET_CAP
            if c.multi_key and v >= _V13:
                f |= 0x08000000  # MULTI_KEY_CAP = 10b: multi-key connection when the requester asks
        f &= CAP_MASK[v]
        if self.sessions is not None:
            f |= self.sessions.cap_flags(v) & CAP_MASK.get(v, 0)
        return f

    def _local(self):
        return self.our_flags(_V13)

    def _slot_mask(self):
        return self.identity.provisioned_mask(self.asym) & self.cfg.supported_slots

    # ------------------------------------------------------------- signing
    def _digest_to_sign(self, context, tdigest):
        if self.version >= _V12:
            from uspdm.crypto import sha2

            return sha2.new(self.hashname, signing_prefix(self.version, context) + tdigest).digest()
        return tdigest

    def _signed(self, code, body, context, tdigest, slot=0, room=False):
        """Return body||signature (with slot `slot`'s key), or ERROR
        ResponseNotReady with the signature deferred.  room: body is a bytearray
        whose last signature-size bytes are the signature's place, filled in
        place (no copy of the response); body may be a Parts (assembled with
        the signature when delivered)."""
        from uspdm.crypto import ec

        curve = ec.P384 if self.asym == "p384" else ec.P256
        d = self.identity.slot_key(slot, self.asym)
        if d is None:
            return self._error(_ERR_UNSPECIFIED)
        m = self._digest_to_sign(context, tdigest)
        extra = self.drbg.generate(32)
        # inside a session (signed GET_MEASUREMENTS) as outside: the board's defer_signing
        if self.cfg.defer_signing or self.sess_defer:
            self._token = (self._token + 1) & 0xFF
            self.pend = _Pending(code, self._token, body, ec.sign_iter(curve, d, m, extra), room)
            self.pend.sess = self.cur_session   # in a session: collected inside it only
            return self._not_ready()
        return self._with_sig(body, ec.sign(curve, d, m, extra), room)

    def _not_ready(self):
        p = self.pend
        c = self.cfg
        return self._error(_ERR_RESPONSE_NOT_READY, 0,
                           bytes((c.rdt_exponent & 0xFF, p.code, p.token, c.rdtm & 0xFF)))

    def _respond_if_ready(self, msg):
        p = self.pend
        if p is None:
            return self._error(_ERR_UNEXPECTED_REQUEST)
        if p.sess is not self.cur_session:
            # a deferred in-session answer is collected inside that session only (and
            # a plain one outside any session): nobody else gets to read it
            return self._error(_ERR_UNEXPECTED_REQUEST)
        if len(msg) != 4 or msg[2] != p.code or msg[3] != p.token:
            # RESPOND_IF_READY is a bare header (libspdm: any other size is InvalidRequest)
            return self._error(_ERR_INVALID_REQUEST)
        if p.sig is None:
            p.tag = -1   # a requester that polls: no direct answer any more (firmware/workq.py)
            return self._not_ready()
        self._drop_pend()
        if p.sig is False:
            return self._error(_ERR_BUSY)   # its work ran out of memory: send the request again
        if p.code == _CHALLENGE:
            self.t.auth = True
        return self._with_sig(p.body, p.sig, p.room)

    def _with_sig(self, body, sig, room):
        """body || sig.  body a Parts: assembled once, in the board's response buffer
        (free between requests: what is built in it is sent before the next one) or
        in one block of its own."""
        if isinstance(body, Parts):
            n = body.n + len(sig)
            rb = self.cfg.rsp_buffer
            out = memoryview(rb)[0:n] if rb is not None and n <= len(rb) else bytearray(n)
            o = 0
            for x in body.parts:
                out[o:o + len(x)] = x
                o += len(x)
            out[o:n] = sig
            return out
        if room:
            body[len(body) - len(sig):] = sig
            return body
        return body + sig

    def _opaque(self):
        if self.version >= _V12 and self.other_params == _OPAQUE_FMT_NONE:
            return b""
        o = self.cfg.opaque or b""
        # DSP0274: OpaqueDataLength <= 1024; a longer configured blob is not sent
        return o if len(o) <= _MAX_OPAQUE_SIZE else b""

    # ------------------------------------------------------------- sessions
    def session_request(self, msg, s):
        """GET_MEASUREMENTS / GET_DIGESTS / GET_CERTIFICATE / CHUNK_* /
        GET_CSR / SET_CERTIFICATE / RESPOND_IF_READY inside session s
        (uspdm.session): the session's own L transcript, M1 left as it was,
        a signed GET_MEASUREMENTS and GET_CSR's key and signature work deferred
        as the board defers signing (sess_defer: ResponseNotReady, signed in
        slices, collected by a RESPOND_IF_READY inside s)."""
        t = self.t
        saved = (t.l, t.m1, self.l_mver, self.cfg.defer_signing, self.out, self.inc, self.cur_session)
        t.l, self.l_mver = s.l, s.l_mver
        self.cfg.defer_signing = False
        # the session's own chunk state: a plain CHUNK_GET/CHUNK_SEND never sees it, nor the
        # reverse; as on the plain path, any other request ends a transfer in progress
        code = msg[1]
        self.out = s.out if code == _CHUNK_GET else None
        self.inc = s.inc if code == _CHUNK_SEND else None
        self.cur_session = s
        self.sess_defer = saved[3]
        before = self.pend
        try:
            resp = self._deliver(self._dispatch(msg))
            p = self.pend
            if p is not None and p is not before and p.sig is None and self.on_defer is not None:
                # the board may answer it directly when done (nothing is encrypted now,
                # so the session's response sequence numbers stay in step)
                resp = self.on_defer(self, p, resp)
            p = before = None
            s.l, s.l_mver = t.l, self.l_mver
            s.out, s.inc = self.out, self.inc
        finally:
            t.l, t.m1, self.l_mver, self.cfg.defer_signing, self.out, self.inc, self.cur_session = saved
            self.sess_defer = False
        return resp

    def defer_work(self, code, gen):
        """Run generator gen from work() and answer ResponseNotReady now
        (KEY_EXCHANGE's EC work); RESPOND_IF_READY collects its result."""
        self._token = (self._token + 1) & 0xFF
        self.pend = _Pending(code, self._token, b"", gen)
        self.pend.sess = self.cur_session   # in a session (GET_CSR): collected inside it
        return self._not_ready()
