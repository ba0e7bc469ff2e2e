"""Helpers shared by the board modules (boards/rp2040, boards/esp32; the
simulator's boards/sim imports some: /firmware is on its sys.path).

Settings: a board module has DEFAULTS; the flash may override them with
  uspdm/board.cfg     lines `key=value` (ints in any base: 0x1D, 100000;
                      anything else is a string; '#' comments)
  uspdm/i2c_addr.bin  the I2C address, 1 byte (storage layout)
`uspdm deploy --mode bridge --i2c-addr 0x10 ...` writes these; so can
mpremote or the REPL.  Everything here is pure (testable with fakes).
"""

SETTINGS_FILE = "uspdm/board.cfg"
ADDR_FILE = "uspdm/i2c_addr.bin"
BRIDGE_ADDR = 0x10


def parse_settings(text):
    out = {}
    for line in text.split("\n"):
        line = line.split("#", 1)[0].strip()
        if "=" not in line:
            continue
        k, v = line.split("=", 1)
        k = k.strip()
        v = v.strip()
        if not k:
            continue
        try:
            out[k] = int(v, 0)
        except ValueError:
            out[k] = v
    return out


def format_settings(d):
    lines = []
    for k in sorted(d):
        v = d[k]
        lines.append("%s=%s" % (k, ("0x%02x" % v) if k.endswith("_addr") or k == "bridge_target" else v))
    return "\n".join(lines) + "\n"


def validate_settings(over, log=print):
    """Drop every entry of `over` (from uspdm/board.cfg) that the declared
    schema (firmware/settings.py) refuses, saying so in the boot log: a bad
    setting is reported, never silently ignored.  Returns the problems."""
    import sys

    try:
        from settings import check
    except ImportError:   # the schema module is not on this board: nothing to check against
        return []
    bad = []
    for k in list(over):
        why = check(k, over[k])
        if why is not None:
            bad.append(why)
            del over[k]
            try:
                log("uspdm: bad setting in %s ignored (default kept): %s" % (SETTINGS_FILE, why))
            except Exception:
                pass
    sys.modules.pop("settings", None)   # not needed while serving
    return bad


def load_settings(storage, defaults, log=print):
    cfg = dict(defaults)
    over = {}
    try:
        raw = storage.read(SETTINGS_FILE)
        if raw:
            over = parse_settings(raw.decode())
    except Exception:
        over = {}
    validate_settings(over, log)
    cfg.update(over)
    try:
        a = storage.read(ADDR_FILE)
        if a and len(a) == 1 and 0 < a[0] < 0x78:
            cfg["i2c_addr"] = a[0]
            over["i2c_addr"] = a[0]
    except Exception:
        pass
    if cfg.get("mode") == "bridge" and "i2c_addr" not in over:
        cfg["i2c_addr"] = BRIDGE_ADDR
    a = cfg.get("i2c_addr")
    if not isinstance(a, int) or not 0 < a < 0x78:
        cfg["i2c_addr"] = defaults.get("i2c_addr", 0x1D)
    return cfg


def capabilities(modules=None):
    """What this MicroPython offers (logged at boot; the crypto code detects
    the same things itself when it imports)."""
    import sys

    caps = {"version": "%d.%d.%d" % tuple(sys.implementation.version[:3])}

    def mod(name):
        if modules is not None:
            return modules.get(name)
        try:
            return __import__(name)
        except ImportError:
            return None

    h = mod("hashlib")
    caps["hashlib"] = [n for n in ("sha256", "sha384", "sha512") if h is not None and hasattr(h, n)]
    c = mod("cryptolib")
    caps["cryptolib"] = c is not None and hasattr(c, "aes")
    o = mod("os")
    caps["urandom"] = o is not None and hasattr(o, "urandom")
    m = mod("machine")
    caps["i2c_target"] = m is not None and hasattr(m, "I2CTarget")
    caps["i2c_hard_irq"] = caps["i2c_target"] and hasattr(m.I2CTarget, "IRQ_WRITE_REQ")
    return caps


def caps_line(c):
    return "uspdm: MicroPython %s; hashlib %s; cryptolib %s; os.urandom %s; I2C target %s" % (
        c["version"], "/".join(c["hashlib"]) or "none", "yes" if c["cryptolib"] else "no (pure AES)",
        "yes" if c["urandom"] else "no", ("yes (hard IRQ)" if c["i2c_hard_irq"] else "yes (soft IRQ)")
        if c["i2c_target"] else "no")


