"""uspdm provision: give a board its SPDM identity.

1. Creates the lab CA if there is none (default: ~/.config/uspdm/ca; root as
   ca.cert.pem and ca.cert.der, key ca.key.pem with mode 0600).
2. Has the BOARD produce its key pair (`Identity(storage, drbg).ensure_key(alg)`
   runs on the board; the private key never leaves it) and reads back only
   the public key.
3. Issues the device leaf (optionally below an intermediate) with the SPDM
   certificate profile for that public key.
4. Installs the chain (root, [intermediate], leaf) into the slot on the board
   (`Identity.install_chain`), and reads it back to check.

Real board: through mpremote (`--port`); the board has lib/ deployed and a
`board` module with storage() and drbg().  Simulator: `--flash DIR` runs the
same code on MicroPython (wasm) against the simulated board's flash folder
(provision before starting `uspdm sim --flash DIR`, or restart it after).
Idempotent: a board that already has a key keeps it unless --new-key.
"""
import argparse
import binascii
import hashlib
import os
import shutil
import subprocess
import sys

from . import certs as certs_mod
from . import pskhint

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_UNREACHABLE = 2
EXIT_DEVICE = 3

KEY_FILE = "uspdm/key_%s.bin"  # lib/uspdm/storage.py layout
SLOT_FILE = "uspdm/slot%d_%s.der"


class DeviceError(Exception):
    pass


class DeviceUnreachable(Exception):
    pass


class UsageProblem(Exception):
    """The command cannot work as given (exit 1), e.g. --port on the simulator's pty."""


class FlashInUse(UsageProblem):
    """The --flash folder cannot be used (not a board's folder, or locked by a running simulator)."""


def _log(msg):
    sys.stderr.write("uspdm provision: %s\n" % msg)
    sys.stderr.flush()


# ---------------------------------------------------------------- snippets
# Run on the board (MicroPython); they print "KEY value" lines.

_PRELUDE = """
import board, binascii
from uspdm.identity import Identity
_st = board.storage()
_id = Identity(_st, board.drbg())
"""


# Staging: a new key and every chain are written under *.new names first and
# switched in by one last snippet, so a failure part-way (a board that stops
# answering, a chain the board refuses) leaves the old key and chains as they
# were, never a new key with an old certificate.
STAGE = ".new"

_CLEAN = """
import os
for _n in _st.list('uspdm'):
    if _n.endswith('.new') or _n.endswith('.tmp'):
        _st.delete('uspdm/' + _n)   # left over from an interrupted provisioning
"""

_BOARD_ID = """
def _board_id():
    try:
        import machine
        return binascii.hexlify(machine.unique_id()).decode()
    except Exception:
        pass
    _b = _st.read('uspdm/board_id.bin')
    if not _b:
        _b = board.drbg().generate(8)
        _st.write('uspdm/board_id.bin', _b)
    return binascii.hexlify(_b).decode()
print('BOARDID', _board_id())
"""


def snippet_key(alg, new_key, clean=True):
    """Report the board's public key for `alg`: the live key, or (new_key, or
    none yet) a fresh one generated on the board into the staging name.
    clean: first remove what an interrupted provisioning left staged."""
    return _PRELUDE + (_CLEAN if clean else "") + _BOARD_ID + """
from uspdm.crypto import ec as _ec
_alg = %r
_had = _st.exists(%r)
print('NAME', getattr(board, 'NAME', 'board'))
if _had and not %r:
    print('HAD', 1)
    print('PUB', binascii.hexlify(bytes(_id.public_key(_alg))).decode())
else:
    _c = _ec.P384 if _alg == 'p384' else _ec.P256
    _d = _ec.generate_private_key(_c, board.drbg().generate)
    _st.write(%r, _d.to_bytes(_c.size, 'big'))
    print('HAD', 0)
    print('PUB', binascii.hexlify(bytes(_ec.public_key(_c, _d))).decode())
""" % (alg, KEY_FILE % alg, bool(new_key), KEY_FILE % alg + STAGE)


def snippet_stage_chain(slot, alg, der_concat, staged_key):
    """Write the chain under its staging name and check it against the key it
    will be used with (the staged one when a new key is being made)."""
    return _PRELUDE + """
from uspdm.identity import der_elements
from uspdm.crypto import ec as _ec
_der = binascii.unhexlify(%r)
_els = der_elements(_der)
_kn = %r
_raw = _st.read(_kn)
_c = _ec.P384 if %r == 'p384' else _ec.P256
_pub = b'\\x04' + bytes(_ec.public_key(_c, int.from_bytes(_raw, 'big')))
_o, _l = _els[-1]
if _pub not in _der[_o:_o + _l]:
    raise ValueError('leaf certificate does not hold the device key')
_st.write(%r, _der)
print('STAGED', len(_st.read(%r) or b''))
print('PUB', binascii.hexlify(_pub[1:]).decode())
""" % (binascii.hexlify(der_concat).decode(), (KEY_FILE % alg) + (STAGE if staged_key else ""), alg,
       SLOT_FILE % (slot, alg) + STAGE, SLOT_FILE % (slot, alg) + STAGE)


