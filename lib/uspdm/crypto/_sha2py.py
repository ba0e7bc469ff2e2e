"""Pure-Python SHA-256/384/512 (FIPS 180-4): the twins of the C hashlib and
of the viper SHA-512 kernel, used by sha2 where neither exists (the wasm
build, CPython without a copyable hashlib) and by tests and benchmarks; and
the parts of uspdm.crypto.sha2 that a board never runs (sha2's attributes
reach them: sha2.pure(), sha2.kernel()): the wrapper of a copyable
hashlib (CPython), the pure xor_pad/zero (ports without viper).

Tuned for MicroPython where 64-bit words are big ints: every big-int
operation allocates, so the code minimises the number of operations:
rotations read a doubled 128-bit copy x*(2**64+1); sigma results are not
masked (bits above 64 only carry upward, so the one mask on the new a/e/W
word suffices); maj reuses the previous round's a^b.  (An 8x-unrolled round
body measured no faster on MicroPython wasm, so the loop form is kept:
smaller bytecode.)
"""
from uspdm.crypto import sha2 as _s

_M64 = 0xFFFFFFFFFFFFFFFF
_D64 = 0x10000000000000001  # x * _D64 == x | x << 64 for x < 2**64
_M32 = 0xFFFFFFFF
_D32 = 0x100000001

_K512 = (
    0x428A2F98D728AE22, 0x7137449123EF65CD, 0xB5C0FBCFEC4D3B2F, 0xE9B5DBA58189DBBC,
    0x3956C25BF348B538, 0x59F111F1B605D019, 0x923F82A4AF194F9B, 0xAB1C5ED5DA6D8118,
    0xD807AA98A3030242, 0x12835B0145706FBE, 0x243185BE4EE4B28C, 0x550C7DC3D5FFB4E2,
    0x72BE5D74F27B896F, 0x80DEB1FE3B1696B1, 0x9BDC06A725C71235, 0xC19BF174CF692694,
    0xE49B69C19EF14AD2, 0xEFBE4786384F25E3, 0x0FC19DC68B8CD5B5, 0x240CA1CC77AC9C65,
    0x2DE92C6F592B0275, 0x4A7484AA6EA6E483, 0x5CB0A9DCBD41FBD4, 0x76F988DA831153B5,
    0x983E5152EE66DFAB, 0xA831C66D2DB43210, 0xB00327C898FB213F, 0xBF597FC7BEEF0EE4,
    0xC6E00BF33DA88FC2, 0xD5A79147930AA725, 0x06CA6351E003826F, 0x142929670A0E6E70,
    0x27B70A8546D22FFC, 0x2E1B21385C26C926, 0x4D2C6DFC5AC42AED, 0x53380D139D95B3DF,
    0x650A73548BAF63DE, 0x766A0ABB3C77B2A8, 0x81C2C92E47EDAEE6, 0x92722C851482353B,
    0xA2BFE8A14CF10364, 0xA81A664BBC423001, 0xC24B8B70D0F89791, 0xC76C51A30654BE30,
    0xD192E819D6EF5218, 0xD69906245565A910, 0xF40E35855771202A, 0x106AA07032BBD1B8,
    0x19A4C116B8D2D0C8, 0x1E376C085141AB53, 0x2748774CDF8EEB99, 0x34B0BCB5E19B48A8,
    0x391C0CB3C5C95A63, 0x4ED8AA4AE3418ACB, 0x5B9CCA4F7763E373, 0x682E6FF3D6B2B8A3,
    0x748F82EE5DEFB2FC, 0x78A5636F43172F60, 0x84C87814A1F0AB72, 0x8CC702081A6439EC,
    0x90BEFFFA23631E28, 0xA4506CEBDE82BDE9, 0xBEF9A3F7B2C67915, 0xC67178F2E372532B,
    0xCA273ECEEA26619C, 0xD186B8C721C0C207, 0xEADA7DD6CDE0EB1E, 0xF57D4F7FEE6ED178,
    0x06F067AA72176FBA, 0x0A637DC5A2C898A6, 0x113F9804BEF90DAE, 0x1B710B35131C471B,
    0x28DB77F523047D84, 0x32CAAB7B40C72493, 0x3C9EBE0A15C9BEBC, 0x431D67C49C100D4C,
    0x4CC5D4BECB3E42B6, 0x597F299CFC657E2A, 0x5FCB6FAB3AD6FAEC, 0x6C44198C4A475817,
)

