"""The declared schema of the board settings (uspdm/board.cfg, `uspdm deploy
--set`, `uspdm sim --set`): every key with its type and range or allowed
values.  The host refuses a bad --set before anything is written; the board
checks its settings file at boot, reports each bad entry in its log and keeps
the default for it (boardlib.load_settings).  Loaded on demand and dropped
after the check (it is not needed while serving).

Kinds: ("int", lo, hi), ("bool",) = 0 or 1, ("choice", "a b c"),
("list", "a b c") = a comma-separated non-empty subset in any order,
("pin",) = a GPIO number 0-63 or a pin name such as LED.
"""

SCHEMA = {
    # MCTP and SPDM
    "serial_mtu": ("int", 64, 250),
    "default_eid": ("int", 0, 254),
    "persist_eid": ("bool",),
    "asym_priority": ("list", "p384 p256"),
    "versions": ("list", "1.0 1.1 1.2 1.3"),
    "sessions": ("bool",),
    "defer_signing": ("choice", "auto 0 1"),
    "ct_exponent": ("int", 0, 31),
    "rdt_exponent": ("int", 0, 31),
    "slow_sign_ms": ("int", 0, 600000),        # lab/test: every signing job takes at least this long
    "data_transfer_size": ("int", 42, 65536),
    "max_spdm_msg_size": ("int", 42, 65536),
    "svn": ("int", 0, 0x3FFFFFFF),
    "allow_replayable_psk": ("bool",),
    "buffer_cap": ("int", 0, 1 << 20),          # 0: max_spdm_msg_size + data_transfer_size + 64
    "rsp_buffer": ("int", 0, 65536),            # response buffer allocated at boot (0: none)
    # enrolment over SPDM (GET_CSR, SET_CERTIFICATE) and the OpenPRoT profile
    "enroll": ("bool",),
    "enroll_in_clear": ("bool",),
    "lock_slot0": ("bool",),
    "cert_install_reset": ("bool",),
    "multi_key": ("bool",),
    "openprot": ("bool",),
    "openprot_version": ("choice", "1.2 1.3"),
    # board role and I2C
    "mode": ("choice", "responder bridge"),
    "i2c": ("bool",),
    "i2c_addr": ("int", 0x01, 0x77),
    "i2c_freq": ("int", 10000, 1000000),
    "i2c_target_id": ("int", 0, 1),
    "i2c_target_sda": ("int", 0, 63),
    "i2c_target_scl": ("int", 0, 63),
    "i2c_ctl_id": ("int", 0, 1),
    "i2c_ctl_sda": ("int", 0, 63),
    "i2c_ctl_scl": ("int", 0, 63),
    "i2c_slots": ("int", 1, 32),
    "i2c_hard_irq": ("bool",),
    "bridge_target": ("int", 0x01, 0x77),
    "bridge_eid": ("int", 1, 254),
    # the way to the REPL, LED
    "repl_escape": ("bool",),
    "repl_escape_quiet_ms": ("int", 10, 10000),
    "boot_escape_ms": ("int", 0, 10000),
    "boot_pin": ("int", 0, 63),
    "led_pin": ("pin",),
}


_NAME = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"


def _show(spec):
    k = spec[0]
    if k == "int":
        return "an integer %d..%d" % (spec[1], spec[2])
    if k == "bool":
        return "0 or 1"
    if k == "choice":
        return "one of " + ", ".join(spec[1].split())
    if k == "list":
        return "a comma-separated list of " + ", ".join(spec[1].split())
    return "a GPIO number 0-63 or a pin name"


def check(key, value):
    """None when `key=value` is a valid setting (value as parsed from the file:
    an int, or a string), else a one-line reason."""
    spec = SCHEMA.get(key)
    if spec is None:
        return "unknown setting %r (known: %s)" % (key, ", ".join(sorted(SCHEMA)))
    k = spec[0]
    ok = False
    if k == "int":
        ok = isinstance(value, int) and spec[1] <= value <= spec[2]
    elif k == "bool":
        ok = isinstance(value, int) and value in (0, 1)
    elif k == "choice":
        ok = str(value) in spec[1].split()
    elif k == "list":
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",")]
        elif isinstance(value, (list, tuple)):
            parts = list(value)
        else:
            parts = []
        allowed = spec[1].split()
        ok = bool(parts) and all(p in allowed for p in parts) and len(set(parts)) == len(parts)
    elif k == "pin":
        ok = (isinstance(value, int) and 0 <= value <= 63) or (
            isinstance(value, str) and 0 < len(value) <= 16 and all(c in _NAME for c in value))
    if ok:
        return None
    return "%s=%s: must be %s" % (key, value, _show(spec))


def parse_value(text):
    """A value as boardlib.parse_settings reads it: an int in any base, else the string."""
    text = text.strip()
    try:
        return int(text, 0)
    except ValueError:
        return text
