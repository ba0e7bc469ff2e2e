"""uspdm deploy: put the firmware on a board and check that it answers.

    uspdm deploy --board rp2040 --port /dev/ttyACM0
    uspdm deploy --board esp32 --port /dev/ttyACM0 --mode bridge --bridge-target 0x1D

Steps: (1) compile lib/, firmware/ and the board folder with mpy-cross for
the board's architecture (RP2040: armv6m, ESP32-S3: xtensawin); (2) stage
the device's filesystem: lib/ -> /lib, the firmware modules and the board
module (as /board.mpy) -> /, firmware/main.py -> /main.py; (3) copy with
mpremote (stale .py copies that would shadow the .mpy files are removed
first; unchanged files are skipped), write the settings (uspdm/board.cfg)
if any were given, reset; (4) reopen the port and check that the board
answers MCTP Get Endpoint ID over USB serial (a bridge: its own INFO, then
Get EID through it).

Where the code goes (--to): a board whose MicroPython has a ROMFS partition
(`vfs.rom_ioctl` reports one) can run the bytecode in place from flash:
`--to romfs` writes lib/, the firmware and the board modules as one ROMFS
image (`mpremote romfs deploy`, mounted at /rom, /rom/lib on sys.path) and
only main.py and the settings go to the filesystem.  `--to fs` copies the
.mpy files to the filesystem, where importing copies each module into the
heap (stock rp2/esp32 firmware has no ROMFS partition).  `--to auto` (the
default) asks the board first and offers ROMFS when it has a partition
(asking on a terminal; taking it otherwise).  On the emulated RP2040 (200 KB
heap) the firmware keeps about 113 KB of heap after setup from the
filesystem and about 40 KB from ROMFS (README "Memory").

mpremote reaches a board that runs the firmware only when the REPL is free:
hold BOOTSEL/BOOT during the first second after reset (the LED blinks fast)
and the firmware does not start.  The serial escape (mpremote's "\\r\\x03"
hands over the REPL, see firmware/usb_serial.py) is a lab setting,
`--set repl_escape=1`, off by default: anyone who can write to the board's
serial line would get the REPL, which reads the device key.  Keys and
certificates (uspdm/ on the board) are kept.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

from . import build_mpy
from .paths import REPO_ROOT  # noqa: F401  (tests locate the boards with it)

BOARDS = {"rp2040": "armv6m", "esp32": "xtensawin"}


class DeployError(Exception):
    """One line for the user; code: the exit status (see exitcodes)."""

    def __init__(self, msg, code=1):
        Exception.__init__(self, msg)
        self.code = code


def register(sub):
    from . import exitcodes as X

    p = sub.add_parser("deploy", help="compile, copy the firmware to a board with mpremote, reset, verify",
                       description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
                       epilog=X.epilog("deployed, and the board answers MCTP after the reset", X.USAGE,
                                       X.UNREACHABLE, X.PROTOCOL,
                                       PROTOCOL="mpremote failed on the board (copy, settings, reset)"))
    p.add_argument("--board", required=True, choices=sorted(BOARDS))
    p.add_argument("--port", required=True, help="the board's USB serial port (e.g. /dev/ttyACM0)")
    p.add_argument("--mode", choices=("responder", "bridge"), help="board role (stored in uspdm/board.cfg)")
    p.add_argument("--i2c-addr", type=lambda s: int(s, 0), metavar="ADDR",
                   help="the board's own I2C address (default 0x1D, bridge 0x10)")
    p.add_argument("--bridge-target", type=lambda s: int(s, 0), metavar="ADDR",
                   help="bridge mode: the PRoT's I2C address (default 0x1D)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other board setting (i2c_freq=400000, repl_escape=0, ...); repeatable")
    p.add_argument("--mpremote", default=None, help="mpremote executable (default: the one next to this Python)")
    p.add_argument("--no-verify", action="store_true", help="skip the Get Endpoint ID check after reset")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the board after reset")
    p.add_argument("--to", choices=("auto", "romfs", "fs"), default="auto",
                   help="where the code goes: romfs (bytecode runs from flash: the board needs a ROMFS partition), "
                        "fs (.mpy copied to the filesystem, loaded into the heap), auto (default): ROMFS when the "
                        "board reports a partition")
    p.add_argument("--dry-run", action="store_true", help="compile and stage, print the mpremote commands only")
    p.add_argument("--stage-dir", metavar="DIR",
                   help="with --dry-run: where the staged files are kept (emptied first; default build/deploy-BOARD "
                        "in the checkout)")
    p.set_defaults(func=run)


def mpremote_path(explicit=None):
    if explicit:
        return explicit
    here = os.path.join(os.path.dirname(sys.executable), "mpremote")
    if os.path.exists(here):
        return here
    found = shutil.which("mpremote")
    if not found:
        raise DeployError("mpremote not found: run `make setup` (or pip install mpremote)")
    return found


def settings_from_args(args):
    s = {}
    if args.mode:
        s["mode"] = args.mode
    if args.i2c_addr is not None:
        s["i2c_addr"] = args.i2c_addr
    if args.bridge_target is not None:
        s["bridge_target"] = args.bridge_target
    schema = settings_schema()
    for kv in args.set:
        if "=" not in kv:
            raise DeployError("--set wants KEY=VALUE, got %r" % kv)
        k, v = kv.split("=", 1)
        s[k.strip()] = schema.parse_value(v)
    for k in ("i2c_addr", "bridge_target"):
        if k in s and not (isinstance(s[k], int) and 0 < s[k] < 0x78):
            raise DeployError("%s must be a 7-bit I2C address (0x01..0x77)" % k)
    for k in sorted(s):
        why = schema.check(k, s[k])
        if why:
            raise DeployError("bad setting: %s" % why)
    return s


def settings_schema():
    """firmware/settings.py, the schema the board checks its settings against (same file, host side)."""
    import importlib.util

    from .paths import FIRMWARE_DIR

    spec = importlib.util.spec_from_file_location("uspdm_board_settings", os.path.join(FIRMWARE_DIR, "settings.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def format_settings(s):
    lines = []
    for k in sorted(s):
        v = s[k]
        lines.append("%s=%s" % (k, ("0x%02x" % v) if k in ("i2c_addr", "bridge_target") else v))
    return "\n".join(lines) + "\n"


def stage(board, build_dir, dest):
    """Lay out the device filesystem under dest; returns (root files, has lib)."""
    arch = BOARDS[board]
    src = os.path.join(build_dir, arch)
    lib = os.path.join(src, "lib")
    if os.path.isdir(lib):
        shutil.copytree(lib, os.path.join(dest, "lib"), ignore=shutil.ignore_patterns("*.py", "*.egg-info"))
    roots = []
    fw = os.path.join(src, "firmware")
    for fn in sorted(os.listdir(fw)):
        if fn == "main.py" or (fn.endswith(".mpy") and fn not in ("main.mpy", "simdev.mpy")):   # simdev: simulators only
            shutil.copyfile(os.path.join(fw, fn), os.path.join(dest, fn))
            roots.append(fn)
    bd = os.path.join(src, "boards", board)
    for fn in sorted(os.listdir(bd)):
        if fn.endswith(".mpy"):
            shutil.copyfile(os.path.join(bd, fn), os.path.join(dest, fn))
            roots.append(fn)
    if "board.mpy" not in roots:
        raise DeployError("boards/%s has no board.py" % board)
    return roots


def _lib_modules(stage_dir):
    out = []
    base = os.path.join(stage_dir, "lib")
    for dp, dn, fns in os.walk(base):
        for fn in fns:
            if fn.endswith(".mpy"):
                out.append("lib/" + os.path.relpath(os.path.join(dp, fn[:-4] + ".py"), base).replace(os.sep, "/"))
    return out


def _cleanup_script(roots, lib_modules=(), mpy_too=False):
    """Remove stale copies on the filesystem: .py that would shadow the .mpy
    files (and, for a ROMFS deploy, the .mpy copies that would shadow /rom)."""
    names = set(r[:-4] + ".py" for r in roots if r.endswith(".mpy")) | set(lib_modules)
    if mpy_too:
        names |= set(r for r in roots if r.endswith(".mpy"))
        names |= set(m[:-3] + ".mpy" for m in lib_modules)
    names = sorted(names)
    return ("import os\n"
            "for n in %r:\n"
            "    try:\n"
            "        os.remove(n)\n"
            "    except OSError:\n"
            "        pass\n") % (names,)


def _settings_script(text):
    return ("import os\n"
            "try:\n"
            "    os.mkdir('uspdm')\n"
            "except OSError:\n"
            "    pass\n"
            "f = open('uspdm/board.cfg', 'w')\n"
            "f.write(%r)\n"
            "f.close()\n") % (text,)


ROMFS_PROBE = ("try:\n"
               " import vfs\n"
               " n = vfs.rom_ioctl(1)\n"
               "except Exception:\n"
               " n = -1\n"
               "s = 0\n"
               "if n > 0:\n"
               " try:\n"
               "  s = len(memoryview(vfs.rom_ioctl(2, 0)))\n"
               " except Exception:\n"
               "  s = 0\n"
               "print('USPDM-ROMFS %d %d' % (n, s))\n")


def parse_romfs_probe(out):
    """(partitions, bytes of partition 0) from ROMFS_PROBE's output; (-1, 0)
    when the firmware has no vfs.rom_ioctl at all."""
    for line in (out or "").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "USPDM-ROMFS":
            try:
                return int(parts[1]), int(parts[2])
            except ValueError:
                break
    return -1, 0


def romfs_tree(stage_dir, roots, dest, lib_rom=None):
    """The ROMFS image's tree: every module under lib/ (mounted at /rom/lib,
    on sys.path), and lib_rom (the build's lib_rom/: modules only a ROMFS
    deploy carries) merged into it; main.py is not in it (the board runs
    /main.py)."""
    lib = os.path.join(dest, "lib")
    if os.path.isdir(os.path.join(stage_dir, "lib")):
        shutil.copytree(os.path.join(stage_dir, "lib"), lib)
    else:
        os.makedirs(lib)
    if lib_rom and os.path.isdir(lib_rom):
        shutil.copytree(lib_rom, lib, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.py"))
    for r in roots:
        if r.endswith(".mpy"):
            shutil.copyfile(os.path.join(stage_dir, r), os.path.join(lib, r))
    return dest


def plan(port, stage_dir, roots, settings, romfs_dir=None):
    """The mpremote argument lists, in order (romfs_dir: code to ROMFS)."""
    cmds = [["connect", port, "exec", _cleanup_script(roots, _lib_modules(stage_dir), mpy_too=bool(romfs_dir))]]
    if romfs_dir:
        cmds.append(["connect", port, "romfs", "--no-mpy", "deploy", romfs_dir])
        cmds.append(["connect", port, "fs", "cp"] + [os.path.join(stage_dir, r) for r in roots
                                                     if not r.endswith(".mpy")] + [":"])
    else:
        if os.path.isdir(os.path.join(stage_dir, "lib")):
            cmds.append(["connect", port, "fs", "cp", "-r", os.path.join(stage_dir, "lib"), ":"])
        cmds.append(["connect", port, "fs", "cp"] + [os.path.join(stage_dir, r) for r in roots] + [":"])
    if settings:
        cmds.append(["connect", port, "exec", _settings_script(format_settings(settings))])
    cmds.append(["connect", port, "reset"])
    return cmds


def verify(port, mode="responder", timeout=30.0, say=print):
    """Wait for the board to come back and answer over USB serial."""
    from .link import SerialLink, Unreachable

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with SerialLink(port, timeout=2.0) as link:
                if mode == "bridge":
                    st, info = link.bridge_command(1, timeout=2.0)
                    say("  bridge answers: own I2C 0x%02x, target 0x%02x" % (info[0], info[1]))
                    try:
                        cc, data = link.control(0x02, timeout=2.0)
                        say("  PRoT at 0x%02x answers Get Endpoint ID: EID %d" % (info[1], data[0]))
                    except Unreachable:
                        say("  (no PRoT answers at I2C 0x%02x yet: check the wiring and that board)" % info[1])
                    return True
                try:
                    cc, data = link.control(0x02, timeout=2.0)
                except Unreachable:
                    # a board left in bridge mode by its flash settings answers for itself only
                    try:
                        st, info = link.bridge_command(1, timeout=1.0)
                    except (Unreachable, ValueError):
                        raise Unreachable("no answer to Get Endpoint ID")
                    say("  the board is a bridge (uspdm/board.cfg on it says mode=bridge): own I2C 0x%02x, "
                        "target 0x%02x; no PRoT answered through it" % (info[0], info[1]))
                    return True
                if cc == 0 and data:
                    say("  board answers Get Endpoint ID: EID %d" % data[0])
                    return True
                last = "completion code %d" % cc
        except (Unreachable, OSError, ValueError) as e:
            last = str(e)
        time.sleep(0.5)
    raise DeployError("the board did not answer Get Endpoint ID on %s within %.0f s (%s)" % (port, timeout, last),
                      code=2)


def deploy(args, say=print):
    arch = BOARDS[args.board]
    settings = settings_from_args(args)
    if not args.dry_run and not os.path.exists(args.port):
        raise DeployError("no such port %s: is the board plugged in? (ls /dev/ttyACM* /dev/ttyUSB*)" % args.port,
                          code=2)
    if getattr(args, "stage_dir", None) and not args.dry_run:
        raise DeployError("--stage-dir goes with --dry-run (a real deploy stages into a temporary folder)", code=1)
    if args.dry_run:
        # the printed commands must still work after we exit: stage into the
        # checkout's build/ folder (make clean removes it), not a temp folder
        tmp = getattr(args, "stage_dir", None) or os.path.join(REPO_ROOT, "build", "deploy-%s" % args.board)
        tmp = os.path.abspath(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    else:
        tmp = tempfile.mkdtemp(prefix="uspdm-deploy-")
    try:
        say("[1/4] compiling for %s (%s) with mpy-cross" % (args.board, arch))
        count, errors = build_mpy.build(arches=(arch,), out=os.path.join(tmp, "build"), quiet=True)
        if errors:
            raise DeployError("mpy-cross failed:\n  " + "\n  ".join(errors))
        say("      %d modules" % count)
        stage_dir = os.path.join(tmp, "fs")
        os.makedirs(stage_dir)
        roots = stage(args.board, os.path.join(tmp, "build"), stage_dir)
        exe = "mpremote" if args.dry_run else mpremote_path(args.mpremote)
        to = getattr(args, "to", "fs") or "fs"
        if to == "auto":
            to = _choose_target(exe, args, say)
        romfs_dir = romfs_tree(stage_dir, roots, os.path.join(tmp, "romfs"),
                               os.path.join(tmp, "build", arch, "lib_rom")) if to == "romfs" else None
        cmds = plan(args.port, stage_dir, roots, settings, romfs_dir)
        if romfs_dir:
            say("[2/4] writing the code to the board's ROMFS partition with mpremote (bytecode runs from flash; "
                "main.py -> /)%s" % (" -- dry run" if args.dry_run else ""))
        else:
            say("[2/4] copying to %s with mpremote (lib/ -> /lib, %d files -> /)%s" % (
                args.port, len(roots), " -- dry run" if args.dry_run else ""))
        if settings:
            say("      settings: " + ", ".join("%s=%s" % kv for kv in sorted(settings.items())))
        if settings.get("repl_escape") in (1, "1"):
            say("      " + "!" * 72)
            say("      WARNING: repl_escape=1 (lab setting): two bytes (\\r\\x03) on the board's USB serial")
            say("      line hand over the REPL, and the REPL can read the device's private key.")
            say("      Anyone who can write to that line owns the identity. Lab benches only.")
            say("      " + "!" * 72)
        else:
            say("      REPL: only with %s held during the first second after reset (repl_escape=1 is the lab "
                "setting that opens it from the serial line)" % ("BOOTSEL" if args.board == "rp2040" else "BOOT"))
        for c in cmds:
            if args.dry_run:
                say("  " + " ".join(_show(a) for a in [exe] + c))
                continue
            p = subprocess.run([exe] + c, capture_output=True, text=True, timeout=300)
            if p.returncode != 0:
                msg = (p.stderr or p.stdout).strip().splitlines()
                raise DeployError("mpremote %s failed: %s\n  (is the port right? is another program using "
                                  "it? a board running the firmware hands over the REPL only with BOOTSEL/BOOT "
                                  "held during the first second after reset: do that, then run this again)" % (
                                      " ".join(c[2:4]) if c[2] == "fs" else c[2], msg[-1] if msg else p.returncode),
                                  code=3)
        if args.dry_run:
            say("  (staged files kept in %s; these commands work as printed)" % tmp)
            return 0
        say("[3/4] reset")
        if args.no_verify:
            say("[4/4] verification skipped")
            return 0
        say("[4/4] waiting for the board to answer over USB serial")
        mode = settings.get("mode", "responder")
        verify(args.port, mode, args.timeout, say)
        say("done: %s on %s" % (args.board, args.port))
        return 0
    finally:
        if not args.dry_run:
            shutil.rmtree(tmp, ignore_errors=True)


def _choose_target(exe, args, say):
    """--to auto: ask the board whether it has a ROMFS partition; offer it."""
    if args.dry_run:
        say("      (dry run: the board is not asked for a ROMFS partition; --to romfs to plan one)")
        return "fs"
    try:
        p = subprocess.run([exe, "connect", args.port, "exec", ROMFS_PROBE], capture_output=True, text=True,
                           timeout=60)
        n, size = parse_romfs_probe(p.stdout)
    except (OSError, subprocess.TimeoutExpired):
        n, size = -1, 0
    if n <= 0:
        say("      the board's MicroPython has no ROMFS partition: .mpy files go to its filesystem "
            "(loaded into the heap on import)")
        return "fs"
    say("      the board has a ROMFS partition (%d KB): the bytecode can run from flash, which leaves far "
        "more heap free than .mpy files on the filesystem (README \"Memory\")" % (size // 1024))
    if sys.stdin is not None and sys.stdin.isatty():
        try:
            a = input("      put the code in ROMFS? [Y/n] ").strip().lower()
        except EOFError:
            a = ""
        if a in ("n", "no"):
            return "fs"
    return "romfs"


def _show(a):
    """A shell word: the printed dry-run commands can be pasted as they are."""
    import shlex

    return shlex.quote(a)


def run(args):
    try:
        return deploy(args)
    except DeployError as e:
        print("uspdm deploy: error: %s" % e, file=sys.stderr)
        return e.code
    except subprocess.TimeoutExpired:
        print("uspdm deploy: error: mpremote did not finish within 300 s (is the board answering? hold "
              "BOOTSEL/BOOT during the first second after reset)", file=sys.stderr)
        return 2
