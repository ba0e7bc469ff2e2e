"""SHA-512 compression function as a viper kernel (boards with a native emitter).

    compress(st, data, off, nblk)

st: bytearray(64), the state H0..H7 as 16 native 32-bit words in reverse
order (word 15 is the high half of H0, word 14 its low half, ... word 0 the
low half of H7), so that the little-endian buffer read backwards is the
big-endian digest; data: bytes-like; off: byte offset of
the first 128-byte block; nblk: number of blocks.  No allocation per block:
the message schedule is computed as the rounds need it, in the module's
preallocated ring of 16 words of 64 bits (128 bytes; the kernel is not
re-entrant, which a single-threaded device never needs).
The round constants are a bytes constant read as 32-bit words in place (no
copy in the heap), except where it is not 4-byte aligned (a ROMFS deploy
keeps it in flash at any offset: then it is copied once, as the Cortex-M0
faults on unaligned word loads).

Viper integers are the machine word: 32 bits on the boards, 64 on the unix
port, so every value that is later shifted right is masked to 32 bits
(a no-op on the boards).  Imported only where `micropython.viper` exists
(sha2 falls back to its pure-Python twin elsewhere); tested against the twin
and FIPS 180-4 vectors on the unix port and the emulated Cortex-M0.
"""
import micropython
from array import array

