"""Issue 11.1 / 11.2: chunk state belongs to its context.  A second requester on the bus (MCTP
source EIDs are not authenticated, so it speaks as the victim's EID) must not read a session's
large response with a plain CHUNK_GET, nor continue or disturb a session's CHUNK_SEND; a wrong
handle or sequence number discards the pending transfer; a request reassembled from CHUNK_SEND
inside a session meets the same filter as an unwrapped one (CPython, in process: our responder
and SessionManager against the host session requester, which verifies every signature)."""
import os
import struct

from uspdm import session as S
from uspdm_tools import session_requester as SR

import test_session_host as TSH


def sess(version="1.2", dts=160, link_cls=TSH.Link):
    mgr, r, link = TSH.board()
    link = link_cls(r, mgr)
    q = SR.SessionRequester(link, version=version, algs=("p384",), sleep=lambda t: None,
                            data_transfer_size=dts)
    q.init_connection()
    s = q.open_session(0)
    return mgr, r, link, q, s


def chunk_get(v, handle, seq=0):
    return bytes((v, 0x86, 0, handle)) + struct.pack("<H", seq)


def meas_req(v, signed=True):
    m = bytes((v, 0xE0, 1 if signed else 0, 0xFF))
    if signed:
        m += os.urandom(32) + b"\x00"
    if v >= 0x13:
        m += bytes(8)
    return m


class Snooper(TSH.Link):
    """After every secured exchange, the attacker tries every handle with a plain CHUNK_GET
    (type 0x05, the victim's source EID: the same connection state on the board)."""

    def __init__(self, r, mgr):
        TSH.Link.__init__(self, r, mgr)
        self.leaks = []
        self.armed = False

    def secured(self, body, timeout=None):
        out = TSH.Link.secured(self, body, timeout)
        if self.armed:
            v = self.r.version
            for h in range(256):
                rsp = self.r.handle(chunk_get(v, h))
                if rsp[1] == 0x06:
                    self.leaks.append(rsp)
        return out


def test_plain_chunk_get_never_sees_a_session_response():
    mgr, r, link, q, s = sess(link_cls=Snooper)
    link.armed = True
    inner = q.in_session(s)
    m = inner.get_measurements(0xFF, signed=True)   # larger than DataTransferSize 160: chunked
    assert m["blocks"] and link.leaks == []
    # the plain path's own chunking still works (and a session does not see it)
    link.armed = False
    q.get_certificate(0)


def test_wrong_handle_or_sequence_discards_the_transfer():
    mgr, r, link, q, s = sess()
    v = q.version
    rsp = q.secured_exchange(s, meas_req(v), None)
    assert rsp[1] == 0x7F and rsp[2] == 0x0F      # LargeResponse
    h = rsp[4]
    bad = q.secured_exchange(s, chunk_get(v, (h + 1) & 0xFF), None)
    assert bad[1] == 0x7F and bad[2] == 0x01     # InvalidRequest ...
    again = q.secured_exchange(s, chunk_get(v, h), None)
    assert again[1] == 0x7F                       # ... and the transfer is gone
    rsp = q.secured_exchange(s, meas_req(v), None)
    h = rsp[4]
    first = q.secured_exchange(s, chunk_get(v, h, 0), None)
    assert first[1] == 0x06
    bad = q.secured_exchange(s, chunk_get(v, h, 5), None)   # wrong sequence number
    assert bad[1] == 0x7F and bad[2] == 0x01
    assert q.secured_exchange(s, chunk_get(v, h, 1), None)[1] == 0x7F
    # the same rules on the plain path
    plain = r.handle(chunk_get(v, 0))
    assert plain[1] == 0x7F


def ok_meas(rsp):
    """MEASUREMENTS, or LargeResponse (it is larger than our DataTransferSize): served."""
    return rsp[1] == 0x60 or (rsp[1] == 0x7F and rsp[2] == 0x0F)


def chunk_send(v, handle, seq, data, large=None, last=False):
    m = bytes((v, 0x85, 1 if last else 0, handle)) + struct.pack("<HHI", seq, 0, len(data))
    if seq == 0:
        m += struct.pack("<I", large)
    return m + data


