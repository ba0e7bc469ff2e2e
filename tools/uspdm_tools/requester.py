"""Host SPDM requester (DSP0274 1.0-1.3), CPython only.

Deliberately independent of lib/uspdm: it parses every response itself,
keeps its own transcripts (A = VCA, B = digests/certificate, C = challenge,
L = measurements) and verifies signatures with the `cryptography` package, so
it can judge the responder.

Transport: any object with ``spdm(request: bytes, timeout: float) -> bytes``
(the SPDM message without the MCTP message-type byte) that raises
TimeoutError (or OSError) when the peer does not answer.

    r = Requester(transport, version="1.3", algs=("p384", "p256"))
    r.init_connection()                 # VERSION, CAPABILITIES, ALGORITHMS
    r.get_digests(); r.get_certificate(0, progress=cb)
    r.challenge(0)                      # verifies CHALLENGE_AUTH over M1
    m = r.get_measurements()            # all blocks, signed, verifies L1
"""
import os
import struct
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

# ---------------------------------------------------------------- constants

GET_DIGESTS = 0x81
GET_CERTIFICATE = 0x82
CHALLENGE = 0x83
GET_VERSION = 0x84
CHUNK_SEND = 0x85
CHUNK_GET = 0x86
GET_MEASUREMENTS = 0xE0
GET_CAPABILITIES = 0xE1
NEGOTIATE_ALGORITHMS = 0xE3
RESPOND_IF_READY = 0xFF

DIGESTS = 0x01
CERTIFICATE = 0x02
CHALLENGE_AUTH = 0x03
VERSION = 0x04
CHUNK_SEND_ACK = 0x05
CHUNK_RESPONSE = 0x06
MEASUREMENTS = 0x60
CAPABILITIES = 0x61
ALGORITHMS = 0x63
ERROR = 0x7F

CODE_NAMES = {
    GET_DIGESTS: "GET_DIGESTS", GET_CERTIFICATE: "GET_CERTIFICATE", CHALLENGE: "CHALLENGE",
    GET_VERSION: "GET_VERSION", CHUNK_SEND: "CHUNK_SEND", CHUNK_GET: "CHUNK_GET",
    GET_MEASUREMENTS: "GET_MEASUREMENTS", GET_CAPABILITIES: "GET_CAPABILITIES",
    NEGOTIATE_ALGORITHMS: "NEGOTIATE_ALGORITHMS", RESPOND_IF_READY: "RESPOND_IF_READY",
    DIGESTS: "DIGESTS", CERTIFICATE: "CERTIFICATE", CHALLENGE_AUTH: "CHALLENGE_AUTH",
    VERSION: "VERSION", CHUNK_SEND_ACK: "CHUNK_SEND_ACK", CHUNK_RESPONSE: "CHUNK_RESPONSE",
    MEASUREMENTS: "MEASUREMENTS", CAPABILITIES: "CAPABILITIES", ALGORITHMS: "ALGORITHMS",
    ERROR: "ERROR",
}

ERR_INVALID_REQUEST = 0x01
ERR_BUSY = 0x03
ERR_UNEXPECTED_REQUEST = 0x04
ERR_UNSPECIFIED = 0x05
ERR_UNSUPPORTED_REQUEST = 0x07
ERR_RESPONSE_TOO_LARGE = 0x0D
ERR_REQUEST_TOO_LARGE = 0x0E
ERR_LARGE_RESPONSE = 0x0F
ERR_VERSION_MISMATCH = 0x41
ERR_RESPONSE_NOT_READY = 0x42
ERR_REQUEST_RESYNCH = 0x43

ERROR_NAMES = {
    0x01: "InvalidRequest", 0x02: "InvalidSession", 0x03: "Busy", 0x04: "UnexpectedRequest",
    0x05: "Unspecified", 0x06: "DecryptError", 0x07: "UnsupportedRequest",
    0x08: "RequestInFlight", 0x09: "InvalidResponseCode", 0x0A: "SessionLimitExceeded",
    0x0B: "SessionRequired", 0x0C: "ResetRequired", 0x0D: "ResponseTooLarge",
    0x0E: "RequestTooLarge", 0x0F: "LargeResponse", 0x10: "MessageLost",
    0x11: "InvalidPolicy", 0x41: "VersionMismatch", 0x42: "ResponseNotReady",
    0x43: "RequestResynch", 0x44: "OperationFailed", 0x45: "NoPendingRequests",
    0xFF: "VendorDefined",
}

# CAPABILITIES flags (responder)
CAP_FLAGS = [
    (0, "CACHE"), (1, "CERT"), (2, "CHAL"), (3, "MEAS_NO_SIG"), (4, "MEAS_SIG"), (5, "MEAS_FRESH"),
    (6, "ENCRYPT"), (7, "MAC"), (8, "MUT_AUTH"), (9, "KEY_EX"), (10, "PSK"), (11, "PSK_CTX"),
    (12, "ENCAP"), (13, "HBEAT"), (14, "KEY_UPD"), (15, "HANDSHAKE_IN_CLEAR"), (16, "PUB_KEY_ID"),
    (17, "CHUNK"), (18, "ALIAS_CERT"), (19, "SET_CERT"), (20, "CSR"), (21, "CERT_INSTALL_RESET"),
    (22, "EP_INFO0"), (23, "EP_INFO1"), (24, "MEL"), (25, "EVENT"), (26, "MULTI_KEY0"),
    (27, "MULTI_KEY1"), (28, "GET_KEY_PAIR_INFO"), (29, "SET_KEY_PAIR_INFO"),
]
CAP_CERT = 1 << 1
CAP_CHAL = 1 << 2
CAP_MEAS_NO_SIG = 1 << 3
CAP_MEAS_SIG = 1 << 4
CAP_MEAS_MASK = CAP_MEAS_NO_SIG | CAP_MEAS_SIG
CAP_CHUNK = 1 << 17

ASYM_P256 = 0x10
ASYM_P384 = 0x80
HASH_SHA256 = 0x01
HASH_SHA384 = 0x02
MEAS_HASH_RAW = 0x01
MEAS_HASH_SHA256 = 0x02
MEAS_HASH_SHA384 = 0x04
MEAS_HASH_SHA512 = 0x08
DHE_SECP256R1 = 0x08
DHE_SECP384R1 = 0x10
AEAD_AES_256_GCM = 0x02
KEY_SCHEDULE_SPDM = 0x01
OPAQUE_FMT1 = 0x02
CAP_MULTI_KEY_MASK = 3 << 26     # 1.3 MULTI_KEY_CAP: 01b only multi-key, 10b negotiated
CAP_MULTI_KEY_ONLY = 1 << 26
CAP_MULTI_KEY_NEG = 2 << 26
MULTI_KEY_CONN = 0x10            # NEGOTIATE_ALGORITHMS OtherParamsSupport: ResponderMultiKeyConn
CERT_MODELS = {0: "none", 1: "DeviceCert", 2: "AliasCert", 3: "GenericCert"}