_IV384 = (
    0xCBBB9D5DC1059ED8, 0x629A292A367CD507, 0x9159015A3070DD17, 0x152FECD8F70E5939,
    0x67332667FFC00B31, 0x8EB44A8768581511, 0xDB0C2E0D64F98FA7, 0x47B5481DBEFA4FA4,
)
_IV512 = (
    0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
    0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179,
)

_K256 = (
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4, 0xAB1C5ED5,
    0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE, 0x9BDC06A7, 0xC19BF174,
    0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F, 0x4A7484AA, 0x5CB0A9DC, 0x76F988DA,
    0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7, 0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967,
    0x27B70A85, 0x2E1B2138, 0x4D2C6DFC, 0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85,
    0xA2BFE8A1, 0xA81A664B, 0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070,
    0x19A4C116, 0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7, 0xC67178F2,
)
_IV256 = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19)

def _compress512(H, blk, off, W):
    """One SHA-512 block of blk[off:off+128] into state list H (in place).
    W is a reusable 80-entry list."""
    M = _M64
    D = _D64
    K = _K512
    fb = int.from_bytes
    for t in range(16):
        o = off + 8 * t
        W[t] = fb(blk[o:o + 8], "big")
    for t in range(16, 80):
        x = W[t - 15]
        xx = x * D
        y = W[t - 2]
        yy = y * D
        W[t] = ((xx >> 1 ^ xx >> 8 ^ x >> 7) + (yy >> 19 ^ yy >> 61 ^ y >> 6) + W[t - 7] + W[t - 16]) & M
    a, b, c, d, e, f, g, h = H
    bc = b ^ c
    for t in range(80):
        ee = e * D
        t1 = h + (ee >> 14 ^ ee >> 18 ^ ee >> 41) + (g ^ (e & (f ^ g))) + K[t] + W[t]
        h = g
        g = f
        f = e
        e = (d + t1) & M
        d = c
        c = b
        aa = a * D
        ab = a ^ b
        t1 += (aa >> 28 ^ aa >> 34 ^ aa >> 39) + (b ^ (ab & bc))
        bc = ab
        b = a
        a = t1 & M
    H[0] = (H[0] + a) & M
    H[1] = (H[1] + b) & M
    H[2] = (H[2] + c) & M
    H[3] = (H[3] + d) & M
    H[4] = (H[4] + e) & M
    H[5] = (H[5] + f) & M
    H[6] = (H[6] + g) & M
    H[7] = (H[7] + h) & M


def _compress256(H, blk, off, W):
    M = _M32
    D = _D32
    K = _K256
    fb = int.from_bytes
    for t in range(16):
        o = off + 4 * t
        W[t] = fb(blk[o:o + 4], "big")
    for t in range(16, 64):
        x = W[t - 15]
        xx = x * D
        y = W[t - 2]
        yy = y * D
        W[t] = ((xx >> 7 ^ xx >> 18 ^ x >> 3) + (yy >> 17 ^ yy >> 19 ^ y >> 10) + W[t - 7] + W[t - 16]) & M
    a, b, c, d, e, f, g, h = H
    bc = b ^ c
    for t in range(64):
        ee = e * D
        t1 = h + (ee >> 6 ^ ee >> 11 ^ ee >> 25) + (g ^ (e & (f ^ g))) + K[t] + W[t]
        h = g
        g = f
        f = e
        e = (d + t1) & M
        d = c
        c = b
        aa = a * D
        ab = a ^ b
        t1 += (aa >> 2 ^ aa >> 13 ^ aa >> 22) + (b ^ (ab & bc))
        bc = ab
        b = a
        a = t1 & M
    H[0] = (H[0] + a) & M
    H[1] = (H[1] + b) & M
    H[2] = (H[2] + c) & M
    H[3] = (H[3] + d) & M
    H[4] = (H[4] + e) & M
    H[5] = (H[5] + f) & M
    H[6] = (H[6] + g) & M
    H[7] = (H[7] + h) & M


