"""AES-GCM (NIST SP 800-38D) with 96-bit IVs and 128-bit tags.

    g = gcm.AesGcm(key)
    ct_tag = g.seal(iv12, aad, plaintext)
    pt = g.open(iv12, aad, ct_tag)        # AuthenticationError if tampered

GHASH uses Shoup's table method on 128-bit ints: a per-key table of the 16
(table_bits=4, default, ~0.6 KiB) or 256 (table_bits=8, ~9 KiB on
MicroPython, about twice as fast) multiples of H, built once per key.
CTR keystream comes from aes.Aes (cryptolib ECB in batches when present).
"""
from uspdm.compat import ct_eq
from uspdm.crypto.aes import Aes


class AuthenticationError(ValueError):
    pass


_R = 0xE1 << 120
_MAXPT = (1 << 36) - 32  # bytes, SP 800-38D: len(P) <= 2^39 - 256 bits
_CHUNK = 256  # keystream bytes produced per batch (cryptolib path)
_RED4 = None
_RED8 = None


def _mulx(z, n):
    for _ in range(n):
        z = (z >> 1) ^ _R if z & 1 else z >> 1
    return z


def _gmul(x, y):
    """Plain bitwise GF(2^128) product (GCM bit order), setup only."""
    z = 0
    for i in range(127, -1, -1):
        if (x >> i) & 1:
            z ^= y
        y = (y >> 1) ^ _R if y & 1 else y >> 1
    return z


def _red(bits):
    global _RED4, _RED8
    if bits == 4:
        if _RED4 is None:
            _RED4 = tuple(_mulx(v, 4) for v in range(16))
        return _RED4
    if _RED8 is None:
        _RED8 = tuple(_mulx(v, 8) for v in range(256))
    return _RED8


class AesGcm:
    def __init__(self, key, table_bits=4, force_pure=False):
        if table_bits not in (4, 8):
            raise ValueError("table_bits")
        self._aes = Aes(key, force_pure)
        h = int.from_bytes(self._aes.encrypt_block(bytes(16)), "big")
        self._bits = table_bits
        self._red = _red(table_bits)
        n = 1 << table_bits
        sh = 128 - table_bits
        # M[v] = v(x) * H with v placed in the top `table_bits` of the block
        m = [0] * n
        for i in range(table_bits):  # single bits, then linear combinations
            m[1 << i] = _gmul(1 << (sh + i), h)
        for v in range(3, n):
            if v & (v - 1):
                low = v & -v
                m[v] = m[low] ^ m[v ^ low]
        self._m = tuple(m)

    # -- GHASH ---------------------------------------------------------------
    def _ghash(self, y, data):
        """Absorb data (zero-padded to 16) into GHASH state int y; return y."""
        M = self._m
        R = self._red
        fb = int.from_bytes
        n = len(data)
        for off in range(0, n, 16):
            blk = data[off:off + 16]
            if len(blk) < 16:
                blk = bytes(blk) + bytes(16 - len(blk))
            xb = (y ^ fb(blk, "big")).to_bytes(16, "big")
            z = 0
            if self._bits == 8:
                for i in range(15, -1, -1):
                    z = (z >> 8) ^ R[z & 255] ^ M[xb[i]]
            else:
                for i in range(15, -1, -1):
                    b = xb[i]
                    z = (z >> 4) ^ R[z & 15] ^ M[b & 15]
                    z = (z >> 4) ^ R[z & 15] ^ M[b >> 4]
            y = z
        return y

    def _tag(self, j0, aad, ct):
        y = self._ghash(0, aad)
        y = self._ghash(y, ct)
        y = self._ghash(y, (len(aad) * 8).to_bytes(8, "big") + (len(ct) * 8).to_bytes(8, "big"))
        e = int.from_bytes(self._aes.encrypt_block(j0), "big")
        return (y ^ e).to_bytes(16, "big")

    # -- CTR -----------------------------------------------------------------
    def _ctr(self, iv, data):
        n = len(data)
        out = bytearray(n)
        ctr = 2  # counter 1 is J0 (tag mask)
        aes = self._aes
        fb = int.from_bytes
        off = 0
        while off < n:
            take = min(_CHUNK, n - off)
            nb = (take + 15) >> 4
            cb = bytearray(16 * nb)
            for i in range(nb):
                o = 16 * i
                cb[o:o + 12] = iv
                cb[o + 12:o + 16] = (ctr & 0xFFFFFFFF).to_bytes(4, "big")
                ctr += 1
            ks = aes.encrypt_blocks(cb)
            x = fb(data[off:off + take], "big") ^ fb(ks[:take], "big")
            out[off:off + take] = x.to_bytes(take, "big")
            off += take
        return bytes(out)

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
