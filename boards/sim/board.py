"""The simulated board: the firmware running in real MicroPython (wasm) on a PC.

Board module API (every boards/<name>/board.py provides it; on a device the
file is deployed as /board.py):
  NAME, MCU                 names for logs and measurements
  storage()                 persistent FileStorage (flash)
  entropy(n)                n bytes from the board's entropy source
  drbg()                    the HMAC_DRBG every protocol module draws from (one per boot)
  ticks_ms(), ticks_diff()  a millisecond clock for timeouts (board side only)
  measured_files()          [(label, path)] firmware files that run, for measurements
  config()                  dict of board settings (serial MTU, default EID, algorithm priority)

On the simulator the USB serial is driven by the Node host (boards/sim/simhost.mjs),
which feeds bytes to firmware.device.Device and writes what it returns to a
pseudo-terminal; /flash mirrors the host folder given with `uspdm sim --flash`.
"""
import time

NAME = "sim"
MCU = "wasm"

_storage = None
_drbg = None


def _flash_sync():
    try:
        import js

        js.uspdmFlashSync()
    except Exception:
        pass


def storage():
    global _storage
    if _storage is None:
        from uspdm.storage import FileStorage

        _storage = FileStorage("/flash", on_write=_flash_sync)
    return _storage


def entropy(n):
    import js

    h = str(js.uspdmRandomHex(n))
    return bytes(int(h[i:i + 2], 16) for i in range(0, 2 * n, 2))


def drbg():
    global _drbg
    if _drbg is None:
        from uspdm.crypto.drbg import from_source

        _drbg = from_source(entropy, b"uspdm-sim")
    return _drbg


def ticks_ms():
    return time.ticks_ms()


def ticks_diff(a, b):
    return time.ticks_diff(a, b)


def measured_files():
    # boardlib is in /firmware (on sys.path in the simulator, boards/sim/simhost.mjs)
    from boardlib import code_files

    return code_files((("/firmware", "firmware"), ("/board", "board"), ("/lib", "lib")))


DEFAULTS = {
    "serial_mtu": 64,
    "default_eid": 0,
    "asym_priority": ["p384", "p256"],
    "sessions": 1,
}
_cfg = None


def config():
    """The defaults above, overridden by uspdm/board.cfg on the flash
    (`uspdm sim --set KEY=VALUE` writes it, as `uspdm deploy --set` does on a board)."""
    global _cfg
    if _cfg is None:
        try:
            from boardlib import parse_settings, validate_settings

            raw = storage().read("uspdm/board.cfg")
            over = parse_settings(raw.decode()) if raw else {}
            validate_settings(over)
        except ImportError:  # the provisioning runner has no firmware/ on its path
            over = {}
        cfg = dict(DEFAULTS)
        cfg.update(over)
        _cfg = cfg
    return _cfg