class _PureBase:
    """Merkle-Damgard framing shared by the pure-Python SHA-2 classes."""

    def __init__(self, data=b""):
        self._h = list(self._iv)
        self._buf = bytearray()
        self._n = 0
        self._w = None
        if data:
            self.update(data)

    def update(self, data):
        n = len(data)
        if not n:
            return
        self._n += n
        bs = self.block_size
        buf = self._buf
        W = self._w
        if W is None:
            W = self._w = [0] * self._rounds
        comp = self._compress
        H = self._h
        off = 0
        if buf:
            need = bs - len(buf)
            if n < need:
                buf.extend(data)
                return
            buf.extend(data[:need])
            comp(H, buf, 0, W)
            off = need
            self._buf = buf = bytearray()
        end = n - (n - off) % bs
        if off < end:
            if not isinstance(data, (bytes, bytearray)):
                data = bytes(data)
            while off < end:
                comp(H, data, off, W)
                off += bs
        if off < n:
            buf.extend(data[off:])

    def _final(self):
        bs = self.block_size
        ll = bs >> 3  # length field: 8 bytes (sha256) / 16 bytes (sha512)
        H = list(self._h)
        tail = bytearray(self._buf)
        tail.append(0x80)
        pad = (bs - ll - len(tail)) % bs
        tail.extend(bytes(pad))
        tail.extend((self._n * 8).to_bytes(ll, "big"))
        W = self._w or [0] * self._rounds
        for off in range(0, len(tail), bs):
            self._compress(H, tail, off, W)
        return H

    def digest(self):
        ws = self._wsize
        out = b"".join(x.to_bytes(ws, "big") for x in self._final())
        return out[:self.digest_size]

    def copy(self):
        o = object.__new__(self.__class__)
        o._h = list(self._h)
        o._buf = bytearray(self._buf)
        o._n = self._n
        o._w = None
        return o

    def wipe(self):
        """Forget the state (big ints cannot be overwritten: dropped)."""
        for i in range(len(self._h)):
            self._h[i] = 0
        self._buf[0:len(self._buf)] = bytes(len(self._buf))
        self._w = None


class _Sha512(_PureBase):
    digest_size = 64
    block_size = 128
    name = "sha512"
    _iv = _IV512
    _rounds = 80
    _wsize = 8
    _compress = staticmethod(_compress512)


class _Sha384(_Sha512):
    digest_size = 48
    name = "sha384"
    _iv = _IV384


class _Sha256(_PureBase):
    digest_size = 32
    block_size = 64
    name = "sha256"
    _iv = _IV256
    _rounds = 64
    _wsize = 4
    _compress = staticmethod(_compress256)



PURE = {"sha256": _Sha256, "sha384": _Sha384, "sha512": _Sha512}


class _Wrap:
    """hashlib object that already has copy() and a non-finalizing digest()."""

    def __init__(self, name, ctor, data=b"", obj=None):
        self.name = name
        o = self._o = ctor() if obj is None else obj
        self._ctor = ctor
        self.digest_size = o.digest_size
        self.block_size = o.block_size
        if data:
            o.update(data)

    def update(self, data):
        self._o.update(data)

    def digest(self):
        return self._o.digest()

    def copy(self):
        return _Wrap(self.name, self._ctor, b"", self._o.copy())

    def wipe(self):
        self._o = None  # C state: cannot be overwritten from Python


def xor_pad(dst, key, n, v):
    """dst[:n] = key[:n] ^ v (the viper kernel's twin)."""
    for i in range(n):
        dst[i] = key[i] ^ v


def zero(b):
    """Overwrite a bytearray with zeros in place."""
    b[0:len(b)] = bytes(len(b))


def pure(name, data=b""):
    """The pure-Python implementation regardless of backend (tests, bench)."""
    return PURE[_s._check(name)](data)


def kernel(name, data=b""):
    """The viper-kernel implementation (sha384/sha512), or None where the
    port has no native emitter (tests, bench)."""
    k = _s._KERNEL.get(_s._check(name))
    return k(data) if k is not None else None