def snippet_switch(names):
    """Move every staged file over its live name, in one go; then list what is live."""
    return _PRELUDE + """
import os
_names = %r
for _n in _names:
    if not _st.exists(_n + '.new'):
        raise OSError('staged file %%s is missing' %% _n)
for _n in _names:
    try:
        os.remove(_st._path(_n))
    except OSError:
        pass
    os.rename(_st._path(_n + '.new'), _st._path(_n))
if _st.on_write:
    _st.on_write()
for _n in _names:
    print('LIVE', _n, len(_st.read(_n) or b''))
""" % (list(names),)


def snippet_unstage(names):
    return _PRELUDE + """
for _n in %r:
    _st.delete(_n + '.new')
print('UNSTAGED')
""" % (list(names),)


def snippet_install(slot, alg, der_concat):
    return _PRELUDE + """
_der = binascii.unhexlify(%r)
_id.install_chain(%d, %r, _der)
_c = _id.chain(%d, %r)
print('CHAIN', len(_c) if _c else 0)
print('PUB', binascii.hexlify(bytes(_id.public_key(%r))).decode())
""" % (binascii.hexlify(der_concat).decode(), slot, alg, slot, alg, alg)


def snippet_psk(hint, psk):
    return _PRELUDE + """
_st.write('uspdm/psk_%s.bin', binascii.unhexlify(%r))
print('PSK', len(_st.read('uspdm/psk_%s.bin') or b''))
""" % (binascii.hexlify(hint).decode(), binascii.hexlify(psk).decode(), binascii.hexlify(hint).decode())


def install_psk(device, hint, psk, log=_log):
    """Store a pre-shared key on the board under its hint (for PSK_EXCHANGE)."""
    if not 1 <= len(hint) <= pskhint.MAX_HINT or not 1 <= len(psk) <= pskhint.MAX_PSK:
        raise DeviceError("PSK hint must be 1-%d bytes and the PSK 1-%d bytes" % (pskhint.MAX_HINT, pskhint.MAX_PSK))
    log("%s: storing a %d-byte PSK under hint %s..." % (device.where, len(psk), pskhint.show(hint)))
    out = parse_lines(device.run(snippet_psk(hint, psk)))
    if out.get("PSK") != str(len(psk)):
        raise DeviceError("the board does not report the stored PSK")


def parse_lines(out):
    d = {}
    for line in out.splitlines():
        parts = line.strip().split(" ", 1)
        if len(parts) == 2 and parts[0].isupper():
            d[parts[0]] = parts[1].strip()
    return d


# ---------------------------------------------------------------- devices

class SimFlashDevice:
    """The simulated board's flash folder, driven through our MicroPython runner."""

    def __init__(self, flash_dir):
        from .flashdir import FlashDirError, FlashLock
        from .mpy import MicroPython, MicroPythonError, MicroPythonUnavailable

        self._err = MicroPythonError
        self.where = "simulated board flash %s" % os.path.abspath(flash_dir)
        try:
            # refuses a folder that is not a board's, or one a running `uspdm sim` uses
            self.lock = FlashLock(flash_dir, "uspdm provision")
        except FlashDirError as e:
            raise FlashInUse(str(e))
        try:
            self.mp = MicroPython(flash=flash_dir, board="sim")
        except MicroPythonUnavailable as e:
            self.lock.close()
            raise UsageProblem(str(e))

    def run(self, code):
        try:
            return self.mp.run(code, timeout=600).out
        except self._err as e:
            raise DeviceError("board code failed:\n%s" % e.traceback)

    def close(self):
        try:
            self.mp.close()
        finally:
            self.lock.close()


