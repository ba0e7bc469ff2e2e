"""Small portability helpers shared by lib/ (MicroPython and CPython)."""

try:
    from micropython import const  # noqa: F401
except ImportError:  # CPython

    def const(x):
        return x


IS_MICROPYTHON = False
try:
    import sys as _sys

    IS_MICROPYTHON = _sys.implementation.name == "micropython"
except Exception:  # pragma: no cover
    pass


def bit_length(n):
    """int.bit_length() replacement (MicroPython ints have no bit_length)."""
    if n < 0:
        n = -n
    bl = 0
    while n >= 1 << 64:
        n >>= 64
        bl += 64
    while n:
        n >>= 1
        bl += 1
    return bl


def ct_eq(a, b):
    """Constant-time comparison of two byte strings (length is not secret)."""
    if len(a) != len(b):
        return False
    r = 0
    for i in range(len(a)):
        r |= a[i] ^ b[i]
    return r == 0


def u16(b, o=0):
    return b[o] | (b[o + 1] << 8)


def u24(b, o=0):
    return b[o] | (b[o + 1] << 8) | (b[o + 2] << 16)


def u32(b, o=0):
    return b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)


def p16(v):
    return bytes((v & 0xFF, (v >> 8) & 0xFF))


def p24(v):
    return bytes((v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF))


def p32(v):
    return bytes((v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF, (v >> 24) & 0xFF))


def read_into_from(data, offset, buf):
    """A storage's read_into over the file's bytes `data` (None: no such file):
    the bytes from `offset` into buf, and how many."""
    if data is None:
        return None
    n = max(0, min(len(buf), len(data) - offset))
    if n:
        buf[0:n] = memoryview(data)[offset:offset + n]
    return n
