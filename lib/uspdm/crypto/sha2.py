"""SHA-256, SHA-384 and SHA-512 (FIPS 180-4) with copy() and non-finalizing digest().

    h = sha2.new('sha384'); h.update(b'abc'); h2 = h.copy(); h.digest()

Every object returned here can be forked with copy() and asked for digest()
at any point (digest() does not finalize: update() may continue after it),
which is what SPDM transcript hashing needs.

Backends, chosen at import time:
- a hashlib constructor whose objects have copy() (CPython): a thin wrapper
  (_sha2py._Wrap).
- a hashlib constructor without copy()/with finalizing digest() (MicroPython
  C hashlib, e.g. sha256 on every port, sha384/sha512 on some ESP32 builds):
  `_Replay` keeps the bytes fed so far (shared between forks) and replays
  them into a fresh C object on digest(); copy() is O(1).
- otherwise, for SHA-384/512 where the port has a native emitter (every
  board), the viper compression kernel of _sha512v (`_Sha512K`);
- else the pure-Python twins of _sha2py, imported only then.

What a board never runs (the wrapper of copyable hashlib objects, the
pure-Python twins, pure() and kernel() for tests and benchmarks) is in
_sha2py, reached through this module's attributes (module __getattr__), so
that the module a board keeps in its heap holds only what it uses;
sha256(data), sha384(data) and sha512(data) are new(name, data).
"""
try:
    import hashlib as _hashlib
except ImportError:  # pragma: no cover
    _hashlib = None

_DIGEST_SIZE = {"sha256": 32, "sha384": 48, "sha512": 64}
_BLOCK_SIZE = {"sha256": 64, "sha384": 128, "sha512": 128}


class _Replay:
    """Copyable hash over a C hashlib constructor whose objects cannot copy()
    and whose digest() finalizes (MicroPython).  Keeps the data fed so far
    as an immutable chain of chunks shared between forks; digest() replays it
    into a fresh C object.  copy() is O(1); digest() costs one C pass over
    everything fed (C speed); memory is the total fed length (transcripts are
    a few KB), in chunks of at most _COALESCE bytes (a large update is cut)."""

    _COALESCE = 256  # chunk size: small updates are merged up to it, larger ones cut

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
        n = len(data)
        if not n:
            return
        t = self._tail
        c = self._COALESCE
        room = c - len(t)
        if n <= room:
            t.extend(data)
            return
        # kept in pieces of at most _COALESCE bytes: a 1 KB message fed at once never
        # needs a 1 KB block (the heap of a small board is fragmented)
        mv = memoryview(data)
        o = 0
        if len(t):
            t.extend(mv[0:room])
            self._prefix = (self._prefix, t)   # (the full tail itself: no longer written)
            o = room
        while n - o > c:
            self._prefix = (self._prefix, bytes(mv[o:o + c]))
            o += c
        self._tail = bytearray(mv[o:n])

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

    def wipe(self):
        zero(self._tail)
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
    _iv = None  # the kernel's IV512 (state layout), set by _init_kernel()

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

    def digest(self):
        h = bytearray(self._h)
        nb = self._nb
        tail = bytearray(256)
        tail[0:nb] = self._buf[0:nb]
        tail[nb] = 0x80
        nblk = 1 if nb < 112 else 2
        tail[nblk * 128 - 16:nblk * 128] = (self._n * 8).to_bytes(16, "big")
        _vcompress(h, tail, 0, nblk)
        zero(tail)
        out = bytearray(self.digest_size)
        _vbe_out(out, h, self.digest_size)
        zero(h)
        return bytes(out)

    def copy(self):
        o = object.__new__(self.__class__)
        o._h = bytearray(self._h)
        o._buf = bytearray(self._buf)
        o._nb = self._nb
        o._n = self._n
        return o

    def wipe(self):
        """Overwrite the state and the buffered input in place."""
        zero(self._h)
        zero(self._buf)
        self._nb = 0


class _Sha384K(_Sha512K):
    digest_size = 48
    name = "sha384"


_vcompress = None
_vbe_out = None
_KERNEL = {}


def _init_kernel():
    """Use the viper SHA-512 kernel where the port compiles viper; else the
    pure-Python xor_pad and zero of _sha2py."""
    global _vcompress, _vbe_out, xor_pad, zero
    try:
        from uspdm.crypto import _sha512v as k
    except Exception:  # CPython, MicroPython without a native emitter
        from uspdm.crypto._sha2py import xor_pad, zero
        return
    _Sha512K._iv = k.IV512
    _Sha384K._iv = k.IV384
    _vcompress = k.compress
    _vbe_out = k.be_out
    xor_pad = k.xor_pad   # xor_pad(dst, key, n, v): dst[:n] = key[:n] ^ v
    zero = k.zero         # zero(b): overwrite a bytearray with zeros in place
    _KERNEL["sha384"] = _Sha384K
    _KERNEL["sha512"] = _Sha512K


_init_kernel()


def _probe(name):
    """Return (kind, ctor): kind 'wrap' | 'replay' | 'viper' | 'pure'."""
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


def _pure_cls(name):
    """The pure-Python twin (module _sha2py, loaded only where it is used:
    not on a board with C SHA-256 and the viper SHA-512 kernel)."""
    from uspdm.crypto import _sha2py

    return _sha2py.PURE[name]


_BACKEND = {}
for _n in _DIGEST_SIZE:
    _BACKEND[_n] = _probe(_n)


def _backend(name):
    try:
        return _BACKEND[name]
    except KeyError:
        raise ValueError("unsupported hash %r" % (name,))


def new(name, data=b""):
    kind, ctor = _backend(name)
    if kind == "replay":
        return _Replay(name, ctor, data)
    if kind == "wrap":
        from uspdm.crypto._sha2py import _Wrap

        return _Wrap(name, ctor, data)
    return ctor(data)


def stream(name):
    """A hash object for one pass (update() then digest() once, no copy()):
    a C hashlib object as it is, without the replay buffer that makes new()
    copyable on MicroPython (which keeps every byte fed: files, folders)."""
    kind, ctor = _backend(name)
    if kind == "replay":
        return ctor()
    return new(name)


def digest_size(name):
    return _DIGEST_SIZE[_check(name)]


def block_size(name):
    return _BLOCK_SIZE[_check(name)]


def _check(name):
    if name not in _DIGEST_SIZE:
        raise ValueError("unsupported hash %r" % (name,))
    return name


def backend(name):
    """'wrap', 'replay', 'viper' or 'pure': how `name` is implemented on this port."""
    return _backend(name)[0]


def digest(name, data):
    """One-shot digest (the C hashlib directly when present)."""
    return _backend(name)[1](data).digest()


def __getattr__(name):
    # sha256(data), sha384(data), sha512(data): new(name, data); pure(), kernel()
    # and the host's wrapper: _sha2py (a name it lacks leaves it unloaded: probes)
    if name in _DIGEST_SIZE:
        return lambda data=b"": new(name, data)
    if name[:2] == "__":
        raise AttributeError(name)
    import sys

    had = "uspdm.crypto._sha2py" in sys.modules
    from uspdm.crypto import _sha2py

    try:
        return getattr(_sha2py, name)
    except AttributeError:
        if not had:
            sys.modules.pop("uspdm.crypto._sha2py", None)
            try:
                delattr(sys.modules["uspdm.crypto"], "_sha2py")
            except (AttributeError, KeyError):
                pass
        raise
