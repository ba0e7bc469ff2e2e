"""The emulated Cortex-M0 board (`uspdm sim --m0`): MicroPython built for the
RP2040's instruction set (armv6m) running under qemu-system-arm, with a hard
heap cap and exact instruction counts (see tools/uspdm_tools/m0board.py).

Board module API: see boards/sim/board.py.  What differs from a real RP2040:
  code          packed by the host into a ROMFS image at /rom (main.py,
                board.mpy, firmware .mpy files at /rom, lib/ at /rom/lib);
                stock load copies each module into the heap on import
  flash         no writable filesystem: reads come from the host's --flash
                folder packed read-only at /rom/flash; writes are kept in RAM
                and reported to the host, which writes them into the folder
  RNG           none (no os.urandom): the host passes fresh entropy at boot
                (seed()), the DRBG is seeded from it
  clock         time.ticks_us() counts thousands of instructions; ticks_ms()
                here is the estimated RP2040 time (1 k-instr ~ 9.8 us: 133 MHz,
                ~1.3 cycles per instruction), so the signing-time policy,
                CT/RDT exponents and timeouts are those of an RP2040
  serial        the qemu UART is the only channel: serve() speaks a framed
                protocol with the host (serial bytes, flash writes, stats);
                anything printed outside a frame is a log line
"""
import sys
import time

NAME = "m0"
MCU = "Cortex-M0 (emulated, qemu)"

DEFAULTS = {
    "serial_mtu": 64,
    "default_eid": 0,
    "asym_priority": ["p384", "p256"],
    "sessions": 1,
}
ROM = "/rom"
FLASH = "/rom/flash"
VERBOSE = False          # set by the host's boot script (uspdm sim --m0 -v)
MAP = 0                  # heap samples with the block map (mem_info(1)) left (USPDM_M0_MAP=N)
T_BOOT = 0               # time.ticks_us() when the boot script started

# frames to the host: MAGIC, type, length (2 bytes LE), payload
MAGIC = b"\x00\x1bU"

_storage = None
_drbg = None
_cfg = None
_pool = b""
_pool_ctr = 0


def frame(t, payload=b"", more=b""):
    """One frame to the host: payload then more (written as they are: a large
    answer is not copied to join them)."""
    n = len(payload) + len(more)
    w = sys.stdout.buffer.write
    w(MAGIC + bytes((t, n & 0xFF, n >> 8)))
    if payload:
        w(payload)
    if more:
        w(more)


class Flash:
    """Read-only flash image plus the writes made since boot (in RAM,
    reported to the host with a frame so that they persist)."""

    def __init__(self, root=FLASH):
        self.root = root
        self.over = {}       # name -> bytes, or None when deleted
        self.on_write = None

    def _path(self, name):
        if not name or name.startswith("/") or ".." in name.split("/"):
            raise ValueError("bad storage name")
        return self.root + "/" + name

    def read(self, name):
        p = self._path(name)
        if name in self.over:
            return self.over[name]
        try:
            with open(p, "rb") as f:
                return f.read()
        except OSError:
            return None

    def read_into(self, name, offset, buf):
        """Bytes of `name` from `offset` into buf (the number read), or None when
        it does not exist: the part asked for, never the whole file."""
        p = self._path(name)
        if name in self.over:
            from uspdm.compat import read_into_from   # (resident)

            return read_into_from(self.over[name], offset, buf)
        try:
            with open(p, "rb") as f:
                if offset:
                    f.seek(offset)
                return f.readinto(buf) or 0
        except OSError:
            return None

    def exists(self, name):
        return self.read(name) is not None

    def write(self, name, data):
        self._path(name)
        data = bytes(data)
        self.over[name] = data
        frame(0x57, name.encode() + b"\x00" + data)    # 'W'

    def delete(self, name):
        self._path(name)
        had = self.read(name) is not None
        self.over[name] = None
        if had:
            frame(0x44, name.encode())                  # 'D'
        return had

    def list(self, folder):
        import os

        pre = folder.rstrip("/") + "/"
        names = set()
        try:
            for n in os.listdir(self._path(folder)):
                names.add(n)
        except OSError:
            pass
        for k, v in self.over.items():
            if k.startswith(pre) and "/" not in k[len(pre):]:
                if v is None:
                    names.discard(k[len(pre):])
                else:
                    names.add(k[len(pre):])
        return sorted(names)


def storage():
    global _storage
    if _storage is None:
        _storage = Flash()
    return _storage


def config():
    global _cfg
    if _cfg is None:
        from boardlib import load_settings

        cfg = load_settings(storage(), DEFAULTS)
        for k in ("i2c_addr",):   # no I2C on this board
            cfg.pop(k, None)
        _cfg = cfg
    return _cfg


def seed(b):
    """Entropy from the host (the emulated chip has no RNG)."""
    global _pool
    _pool = bytes(b)


