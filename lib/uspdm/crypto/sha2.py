"""SHA-256, SHA-384 and SHA-512 (FIPS 180-4) with copy() and non-finalizing digest().

    h = sha2.new('sha384'); h.update(b'abc'); h2 = h.copy(); h.digest()

Every object returned here can be forked with copy() and asked for digest()
at any point (digest() does not finalize: update() may continue after it),
which is what SPDM transcript hashing needs.

Backends, chosen at import time:
- a hashlib constructor whose objects have copy() (CPython): thin wrapper.
- a hashlib constructor without copy()/with finalizing digest() (MicroPython
  C hashlib, e.g. sha256 on every port, sha384/sha512 on some ESP32 builds):
  `_Replay` keeps the bytes fed so far (shared between forks) and replays
  them into a fresh C object on digest(); copy() is O(1).
- otherwise, for SHA-384/512 where the port has a native emitter (every
  board), the viper compression kernel of _sha512v (`_Sha512K`);
- else the pure-Python twins of _sha2py, imported only then.
"""
try:
    import hashlib as _hashlib
except ImportError:  # pragma: no cover
    _hashlib = None

_M32 = 0xFFFFFFFF

_K512 = (
    0x428A2F98D728AE22, 0x7137449123EF65CD, 0xB5C0FBCFEC4D3B2F, 0xE9B5DBA58189DBBC,
    0x3956C25BF348B538, 0x59F111F1B605D019, 0x923F82A4AF194F9B, 0xAB1C5ED5DA6D8118,
    0xD807AA98A3030242, 0x12835B0145706FBE, 0x243185BE4EE4B28C, 0x550C7DC3D5FFB4E2,
    0x72BE5D74F27B896F, 0x80DEB1FE3B1696B1, 0x9BDC06A725C71235, 0xC19BF174CF692694,
    0xE49B69C19EF14AD2, 0xEFBE4786384F25E3, 0x0FC19DC68B8CD5B5, 0x240CA1CC77AC9C65,
    0x2DE92C6F592B0275, 0x4A7484AA6EA6E483, 0x5CB0A9DCBD41FBD4, 0x76F988DA831153B5,
    0x983E5152EE66DFAB, 0xA831C66D2DB43210, 0xB00327C898FB213F, 0xBF597FC7BEEF0EE4,
    0xC6E00BF33DA88FC2, 0xD5A79147930AA725, 0x06CA6351E003826F, 0x142929670A0E6E70,
    0x27B70A8546D22FFC, 0x2E1B21385C26C926, 0x4D2C6DFC5AC42AED, 0x53380D139D95B3DF,
    0x650A73548BAF63DE, 0x766A0ABB3C77B2A8, 0x81C2C92E47EDAEE6, 0x92722C851482353B,
    0xA2BFE8A14CF10364, 0xA81A664BBC423001, 0xC24B8B70D0F89791, 0xC76C51A30654BE30,
    0xD192E819D6EF5218, 0xD69906245565A910, 0xF40E35855771202A, 0x106AA07032BBD1B8,
    0x19A4C116B8D2D0C8, 0x1E376C085141AB53, 0x2748774CDF8EEB99, 0x34B0BCB5E19B48A8,
    0x391C0CB3C5C95A63, 0x4ED8AA4AE3418ACB, 0x5B9CCA4F7763E373, 0x682E6FF3D6B2B8A3,
    0x748F82EE5DEFB2FC, 0x78A5636F43172F60, 0x84C87814A1F0AB72, 0x8CC702081A6439EC,
    0x90BEFFFA23631E28, 0xA4506CEBDE82BDE9, 0xBEF9A3F7B2C67915, 0xC67178F2E372532B,
    0xCA273ECEEA26619C, 0xD186B8C721C0C207, 0xEADA7DD6CDE0EB1E, 0xF57D4F7FEE6ED178,
    0x06F067AA72176FBA, 0x0A637DC5A2C898A6, 0x113F9804BEF90DAE, 0x1B710B35131C471B,
    0x28DB77F523047D84, 0x32CAAB7B40C72493, 0x3C9EBE0A15C9BEBC, 0x431D67C49C100D4C,
    0x4CC5D4BECB3E42B6, 0x597F299CFC657E2A, 0x5FCB6FAB3AD6FAEC, 0x6C44198C4A475817,
)

_IV384 = (
    0xCBBB9D5DC1059ED8, 0x629A292A367CD507, 0x9159015A3070DD17, 0x152FECD8F70E5939,
    0x67332667FFC00B31, 0x8EB44A8768581511, 0xDB0C2E0D64F98FA7, 0x47B5481DBEFA4FA4,
)
_IV512 = (
    0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
    0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179,
)

_DIGEST_SIZE = {"sha256": 32, "sha384": 48, "sha512": 64}
_BLOCK_SIZE = {"sha256": 64, "sha384": 128, "sha512": 128}