class MpremoteDevice:
    """A real board over mpremote (`mpremote connect PORT exec CODE`).

    The port is checked first (it exists; not the simulator's pseudo-terminal)
    and then probed with a short snippet, so a silent or busy port, a board
    that runs the firmware, or one without uspdm deployed is one clear line
    within `probe_timeout` seconds, not a hang.  Every later step is bounded
    by `timeout` (key generation on a small board takes a while)."""

    PROBE = ("import sys\nprint('USPDM-PROBE', sys.implementation.name)\n"
             "import board\nimport uspdm.identity\nprint('USPDM-READY', getattr(board, 'NAME', '?'))\n")

    def __init__(self, port, timeout=120, exe=None, probe_timeout=20):
        exe = exe or os.environ.get("USPDM_MPREMOTE") or shutil.which("mpremote") or \
            os.path.join(os.path.dirname(sys.executable), "mpremote")
        if not os.path.exists(exe):
            raise DeviceError("mpremote is not installed: run `make setup` (or pip install mpremote)")
        self.exe = exe
        self.port = port
        self.timeout = timeout
        self.probe_timeout = probe_timeout
        self.where = "board on %s (mpremote)" % port
        self.checked = False

    def check_port(self):
        port = self.port
        if not os.path.exists(port):
            raise DeviceUnreachable("no such port %s: is the board plugged in? (ls /dev/ttyACM* /dev/ttyUSB*)" % port)
        real = os.path.realpath(port)
        if real.startswith("/dev/pts/") or real.startswith("/dev/ptmx"):
            raise UsageProblem("%s is a pseudo-terminal (the simulator's?): provisioning goes through mpremote and "
                               "the REPL of a real board; provision the simulated board with `uspdm provision "
                               "--flash DIR` (the folder given to `uspdm sim --flash`) while it is stopped" % port)
        _log("checking that %s is a MicroPython board with uspdm deployed (up to %d s)..."
             % (port, self.probe_timeout))
        out = self._exec(self.PROBE, self.probe_timeout, probing=True)
        if "USPDM-PROBE" not in out:
            raise DeviceUnreachable("%s does not answer like MicroPython (no output from a probe)" % port)
        if "USPDM-READY" not in out:
            raise DeviceError("the board on %s has no uspdm firmware (no board module or lib/uspdm): run "
                              "`uspdm deploy --board rp2040|esp32 --port %s` first" % (port, port))
        self.checked = True

    def _exec(self, code, timeout, probing=False):
        cmd = [self.exe, "connect", self.port, "exec", code]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeviceUnreachable(
                "no answer from %s within %d s: is it a MicroPython board? a board running the uspdm "
                "firmware hands over its REPL only with BOOTSEL/BOOT held during the first second after "
                "reset" % (self.port, timeout))
        except OSError as e:
            raise DeviceError("cannot run mpremote (%s): %s" % (self.exe, e))
        if p.returncode != 0:
            err = ((p.stderr or "") + (p.stdout or "")).strip()
            low = err.lower()
            last = err.splitlines()[-1] if err else "exit %d" % p.returncode
            if "could not enter raw repl" in low:
                raise DeviceUnreachable(
                    "the board on %s does not hand over its REPL (it runs the uspdm firmware): hold "
                    "BOOTSEL/BOOT during the first second after a reset, then run this again" % self.port)
            if "failed to access" in low or "in use" in low or "busy" in low:
                raise DeviceUnreachable("%s is in use by another program (close picocom/minicom/screen or "
                                        "another uspdm command), then run this again" % self.port)
            if "no device" in low or "could not" in low:
                raise DeviceUnreachable("mpremote cannot reach %s: %s" % (self.port, last))
            if probing and ("importerror" in low or "no module named" in low):
                return p.stdout or ""
            raise DeviceError("board code failed on %s: %s" % (self.port, last))
        return p.stdout or ""

    def run(self, code):
        if not self.checked:
            self.check_port()
        out = self._exec(code, self.timeout)
        self.used = True
        return out

    def close(self):
        """mpremote leaves the board at the REPL: reset it so the firmware
        (with its new identity) serves again."""
        if getattr(self, "used", False):
            _log("resetting the board on %s so the firmware starts again" % self.port)
            try:
                subprocess.run([self.exe, "connect", self.port, "reset"], capture_output=True, timeout=30)
            except (subprocess.TimeoutExpired, OSError):
                _log("could not reset the board; press its reset button")


# ---------------------------------------------------------------- flow

def default_device_info(board_name, xy):
    return "uspdm:%s:%s" % (board_name, hashlib.sha256(xy).hexdigest()[:16])


def default_device_info(board_name, board_id):
    """One identity per board, whatever the algorithm: vendor:model:serial with
    the board's serial (its unique ID, or a random ID kept on its flash)."""
    return "uspdm:%s:%s" % (board_name, board_id)