def entropy(n):
    global _pool, _pool_ctr
    out = _pool[:n]
    _pool = _pool[n:]
    while len(out) < n:   # pool used up: stretch it (a reseed after ~2^48 requests)
        import hashlib

        _pool_ctr += 1
        out += hashlib.sha256(b"uspdm-m0-pool" + bytes((_pool_ctr & 0xFF,)) + out).digest()
    return out[:n]


def drbg():
    global _drbg
    if _drbg is None:
        from uspdm.crypto.drbg import from_source

        _drbg = from_source(entropy, b"uspdm-m0")
    return _drbg


# Estimated RP2040 milliseconds from the instruction counter: ms += k-instr * 98 / 10000.
_clk = [0, 0, 0]   # last ticks_us, ms, remainder (x 1/10000 ms)


def ticks_ms():
    c = _clk
    now = time.ticks_us()
    d = time.ticks_diff(now, c[0])
    c[0] = now
    if d > 0:
        r = c[2] + d * 98
        c[1] = (c[1] + r // 10000) & 0x3FFFFFFF
        c[2] = r % 10000
    return c[1]


def ticks_diff(a, b):
    return time.ticks_diff(a, b)


def measured_files():
    import os

    from boardlib import is_dir, measured_files as walk

    def ls(p):
        return [n for n in os.listdir(p) if not (p == ROM and n in ("flash", "_m0"))]

    return walk(ls, is_dir, None, ((ROM, ""),))


_SENT = [0]


def _mem(micropython):
    """The heap sample: mem_info(), with the block map while MAP samples are left."""
    global MAP
    if MAP > 0:
        MAP -= 1
        micropython.mem_info(1)
    else:
        micropython.mem_info()


def _part(data):
    frame(0x50, data)   # 'P': serial bytes out, part of the step's answer
    _SENT[0] += 1


def serve(dev):
    """The host drives the board one step at a time (the qemu UART has no
    interrupt): a step = the serial bytes received since the last one fed to
    the device, then one idle() slice, as the loop of usb_serial.py does.

    host -> board: 'S' or 'H' (H: also sample the heap), length (2 bytes LE), the wall-clock ms
                   the host waited since the last step (2 bytes LE), serial bytes (< 128).
                   The board's clock (ticks_ms) = those waits + the estimated RP2040 time of
                   the instructions run in steps (waiting for the UART is not counted)
    board -> host: frames (see frame()): 'R' ready, 'O' step done: pending (1), k-instr (4),
                   live heap after a collection (4, 0xFFFFFFFF: not sampled), serial bytes out;
                   'S' heap sample follows: micropython.mem_info() text, up to the 'O' frame;
                   'P' serial bytes out made during the step (before its 'O' frame);
                   'W' flash write: name, NUL, data; 'D' flash delete: name"""
    import gc

    import micropython
    from time import ticks_diff, ticks_us

    dev.verbose = VERBOSE
    rd = sys.stdin.buffer
    hdr = bytearray(5)
    clk = _clk
    buf = bytearray(128)
    mv = memoryview(buf)
    st = bytearray(9)
    gc.collect()
    k = ticks_diff(ticks_us(), T_BOOT)
    st[1] = k & 0xFF
    st[2] = k >> 8 & 0xFF
    st[3] = k >> 16 & 0xFF
    st[4] = k >> 24 & 0xFF
    live = gc.mem_alloc()
    for i in range(4):
        st[5 + i] = live >> (8 * i) & 0xFF
    frame(0x53)   # 'S'
    _mem(micropython)
    frame(0x52, st)   # 'R'
    while True:
        rd.readinto(hdr)
        n = hdr[1] | hdr[2] << 8
        clk[0] = ticks_us()              # polling the UART is not the board's time,
        clk[1] = (clk[1] + (hdr[3] | hdr[4] << 8)) & 0x3FFFFFFF   # the host's wait is
        if n > 128:
            n = 128
        if n:
            rd.readinto(mv[:n])
        t0 = ticks_us()
        out = b""
        _SENT[0] = 0
        if n:
            out = dev.feed(bytes(mv[:n]), _part)   # each answer frame sent as it is made
        o2 = dev.idle(_part)
        if o2:
            out = out + o2 if out else o2   # rare: deferred work's answer in the same step
        k = ticks_diff(ticks_us(), t0)
        ticks_ms()                       # the step's instructions are the board's time
        st[0] = 1 if dev.pending() else 0
        st[1] = k & 0xFF
        st[2] = k >> 8 & 0xFF
        st[3] = k >> 16 & 0xFF
        st[4] = k >> 24 & 0xFF
        if out or _SENT[0] or hdr[0] == 0x48:   # 'H'
            gc.collect()
            live = gc.mem_alloc()
            frame(0x53)
            _mem(micropython)
            for i in range(4):
                st[5 + i] = live >> (8 * i) & 0xFF
        else:
            for i in range(4):
                st[5 + i] = 0xFF
        frame(0x4F, st, out)   # 'O'
