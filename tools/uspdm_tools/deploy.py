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
from .paths import REPO_ROOT

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
    p.add_argument("--dry-run", action="store_true", help="compile and stage, print the mpremote commands only")
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
        if fn == "main.py" or (fn.endswith(".mpy") and fn != "main.mpy"):
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


def _cleanup_script(roots, lib_modules=()):
    names = sorted(set(r[:-4] + ".py" for r in roots if r.endswith(".mpy")) | set(lib_modules))
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


def plan(port, stage_dir, roots, settings):
    """The mpremote argument lists, in order."""
    cmds = [["connect", port, "exec", _cleanup_script(roots, _lib_modules(stage_dir))]]
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
    if args.dry_run:
        # the printed commands must still work after we exit: stage into the
        # checkout's build/ folder (make clean removes it), not a temp folder
        tmp = os.path.join(REPO_ROOT, "build", "deploy-%s" % args.board)
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
        cmds = plan(args.port, stage_dir, roots, settings)
        exe = "mpremote" if args.dry_run else mpremote_path(args.mpremote)
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