def _hex(b):
    return "".join("%02x" % x for x in b)


class _Wrap:
    """hashlib object that already has copy() and a non-finalizing digest()."""

    def __init__(self, name, obj):
        self.name = name
        self._o = obj
        self.digest_size = _DIGEST_SIZE[name]
        self.block_size = _BLOCK_SIZE[name]

    def update(self, data):
        self._o.update(data)

    def digest(self):
        return self._o.digest()

    def hexdigest(self):
        return _hex(self.digest())

    def copy(self):
        return _Wrap(self.name, self._o.copy())

    def wipe(self):
        self._o = None  # C state: cannot be overwritten from Python


class _Replay:
    """Copyable hash over a C hashlib constructor whose objects cannot copy()
    and whose digest() finalizes (MicroPython).  Keeps the data fed so far
    as an immutable chain of chunks shared between forks; digest() replays it
    into a fresh C object.  copy() is O(1); digest() costs one C pass over
    everything fed (C speed); memory is the total fed length (transcripts are
    a few KB)."""

    _COALESCE = 256  # small updates are merged up to this size

    def __init__(self, name, ctor, data=b""):
        self.name = name
        self._ctor = ctor
        self.digest_size = _DIGEST_SIZE[name]
        self.block_size = _BLOCK_SIZE[name]
        self._prefix = None  # (parent_prefix, chunk_bytes), immutable
        self._tail = bytearray()  # private, not shared
        if data:
            self.update(data)

    def update(self, data):
        if not len(data):
            return
        t = self._tail
        if len(t) + len(data) <= self._COALESCE:
            t.extend(data)
            return
        if t:
            self._prefix = (self._prefix, bytes(t))
            self._tail = bytearray()
        if len(data) <= self._COALESCE:
            self._tail.extend(data)
        else:
            self._prefix = (self._prefix, bytes(data))

    def digest(self):
        chunks = []
        p = self._prefix
        while p is not None:
            chunks.append(p[1])
            p = p[0]
        o = self._ctor()
        for i in range(len(chunks) - 1, -1, -1):
            o.update(chunks[i])
        if self._tail:
            o.update(self._tail)
        return o.digest()

    def hexdigest(self):
        return _hex(self.digest())

    def wipe(self):
        t = self._tail
        t[0:len(t)] = bytes(len(t))
        self._prefix = None

    def copy(self):
        o = object.__new__(_Replay)
        o.name = self.name
        o._ctor = self._ctor
        o.digest_size = self.digest_size
        o.block_size = self.block_size
        o._prefix = self._prefix
        o._tail = bytearray(self._tail)
        return o


class _Sha512K:
    """SHA-512/384 over the viper compression kernel (_sha512v): the state
    is 16 native 32-bit words in a bytearray (no big ints), blocks are
    compressed straight from the caller's buffer."""

    digest_size = 64
    block_size = 128
    name = "sha512"
    _iv = None  # bytes of 16 words, set by _init_kernel()

    def __init__(self, data=b""):
        self._h = bytearray(self._iv)
        self._buf = bytearray(128)
        self._nb = 0  # bytes buffered
        self._n = 0
        if data:
            self.update(data)

    def update(self, data):
        n = len(data)
        if not n:
            return
        self._n += n
        buf = self._buf
        nb = self._nb
        off = 0
        if nb:
            take = 128 - nb
            if n < take:
                buf[nb:nb + n] = data
                self._nb = nb + n
                return
            buf[nb:128] = data[:take]
            _vcompress(self._h, buf, 0, 1)
            off = take
            self._nb = 0
        nblk = (n - off) >> 7
        if nblk:
            _vcompress(self._h, data, off, nblk)
            off += nblk << 7
        if off < n:
            self._nb = n - off
            buf[0:n - off] = data[off:]

    def _final(self):
        h = bytearray(self._h)
        nb = self._nb
        tail = bytearray(256)
        tail[0:nb] = self._buf[0:nb]
        tail[nb] = 0x80
        nblk = 1 if nb < 112 else 2
        tail[nblk * 128 - 16:nblk * 128] = (self._n * 8).to_bytes(16, "big")
        _vcompress(h, tail, 0, nblk)
        _vzero(tail, 256)
        return h

    def digest(self):
        out = bytearray(self.digest_size)
        h = self._final()
        _vbe_out(out, h, self.digest_size)
        _vzero(h, 64)
        return bytes(out)

    def hexdigest(self):
        return _hex(self.digest())

    def copy(self):
        o = object.__new__(self.__class__)
        o._h = bytearray(self._h)
        o._buf = bytearray(self._buf)
        o._nb = self._nb
        o._n = self._n
        return o

    def wipe(self):
        """Overwrite the state and the buffered input in place."""
        _vzero(self._h, 64)
        _vzero(self._buf, 128)
        self._nb = 0


class _Sha384K(_Sha512K):
    digest_size = 48
    name = "sha384"


