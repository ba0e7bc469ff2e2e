"""SHA-512 compression function as a viper kernel (boards with a native emitter).

    compress(st, data, off, nblk)

st: bytearray(64), the state H0..H7 as 16 native 32-bit words in reverse
order (word 15 is the high half of H0, word 14 its low half, ... word 0 the
low half of H7), so that the little-endian buffer read backwards is the
big-endian digest; data: bytes-like; off: byte offset of
the first 128-byte block; nblk: number of blocks.  No allocation per block:
the message schedule lives in the module's preallocated 640-byte buffer (the
kernel is not re-entrant, which a single-threaded device never needs).

Viper integers are the machine word: 32 bits on the boards, 64 on the unix
port, so every value that is later shifted right is masked to 32 bits
(a no-op on the boards).  Imported only where `micropython.viper` exists
(sha2 falls back to its pure-Python twin elsewhere); tested against the twin
and FIPS 180-4 vectors on the unix port and the emulated Cortex-M0.
"""
import micropython
from array import array

_K = None  # 160 words: K[t] as (high, low) pairs, installed by sha2
_W = array("I", bytes(640))  # message schedule: 80 (high, low) pairs


@micropython.viper
def compress(st: ptr32, data: ptr8, off: int, nblk: int):
    K = ptr32(_K)
    W = ptr32(_W)
    M = uint(0xFFFFFFFF)
    while nblk > 0:
        nblk -= 1
        i = 0
        while i < 32:
            W[i] = (data[off] << 24) | (data[off + 1] << 16) | (data[off + 2] << 8) | data[off + 3]
            off += 4
            i += 1
        while i < 160:
            # sigma0(W[t-15]): ROTR1 ^ ROTR8 ^ SHR7
            xh = uint(W[i - 30])
            xl = uint(W[i - 29])
            s0h = ((xh >> 1) | (xl << 31)) ^ ((xh >> 8) | (xl << 24)) ^ (xh >> 7)
            s0l = (((xl >> 1) | (xh << 31)) ^ ((xl >> 8) | (xh << 24)) ^ ((xl >> 7) | (xh << 25))) & M
            # sigma1(W[t-2]): ROTR19 ^ ROTR61 ^ SHR6
            xh = uint(W[i - 4])
            xl = uint(W[i - 3])
            s1h = ((xh >> 19) | (xl << 13)) ^ ((xl >> 29) | (xh << 3)) ^ (xh >> 6)
            s1l = (((xl >> 19) | (xh << 13)) ^ ((xh >> 29) | (xl << 3)) ^ ((xl >> 6) | (xh << 26))) & M
            lo = (s0l + s1l) & M
            hi = s0h + s1h
            if lo < s0l:
                hi += 1
            x = uint(W[i - 13])
            y = (lo + x) & M
            hi += uint(W[i - 14])
            if y < x:
                hi += 1
            x = uint(W[i - 31])
            lo = (y + x) & M
            hi += uint(W[i - 32])
            if lo < x:
                hi += 1
            W[i] = hi
            W[i + 1] = lo
            i += 2
        ah = uint(st[15])
        al = uint(st[14])
        bh = uint(st[13])
        bl = uint(st[12])
        ch = uint(st[11])
        cl = uint(st[10])
        dh = uint(st[9])
        dl = uint(st[8])
        eh = uint(st[7])
        el = uint(st[6])
        fh = uint(st[5])
        fl = uint(st[4])
        gh = uint(st[3])
        gl = uint(st[2])
        hh = uint(st[1])
        hl = uint(st[0])
        i = 0
        while i < 160:
            # t1 = h + Sigma1(e) + Ch(e, f, g) + K[t] + W[t]
            x = (((el >> 14) | (eh << 18)) ^ ((el >> 18) | (eh << 14)) ^ ((eh >> 9) | (el << 23))) & M
            lo = (hl + x) & M
            hi = hh + (((eh >> 14) | (el << 18)) ^ ((eh >> 18) | (el << 14)) ^ ((el >> 9) | (eh << 23)))
            if lo < x:
                hi += 1
            x = gl ^ (el & (fl ^ gl))
            y = (lo + x) & M
            hi += gh ^ (eh & (fh ^ gh))
            if y < x:
                hi += 1
            x = uint(K[i + 1])
            lo = (y + x) & M
            hi += uint(K[i])
            if lo < x:
                hi += 1
            x = uint(W[i + 1])
            y = (lo + x) & M
            hi += uint(W[i])
            if y < x:
                hi += 1
            # (hi, y) = t1; shift the working variables
            hh = gh
            hl = gl
            gh = fh
            gl = fl
            fh = eh
            fl = el
            el = (dl + y) & M
            eh = dh + hi
            if el < y:
                eh += 1
            eh &= M
            dh = ch
            dl = cl
            # t2 = Sigma0(a) + Maj(a, b, c), added to t1
            x = (((al >> 28) | (ah << 4)) ^ ((ah >> 2) | (al << 30)) ^ ((ah >> 7) | (al << 25))) & M
            lo = (y + x) & M
            hi += (((ah >> 28) | (al << 4)) ^ ((al >> 2) | (ah << 30)) ^ ((al >> 7) | (ah << 25)))
            if lo < x:
                hi += 1
            x = (al & bl) | (cl & (al | bl))
            y = (lo + x) & M
            hi += (ah & bh) | (ch & (ah | bh))
            if y < x:
                hi += 1
            ch = bh
            cl = bl
            bh = ah
            bl = al
            ah = hi & M
            al = y
            i += 2
        # H += working variables
        x = uint(st[14])
        y = (x + al) & M
        st[15] = uint(st[15]) + ah + (1 if y < x else 0)
        st[14] = y
        x = uint(st[12])
        y = (x + bl) & M
        st[13] = uint(st[13]) + bh + (1 if y < x else 0)
        st[12] = y
        x = uint(st[10])
        y = (x + cl) & M
        st[11] = uint(st[11]) + ch + (1 if y < x else 0)
        st[10] = y
        x = uint(st[8])
        y = (x + dl) & M
        st[9] = uint(st[9]) + dh + (1 if y < x else 0)
        st[8] = y
        x = uint(st[6])
        y = (x + el) & M
        st[7] = uint(st[7]) + eh + (1 if y < x else 0)
        st[6] = y
        x = uint(st[4])
        y = (x + fl) & M
        st[5] = uint(st[5]) + fh + (1 if y < x else 0)
        st[4] = y
        x = uint(st[2])
        y = (x + gl) & M
        st[3] = uint(st[3]) + gh + (1 if y < x else 0)
        st[2] = y
        x = uint(st[0])
        y = (x + hl) & M
        st[1] = uint(st[1]) + hh + (1 if y < x else 0)
        st[0] = y


@micropython.viper
def xor_pad(dst: ptr8, key: ptr8, n: int, v: int):
    """dst[i] = key[i] ^ v for i < n, v for the rest of len(dst) bytes
    (dst preset to v by the caller: only the first n bytes are written)."""
    i = 0
    while i < n:
        dst[i] = key[i] ^ v
        i += 1


@micropython.viper
def be_out(dst: ptr8, st: ptr8, n: int):
    """The first n bytes of the big-endian digest of state st (64 bytes)."""
    i = 0
    while i < n:
        dst[i] = st[63 - i]
        i += 1


@micropython.viper
def zero(dst: ptr8, n: int):
    """dst[:n] = 0 (wiping without allocating a zero buffer)."""
    i = 0
    while i < n:
        dst[i] = 0
        i += 1