def button_window(pressed, led, window_ms, ticks_ms, ticks_diff, sleep_ms):
    """Blink the LED for window_ms; True as soon as pressed() is true."""
    if window_ms <= 0:
        return False
    t0 = ticks_ms()
    on = 0
    while ticks_diff(ticks_ms(), t0) < window_ms:
        try:
            if pressed():
                if led is not None:
                    led(1)
                return True
        except Exception:
            return False
        on ^= 1
        if led is not None:
            led(on)
        sleep_ms(50)
    if led is not None:
        led(0)
    return False


ROOT_TREE = (("/", ""),)


def measured_files(listdir, isdir, root_names=None, roots=ROOT_TREE):
    """[(label, path)] of the code that runs on a board: the .py/.mpy files
    at / (main.py, board, firmware modules) and under /lib.  roots: the
    (folder, label) pairs walked, in order (the simulator's differ)."""
    out = []

    def walk(base, label):
        try:
            names = sorted(listdir(base))
        except OSError:
            return
        for n in names:
            p = (base.rstrip("/") + "/" + n)
            if isdir(p):
                if base == "/" and n != "lib":
                    continue
                walk(p, (label + "/" + n) if label else n)
            elif n.endswith(".py") or n.endswith(".mpy"):
                if base == "/" and root_names is not None and n.split(".")[0] not in root_names:
                    continue
                out.append(((label + "/" + n) if label else n, p))

    for base, label in roots:
        walk(base, label)
    return out


def is_dir(path):
    """True for a folder of the board's filesystem (False if it is gone)."""
    import os

    try:
        return (os.stat(path)[0] & 0x4000) != 0
    except OSError:
        return False


def code_files(roots=ROOT_TREE):
    """measured_files() over the board's own filesystem (board modules call this)."""
    import os

    return measured_files(os.listdir, is_dir, None, roots)


def ticks_ms():
    import time

    return time.ticks_ms()


def ticks_diff(a, b):
    import time

    return time.ticks_diff(a, b)


def conditioned(raw_bits, n, counter_start=0):
    """n bytes from a raw (biased) bit source: SHA-256 over 512 raw bits per
    32 output bytes (a 2:1 compression)."""
    import hashlib

    out = bytearray()
    ctr = counter_start
    while len(out) < n:
        raw = bytearray(65)
        for i in range(64):
            v = 0
            for _ in range(8):
                v = (v << 1) | (raw_bits() & 1)
            raw[i] = v
        raw[64] = ctr & 0xFF
        ctr += 1
        out.extend(hashlib.sha256(raw).digest())
    return bytes(out[:n])




_HIGH_RESERVE = 14336   # bytes left at the top of the free heap for import_high's modules
_HIGH_MAX_HEAP = 524288  # heaps larger than this (a host, the wasm build) are left as they are


def intern_names(names):
    """Import the boot-only modules `names` once and let them go again: the names their
    code uses are interned now (MicroPython keeps interned names for good, in pools and
    chunks allocated as they are needed), down among the resident code still being loaded,
    which fills the code's hole; import_high loads them again later without adding any,
    so no interned names are left in the free heap when that code is dropped.  Only on a
    small MicroPython heap, as import_high (elsewhere nothing to gain)."""
    import gc

    mf = getattr(gc, "mem_free", None)
    if mf is None or mf() + gc.mem_alloc() > _HIGH_MAX_HEAP:
        return
    for m in names:
        __import__(m)
    from uspdm import demand   # (resident: loaded before this, see device.PRELOAD)

    for m in names:
        demand.forget(m)


