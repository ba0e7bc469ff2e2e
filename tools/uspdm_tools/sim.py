"""uspdm sim: the simulated board.

Runs firmware/main.py on real MicroPython (wasm, under Node) and exposes the
board's USB serial as a pseudo-terminal (printed, e.g. /dev/pts/5: usable by
pyserial, picocom, any serial tool) and, with --tcp HOST:PORT, as a TCP socket
carrying the identical byte stream (pyserial: socket://HOST:PORT).

    uspdm sim [--flash DIR] [--tcp 127.0.0.1:5555] [-v] [--log FILE] [--port-file FILE]
    uspdm sim --emu-port 2323     # DMTF spdm-emu's socket protocol (spdm_requester_emu,
                                  # spdm_device_validator_sample connect to it)

The board's log (boot, requests, heap use) goes to stderr or --log.  If the
board process dies it is restarted, like a watchdog reset.  Ctrl-C/SIGTERM
stop it cleanly.
"""
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tty

from .mpy import node_path
from .paths import REPO_ROOT

SIMHOST = os.path.join(REPO_ROOT, "boards", "sim", "simhost.mjs")


def register(sub):
    from . import exitcodes as X

    p = sub.add_parser("sim", help="run the simulated board (firmware on MicroPython) behind a serial port",
                       description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
                       epilog=X.epilog("stopped cleanly (Ctrl-C or SIGTERM)", X.USAGE,
                                       USAGE="usage or local error (bad --flash folder or one in use, TCP port in "
                                             "use, no `make setup`)"))
    p.add_argument("--flash", metavar="DIR",
                   help="the board's persistent filesystem (EID, keys, certificates); default: a temporary folder")
    p.add_argument("--tcp", metavar="HOST:PORT", help="also serve the serial byte stream on a TCP socket")
    p.add_argument("--port-file", metavar="FILE", help="write the pseudo-terminal path to FILE once ready")
    p.add_argument("--link", metavar="PATH", help="make PATH a symlink to the pseudo-terminal")
    add_emu_args(p)
    p.add_argument("--log", metavar="FILE", help="write the board log to FILE instead of stderr")
    p.add_argument("-v", "--verbose", action="store_true", help="log every message and the heap it used")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a board setting, written to uspdm/board.cfg on the flash (e.g. sessions=0, "
                        "asym_priority=p256,p384); repeatable")
    p.add_argument("--mpy", action="store_true",
                   help="run the firmware compiled to .mpy with mpy-cross, as `uspdm deploy` puts it on a board "
                        "(smaller heap than modules compiled from .py on the device)")
    m = p.add_argument_group("emulated Cortex-M0 (the RP2040's instruction set, a hard heap, instruction counts)")
    m.add_argument("--m0", nargs="?", const="", default=None, metavar="FIRMWARE.elf",
                   help="run the firmware on MicroPython for armv6m under qemu-system-arm instead of wasm; the "
                        "image defaults to $USPDM_M0_FW, else ../shared/m0/firmware-h200k.elf")
    m.add_argument("--m0-load", choices=("ram", "rom"), default="ram",
                   help="ram (default): modules copied into the heap on import, as a stock deploy (mpremote cp); "
                        "rom: bytecode runs in place from a ROMFS partition")
    m.add_argument("--m0-stats", metavar="FILE", help="append per-message figures (k-instr, heap) as JSON lines")
    g = p.add_argument_group("simulated I2C bus (DSP0237)")
    g.add_argument("--i2c", action="store_true",
                   help="two boards on a simulated I2C bus: the serial port belongs to a bridge board that "
                        "forwards MCTP to the responder board (reach it with --via-i2c ADDR)")
    g.add_argument("--i2c-addr", type=lambda s: int(s, 0), default=0x1D, metavar="ADDR",
                   help="the responder's I2C address (default 0x1D)")
    g.add_argument("--bridge-addr", type=lambda s: int(s, 0), default=0x10, metavar="ADDR",
                   help="the bridge's I2C address (default 0x10)")
    g.add_argument("--i2c-irq", choices=("hard", "mem"), default="hard",
                   help="capture mode the simulated I2C targets offer: hard IRQ events (rp2) or a memory "
                        "buffer with a soft IRQ (esp32)")
    g.add_argument("--i2c-trace", action="store_true", help="log every I2C write (address byte and bytes)")
    p.set_defaults(func=run)


PTY_QUEUE_MAX = 16 * 1024   # bytes kept for a pty reader that is not reading (beside the kernel's buffer)


class SimError(Exception):
    """A one-line reason the simulator cannot start."""


