"""HMAC (RFC 2104 / FIPS 198-1) over uspdm.crypto.sha2.

    hmac.hmac('sha384', key, msg) -> bytes
    m = hmac.Hmac('sha384', key); m.update(a); m.update(b); m.digest()
    hmac.new(name, key, msg=None)          # = Hmac(name, key, msg)

An Hmac keeps its keyed inner and outer hash states; copy() forks them, so
a key used many times (HKDF-Expand, HMAC_DRBG, session keys) hashes its
pads only once: keep a template Hmac and call copy() on it.  digest() does
not finalize (like sha2 objects).
"""
from uspdm.crypto import sha2


def _xor_pad(key, bs, v):
    pad = bytearray(bytes((v,)) * bs)
    sha2.xor_pad(pad, key, len(key), v)
    return pad


_zero = sha2.zero


class Hmac:
    def __init__(self, name, key=b"", msg=None):
        bs = sha2.block_size(name)
        if len(key) > bs:
            key = sha2.new(name, key).digest()
        self.name = name
        self.digest_size = sha2.digest_size(name)
        self.block_size = bs
        pad = _xor_pad(key, bs, 0x36)
        self._inner = sha2.new(name, pad)
        _zero(pad)
        pad = _xor_pad(key, bs, 0x5C)
        self._outer = sha2.new(name, pad)
        self._own_outer = True
        _zero(pad)
        if msg:
            self._inner.update(msg)

    def update(self, data):
        self._inner.update(data)

    def digest(self):
        o = self._outer.copy()
        o.update(self._inner.digest())
        return o.digest()

    def wipe(self):
        """Overwrite the keyed inner state, and the outer one unless it is
        shared with the template this object was copied from."""
        hs = (self._inner, self._outer) if self._own_outer else (self._inner,)
        for h in hs:
            w = getattr(h, "wipe", None)
            if w is not None:
                w()

    def copy(self):
        o = object.__new__(Hmac)
        o.name = self.name
        o.digest_size = self.digest_size
        o.block_size = self.block_size
        o._inner = self._inner.copy()
        o._outer = self._outer  # never updated in place: copied in digest()
        o._own_outer = False
        return o


def hmac(name, key, msg):
    m = Hmac(name, key)
    m.update(msg)
    return m.digest()


new = Hmac
