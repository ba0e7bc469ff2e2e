"""AES-GCM (NIST SP 800-38D) with 96-bit IVs and 128-bit tags.

    g = gcm.AesGcm(key)
    ct_tag = g.seal(iv12, aad, plaintext)
    pt = g.open(iv12, aad, ct_tag)        # AuthenticationError if tampered

GHASH uses Shoup's table method: a per-key table of the 16 (table_bits=4,
default) or 256 (table_bits=8, ~9 KiB on MicroPython, about twice as fast
in pure Python) multiples of H, built once per key.  Where the port has a
native emitter, GHASH (4-bit table, 272 bytes of words) and, without
cryptolib, AES-CTR run as the viper kernels of _gcmv; elsewhere the
pure-Python twins of _gcmpy (128-bit ints, imported only there: a board
with the kernels never loads them).  CTR keystream otherwise comes from
aes.Aes (cryptolib ECB in batches when present).  wipe() overwrites the key
schedule and the table (END_SESSION).
"""
from array import array

from uspdm.compat import ct_eq
from uspdm.crypto import aes as _aes
from uspdm.crypto.aes import Aes

_kern = _aes._kern


class AuthenticationError(ValueError):
    pass


_R = 0xE1 << 120
_MAXPT = (1 << 36) - 32  # bytes, SP 800-38D: len(P) <= 2^39 - 256 bits


def _twin():
    """The pure-Python twins (uspdm.crypto._gcmpy), imported where they run."""
    from uspdm.crypto import _gcmpy

    return _gcmpy


def _mulx(z, n):
    for _ in range(n):
        z = (z >> 1) ^ _R if z & 1 else z >> 1
    return z


def _words4(v, out, o):
    """128-bit int -> 4 big-endian 32-bit words at out[o:o+4]."""
    out[o] = v >> 96
    out[o + 1] = (v >> 64) & 0xFFFFFFFF
    out[o + 2] = (v >> 32) & 0xFFFFFFFF
    out[o + 3] = v & 0xFFFFFFFF


