"""The lab board: the firmware running in real MicroPython (wasm) inside a web page.

`uspdm lab` serves a page (tools/lab/) that loads the pinned MicroPython
WebAssembly build in the browser, copies lib/, firmware/ and this folder
into its filesystem (/lib, /firmware, /board) and feeds the board's "USB
serial" from the page's own verifier.  /flash lives in the browser's
storage: the page implements js.uspdmFlashSync (save /flash) and
js.uspdmRandomHex (crypto.getRandomValues).  Otherwise the same as the
simulated board (boards/sim/board.py), whose API this module provides:

  NAME, MCU                 names for logs and measurements
  storage()                 persistent FileStorage (flash)
  entropy(n)                n bytes from the board's entropy source
  drbg()                    the HMAC_DRBG every protocol module draws from (one per boot)
  ticks_ms(), ticks_diff()  a millisecond clock for timeouts (board side only)
  measured_files()          [(label, path)] firmware files that run, for measurements
  config()                  dict of board settings (serial MTU, default EID, algorithm priority)

The page feeds bytes to firmware.device.Device (feed_hex/idle_hex) and
reads what it returns, exactly as boards/sim/simhost.mjs does on a PC.
"""
import time

NAME = "web"
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

        _drbg = from_source(entropy, b"uspdm-web")
    return _drbg


def ticks_ms():
    return time.ticks_ms()


def ticks_diff(a, b):
    return time.ticks_diff(a, b)


def measured_files():
    # boardlib is in /firmware (on sys.path in the page, tools/lab/src/board.js)
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
    (the lab page writes it from its board settings)."""
    global _cfg
    if _cfg is None:
        try:
            from boardlib import parse_settings, validate_settings

            raw = storage().read("uspdm/board.cfg")
            over = parse_settings(raw.decode()) if raw else {}
            validate_settings(over)   # a bad setting is reported at boot, as on every board
        except ImportError:  # the provisioning runner has no firmware/ on its path
            over = {}
        cfg = dict(DEFAULTS)
        cfg.update(over)
        _cfg = cfg
    return _cfg
