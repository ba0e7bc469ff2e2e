"""DMTF spdm-emu's socket protocol: the "platform port" that spdm_requester_emu,
spdm_responder_emu and spdm_device_validator_sample speak over TCP (port 2323
by default).  Written from the protocol's published description:

  every message, both ways:  command u32 | transport type u32 | size u32 | payload
                              (big endian)                                (size bytes)
  commands:   0x0001 NORMAL    an SPDM message in the transport's encoding
              0xDEAD TEST      hello (the requester sends "Client Hello!\\0",
                               the responder answers TEST "Server Hello!\\0")
              0xFFFD CONTINUE  this client is done; serve the next one
              0xFFFE SHUTDOWN  this client is done and the responder stops
                               (STOP in older spdm-emu)
              0xFFFF UNKNOWN   the answer to a command the responder does not know
  transports: 0 NONE, 1 MCTP, 2 PCI_DOE, 3 TCP.  With MCTP (the tools' default)
              a NORMAL payload is the MCTP message: the message type byte
              (0x05 SPDM, 0x06 secured SPDM per DSP0276) and the body, without
              the MCTP packet header; no padding.

The requester sends TEST first, then NORMAL messages, each answered by exactly
one NORMAL message, and ends with SHUTDOWN or CONTINUE (its `--exe_mode`).

EmuServer serves one client after another from a select loop and hands each
NORMAL payload to its owner (`uspdm sim --emu-port`, `uspdm bridge`), who
relays it to the board over MCTP and calls reply() with the answer.
EmuClient is our own client (tests; `uspdm attest --port emu://HOST:PORT`).
"""
import socket
import struct
import time

DEFAULT_PORT = 2323

CMD_NORMAL = 0x0001
CMD_CONTINUE = 0xFFFD
CMD_SHUTDOWN = 0xFFFE
CMD_UNKNOWN = 0xFFFF
CMD_TEST = 0xDEAD

TRANS_NONE = 0x00
TRANS_MCTP = 0x01
TRANS_PCI_DOE = 0x02
TRANS_TCP = 0x03
TRANSPORTS = {TRANS_NONE: "NONE", TRANS_MCTP: "MCTP", TRANS_PCI_DOE: "PCI_DOE", TRANS_TCP: "TCP"}
COMMANDS = {CMD_NORMAL: "NORMAL", CMD_CONTINUE: "CONTINUE", CMD_SHUTDOWN: "SHUTDOWN", CMD_UNKNOWN: "UNKNOWN",
            CMD_TEST: "TEST"}

SERVER_HELLO = b"Server Hello!\x00"
CLIENT_HELLO = b"Client Hello!\x00"
HDR = struct.Struct(">III")
MAX_PAYLOAD = 1 << 20   # far above any SPDM message; a larger size is a broken client


class EmuProtocolError(Exception):
    pass


try:
    from .link import Unreachable   # one exception for every link kind (the CLI catches it)
except ImportError:  # pragma: no cover - lib/ not importable
    class Unreachable(Exception):
        """No answer (connection refused or closed, timeout)."""


def encode(cmd, payload=b"", transport=TRANS_MCTP):
    return HDR.pack(cmd, transport, len(payload)) + bytes(payload)


def command_name(cmd):
    return COMMANDS.get(cmd, "0x%04X" % cmd)


class Reader:
    """Incremental parser: feed(bytes) -> [(command, transport, payload)]."""

    def __init__(self, max_payload=MAX_PAYLOAD):
        self.buf = bytearray()
        self.max_payload = max_payload

    def feed(self, data):
        self.buf += data
        out = []
        while len(self.buf) >= HDR.size:
            cmd, trans, size = HDR.unpack_from(self.buf)
            if size > self.max_payload:
                raise EmuProtocolError("payload size %d is over %d" % (size, self.max_payload))
            if len(self.buf) < HDR.size + size:
                break
            out.append((cmd, trans, bytes(self.buf[HDR.size:HDR.size + size])))
            del self.buf[:HDR.size + size]
        return out


