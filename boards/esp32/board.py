"""ESP32-S3 DevKitC board module, deployed as /board.py.

Board module API: see boards/sim/board.py.  Hardware used:
  USB serial    the REPL's USB port (native USB CDC / USB-Serial-JTAG, or the
                UART bridge port): DSP0253 MCTP
  I2C target    I2C0 on GPIO8 (SDA) / GPIO9 (SCL), address 0x1D (settings).
                Needs MicroPython 1.26+ on an S2/S3/C3/C6 build with the
                ESP-IDF 5.4+ I2C slave driver; the original ESP32 has no
                machine.I2CTarget: then USB serial only, said at boot.
                No hard IRQ on this family: "mem" capture (soft IRQ).
  I2C send      I2C1 on GPIO4 (SDA) / GPIO5 (SCL), wired to GPIO8/GPIO9
  RNG           os.urandom (esp_random, the hardware RNG)
  flash         the MicroPython filesystem (uspdm/ folder)
  LED           the RGB LED (GPIO48 on DevKitC-1 v1.0, GPIO38 on v1.1: setting
                led_pin) through neopixel, if present
  REPL escape   BOOT (GPIO0) pressed during the first second after reset
                (held *at* reset it selects the ROM download mode instead)
Crypto: hashlib.sha384/sha512 and cryptolib when the port has them (mbedtls,
hardware accelerated), else our fallbacks; detected at run time.
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

NAME = "esp32"
BUTTON = "BOOT (GPIO0)"


def _mcu():
    m = getattr(sys.implementation, "_machine", "") or ""
    for chip in ("ESP32S3", "ESP32S2", "ESP32C6", "ESP32C3", "ESP32"):
        if chip in m.upper().replace("-", ""):
            return chip
    return "ESP32"


MCU = _mcu()

DEFAULTS = {
    "serial_mtu": 64,
    "default_eid": 0,
    "asym_priority": ["p384", "p256"],
    "sessions": 1,               # 0: leave secure sessions out (saves ~30 KB of heap)
    "mode": "responder",
    "i2c": 1,
    "i2c_addr": 0x1D,
    "i2c_freq": 100000,
    "i2c_target_id": 0,
    "i2c_target_sda": 8,
    "i2c_target_scl": 9,
    "i2c_ctl_id": 1,
    "i2c_ctl_sda": 4,
    "i2c_ctl_scl": 5,
    "i2c_slots": 8,
    "i2c_hard_irq": 0,
    "bridge_target": 0x1D,
    "bridge_eid": 0xFE,
    "repl_escape": 0,            # 1: \r\x03 on the line hands over the REPL (lab only: it reads the key)
    "repl_escape_quiet_ms": 100,
    "boot_escape_ms": 1000,
    "boot_pin": 0,
    "led_pin": 48,
}

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


def entropy(n):
    import os

    if not hasattr(os, "urandom"):
        raise RuntimeError("no entropy source (os.urandom missing)")
    return os.urandom(n)


def drbg():
    global _drbg
    if _drbg is None:
        from uspdm.crypto.drbg import from_source

        _drbg = from_source(entropy, b"uspdm-esp32")
    return _drbg


def led(on):
    global _led
    try:
        if _led is None:
            import machine
            import neopixel

            _led = neopixel.NeoPixel(machine.Pin(config().get("led_pin", 48)), 1)
        _led[0] = (0, 8, 0) if on else (0, 0, 0)
        _led.write()
    except Exception:
        _led = False if _led is None else _led


def boot_button():
    import machine

    return machine.Pin(config().get("boot_pin", 0), machine.Pin.IN, machine.Pin.PULL_UP).value() == 0


def skip_firmware():
    """True when BOOT is pressed during the boot window (LED blinks)."""
    import time

    from boardlib import button_window

    return button_window(boot_button, led, config().get("boot_escape_ms", 1000), time.ticks_ms, time.ticks_diff,
                         time.sleep_ms)


def serve(dev):
    """Log what the port offers, then serve the transports (serve.run, never returns);
    the boot-only boardlib is not held by this frame while it serves."""
    import boardlib

    print(boardlib.caps_line(boardlib.capabilities()))
    boardlib = None
    from serve import run

    return run(sys.modules[__name__], dev)