class AesGcm:
    def __init__(self, key, table_bits=4, force_pure=False, kernel=True):
        """force_pure: AES without the C cryptolib; kernel=False: the
        pure-Python twins even where viper exists (tests)."""
        if table_bits not in (4, 8):
            raise ValueError("table_bits")
        use_k = _kern is not None and kernel and table_bits == 4
        # with the kernels, AES runs in viper even where cryptolib exists:
        # its key schedule can then be overwritten (wipe), a C object's not
        self._aes = Aes(key, force_pure or use_k, kernel)
        self._ctx = None
        self._bits = table_bits
        if use_k:
            h = self._aes.encrypt_block(bytes(16))
            hi = int.from_bytes(h, "big")
        else:
            hi = int.from_bytes(self._aes.encrypt_block(bytes(16)), "big")
        n = 1 << table_bits
        # M[v] = v(x) * H with v placed in the top `table_bits` of the block:
        # the top bit is 1 (M = H), each lower bit one more factor x
        m = [0] * n
        z = hi
        for i in range(table_bits - 1, -1, -1):
            m[1 << i] = z
            z = _mulx(z, 1)
        for v in range(3, n):
            if v & (v - 1):
                low = v & -v
                m[v] = m[low] ^ m[v ^ low]
        if use_k:
            ctx = array("I", bytes(4 * 68))
            for v in range(16):
                _words4(m[v], ctx, 4 + 4 * v)
                m[v] = 0
            self._ctx = ctx
            self._m = None
            self._red = None
        else:
            self._red = _twin().red(table_bits)
            self._m = tuple(m)
        hi = z = m = None

    def wipe(self):
        """Overwrite the AES key schedule and the GHASH table (kernel path:
        in place; twin: dropped, big ints cannot be overwritten)."""
        ctx = self._ctx
        if ctx is not None:
            for i in range(len(ctx)):
                ctx[i] = 0
        self._aes.wipe()
        self._m = None

    # -- GHASH ---------------------------------------------------------------
    def _kghash(self, data):
        n = len(data)
        full = n >> 4
        if full:
            _kern.ghash(self._ctx, data, 0, full)
        if n & 15:
            blk = bytearray(16)
            blk[0:n & 15] = data[full << 4:]
            _kern.ghash(self._ctx, blk, 0, 1)

    def _tag(self, j0, aad, ct):
        lens = (len(aad) * 8).to_bytes(8, "big") + (len(ct) * 8).to_bytes(8, "big")
        if self._ctx is not None:
            ctx = self._ctx
            ctx[0] = ctx[1] = ctx[2] = ctx[3] = 0
            self._kghash(aad)
            self._kghash(ct)
            _kern.ghash(ctx, lens, 0, 1)
            y = bytearray(16)
            for i in range(4):
                y[4 * i:4 * i + 4] = ctx[i].to_bytes(4, "big")
            ctx[0] = ctx[1] = ctx[2] = ctx[3] = 0
            if self._aes._ks is not None:
                self._aes.ctr_xor(bytearray(j0), y, 16)
                return bytes(y)
            e = self._aes.encrypt_block(j0)
            return bytes(y[i] ^ e[i] for i in range(16))
        return _twin().tag(self, j0, aad, ct, lens)

    # -- CTR -----------------------------------------------------------------
    def _ctr(self, iv, data):
        n = len(data)
        if self._aes._ks is not None:
            out = bytearray(data)
            self._aes.ctr_xor(bytearray(iv + b"\x00\x00\x00\x02"), out, n)
            return bytes(out)
        return _twin().ctr(self, iv, data)

    # -- public --------------------------------------------------------------
    def seal(self, iv, aad, plaintext):
        if len(iv) != 12:
            raise ValueError("GCM IV must be 12 bytes")
        if len(plaintext) > _MAXPT:
            raise ValueError("GCM plaintext too long")
        iv = bytes(iv)
        if not isinstance(plaintext, bytes):
            plaintext = bytes(plaintext)
        if not isinstance(aad, bytes):
            aad = bytes(aad)
        ct = self._ctr(iv, plaintext)
        return ct + self._tag(iv + b"\x00\x00\x00\x01", aad, ct)

    def seal_into(self, iv, aad, buf, off, n):
        """Encrypt buf[off:off + n] in place and write the 16-byte tag at
        buf[off + n:off + n + 16] (buf: a bytearray or a memoryview of
        one; aad: bytes or a memoryview).  With the kernels nothing as large as the message is
        allocated (the session layer's responses on a fragmented heap)."""
        if len(iv) != 12:
            raise ValueError("GCM IV must be 12 bytes")
        if n > _MAXPT:
            raise ValueError("GCM plaintext too long")
        iv = bytes(iv)
        mv = buf if isinstance(buf, memoryview) else memoryview(buf)
        ct = mv[off:off + n]
        if self._ctx is not None and self._aes._ks is not None:
            if n:
                self._aes.ctr_xor(bytearray(iv + b"\x00\x00\x00\x02"), ct, n)
            tag = self._tag(iv + b"\x00\x00\x00\x01", aad, ct)
        else:   # the pure-Python twins work on bytes
            if n:
                ct[0:n] = self._ctr(iv, bytes(ct))
            tag = self._tag(iv + b"\x00\x00\x00\x01", bytes(aad), bytes(ct))
        mv[off + n:off + n + 16] = tag

    def open(self, iv, aad, ct_and_tag):
        if len(iv) != 12:
            raise ValueError("GCM IV must be 12 bytes")
        if len(ct_and_tag) < 16:
            raise AuthenticationError("GCM input shorter than the tag")
        if len(ct_and_tag) - 16 > _MAXPT:
            raise AuthenticationError("GCM ciphertext too long")
        iv = bytes(iv)
        if not isinstance(ct_and_tag, bytes):
            ct_and_tag = bytes(ct_and_tag)
        if not isinstance(aad, bytes):
            aad = bytes(aad)
        ct = ct_and_tag[:-16]
        tag = self._tag(iv + b"\x00\x00\x00\x01", aad, ct)
        if not ct_eq(tag, ct_and_tag[-16:]):
            raise AuthenticationError("GCM tag mismatch")
        return self._ctr(iv, ct)


def seal(key, iv, aad, pt):
    return AesGcm(key).seal(iv, aad, pt)


def open(key, iv, aad, ct):  # noqa: A001 (the API name)
    return AesGcm(key).open(iv, aad, ct)
