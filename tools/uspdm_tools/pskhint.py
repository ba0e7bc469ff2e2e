"""PSK hints as bytes (DSP0274 PSK_EXCHANGE.PSKHint is opaque bytes).

    hint = pskhint.from_args(text=args.psk_hint, hexstr=args.psk_hint_hex)   # bytes or None
    pskhint.show(b"TestPskHint\\0")   # 'TestPskHint\\x00 (hex 546573745073...00)'
    pskhint.host_file_name(hint)      # 'psk-TestPskHint.bin' style name, never a path

The hint is bounded to MAX_HINT bytes: DSP0274's PSKHint as libspdm (DMTF's
reference, whose requester and validator we interoperate with) sizes it,
LIBSPDM_PSK_MAX_HINT_LENGTH = 16.  libspdm's own test hint is the 12 bytes
`TestPskHint\\0`, which only --psk-hint-hex can express
(5465737450736b48696e7400).
"""
import binascii

MAX_HINT = 16
MAX_PSK = 64    # what the board stores (uspdm/psk_<hint hex>.bin) and the key schedule accepts

_SAFE = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


class HintError(ValueError):
    pass


def parse_hex(s):
    """'54 65:73-74' or '0x5465...' -> bytes; separators (space, ':', '-') allowed."""
    t = s.strip()
    if t[:2].lower() == "0x":
        t = t[2:]
    for sep in (" ", ":", "-", "_"):
        t = t.replace(sep, "")
    if not t:
        raise HintError("--psk-hint-hex is empty")
    if len(t) % 2:
        raise HintError("--psk-hint-hex %r has an odd number of hex digits" % s)
    try:
        return binascii.unhexlify(t)
    except (binascii.Error, ValueError):
        raise HintError("--psk-hint-hex %r is not hexadecimal" % s)


def check(hint):
    if not 1 <= len(hint) <= MAX_HINT:
        raise HintError("a PSK hint is 1-%d bytes (DSP0274 PSKHint as libspdm bounds it); %s is %d bytes"
                        % (MAX_HINT, show(hint[:MAX_HINT + 8]) if hint else "this one", len(hint)))
    return hint


def from_args(text=None, hexstr=None):
    """The hint from --psk-hint TEXT (UTF-8) or --psk-hint-hex HEX; None when neither is given."""
    if text is not None and hexstr is not None:
        raise HintError("give --psk-hint or --psk-hint-hex, not both")
    if hexstr is not None:
        return check(parse_hex(hexstr))
    if text is not None:
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError:   # a lone surrogate from an undecodable argv byte
            raise HintError("--psk-hint is not valid UTF-8 text; use --psk-hint-hex")
        return check(raw)
    return None


def escape(hint):
    """Printable ASCII as it is, everything else (controls, NUL, non-ASCII) as \\xNN."""
    out = []
    for b in bytes(hint):
        if 0x20 <= b < 0x7F and b != 0x5C:
            out.append(chr(b))
        elif b == 0x5C:
            out.append("\\\\")
        else:
            out.append("\\x%02x" % b)
    return "".join(out)


def show(hint):
    """A hint for a report: escaped text and its hex."""
    return "%s (hex %s)" % (escape(hint), binascii.hexlify(bytes(hint)).decode())


def host_file_name(hint):
    """The host copy's file name for a generated PSK: the hint itself when it is
    plain (letters, digits, _ - .; not starting with a dot), else its hex.
    Never contains a path separator."""
    h = bytes(hint)
    if h and h[0] != 0x2E and all(b in _SAFE for b in h):
        return "psk-%s.bin" % h.decode()
    return "psk-hex-%s.bin" % binascii.hexlify(h).decode()


def cli_args(hint):
    """How to pass this hint back on a command line (--psk-hint TEXT or --psk-hint-hex HEX)."""
    h = bytes(hint)
    if all(b in _SAFE for b in h):
        return "--psk-hint %s" % h.decode()
    return "--psk-hint-hex %s" % binascii.hexlify(h).decode()
