"""Pure-Python twins of the AES-GCM kernels (uspdm.crypto.gcm): GHASH over
128-bit ints with Shoup's 4-bit or 8-bit tables, and the CTR keystream from
uspdm.crypto.aes (cryptolib ECB in batches, or its pure-Python block twin).
Imported only where they run: a port without a native emitter, a board with
cryptolib, table_bits=8, kernel=False (tests); a board with the viper kernels
never loads this module (its code would otherwise take heap beside theirs).
Functions of an AesGcm `g`."""
from uspdm.crypto.gcm import _mulx

_CHUNK = 256  # keystream bytes produced per batch (cryptolib path)
_RED4 = None
_RED8 = None


def red(bits):
    """The reduction table of the `bits`-bit GHASH table method."""
    global _RED4, _RED8
    if bits == 4:
        if _RED4 is None:
            _RED4 = tuple(_mulx(v, 4) for v in range(16))
        return _RED4
    if _RED8 is None:
        _RED8 = tuple(_mulx(v, 8) for v in range(256))
    return _RED8


def ghash(g, y, data):
    """Absorb data (zero-padded to 16) into GHASH state int y; return y."""
    M = g._m
    R = g._red
    fb = int.from_bytes
    n = len(data)
    for off in range(0, n, 16):
        blk = data[off:off + 16]
        if len(blk) < 16:
            blk = bytes(blk) + bytes(16 - len(blk))
        xb = (y ^ fb(blk, "big")).to_bytes(16, "big")
        z = 0
        if g._bits == 8:
            for i in range(15, -1, -1):
                z = (z >> 8) ^ R[z & 255] ^ M[xb[i]]
        else:
            for i in range(15, -1, -1):
                b = xb[i]
                z = (z >> 4) ^ R[z & 15] ^ M[b & 15]
                z = (z >> 4) ^ R[z & 15] ^ M[b >> 4]
        y = z
    return y


def tag(g, j0, aad, ct, lens):
    y = ghash(g, 0, aad)
    y = ghash(g, y, ct)
    y = ghash(g, y, lens)
    e = int.from_bytes(g._aes.encrypt_block(j0), "big")
    return (y ^ e).to_bytes(16, "big")


def ctr(g, iv, data):
    """CTR keystream XOR from counter 2 (counter 1 is J0, the tag mask)."""
    n = len(data)
    out = bytearray(n)
    c = 2  # counter 1 is J0 (tag mask)
    aes = g._aes
    fb = int.from_bytes
    off = 0
    while off < n:
        take = min(_CHUNK, n - off)
        nb = (take + 15) >> 4
        cb = bytearray(16 * nb)
        for i in range(nb):
            o = 16 * i
            cb[o:o + 12] = iv
            cb[o + 12:o + 16] = (c & 0xFFFFFFFF).to_bytes(4, "big")
            c += 1
        ks = aes.encrypt_blocks(cb)
        x = fb(data[off:off + take], "big") ^ fb(ks[:take], "big")
        out[off:off + take] = x.to_bytes(take, "big")
        off += take
    return bytes(out)
