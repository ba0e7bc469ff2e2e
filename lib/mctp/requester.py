"""The host side of the MCTP stack: build requests (TO=1) and reassemble the
responses (TO=0).  Sans-I/O; see mctp.endpoint for the responder and the packet
rules.  Its own module so that a board, which only responds, does not load it."""
from mctp import control
from mctp.endpoint import _Base
from mctp.packet import BASELINE_MTU, packetize


class Requester(_Base):
    """Host-side: build requests (TO=1) and reassemble the responses (TO=0)."""

    def __init__(self, eid=8, mtu=BASELINE_MTU, max_message=65536, max_contexts=8, timeout_ms=10000):
        _Base.__init__(self, eid, mtu, max_message, max_contexts, timeout_ms)
        self._tag = 7
        self._instance = 31

    def next_tag(self):
        self._tag = (self._tag + 1) & 7
        return self._tag

    def next_instance(self):
        self._instance = (self._instance + 1) & 0x1F
        return self._instance

    def request(self, dest_eid, body, tag=None):
        """(tag, packets) of a request message to dest_eid."""
        if tag is None:
            tag = self.next_tag()
        return tag, packetize(dest_eid, self.eid, tag, 1, body, self.mtu)

    def control(self, dest_eid, command, data=b"", instance=None):
        """(tag, instance, packets) of a control request."""
        if instance is None:
            instance = self.next_instance()
        tag, pkts = self.request(dest_eid, control.build_request(instance, command, data))
        return tag, instance, pkts

    def receive_packet(self, pkt, now_ms=0):
        """(src_eid, tag, body) when a response message completes, else None."""
        try:
            m = self._accept(pkt, now_ms)
            if m is None:
                return None
            src, tag, to, body = m
            if to:
                self.dropped += 1  # a request to us: not handled here
                return None
            return src, tag, bytes(body)
        except Exception:
            self.dropped += 1
            return None
