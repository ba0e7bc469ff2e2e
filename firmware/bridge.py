"""Bridge mode: a board as a USB-to-MCTP/I2C bridge.

The host speaks DSP0253 (MCTP over serial) to the bridge board; every MCTP
packet it sends is forwarded unchanged as one DSP0237 write (address,
command 0x0F, byte count, our source address, packet, PEC) to the PRoT's I2C
address, and every MCTP packet written to the bridge's own I2C address comes
back to the host as a serial frame.  Packetization, tags and reassembly stay
end to end between the host and the PRoT (the bridge forwards packets, not
messages), so both sides must use a transmission unit that fits SMBus
(<= 250 payload bytes; the baseline 64 always does).

The bridge itself answers only packets addressed to its own EID (setting
`bridge_eid`, default 0xFE; everything else is forwarded, including the null
EID 0): MCTP control, and a small vendor-defined message (type 0x7F, the
IANA form, enterprise number 0 = lab use) for host tools and tests:

  request  7F 00 00 00 00 <cmd> <args>      response 7F 00 00 00 00 <cmd> <status> <data>
  cmd 1 INFO            -> own I2C address, target address, capture mode (0 none, 1 hard, 2 mem), version 1
  cmd 2 SET_TARGET addr -> status 0, or 2 (invalid address)
  cmd 3 INJECT kind count addr  (kind 1 PEC, 2 truncate, 3 NAK; addr 0 = any)
                        -> status 0, or 5 (not supported here)
  cmd 4 STATS           -> u16 LE: forwarded, returned, rx_ok, rx_dropped, overflow, nak, tx_failed

`uspdm ... --via-i2c ADDR` sends SET_TARGET before anything else.
"""
from mctp import serial as mserial
from mctp.endpoint import Endpoint

VENDOR_TYPE = 0x7F
PEN = b"\x00\x00\x00\x00"
CMD_INFO = 1
CMD_SET_TARGET = 2
CMD_INJECT = 3
CMD_STATS = 4
FAULTS = {1: "pec", 2: "truncate", 3: "nak"}
MODES = {None: 0, "hard": 1, "mem": 2}


def vendor_request(cmd, args=b""):
    return bytes((VENDOR_TYPE,)) + PEN + bytes((cmd,)) + bytes(args)


class Bridge:
    def __init__(self, port, target_addr=0x1D, eid=0xFE, now=None, log=None):
        self.port = port
        self.target = target_addr & 0x7F
        self.decoder = mserial.SerialDecoder()
        self.ep = Endpoint(eid=eid, static_eid=eid)
        self.ep.register(VENDOR_TYPE, self._vendor)
        self._now = now or (lambda: 0)
        self._log = log
        self.forwarded = 0
        self.returned = 0
        self.failed = 0

    def log(self, msg):
        if self._log is not None:
            try:
                self._log(msg)
            except Exception:
                pass

    def serial_idle(self):
        return self.decoder.buffered() <= 1  # a lone flag: no frame data yet

    def serial_in(self, data):
        """Bytes from the host; returns bytes to send back on the serial."""
        out = []
        try:
            for pkt in self.decoder.feed(data):
                if len(pkt) >= 4 and pkt[1] == self.ep.eid:
                    for p in self.ep.receive_packet(pkt, self._now()):
                        out.append(mserial.encode_frame(p))
                elif self.port.send(self.target, pkt):
                    self.forwarded += 1
                else:
                    self.failed += 1
        except Exception as e:
            self.log("bridge: error on input: %r" % (e,))
            self.decoder.reset()
        return b"".join(out)

    def step(self):
        """Return what the PRoT wrote to us, as serial frames."""
        out = []
        for _ in range(16):
            r = self.port.recv()
            if r is None:
                break
            out.append(mserial.encode_frame(r[1]))
            self.returned += 1
        return b"".join(out)

    def pending(self):
        return self.port.pending()

    def _vendor(self, src, body):
        if len(body) < 6 or bytes(body[1:5]) != PEN:
            return None
        cmd = body[5]
        a = body[6:]
        head = bytes((VENDOR_TYPE,)) + PEN + bytes((cmd,))
        if cmd == CMD_INFO:
            mode = MODES.get(getattr(self.port.cap, "mode", None), 0)
            return head + bytes((0, self.port.addr, self.target, mode, 1))
        if cmd == CMD_SET_TARGET:
            if len(a) < 1 or not (0 < a[0] < 0x78):
                return head + b"\x02"
            self.target = a[0]
            self.log("bridge: target I2C address 0x%02x" % a[0])
            return head + b"\x00"
        if cmd == CMD_INJECT:
            if len(a) < 3 or a[0] not in FAULTS:
                return head + b"\x02"
            ok = self.port.inject(FAULTS[a[0]], a[1], a[2])
            return head + (b"\x00" if ok else b"\x05")
        if cmd == CMD_STATS:
            p = self.port
            vals = (self.forwarded, self.returned, p.rx.ok, p.rx.dropped, p.cap.overflow, p.nak, p.send_errors)
            out = bytearray(head + b"\x00")
            for v in vals:
                v &= 0xFFFF
                out.append(v & 0xFF)
                out.append(v >> 8)
            return bytes(out)
        return head + b"\x05"
