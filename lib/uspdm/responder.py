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

Extension points (uspdm.session.attach uses them; keep them stable): `_handlers`
(request code -> method(msg) -> response), `our_flags(version)`, `reset()`,
`_negotiate_algorithms`, `_dispatch(msg)` / `_deliver(resp)`, `_unsupported(code)`,
the negotiated state (`version`, `flags`, `req_flags`, `asym`, `hashname`,
`meas_hashname`, `meas_spec`, `other_params`, `identity`, `meas`, `t`
(uspdm.transcript.Transcript: `a`, `m1`, `l`), `l_mver`), and `last_exception`
(what the catch-all in handle() caught, for logs).

Transcripts: M1 = A||B||C and L1 = [A]||(GET_MEASUREMENTS||MEASUREMENTS)* are running
hashes (uspdm.transcript); they change only when a request succeeds.  Signatures
(SPDM 1.2+) cover Hash(prefix || Hash(transcript)) with the 100-byte signing
context prefix; SPDM 1.0/1.1 sign Hash(transcript).
"""
from uspdm import consts as C
from uspdm.compat import p16, p32, u16, u32, p24
from uspdm.chunk import Incoming, Outgoing, parse_chunk_send
from uspdm.transcript import Transcript

ST_NONE = 0
ST_VERSION = 1
ST_CAPS = 2
ST_NEG = 3


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
        for k in kw:
            if not hasattr(self, k):
                raise AttributeError(k)
            setattr(self, k, kw[k])


def _req_flags_ok(f, v):
    """Requester capability flag consistency (DSP0274 GET_CAPABILITIES rules)."""
    cert = (f >> 1) & 1
    chal = (f >> 2) & 1
    enc = (f >> 6) & 1
    mac = (f >> 7) & 1
    mut = (f >> 8) & 1
    kex = (f >> 9) & 1
    psk = (f >> 10) & 3
    encap = (f >> 12) & 1
    hb = (f >> 13) & 1
    ku = (f >> 14) & 1
    hitc = (f >> 15) & 1
    pub = (f >> 16) & 1
    ep = (f >> 22) & 3
    ev = (f >> 25) & 1
    mk = (f >> 26) & 3
    if psk >= 2:
        return False
    if kex or psk:
        if not mac and not enc:
            return False
    else:
        if mac or enc or hitc or hb or ku:
            return False
        if v >= C.V13 and ev:
            return False
    if not kex and psk == 1 and hitc:
        return False
    if cert or pub:
        if cert and pub:
            return False
        if not chal and not kex:
            return False
    else:
        if chal or mut:
            return False
        if v >= C.V13 and ep == 2:
            return False
    if mut and not kex and not chal:
        return False
    if v == C.V11 and mut and not encap:
        return False
    if v >= C.V13:
        if ep == 3 or mk == 3:
            return False
        if mk and pub:
            return False
    return True


# Requests that may arrive before ALGORITHMS (after VERSION / CAPABILITIES)
_BEFORE_NEG = (C.GET_CAPABILITIES, C.NEGOTIATE_ALGORITHMS, C.CHUNK_GET, C.CHUNK_SEND)
# Requests after which L1 is kept (every other successful request resets it)
_KEEP_L = (C.GET_MEASUREMENTS, C.RESPOND_IF_READY, C.CHUNK_GET, C.CHUNK_SEND)
# Requests that end an unfinished CHALLENGE sequence before authentication
# (GET_MEASUREMENTS does it itself; libspdm_reset_message_buffer_via_request_code)
_RESET_M1 = (C.KEY_EXCHANGE, C.FINISH, C.PSK_EXCHANGE, C.PSK_FINISH, C.KEY_UPDATE, C.HEARTBEAT,
             C.GET_ENCAPSULATED_REQUEST, C.DELIVER_ENCAPSULATED_RESPONSE, C.END_SESSION)


def _select(priority, offered):
    for bit in priority:
        if offered & bit:
            return bit
    return 0


class _Pending:
    def __init__(self, code, token, body, gen):
        self.code = code
        self.token = token
        self.body = body
        self.gen = gen
        self.sig = None


class Responder:
    def __init__(self, identity, measurements, drbg, config=None):
        self.identity = identity
        self.meas = measurements
        self.drbg = drbg
        self.cfg = config or Config()
        self._handle_ctr = 0
        self._token = 0
        self.last_exception = None  # what the catch-all in handle() caught last (for logs)
        self._handlers = {
            C.GET_CAPABILITIES: self._get_capabilities,
            C.NEGOTIATE_ALGORITHMS: self._negotiate_algorithms,
            C.GET_DIGESTS: self._get_digests,
            C.GET_CERTIFICATE: self._get_certificate,
            C.CHALLENGE: self._challenge,
            C.GET_MEASUREMENTS: self._get_measurements,
            C.RESPOND_IF_READY: self._respond_if_ready,
            C.CHUNK_GET: self._chunk_get,
            C.CHUNK_SEND: self._chunk_send,
        }
        self.t = Transcript()
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self):
        self.state = ST_NONE
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
        self.pend = None
        self.resync = 0
        self.l_mver = None
        self._ev = 0x10

    def pending(self):
        return self.pend is not None and self.pend.sig is None

    def work(self):
        p = self.pend
        if p is not None and p.sig is None:
            try:
                next(p.gen)
            except StopIteration as e:
                p.sig = e.value
                p.gen = None
            except Exception:
                # signing failed: forget the request; RESPOND_IF_READY will
                # then get UnexpectedRequest and the requester restarts
                self.pend = None
        return self.pending()

    # -------------------------------------------------------------- plumbing
    def _error(self, code, data=0, ext=b"", ver=None):
        return bytes((ver or self._ev, C.ERROR, code, data)) + ext

    def _unsupported(self, code):
        return self._error(C.ERR_UNSUPPORTED_REQUEST, code)

    def handle(self, msg):
        try:
            return self._handle(bytes(msg))
        except Exception as e:
            self.last_exception = e
            ev = self._ev
            self.reset()
            self.resync = ev  # until GET_VERSION: ERROR RequestResynch in the old version
            return self._error(C.ERR_UNSPECIFIED, ver=ev)

    def _handle(self, msg):
        # ERROR SPDMVersion: the negotiated version, 0x10 before GET_CAPABILITIES
        # succeeded (GET_CAPABILITIES' own field errors use its version)
        self._ev = self.version if self.state >= ST_CAPS else C.V10
        if len(msg) < 4:
            return self._error(C.ERR_INVALID_REQUEST)
        code = msg[1]
        if code != C.CHUNK_GET:
            self.out = None
        if code != C.CHUNK_SEND:
            self.inc = None
        if self.resync and code != C.GET_VERSION:
            return self._error(C.ERR_REQUEST_RESYNCH, ver=self.resync)
        if self.version >= C.V12 and len(msg) > self.cfg.data_transfer_size:
            # larger than our DataTransferSize: must have come with CHUNK_SEND
            return self._error(C.ERR_REQUEST_TOO_LARGE)
        return self._deliver(self._dispatch(msg))

    def _dispatch(self, msg):
        ver = msg[0]
        code = msg[1]
        if code == C.GET_VERSION:
            return self._get_version(msg)
        if self.pend is not None and code != C.RESPOND_IF_READY:
            return self._error(C.ERR_BUSY)
        if self.state < ST_NEG and code not in _BEFORE_NEG:
            # order first: the DMTF validator expects UnexpectedRequest (not
            # VersionMismatch) for e.g. GET_MEASUREMENTS before ALGORITHMS
            return self._error(C.ERR_UNEXPECTED_REQUEST)
        if self.state == ST_NONE:
            return self._error(C.ERR_UNEXPECTED_REQUEST)
        if self.state >= ST_CAPS and ver != self.version:
            return self._error(C.ERR_VERSION_MISMATCH)
        h = self._handlers.get(code)
        if h is None:
            return self._unsupported(code)
        resp = h(msg)
        if resp is not None and resp[1] != C.ERROR:
            if code not in _KEEP_L:
                self.t.reset_l()
            if code in _RESET_M1:
                # the requester skipped CHALLENGE completion: M1 restarts (DSP0274),
                # unless already authenticated (Transcript.reset_m1)
                self.t.reset_m1()
        return resp

    def _chunking(self):
        return (self.flags & C.CAP_CHUNK) and (self.req_flags & C.CAP_CHUNK)

    def _size_err(self, n):
        """ERROR for a response of n bytes that cannot be delivered, else None."""
        if self.version >= C.V12 and self.req_max:
            if n > self.req_max or n > self.cfg.max_spdm_msg_size or (
                    n > self.req_dts and not self._chunking()):
                return self._error(C.ERR_RESPONSE_TOO_LARGE, 0, p32(n))
        elif n > self.cfg.max_spdm_msg_size:
            return self._error(C.ERR_UNSPECIFIED)
        return None

    def _deliver(self, resp):
        if (resp is not None and resp[1] != C.ERROR and self.version >= C.V12
                and self.req_dts and len(resp) > self.req_dts and self._chunking()):
            self._handle_ctr = (self._handle_ctr + 1) & 0xFF
            self.out = Outgoing(self._handle_ctr, resp)
            return self._error(C.ERR_LARGE_RESPONSE, 0, bytes((self._handle_ctr,)))
        return resp

    # ------------------------------------------------------- VCA messages
    def _get_version(self, msg):
        if len(msg) != 4:
            return self._error(C.ERR_INVALID_REQUEST, ver=C.V10)
        if msg[0] != C.V10:
            return self._error(C.ERR_VERSION_MISMATCH, ver=C.V10)
        self.reset()
        vs = sorted(set(v for v in self.cfg.versions if v in C.CAP_MASK))
        resp = bytes((C.V10, C.VERSION, 0, 0, 0, len(vs))) + b"".join(p16(v << 8) for v in vs)
        self.t.add_a(msg[:4], resp)
        self.state = ST_VERSION
        return resp

    def our_flags(self, v):
        c = self.cfg
        f = 0
        # CHAL_CAP and signed MEAS_CAP need CERT_CAP (no PUB_KEY_ID_CAP here): DSP0274
        # flag rules, asserted by the DMTF validator (2.x.13) and libspdm's requester
        if c.cert_cap:
            f |= C.CAP_CERT
            if c.chal_cap:
                f |= C.CAP_CHAL
        if c.meas_cap == "signed" and c.cert_cap:
            f |= C.CAP_MEAS_SIG
        elif c.meas_cap in ("signed", "unsigned"):
            f |= C.CAP_MEAS_NO_SIG
        if c.meas_fresh and c.meas_cap:
            f |= C.CAP_MEAS_FRESH
        if c.chunk_cap and v >= C.V12:
            f |= C.CAP_CHUNK
        return f & C.CAP_MASK[v]

    def _local(self):
        return self.our_flags(C.V13)

    def _get_capabilities(self, msg):
        if self.state != ST_VERSION:
            return self._error(C.ERR_UNEXPECTED_REQUEST)
        v = msg[0]
        if v not in self.cfg.versions or v not in C.CAP_MASK:
            return self._error(C.ERR_VERSION_MISMATCH)
        self._ev = v
        need = 4 if v == C.V10 else (12 if v == C.V11 else 20)
        if len(msg) < need:
            return self._error(C.ERR_INVALID_REQUEST)
        flags = u32(msg, 8) if v >= C.V11 else 0
        ct = msg[5] if v >= C.V11 else 0
        dts = mx = 0
        if v >= C.V11 and not _req_flags_ok(flags, v):
            return self._error(C.ERR_INVALID_REQUEST)
        if v >= C.V12:
            dts = u32(msg, 12)
            mx = u32(msg, 16)
            if dts < C.MIN_DATA_TRANSFER_SIZE_12 or dts > mx:
                return self._error(C.ERR_INVALID_REQUEST)
            if not (flags & C.CAP_CHUNK) and dts != mx:
                return self._error(C.ERR_INVALID_REQUEST)
        if ct > C.MAX_CT_EXPONENT:
            return self._error(C.ERR_INVALID_REQUEST)
        want_algs = v >= C.V13 and (msg[2] & 1)
        if want_algs and not (flags & C.CAP_CHUNK):
            return self._error(C.ERR_INVALID_REQUEST)
        our = self.our_flags(v)
        c = self.cfg
        # 1.3: Param1 bit 0 tells that the SupportedAlgorithms block follows (libspdm's
        # requester rejects a CAPABILITIES carrying the block without it)
        with_algs = want_algs and (our & C.CAP_CHUNK)
        resp = bytes((v, C.CAPABILITIES, 1 if with_algs else 0, 0, 0, c.ct_exponent & 0xFF, 0, 0)) + p32(our)
        if v >= C.V12:
            # without CHUNK_CAP both sizes must be equal (DSP0274)
            mx_out = c.max_spdm_msg_size if our & C.CAP_CHUNK else c.data_transfer_size
            resp += p32(c.data_transfer_size) + p32(mx_out)
        if with_algs:
            resp += self._supported_algorithms()
        # the negotiated parameters apply to the size check of this response
        self.version, self.req_flags, self.req_dts, self.req_max = v, flags, dts, mx
        self.flags = our
        err = self._size_err(len(resp))
        if err is not None:
            self.version = self.req_flags = self.req_dts = self.req_max = self.flags = 0
            self._ev = v
            return err
        self.req_ct = ct
        self.t.add_a(msg[:need], resp)
        self.state = ST_CAPS
        self._ev = v
        return resp

    def _asym_supported(self):
        m = 0
        for a in self.cfg.asym_priority:
            m |= C.ASYM_BITS.get(a, 0)
        return m

    def _tables(self):
        c = self.cfg
        return ((C.ALG_TYPE_DHE, c.dhe_priority), (C.ALG_TYPE_AEAD, c.aead_priority),
                (C.ALG_TYPE_REQ_BASE_ASYM, c.req_asym_priority),
                (C.ALG_TYPE_KEY_SCHEDULE, c.key_schedule_priority))

    def _supported_algorithms(self):
        """SPDM 1.3 SupportedAlgorithms block appended to CAPABILITIES."""
        tabs = b""
        n = 0
        for t, prio in self._tables():
            bits = 0
            for b in prio:
                bits |= b
            if bits:
                tabs += bytes((t, 0x20)) + p16(bits)
                n += 1
        hb = 0
        for h in ("sha256", "sha384"):
            hb |= C.HASH_BITS[h]
        blk = bytes((n, 0)) + p16(30 + len(tabs))
        blk += bytes((C.MEAS_SPEC_DMTF if self.cfg.meas_cap else 0, C.OPAQUE_FMT_0 | C.OPAQUE_FMT_1))
        blk += p32(self._asym_supported()) + p32(hb) + bytes(12) + bytes((0, 0, 0, 0))
        return blk + tabs

    def _negotiate_algorithms(self, msg):
        if self.state != ST_CAPS:
            return self._error(C.ERR_UNEXPECTED_REQUEST)
        v = self.version
        n = len(msg)
        if n < 32:
            return self._error(C.ERR_INVALID_REQUEST)
        length = u16(msg, 4)
        ext_a = msg[28]
        ext_h = msg[29]
        ntab = msg[2] if v >= C.V11 else 0
        if n < 32 + 4 * (ext_a + ext_h) + 4 * ntab:
            return self._error(C.ERR_INVALID_REQUEST)
        off = 32 + 4 * (ext_a + ext_h)
        ext_total = ext_a + ext_h
        tables = []
        prev = 0
        for i in range(ntab):
            if n - off < 4:
                return self._error(C.ERR_INVALID_REQUEST)
            t = msg[off]
            cnt = msg[off + 1]
            fixed = cnt >> 4
            ext = cnt & 0x0F
            if t < C.ALG_TYPE_DHE or t > C.ALG_TYPE_KEY_SCHEDULE or (i and t <= prev):
                return self._error(C.ERR_INVALID_REQUEST)
            if fixed != 2 or n - off - 4 < 4 * ext:
                return self._error(C.ERR_INVALID_REQUEST)
            sup = u16(msg, off + 2)
            if sup == 0:
                return self._error(C.ERR_INVALID_REQUEST)
            tables.append((t, sup))
            prev = t
            ext_total += ext
            off += 4 + 4 * ext
        if v >= C.V11:
            if ext_total > C.NEG_ALG_MAX_EXT_11 or length > C.NEG_ALG_MAX_LENGTH_11:
                return self._error(C.ERR_INVALID_REQUEST)
        elif ext_total > C.NEG_ALG_MAX_EXT_10 or length > C.NEG_ALG_MAX_LENGTH_10:
            return self._error(C.ERR_INVALID_REQUEST)
        opaque_sel = 0
        if v >= C.V12:
            # OtherParamsSupport lists every format the requester reads: select
            # one, general format (1) first, as libspdm does; none known -> none
            offered = msg[7]
            if offered & C.OPAQUE_FMT_1:
                opaque_sel = C.OPAQUE_FMT_1
            elif offered & C.OPAQUE_FMT_0:
                opaque_sel = C.OPAQUE_FMT_0
        if off != length:
            return self._error(C.ERR_INVALID_REQUEST)
        req_spec = msg[6]
        req_asym = u32(msg, 8)
        req_hash = u32(msg, 12)
        # base asymmetric algorithm: configured priority, a provisioned curve first
        cands = [a for a in self.cfg.asym_priority if req_asym & C.ASYM_BITS.get(a, 0)]
        asym = None
        for a in cands:
            if self.identity.provisioned_mask(a):
                asym = a
                break
        if asym is None and cands:
            asym = cands[0]
        if asym is None:
            return self._error(C.ERR_INVALID_REQUEST)
        hp = self.cfg.hash_priority or [C.CURVE_HASH[asym]] + [
            h for h in ("sha384", "sha256") if h != C.CURVE_HASH[asym]]
        hashname = None
        for h in hp:
            if req_hash & C.HASH_BITS.get(h, 0):
                hashname = h
                break
        if hashname is None:
            return self._error(C.ERR_INVALID_REQUEST)
        meas_spec = 0
        meas_hash = None
        if self.flags & C.CAP_MEAS_MASK and req_spec & C.MEAS_SPEC_DMTF:
            meas_spec = C.MEAS_SPEC_DMTF
            meas_hash = self.cfg.meas_hash or hashname
        nresp = len(tables)
        resp = bytearray(bytes((v, C.ALGORITHMS, nresp if v >= C.V11 else 0, 0)))
        resp += p16(36 + 4 * nresp if v >= C.V11 else 36)
        other_sel = opaque_sel if v >= C.V12 else 0
        if v >= C.V13 and (self.req_flags & C.CAP_MULTI_KEY_MASK) == 0x04000000:
            other_sel |= C.MULTI_KEY_CONN  # RequesterMultiKeyConnSel: requester is MULTI_KEY_CAP_ONLY
        resp += bytes((meas_spec, other_sel))
        resp += p32(C.MEAS_HASH_BITS[meas_hash] if meas_hash else 0)
        resp += p32(C.ASYM_BITS[asym]) + p32(C.HASH_BITS[hashname])
        resp += bytes(11) + bytes((0, 0, 0, 0, 0))  # Reserved[11], MELSpecSel, ExtAsym/ExtHash counts, Reserved u16
        prio = dict(self._tables())
        if v >= C.V11:
            sel = {}
            for t, sup in tables:
                sel[t] = _select(prio.get(t, ()), sup)
                resp += bytes((t, 0x20)) + p16(sel[t])
            # what libspdm's responder refuses: a session capability both
            # sides have, without the algorithm it needs
            both = self.flags & self.req_flags
            kex = both & C.CAP_KEY_EX
            psk = (self.flags & C.CAP_PSK_MASK) and (self.req_flags & C.CAP_PSK_MASK)
            if kex and not sel.get(C.ALG_TYPE_DHE):
                return self._error(C.ERR_INVALID_REQUEST)
            if both & (C.CAP_ENCRYPT | C.CAP_MAC) and not sel.get(C.ALG_TYPE_AEAD):
                return self._error(C.ERR_INVALID_REQUEST)
            if kex or psk:
                if sel.get(C.ALG_TYPE_KEY_SCHEDULE) != C.KEY_SCHEDULE_SPDM:
                    return self._error(C.ERR_INVALID_REQUEST)
                if v >= C.V12 and opaque_sel != C.OPAQUE_FMT_1:
                    return self._error(C.ERR_INVALID_REQUEST)
        resp = bytes(resp)
        err = self._size_err(len(resp))
        if err is not None:
            return err
        self.t.add_a(msg[:length], resp)
        self.asym = asym
        self.hashname = hashname
        self.meas_hashname = meas_hash
        self.meas_spec = meas_spec
        self.other_params = opaque_sel
        self.t.set_hash(hashname)
        self.state = ST_NEG
        return resp

    # ------------------------------------------------------ certificates
    def _slot_mask(self):
        return self.identity.provisioned_mask(self.asym) & self.cfg.supported_slots

    def _get_digests(self, msg):
        if not (self._local() & C.CAP_CERT):
            return self._unsupported(C.GET_DIGESTS)
        if self.state < ST_NEG:
            return self._error(C.ERR_UNEXPECTED_REQUEST)
        mask = self._slot_mask()
        v = self.version
        if not mask and v < C.V13:
            # nothing provisioned for this algorithm (1.3 can say so with an empty mask)
            return self._unsupported(C.GET_DIGESTS)
        parts = [bytes((v, C.DIGESTS, self.cfg.supported_slots if v >= C.V13 else 0, mask))]
        for s in range(8):
            if mask & (1 << s):
                cb = self.identity.chain_buffer(s, self.asym, self.hashname)
                if cb is None:
                    return self._error(C.ERR_UNSPECIFIED)
                parts.append(cb[1])
        resp = b"".join(parts)
        err = self._size_err(len(resp))
        if err is not None:
            return err
        h = self.t.fresh_m1()   # GET_DIGESTS resets B
        h.update(msg[:4])
        h.update(resp)
        self.t.commit_m1(h)
        return resp

    def _get_certificate(self, msg):
        if not (self._local() & C.CAP_CERT):
            return self._unsupported(C.GET_CERTIFICATE)
        if self.state < ST_NEG:
            return self._error(C.ERR_UNEXPECTED_REQUEST)
        if len(msg) < 8:
            return self._error(C.ERR_INVALID_REQUEST)
        v = self.version
        slot = msg[2] & 0x0F
        if slot >= 8:
            return self._error(C.ERR_INVALID_REQUEST)
        offset = u16(msg, 4)
        length = u16(msg, 6)
        provisioned = (self._slot_mask() >> slot) & 1
        if v >= C.V13 and msg[3] & 0x01:  # SlotSizeRequested: size of the chain only
            if not provisioned and not (self.cfg.supported_slots >> slot) & 1:
                return self._error(C.ERR_INVALID_REQUEST)
            offset = 0
            length = 0
            if not provisioned:
                resp = bytes((v, C.CERTIFICATE, slot, 0, 0, 0, 0, 0))
                h = self.t.fork_m1()
                h.update(msg[:8])
                h.update(resp)
                self.t.commit_m1(h)
                return resp
        elif not provisioned:
            return self._error(C.ERR_INVALID_REQUEST)
        cb = self.identity.chain_buffer(slot, self.asym, self.hashname)
        if cb is None:
            return self._error(C.ERR_UNSPECIFIED)
        buf = cb[0]
        total = len(buf)
        if offset >= total:
            return self._error(C.ERR_INVALID_REQUEST)
        if self._chunking():
            room = min(self.req_max, self.cfg.max_spdm_msg_size) - 8
        else:
            room = self.cfg.data_transfer_size - 8
            if self.req_dts:
                room = min(room, self.req_dts - 8)
        portion = min(length, total - offset, max(room, 0))
        resp = (bytes((v, C.CERTIFICATE, slot, 0)) + p16(portion)
                + p16(total - offset - portion) + buf[offset:offset + portion])
        err = self._size_err(len(resp))
        if err is not None:
            return err
        h = self.t.fork_m1()
        h.update(msg[:8])
        h.update(resp)
        self.t.commit_m1(h)
        return resp

    # ------------------------------------------------------------- signing
    def _digest_to_sign(self, context, tdigest):
        if self.version >= C.V12:
            from uspdm.crypto import sha2

            return sha2.new(self.hashname, C.signing_prefix(self.version, context) + tdigest).digest()
        return tdigest

    def _signed(self, code, body, context, tdigest):
        """Return body||signature, or ERROR ResponseNotReady with the signature deferred."""
        from uspdm.crypto import ec

        curve = ec.P384 if self.asym == "p384" else ec.P256
        d = self.identity.private_key(self.asym)
        if d is None:
            return self._error(C.ERR_UNSPECIFIED)
        m = self._digest_to_sign(context, tdigest)
        extra = self.drbg.generate(32)
        if self.cfg.defer_signing:
            self._token = (self._token + 1) & 0xFF
            self.pend = _Pending(code, self._token, body, ec.sign_iter(curve, d, m, extra))
            return self._not_ready()
        return body + ec.sign(curve, d, m, extra)

    def _not_ready(self):
        p = self.pend
        c = self.cfg
        return self._error(C.ERR_RESPONSE_NOT_READY, 0,
                           bytes((c.rdt_exponent & 0xFF, p.code, p.token, c.rdtm & 0xFF)))

    def _respond_if_ready(self, msg):
        p = self.pend
        if p is None:
            return self._error(C.ERR_UNEXPECTED_REQUEST)
        if len(msg) != 4 or msg[2] != p.code or msg[3] != p.token:
            # RESPOND_IF_READY is a bare header (libspdm: any other size is InvalidRequest)
            return self._error(C.ERR_INVALID_REQUEST)
        if p.sig is None:
            return self._not_ready()
        self.pend = None
        if p.code == C.CHALLENGE:
            self.t.auth = True
        return p.body + p.sig

    def _opaque(self):
        if self.version >= C.V12 and self.other_params == C.OPAQUE_FMT_NONE:
            return b""
        o = self.cfg.opaque or b""
        # DSP0274: OpaqueDataLength <= 1024; a longer configured blob is not sent
        return o if len(o) <= C.MAX_OPAQUE_SIZE else b""

    # ------------------------------------------------------------ CHALLENGE
    def _challenge(self, msg):
        if not (self._local() & C.CAP_CHAL):
            return self._unsupported(C.CHALLENGE)
        if self.state < ST_NEG:
            return self._error(C.ERR_UNEXPECTED_REQUEST)
        v = self.version
        need = 36 + (C.REQ_CONTEXT_SIZE if v >= C.V13 else 0)
        if len(msg) < need:
            return self._error(C.ERR_INVALID_REQUEST)
        slot = msg[2]
        kind = msg[3]
        if kind not in (C.SUMMARY_NONE, C.SUMMARY_TCB, C.SUMMARY_ALL):
            return self._error(C.ERR_INVALID_REQUEST)
        if kind and (not (self.flags & C.CAP_MEAS_MASK) or not self.meas_spec):
            return self._error(C.ERR_INVALID_REQUEST)
        mask = self._slot_mask()
        if slot >= 8 or not (mask >> slot) & 1:
            return self._error(C.ERR_INVALID_REQUEST)
        cb = self.identity.chain_buffer(slot, self.asym, self.hashname)
        if cb is None:
            return self._error(C.ERR_UNSPECIFIED)
        opaque = self._opaque()
        body = bytes((v, C.CHALLENGE_AUTH, slot & 0x0F, mask)) + cb[1] + self.drbg.generate(32)
        if kind:
            body += self.meas.summary_hash(kind, self.hashname, self.meas_hashname)
        body += p16(len(opaque)) + opaque
        if v >= C.V13:
            body += msg[36:44]
        err = self._size_err(len(body) + C.SIG_SIZE[self.asym])
        if err is not None:
            return err
        h = self.t.fork_m1()
        h.update(msg[:need])
        h.update(body)
        tdigest = h.digest()
        resp = self._signed(C.CHALLENGE, body, C.SIGN_CTX_CHALLENGE_AUTH, tdigest)
        # success (or deferred): B and C are consumed by this CHALLENGE_AUTH
        self.t.end_m1()
        if resp[1] == C.CHALLENGE_AUTH:
            self.t.auth = True  # delivered (a deferred one: on RESPOND_IF_READY)
        return resp

    # ---------------------------------------------------------- MEASUREMENTS
    def _get_measurements(self, msg):
        if not (self._local() & C.CAP_MEAS_MASK):
            self.t.reset_l()
            return self._unsupported(C.GET_MEASUREMENTS)
        if self.state < ST_NEG or not self.meas_spec:
            self.t.reset_l()
            return self._error(C.ERR_UNEXPECTED_REQUEST)
        v = self.version
        attrs = msg[2]
        op = msg[3]
        signed = attrs & C.MEAS_ATTR_SIGN
        if signed:
            need = 37 if v >= C.V11 else 36
        else:
            need = 4
        if v >= C.V13:
            need += C.REQ_CONTEXT_SIZE
        if len(msg) < need:
            self.t.reset_l()
            return self._error(C.ERR_INVALID_REQUEST)
        if signed and not (self.flags & C.CAP_MEAS_SIG):
            self.t.reset_l()
            return self._error(C.ERR_INVALID_REQUEST)
        slot = 0
        if signed and v >= C.V11:
            slot = msg[36] & 0x0F
            if slot >= 8 or not (self._slot_mask() >> slot) & 1:
                self.t.reset_l()
                return self._error(C.ERR_INVALID_REQUEST)
        mh = self.meas_hashname
        if op == C.MEAS_OP_COUNT:
            p1 = self.meas.count()
            record = b""
            nblocks = 0
        else:
            r = self.meas.record(op, mh)
            if r is None:
                self.t.reset_l()
                return self._error(C.ERR_INVALID_REQUEST)
            record, nblocks = r
            p1 = 0
        p2 = 0
        if signed and v >= C.V11:
            p2 = slot
            if v >= C.V12:
                if self.l_mver is None or self.t.l is None:
                    changed = C.MEAS_NO_CHANGE_DETECTED
                else:
                    changed = C.MEAS_NO_CHANGE_DETECTED if self.l_mver == self.meas.version else C.MEAS_CHANGE_DETECTED
                p2 |= changed
        opaque = self._opaque()
        body = (bytes((v, C.MEASUREMENTS, p1, p2, nblocks)) + p24(len(record)) + record
                + self.drbg.generate(32) + p16(len(opaque)) + opaque)
        if v >= C.V13:
            body += msg[need - C.REQ_CONTEXT_SIZE:need]
        sig_size = C.SIG_SIZE[self.asym] if signed else 0
        err = self._size_err(len(body) + sig_size)
        if err is not None:
            self.t.reset_l()
            return err
        if self.t.l is None:
            self.l_mver = self.meas.version
        h = self.t.fork_l(v >= C.V12)
        h.update(msg[:need])
        h.update(body)
        # GET_MEASUREMENTS ends an unfinished CHALLENGE sequence (M1 reset) unless
        # the connection is already authenticated (libspdm)
        self.t.reset_m1()
        if not signed:
            self.t.commit_l(h)
            return body
        tdigest = h.digest()
        self.t.reset_l()
        return self._signed(C.GET_MEASUREMENTS, body, C.SIGN_CTX_MEASUREMENTS, tdigest)

    # ------------------------------------------------------------- chunking
    def _chunk_checks(self, code):
        if self.state < ST_CAPS:
            return self._error(C.ERR_UNEXPECTED_REQUEST)
        if self.version < C.V12 or not (self.flags & C.CAP_CHUNK):
            return self._unsupported(code)
        if not (self.req_flags & C.CAP_CHUNK):
            return self._error(C.ERR_UNEXPECTED_REQUEST)
        return None

    def _chunk_get(self, msg):
        err = self._chunk_checks(C.CHUNK_GET)
        if err is not None:
            return err
        if len(msg) < 6:
            return self._error(C.ERR_INVALID_REQUEST)
        o = self.out
        if o is None:
            return self._error(C.ERR_UNEXPECTED_REQUEST)
        if msg[3] != o.handle or u16(msg, 4) != o.seq:
            return self._error(C.ERR_INVALID_REQUEST)
        data, last = o.chunk(self.version, self.req_dts)
        if data is None:
            self.out = None
            return self._error(C.ERR_INVALID_REQUEST)
        if last:
            self.out = None
        return data

    def _chunk_send(self, msg):
        err = self._chunk_checks(C.CHUNK_SEND)
        if err is not None:
            return err
        pr = parse_chunk_send(msg)
        if pr is None:
            return self._error(C.ERR_INVALID_REQUEST)
        last, handle, seq, size, large, at = pr
        # Every chunk but the last: MinDataTransferSize <= CHUNK_SEND size <= our
        # DataTransferSize (larger ones got RequestTooLarge in _handle); the large
        # message must exceed MinDataTransferSize (libspdm; validator 19.1 sends
        # 42-byte chunks whatever our DataTransferSize).
        mn = C.MIN_DATA_TRANSFER_SIZE_12
        inc = self.inc
        bad = False
        if inc is None:
            if (seq != 0 or large is None or size > len(msg) - at or at + size < mn or last
                    or large <= mn or large > self.cfg.max_spdm_msg_size or size > large):
                bad = True
            else:
                inc = self.inc = Incoming(handle, large)
                inc.add(msg[at:at + size])
        else:
            if (seq != ((inc.seq + 1) & 0xFFFF) or seq == 0 or handle != inc.handle
                    or size > len(msg) - at or inc.got + size > inc.size):
                bad = True
            elif last and inc.got + size != inc.size:
                bad = True
            elif not last and (inc.got + size >= inc.size or at + size < mn):
                bad = True
            else:
                inc.seq = seq
                inc.add(msg[at:at + size])
        v = self.version
        ack = bytes((v, C.CHUNK_SEND_ACK, 0, handle)) + p16(seq)
        if bad:
            self.inc = None
            return (bytes((v, C.CHUNK_SEND_ACK, C.CHUNK_EARLY_ERROR, handle)) + p16(seq)
                    + self._error(C.ERR_INVALID_REQUEST))
        if not inc.done():
            return ack
        inner = bytes(inc.buf)
        self.inc = None
        if len(inner) < 4:
            return ack + self._error(C.ERR_INVALID_REQUEST)
        if inner[1] in (C.CHUNK_SEND, C.CHUNK_GET, C.GET_VERSION):
            return ack + self._error(C.ERR_INVALID_REQUEST)
        r = self._dispatch(inner)
        if r is None:
            return ack
        if r[1] != C.ERROR and len(ack) + len(r) > self.req_dts:
            self._handle_ctr = (self._handle_ctr + 1) & 0xFF
            self.out = Outgoing(self._handle_ctr, r)
            r = self._error(C.ERR_LARGE_RESPONSE, 0, bytes((self._handle_ctr,)))
        return ack + r