ALG_TYPE_DHE, ALG_TYPE_AEAD, ALG_TYPE_REQ_ASYM, ALG_TYPE_KEY_SCHEDULE = 2, 3, 4, 5

ALGS = {
    # name: (BaseAsymAlgo bit, BaseHashAlgo bit of the natural pair, curve, coordinate size)
    "p384": (ASYM_P384, HASH_SHA384, ec.SECP384R1, 48),
    "p256": (ASYM_P256, HASH_SHA256, ec.SECP256R1, 32),
}
ASYM_NAMES = {ASYM_P384: "ECDSA P-384", ASYM_P256: "ECDSA P-256"}
ASYM_TO_ALG = {ASYM_P384: "p384", ASYM_P256: "p256"}
HASHES = {HASH_SHA384: ("SHA-384", hashes.SHA384, 48), HASH_SHA256: ("SHA-256", hashes.SHA256, 32)}
MEAS_HASH_NAMES = {MEAS_HASH_RAW: "raw bit stream", MEAS_HASH_SHA256: "SHA-256",
                   MEAS_HASH_SHA384: "SHA-384", MEAS_HASH_SHA512: "SHA-512"}

VERSIONS = {"1.0": 0x10, "1.1": 0x11, "1.2": 0x12, "1.3": 0x13}

MEAS_TYPES = {
    0: "immutable ROM", 1: "mutable firmware", 2: "hardware configuration",
    3: "firmware configuration", 4: "measurement manifest", 5: "device mode",
    6: "version", 7: "secure version number", 8: "hash-extend", 9: "informational",
    10: "structured manifest",
}

SIGN_CTX_CHALLENGE = b"responder-challenge_auth signing"
SIGN_CTX_MEASUREMENTS = b"responder-measurements signing"

ST1 = 0.1  # seconds: responder time limit for messages without crypto


def version_str(v):
    return "%d.%d" % (v >> 4, v & 0xF)


def parse_version(s):
    """'1.2' / '12' / 0x12 -> 0x12."""
    if isinstance(s, int):
        return s
    s = str(s).strip()
    if s in VERSIONS:
        return VERSIONS[s]
    raise ValueError("unknown SPDM version %r (use 1.0, 1.1, 1.2 or 1.3)" % s)


def cap_names(flags):
    return [n for b, n in CAP_FLAGS if flags & (1 << b)]


# --------------------------------------------------------------- exceptions

class SpdmError(Exception):
    """Base of every requester failure."""


class Unreachable(SpdmError):
    """The responder did not answer (transport timeout or I/O failure)."""


class DeadlineExceeded(Unreachable):
    """The whole command did not complete within its overall deadline (the
    responder may keep answering: a per-message timeout alone cannot end it)."""


class ProtocolError(SpdmError):
    """Malformed or unexpected response, or an SPDM ERROR response.

    `code`/`name` are set when the responder answered ERROR (e.g. 0x04
    UnexpectedRequest); `request` is the request code that failed.
    """

    def __init__(self, msg, code=None, data=None, request=None, ext=b""):
        self.code = code
        self.name = ERROR_NAMES.get(code, "0x%02X" % code) if code is not None else None
        self.data = data
        self.request = request
        self.ext = ext
        if code is not None:
            msg = "%s: ERROR %s (0x%02X, data 0x%02X)" % (msg, self.name, code, data or 0)
        SpdmError.__init__(self, msg)


class VerificationError(SpdmError):
    """A signature, digest or transcript check failed: the device is not trusted."""


# ------------------------------------------------------------------ helpers

def _u16(b, o):
    return b[o] | (b[o + 1] << 8)


def _u24(b, o):
    return b[o] | (b[o + 1] << 8) | (b[o + 2] << 16)


def _u32(b, o):
    return struct.unpack_from("<I", b, o)[0]


def _one_bit(v):
    return v != 0 and (v & (v - 1)) == 0


def hash_bytes(hash_bit, data):
    h = hashes.Hash(HASHES[hash_bit][1]())
    h.update(data)
    return h.finalize()


def signing_prefix(version, context):
    """DSP0274 1.2+ signing prefix (100 bytes) for the negotiated version."""
    tag = ("dmtf-spdm-v%d.%d.*" % (version >> 4, version & 0xF)).encode()
    return tag * 4 + b"\x00" * (36 - len(context)) + context


def verify_spdm_signature(public_key, version, hash_bit, context, transcript, signature):
    """Verify an SPDM signature over `transcript` (raw r||s). Raises VerificationError."""
    coord = (len(signature)) // 2
    if len(signature) != 2 * coord or coord == 0:
        raise VerificationError("bad signature length %d" % len(signature))
    r = int.from_bytes(signature[:coord], "big")
    s = int.from_bytes(signature[coord:], "big")
    der = utils.encode_dss_signature(r, s)
    algo = HASHES[hash_bit][1]()
    if version >= 0x12:
        message = signing_prefix(version, context) + hash_bytes(hash_bit, transcript)
    else:
        message = transcript
    try:
        public_key.verify(der, message, ec.ECDSA(algo))
    except InvalidSignature:
        raise VerificationError("signature does not verify (%s)" % context.decode())


def parse_measurement_record(record, count=None):
    """Parse a measurement record into a list of dicts (raises ProtocolError)."""
    blocks = []
    o = 0
    while o < len(record):
        if len(record) - o < 4:
            raise ProtocolError("truncated measurement block header")
        index, spec, size = record[o], record[o + 1], _u16(record, o + 2)
        if o + 4 + size > len(record):
            raise ProtocolError("measurement block %d overruns the record" % index)
        body = bytes(record[o + 4:o + 4 + size])
        blk = {"index": index, "spec": spec, "raw": bytes(record[o:o + 4 + size])}
        if spec == 0x01:
            if size < 3:
                raise ProtocolError("DMTF measurement block %d too short" % index)
            vtype, vsize = body[0], _u16(body, 1)
            if vsize + 3 != size:
                raise ProtocolError("DMTF measurement block %d: value size %d does not match block size %d"
                                    % (index, vsize, size))
            blk["type"] = vtype & 0x7F
            blk["raw_bitstream"] = bool(vtype & 0x80)
            blk["value"] = body[3:]
            blk["dmtf"] = body
        else:
            blk["type"] = None
            blk["raw_bitstream"] = None
            blk["value"] = body
            blk["dmtf"] = body
        if index in (0, 0xFF):
            raise ProtocolError("measurement block with reserved index %d" % index)
        blocks.append(blk)
        o += 4 + size
    if count is not None and count != len(blocks):
        raise ProtocolError("MEASUREMENTS announces %d blocks but carries %d" % (count, len(blocks)))
    return blocks


