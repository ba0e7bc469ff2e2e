"""The simulated I2C bus: two simulated boards wired by SMBus/I2C (DSP0237).

    bus = Bus()
    m = SimMachine(bus, hard=True)       # a `machine` lookalike on this bus
    t = m.I2CTarget(0, 0x1D, ...)        # like machine.I2CTarget (rp2-like
                                         #   hard IRQ events, or esp32-like
                                         #   mem + soft END_WRITE with hard=False)
    m.I2C(1).writeto(0x10, data)         # like machine.I2C: a controller write

A controller write carries exactly the bytes a real bus does after the
address byte (command 0x0F, byte count, source address, MCTP packet, PEC):
the receiving target gets them through the same IRQ event sequence the
MicroPython ports produce, so firmware/i2c.py runs unchanged.  A write to an
address nobody answers is NAKed (OSError EIO, as machine.I2C raises).

Fault injection: bus.inject(kind, count=1, addr=0) applies to the next
`count` writes (to `addr`, or any address with 0): "pec" flips PEC bits,
"truncate" delivers only the first half of the bytes, "nak" makes the
target not acknowledge (the write raises OSError).

I2CSystem puts a bridge board (whose USB serial is the simulator's serial
port) and a responder board (the PRoT, the firmware Device) on one bus:
`uspdm sim --i2c`.
"""
EIO = 5


