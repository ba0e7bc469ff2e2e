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

# The SHA-512 constants as big-endian bytes (64-bit words), for the viper kernel: one
# bytes object in the module (80 + 16 big ints were about 3 KB of heap on a board);
# the pure-Python twin (_sha2py) keeps them as ints
_K512B = (  # K[0..79]
    b"\x42\x8a\x2f\x98\xd7\x28\xae\x22\x71\x37\x44\x91\x23\xef\x65\xcd"
    b"\xb5\xc0\xfb\xcf\xec\x4d\x3b\x2f\xe9\xb5\xdb\xa5\x81\x89\xdb\xbc"
    b"\x39\x56\xc2\x5b\xf3\x48\xb5\x38\x59\xf1\x11\xf1\xb6\x05\xd0\x19"
    b"\x92\x3f\x82\xa4\xaf\x19\x4f\x9b\xab\x1c\x5e\xd5\xda\x6d\x81\x18"
    b"\xd8\x07\xaa\x98\xa3\x03\x02\x42\x12\x83\x5b\x01\x45\x70\x6f\xbe"
    b"\x24\x31\x85\xbe\x4e\xe4\xb2\x8c\x55\x0c\x7d\xc3\xd5\xff\xb4\xe2"
    b"\x72\xbe\x5d\x74\xf2\x7b\x89\x6f\x80\xde\xb1\xfe\x3b\x16\x96\xb1"
    b"\x9b\xdc\x06\xa7\x25\xc7\x12\x35\xc1\x9b\xf1\x74\xcf\x69\x26\x94"
    b"\xe4\x9b\x69\xc1\x9e\xf1\x4a\xd2\xef\xbe\x47\x86\x38\x4f\x25\xe3"
    b"\x0f\xc1\x9d\xc6\x8b\x8c\xd5\xb5\x24\x0c\xa1\xcc\x77\xac\x9c\x65"
    b"\x2d\xe9\x2c\x6f\x59\x2b\x02\x75\x4a\x74\x84\xaa\x6e\xa6\xe4\x83"
    b"\x5c\xb0\xa9\xdc\xbd\x41\xfb\xd4\x76\xf9\x88\xda\x83\x11\x53\xb5"
    b"\x98\x3e\x51\x52\xee\x66\xdf\xab\xa8\x31\xc6\x6d\x2d\xb4\x32\x10"
    b"\xb0\x03\x27\xc8\x98\xfb\x21\x3f\xbf\x59\x7f\xc7\xbe\xef\x0e\xe4"
    b"\xc6\xe0\x0b\xf3\x3d\xa8\x8f\xc2\xd5\xa7\x91\x47\x93\x0a\xa7\x25"
    b"\x06\xca\x63\x51\xe0\x03\x82\x6f\x14\x29\x29\x67\x0a\x0e\x6e\x70"
    b"\x27\xb7\x0a\x85\x46\xd2\x2f\xfc\x2e\x1b\x21\x38\x5c\x26\xc9\x26"
    b"\x4d\x2c\x6d\xfc\x5a\xc4\x2a\xed\x53\x38\x0d\x13\x9d\x95\xb3\xdf"
    b"\x65\x0a\x73\x54\x8b\xaf\x63\xde\x76\x6a\x0a\xbb\x3c\x77\xb2\xa8"
    b"\x81\xc2\xc9\x2e\x47\xed\xae\xe6\x92\x72\x2c\x85\x14\x82\x35\x3b"
    b"\xa2\xbf\xe8\xa1\x4c\xf1\x03\x64\xa8\x1a\x66\x4b\xbc\x42\x30\x01"
    b"\xc2\x4b\x8b\x70\xd0\xf8\x97\x91\xc7\x6c\x51\xa3\x06\x54\xbe\x30"
    b"\xd1\x92\xe8\x19\xd6\xef\x52\x18\xd6\x99\x06\x24\x55\x65\xa9\x10"
    b"\xf4\x0e\x35\x85\x57\x71\x20\x2a\x10\x6a\xa0\x70\x32\xbb\xd1\xb8"
    b"\x19\xa4\xc1\x16\xb8\xd2\xd0\xc8\x1e\x37\x6c\x08\x51\x41\xab\x53"
    b"\x27\x48\x77\x4c\xdf\x8e\xeb\x99\x34\xb0\xbc\xb5\xe1\x9b\x48\xa8"
    b"\x39\x1c\x0c\xb3\xc5\xc9\x5a\x63\x4e\xd8\xaa\x4a\xe3\x41\x8a\xcb"
    b"\x5b\x9c\xca\x4f\x77\x63\xe3\x73\x68\x2e\x6f\xf3\xd6\xb2\xb8\xa3"
    b"\x74\x8f\x82\xee\x5d\xef\xb2\xfc\x78\xa5\x63\x6f\x43\x17\x2f\x60"
    b"\x84\xc8\x78\x14\xa1\xf0\xab\x72\x8c\xc7\x02\x08\x1a\x64\x39\xec"
    b"\x90\xbe\xff\xfa\x23\x63\x1e\x28\xa4\x50\x6c\xeb\xde\x82\xbd\xe9"
    b"\xbe\xf9\xa3\xf7\xb2\xc6\x79\x15\xc6\x71\x78\xf2\xe3\x72\x53\x2b"
    b"\xca\x27\x3e\xce\xea\x26\x61\x9c\xd1\x86\xb8\xc7\x21\xc0\xc2\x07"
    b"\xea\xda\x7d\xd6\xcd\xe0\xeb\x1e\xf5\x7d\x4f\x7f\xee\x6e\xd1\x78"
    b"\x06\xf0\x67\xaa\x72\x17\x6f\xba\x0a\x63\x7d\xc5\xa2\xc8\x98\xa6"
    b"\x11\x3f\x98\x04\xbe\xf9\x0d\xae\x1b\x71\x0b\x35\x13\x1c\x47\x1b"
    b"\x28\xdb\x77\xf5\x23\x04\x7d\x84\x32\xca\xab\x7b\x40\xc7\x24\x93"
    b"\x3c\x9e\xbe\x0a\x15\xc9\xbe\xbc\x43\x1d\x67\xc4\x9c\x10\x0d\x4c"
    b"\x4c\xc5\xd4\xbe\xcb\x3e\x42\xb6\x59\x7f\x29\x9c\xfc\x65\x7e\x2a"
    b"\x5f\xcb\x6f\xab\x3a\xd6\xfa\xec\x6c\x44\x19\x8c\x4a\x47\x58\x17"
)