def send_chunked(q, s, msg, handle=7):
    """CHUNK_SEND `msg` inside session s in two chunks; returns the response carried by the last ACK."""
    v = q.version
    a = q.secured_exchange(s, chunk_send(v, handle, 0, msg[:30], large=len(msg)), None)
    assert a[1] == 0x05 and not a[2] & 1, a
    a = q.secured_exchange(s, chunk_send(v, handle, 1, msg[30:], last=True), None)
    assert a[1] == 0x05, a
    return a[6:]


def test_chunk_send_state_is_per_context():
    mgr, r, link, q, s = sess()
    v = q.version
    # the victim starts a large request inside its session ...
    req = meas_req(v) + bytes(20)     # 57 bytes: more than MinDataTransferSize
    a = q.secured_exchange(s, chunk_send(v, 9, 0, req[:30], large=len(req)), None)
    assert a[1] == 0x05
    # ... a plain CHUNK_SEND with the victim's EID cannot continue it (nothing pending there) ...
    hijack = r.handle(chunk_send(v, 9, 1, req[30:], last=True))
    assert hijack[1] == 0x05 and hijack[2] & 1     # EarlyErrorDetected
    assert hijack[6:8] == bytes((v, 0x7F))
    # ... and the victim's transfer is untouched
    a = q.secured_exchange(s, chunk_send(v, 9, 1, req[30:], last=True), None)
    assert a[1] == 0x05 and not a[2] & 1 and ok_meas(a[6:]), a
    # a wrong sequence number discards it
    a = q.secured_exchange(s, chunk_send(v, 3, 0, req[:30], large=len(req)), None)
    bad = q.secured_exchange(s, chunk_send(v, 3, 2, req[30:], last=True), None)
    assert bad[2] & 1
    again = q.secured_exchange(s, chunk_send(v, 3, 1, req[30:], last=True), None)
    assert again[2] & 1


def test_chunk_send_inside_a_session_meets_the_session_filter():
    mgr, r, link, q, s = sess(version="1.3")
    v = q.version
    # CHALLENGE (44 bytes at 1.3) is refused inside a session; wrapped in CHUNK_SEND too
    ch = bytes((v, 0x83, 0, 0xFF)) + os.urandom(32) + bytes(8)
    unwrapped = q.secured_exchange(s, ch, None)
    assert unwrapped[1] == 0x7F
    wrapped = send_chunked(q, s, ch)
    assert wrapped[:3] == unwrapped[:3], (wrapped.hex(), unwrapped.hex())
    # KEY_EXCHANGE from inside the first session: refused, no second session
    other = SR.SessionRequester(link, version="1.3", algs=("p384",), sleep=lambda t: None)
    other.__dict__.update({k: getattr(q, k) for k in ("version", "rsp_flags", "asym", "hash", "meas_hash",
                                                       "rsp_dts", "rsp_max_msg", "ct_exponent", "A",
                                                       "chains", "digests", "sessions", "other_params",
                                                       "meas_spec", "_offer_tables", "tables")
                           if hasattr(q, k)})
    kx = _key_exchange_bytes(q)
    unwrapped = q.secured_exchange(s, kx, None)
    assert unwrapped[1] == 0x7F
    wrapped = send_chunked(q, s, kx, handle=8)
    assert wrapped[:3] == unwrapped[:3]
    assert mgr.count() == 1
    # what is allowed inside a session still works wrapped
    m = send_chunked(q, s, meas_req(v, signed=False) + bytes(40), handle=9)
    assert ok_meas(m), m
    q.heartbeat(s)


def _key_exchange_bytes(q):
    """A well-formed KEY_EXCHANGE request (P-384 DHE, slot 0) as our requester builds it."""
    sent = []

    class Catch:
        def spdm(self, req, timeout=None):
            sent.append(bytes(req))
            raise TimeoutError("captured")

    t, q.t = q.t, Catch()
    try:
        q.key_exchange(0)
    except Exception:
        pass
    finally:
        q.t = t
    assert sent and sent[0][1] == 0xE4
    return sent[0]