class Bus:
    def __init__(self, trace=None):
        self.targets = {}
        self.faults = []
        self.writes = 0
        self.naks = 0
        self.trace = trace     # callable(addr, bytes, fault) or None
        # after_write(addr): lets the receiving board's loop run, as it does
        # concurrently on real hardware (a write takes ~6 ms at 100 kHz)
        self.after_write = None
        self._busy = {}

    def inject(self, kind, count=1, addr=0):
        if kind not in ("pec", "truncate", "nak") or count < 1:
            return False
        self.faults.append([kind, count, addr])
        return True

    def _take_fault(self, addr):
        for f in self.faults:
            if f[2] == 0 or f[2] == addr:
                f[1] -= 1
                if f[1] <= 0:
                    self.faults.remove(f)
                return f[0]
        return None

    def write(self, addr, data):
        n = len(data)   # a truncated transfer looks complete to its sender (a glitch on the wire)
        self.writes += 1
        fault = self._take_fault(addr)
        t = self.targets.get(addr)
        if self.trace is not None:
            self.trace(addr, bytes(data), fault)
        if t is None or fault == "nak":
            self.naks += 1
            raise OSError(EIO)
        if fault == "pec":
            data = bytearray(data)
            data[-1] ^= 0xA5
        elif fault == "truncate":
            data = bytes(data[:max(1, len(data) // 2)])
        t._deliver(bytes(data))
        if self.after_write is not None and not self._busy.get(addr):
            self._busy[addr] = True
            try:
                self.after_write(addr)
            finally:
                self._busy[addr] = False
        return n


class _Irq:
    def __init__(self):
        self._flags = 0

    def flags(self):
        return self._flags


class _Target:
    FIFO = 16

    def __init__(self, bus, hard, id, addr, mem=None, mem_addrsize=8):
        self.bus = bus
        self.hard = hard
        self.addr = addr
        self.mem = mem
        self.mem_addrsize = mem_addrsize
        self.handler = None
        self.trigger = 0
        self._irq = _Irq()
        self._fifo = b""
        if addr in bus.targets:
            raise OSError(EIO)
        bus.targets[addr] = self

    def deinit(self):
        self.bus.targets.pop(self.addr, None)

    def irq(self, handler=None, trigger=0x30, hard=False):
        if hard and not self.hard:
            raise ValueError("hard IRQ unsupported")
        if (trigger & 0x0F) and not hard:
            raise ValueError("hard IRQ required")
        self.handler = handler
        self.trigger = trigger
        return self._irq

    def readinto(self, buf):
        n = min(len(buf), len(self._fifo))
        for i in range(n):
            buf[i] = self._fifo[i]
        self._fifo = self._fifo[n:]
        return n

    def _event(self, flag):
        if self.handler is not None and (self.trigger & flag):
            self._irq._flags = flag
            self.handler(self)

    def _deliver(self, data):
        if self.mem is not None:
            # mem_addrsize=0: the write lands at mem[0..], wrapping
            m = self.mem
            if self.mem_addrsize:
                a = data[0] % len(m)
                data = data[1:]
            else:
                a = 0
            for b in data:
                m[a] = b
                a = (a + 1) % len(m)
            self._event(0x20)
            return
        self._event(0x02)           # ADDR_MATCH_WRITE
        i = 0
        while i < len(data):
            self._fifo = data[i:i + self.FIFO]
            i += self.FIFO
            self._event(0x08)       # WRITE_REQ
            self._fifo = b""        # unread bytes are lost
        self._event(0x20)           # END_WRITE


class _TargetFactory:
    def __init__(self, bus, hard):
        self._bus = bus
        self._hard = hard
        self.IRQ_END_READ = 0x10
        self.IRQ_END_WRITE = 0x20
        if hard:
            self.IRQ_ADDR_MATCH_READ = 0x01
            self.IRQ_ADDR_MATCH_WRITE = 0x02
            self.IRQ_READ_REQ = 0x04
            self.IRQ_WRITE_REQ = 0x08

    def __call__(self, id, addr, addrsize=7, mem=None, mem_addrsize=8, scl=None, sda=None):
        return _Target(self._bus, self._hard, id, addr, mem, mem_addrsize)


class _Controller:
    def __init__(self, bus, id=0, scl=None, sda=None, freq=100000):
        self.bus = bus

    def writeto(self, addr, buf, stop=True):
        return self.bus.write(addr, buf)

    def inject(self, kind, count=1, addr=0):
        return self.bus.inject(kind, count, addr)


class _Pin:
    def __init__(self, n, *a, **k):
        self.n = n


class SimMachine:
    """The parts of `machine` the I2C code uses, wired to one Bus."""

    Pin = _Pin

    def __init__(self, bus, hard=True):
        self.bus = bus
        self.I2CTarget = _TargetFactory(bus, hard)

    def I2C(self, id=0, scl=None, sda=None, freq=100000):
        return _Controller(self.bus, id, scl, sda, freq)


def _hex(b):
    return b.hex() if b else ""


class I2CSystem:
    """A bridge board and a responder board on one simulated bus.  Offers
    the simulator host the Device interface (feed/idle/pending, *_hex)."""

    def __init__(self, device, prot_addr=0x1D, bridge_addr=0x10, hard=True, log=None, trace=False):
        from bridge import Bridge
        from i2c import Capture, I2CPort
        from serve import Service

        self.log = log or print
        self.bus = Bus(self._trace if trace else None)
        m = SimMachine(self.bus, hard)

        def port(addr):
            cap = Capture(8)
            t = cap.open(m.I2CTarget, 0, addr, prefer_hard=hard)
            return I2CPort(addr, cap, m.I2C(1), t)

        self.device = device
        self.prot_port = port(prot_addr)
        self.bridge_port = port(bridge_addr)
        self.prot = Service(device=device, port=self.prot_port)
        self.bridge = Bridge(self.bridge_port, prot_addr, log=self.log)
        self.front = Service(bridge=self.bridge)
        self._prot_addr = prot_addr
        self._serial_out = []
        self.bus.after_write = self._receiver_runs
        self.log("sim: I2C bus: bridge 0x%02x -> responder 0x%02x (capture %s)" % (
            bridge_addr, prot_addr, self.prot_port.cap.mode))

    def _trace(self, addr, data, fault):
        self.log("i2c: %02x %s%s" % (addr << 1, _hex(data), (" [fault: %s]" % fault) if fault else ""))

    def _receiver_runs(self, addr):
        if addr == self._prot_addr:
            p = self.prot_port
            dev = self.device
            while True:
                r = p.recv()
                if r is None:
                    break
                for a, pk in dev.feed_i2c(r[0], r[1]):
                    p.send(a, pk)
        else:
            self._serial_out.append(self.front.step())

    def feed(self, data):
        out = self.front.serial_in(data)
        return out + self.idle()

    def idle(self):
        for _ in range(64):
            self.prot.step()
            self._serial_out.append(self.front.step())
            if not (self.prot_port.pending() or self.bridge_port.pending() or self.device.i2c_out):
                break
        out = b"".join(self._serial_out)
        self._serial_out = []
        return out

    def pending(self):
        return bool(self._serial_out) or self.prot.pending() or self.front.pending()

    def heap_sample(self):
        """The responder board's heap figures (see Device.heap_sample)."""
        return self.device.heap_sample()

    def feed_hex(self, h):
        return _hex(self.feed(bytes.fromhex(h)))

    def idle_hex(self):
        return _hex(self.idle())

    def stats_line(self):
        return "i2c writes %d naks %d; responder %r; bridge %r" % (
            self.bus.writes, self.bus.naks, self.prot_port.stats(), self.bridge_port.stats())
