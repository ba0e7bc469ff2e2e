"""The MCTP stack: an endpoint (responder); the requester is mctp.requester.  Sans-I/O.

Responder (firmware, simulator):

    from mctp.endpoint import Endpoint
    ep = Endpoint(eid=8, mtu=64, max_message=4160)
    ep.register(0x05, spdm_handler)   # handler(src_eid, body) -> response body or None
    ep.on_eid_changed = persist       # called with the new EID after Set Endpoint ID
    out = ep.receive_packet(pkt, now_ms)   # -> list of response packets (maybe empty)
    out = ep.receive_packet(pkt, now_ms, phys=addr)   # with the sender's physical address (I2C)
    out = ep.respond(dest_eid, tag, body)  # a deferred response (TO=0) -> packets

  Endpoint(eid=0, mtu=64, max_message=4160, max_contexts=4, timeout_ms=5000,
           static_eid=None, secured=False, on_eid_changed=None, discovered_flag=False)
    mtu: payload bytes per packet sent (1..250); max_message: largest message
    reassembled (bigger ones are dropped); max_contexts: partial messages kept
    at once (the oldest is evicted); timeout_ms: idle partial messages expire
    (now_ms is any ms counter of the caller; going backwards also expires);
    static_eid: the static EID if the device has one (Get EID type, Set EID
    reset); secured: advertise type 0x06 in Get Message Type Support;
    discovered_flag: the binding has a Discovered flag (serial/SMBus: no).
    ep.versions: {message type: (4-byte version entries,)} for Get MCTP
    Version Support.
    ep.owner: the bus owner, (phys, source EID) of the first Set Endpoint ID
    accepted since start (None before); only it may move the EID again
    (mctp.control); ep.refused counts Set EID requests refused to others.

  Packets are raw MCTP packets (4-byte header + payload); wrap each one with
  mctp.serial.encode_frame() or mctp.smbus.encode() to send, and feed what
  mctp.serial.SerialDecoder / mctp.smbus.decode_target() give you to
  receive_packet().  body always starts with the message-type byte
  (0x05 SPDM, 0x06 secured SPDM); so does a handler's response body.

  A handler that wants to answer later returns None and keeps (src_eid,
  ep.last_tag) to call ep.respond() when ready.  Control messages (type 0) are
  answered by mctp.control (imported for each one and let go again).  Messages with the IC bit, unknown types and
  responses (TO=0) are dropped (responses go to ep.on_response(src, tag, body)
  if set).  Nothing raised by wire data escapes: drops are counted in
  ep.dropped (and ep.reasm's counters); a handler exception is counted in
  ep.handler_errors and kept in ep.last_error.

Requester (host tools; mctp.requester, not loaded on a board):

    from mctp.requester import Requester
    rq = Requester(eid=8, mtu=64)
    tag, pkts = rq.request(dest_eid, body)        # TO=1, tag allocated 0..7
    msg = rq.receive_packet(pkt, now_ms)          # -> (src_eid, tag, body) or None
    rq.control(dest_eid, command, data) / rq.next_instance() for control requests

EIDs: a packet is accepted when its destination is the own EID, 0 (null) or
0xFF (broadcast) and its source is not 0xFF.
"""
from mctp.packet import BASELINE_MTU, Reassembler, packetize
from uspdm.compat import const

_HDR_LEN = const(4)
_EID_NULL = const(0)
_EID_BROADCAST = const(0xFF)


class _Base:
    def __init__(self, eid, mtu, max_message, max_contexts, timeout_ms):
        if mtu < 1 or mtu > 250:
            # SMBus allows at most 250; serial 251 (count <= 255)
            raise ValueError("mtu")
        self.eid = eid
        self.mtu = mtu
        self.reasm = Reassembler(max_message, max_contexts, timeout_ms)
        self.dropped = 0
        self.last_tag = 0
        self.last_src = 0
        self.last_phys = None

    def _accept(self, pkt, now_ms):
        """(src, tag, to, body) of a completed message addressed to us, or None."""
        if len(pkt) < _HDR_LEN or (pkt[0] & 0x0F) != 1:
            self.dropped += 1
            return None
        d = pkt[1]
        if d != self.eid and d != _EID_NULL and d != _EID_BROADCAST:
            self.dropped += 1
            return None
        if pkt[2] == _EID_BROADCAST:
            self.dropped += 1
            return None
        m = self.reasm.feed(pkt, now_ms)
        if m is None or len(m[3]) == 0:
            return None
        return m