def add_emu_args(p):
    g = p.add_argument_group("DMTF spdm-emu socket protocol (spdm_requester_emu, spdm_device_validator_sample)")
    g.add_argument("--emu-port", type=int, default=None, metavar="N",
                   help="serve spdm-emu's platform port on TCP port N (DMTF's tools use 2323; 0 picks a free "
                        "one), MCTP transport; one client after another")
    g.add_argument("--emu-host", default="127.0.0.1", metavar="ADDR", help="address to listen on (default 127.0.0.1)")
    g.add_argument("--emu-timeout", type=float, default=60.0, metavar="S",
                   help="seconds to wait for the board's answer before replying empty (default 60)")
    g.add_argument("--emu-keep-serving", action="store_true",
                   help="a client's SHUTDOWN ends only that client (spdm_responder_emu stops, and so do we by "
                        "default)")


class Sim:
    def __init__(self, flash, verbose=False, log=None, tcp=None, extra=(), code_root=REPO_ROOT, board_cmd=None,
                 emu=None):
        self.flash = flash
        self.board_cmd = board_cmd  # another board process with simhost.mjs's stdio contract (--m0)
        self.code_root = code_root  # where lib/, firmware/, boards/sim/ come from
        self.extra = list(extra)   # more simhost.mjs arguments (--i2c ...)
        self.verbose = verbose
        self.logf = log or sys.stderr
        self.tcp_addr = tcp
        self.proc = None
        self.stopping = False
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tty.setraw(self.master)
        self.pty_path = os.ttyname(self.slave)
        # Never block on the pty: nobody may be reading it (a TCP-only
        # client).  Output waits in a bounded queue; when that is full the
        # oldest bytes are dropped, as a serial line with no reader loses them.
        os.set_blocking(self.master, False)
        self.pty_out = bytearray()
        self.pty_dropped = 0
        self.listener = None
        self.client = None
        self.emu = None          # spdm-emu platform port (emu.EmuServer), with --emu-port
        self.emu_relay = None
        if tcp:
            host, port = tcp.rsplit(":", 1)
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.listener.bind((host, int(port)))
            except OSError as e:
                self.close()
                raise SimError("cannot serve TCP on %s: %s (is another simulator using that port? "
                               "use another, or port 0 for any free one)" % (tcp, e.strerror or e))
            self.listener.listen(1)
            self.tcp_addr = "%s:%d" % self.listener.getsockname()[:2]
        self._errbuf = b""
        if emu is not None:   # dict: host, port, timeout, keep_serving
            from . import emu as emu_mod

            self.emu_relay = emu_mod.MctpRelay()
            try:
                self.emu = emu_mod.EmuServer(emu["host"], emu["port"], self._emu_request, log=self.log,
                                             timeout=emu.get("timeout", 60.0),
                                             keep_serving=emu.get("keep_serving", False))
            except OSError as e:
                self.close()
                raise SimError("cannot serve the spdm-emu port on %s:%s: %s (is another responder using it? "
                               "port 0 picks a free one)" % (emu["host"], emu["port"], e.strerror or e))

    def _emu_request(self, body):
        """An spdm-emu client's NORMAL message: relayed to the board as an MCTP
        message over its serial (the answer comes back in serve())."""
        self.to_board(self.emu_relay.request(body))

    def log(self, msg):
        self.logf.write("%s %s\n" % (time.strftime("%H:%M:%S"), msg))
        self.logf.flush()

    def start_board(self):
        if self.board_cmd:
            cmd = list(self.board_cmd)
        else:
            cmd = [node_path(), SIMHOST, "--root", self.code_root, "--flash", self.flash,
                   "--verbose", "1" if self.verbose else "0"] + self.extra
        self._board_eof = False
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=REPO_ROOT, bufsize=0)

    def stop_board(self):
        p = self.proc
        if p and p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def to_board(self, data):
        try:
            self.proc.stdin.write(data)
        except (BrokenPipeError, OSError):
            pass

    def to_pty(self, data):
        self.pty_out += data
        self._flush_pty()
        over = len(self.pty_out) - PTY_QUEUE_MAX
        if over > 0:
            del self.pty_out[:over]
            if not self.pty_dropped:
                self.log("sim: nobody reads the serial port %s: dropping its oldest output "
                         "(the TCP client, if any, still gets everything)" % self.pty_path)
            self.pty_dropped += over

    def _flush_pty(self):
        while self.pty_out:
            try:
                n = os.write(self.master, self.pty_out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                del self.pty_out[:]   # the pty is gone: nothing to keep it for
                return
            del self.pty_out[:n]

    def serve(self, ready_cb=None):
        if self.emu is not None:
            self.log("emu: spdm-emu platform port %s (MCTP transport)" % self.emu.addr)
        self.start_board()
        if ready_cb:
            ready_cb()
        while not self.stopping:
            fds = [self.master, self.proc.stdout, self.proc.stderr]
            if self.listener:
                fds.append(self.listener)
            if self.client:
                fds.append(self.client)
            wfds = [self.master] if self.pty_out else []
            if self.emu is not None:
                fds += self.emu.fds()
            try:
                r, w, _ = select.select(fds, wfds, [], 0.5)
            except InterruptedError:
                continue
            if w:
                self._flush_pty()
            if self.proc.poll() is not None and (not r or self._board_eof):
                if self.stopping:
                    break
                self.log("sim: board process exited (%s); restarting" % self.proc.returncode)
                self.start_board()
                continue
            for f in r:
                if f is self.master:
                    try:
                        data = os.read(self.master, 4096)
                    except OSError:
                        data = b""
                    if data:
                        self.to_board(data)
                elif f is self.proc.stdout:
                    data = os.read(self.proc.stdout.fileno(), 65536)
                    if not data:
                        self._board_eof = True   # it exited: restart it once its exit status is there
                        time.sleep(0.05)
                    if data and self.emu is not None:
                        rsp = self.emu_relay.feed(data)
                        if rsp is not None:
                            self.emu.reply(rsp)
                    if data:
                        self.to_pty(data)
                        if self.client:
                            try:
                                self.client.sendall(data)
                            except OSError:
                                self.client.close()
                                self.client = None
                elif f is self.proc.stderr:
                    data = os.read(self.proc.stderr.fileno(), 65536)
                    if data:
                        self._errbuf += data
                        while b"\n" in self._errbuf:
                            line, self._errbuf = self._errbuf.split(b"\n", 1)
                            self.log(line.decode(errors="replace"))
                elif f is self.listener:
                    conn, addr = self.listener.accept()
                    if self.client:
                        self.client.close()
                    self.client = conn
                    self.log("sim: TCP client %s:%d connected" % addr[:2])
                elif f is self.client:
                    try:
                        data = self.client.recv(4096)
                    except OSError:
                        data = b""
                    if data:
                        self.to_board(data)
                    else:
                        self.client.close()
                        self.client = None
                elif self.emu is not None:
                    self.emu.handle(f)
            if self.emu is not None:
                self.emu.tick()
                if self.emu.stop:
                    self.log("sim: stopping (the spdm-emu client sent SHUTDOWN)")
                    self.stopping = True
        self.stop_board()

    def close(self):
        self.stop_board()
        for fd in (self.master, self.slave):
            if fd is None:
                continue
            try:
                os.close(fd)
            except OSError:
                pass
        if self.listener:
            self.listener.close()
        if self.emu is not None:
            self.emu.close()


def write_settings(flash, pairs):
    """Merge KEY=VALUE pairs into the flash's uspdm/board.cfg (the format of
    firmware/boardlib.py: one `key=value` a line)."""
    path = os.path.join(flash, "uspdm", "board.cfg")
    cur = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.split("#", 1)[0].strip()
                if "=" in line:
                    k, v = line.split("=", 1)
                    cur[k.strip()] = v.strip()
    from .deploy import format_settings, settings_schema

    schema = settings_schema()
    for kv in pairs:
        if "=" not in kv or not kv.split("=", 1)[0].strip():
            print("uspdm sim: --set wants KEY=VALUE, got %r" % kv, file=sys.stderr)
            return False
        k, v = kv.split("=", 1)
        why = schema.check(k.strip(), schema.parse_value(v))
        if why:
            print("uspdm sim: bad setting: %s" % why, file=sys.stderr)
            return False
        cur[k.strip()] = v.strip()

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(format_settings(cur))
    return True


def _err(msg):
    print("uspdm sim: %s" % msg, file=sys.stderr)


def m0_problem(args):
    """Why --m0 cannot run here (one line), or None."""
    from . import m0board

    why = m0board.check(args.m0 or m0board.default_firmware())
    if not why and (getattr(args, "i2c", False) or getattr(args, "mpy", False)):
        why = "--i2c and --mpy are for the wasm board (the emulated one always runs .mpy for armv6m)"
    return why


def m0_command(args, flash):
    """The board process for --m0 (None without it)."""
    if getattr(args, "m0", None) is None:
        return None
    from . import m0board

    fw = args.m0 or m0board.default_firmware()
    cmd = [sys.executable, "-m", "uspdm_tools.m0board", "--fw", os.path.abspath(fw), "--flash", flash,
           "--load", args.m0_load]
    if args.m0_stats:
        cmd += ["--stats", os.path.abspath(args.m0_stats)]
    if args.verbose:
        cmd.append("-v")
    return cmd


def _stop_early(signum, frame):
    raise KeyboardInterrupt   # before the serve loop's own handlers: unwind, releasing the flash lock


def run(args):
    signal.signal(signal.SIGTERM, _stop_early)
    if getattr(args, "m0", None) is not None:
        why = m0_problem(args)
        if why:
            print("uspdm sim --m0: " + why, file=sys.stderr)
            return 1     # a missing setup step or bad arguments (exitcodes.USAGE)
    else:
        from .mpy import MicroPythonUnavailable

        try:
            node_path()
        except MicroPythonUnavailable as e:
            _err(str(e))
            return 1
    from .flashdir import FlashDirError, FlashLock

    tmp = None
    flash = args.flash
    if not flash:
        tmp = tempfile.mkdtemp(prefix="uspdm-sim-flash-")
        flash = tmp
    try:
        lock = FlashLock(flash, "uspdm sim")
    except FlashDirError as e:
        _err(str(e))
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        return 1
    try:
        return _run(args, flash, tmp)
    finally:
        lock.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _run(args, flash, tmp):
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            _err("--tcp wants HOST:PORT (e.g. 127.0.0.1:5555), got %r" % args.tcp)
            return 1
    if getattr(args, "set", None):
        if not write_settings(flash, args.set):
            return 1
    try:
        logf = open(args.log, "a", buffering=1) if args.log else None
    except OSError as e:
        _err("cannot write the log %s: %s" % (args.log, e.strerror or e))
        return 1
    extra = []
    if getattr(args, "i2c", False):
        extra = ["--i2c", "1", "--i2c-addr", str(args.i2c_addr), "--bridge-addr", str(args.bridge_addr),
                 "--i2c-irq", args.i2c_irq, "--i2c-trace", "1" if args.i2c_trace else "0"]
    code_root = REPO_ROOT
    mpy_tmp = None
    if getattr(args, "mpy", False):
        from . import build_mpy

        mpy_tmp = tempfile.mkdtemp(prefix="uspdm-sim-mpy-")
        count, errors = build_mpy.build(arches=("bytecode",), out=mpy_tmp, quiet=True)
        if errors:
            print("uspdm sim: mpy-cross failed:\n  " + "\n  ".join(errors), file=sys.stderr)
            shutil.rmtree(mpy_tmp, ignore_errors=True)
            return 1
        code_root = os.path.join(mpy_tmp, "bytecode")
    board_cmd = m0_command(args, os.path.abspath(flash))
    emu = None
    if getattr(args, "emu_port", None) is not None:
        emu = {"host": args.emu_host, "port": args.emu_port, "timeout": args.emu_timeout,
               "keep_serving": args.emu_keep_serving}
    try:
        sim = Sim(os.path.abspath(flash), verbose=args.verbose, log=logf, tcp=args.tcp, extra=extra,
                  code_root=code_root, board_cmd=board_cmd, emu=emu)
    except SimError as e:
        _err(str(e))
        if mpy_tmp:
            shutil.rmtree(mpy_tmp, ignore_errors=True)
        return 1

    def stop(signum, frame):
        sim.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def ready():
        if args.link:
            try:
                os.unlink(args.link)
            except OSError:
                pass
            os.symlink(sim.pty_path, args.link)
        print("uspdm sim: serial port %s" % sim.pty_path)
        if extra:
            print("uspdm sim: bridge board on the serial port; responder at I2C 0x%02x (use --via-i2c 0x%02x)" % (
                args.i2c_addr, args.i2c_addr))
        if sim.tcp_addr:
            print("uspdm sim: TCP %s (pyserial: socket://%s)" % (sim.tcp_addr, sim.tcp_addr))
        if sim.emu is not None:
            print("uspdm sim: spdm-emu platform port %s (MCTP; e.g. spdm_requester_emu --trans MCTP; "
                  "uspdm attest --port emu://%s)" % (sim.emu.addr, sim.emu.addr))
        print("uspdm sim: flash %s%s" % (flash, " (temporary; use --flash DIR to keep it)" if tmp else ""))
        sys.stdout.flush()
        if args.port_file:
            with open(args.port_file + ".tmp", "w") as f:
                f.write(sim.pty_path + "\n")
            os.replace(args.port_file + ".tmp", args.port_file)

    try:
        sim.serve(ready)
    finally:
        sim.close()
        if args.link:
            try:
                os.unlink(args.link)
            except OSError:
                pass
        if mpy_tmp:
            shutil.rmtree(mpy_tmp, ignore_errors=True)
        if logf:
            logf.close()
    return 0