_IV384B = (  # H(0) of SHA-384
    b"\xcb\xbb\x9d\x5d\xc1\x05\x9e\xd8\x62\x9a\x29\x2a\x36\x7c\xd5\x07"
    b"\x91\x59\x01\x5a\x30\x70\xdd\x17\x15\x2f\xec\xd8\xf7\x0e\x59\x39"
    b"\x67\x33\x26\x67\xff\xc0\x0b\x31\x8e\xb4\x4a\x87\x68\x58\x15\x11"
    b"\xdb\x0c\x2e\x0d\x64\xf9\x8f\xa7\x47\xb5\x48\x1d\xbe\xfa\x4f\xa4"
)
_IV512B = (  # H(0) of SHA-512
    b"\x6a\x09\xe6\x67\xf3\xbc\xc9\x08\xbb\x67\xae\x85\x84\xca\xa7\x3b"
    b"\x3c\x6e\xf3\x72\xfe\x94\xf8\x2b\xa5\x4f\xf5\x3a\x5f\x1d\x36\xf1"
    b"\x51\x0e\x52\x7f\xad\xe6\x82\xd1\x9b\x05\x68\x8c\x2b\x3e\x6c\x1f"
    b"\x1f\x83\xd9\xab\xfb\x41\xbd\x6b\x5b\xe0\xcd\x19\x13\x7e\x21\x79"
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
    for i in range(160):
        k[i] = int.from_bytes(_K512B[4 * i:4 * i + 4], "big")
    _sha512v._K = k
    _Sha512K._iv = _words_be(_IV512B)   # the kernel's layout: the big-endian bytes reversed
    _Sha384K._iv = _words_be(_IV384B)
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
