"""MCTP over SMBus/I2C (DSP0237) on a board: target-mode receive, controller send.

Receive: a `machine.I2CTarget` (MicroPython 1.26+) captures every write
transfer addressed to us into one of a few preallocated slots (a bounded
queue; nothing is allocated in the IRQ handler).  Two capture modes, chosen
at run time from what the port offers:

  "hard": the port has IRQ_WRITE_REQ (rp2).  A hard IRQ handler copies the
          bytes out of the peripheral FIFO as they arrive (ADDR_MATCH_WRITE
          opens a slot, WRITE_REQ fills it, END_WRITE commits it), so back
          to back packets are never lost while Python is busy signing.
  "mem":  no hard IRQ (esp32 family).  The target has a memory buffer with
          mem_addrsize=0, so every write lands at mem[0..]; a soft
          END_WRITE handler copies it into a slot (its length from the
          SMBus byte count) and clears the buffer so a truncated transfer
          cannot reuse stale bytes.

A full queue drops the new transfer and counts it (MCTP is lossy; the
requester retries).  The main loop takes transfers with I2CPort.recv(),
which checks them with mctp.smbus (the target does not see its own address
byte; it is prepended for the PEC) and returns (src_addr7, packet).

Send: every message goes out as a controller (master) write to the peer's
address (DSP0237: both ends are masters), through a `machine.I2C` on a
second peripheral wired to the same SDA/SCL lines (see the README wiring).

Fault injection (tests, labs): I2CPort.inject(kind, count) corrupts the PEC
of, truncates, or (on the simulated bus only) NAKs the next `count`
outgoing writes.
"""
from mctp import smbus

SLOT_SIZE = 260     # address byte excluded: cmd, count(<=255), ..., PEC
FIFO_CHUNK = 16


class Capture:
    """The IRQ side: a ring of preallocated slots.  Only the IRQ handler
    advances `_wr`, only the main loop advances `_rd` (no lock needed)."""

    def __init__(self, slots=8, size=SLOT_SIZE):
        self.n = slots
        self.size = size
        self.slots = [bytearray(size) for _ in range(slots)]
        self.lens = [0] * slots
        self._wr = 0          # transfers committed (mod 0x10000)
        self._rd = 0          # transfers consumed (mod 0x10000)
        self._cur = -1        # slot being filled (hard mode), -1 none, -2 discarding
        self._pos = 0
        self._scratch = bytearray(FIFO_CHUNK)
        self._mem = None
        self._irqobj = None
        self._f_addr = 0
        self._f_wreq = 0
        self._f_end = 0
        self.mode = None
        # counters (ints; incremented in the IRQ: small ints never allocate)
        self.captured = 0
        self.overflow = 0
        self.too_long = 0
        self.empty = 0

    # -- attach to a machine.I2CTarget class --------------------------------
    def open(self, I2CTarget, id, addr, scl=None, sda=None, prefer_hard=True):
        """Create the target and hook its IRQ; returns the target object."""
        kw = {}
        if scl is not None:
            kw["scl"] = scl
        if sda is not None:
            kw["sda"] = sda
        if prefer_hard and hasattr(I2CTarget, "IRQ_WRITE_REQ") and hasattr(I2CTarget, "IRQ_ADDR_MATCH_WRITE"):
            t = I2CTarget(id, addr, **kw)
            self._f_addr = I2CTarget.IRQ_ADDR_MATCH_WRITE
            self._f_wreq = I2CTarget.IRQ_WRITE_REQ
            self._f_end = I2CTarget.IRQ_END_WRITE
            self.mode = "hard"
            self._irqobj = t.irq(handler=self._irq_hard, trigger=self._f_addr | self._f_wreq | self._f_end, hard=True)
        else:
            self._mem = bytearray(self.size)
            t = I2CTarget(id, addr, mem=self._mem, mem_addrsize=0, **kw)
            self._f_end = I2CTarget.IRQ_END_WRITE
            self.mode = "mem"
            self._irqobj = t.irq(handler=self._irq_mem, trigger=self._f_end, hard=False)
        return t

    # -- IRQ handlers: no allocation, no exceptions --------------------------
    def _begin(self):
        if ((self._wr - self._rd) & 0xFFFF) >= self.n:
            self._cur = -2
            self.overflow += 1
        else:
            self._cur = self._wr % self.n
        self._pos = 0

    def _irq_hard(self, t):
        f = self._irqobj.flags()
        if f & self._f_addr:
            self._begin()
        if f & self._f_wreq:
            if self._cur == -1:
                self._begin()
            k = t.readinto(self._scratch)
            cur = self._cur
            if cur >= 0:
                s = self.slots[cur]
                p = self._pos
                sc = self._scratch
                for i in range(k):
                    if p < self.size:
                        s[p] = sc[i]
                    p += 1
                self._pos = p
        if f & self._f_end:
            self._commit()

    def _commit(self):
        cur = self._cur
        self._cur = -1
        if cur < 0:
            return
        n = self._pos
        if n > self.size:
            self.too_long += 1
            return
        if n == 0:
            self.empty += 1
            return
        self.lens[cur] = n
        self._wr = (self._wr + 1) & 0xFFFF
        self.captured += 1

    def _irq_mem(self, t):
        m = self._mem
        n = m[1] + 3       # command, count, <count bytes>, PEC
        if n > self.size:
            n = self.size
        if ((self._wr - self._rd) & 0xFFFF) >= self.n:
            self.overflow += 1
            for i in range(n):
                m[i] = 0
            return
        cur = self._wr % self.n
        s = self.slots[cur]
        for i in range(n):
            s[i] = m[i]
            m[i] = 0
        self.lens[cur] = n
        self._wr = (self._wr + 1) & 0xFFFF
        self.captured += 1

    # -- main-loop side ---------------------------------------------------
    def pending(self):
        return ((self._wr - self._rd) & 0xFFFF) != 0

    def peek(self):
        """(slot bytearray, length) of the oldest transfer, or None."""
        if not self.pending():
            return None
        i = self._rd % self.n
        return self.slots[i], self.lens[i]

    def release(self):
        if self.pending():
            self._rd = (self._rd + 1) & 0xFFFF


