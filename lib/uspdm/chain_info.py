"""The SPDM certificate chain buffer's figures, computed from storage in small pieces
(loaded on demand by uspdm.identity when a (slot, alg, hash) is first used, and
dropped again: not resident on a board while it serves).

    compute(ident, name, hashname) -> (length, root hash, digest) or None

The chain buffer (`Length u16 | Reserved u16 | RootHash[H] | certificates`, DSP0274)
is never built: two passes read the stored DER in 256-byte pieces, the first for
the root certificate's hash and the length, the second for the digest.  None when
the file is missing or its first certificate is not framed as DER or truncated.
"""
_PIECE = 256


def compute(ident, name, hashname):
    # (imports here: loading this module loads nothing else, so that dropping it
    # drops nothing else either, uspdm.demand)
    from uspdm.compat import p16
    from uspdm.crypto import sha2

    piece = bytearray(_PIECE)
    mv = memoryview(piece)
    # pass 1: the root certificate's hash and the chain's length
    n = ident._read(name, 0, piece)
    if n is None or n < 2 or piece[0] != 0x30:
        return None
    ln = piece[1]
    hdr = 2
    if ln & 0x80:
        hdr += ln & 0x7F
        if hdr == 2 or hdr > 5 or n < hdr:
            return None
        ln = 0
        for i in range(2, hdr):
            ln = (ln << 8) | piece[i]
    root = hdr + ln   # bytes of the root certificate still to hash
    rh = sha2.stream(hashname)
    size = 0
    while n:
        m = min(n, root)
        if m > 0:
            rh.update(mv[0:m])
            root -= m
        size += n
        if n < _PIECE:
            break
        n = ident._read(name, size, piece)
    if root:
        return None   # truncated root certificate
    root_hash = rh.digest()
    total = 4 + len(root_hash) + size
    if total > 0xFFFF:
        return None
    # pass 2: Hash(Length | Reserved | RootHash | certificates)
    h = sha2.stream(hashname)
    h.update(p16(total) + b"\x00\x00" + root_hash)
    off = 0
    while off < size:
        n = ident._read(name, off, piece)
        if not n:
            return None
        h.update(mv[0:min(n, size - off)])
        off += n
    return total, root_hash, h.digest()