def import_high(names, reserve=_HIGH_RESERVE):
    """Import the boot-only modules `names` at the top of the free heap: a ballast takes the
    free heap but `reserve` bytes while they load, and goes again.  The GC allocates first
    fit from the bottom and never moves anything: what the boot then builds with this code
    goes low, next to the resident code, instead of into the holes between the code's
    pieces (islands in the middle of the free heap once the code is dropped), and the
    code's hole joins the free space above that data.  Short of memory with the ballast,
    the ballast goes and the modules load where they can."""
    import gc
    import sys

    low = None
    mf = getattr(gc, "mem_free", None)   # (MicroPython)
    if mf is not None:
        gc.collect()
        free = mf()
        n = free - reserve
        if free + gc.mem_alloc() <= _HIGH_MAX_HEAP:
            while low is None and n >= 4096:
                try:
                    low = bytearray(n)
                except MemoryError:   # (the free heap is in pieces: a smaller ballast)
                    n -= 2048
    for m in names:
        try:
            __import__(m)
        except MemoryError:
            if low is None:
                raise
            low = None
            sys.modules.pop(m, None)   # (a module whose code did not all load)
            gc.collect()
            __import__(m)
    low = None
    gc.collect()


def init_device(dev, board, verbose=False, log=None, fw="?"):
    """firmware/device.py Device.__init__: the device's state set up once at boot (this
    module is boot-only: its code is not kept while the board serves)."""
    from mctp import serial as mserial
    from mctp.endpoint import Endpoint

    dev.board = board
    dev.verbose = verbose
    dev._log = log or print
    cfg = board.config()
    dev.cfg = cfg
    dev.storage = board.storage()
    eid = cfg.get("default_eid", 0)
    # persist_eid=1: the EID a bus owner assigns is kept on the flash for the next boot,
    # written at most once per bus owner (so never under a flood); else it lives in RAM only
    dev._persist = bool(cfg.get("persist_eid", 0))
    dev._persisted_for = None
    saved = dev.storage.read("uspdm/eid.bin") if dev._persist else None   # (device.EID_FILE)
    if saved and len(saved) == 1 and 0 < saved[0] < 0xFF:
        eid = saved[0]
    dev.decoder = mserial.SerialDecoder()
    dev.ep = Endpoint(eid=eid, mtu=cfg.get("serial_mtu", 64), on_eid_changed=dev._eid_changed,
                      secured=bool(cfg.get("sessions", True)))
    # one cap on the bytes that requests can make the board buffer before they are
    # complete (partial MCTP messages + CHUNK_SEND reassembly, all requesters together):
    # by default one largest CHUNK_SEND request plus one DataTransferSize message in flight
    dev.buffer_cap = cfg.get("buffer_cap", 0) or (cfg.get("max_spdm_msg_size", 4096)
                                                   + cfg.get("data_transfer_size", 1024) + 64)
    dev.ep.reasm.room = dev._buffer_room
    # the response buffers, allocated once now, before the heap fragments: the SPDM
    # response of a request answered at once (GET_MEASUREMENTS) and the secured message
    # carrying it are built in them, not in new contiguous blocks per request
    # (rsp_buffer=0: none; responses larger than the buffer get their own)
    n = cfg.get("rsp_buffer", 1536)
    dev._rbuf = bytearray(n) if n else None
    dev._sbuf = bytearray(n + 64) if n and cfg.get("sessions", True) else None
    # typed: the handlers answer without the MCTP type byte, which the packets get
    # from the endpoint (a large response is never copied to prepend one byte)
    dev.ep.register(0x05, dev._on_spdm, True)
    dev.ep.register(0x06, dev._on_secured, True)
    dev.responders = {}       # src EID -> Responder
    dev._order = []           # LRU of requester EIDs
    dev._rr = -1              # EID whose signature got the last slice (round robin)
    dev._spdm = None          # shared SPDM context (identity, measurements), built on first use
    dev._imported = False     # spdm_setup imported by a background step
    dev._pre = 0              # PRELOAD modules imported so far
    dev._background = True    # background preparation still to do
    dev._bg_fails = 0         # consecutive out-of-memory pauses of the background work
    dev._bg_at = 0            # board ms when it may try again
    dev._oom_said = False     # "out of memory in idle" logged (once per boot)
    dev._answered = 0         # messages answered (simdev.SimDevice's heap figures count them)
    # I2C (DSP0237): requester EID -> its SMBus source address, so that
    # deferred responses go back on the transport the request came from
    # (EIDs not in here are answered on the USB serial).
    dev.i2c_routes = {}
    dev.i2c_out = []          # (dest_addr7, packet) for the board's I2C port to master-write
    dev._write = None         # idle(write=): the port's write function during the call
    dev.log("uspdm: board %s, EID %d, serial MTU %d, firmware %s" % (
        board.NAME, eid, cfg.get("serial_mtu", 64), fw))
