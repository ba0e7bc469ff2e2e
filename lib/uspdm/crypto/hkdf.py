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


def expand(name, prk, info, length):
    hl = sha2.digest_size(name)
    if length < 0 or length > 255 * hl:
        raise ValueError("HKDF length")
    tmpl = _hmac.Hmac(name, prk)
    out = bytearray()
    t = b""
    i = 1
    while len(out) < length:
        m = tmpl.copy()
        m.update(t)
        m.update(info)
        m.update(bytes((i,)))
        t = m.digest()
        out.extend(t)
        i += 1
    return bytes(out[:length])


def hkdf(name, salt, ikm, info, length):
    return expand(name, extract(name, salt, ikm), info, length)
