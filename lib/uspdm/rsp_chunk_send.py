"""CHUNK_SEND: reassembly of a large request, then the inner request is
dispatched by the core; CHUNK_GET: the next chunk of a large response (loaded
on demand by uspdm.responder: large messages are rare)."""
from uspdm import demand
from uspdm.compat import const
from uspdm.compat import p16, u16

# DSP0274 codes used here (private: compiled in, not in the module's dict)
_CHUNK_EARLY_ERROR = const(0x01)
_CHUNK_GET = const(0x86)
_CHUNK_SEND = const(0x85)
_CHUNK_SEND_ACK = const(0x05)
_ERROR = const(0x7F)
_ERR_BUSY = const(0x03)
_ERR_INVALID_REQUEST = const(0x01)
_ERR_LARGE_RESPONSE = const(0x0F)
_ERR_UNEXPECTED_REQUEST = const(0x04)
_CAP_CHUNK = const(0x20000)
_ST_CAPS = const(2)   # uspdm.responder.ST_CAPS
_V12 = const(0x12)
_GET_VERSION = const(0x84)
_MIN_DATA_TRANSFER_SIZE_12 = const(0x2A)


def _checks(r, code):
    if r.state < _ST_CAPS:
        return r._error(_ERR_UNEXPECTED_REQUEST)
    if r.version < _V12 or not (r.flags & _CAP_CHUNK):
        return r._unsupported(code)
    if not (r.req_flags & _CAP_CHUNK):
        return r._error(_ERR_UNEXPECTED_REQUEST)
    return None


def chunk_get(r, msg):
    err = _checks(r, _CHUNK_GET)
    if err is not None:
        return err
    if len(msg) < 6:
        return r._error(_ERR_INVALID_REQUEST)
    o = r.out
    if o is None:
        return r._error(_ERR_UNEXPECTED_REQUEST)
    if msg[3] != o.handle or u16(msg, 4) != o.seq:
        # a wrong handle or sequence number ends the transfer: nobody gets to guess
        r.out = None
        return r._error(_ERR_INVALID_REQUEST)
    data, last = o.chunk(r.version, r.req_dts)
    if data is None:
        r.out = None
        return r._error(_ERR_INVALID_REQUEST)
    if last:
        r.out = None
    return data


def chunk_send(r, msg):
    err = _checks(r, _CHUNK_SEND)
    if err is not None:
        return err
    # uspdm.chunk is a demand module of its own (responder._deliver needs it too), never
    # imported by this one: dropping either forgets it once
    ch = demand.need("chunk")
    pr = ch.parse_chunk_send(msg)
    if pr is None:
        return r._error(_ERR_INVALID_REQUEST)
    last, handle, seq, size, large, at = pr
    # Every chunk but the last: MinDataTransferSize <= CHUNK_SEND size <= our
    # DataTransferSize (larger ones got RequestTooLarge in _handle); the large
    # message must exceed MinDataTransferSize (libspdm; validator 19.1 sends
    # 42-byte chunks whatever our DataTransferSize).
    mn = _MIN_DATA_TRANSFER_SIZE_12
    inc = r.inc
    bad = False
    room = getattr(r.cfg, "buffer_room", None)   # the board's cap on buffered bytes
    if room is not None and size > room():
        # no room under the cap (other transfers hold it): this transfer ends, try later
        r.inc = None
        return (bytes((r.version, _CHUNK_SEND_ACK, _CHUNK_EARLY_ERROR, handle)) + p16(seq)
                + r._error(_ERR_BUSY))
    if inc is None:
        if (seq != 0 or large is None or size > len(msg) - at or at + size < mn or last
                or large <= mn or large > r.cfg.max_spdm_msg_size or size > large):
            bad = True
        else:
            inc = r.inc = ch.Incoming(handle, large)
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
    v = r.version
    ack = bytes((v, _CHUNK_SEND_ACK, 0, handle)) + p16(seq)
    if bad:
        r.inc = None
        return (bytes((v, _CHUNK_SEND_ACK, _CHUNK_EARLY_ERROR, handle)) + p16(seq)
                + r._error(_ERR_INVALID_REQUEST))
    if not inc.done():
        return ack
    inner = bytes(inc.buf)
    r.inc = None
    if len(inner) < 4:
        return ack + r._error(_ERR_INVALID_REQUEST)
    if inner[1] in (_CHUNK_SEND, _CHUNK_GET, _GET_VERSION):
        return ack + r._error(_ERR_INVALID_REQUEST)
    s = r.cur_session
    resp = r.sessions.wrapped_request(s, inner) if s is not None else None
    if resp is None:
        resp = r._dispatch(inner)
    if resp is None:
        return ack
    if isinstance(resp, memoryview):
        resp = bytes(resp)   # from the shared response buffer: kept past this request
    if resp[1] != _ERROR and len(ack) + len(resp) > r.req_dts:
        r._handle_ctr = (r._handle_ctr + 1) & 0xFF
        r.out = ch.Outgoing(r._handle_ctr, resp)
        resp = r._error(_ERR_LARGE_RESPONSE, 0, bytes((r._handle_ctr,)))
    return ack + resp