def measurement_summary(version, hash_bit, blocks, kind=0xFF, legacy=False):
    """Measurement summary hash: Hash(concatenated measurement blocks) -- DSP0274 1.1.2+
    wording, applied by libspdm to every version (libspdm issues #2404/#2888).
    `legacy=True`: the SPDM 1.0.x/1.1.0/1.1.1 text (concatenated Measurement fields,
    without the 4-byte block header), which older responders implement.
    kind 1 (TCB) keeps the blocks of types 0 (ROM) and 1 (firmware)."""
    data = b""
    for b in blocks:
        if kind == 1 and b.get("type") not in (0, 1):
            continue
        data += b["dmtf"] if legacy else b["raw"]
    return hash_bytes(hash_bit, data)


# ---------------------------------------------------------------- requester

class Timing:
    def __init__(self, name, seconds, req_len, rsp_len, retries=0, chunks=0):
        self.name = name
        self.seconds = seconds
        self.req_len = req_len
        self.rsp_len = rsp_len
        self.retries = retries
        self.chunks = chunks

    def as_dict(self):
        return {"message": self.name, "ms": round(self.seconds * 1000, 2), "request_bytes": self.req_len,
                "response_bytes": self.rsp_len, "not_ready_retries": self.retries, "chunks": self.chunks}


def parse_key_pair_fields(rsp, o, mask, digests):
    """SPDM 1.3 multi-key DIGESTS: KeyPairID[n], CertificateInfo[n], KeyUsageMask[n]
    after the digests (n provisioned slots, slot order), checked as libspdm's
    requester checks them.  Returns {slot: {...}}."""
    slots = [s for s in range(8) if mask & (1 << s)]
    n = len(slots)
    out = {}
    for i, slot in enumerate(slots):
        kp = rsp[o + i]
        info = rsp[o + n + i]
        usage = _u16(rsp, o + 2 * n + 2 * i)
        model = info & 0x07
        if info & 0xF8:
            raise ProtocolError("DIGESTS: slot %d CertificateInfo 0x%02X has reserved bits set" % (slot, info))
        if model > 3:
            raise ProtocolError("DIGESTS: slot %d CertModel %d is reserved" % (slot, model))
        if usage & 0x3FF0:
            raise ProtocolError("DIGESTS: slot %d KeyUsageMask 0x%04X has reserved bits set" % (slot, usage))
        if slot == 0 and (model == 3 or not usage & 0x000F):
            raise ProtocolError("DIGESTS: slot 0 must hold a DeviceCert/AliasCert chain usable for "
                                "authentication (CertModel %d, KeyUsageMask 0x%04X)" % (model, usage))
        if model == 0 and any(digests[slot]):
            raise ProtocolError("DIGESTS: slot %d has no certificate (CertModel 0) but a digest" % slot)
        if kp == 0:
            raise ProtocolError("DIGESTS: slot %d KeyPairID 0 is reserved" % slot)
        out[slot] = {"key_pair_id": kp, "cert_model": model, "key_usage": usage}
    return out


