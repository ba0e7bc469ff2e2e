"""Raspberry Pi Pico (RP2040) board module, deployed as /board.py.

Board module API: see boards/sim/board.py.  Hardware used:
  USB serial    the REPL's USB CDC port (/dev/ttyACM0): DSP0253 MCTP
  I2C target    I2C0 on GP4 (SDA) / GP5 (SCL), address 0x1D (settings)
  I2C send      I2C1 on GP6 (SDA) / GP7 (SCL), wired to GP4/GP5: DSP0237
                responses are controller writes (see the README wiring)
  RNG           os.urandom (pico_rand: ring oscillator + timers) when the
                port has it, else the ROSC RANDOMBIT register, conditioned
  flash         the MicroPython filesystem (uspdm/ folder)
  LED           Pin("LED") (Pico and Pico W)
  REPL escape   BOOTSEL held during the first second after reset
Crypto: our pure-Python fallbacks (the rp2 port has hashlib.sha256 only, no
cryptolib); detected at run time, logged at boot.
"""
import sys

import time

# (nothing of firmware/boardlib.py is imported at the top: it is boot-only, dropped once
# the board is serving, and a reference held here would keep all of it in the heap)


def ticks_ms():
    return time.ticks_ms()


def ticks_diff(a, b):
    return time.ticks_diff(a, b)


def measured_files():
    from boardlib import code_files

    return code_files()

NAME = "rp2040"
MCU = "RP2040"
BUTTON = "BOOTSEL"

DEFAULTS = {
    "serial_mtu": 64,
    "default_eid": 0,
    "asym_priority": ["p384", "p256"],
    "sessions": 1,               # 0: leave secure sessions out (saves ~30 KB of heap)
    "mode": "responder",         # or "bridge"
    "i2c": 1,
    "i2c_addr": 0x1D,            # 0x10 by default in bridge mode
    "i2c_freq": 100000,
    "i2c_target_id": 0,
    "i2c_target_sda": 4,
    "i2c_target_scl": 5,
    "i2c_ctl_id": 1,
    "i2c_ctl_sda": 6,
    "i2c_ctl_scl": 7,
    "i2c_slots": 8,
    "bridge_target": 0x1D,
    "bridge_eid": 0xFE,
    "repl_escape": 0,            # 1: \r\x03 on the line hands over the REPL (lab only: it reads the key)
    "repl_escape_quiet_ms": 100,
    "boot_escape_ms": 1000,
    "led_pin": "LED",
}
ROSC_RANDOMBIT = 0x4006001C

_storage = None
_drbg = None
_cfg = None
_led = None


def storage():
    global _storage
    if _storage is None:
        from uspdm.storage import FileStorage

        _storage = FileStorage("/")
    return _storage


def config():
    global _cfg
    if _cfg is None:
        from boardlib import load_settings

        _cfg = load_settings(storage(), DEFAULTS)
    return _cfg


def _rosc_bit():
    import machine

    return machine.mem32[ROSC_RANDOMBIT]


def entropy(n):
    import os

    if hasattr(os, "urandom"):
        return os.urandom(n)
    from boardlib import conditioned

    return conditioned(_rosc_bit, n)


def drbg():
    global _drbg
    if _drbg is None:
        from uspdm.crypto.drbg import from_source

        _drbg = from_source(entropy, b"uspdm-rp2040")
    return _drbg


def led(on):
    global _led
    try:
        if _led is None:
            import machine

            _led = machine.Pin(config().get("led_pin", "LED"), machine.Pin.OUT)
        _led.value(1 if on else 0)
    except Exception:
        pass


def bootsel():
    import rp2

    return rp2.bootsel_button()


def skip_firmware():
    """True when BOOTSEL is pressed during the boot window (LED blinks fast)."""
    import time

    from boardlib import button_window

    try:
        import rp2  # noqa: F401
    except ImportError:
        return False
    return button_window(bootsel, led, config().get("boot_escape_ms", 1000), time.ticks_ms, time.ticks_diff,
                         time.sleep_ms)


def serve(dev):
    """Log what the port offers, then serve the transports (serve.run, never returns);
    the boot-only boardlib is not held by this frame while it serves."""
    import boardlib

    print(boardlib.caps_line(boardlib.capabilities()))
    boardlib = None
    from serve import run

    return run(sys.modules[__name__], dev)