def provision(device, ca, slot=0, algs=("p384",), intermediate=False, subject=None, device_info=None,
              new_key=False, log=_log):
    """Provision `device` (SimFlashDevice/MpremoteDevice-like: run(code) -> stdout).
    Everything is staged on the board first (new keys, every chain) and switched
    in at the end, so a failure part-way leaves the board as it was.
    Returns a list of dicts, one per algorithm."""
    results = []
    staged = []   # live names whose staged copy is on the board
    try:
        for alg in algs:
            log("%s: asking the board to generate or load its %s key (it never leaves the board)..."
                % (device.where, alg.upper()))
            out = parse_lines(device.run(snippet_key(alg, new_key, clean=not results)))
            if "PUB" not in out:
                raise DeviceError("the board did not report a public key")
            xy = binascii.unhexlify(out["PUB"])
            try:
                pub = certs_mod.public_key_from_xy(alg, xy)
            except ValueError as e:
                raise DeviceError("the board's %s public key is invalid: %s" % (alg, e))
            reused = out.get("HAD") == "1"
            if not reused:
                staged.append(KEY_FILE % alg)
            log("%s key %s: %s..." % (alg.upper(), "reused" if reused else "generated (staged)", out["PUB"][:32]))
            info = device_info or default_device_info(out.get("NAME", "board"), out.get("BOARDID", "0"))
            chain = ca.issue_leaf(pub, info, subject=subject, use_intermediate=intermediate)
            der = b"".join(chain)
            log("issued %s leaf for %r (%d certificates, %d bytes); staging it for slot %d..."
                % (alg.upper(), info, len(chain), len(der), slot))
            out2 = parse_lines(device.run(snippet_stage_chain(slot, alg, der, not reused)))
            if out2.get("PUB") != out["PUB"]:
                raise DeviceError("the board's key changed while provisioning")
            staged.append(SLOT_FILE % (slot, alg))
            if out2.get("STAGED") != str(len(der)):
                raise DeviceError("the board does not report the staged chain")
            results.append({"alg": alg, "slot": slot, "key_reused": reused, "device_info": info,
                            "public_key": out["PUB"], "chain": chain})
        log("switching the board to the new identity (%s)..." % ", ".join(staged))
        out3 = device.run(snippet_switch(staged))
        live = {l.split()[1]: l.split()[2] for l in out3.splitlines() if l.startswith("LIVE ")}
        if sorted(live) != sorted(staged) or "0" in live.values():
            raise DeviceError("the board does not report the switched files")
        staged = []
    finally:
        if staged:
            try:
                device.run(snippet_unstage(staged))
            except Exception:
                pass   # best effort: the next provisioning removes leftovers first
    return results


def _positive(v):
    try:
        f = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % v)
    if not f > 0 or f != f or f == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number of seconds, got %r" % v)
    return f


def register(sub):
    p = sub.add_parser(
        "provision", help="give a board its SPDM identity (lab CA, on-board key, certificate chain)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__import__("uspdm_tools.exitcodes", fromlist=["epilog"]).epilog(
            "provisioned", 1, 2, 3, PROTOCOL="board-side failure (board code failed, key or chain not stored)"))
    tgt = p.add_mutually_exclusive_group(required=True)
    tgt.add_argument("--port", help="serial port of a real board (via mpremote)")
    tgt.add_argument("--flash", metavar="DIR", help="the simulated board's flash folder (as given to `uspdm sim`)")
    p.add_argument("--ca-dir", default=None,
                   help="lab CA directory (default %s); created if missing" % certs_mod.default_ca_dir())
    p.add_argument("--slot", type=int, default=0, choices=range(8), metavar="N", help="certificate slot 0-7")
    p.add_argument("--alg", choices=["p384", "p256", "all"], default="all",
                   help="key/chain algorithm(s) to provision (default: all)")
    p.add_argument("--intermediate", action="store_true", help="issue the leaf below an intermediate CA")
    p.add_argument("--subject", default=None, help="leaf subject common name (default: uspdm device <serial>)")
    p.add_argument("--device-info", default=None,
                   help="device-info SAN string, vendor:model:serial (default uspdm:<board>:<key hash>)")
    p.add_argument("--new-key", action="store_true", help="replace the board's key instead of reusing it")
    p.add_argument("--timeout", type=_positive, default=20.0, metavar="S",
                   help="--port: seconds to wait for the board's first answer (default 20)")
    p.add_argument("--psk-hint", default=None,
                   help="also store a pre-shared key for PSK sessions under this hint (UTF-8 text, "
                        "1-%d bytes)" % pskhint.MAX_HINT)
    p.add_argument("--psk-hint-hex", default=None, metavar="HEX",
                   help="the PSK hint as bytes in hex (e.g. 5465737450736b48696e7400, libspdm's "
                        "TestPskHint\\0)")
    p.add_argument("--psk-file", default=None,
                   help="file holding the PSK bytes, 1-%d (with a hint; default: a new random 32-byte PSK "
                        "written to <ca-dir>/psk-<hint>.bin, or psk-hex-<hint hex>.bin for a hint that is "
                        "not plain text)" % pskhint.MAX_PSK)
    from .verifier import _usage_exit

    p.error = _usage_exit(p)
    p.set_defaults(func=cmd_provision)