class EmuServer:
    """spdm-emu's platform port for a select loop, one client after another
    (others wait in the listen backlog).

        srv = EmuServer("127.0.0.1", 2323, on_request=relay, log=print)
        select(srv.fds() + ..., ...); srv.handle(fd) for each readable fd of srv
        srv.reply(body)    # the board's answer to the request handed to relay(body)
        srv.tick()         # timeouts: an unanswered request gets an empty NORMAL reply
        srv.stop           # True after SHUTDOWN (unless keep_serving)

    on_request(payload) is called for each NORMAL message (MCTP type byte and
    body); its answer must come through reply() before the next request is
    read.  TEST, CONTINUE and SHUTDOWN are answered here as spdm_responder_emu
    answers them; any other command gets UNKNOWN and ends the connection.  A
    client using another transport than MCTP is told so in the log and
    disconnected.
    """

    def __init__(self, host, port, on_request, log=None, timeout=60.0, keep_serving=False, verbose=False):
        self.on_request = on_request
        self.log = log or (lambda s: None)
        self.timeout = timeout
        self.keep_serving = keep_serving
        self.verbose = verbose
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, int(port)))
        self.listener.listen(4)
        self.addr = "%s:%d" % self.listener.getsockname()[:2]
        self.client = None
        self.peer = None
        self.reader = None
        self.inbox = []
        self.waiting = None      # (deadline, request payload) while the board is asked
        self.stop = False
        self.stats = {"clients": 0, "requests": 0, "timeouts": 0}

    def fds(self):
        if self.stop:
            return []
        if self.client is None:
            return [self.listener]
        if self.waiting is not None:
            return []            # strictly one request at a time: read the next after the answer
        return [self.client]

    def handle(self, f):
        if f is self.listener:
            self._accept()
        elif f is self.client:
            self._read()

    def _accept(self):
        try:
            conn, addr = self.listener.accept()
        except OSError:
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client, self.peer = conn, "%s:%d" % addr[:2]
        self.reader = Reader()
        self.inbox = []
        self.stats["clients"] += 1
        self.log("emu: client %s connected" % self.peer)

    def _drop(self, why):
        if self.client is not None:
            self.log("emu: client %s %s" % (self.peer, why))
            try:
                self.client.close()
            except OSError:
                pass
        self.client = None
        self.reader = None
        self.inbox = []
        self.waiting = None

    def _send(self, cmd, payload=b""):
        try:
            self.client.sendall(encode(cmd, payload))
            return True
        except OSError as e:
            self._drop("lost (%s)" % e)
            return False

    def _read(self):
        try:
            data = self.client.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop("disconnected")
            return
        try:
            self.inbox.extend(self.reader.feed(data))
        except EmuProtocolError as e:
            self._drop("sent a malformed message (%s): disconnected" % e)
            return
        self._process()

    def _process(self):
        while self.client is not None and self.waiting is None and self.inbox:
            cmd, trans, payload = self.inbox.pop(0)
            if trans != TRANS_MCTP:
                self._drop("uses transport %s; this port serves MCTP only (spdm-emu's --trans MCTP, the "
                           "default): disconnected" % TRANSPORTS.get(trans, "0x%x" % trans))
                return
            if cmd == CMD_NORMAL:
                if not payload:
                    self._send(CMD_NORMAL, b"")
                    continue
                self.stats["requests"] += 1
                self.waiting = (time.monotonic() + self.timeout, payload)
                self.on_request(payload)
            elif cmd == CMD_TEST:
                self._send(CMD_TEST, SERVER_HELLO)
            elif cmd == CMD_CONTINUE:
                self._send(CMD_CONTINUE)
                self._drop("finished (CONTINUE): serving the next client")
            elif cmd == CMD_SHUTDOWN:
                self._send(CMD_SHUTDOWN)
                if self.keep_serving:
                    self._drop("finished (SHUTDOWN; --emu-keep-serving): serving the next client")
                else:
                    self._drop("finished (SHUTDOWN): stopping, as spdm_responder_emu does")
                    self.stop = True
            else:
                self._send(CMD_UNKNOWN)
                self._drop("sent unknown command 0x%04X: answered UNKNOWN, disconnected" % cmd)

    def reply(self, body):
        """The answer to the request being relayed (b"" when there is none)."""
        if self.waiting is None or self.client is None:
            self.waiting = None
            return
        self.waiting = None
        if self._send(CMD_NORMAL, body):
            self._process()   # anything that arrived together with the request

    def tick(self):
        """An unanswered request past its deadline gets an empty NORMAL reply
        (the requester then reports an error instead of waiting forever)."""
        w = self.waiting
        if w is not None and time.monotonic() > w[0]:
            self.stats["timeouts"] += 1
            body = w[1]
            self.log("emu: no answer from the board within %.0f s to MCTP type 0x%02x%s; replied empty" % (
                self.timeout, body[0], (" code 0x%02x" % body[2]) if body[0] == 0x05 and len(body) > 2 else ""))
            self.reply(b"")

    def close(self):
        self._drop("closed")
        try:
            self.listener.close()
        except OSError:
            pass


