"""The pure-Python twin of AES (uspdm.crypto.aes): T-table rounds over T0..T3
in one 4 KiB array('I') (instead of ~40 KiB of boxed ints on MicroPython),
built at first use.  Imported only where it runs (no viper kernel, tests): a
board with the kernels never loads this module.  Functions of an Aes `a`."""
from uspdm.crypto.aes import _sbox, _t_tables

_T = None  # (T0, T1, T2, T3, SBOX), views of one 4 KiB array, built at first use


def _build():
    """The twin's tables (4 KiB)."""
    global _T
    if _T is None:
        mv = memoryview(_t_tables(4))
        _T = (mv[0:256], mv[256:512], mv[512:768], mv[768:1024], _sbox())
    return _T


def init(a, nr, w):
    """Aes `a` keyed for the twin from its expanded key words w (nr rounds)."""
    _build()
    a._nr = nr
    a._rk = w[:4 * nr]  # round keys 0..nr-1 as words
    a._last = b"".join(x.to_bytes(4, "big") for x in w[4 * nr:])


def blocks(a, buf):
    """ECB-encrypt len(buf) (a multiple of 16) bytes."""
    return b"".join(block(a, buf[i:i + 16]) for i in range(0, len(buf), 16))


def block(a, b):
    T0, T1, T2, T3, S = _T
    rk = a._rk
    fb = int.from_bytes
    s0 = fb(b[0:4], "big") ^ rk[0]
    s1 = fb(b[4:8], "big") ^ rk[1]
    s2 = fb(b[8:12], "big") ^ rk[2]
    s3 = fb(b[12:16], "big") ^ rk[3]
    for r in range(4, 4 * a._nr, 4):
        t0 = T0[s0 >> 24] ^ T1[(s1 >> 16) & 255] ^ T2[(s2 >> 8) & 255] ^ T3[s3 & 255] ^ rk[r]
        t1 = T0[s1 >> 24] ^ T1[(s2 >> 16) & 255] ^ T2[(s3 >> 8) & 255] ^ T3[s0 & 255] ^ rk[r + 1]
        t2 = T0[s2 >> 24] ^ T1[(s3 >> 16) & 255] ^ T2[(s0 >> 8) & 255] ^ T3[s1 & 255] ^ rk[r + 2]
        s3 = T0[s3 >> 24] ^ T1[(s0 >> 16) & 255] ^ T2[(s1 >> 8) & 255] ^ T3[s2 & 255] ^ rk[r + 3]
        s0 = t0
        s1 = t1
        s2 = t2
    k = a._last
    return bytes((
        S[s0 >> 24] ^ k[0], S[(s1 >> 16) & 255] ^ k[1], S[(s2 >> 8) & 255] ^ k[2], S[s3 & 255] ^ k[3],
        S[s1 >> 24] ^ k[4], S[(s2 >> 16) & 255] ^ k[5], S[(s3 >> 8) & 255] ^ k[6], S[s0 & 255] ^ k[7],
        S[s2 >> 24] ^ k[8], S[(s3 >> 16) & 255] ^ k[9], S[(s0 >> 8) & 255] ^ k[10], S[s1 & 255] ^ k[11],
        S[s3 >> 24] ^ k[12], S[(s0 >> 16) & 255] ^ k[13], S[(s1 >> 8) & 255] ^ k[14], S[s2 & 255] ^ k[15],
    ))
