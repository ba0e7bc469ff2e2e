"""AES-CTR and GHASH as viper kernels (boards with a native emitter).

    ctr_xor(ks, cb, buf, n)      buf[:n] ^= AES-CTR keystream from counter block cb
                                 (block i uses cb with its last 32 bits + i, inc32 of
                                 SP 800-38D; cb itself is left as it is)
    ghash(ctx, data, off, nblk)  absorb nblk 16-byte blocks of data[off:]

ks: array('I') [nr, round keys 0..nr as big-endian words]; T (the table T0,
256 words; T1..T3 are its rotations) and S (the S-box) are installed by
uspdm.crypto.aes.  ctx: array('I') of 68 words: the GHASH state Y (4
big-endian words) then the table M[v] = v * H for the 16 nibbles v (Shoup's
4-bit method, 4 words each).  Twins: uspdm.crypto.aes / gcm.

Small pieces: a stock board copies each function's machine code into the heap
as one block, and the AEAD is imported after KEY_EXCHANGE's EC work, into a
fragmented heap.  So the work is split into functions of at most ~600 bytes of
armv6m code each (host_tests/test_mpy_pieces.py keeps them so), each looping
over up to 8 blocks at a time (a call costs ~0.4 k-instructions): the AES
states live in memory (_A, _B: each block's 4 words twice, so that a column's
neighbours are at fixed offsets), one round per call.  Viper integers are
64-bit on the unix port: values go through 32-bit array slots (stores
truncate), and loads are cast to uint before a right shift (32-bit: signed).
"""
import micropython
from array import array

T = None  # installed by aes: T0, 256 words
S = None  # installed by aes: 256 bytes
_A = array("I", range(64))
_B = array("I", range(96))   # (words 64..95: _K, the keystream bytes)
_R4 = array("I", [0x00000000, 0x1C200000, 0x38400000, 0x24600000, 0x70800000, 0x6CA00000, 0x48C00000,
                  0x54E00000, 0xE1000000, 0xFD200000, 0xD9400000, 0xC5600000, 0x91800000, 0x8DA00000,
                  0xA9C00000, 0xB5E00000])


@micropython.viper
def _ctr(ks: ptr32, cb: ptr8, first: int, n: int):
    # counter blocks first .. first + n - 1 (cb with its last word + block number:
    # inc32) xor round key 0 into _A, each block's 4 state words twice
    a = uint(ptr32(_A))
    q = uint(cb)
    i = 0
    while i < 4 * n:
        p = ptr8(q + 4 * (i & 3))
        v = uint((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3])
        if (i & 3) == 3:
            v += uint(first + (i >> 2))
        d = ptr32(a + 4 * i + 16 * (i >> 2))
        v ^= uint(ks[1 + (i & 3)])
        d[0] = v
        d[4] = v
        i += 1


@micropython.viper
def _round(k: uint, src: uint, dst: uint, n: int):
    TT = ptr32(T)
    kw = ptr32(k)
    i = 0
    while i < 4 * n:
        o = 4 * i + 16 * (i >> 2)
        s = ptr32(src + o)
        x = uint(TT[(s[1] >> 16) & 255])
        y = uint(TT[(s[2] >> 8) & 255])
        z = uint(TT[s[3] & 255])
        v = (uint(TT[uint(s[0]) >> 24]) ^ (x >> 8) ^ (x << 24) ^ (y >> 16) ^ (y << 16) ^ (z >> 24) ^ (z << 8)
             ^ uint(kw[i & 3]))
        d = ptr32(dst + o)
        d[0] = v
        d[4] = v
        i += 1


@micropython.viper
def _last(k: uint, src: uint, n: int):
    SB = ptr8(S)
    kw = ptr32(k)
    kb = uint(ptr32(_B)) + 256   # the keystream: words 64..95 of _B
    i = 0
    while i < 4 * n:
        s = ptr32(src + 4 * i + 16 * (i >> 2))
        q = ptr8(kb + 4 * i)
        e = uint(kw[i & 3])
        q[0] = SB[uint(s[0]) >> 24] ^ (e >> 24)
        q[1] = SB[(s[1] >> 16) & 255] ^ (e >> 16)
        q[2] = SB[(s[2] >> 8) & 255] ^ (e >> 8)
        q[3] = SB[s[3] & 255] ^ e
        i += 1


@micropython.viper
def ctr_xor(ks, cb, buf, n: int):
    off = 0
    while off < n:
        nb = (n - off + 15) >> 4
        if nb > 8:
            nb = 8
        _ctr(ks, cb, off >> 4, nb)
        _rounds(ks, nb)
        off = int(_xor(buf, off, n))
    _wipe(_A, 64)
    _wipe(_B, 96)


@micropython.viper
def _rounds(ks: ptr32, nb: int):
    kp = uint(ks)
    end = 1 + 4 * ks[0]
    src = uint(ptr32(_A))
    dst = uint(ptr32(_B))
    r = 5
    while r < end:
        _round(kp + 4 * r, src, dst, nb)
        t = src
        src = dst
        dst = t
        r += 4
    _last(kp + 4 * end, src, nb)


@micropython.viper
def _xor(buf: ptr8, off: int, n: int) -> int:
    # buf[off:off + 128] (up to n) ^= the keystream of the batch; the next offset
    K = ptr8(uint(ptr32(_B)) + 256)
    m = n - off
    if m > 128:
        m = 128
    j = 0
    while j < m:
        buf[off + j] ^= K[j]
        j += 1
    return off + m


@micropython.viper
def _wipe(p: ptr32, n: int):
    i = 0
    while i < n:
        p[i] = 0
        i += 1


@micropython.viper
def ghash(ctx, data: ptr8, off: int, nblk: int):
    y = ptr32(ctx)
    st = ptr32(_A)
    d = uint(data) + uint(off)
    while nblk > 0:
        # X = Y ^ the block (4 big-endian words), Y = 0: then Y = X * H
        i = 0
        while i < 4:
            p = ptr8(d + 4 * i)
            st[i] = uint((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) ^ uint(y[i])
            y[i] = 0
            i += 1
        _gmul(ctx, _A)
        d += 16
        nblk -= 1


@micropython.viper
def _gmul(ctx: ptr32, st: ptr32):
    # ctx[0:4] = X * H, X the 4 words of st (ctx[0:4] zero on entry; ctx[4:68] the
    # table M[v] = v * H): Shoup's 4-bit method, the lowest nibble of X first
    R = ptr32(_R4)
    hb = uint(ctx) + 16
    j = 31
    x = uint(0)
    while j >= 0:
        if (j & 7) == 7:
            x = uint(st[j >> 3])
        m = ptr32(hb + 16 * (x & 15))
        r = ctx[3] & 15
        ctx[3] = ((uint(ctx[3]) >> 4) | (ctx[2] << 28)) ^ m[3]
        ctx[2] = ((uint(ctx[2]) >> 4) | (ctx[1] << 28)) ^ m[2]
        ctx[1] = ((uint(ctx[1]) >> 4) | (ctx[0] << 28)) ^ m[1]
        ctx[0] = (uint(ctx[0]) >> 4) ^ R[r] ^ m[0]
        x = x >> 4
        j -= 1