_K = (  # K[0..79] as (high, low) 32-bit little-endian word pairs: what compress reads
    b"\x98\x2f\x8a\x42\x22\xae\x28\xd7\x91\x44\x37\x71\xcd\x65\xef\x23"
    b"\xcf\xfb\xc0\xb5\x2f\x3b\x4d\xec\xa5\xdb\xb5\xe9\xbc\xdb\x89\x81"
    b"\x5b\xc2\x56\x39\x38\xb5\x48\xf3\xf1\x11\xf1\x59\x19\xd0\x05\xb6"
    b"\xa4\x82\x3f\x92\x9b\x4f\x19\xaf\xd5\x5e\x1c\xab\x18\x81\x6d\xda"
    b"\x98\xaa\x07\xd8\x42\x02\x03\xa3\x01\x5b\x83\x12\xbe\x6f\x70\x45"
    b"\xbe\x85\x31\x24\x8c\xb2\xe4\x4e\xc3\x7d\x0c\x55\xe2\xb4\xff\xd5"
    b"\x74\x5d\xbe\x72\x6f\x89\x7b\xf2\xfe\xb1\xde\x80\xb1\x96\x16\x3b"
    b"\xa7\x06\xdc\x9b\x35\x12\xc7\x25\x74\xf1\x9b\xc1\x94\x26\x69\xcf"
    b"\xc1\x69\x9b\xe4\xd2\x4a\xf1\x9e\x86\x47\xbe\xef\xe3\x25\x4f\x38"
    b"\xc6\x9d\xc1\x0f\xb5\xd5\x8c\x8b\xcc\xa1\x0c\x24\x65\x9c\xac\x77"
    b"\x6f\x2c\xe9\x2d\x75\x02\x2b\x59\xaa\x84\x74\x4a\x83\xe4\xa6\x6e"
    b"\xdc\xa9\xb0\x5c\xd4\xfb\x41\xbd\xda\x88\xf9\x76\xb5\x53\x11\x83"
    b"\x52\x51\x3e\x98\xab\xdf\x66\xee\x6d\xc6\x31\xa8\x10\x32\xb4\x2d"
    b"\xc8\x27\x03\xb0\x3f\x21\xfb\x98\xc7\x7f\x59\xbf\xe4\x0e\xef\xbe"
    b"\xf3\x0b\xe0\xc6\xc2\x8f\xa8\x3d\x47\x91\xa7\xd5\x25\xa7\x0a\x93"
    b"\x51\x63\xca\x06\x6f\x82\x03\xe0\x67\x29\x29\x14\x70\x6e\x0e\x0a"
    b"\x85\x0a\xb7\x27\xfc\x2f\xd2\x46\x38\x21\x1b\x2e\x26\xc9\x26\x5c"
    b"\xfc\x6d\x2c\x4d\xed\x2a\xc4\x5a\x13\x0d\x38\x53\xdf\xb3\x95\x9d"
    b"\x54\x73\x0a\x65\xde\x63\xaf\x8b\xbb\x0a\x6a\x76\xa8\xb2\x77\x3c"
    b"\x2e\xc9\xc2\x81\xe6\xae\xed\x47\x85\x2c\x72\x92\x3b\x35\x82\x14"
    b"\xa1\xe8\xbf\xa2\x64\x03\xf1\x4c\x4b\x66\x1a\xa8\x01\x30\x42\xbc"
    b"\x70\x8b\x4b\xc2\x91\x97\xf8\xd0\xa3\x51\x6c\xc7\x30\xbe\x54\x06"
    b"\x19\xe8\x92\xd1\x18\x52\xef\xd6\x24\x06\x99\xd6\x10\xa9\x65\x55"
    b"\x85\x35\x0e\xf4\x2a\x20\x71\x57\x70\xa0\x6a\x10\xb8\xd1\xbb\x32"
    b"\x16\xc1\xa4\x19\xc8\xd0\xd2\xb8\x08\x6c\x37\x1e\x53\xab\x41\x51"
    b"\x4c\x77\x48\x27\x99\xeb\x8e\xdf\xb5\xbc\xb0\x34\xa8\x48\x9b\xe1"
    b"\xb3\x0c\x1c\x39\x63\x5a\xc9\xc5\x4a\xaa\xd8\x4e\xcb\x8a\x41\xe3"
    b"\x4f\xca\x9c\x5b\x73\xe3\x63\x77\xf3\x6f\x2e\x68\xa3\xb8\xb2\xd6"
    b"\xee\x82\x8f\x74\xfc\xb2\xef\x5d\x6f\x63\xa5\x78\x60\x2f\x17\x43"
    b"\x14\x78\xc8\x84\x72\xab\xf0\xa1\x08\x02\xc7\x8c\xec\x39\x64\x1a"
    b"\xfa\xff\xbe\x90\x28\x1e\x63\x23\xeb\x6c\x50\xa4\xe9\xbd\x82\xde"
    b"\xf7\xa3\xf9\xbe\x15\x79\xc6\xb2\xf2\x78\x71\xc6\x2b\x53\x72\xe3"
    b"\xce\x3e\x27\xca\x9c\x61\x26\xea\xc7\xb8\x86\xd1\x07\xc2\xc0\x21"
    b"\xd6\x7d\xda\xea\x1e\xeb\xe0\xcd\x7f\x4f\x7d\xf5\x78\xd1\x6e\xee"
    b"\xaa\x67\xf0\x06\xba\x6f\x17\x72\xc5\x7d\x63\x0a\xa6\x98\xc8\xa2"
    b"\x04\x98\x3f\x11\xae\x0d\xf9\xbe\x35\x0b\x71\x1b\x1b\x47\x1c\x13"
    b"\xf5\x77\xdb\x28\x84\x7d\x04\x23\x7b\xab\xca\x32\x93\x24\xc7\x40"
    b"\x0a\xbe\x9e\x3c\xbc\xbe\xc9\x15\xc4\x67\x1d\x43\x4c\x0d\x10\x9c"
    b"\xbe\xd4\xc5\x4c\xb6\x42\x3e\xcb\x9c\x29\x7f\x59\x2a\x7e\x65\xfc"
    b"\xab\x6f\xcb\x5f\xec\xfa\xd6\x3a\x8c\x19\x44\x6c\x17\x58\x47\x4a"
)