class Endpoint(_Base):
    def __init__(self, eid=0, mtu=BASELINE_MTU, max_message=4160, max_contexts=4,
                 timeout_ms=5000, static_eid=None, secured=False, on_eid_changed=None,
                 discovered_flag=False):
        _Base.__init__(self, eid, mtu, max_message, max_contexts, timeout_ms)
        self.static_eid = static_eid
        self.secured = secured
        self.discovered = False
        self.discovered_flag = discovered_flag  # the binding has a Discovered flag
        self.owner = None          # (phys, src EID) of the bus owner that assigned our EID
        self.refused = 0           # Set EID requests refused to others than the owner
        self.on_eid_changed = on_eid_changed
        self.on_response = None
        self.handlers = {}
        self._typed = {}
        self.handler_errors = 0
        self.last_error = None
        # Get MCTP Version Support entries (major, minor, update, alpha; BCD with the
        # high nibble set, 0xF? = "present"): MCTP 1.3.3, the SPDM bindings 1.0.0
        mctp, binding = b"\xf1\xf3\xf3\x00", b"\xf1\xf0\xf0\x00"
        self.versions = {
            0xFF: (mctp,),
            0x00: (mctp,),
            0x05: (binding,),  # DSP0275
            0x06: (binding,),  # DSP0276
        }

    def register(self, msg_type, handler, typed=False):
        """handler(src_eid, body) -> response body (starting with the type
        byte) or None.  msg_type 0x05 or 0x06 (any type but 0 works).
        typed=True: the handler's response is the message without the type
        byte, which is msg_type (the packets are cut from it as it is: a large
        response is not copied to prepend one byte)."""
        self.handlers[msg_type & 0x7F] = handler
        self._typed[msg_type & 0x7F] = bool(typed)

    def message_types(self):
        """Types advertised by Get Message Type Support."""
        ts = [0x00, 0x05]
        if self.secured:
            ts.append(0x06)
        return ts

    def sender(self):
        """Who sent the message being handled: (physical address or None, source EID)."""
        return (self.last_phys, self.last_src)

    def set_eid(self, eid):
        old = self.eid
        self.eid = eid
        if eid != old and self.on_eid_changed is not None:
            try:
                self.on_eid_changed(eid)
            except Exception as e:
                self.handler_errors += 1
                self.last_error = e

    def respond(self, dest_eid, tag, body, mt=None):
        """Packets of a response (TO=0, the request's tag) from this endpoint
        (mt: the type byte when body lacks it)."""
        return packetize(dest_eid, self.eid, tag, 0, body, self.mtu, mt)

    def receive_packet(self, pkt, now_ms=0, phys=None):
        """Feed one received packet; returns the list of packets to send back.
        phys: the sender's physical address on the medium (I2C: its SMBus
        address), None on a point-to-point link (serial)."""
        try:
            m = self._accept(pkt, now_ms)
            if m is None:
                return []
            src, tag, to, body = m
            self.last_tag = tag
            self.last_src = src
            self.last_phys = phys
            mt = body[0]
            if mt & 0x80:
                self.dropped += 1
                return []
            if not to:
                if self.on_response is not None:
                    self._call(self.on_response, src, tag, body)
                else:
                    self.dropped += 1
                return []
            if mt == 0x00:
                rsp = self._control(body)
            else:
                h = self.handlers.get(mt)
                if h is None:
                    self.dropped += 1
                    return []
                rsp = self._call(h, src, body)
            if not rsp:
                return []
            return packetize(src, self.eid, tag, 0, rsp, self.mtu, mt if self._typed.get(mt) else None)
        except Exception as e:  # never raise on wire data
            self.dropped += 1
            self.last_error = e
            return []

    def _control(self, body):
        """A control request (a few per boot): mctp.control is imported for it and
        let go again, so that its code does not stay in the heap in between (unless
        something else, a host's requester, keeps it loaded)."""
        import sys

        had = "mctp.control" in sys.modules
        from mctp import control

        try:
            return control.respond(self, body)
        finally:
            if not had:
                control = None
                sys.modules.pop("mctp.control", None)
                try:
                    delattr(sys.modules["mctp"], "control")
                except (AttributeError, KeyError):
                    pass

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except Exception as e:
            self.handler_errors += 1
            self.last_error = e
            return None
