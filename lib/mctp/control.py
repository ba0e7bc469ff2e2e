"""MCTP control messages (DSP0236 section 12): responder and request helpers.

Message body: [0x00][Rq(7) D(6) instance(4:0)][command][data...]; a response
echoes the instance id with Rq=0, D=0, then a completion code.

respond(ep, body) -> response body or None (no answer: not a request, or a
    datagram).  ep is an mctp.endpoint.Endpoint (uses ep.eid, ep.static_eid,
    ep.discovered, ep.discovered_flag, ep.message_types(), ep.versions, ep.set_eid(),
    ep.owner and ep.sender(): who sent the request being answered).

EID assignment (DSP0236 Set Endpoint ID): the first requester that assigns an EID
becomes the endpoint's bus owner until the endpoint restarts; the owner is who
sent the Set EID, (physical address on the medium, source EID), since an MCTP
source EID alone is not authenticated.  From anyone else a Set EID is answered
"EID assignment rejected" with the present EID (DSP0236: already assigned by
another bus owner, not forced), and Force EID, Reset EID and Set Discovered
Flag are refused with completion code ERROR: only the bus owner moves the EID.
build_request(instance, command, data=b"") -> body
parse_response(body) -> (instance, command, completion_code, data) or None
"""
from uspdm.compat import const

# DSP0236 codes (private: compiled in, no names kept on a board)
_CMD_SET_EID = const(0x01)
_CMD_GET_EID = const(0x02)
_CMD_GET_UUID = const(0x03)
_CMD_GET_VERSION = const(0x04)
_CMD_GET_MSG_TYPES = const(0x05)

_CC_SUCCESS = const(0x00)
_CC_ERROR = const(0x01)
_CC_INVALID_DATA = const(0x02)
_CC_INVALID_LENGTH = const(0x03)
_CC_NOT_READY = const(0x04)
_CC_UNSUPPORTED_CMD = const(0x05)
_CC_MSG_TYPE_NOT_SUPPORTED = const(0x80)  # Get MCTP Version Support

_SET_EID_SET = const(0)
_SET_EID_FORCE = const(1)
_SET_EID_RESET = const(2)
_SET_EID_DISCOVERED = const(3)

_RQ = const(0x80)
_DGRAM = const(0x40)


def build_request(instance, command, data=b""):
    return bytes((0x00, _RQ | (instance & 0x1F), command & 0xFF)) + bytes(data)


def parse_response(body):
    """(instance, command, completion_code, data) of a control response."""
    if body is None or len(body) < 4 or body[0] != 0x00 or body[1] & _RQ:
        return None
    return body[1] & 0x1F, body[2], body[3], bytes(body[4:])


def _rsp(body, cc, data=b""):
    return bytes((0x00, body[1] & 0x1F, body[2], cc)) + data


def respond(ep, body):
    n = len(body)
    if n < 3 or body[0] != 0x00:
        return None
    if not body[1] & _RQ or body[1] & _DGRAM:
        return None  # a response, or a datagram (no response expected)
    cmd = body[2]
    if cmd == _CMD_SET_EID:
        if n != 5:
            return _rsp(body, _CC_INVALID_LENGTH)
        op = body[3] & 3
        eid = body[4]
        who = ep.sender()
        owner = ep.owner
        mine = owner is None or owner == who
        if op == _SET_EID_SET or op == _SET_EID_FORCE:
            if eid == 0x00 or eid == 0xFF:
                return _rsp(body, _CC_INVALID_DATA)
            if not mine:
                ep.refused += 1
                if op == _SET_EID_SET:
                    # assignment rejected (bits 5:4 = 01b), the present EID
                    return _rsp(body, _CC_SUCCESS, bytes((0x10, ep.eid, 0x00)))
                return _rsp(body, _CC_ERROR)
            ep.owner = who
            ep.set_eid(eid)
            ep.discovered = True
        elif op == _SET_EID_RESET:
            # only for endpoints with a static EID (the EID byte is ignored),
            # otherwise ERROR_INVALID_DATA
            if ep.static_eid is None:
                return _rsp(body, _CC_INVALID_DATA)
            if not mine:
                ep.refused += 1
                return _rsp(body, _CC_ERROR)
            ep.set_eid(ep.static_eid)
        else:  # set discovered flag; the EID byte is ignored.  Only bindings
            # with a Discovered flag (PCIe VDM, USB) support it; serial and
            # SMBus do not: ERROR_INVALID_DATA.
            if not ep.discovered_flag:
                return _rsp(body, _CC_INVALID_DATA)
            if not mine:
                ep.refused += 1
                return _rsp(body, _CC_ERROR)
            ep.discovered = True
        # status: assignment accepted (bits 5:4 = 0), no EID pool (bits 1:0 = 0)
        return _rsp(body, _CC_SUCCESS, bytes((0x00, ep.eid, 0x00)))
    if cmd == _CMD_GET_EID:
        if n != 3:
            return _rsp(body, _CC_INVALID_LENGTH)
        if ep.static_eid is None:
            t = 0x00  # simple endpoint, dynamic EID
        elif ep.eid == ep.static_eid:
            t = 0x02  # static EID, current EID matches it
        else:
            t = 0x03  # static EID, current EID differs
        return _rsp(body, _CC_SUCCESS, bytes((ep.eid, t, 0x00)))
    if cmd == _CMD_GET_VERSION:
        if n != 4:
            return _rsp(body, _CC_INVALID_LENGTH)
        t = body[3]
        vs = ep.versions.get(t)
        if not vs or (t != 0xFF and t not in ep.message_types()):
            return _rsp(body, _CC_MSG_TYPE_NOT_SUPPORTED)
        return _rsp(body, _CC_SUCCESS, bytes((len(vs),)) + b"".join(vs))
    if cmd == _CMD_GET_MSG_TYPES:
        if n != 3:
            return _rsp(body, _CC_INVALID_LENGTH)
        ts = ep.message_types()
        return _rsp(body, _CC_SUCCESS, bytes((len(ts),)) + bytes(ts))
    return _rsp(body, _CC_UNSUPPORTED_CMD)