IV384 = (  # H(0) of SHA-384 in the state's layout (the big-endian bytes reversed)
    b"\xa4\x4f\xfa\xbe\x1d\x48\xb5\x47\xa7\x8f\xf9\x64\x0d\x2e\x0c\xdb"
    b"\x11\x15\x58\x68\x87\x4a\xb4\x8e\x31\x0b\xc0\xff\x67\x26\x33\x67"
    b"\x39\x59\x0e\xf7\xd8\xec\x2f\x15\x17\xdd\x70\x30\x5a\x01\x59\x91"
    b"\x07\xd5\x7c\x36\x2a\x29\x9a\x62\xd8\x9e\x05\xc1\x5d\x9d\xbb\xcb"
)
IV512 = (  # H(0) of SHA-512, likewise
    b"\x79\x21\x7e\x13\x19\xcd\xe0\x5b\x6b\xbd\x41\xfb\xab\xd9\x83\x1f"
    b"\x1f\x6c\x3e\x2b\x8c\x68\x05\x9b\xd1\x82\xe6\xad\x7f\x52\x0e\x51"
    b"\xf1\x36\x1d\x5f\x3a\xf5\x4f\xa5\x2b\xf8\x94\xfe\x72\xf3\x6e\x3c"
    b"\x3b\xa7\xca\x84\x85\xae\x67\xbb\x08\xc9\xbc\xf3\x67\xe6\x09\x6a"
)

try:
    import uctypes

    if uctypes.addressof(_K) & 3:
        raise ImportError
except ImportError:   # unaligned (or cannot tell): a copy in the heap, word-aligned
    _K = array("I", _K)

_W = array("I", bytes(128))  # message schedule: a ring of 16 (high, low) pairs


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
            j = i & 31   # W[t] in the ring of 16 (high, low) pairs
            if i >= 32:
                # W[t] = sigma1(W[t-2]) + W[t-7] + sigma0(W[t-15]) + W[t-16], over the slot of W[t-16]
                # sigma0(W[t-15]): ROTR1 ^ ROTR8 ^ SHR7
                xh = uint(W[(i + 2) & 31])
                xl = uint(W[(i + 3) & 31])
                s0h = ((xh >> 1) | (xl << 31)) ^ ((xh >> 8) | (xl << 24)) ^ (xh >> 7)
                s0l = (((xl >> 1) | (xh << 31)) ^ ((xl >> 8) | (xh << 24)) ^ ((xl >> 7) | (xh << 25))) & M
                # sigma1(W[t-2]): ROTR19 ^ ROTR61 ^ SHR6
                xh = uint(W[(i + 28) & 31])
                xl = uint(W[(i + 29) & 31])
                s1h = ((xh >> 19) | (xl << 13)) ^ ((xl >> 29) | (xh << 3)) ^ (xh >> 6)
                s1l = (((xl >> 19) | (xh << 13)) ^ ((xh >> 29) | (xl << 3)) ^ ((xl >> 6) | (xh << 26))) & M
                lo = (s0l + s1l) & M
                hi = s0h + s1h
                if lo < s0l:
                    hi += 1
                x = uint(W[(i + 19) & 31])
                y = (lo + x) & M
                hi += uint(W[(i + 18) & 31])
                if y < x:
                    hi += 1
                x = uint(W[j + 1])
                lo = (y + x) & M
                hi += uint(W[j])
                if lo < x:
                    hi += 1
                W[j] = hi
                W[j + 1] = lo
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
            x = uint(W[j + 1])
            y = (lo + x) & M
            hi += uint(W[j])
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
        # H += working variables, through the schedule buffer (done with it)
        W[0] = hl
        W[1] = hh
        W[2] = gl
        W[3] = gh
        W[4] = fl
        W[5] = fh
        W[6] = el
        W[7] = eh
        W[8] = dl
        W[9] = dh
        W[10] = cl
        W[11] = ch
        W[12] = bl
        W[13] = bh
        W[14] = al
        W[15] = ah
        i = 0
        while i < 16:
            x = uint(st[i])
            y = (x + uint(W[i])) & M
            st[i + 1] = uint(st[i + 1]) + uint(W[i + 1]) + (1 if y < x else 0)
            st[i] = y
            i += 2


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
def zero(b):
    """b[:] = 0: wiping a bytearray in place, without allocating a zero buffer."""
    n = int(len(b))
    dst = ptr8(b)
    i = 0
    while i < n:
        dst[i] = 0
        i += 1