class Requester:
    def __init__(self, transport, version=None, algs=("p384", "p256"), timeout=5.0,
                 data_transfer_size=4096, max_spdm_msg_size=65536, cert_portion=1024,
                 rnr_retries=20, rnr_timeout=60.0, busy_retries=3, ct_exponent=0,
                 structure_tables=True, rng=os.urandom, sleep=time.sleep, deadline=None, clock=time.monotonic,
                 multi_key=False):
        """deadline: seconds from now within which everything this requester does must complete
        (None: no overall bound); every message's timeout is cut to what is left."""
        self.t = transport
        self.clock = clock
        self.deadline_s = deadline
        self.deadline_at = None if deadline is None else clock() + deadline
        self.want_version = parse_version(version) if version is not None else None
        for a in algs:
            if a not in ALGS:
                raise ValueError("unknown algorithm %r (p384 or p256)" % a)
        self.algs = tuple(algs)
        self.timeout = timeout
        self.dts = data_transfer_size
        self.max_msg = max_spdm_msg_size
        self.cert_portion = cert_portion
        self.rnr_retries = rnr_retries
        self.rnr_timeout = rnr_timeout
        self.busy_retries = busy_retries
        self.ct_exponent_req = ct_exponent
        self.structure_tables = structure_tables
        self.multi_key = multi_key   # ask for a 1.3 multi-key connection when the responder negotiates one
        self.rng = rng
        self.sleep = sleep
        self.timings = []
        self._handle = 0
        self.reset()

    # ---- state
    def reset(self):
        self.version = None
        self.versions = []
        self.rsp_flags = 0
        self.ct_exponent = None
        self.rsp_dts = None
        self.rsp_max_msg = None
        self.asym = self.hash = self.meas_hash = None
        self.meas_spec = 0
        self.other_params = 0
        self.tables = {}
        self.slot_mask = 0
        self.supported_slot_mask = None
        self.digests = {}
        self.chains = {}
        self.A = b""
        self.B = b""
        self.C = b""
        self.L = b""
        self.authenticated = False  # a CHALLENGE_AUTH verified since GET_VERSION
        self.mk_conn = False        # SPDM 1.3 MULTI_KEY_CONN_RSP
        self.D = b""                # then: the last DIGESTS outside a session (session TH)
        self.key_pairs = {}         # slot -> {"key_pair_id", "cert_model", "key_usage"} (multi-key)
        self.in_sess = False        # requests travel inside a session (in_session())

    @property
    def hash_size(self):
        return HASHES[self.hash][2]

    @property
    def sig_size(self):
        return 2 * (48 if self.asym == ASYM_P384 else 32)

    @property
    def ct_seconds(self):
        return (1 << (self.ct_exponent or 0)) / 1e6

    def _hdr(self, code, p1=0, p2=0, ver=None):
        return bytes((self.version if ver is None else ver, code, p1, p2))

    # ---- transport
    def budget(self, timeout, what=None):
        """`timeout` cut to the time left before the overall deadline; DeadlineExceeded when none is left."""
        if self.deadline_at is None:
            return timeout
        left = self.deadline_at - self.clock()
        if left <= 0:
            raise DeadlineExceeded("not done within the overall deadline of %g s%s" % (
                self.deadline_s, (" (at %s)" % what) if what else ""))
        return min(timeout, left) if timeout is not None else left

    def _xfer(self, req, timeout):
        timeout = self.budget(timeout, CODE_NAMES.get(req[1], "0x%02X" % req[1]))
        try:
            rsp = self.t.spdm(bytes(req), timeout)
        except TimeoutError as e:
            why = str(e)
            raise Unreachable("no answer to %s within %.1f s%s" % (
                CODE_NAMES.get(req[1], "0x%02X" % req[1]), timeout,
                (": %s" % why) if why and not why.startswith("no response within") else ""))
        except OSError as e:
            raise Unreachable("transport failure: %s" % e)
        rsp = bytes(rsp)
        if len(rsp) < 4:
            raise ProtocolError("response to %s shorter than an SPDM header (%d bytes)"
                                % (CODE_NAMES.get(req[1], "0x%02X" % req[1]), len(rsp)))
        return rsp

    def _timeout(self, crypto):
        t = self.timeout
        if crypto and self.ct_exponent is not None:
            t += self.ct_seconds
        return t

    def exchange(self, req, expect, crypto=False, name=None):
        """Send `req`, handle ResponseNotReady/LargeResponse/Busy/chunking, return the
        (reassembled) response whose code must be `expect`. ERROR -> ProtocolError."""
        name = name or CODE_NAMES.get(req[1], "0x%02X" % req[1])
        t0 = time.monotonic()
        stats = {"retries": 0, "chunks": 0}
        busy = 0
        while True:
            rsp = self._send_maybe_chunked(req, crypto, stats)
            rsp = self._resolve(req, rsp, crypto, stats)
            if rsp[1] == ERROR and rsp[2] == ERR_BUSY and busy < self.busy_retries:
                busy += 1
                self.sleep(0.1)
                continue
            break
        self.timings.append(Timing(name, time.monotonic() - t0, len(req), len(rsp), stats["retries"], stats["chunks"]))
        if rsp[1] == ERROR:
            raise ProtocolError("%s failed" % name, code=rsp[2], data=rsp[3], request=req[1], ext=rsp[4:])
        exp_ver = 0x10 if req[1] == GET_VERSION else self.version
        if rsp[0] != exp_ver:
            raise ProtocolError("%s: response version 0x%02X, expected 0x%02X" % (name, rsp[0], exp_ver))
        if rsp[1] != expect:
            raise ProtocolError("%s: unexpected response code 0x%02X (%s), expected %s" % (
                name, rsp[1], CODE_NAMES.get(rsp[1], "?"), CODE_NAMES[expect]))
        return rsp

    def _resolve(self, req, rsp, crypto, stats):
        """Follow ResponseNotReady (RESPOND_IF_READY) and LargeResponse (CHUNK_GET)."""
        deadline = time.monotonic() + self.rnr_timeout
        tries = 0
        first = None
        waited = 0.0
        while rsp[1] == ERROR and rsp[2] in (ERR_RESPONSE_NOT_READY, ERR_LARGE_RESPONSE):
            if rsp[0] != self._cur_ver(req):
                raise ProtocolError("ERROR response version 0x%02X, expected 0x%02X" % (rsp[0], self._cur_ver(req)))
            if rsp[2] == ERR_LARGE_RESPONSE:
                if len(rsp) < 5:
                    raise ProtocolError("LargeResponse without a handle")
                rsp = self._chunk_get(rsp[4], stats)
                # what CHUNK_GET reassembles is the response itself: another LargeResponse (or a
                # ResponseNotReady) inside it is a protocol error, not a reason to go on forever
                if rsp[1] == ERROR and rsp[2] in (ERR_RESPONSE_NOT_READY, ERR_LARGE_RESPONSE):
                    raise ProtocolError("the large response reassembled by CHUNK_GET is itself an ERROR %s"
                                        % ERROR_NAMES.get(rsp[2]))
                break
            if len(rsp) < 8:
                raise ProtocolError("ResponseNotReady without its extended data")
            rdt_exp, req_code, token, rdtm = rsp[4], rsp[5], rsp[6], rsp[7]
            if req_code != req[1]:
                raise ProtocolError("ResponseNotReady names request 0x%02X, sent 0x%02X" % (req_code, req[1]))
            tries += 1
            stats["retries"] = tries
            rdt = (1 << min(rdt_exp, 31)) / 1e6
            if first is None:
                first = time.monotonic()
            # Give up after rnr_retries only once the responder has also had its own
            # worst case, WT_max = RDT x RDTM, twice over (a loaded host or a slow
            # board stretches the work; the count alone would give up after 20 x RDT);
            # rnr_retries=0 is a requester that never sends RESPOND_IF_READY.
            spent = max(waited, time.monotonic() - first)
            if tries > self.rnr_retries and (not self.rnr_retries or spent >= 2 * rdt * max(rdtm, 1)):
                raise ProtocolError("%s: still not ready after %d RESPOND_IF_READY" % (
                    CODE_NAMES.get(req[1], "?"), tries - 1))
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unreachable("%s: no response within %.0f s of ResponseNotReady" % (
                    CODE_NAMES.get(req[1], "?"), self.rnr_timeout))
            pause = self.budget(min(rdt, left), "RESPOND_IF_READY")
            waited += pause
            self.sleep(pause)
            rir = self._hdr(RESPOND_IF_READY, req[1], token)
            # the responder must have the response ready within RDT*RDTM
            rsp = self._xfer(rir, self.timeout + rdt * max(rdtm, 1))
        return rsp

    def _cur_ver(self, req):
        return 0x10 if req[1] == GET_VERSION else self.version

    def _chunking(self):
        return (self.version is not None and self.version >= 0x12 and self.rsp_flags & CAP_CHUNK
                and self.rsp_dts is not None)

    def _next_handle(self):
        self._handle = (self._handle + 1) & 0xFF
        return self._handle

    def _send_maybe_chunked(self, req, crypto, stats):
        if not self._chunking() or len(req) <= self.rsp_dts:
            return self._xfer(req, self._timeout(crypto))
        if len(req) > self.rsp_max_msg:
            raise ProtocolError("request of %d bytes exceeds the responder's MaxSPDMmsgSize %d"
                                % (len(req), self.rsp_max_msg))
        handle = self._next_handle()
        seq = 0
        off = 0
        while True:
            room = self.rsp_dts - (16 if seq == 0 else 12)
            if room <= 0:
                raise ProtocolError("responder DataTransferSize %d too small for CHUNK_SEND" % self.rsp_dts)
            chunk = req[off:off + room]
            last = off + len(chunk) >= len(req)
            msg = self._hdr(CHUNK_SEND, 1 if last else 0, handle) + struct.pack("<HHI", seq, 0, len(chunk))
            if seq == 0:
                msg += struct.pack("<I", len(req))
            msg += chunk
            stats["chunks"] += 1
            ack = self._xfer(msg, self._timeout(crypto and last))
            if ack[1] == ERROR:
                # an error instead of an ACK ends the transfer
                return ack
            if ack[0] != self.version or ack[1] != CHUNK_SEND_ACK or len(ack) < 6:
                raise ProtocolError("bad CHUNK_SEND_ACK (code 0x%02X, %d bytes)" % (ack[1], len(ack)))
            if ack[3] != handle or _u16(ack, 4) != seq:
                raise ProtocolError("CHUNK_SEND_ACK for handle %d seq %d, sent handle %d seq %d"
                                    % (ack[3], _u16(ack, 4), handle, seq))
            if ack[2] & 1:
                inner = ack[6:]
                if len(inner) >= 4 and inner[1] == ERROR:
                    return inner
                raise ProtocolError("CHUNK_SEND_ACK reports an early error without an ERROR response")
            off += len(chunk)
            if last:
                inner = ack[6:]
                if len(inner) < 4:
                    raise ProtocolError("last CHUNK_SEND_ACK carries no response")
                return inner
            if len(ack) != 6:
                raise ProtocolError("intermediate CHUNK_SEND_ACK carries data")
            seq = (seq + 1) & 0xFFFF

    def _chunk_get(self, handle, stats):
        if not self._chunking():
            raise ProtocolError("LargeResponse although chunking was not negotiated")
        seq = 0
        buf = b""
        total = None
        while True:
            req = self._hdr(CHUNK_GET, 0, handle) + struct.pack("<H", seq)
            rsp = self._xfer(req, self._timeout(False))
            stats["chunks"] += 1
            if rsp[1] == ERROR:
                raise ProtocolError("CHUNK_GET failed", code=rsp[2], data=rsp[3], request=CHUNK_GET, ext=rsp[4:])
            if rsp[0] != self.version or rsp[1] != CHUNK_RESPONSE:
                raise ProtocolError("bad CHUNK_RESPONSE (version 0x%02X code 0x%02X)" % (rsp[0], rsp[1]))
            hdr_len = 16 if seq == 0 else 12
            if len(rsp) < hdr_len:
                raise ProtocolError("CHUNK_RESPONSE too short")
            if rsp[3] != handle or _u16(rsp, 4) != seq:
                raise ProtocolError("CHUNK_RESPONSE handle/sequence mismatch")
            size = _u32(rsp, 8)
            if seq == 0:
                total = _u32(rsp, 12)
                if total > self.max_msg:
                    raise ProtocolError("large response of %d bytes exceeds our MaxSPDMmsgSize" % total)
            if len(rsp) != hdr_len + size:
                raise ProtocolError("CHUNK_RESPONSE ChunkSize %d but %d bytes follow" % (size, len(rsp) - hdr_len))
            if len(rsp) > self.dts:
                raise ProtocolError("CHUNK_RESPONSE of %d bytes exceeds our DataTransferSize %d" % (len(rsp), self.dts))
            buf += rsp[hdr_len:]
            if len(buf) > total:
                raise ProtocolError("chunks exceed the announced LargeMessageSize")
            if rsp[2] & 1:
                break
            if size == 0:
                raise ProtocolError("empty non-final chunk")
            seq = (seq + 1) & 0xFFFF
        if len(buf) != total:
            raise ProtocolError("large response has %d bytes, announced %d" % (len(buf), total))
        if len(buf) < 4:
            raise ProtocolError("large response shorter than a header")
        return buf

    # ---- VCA
    def get_version(self):
        self.reset()
        req = bytes((0x10, GET_VERSION, 0, 0))
        rsp = self.exchange(req, VERSION)
        if len(rsp) < 6:
            raise ProtocolError("VERSION too short")
        n = rsp[5]
        if n == 0 or len(rsp) != 6 + 2 * n:
            raise ProtocolError("VERSION: %d entries in %d bytes" % (n, len(rsp)))
        vers = set()
        for i in range(n):
            e = _u16(rsp, 6 + 2 * i)
            vers.add((e >> 8) & 0xFF)
        self.versions = sorted(vers)
        ours = [v for v in (0x10, 0x11, 0x12, 0x13)]
        common = [v for v in self.versions if v in ours]
        if self.want_version is not None:
            if self.want_version not in self.versions:
                raise ProtocolError("responder does not support SPDM %s (it offers %s)" % (
                    version_str(self.want_version), ", ".join(version_str(v) for v in self.versions)))
            self.version = self.want_version
        else:
            if not common:
                raise ProtocolError("no common SPDM version (responder offers %s)" % (
                    ", ".join(version_str(v) for v in self.versions)))
            self.version = max(common)
        self.A = req + rsp
        return self.version

    def get_capabilities(self):
        v = self.version
        if v == 0x10:
            req = self._hdr(GET_CAPABILITIES)
        else:
            flags = CAP_CHUNK if v >= 0x12 else 0
            req = self._hdr(GET_CAPABILITIES) + struct.pack("<BBHI", 0, self.ct_exponent_req, 0, flags)
            if v >= 0x12:
                req += struct.pack("<II", self.dts, self.max_msg)
        rsp = self.exchange(req, CAPABILITIES)
        need = 20 if v >= 0x12 else 12
        if len(rsp) != need:
            raise ProtocolError("CAPABILITIES is %d bytes, expected %d for SPDM %s" % (len(rsp), need, version_str(v)))
        self.ct_exponent = rsp[5]
        self.rsp_flags = _u32(rsp, 8)
        if (self.rsp_flags & CAP_MEAS_MASK) == CAP_MEAS_MASK:
            raise ProtocolError("CAPABILITIES: MEAS_CAP has the reserved value 3")
        if v >= 0x12:
            self.rsp_dts = _u32(rsp, 12)
            self.rsp_max_msg = _u32(rsp, 16)
            if self.rsp_dts < 42:
                raise ProtocolError("CAPABILITIES: DataTransferSize %d below the minimum 42" % self.rsp_dts)
            if self.rsp_max_msg < self.rsp_dts:
                raise ProtocolError("CAPABILITIES: MaxSPDMmsgSize below DataTransferSize")
            if not (self.rsp_flags & CAP_CHUNK) and self.rsp_max_msg != self.rsp_dts:
                raise ProtocolError("CAPABILITIES: MaxSPDMmsgSize != DataTransferSize without CHUNK_CAP")
        self.A += req + rsp
        return self.rsp_flags

    def negotiate_algorithms(self):
        v = self.version
        asym = 0
        hsh = 0
        for a in self.algs:
            asym |= ALGS[a][0]
            hsh |= ALGS[a][1]
        self._offer = (asym, hsh)
        tables = b""
        ntab = 0
        if v >= 0x11 and self.structure_tables:
            dhe = 0
            for a in self.algs:
                dhe |= DHE_SECP384R1 if a == "p384" else DHE_SECP256R1
            for typ, val in ((ALG_TYPE_DHE, dhe), (ALG_TYPE_AEAD, AEAD_AES_256_GCM),
                             (ALG_TYPE_REQ_ASYM, asym), (ALG_TYPE_KEY_SCHEDULE, KEY_SCHEDULE_SPDM)):
                tables += struct.pack("<BBH", typ, 0x20, val)
                ntab += 1
        self._offer_tables = {ALG_TYPE_DHE: 0, ALG_TYPE_AEAD: 0, ALG_TYPE_REQ_ASYM: 0, ALG_TYPE_KEY_SCHEDULE: 0}
        for i in range(ntab):
            self._offer_tables[tables[4 * i]] = _u16(tables, 4 * i + 2)
        other = self._other_offer()
        length = 32 + len(tables)
        req = (self._hdr(NEGOTIATE_ALGORITHMS, ntab) + struct.pack("<HBBII", length, 0x01, other, asym, hsh)
               + b"\x00" * 12 + bytes((0, 0, 0, 0)) + tables)
        rsp = self.exchange(req, ALGORITHMS)
        self._parse_algorithms(rsp, other)
        self.A += req + rsp
        return self.asym, self.hash

    def _other_offer(self):
        """OtherParamsSupport: opaque format 1 (1.2+); 1.3: ResponderMultiKeyConn
        when the responder only does multi-key connections, or negotiates them
        and we asked for one (multi_key=True), as libspdm's requester does."""
        v = self.version
        other = OPAQUE_FMT1 if v >= 0x12 else 0
        self.mk_conn = False
        if v >= 0x13:
            mk = self.rsp_flags & CAP_MULTI_KEY_MASK
            if mk == CAP_MULTI_KEY_MASK:
                raise ProtocolError("CAPABILITIES: MULTI_KEY_CAP has the reserved value 3")
            if mk == CAP_MULTI_KEY_ONLY or (mk == CAP_MULTI_KEY_NEG and self.multi_key):
                other |= MULTI_KEY_CONN
                self.mk_conn = True
        return other

    def _parse_algorithms(self, rsp, other_offer):
        if len(rsp) < 36:
            raise ProtocolError("ALGORITHMS too short (%d bytes)" % len(rsp))
        length = _u16(rsp, 4)
        if length != len(rsp):
            raise ProtocolError("ALGORITHMS Length %d but %d bytes received" % (length, len(rsp)))
        self.meas_spec = rsp[6]
        self.other_params = rsp[7]
        self.meas_hash = _u32(rsp, 8)
        self.asym = _u32(rsp, 12)
        self.hash = _u32(rsp, 16)
        ext_asym, ext_hash = rsp[32], rsp[33]
        if ext_asym or ext_hash:
            raise ProtocolError("ALGORITHMS selects extended algorithms we did not offer")
        asym_offer, hash_offer = self._offer
        if not _one_bit(self.asym) or not (self.asym & asym_offer):
            raise ProtocolError("ALGORITHMS: BaseAsymSel 0x%X is not one of the offered 0x%X" % (self.asym, asym_offer))
        if not _one_bit(self.hash) or not (self.hash & hash_offer):
            raise ProtocolError("ALGORITHMS: BaseHashSel 0x%X is not one of the offered 0x%X" % (self.hash, hash_offer))
        if self.rsp_flags & CAP_MEAS_MASK:
            if self.meas_spec != 0x01:
                raise ProtocolError("ALGORITHMS: MeasurementSpecificationSel 0x%02X, expected DMTF" % self.meas_spec)
            if not _one_bit(self.meas_hash):
                raise ProtocolError("ALGORITHMS: MeasurementHashAlgo 0x%X must have exactly one bit" % self.meas_hash)
        else:
            if self.meas_hash:
                raise ProtocolError("ALGORITHMS: MeasurementHashAlgo set without MEAS_CAP")
        if self.version >= 0x12 and (self.other_params & 0x0F) & ~other_offer:
            raise ProtocolError("ALGORITHMS: opaque data format 0x%X not offered" % self.other_params)
        n = rsp[2] if self.version >= 0x11 else 0
        o = 36
        self.tables = {}
        last_type = 0
        for _ in range(n):
            if o + 2 > len(rsp):
                raise ProtocolError("ALGORITHMS: structure table overruns the message")
            typ, cnt = rsp[o], rsp[o + 1]
            fixed, ext = cnt >> 4, cnt & 0x0F
            if fixed != 2:
                raise ProtocolError("ALGORITHMS: structure table with %d fixed bytes" % fixed)
            if ext:
                raise ProtocolError("ALGORITHMS: structure table selects extended algorithms")
            if o + 4 > len(rsp):
                raise ProtocolError("ALGORITHMS: structure table overruns the message")
            if typ not in self._offer_tables:
                raise ProtocolError("ALGORITHMS: structure table of type %d we did not send" % typ)
            if typ <= last_type:
                raise ProtocolError("ALGORITHMS: structure tables out of order")
            last_type = typ
            val = _u16(rsp, o + 2)
            if val and (not _one_bit(val) or not (val & self._offer_tables[typ])):
                raise ProtocolError("ALGORITHMS: table type %d selects 0x%X, offered 0x%X"
                                    % (typ, val, self._offer_tables[typ]))
            self.tables[typ] = val
            o += 4
        if o != len(rsp):
            raise ProtocolError("ALGORITHMS: %d trailing bytes" % (len(rsp) - o))

    def init_connection(self):
        self.get_version()
        self.get_capabilities()
        self.negotiate_algorithms()

    # ---- digests / certificates
    def _reset_L(self):
        self.L = b""

    def _skip_challenge(self):
        """GET_MEASUREMENTS / KEY_EXCHANGE / PSK_EXCHANGE ... end an unfinished CHALLENGE
        sequence: M1 restarts at A, but only before the connection is authenticated
        (libspdm_reset_message_buffer_via_request_code, on both sides)."""
        if not self.authenticated:
            self.B = b""
            self.C = b""

    def get_digests(self):
        if not (self.rsp_flags & CAP_CERT):
            raise ProtocolError("responder has no CERT_CAP")
        self._reset_L()
        req = self._hdr(GET_DIGESTS)
        rsp = self.exchange(req, DIGESTS, crypto=True)
        mask = rsp[3]
        n = bin(mask).count("1")
        mk = self.version >= 0x13 and self.mk_conn
        ext = 4 * n if mk else 0   # KeyPairID, CertificateInfo (u8 each), KeyUsageMask (u16) per slot
        if len(rsp) != 4 + n * self.hash_size + ext:
            raise ProtocolError("DIGESTS: %d bytes for %d digests of %d bytes%s" % (
                len(rsp), n, self.hash_size, " with key pair fields" if mk else ""))
        if self.version >= 0x13:
            self.supported_slot_mask = rsp[2]
            if mask & ~rsp[2]:
                raise ProtocolError("DIGESTS: provisioned slots 0x%02X not within supported 0x%02X" % (mask, rsp[2]))
        self.slot_mask = mask
        self.digests = {}
        o = 4
        for slot in range(8):
            if mask & (1 << slot):
                self.digests[slot] = rsp[o:o + self.hash_size]
                o += self.hash_size
        if mk:
            self.key_pairs = parse_key_pair_fields(rsp, o, mask, self.digests)
            if not self.in_sess:
                self.D = bytes(rsp)   # D of the next KEY_EXCHANGE transcript
        self.B = req + rsp  # GET_DIGESTS resets B
        self.C = b""
        return dict(self.digests)

    def get_certificate(self, slot=0, progress=None, portion=None):
        """Read the whole chain buffer of `slot` (offset/length loop). `progress(done, total)`."""
        if not (self.rsp_flags & CAP_CERT):
            raise ProtocolError("responder has no CERT_CAP")
        if not 0 <= slot <= 7:
            raise ValueError("slot must be 0..7")
        self._reset_L()
        portion = portion or self.cert_portion
        buf = b""
        total = None
        while True:
            want = portion if total is None else min(portion, total - len(buf))
            want = max(1, min(want, 0xFFFF))
            req = self._hdr(GET_CERTIFICATE, slot) + struct.pack("<HH", len(buf), want)
            rsp = self.exchange(req, CERTIFICATE, name="GET_CERTIFICATE")
            if len(rsp) < 8:
                raise ProtocolError("CERTIFICATE too short")
            if rsp[2] & 0x0F != slot:
                raise ProtocolError("CERTIFICATE for slot %d, asked slot %d" % (rsp[2] & 0x0F, slot))
            if self.version >= 0x13:
                model = self.key_pairs.get(slot, {}).get("cert_model", 0) if self.mk_conn else 0
                if self.mk_conn and slot not in self.key_pairs:
                    model = rsp[3] & 0x07   # no DIGESTS seen for it: nothing to compare with
                if rsp[3] & 0x07 != model:
                    raise ProtocolError("CERTIFICATE: slot %d CertificateInfo %d, %s" % (
                        slot, rsp[3] & 0x07, "DIGESTS said %d" % model if self.mk_conn else
                        "must be 0 without a multi-key connection"))
            plen, rem = _u16(rsp, 4), _u16(rsp, 6)
            if len(rsp) != 8 + plen:
                raise ProtocolError("CERTIFICATE PortionLength %d but %d bytes follow" % (plen, len(rsp) - 8))
            if plen > want:
                raise ProtocolError("CERTIFICATE returned %d bytes, %d requested" % (plen, want))
            if plen == 0 and rem:
                raise ProtocolError("CERTIFICATE returned an empty portion with %d bytes remaining" % rem)
            buf += rsp[8:]
            self.B += req + rsp
            t = len(buf) + rem
            if total is None:
                total = t
            elif t != total:
                raise ProtocolError("CERTIFICATE: chain length changed from %d to %d" % (total, t))
            if total > 0xFFFF:
                raise ProtocolError("certificate chain longer than 65535 bytes")
            if progress:
                progress(len(buf), total)
            if rem == 0:
                break
        self.chains[slot] = buf
        return buf

    # ---- challenge
    def challenge(self, slot=0, summary=None, public_key=None, nonce=None, context=None):
        """CHALLENGE; verify CHALLENGE_AUTH. `summary`: 0 none, 1 TCB, 0xFF all (default: all if MEAS_CAP).
        Verifies with the leaf key of the retrieved chain of `slot` (or `public_key`)."""
        if not (self.rsp_flags & CAP_CHAL):
            raise ProtocolError("responder has no CHAL_CAP")
        self._reset_L()
        if summary is None:
            summary = 0xFF if self.rsp_flags & CAP_MEAS_MASK else 0
        nonce = nonce if nonce is not None else self.rng(32)
        req = self._hdr(CHALLENGE, slot, summary) + nonce
        if self.version >= 0x13:
            context = context if context is not None else self.rng(8)
            req += context
        rsp = self.exchange(req, CHALLENGE_AUTH, crypto=True)
        H = self.hash_size
        S = self.sig_size
        o = 4
        if rsp[2] & 0x0F != (slot & 0x0F):
            raise ProtocolError("CHALLENGE_AUTH for slot %d, challenged slot %d" % (rsp[2] & 0x0F, slot))
        if slot != 0xFF and not (rsp[3] & (1 << slot)):
            raise ProtocolError("CHALLENGE_AUTH SlotMask 0x%02X lacks slot %d" % (rsp[3], slot))
        need = o + H + 32 + (H if summary else 0) + 2
        if len(rsp) < need:
            raise ProtocolError("CHALLENGE_AUTH too short")
        chain_hash = rsp[o:o + H]
        o += H
        rsp_nonce = rsp[o:o + 32]
        o += 32
        summary_hash = None
        if summary:
            summary_hash = rsp[o:o + H]
            o += H
        olen = _u16(rsp, o)
        o += 2
        if olen > 1024:
            raise ProtocolError("CHALLENGE_AUTH OpaqueLength %d > 1024" % olen)
        opaque = rsp[o:o + olen]
        o += olen
        if self.version >= 0x13:
            if rsp[o:o + 8] != context:
                raise ProtocolError("CHALLENGE_AUTH RequesterContext does not echo ours")
            o += 8
        if len(rsp) != o + S:
            raise ProtocolError("CHALLENGE_AUTH is %d bytes, expected %d" % (len(rsp), o + S))
        sig = rsp[o:]
        if slot in self.chains:
            if chain_hash != hash_bytes(self.hash, self.chains[slot]):
                raise VerificationError("CHALLENGE_AUTH CertChainHash does not match the retrieved chain of slot %d" % slot)
        m1 = self.A + self.B + req + rsp[:o]
        key = public_key or self.leaf_public_key(slot)
        verify_spdm_signature(key, self.version, self.hash, SIGN_CTX_CHALLENGE, m1, sig)
        self.B = b""
        self.C = b""
        self.authenticated = True
        return {"slot": slot, "cert_chain_hash": chain_hash, "nonce": rsp_nonce, "summary_type": summary,
                "summary_hash": summary_hash, "opaque": opaque, "signature": sig, "m1_len": len(m1)}

    def leaf_public_key(self, slot):
        from cryptography import x509

        from .certs import split_chain_buffer

        if slot not in self.chains:
            raise ProtocolError("no certificate chain retrieved for slot %d" % slot)
        ders = split_chain_buffer(self.chains[slot], self.hash_size)[1]
        return x509.load_der_x509_certificate(ders[-1]).public_key()

    # ---- measurements
    def get_measurements(self, operation=0xFF, signed=True, slot=0, raw_bitstream=False,
                         public_key=None, nonce=None, context=None):
        """GET_MEASUREMENTS; returns dict(blocks=[...], count=..., signed=..., ...)."""
        if not (self.rsp_flags & CAP_MEAS_MASK):
            raise ProtocolError("responder has no MEAS_CAP")
        if signed and not (self.rsp_flags & CAP_MEAS_SIG):
            raise ProtocolError("responder cannot sign measurements (MEAS_CAP without signature)")
        v = self.version
        attr = (1 if signed else 0) | (2 if raw_bitstream and v >= 0x13 else 0)
        req = self._hdr(GET_MEASUREMENTS, attr, operation)
        if signed:
            nonce = nonce if nonce is not None else self.rng(32)
            req += nonce
            if v >= 0x11:
                req += bytes((slot,))
        if v >= 0x13:
            context = context if context is not None else self.rng(8)
            req += context
        try:
            rsp = self.exchange(req, MEASUREMENTS, crypto=signed)
        except ProtocolError:
            # an ERROR ends the measurement transcript L on both sides (the
            # responder resets it, as libspdm's requester and responder do)
            self.L = b""
            raise
        self._skip_challenge()
        if len(rsp) < 8:
            raise ProtocolError("MEASUREMENTS too short")
        nblocks = rsp[4]
        rlen = _u24(rsp, 5)
        o = 8
        if o + rlen + 32 + 2 > len(rsp):
            raise ProtocolError("MEASUREMENTS record length %d overruns the message" % rlen)
        record = rsp[o:o + rlen]
        o += rlen
        rsp_nonce = rsp[o:o + 32]
        o += 32
        olen = _u16(rsp, o)
        o += 2
        if olen > 1024:
            raise ProtocolError("MEASUREMENTS OpaqueLength %d > 1024" % olen)
        opaque = rsp[o:o + olen]
        o += olen
        if v >= 0x13:
            if rsp[o:o + 8] != context:
                raise ProtocolError("MEASUREMENTS RequesterContext does not echo ours")
            o += 8
        S = self.sig_size if signed else 0
        if len(rsp) != o + S:
            raise ProtocolError("MEASUREMENTS is %d bytes, expected %d" % (len(rsp), o + S))
        if operation == 0:
            if nblocks or rlen:
                raise ProtocolError("MEASUREMENTS count answer carries blocks")
            if rsp[2] in (0, 0xFF):
                raise ProtocolError("MEASUREMENTS: invalid total count %d" % rsp[2])
            blocks = []
        else:
            if operation == 0xFF and nblocks == 0:
                raise ProtocolError("MEASUREMENTS: no blocks for 'all'")
            if operation != 0xFF and nblocks != 1:
                raise ProtocolError("MEASUREMENTS: %d blocks for index %d" % (nblocks, operation))
            blocks = parse_measurement_record(record, nblocks)
            for b in blocks:
                if b["spec"] != self.meas_spec:
                    raise ProtocolError("measurement block %d has MeasurementSpecification 0x%02X" % (b["index"], b["spec"]))
                if operation != 0xFF and b["index"] != operation:
                    raise ProtocolError("MEASUREMENTS: block index %d for requested index %d" % (b["index"], operation))
            if operation == 0xFF:
                idx = [b["index"] for b in blocks]
                if len(set(idx)) != len(idx):
                    raise ProtocolError("MEASUREMENTS: duplicate block indices")
        content_changed = (rsp[3] >> 4) & 3 if v >= 0x12 else 0
        if not signed and content_changed and v >= 0x12:
            raise ProtocolError("MEASUREMENTS: content-changed bits set in an unsigned response")
        if signed and v >= 0x11 and (rsp[3] & 0x0F) != slot:
            raise ProtocolError("MEASUREMENTS for slot %d, asked slot %d" % (rsp[3] & 0x0F, slot))
        self.L += req + rsp[:o]
        result = {"count": rsp[2] if operation == 0 else len(blocks), "blocks": blocks, "signed": signed,
                  "nonce": rsp_nonce, "opaque": opaque, "content_changed": content_changed,
                  "record": record}
        if signed:
            l1 = (self.A if v >= 0x12 else b"") + self.L
            self.L = b""
            key = public_key or self.leaf_public_key(slot if v >= 0x11 else 0)
            try:
                verify_spdm_signature(key, v, self.hash, SIGN_CTX_MEASUREMENTS, l1, rsp[o:])
            finally:
                self.L = b""
            result["signature"] = rsp[o:]
            result["l1_len"] = len(l1)
        return result

    def measurement_count(self, slot=0):
        return self.get_measurements(0, signed=False, slot=slot)["count"]

    def measurement(self, index, signed=False, slot=0):
        return self.get_measurements(index, signed=signed, slot=slot)["blocks"][0]
