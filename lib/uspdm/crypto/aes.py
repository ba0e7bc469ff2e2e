"""AES block encryption (FIPS 197), 128/256-bit keys.

    a = aes.Aes(key); a.encrypt_block(b16) -> 16 bytes
    a.encrypt_blocks(buf) -> len(buf) bytes (ECB over whole blocks)

Uses the board's C `cryptolib.aes(key, 1)` (ECB) when the module exists,
otherwise T-table AES run by the viper kernel of _gcmv where the port has a
native emitter (one 1 KiB table T0, rotated for T1..T3), else by the
pure-Python twin of _aespy (T0..T3 in one 4 KiB `array('I')` instead of
~40 KiB of boxed ints on MicroPython; imported only where it runs); tables
are built at first use.  Only the forward direction is provided (GCM/CTR need no
decryption).  wipe() overwrites the round keys.
"""
try:
    import cryptolib as _cryptolib
except ImportError:
    _cryptolib = None

from array import array

try:
    from uspdm.crypto import _gcmv as _kern
except MemoryError:  # not a port without the kernel: this import fails as a whole
    raise
except Exception:  # CPython, MicroPython without a native emitter
    _kern = None

_ECB = 1
_S = None  # the S-box (bytes), built at first use


def _xtime(a):
    a <<= 1
    return (a ^ 0x11B) if a & 0x100 else a


def _sbox():
    global _S
    if _S is None:
        # exp/log over generator 3 for inverses
        exp = bytearray(256)
        log = bytearray(256)
        x = 1
        for i in range(255):
            exp[i] = x
            log[x] = i
            x ^= _xtime(x)
        sbox = bytearray(256)
        for a in range(256):
            inv = exp[(255 - log[a]) % 255] if a else 0
            s = inv
            for _ in range(4):
                inv = ((inv << 1) | (inv >> 7)) & 0xFF
                s ^= inv
            sbox[a] = s ^ 0x63
        _S = bytes(sbox)
    return _S


def _t_tables(n):
    """T0 (n=1: what the kernel uses, rotating it for T1..T3) or T0..T3
    (n=4, the twin) in one array('I') of n*256 words."""
    sbox = _sbox()
    # from a range, not bytes(1024 * n): no second 1 KiB block for a temporary
    tt = array("I", range(256 * n))
    for a in range(256):
        s = sbox[a]
        s2 = _xtime(s)
        w = (s2 << 24) | (s << 16) | (s << 8) | (s2 ^ s)
        tt[a] = w
        for k in range(1, n):
            w = ((w >> 8) | (w << 24)) & 0xFFFFFFFF
            tt[256 * k + a] = w
    return tt


def _twin():
    """The pure-Python twin (uspdm.crypto._aespy), imported where it runs."""
    from uspdm.crypto import _aespy

    return _aespy


def _kernel_tables():
    """The kernel's tables: T0 (1 KiB) and the S-box, installed once."""
    if _kern.T is None:
        _kern.S = _sbox()
        _kern.T = _t_tables(1)


def _expand(key):
    nk = len(key) // 4
    nr = nk + 6
    sbox = _sbox()
    w = [int.from_bytes(key[4 * i:4 * i + 4], "big") for i in range(nk)]
    rcon = 1
    for i in range(nk, 4 * (nr + 1)):
        t = w[i - 1]
        if i % nk == 0:
            t = ((sbox[(t >> 16) & 255] << 24) | (sbox[(t >> 8) & 255] << 16) | (sbox[t & 255] << 8)
                 | sbox[t >> 24]) ^ (rcon << 24)
            rcon = _xtime(rcon)
        elif nk > 6 and i % nk == 4:
            t = (sbox[t >> 24] << 24) | (sbox[(t >> 16) & 255] << 16) | (sbox[(t >> 8) & 255] << 8) | sbox[t & 255]
        w.append(w[i - nk] ^ t)
    return nr, w


class Aes:
    def __init__(self, key, force_pure=False, kernel=True):
        """force_pure: not the C cryptolib; kernel=False: not the viper
        kernel either (the pure-Python twin, for tests)."""
        if len(key) not in (16, 32):
            raise ValueError("AES key must be 16 or 32 bytes")
        self._ks = None
        if _cryptolib is not None and not force_pure:
            self._c = _cryptolib.aes(bytes(key), _ECB)
            self.encrypt_block = self._c.encrypt
            return
        self._c = None
        nr, w = _expand(key)
        if _kern is not None and kernel:
            _kernel_tables()
            ks = array("I", bytes(4 * (len(w) + 1)))
            ks[0] = nr
            for i in range(len(w)):
                ks[i + 1] = w[i]
                w[i] = 0
            self._ks = ks
            return
        _twin().init(self, nr, w)

    def ctr_xor(self, cb, buf, n):
        """Kernel path only: buf[:n] ^= CTR keystream from counter block cb
        (a bytearray: block i uses it with its last 32 bits + i; cb is not changed)."""
        _kern.ctr_xor(self._ks, cb, buf, n)

    def wipe(self):
        """Overwrite the key schedule (the object is unusable afterwards)."""
        ks = self._ks
        if ks is not None:
            for i in range(len(ks)):
                ks[i] = 0
        if self._c is None and self._ks is None:
            rk = self._rk
            for i in range(len(rk)):
                rk[i] = 0
            self._last = None
        self._c = None

    def encrypt_blocks(self, buf):
        """ECB-encrypt len(buf) (a multiple of 16) bytes (cryptolib, or the twin)."""
        if self._c is not None:
            return self._c.encrypt(bytes(buf))
        return _twin().blocks(self, buf)

    def encrypt_block(self, b):
        if len(b) != 16:
            raise ValueError("AES block must be 16 bytes")
        if self._ks is not None:
            out = bytearray(16)
            _kern.ctr_xor(self._ks, bytearray(b), out, 16)
            return bytes(out)
        return _twin().block(self, b)


def has_kernel():
    return _kern is not None


def has_cryptolib():
    return _cryptolib is not None