def _psk_args(args):
    """(hint bytes or None, PSK bytes or None): checked before anything is written
    (a bad hint or PSK file leaves no CA, key, chain or PSK file behind)."""
    hint = pskhint.from_args(getattr(args, "psk_hint", None), getattr(args, "psk_hint_hex", None))
    path = getattr(args, "psk_file", None)
    if path and hint is None:
        raise pskhint.HintError("--psk-file needs --psk-hint or --psk-hint-hex")
    psk = None
    if path:
        try:
            with open(path, "rb") as f:
                psk = f.read(pskhint.MAX_PSK + 1)
        except OSError as e:
            raise pskhint.HintError("cannot read the PSK file %s: %s" % (path, e.strerror or e))
        if not 1 <= len(psk) <= pskhint.MAX_PSK:
            raise pskhint.HintError("the PSK file %s holds %s bytes; a PSK is 1-%d bytes" % (
                path, len(psk) if len(psk) <= pskhint.MAX_PSK else "more than %d" % pskhint.MAX_PSK,
                pskhint.MAX_PSK))
    return hint, psk


def _store_psk(device, ca_dir, hint, psk):
    """Install the PSK on the board; a generated one is kept on the host too
    (mode 0600), written under a temporary name and renamed into place only
    once the board has it.  Returns the host path."""
    if psk is not None:
        install_psk(device, hint, psk)
        return None
    psk = os.urandom(32)
    path = os.path.join(ca_dir, pskhint.host_file_name(hint))
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(psk)
        install_psk(device, hint, psk)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def cmd_provision(args, device=None):
    try:
        hint, psk = _psk_args(args)
    except pskhint.HintError as e:
        _log(str(e))
        return EXIT_USAGE
    ca_dir = args.ca_dir or certs_mod.default_ca_dir()
    algs = ("p384", "p256") if args.alg == "all" else (args.alg,)
    try:
        # the board first: nothing (not even the lab CA) is created for a board that cannot be reached
        if device is None:
            if args.flash:
                device = SimFlashDevice(args.flash)
            else:
                device = MpremoteDevice(args.port, probe_timeout=getattr(args, "timeout", None) or 20)
                device.check_port()
        try:
            ca = certs_mod.LabCA(ca_dir)
            try:
                created = ca.load_or_create()
            except (OSError, ValueError) as e:
                raise FlashInUse("cannot use the CA in %s: %s" % (ca_dir, e))
            if created:
                _log("created a lab CA in %s" % os.path.abspath(ca_dir))
            else:
                _log("using the lab CA in %s" % os.path.abspath(ca_dir))
            _log("root certificate: %s (and %s); key %s (mode 0600)"
                 % (ca.root_pem_path, ca.root_der_path, ca.root_key_path))
            res = provision(device, ca, slot=args.slot, algs=algs, intermediate=args.intermediate,
                            subject=args.subject, device_info=args.device_info, new_key=args.new_key)
            if hint is not None:
                psk_path = _store_psk(device, ca_dir, hint, psk) or args.psk_file
                print("PSK for hint %s stored on the board; host copy: %s (for `uspdm session %s "
                      "--psk-file %s`)" % (pskhint.show(hint), psk_path, pskhint.cli_args(hint), psk_path))
        finally:
            device.close()
    except UsageProblem as e:
        _log(str(e))
        return EXIT_USAGE
    except DeviceUnreachable as e:
        _log("UNREACHABLE: %s" % e)
        return EXIT_UNREACHABLE
    except DeviceError as e:
        _log("FAILED: %s" % e)
        return EXIT_DEVICE
    for r in res:
        print("provisioned slot %d %s: device-info %s, key %s, chain of %d certificates (%s)"
              % (r["slot"], r["alg"].upper(), r["device_info"], "reused" if r["key_reused"] else "new",
                 len(r["chain"]), "root, intermediate, leaf" if len(r["chain"]) == 3 else "root, leaf"))
    print("trust anchor for `uspdm attest --root`: %s" % ca.root_pem_path)
    return EXIT_OK