class EmuClient:
    """Our client of the platform port (the requester side), with the
    SerialLink calls the verifier and the session requester use:
    request(body) (MCTP type byte first), spdm(req), secured(body)."""

    is_emu = True

    def __init__(self, host, port, timeout=10.0, hello=True, connect_timeout=None):
        self.timeout = timeout
        self.reader = Reader()
        self.where = "%s:%d" % (host, port)
        self.stats = {"tx_bytes": 0, "rx_bytes": 0, "messages": 0}
        deadline = time.monotonic() + (connect_timeout if connect_timeout is not None else min(timeout, 5.0))
        while True:
            try:
                self.sock = socket.create_connection((host, port), timeout=timeout)
                break
            except OSError as e:
                if time.monotonic() > deadline:
                    raise Unreachable("cannot connect to %s: %s" % (self.where, e))
                time.sleep(0.1)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hello:
            cmd, payload = self.command(CMD_TEST, CLIENT_HELLO)
            if cmd != CMD_TEST:
                self.close()
                raise Unreachable("%s answered TEST with %s" % (self.where, command_name(cmd)))
            self.hello = payload

    def command(self, cmd, payload=b"", timeout=None):
        """Send one message; return the answer (command, payload)."""
        timeout = self.timeout if timeout is None else timeout
        data = encode(cmd, payload)
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise Unreachable("%s: %s" % (self.where, e))
        self.stats["tx_bytes"] += len(data)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unreachable("no response from %s within %.1f s" % (self.where, timeout))
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError as e:
                raise Unreachable("%s: %s" % (self.where, e))
            if not chunk:
                raise Unreachable("%s closed the connection" % self.where)
            self.stats["rx_bytes"] += len(chunk)
            try:
                msgs = self.reader.feed(chunk)
            except EmuProtocolError as e:
                raise ValueError("%s: %s" % (self.where, e))
            if msgs:
                if len(msgs) > 1:
                    raise ValueError("%s sent %d answers to one message" % (self.where, len(msgs)))
                cmd, trans, payload = msgs[0]
                if trans != TRANS_MCTP:
                    raise ValueError("%s answered with transport %d" % (self.where, trans))
                return cmd, payload

    def request(self, body, eid=None, timeout=None):
        cmd, rsp = self.command(CMD_NORMAL, body, timeout)
        if cmd != CMD_NORMAL:
            raise ValueError("%s answered NORMAL with %s" % (self.where, command_name(cmd)))
        if not rsp:
            raise Unreachable("%s relayed no answer (the board did not respond)" % self.where)
        self.stats["messages"] += 1
        return rsp

    def spdm(self, req, timeout=None, eid=None):
        rsp = self.request(b"\x05" + bytes(req), timeout=timeout)
        if rsp[0] != 0x05:
            raise ValueError("not an SPDM response: %s" % rsp[:8].hex())
        return rsp[1:]

    def secured(self, body, timeout=None, eid=None):
        rsp = self.request(b"\x06" + bytes(body), timeout=timeout)
        if rsp[0] != 0x06:
            raise ValueError("not a secured SPDM response: %s" % rsp[:8].hex())
        return rsp[1:]

    def control(self, command, data=b"", eid=None, timeout=None, instance=0):
        rsp = self.request(bytes((0x00, 0x80 | (instance & 0x1F), command)) + bytes(data), timeout=timeout)
        if len(rsp) < 4 or rsp[0] != 0x00 or rsp[2] != command:
            raise ValueError("malformed control response %s" % rsp.hex())
        return rsp[3], rsp[4:]

    def finish(self, cmd=CMD_CONTINUE, timeout=5.0):
        """End the connection with CONTINUE (the server serves the next client)
        or SHUTDOWN (it stops); returns the server's answer command."""
        try:
            c, _ = self.command(cmd, b"", timeout)
            return c
        finally:
            self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def parse_url(port):
    """'emu://HOST:PORT' or 'emu://PORT' -> (host, port); None for anything else."""
    if not isinstance(port, str) or not port.startswith("emu://"):
        return None
    rest = port[6:].rstrip("/")
    host, _, p = rest.rpartition(":")
    try:
        return (host or "127.0.0.1"), int(p or DEFAULT_PORT)
    except ValueError:
        raise ValueError("bad emu URL %r (emu://HOST:PORT)" % port)


EMU_EID = 9   # the relay's own MCTP EID (a pty or TCP client of the simulator usually has 8)


class MctpRelay:
    """MCTP requester side of a relay onto a DSP0253 byte stream (the
    simulated board's USB serial): request(body) -> bytes to write; feed(bytes
    from the board) -> the response body when it is complete, else None."""

    def __init__(self, eid=EMU_EID, dest=0, mtu=64):
        from mctp import serial as mserial
        from mctp.requester import Requester

        self._enc = mserial.encode_frame
        self.dec = mserial.SerialDecoder()
        self.rq = Requester(eid=eid, mtu=mtu, max_message=65536 + 64, max_contexts=8, timeout_ms=30000)
        self.dest = dest
        self.tag = None

    def request(self, body):
        tag, pkts = self.rq.request(self.dest, body)
        self.tag = tag
        return b"".join(self._enc(p) for p in pkts)

    def feed(self, data, now_ms=None):
        if now_ms is None:
            now_ms = int(time.monotonic() * 1000)
        got = None
        for pkt in self.dec.feed(data):
            m = self.rq.receive_packet(pkt, now_ms)
            if m is not None and self.tag is not None and m[1] == self.tag:
                self.tag = None
                got = m[2]
        return got
