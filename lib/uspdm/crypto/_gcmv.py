"""AES-CTR and GHASH as viper kernels (boards with a native emitter).

    ctr_xor(ks, cb, buf, n)      buf[:n] ^= AES-CTR keystream, cb counter block
                                 (up to 8 blocks a batch: step = the rounds but the
                                 last, _last = the last; no kernel's machine code
                                 is larger than ~1.3 KB, what a fragmented heap has)
    ghash(ctx, data, off, nblk)  absorb nblk 16-byte blocks of data[off:]
                                 (up to 8 a batch, as words, through compress)

ks: array('I') [nr, round keys 0..nr as big-endian words]; cb: bytearray(16)
whose last 4 bytes (big-endian) are incremented per block; T (the table T0,
256 words; T1..T3 are its rotations) and S (the S-box) are installed by
uspdm.crypto.aes.  ctx:
array('I') of 68 words: the GHASH state Y (4 big-endian words) then the
table M[v] = v * H for the 16 nibbles v (Shoup's 4-bit method, 4 words each).
Viper integers are 64-bit on the unix port: values shifted right are masked
to 32 bits (a no-op on the boards).  Twins: uspdm.crypto.aes / gcm.
"""
import micropython
from array import array

T = None  # installed by aes: T0, 256 words
S = None  # installed by aes: 256 bytes
# words 0..31: the AES states of up to 8 counter blocks between the kernels;
# bytes 128..255: their keystream (from a range: no temporary bytes object)
_KS = array("I", range(64))
# reduction of the 4 bits shifted out, for the top word: R4[v] = mulx(v, 4) >> 96
_R4 = array("I", [0x00000000, 0x1C200000, 0x38400000, 0x24600000, 0x70800000, 0x6CA00000, 0x48C00000,
                  0x54E00000, 0xE1000000, 0xFD200000, 0xD9400000, 0xC5600000, 0x91800000, 0x8DA00000,
                  0xA9C00000, 0xB5E00000])


# largest machine code first (step, _last, ctr_xor: 1.2-1.4 KB each, then
# ghash and compress, ~0.9 KB): a heap fragmented by the EC work (first fit)
# still has its few large free blocks when they are allocated
@micropython.viper
def step(ks: ptr32, st: ptr32, n: int):
    # the AES rounds but the last over the states st[0:n] (4 words a block): a
    # function of its own, so that no kernel's machine code needs a block of more
    # than ~1.5 KB (the AEAD loads into a fragmented heap after KEY_EXCHANGE's EC work)
    TT = ptr32(T)
    M = uint(0xFFFFFFFF)
    end = 1 + 4 * ks[0]
    b = 0
    while b < n:
        s0 = uint(st[b])
        s1 = uint(st[b + 1])
        s2 = uint(st[b + 2])
        s3 = uint(st[b + 3])
        r = 5
        while r < end:
            # T1..T3 are T0 rotated right by 8, 16, 24 bits
            x = uint(TT[(s1 >> 16) & 255])
            y = uint(TT[(s2 >> 8) & 255])
            z = uint(TT[s3 & 255])
            t0 = (uint(TT[s0 >> 24]) ^ (x >> 8) ^ (x << 24) ^ (y >> 16) ^ (y << 16) ^ (z >> 24) ^ (z << 8)
                  ^ uint(ks[r])) & M
            x = uint(TT[(s2 >> 16) & 255])
            y = uint(TT[(s3 >> 8) & 255])
            z = uint(TT[s0 & 255])
            t1 = (uint(TT[s1 >> 24]) ^ (x >> 8) ^ (x << 24) ^ (y >> 16) ^ (y << 16) ^ (z >> 24) ^ (z << 8)
                  ^ uint(ks[r + 1])) & M
            x = uint(TT[(s3 >> 16) & 255])
            y = uint(TT[(s0 >> 8) & 255])
            z = uint(TT[s1 & 255])
            t2 = (uint(TT[s2 >> 24]) ^ (x >> 8) ^ (x << 24) ^ (y >> 16) ^ (y << 16) ^ (z >> 24) ^ (z << 8)
                  ^ uint(ks[r + 2])) & M
            x = uint(TT[(s0 >> 16) & 255])
            y = uint(TT[(s1 >> 8) & 255])
            z = uint(TT[s2 & 255])
            s3 = (uint(TT[s3 >> 24]) ^ (x >> 8) ^ (x << 24) ^ (y >> 16) ^ (y << 16) ^ (z >> 24) ^ (z << 8)
                  ^ uint(ks[r + 3])) & M
            s0 = t0
            s1 = t1
            s2 = t2
            r += 4
        st[b] = s0
        st[b + 1] = s1
        st[b + 2] = s2
        st[b + 3] = s3
        b += 4