def _words(vals):
    """64-bit ints -> the kernel's state layout: native 32-bit words, last
    word first (see _sha512v), so the buffer reversed is big-endian."""
    n = 8 * len(vals)
    return bytearray(int.from_bytes(b"".join(v.to_bytes(8, "big") for v in vals), "big").to_bytes(n, "little"))


def _words_be(b):
    """The kernel's state -> big-endian bytes (the digest order)."""
    return int.from_bytes(b, "little").to_bytes(len(b), "big")


_vcompress = None
_vbe_out = None
_vzero = None


def _xor_pad_py(dst, key, n, v):
    for i in range(n):
        dst[i] = key[i] ^ v


xor_pad = _xor_pad_py  # xor_pad(dst, key, n, v): dst[:n] = key[:n] ^ v (viper where it exists)


def zero(b):
    """Overwrite a bytearray with zeros in place."""
    if _vzero is not None:
        _vzero(b, len(b))
    else:
        b[0:len(b)] = bytes(len(b))


def _init_kernel():
    """Use the viper SHA-512 kernel where the port compiles viper."""
    global _vcompress, _vbe_out, _vzero, xor_pad
    try:
        from uspdm.crypto import _sha512v
    except Exception:  # CPython, MicroPython without a native emitter
        return False
    from array import array

    k = array("I", bytes(640))  # K[t] as (high, low) word pairs, in order
    for t in range(80):
        k[2 * t] = _K512[t] >> 32
        k[2 * t + 1] = _K512[t] & _M32
    _sha512v._K = k
    _Sha512K._iv = bytes(_words(_IV512))
    _Sha384K._iv = bytes(_words(_IV384))
    _vcompress = _sha512v.compress
    _vbe_out = _sha512v.be_out
    _vzero = _sha512v.zero
    xor_pad = _sha512v.xor_pad
    return True


def _pure_cls(name):
    """The pure-Python twin (module _sha2py, loaded only where it is used:
    not on a board with C SHA-256 and the viper SHA-512 kernel)."""
    from uspdm.crypto import _sha2py

    return _sha2py.PURE[name]

_KERNEL = {}
if _init_kernel():
    _KERNEL = {"sha384": _Sha384K, "sha512": _Sha512K}


def _probe(name):
    """Return (kind, ctor): kind 'wrap' | 'replay' | 'pure'."""
    ctor = getattr(_hashlib, name, None) if _hashlib is not None else None
    if ctor is None:
        if name in _KERNEL:
            return ("viper", _KERNEL[name])
        return ("pure", _pure_cls(name))
    try:
        o = ctor()
        o.update(b"abc")
        if hasattr(o, "copy"):
            c = o.copy()
            if o.digest() == o.digest() and c.digest() == o.digest():
                return ("wrap", ctor)
        return ("replay", ctor)
    except Exception:  # a constructor that does not work: fall back
        return ("pure", _pure_cls(name))


_BACKEND = {}


def _init_backends():
    for name in ("sha256", "sha384", "sha512"):
        _BACKEND[name] = _probe(name)


_init_backends()


def backend(name):
    """'wrap', 'replay', 'viper' or 'pure': how `name` is implemented on this port."""
    return _backend(name)[0]


def _backend(name):
    try:
        return _BACKEND[name]
    except KeyError:
        raise ValueError("unsupported hash %r" % (name,))


def new(name, data=b""):
    kind, ctor = _backend(name)
    if kind == "pure" or kind == "viper":
        return ctor(data)
    if kind == "replay":
        return _Replay(name, ctor, data)
    o = _Wrap(name, ctor())
    if data:
        o.update(data)
    return o


def stream(name):
    """A hash object for one pass (update() then digest() once, no copy()):
    a C hashlib object as it is, without the replay buffer that makes new()
    copyable on MicroPython (which keeps every byte fed: files, folders)."""
    kind, ctor = _backend(name)
    if kind == "replay":
        return ctor()
    return new(name)


def sha256(data=b""):
    return new("sha256", data)


def sha384(data=b""):
    return new("sha384", data)


def sha512(data=b""):
    return new("sha512", data)


def digest_size(name):
    return _DIGEST_SIZE[_check(name)]


def block_size(name):
    return _BLOCK_SIZE[_check(name)]


def _check(name):
    if name not in _DIGEST_SIZE:
        raise ValueError("unsupported hash %r" % (name,))
    return name


def pure(name, data=b""):
    """The pure-Python implementation regardless of backend (tests, bench)."""
    return _pure_cls(_check(name))(data)


def kernel(name, data=b""):
    """The viper-kernel implementation (sha384/sha512), or None where the
    port has no native emitter (tests, bench)."""
    k = _KERNEL.get(_check(name))
    return k(data) if k is not None else None


def digest(name, data):
    """One-shot digest (uses the C hashlib directly when present)."""
    return _backend(name)[1](data).digest()
