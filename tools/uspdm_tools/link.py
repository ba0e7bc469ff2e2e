"""Host side MCTP link over a serial port (DSP0253), with pyserial.

    with SerialLink("/dev/ttyACM0") as link:          # or socket://127.0.0.1:5555
        body = link.request(b"\\x00\\x80\\x02")           # MCTP control Get Endpoint ID
        rsp = link.spdm(b"\\x10\\x84\\x00\\x00")            # SPDM GET_VERSION -> VERSION

The framing, packetization and reassembly are the portable lib/mctp code the
board runs, so the host and the board share one implementation of DSP0253;
tests check it independently with pymctp.
"""
import time

from mctp import serial as mserial
from mctp.requester import Requester

HOST_EID = 8          # our (the requester's) EID: a bus owner / BMC usually has 8
DEFAULT_TARGET = 0    # the null EID reaches the board whether or not it has an EID


BRIDGE_EID = 0xFE     # a uspdm bridge board's own EID (firmware/bridge.py)
_VENDOR = b"\x7f\x00\x00\x00\x00"  # vendor-defined (IANA) message, enterprise 0: the bridge's commands


class Unreachable(Exception):
    """No answer from the endpoint (port missing, board silent, timeout)."""


class SerialLink:
    def __init__(self, port, eid=DEFAULT_TARGET, host_eid=HOST_EID, baudrate=115200, timeout=10.0, mtu=64,
                 trace=None, via_i2c=None, bridge_eid=BRIDGE_EID):
        """via_i2c: reach the PRoT at this I2C address through a uspdm bridge
        board on `port` (the bridge forwards everything not addressed to its
        own EID as DSP0237 writes to that address)."""
        import serial  # pyserial

        self.eid = eid
        self.host_eid = host_eid
        self.timeout = timeout
        self.mtu = mtu
        self.trace = trace
        self._decoder = mserial.SerialDecoder()
        self._rq = Requester(eid=host_eid, mtu=mtu, max_message=65536 + 64, max_contexts=8, timeout_ms=30000)
        self.stats = {"tx_bytes": 0, "rx_bytes": 0, "tx_packets": 0, "rx_packets": 0}
        try:
            self.ser = serial.serial_for_url(port, baudrate=baudrate, timeout=0.05, do_not_open=True)
            try:
                self.ser.dtr = True  # a board's USB CDC drops output until DTR is asserted
            except Exception:
                pass
            self.ser.open()
        except (serial.SerialException, OSError, ValueError) as e:
            raise Unreachable("cannot open %s: %s" % (port, e))
        try:
            self.ser.reset_input_buffer()
        except Exception:
            pass
        self.bridge_eid = bridge_eid
        self.via_i2c = via_i2c
        if via_i2c is not None:
            try:
                st, _ = self.bridge_command(2, bytes((via_i2c,)), timeout=min(timeout, 5.0))
            except Unreachable:
                self.close()
                raise Unreachable("no uspdm bridge answers on %s (needed for --via-i2c)" % port)
            if st != 0:
                self.close()
                raise Unreachable("the bridge refused I2C address 0x%02x" % via_i2c)

    def bridge_command(self, cmd, args=b"", timeout=None):
        """A bridge board's own command (firmware/bridge.py): (status, data).
        1 INFO, 2 SET_TARGET addr, 3 INJECT kind count addr, 4 STATS."""
        rsp = self.request(_VENDOR + bytes((cmd,)) + bytes(args), eid=self.bridge_eid, timeout=timeout)
        if len(rsp) < 7 or rsp[:5] != _VENDOR or rsp[5] != cmd:
            raise ValueError("malformed bridge response %s" % rsp.hex())
        return rsp[6], rsp[7:]

    def close(self):
        try:
            self.ser.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_packets(self, packets):
        data = b"".join(mserial.encode_frame(p) for p in packets)
        if self.trace:
            for p in packets:
                self.trace(">", bytes(p))
        self.ser.write(data)
        self.ser.flush()
        self.stats["tx_bytes"] += len(data)
        self.stats["tx_packets"] += len(packets)

    def send_raw(self, data):
        """Write raw bytes to the line (tests: garbage, truncated frames)."""
        self.ser.write(data)
        self.ser.flush()

    def request(self, body, eid=None, timeout=None):
        """Send one MCTP message (body starts with the message type byte) and
        return the response body from the same endpoint and tag."""
        eid = self.eid if eid is None else eid
        timeout = self.timeout if timeout is None else timeout
        tag, packets = self._rq.request(eid, body)
        self.send_packets(packets)
        return self.receive(tag, timeout)

    def receive(self, tag, timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unreachable("no response within %.1f s" % timeout)
            # Block for the first byte (up to the port timeout), then take
            # whatever else has arrived: no fixed wait per message.
            data = self.ser.read(1)
            if not data:
                continue
            try:
                waiting = self.ser.in_waiting
            except Exception:
                waiting = 0
            if waiting:
                data += self.ser.read(waiting)
            self.stats["rx_bytes"] += len(data)
            for pkt in self._decoder.feed(data):
                self.stats["rx_packets"] += 1
                if self.trace:
                    self.trace("<", bytes(pkt))
                msg = self._rq.receive_packet(pkt, int(time.monotonic() * 1000))
                if msg is not None and msg[1] == tag:
                    return msg[2]

    def control(self, command, data=b"", eid=None, timeout=None, instance=None):
        """MCTP control request; returns (completion_code, response data)."""
        inst = self._rq.next_instance() if instance is None else instance & 0x1F
        rsp = self.request(bytes((0x00, 0x80 | inst, command)) + bytes(data), eid=eid, timeout=timeout)
        if len(rsp) < 4 or rsp[0] != 0x00 or rsp[2] != command:
            raise ValueError("malformed control response %s" % rsp.hex())
        return rsp[3], rsp[4:]

    def spdm(self, req, timeout=None, eid=None):
        """SPDM request (without the 0x05 type byte) -> SPDM response."""
        rsp = self.request(b"\x05" + bytes(req), eid=eid, timeout=timeout)
        if not rsp or rsp[0] != 0x05:
            raise ValueError("not an SPDM response: %s" % rsp[:8].hex())
        return rsp[1:]

    def secured(self, body, timeout=None, eid=None):
        """Secured SPDM message (type 0x06) round trip: body after the type byte."""
        rsp = self.request(b"\x06" + bytes(body), eid=eid, timeout=timeout)
        if not rsp or rsp[0] != 0x06:
            raise ValueError("not a secured SPDM response: %s" % rsp[:8].hex())
        return rsp[1:]


def likely_fix(port):
    """What to check when nothing answers on `port` (one phrase for a message)."""
    p = str(port)
    if p.startswith("socket://"):
        return "is `uspdm sim --tcp` running at that address?"
    import os

    if not os.path.exists(p):
        return "no such port: is the board plugged in? (ls /dev/ttyACM* /dev/ttyUSB*)"
    real = os.path.realpath(p)
    if real.startswith("/dev/pts/"):
        return ("this looks like the simulator's pseudo-terminal: is `uspdm sim` still running "
                "(it prints its port when it starts)?")
    return ("is the uspdm firmware on the board and running? (`make deploy BOARD=rp2040|esp32 PORT=%s`; "
            "a board held at its REPL does not speak MCTP: reset it)" % p)


def check_reachable(link, port, timeout, who="uspdm"):
    """Once, before a command's flow: the board answers MCTP Get Endpoint ID
    within `timeout` (else Unreachable, one line with the likely fix).  Says
    what it waits for when a person is watching (stderr is a terminal)."""
    import sys

    if getattr(link, "is_emu", False):
        return   # emu://: the socket's TEST hello answered (and a DMTF responder emu has no MCTP control)
    t = min(timeout, 5.0)
    if sys.stderr.isatty():
        sys.stderr.write("%s: waiting up to %g s for the board on %s to answer MCTP (Get Endpoint ID)...\n"
                         % (who, t, port))
        sys.stderr.flush()
    try:
        link.control(0x02, timeout=t)
    except Unreachable:
        raise Unreachable("nothing answers MCTP on %s (no reply to Get Endpoint ID within %g s): %s"
                          % (port, t, likely_fix(port)))
    except ValueError:
        pass   # something answered: the flow reports what is wrong with it


def open_link(port, **kw):
    """A SerialLink for a serial port or pyserial URL; for emu://HOST:PORT an
    emu.EmuClient: DMTF spdm-emu's socket protocol (spdm_responder_emu, or
    `uspdm sim --emu-port` / `uspdm bridge --emu-port`), with the same calls."""
    from . import emu

    addr = emu.parse_url(port)
    if addr is None:
        return SerialLink(port, **kw)
    if kw.get("via_i2c") is not None:
        raise Unreachable("--via-i2c does not apply to %s (the emu port's owner picks the board)" % port)
    return emu.EmuClient(addr[0], addr[1], timeout=kw.get("timeout", 10.0))