@micropython.viper
def _last(ks: ptr32, st: ptr32, n: int):
    # the last round (SubBytes, ShiftRows, AddRoundKey) of the states st[0:n]:
    # keystream bytes into _KS (from byte 128)
    SB = ptr8(S)
    K = ptr8(_KS)
    end = 1 + 4 * ks[0]
    b = 0
    while b < n:
        s0 = uint(st[b])
        s1 = uint(st[b + 1])
        s2 = uint(st[b + 2])
        s3 = uint(st[b + 3])
        o = 128 + 4 * b
        e = end
        h = 0
        while h < 2:
            k = uint(ks[e])
            K[o] = SB[s0 >> 24] ^ (k >> 24)
            K[o + 1] = SB[(s1 >> 16) & 255] ^ ((k >> 16) & 255)
            K[o + 2] = SB[(s2 >> 8) & 255] ^ ((k >> 8) & 255)
            K[o + 3] = SB[s3 & 255] ^ (k & 255)
            k = uint(ks[e + 1])
            K[o + 4] = SB[s1 >> 24] ^ (k >> 24)
            K[o + 5] = SB[(s2 >> 16) & 255] ^ ((k >> 16) & 255)
            K[o + 6] = SB[(s3 >> 8) & 255] ^ ((k >> 8) & 255)
            K[o + 7] = SB[s0 & 255] ^ (k & 255)
            # columns 2 and 3: the same with the state words rotated by two (half the code)
            k = s0
            s0 = s2
            s2 = k
            k = s1
            s1 = s3
            s3 = k
            o += 8
            e += 2
            h += 1
        b += 4


@micropython.viper
def ctr_xor(ks, cb: ptr8, buf: ptr8, n: int):
    kw = ptr32(ks)
    K = ptr8(_KS)
    st = ptr32(_KS)
    off = 0
    while off < n:
        # up to 8 counter blocks at a time through step and _last (one call each per batch)
        nw = ((n - off + 15) >> 4) << 2
        if nw > 32:
            nw = 32
        b = 0
        while b < nw:
            st[b] = uint((cb[0] << 24) | (cb[1] << 16) | (cb[2] << 8) | cb[3]) ^ uint(kw[1])
            st[b + 1] = uint((cb[4] << 24) | (cb[5] << 16) | (cb[6] << 8) | cb[7]) ^ uint(kw[2])
            st[b + 2] = uint((cb[8] << 24) | (cb[9] << 16) | (cb[10] << 8) | cb[11]) ^ uint(kw[3])
            st[b + 3] = uint((cb[12] << 24) | (cb[13] << 16) | (cb[14] << 8) | cb[15]) ^ uint(kw[4])
            # 32-bit big-endian counter increment (inc32 of SP 800-38D)
            j = 15
            while j >= 12:
                c = (cb[j] + 1) & 255
                cb[j] = c
                if c != 0:
                    break
                j -= 1
            b += 4
        step(ks, _KS, nw)
        _last(ks, _KS, nw)
        m = n - off
        if m > 4 * nw:
            m = 4 * nw
        j = 0
        while j < m:
            buf[off + j] ^= K[128 + j]
            j += 1
        off += m
    j = 0
    while j < 64:
        st[j] = 0
        j += 1


@micropython.viper
def ghash(ctx, data: ptr8, off: int, nblk: int):
    # up to 8 blocks at a time as words into _KS, then compress (one call per batch)
    st = ptr32(_KS)
    while nblk > 0:
        nb = nblk
        if nb > 8:
            nb = 8
        nblk -= nb
        b = 0
        while b < 4 * nb:
            st[b] = uint((data[off] << 24) | (data[off + 1] << 16) | (data[off + 2] << 8) | data[off + 3])
            st[b + 1] = uint((data[off + 4] << 24) | (data[off + 5] << 16) | (data[off + 6] << 8) | data[off + 7])
            st[b + 2] = uint((data[off + 8] << 24) | (data[off + 9] << 16) | (data[off + 10] << 8)
                             | data[off + 11])
            st[b + 3] = uint((data[off + 12] << 24) | (data[off + 13] << 16) | (data[off + 14] << 8)
                             | data[off + 15])
            off += 16
            b += 4
        compress(ctx, _KS, 4 * nb)


@micropython.viper
def compress(ctx: ptr32, st: ptr32, n: int):
    # GHASH over the blocks st[0:n] (4 big-endian words each, from ghash): Y = (Y ^ X) * H
    R = ptr32(_R4)
    M = uint(0xFFFFFFFF)
    y0 = uint(ctx[0])
    y1 = uint(ctx[1])
    y2 = uint(ctx[2])
    y3 = uint(ctx[3])
    b = 0
    while b < n:
        x0 = y0 ^ uint(st[b])
        x1 = y1 ^ uint(st[b + 1])
        x2 = y2 ^ uint(st[b + 2])
        x3 = y3 ^ uint(st[b + 3])
        b += 4
        z0 = uint(0)
        z1 = uint(0)
        z2 = uint(0)
        z3 = uint(0)
        wi = 0
        while wi < 4:
            k = 0
            while k < 8:
                # one nibble of x, lowest first (bytes from the last)
                r = z3 & 15
                z3 = ((z3 >> 4) | (z2 << 28)) & M
                z2 = ((z2 >> 4) | (z1 << 28)) & M
                z1 = ((z1 >> 4) | (z0 << 28)) & M
                z0 = (z0 >> 4) ^ uint(R[r])
                m = 4 + 4 * int(x3 & 15)
                x3 = x3 >> 4
                z0 ^= uint(ctx[m])
                z1 ^= uint(ctx[m + 1])
                z2 ^= uint(ctx[m + 2])
                z3 ^= uint(ctx[m + 3])
                k += 1
            x3 = x2
            x2 = x1
            x1 = x0
            wi += 1
        y0 = z0
        y1 = z1
        y2 = z2
        y3 = z3
    ctx[0] = y0
    ctx[1] = y1
    ctx[2] = y2
    ctx[3] = y3