class I2CPort:
    """One MCTP-over-SMBus port: own address, capture queue, controller."""

    def __init__(self, own_addr, capture, controller, target=None, retries=1, sleep_ms=None):
        self.addr = own_addr & 0x7F
        self.cap = capture
        self.ctl = controller
        self.target = target
        self.rx = smbus.SmbusRx(self.addr)
        self.retries = retries
        self._sleep = sleep_ms
        self.sent = 0
        self.nak = 0
        self.send_errors = 0
        self._fault = None
        self._fault_n = 0

    def pending(self):
        return self.cap.pending()

    def recv(self):
        """(src_addr7, packet) of the next valid queued transfer, else None.
        Invalid transfers are dropped and counted in self.rx.errors."""
        while True:
            got = self.cap.peek()
            if got is None:
                return None
            buf, n = got
            r = self.rx.feed(memoryview(buf)[:n])
            self.cap.release()
            if r is not None:
                return r[0], bytes(r[1])

    def inject(self, kind, count=1, addr=0):
        """Arm a fault on the next `count` outgoing writes: "pec", "truncate"
        or "nak".  A simulated bus does it on the wire (any sender, or only
        writes to `addr`); on hardware this port corrupts its own writes
        (pec/truncate).  Returns False if unsupported."""
        f = getattr(self.ctl, "inject", None)
        if f is not None:
            return f(kind, count, addr)
        if kind not in ("pec", "truncate"):
            return False
        self._fault = kind
        self._fault_n = count
        return True

    def send(self, dest_addr, packet):
        """Master-write one MCTP packet to dest_addr; True when ACKed."""
        try:
            frame = smbus.encode(dest_addr, self.addr, packet)
        except ValueError:
            self.send_errors += 1
            return False
        data = memoryview(frame)[1:]
        if self._fault_n > 0:
            self._fault_n -= 1
            b = bytearray(data)
            if self._fault == "pec":
                b[-1] ^= 0x5A
            else:
                b = b[:len(b) // 2]
            data = b
        tries = self.retries + 1
        while tries > 0:
            tries -= 1
            try:
                n = self.ctl.writeto(dest_addr, data)
                if n is None or n >= len(data):
                    self.sent += 1
                    return True
            except OSError:
                pass
            self.nak += 1
            if tries and self._sleep is not None:
                self._sleep(2)
        self.send_errors += 1
        return False

    def stats(self):
        c = self.cap
        return {"rx_ok": self.rx.ok, "rx_dropped": self.rx.dropped, "rx_errors": dict(self.rx.errors),
                "captured": c.captured, "overflow": c.overflow, "too_long": c.too_long,
                "tx": self.sent, "nak": self.nak, "tx_failed": self.send_errors, "mode": c.mode}


def probe(machine_mod):
    """Why I2C target mode is unavailable on this MicroPython, or None."""
    import sys

    v = getattr(sys.implementation, "version", (0, 0, 0))
    if tuple(v[:2]) < (1, 26):
        return "MicroPython %d.%d has no I2C target mode (needs 1.26+)" % (v[0], v[1])
    if machine_mod is None or not hasattr(machine_mod, "I2CTarget"):
        return "this MicroPython port has no machine.I2CTarget"
    return None


def open_port(machine_mod, cfg, sleep_ms=None, log=None):
    """Build an I2CPort from board settings, or return (None, reason).

    cfg keys: i2c_addr, i2c_target_id, i2c_target_scl, i2c_target_sda,
    i2c_ctl_id, i2c_ctl_scl, i2c_ctl_sda, i2c_freq, i2c_slots."""
    why = probe(machine_mod)
    if why:
        return None, why
    try:
        Pin = machine_mod.Pin

        def pin(k):
            v = cfg.get(k)
            return None if v is None else Pin(v)

        cap = Capture(cfg.get("i2c_slots", 8))
        t = cap.open(machine_mod.I2CTarget, cfg.get("i2c_target_id", 0), cfg.get("i2c_addr", 0x1D),
                     pin("i2c_target_scl"), pin("i2c_target_sda"), cfg.get("i2c_hard_irq", True))
        ctl = machine_mod.I2C(cfg.get("i2c_ctl_id", 1), scl=pin("i2c_ctl_scl"), sda=pin("i2c_ctl_sda"),
                              freq=cfg.get("i2c_freq", 100000))
        return I2CPort(cfg.get("i2c_addr", 0x1D), cap, ctl, t, sleep_ms=sleep_ms), None
    except Exception as e:
        return None, "I2C setup failed: %r" % (e,)
