"""HKDF (RFC 5869) over HMAC-SHA-2.

    prk = hkdf.extract('sha384', salt, ikm)
    okm = hkdf.expand('sha384', prk, info, length)

expand() keys HMAC once and forks the keyed state per output block.
"""
from uspdm.crypto import hmac as _hmac
from uspdm.crypto import sha2


def extract(name, salt, ikm):
    if not salt:
        salt = bytes(sha2.digest_size(name))
    return _hmac.hmac(name, salt, ikm)


def expand_into(name, prk, info, out):
    """HKDF-Expand into the bytearray `out` (len(out) bytes of OKM): the
    caller owns the only copy of the output and can wipe it."""
    hl = sha2.digest_size(name)
    length = len(out)
    if length > 255 * hl:
        raise ValueError("HKDF length")
    tmpl = _hmac.Hmac(name, prk)
    t = b""
    i = 1
    off = 0
    while off < length:
        m = tmpl.copy()
        m.update(t)
        m.update(info)
        m.update(bytes((i,)))
        t = m.digest()
        m.wipe()
        take = min(hl, length - off)
        out[off:off + take] = t[:take]
        off += take
        i += 1
    tmpl.wipe()
    return out


def expand(name, prk, info, length):
    if length < 0 or length > 255 * sha2.digest_size(name):
        raise ValueError("HKDF length")
    return bytes(expand_into(name, prk, info, bytearray(length)))


def hkdf(name, salt, ikm, info, length):
    return expand(name, extract(name, salt, ikm), info, length)
