"""HMAC_DRBG (NIST SP 800-90A rev. 1, section 10.1.2), no prediction resistance.

    d = drbg.HmacDrbg(entropy, nonce, personalization)      # SHA-256 default
    d.generate(32, additional=b'')
    d.reseed(entropy, additional=b'')
    d = drbg.from_source(os.urandom)   # entropy + nonce read from a callable
    d.randbytes(n)                     # = generate(n)

This is the one source of random bytes for protocol code: seed it once
from the board RNG (or os.urandom) and pass it around.  A generator made by
from_source() reseeds itself from its source when the reseed interval is
reached; one made from raw entropy raises ReseedRequired instead.
"""
from uspdm.crypto import hmac as _hmac
from uspdm.crypto import sha2


class ReseedRequired(Exception):
    pass


SECURITY_STRENGTH = 32  # bytes (256 bits) for SHA-256/384/512
MAX_REQUEST = 1 << 16  # bytes per generate(): 2^19 bits
MAX_LENGTH = 1 << 32  # bytes of entropy/personalization/additional (2^35 bits)
RESEED_INTERVAL = 1 << 48


class HmacDrbg:
    def __init__(self, entropy, nonce=b"", personalization=b"", name="sha256"):
        self.name = name
        self._outlen = sha2.digest_size(name)
        _check(personalization, "personalization")
        _check(entropy, "entropy", SECURITY_STRENGTH)
        self.reseed_interval = RESEED_INTERVAL
        self._source = None
        # K and V are updated in place (the same two buffers for the generator's life): new
        # bytes at each generate() would be long-lived objects made among the caller's
        # garbage, small islands all over a MicroPython heap, which never moves anything
        self._k = bytearray(self._outlen)
        self._v = bytearray(b"\x01" * self._outlen)
        self._update(bytes(entropy) + bytes(nonce) + bytes(personalization))
        self.reseed_counter = 1

    def _mac(self, *parts):
        m = _hmac.Hmac(self.name, self._k)
        for p in parts:
            m.update(p)
        return m.digest()

    def _update(self, provided):
        self._k[:] = self._mac(self._v, b"\x00", provided)
        self._v[:] = self._mac(self._v)
        if provided:
            self._k[:] = self._mac(self._v, b"\x01", provided)
            self._v[:] = self._mac(self._v)

    def reseed(self, entropy, additional=b""):
        _check(entropy, "entropy", SECURITY_STRENGTH)
        _check(additional, "additional input")
        self._update(bytes(entropy) + bytes(additional))
        self.reseed_counter = 1

    def generate(self, n, additional=b""):
        if n < 0 or n > MAX_REQUEST:
            raise ValueError("HMAC_DRBG request size")
        _check(additional, "additional input")
        if self.reseed_counter > self.reseed_interval:
            if self._source is None:
                raise ReseedRequired("HMAC_DRBG reseed required")
            self.reseed(self._source(SECURITY_STRENGTH), additional)
            additional = b""
        if additional:
            additional = bytes(additional)
            self._update(additional)
        # one keyed HMAC state reused for the whole output loop
        tmpl = _hmac.Hmac(self.name, self._k)
        out = bytearray()
        v = self._v
        while len(out) < n:
            m = tmpl.copy()
            m.update(v)
            v = m.digest()
            out.extend(v)
        self._v[:] = v
        self._update(additional)
        self.reseed_counter += 1
        return bytes(out[:n])

    randbytes = generate   # randbytes(n): generate(n)


def _check(b, what, least=0):
    if len(b) < least:
        raise ValueError("HMAC_DRBG needs at least %d bytes of %s" % (least, what))
    if len(b) > MAX_LENGTH:
        raise ValueError("HMAC_DRBG %s too long" % what)


def from_source(read_entropy, personalization=b"", name="sha256"):
    """A generator seeded from read_entropy(n) (os.urandom, a board RNG):
    32 bytes of entropy input and a 16-byte nonce; reseeds itself from the
    same source when the reseed interval is reached."""
    entropy = read_entropy(SECURITY_STRENGTH)
    nonce = read_entropy(SECURITY_STRENGTH // 2)
    if len(entropy) != SECURITY_STRENGTH or len(nonce) != SECURITY_STRENGTH // 2:
        raise ValueError("entropy source returned a short read")
    d = HmacDrbg(entropy, nonce, personalization, name)
    d._source = read_entropy
    return d
