"""ECDSA and ECDH on NIST P-384 (secp384r1) and P-256 (secp256r1), pure Python.

Runs on MicroPython and CPython.  Keys are ints (private) and X||Y bytes
(public, 2*size big-endian, no 04 prefix); signatures are r||s bytes.

    d = generate_private_key(P384, drbg.generate)
    pub = public_key(P384, d)
    sig = sign(P384, d, digest)            # RFC 6979 deterministic nonce
    ok = verify(P384, pub, digest, sig)
    z = ecdh(P384, d, peer_pub)            # X coordinate of d*peer

Every operation also exists as a generator (sign_iter, ecdh_iter,
public_key_iter, verify_iter) doing a bounded slice of work per next() and
returning the result through StopIteration.value, so a single-threaded
device can keep serving while it computes; sign() and friends only drive
them with run_iter().

What a board keeps in its heap (a stock deploy copies code into it): this
module has what attestation runs (keys, fixed-base multiplication, signing).
The rest is loaded when it is asked for, through this module's attributes
as before (module __getattr__):
- ecdh, verify/verify_iter and the variable-base multiplication (ecdh_iter
  here loads it in a slice of its own): _ecvar, a demand module (uspdm.demand, leaf
  "crypto._ecvar") loaded by KEY_EXCHANGE (or by a fixed-base operation
  with no comb table, below) and dropped again when an ECDH ends;
- table generation and key encoding (make_table, table_module,
  table_chunks, private_key_from_bytes/_to_bytes, choose_table,
  table_bytes): _ecgen, used by provisioning, the host tools and tests,
  never on a board.

Comb tables under memory pressure (uspdm.demand's eviction):
    drop_tables()        # forget the comb tables in the heap now (6.4 KB for P-384)
    hold_tables(True)    # ... and do not load them again until hold_tables(False)
A fixed-base operation (signing, key generation) without its table (held
off, or not loadable now: MemoryError) computes k*G with the variable-base
method instead: the same results, about 4x slower (P-384 signature on the
emulated M0: ~240 M instead of ~61 M instructions), with _ecvar (about
2 KB) loaded in place of the 6.4 KB table.

How it computes:
- Jacobian coordinates, a = -3 doubling (3M+5S), mixed Jacobian+affine
  addition (8M+3S).  Field elements are plain ints reduced with % p.
- Fixed base (keygen, signing, u1*G of verify): a signed-digit comb (h
  teeth, v sub-combs, b columns) over a precomputed table of affine points
  stored as bytes constants in ec_p384_tbl / ec_p256_tbl (64 points:
  6 KB for P-384, 4 KB for P-256, in chunks of 16 points; in flash when
  frozen), loaded on first use and sliced through memoryviews.  Where
  module constants stay in flash (ROMFS, frozen; Curve.table() checks)
  P-384 uses ec_p384_big instead (8 teeth, 2 x 128 points, 24 KB: 28
  doublings + 57 additions instead of 37 + 75, no heap; it lives in the
  repository's lib_rom/, which only a ROMFS deploy carries).  Every column does one doubling and v
  additions: no digit is ever zero, so the sequence of point operations
  does not depend on the scalar.
- Variable base (ECDH, u2*Q of verify): the same signed-digit recoding with
  fixed 5-bit windows (digits odd, +-1..+-31, never zero) over a table of
  16 odd multiples converted to affine with one inversion.
- Inversion: extended Euclid with // (0.27 ms for P-384 on wasm
  MicroPython against 2.5-3 ms for pow(x, p-2, p); variable time, see
  below); pow(x, -1, m) where the interpreter has it (CPython).
- verify compares r*Z^2 with X instead of inverting Z.

RFC 6979: the HMAC hash is the one whose output length equals the digest
(sha256/sha384/sha512, as in the RFC where it is the message hash), else the
curve's hashname; extra_entropy is the RFC 6979 section 3.6 k' (hedged).

Figures (bench_ecc, wasm MicroPython on the dev host, 1 ms there is about
15-30 ms on an RP2040): P-384 keygen 4 ms, sign 14 ms (10 ms of it the
RFC 6979 HMAC-SHA384 nonce in pure-Python SHA-384), verify 18 ms, ECDH
16 ms; P-256 2 / 2.4 / 7.6 / 7 ms.  Heap kept between slices under 10 KB;
the module keeps about 11 KB (as .mpy), a table 6 KB (P-384) or 4 KB.

Side channels: what this code does and does not do.
- Scalar level (done): the nonce k (sign) and the private key (keygen,
  ECDH; not an ephemeral ECDH key used once, see ecdh_iter) are blinded as k + m*n with a fresh 64-bit m and made odd by adding
  n when even (selected by index, no branch).  The recoded scalar always
  has the same number of digits for a curve, each digit nonzero, so the
  number and order of doublings and additions is the same for every scalar:
  no skipped zero digits and no early exit on short scalars (what
  Minerva-style nonce-length timing attacks use).  The first point of each
  scalar multiplication is put in random projective coordinates.
  Inversions of secret values (k mod n, and Z mod p of the result point)
  are blinded as x^-1 = b * (x*b)^-1 with a random b, and d enters s as
  d + m'*n.  The digit's table index and sign are computed arithmetically;
  the sign selects y or p - y by indexing a 2-tuple.
- Blinding randomness comes from the function installed with
  set_rng(randbytes) (e.g. the board's DRBG); without one it is derived
  from the secret inputs with SHA-256 (so it differs for every nonce and
  every ECDH peer key, but is not fresh for a repeated identical input).
  Blinding never changes results (tested).
- Not done, and not possible from Python: big-int arithmetic on MicroPython
  and CPython is not constant time (its cost and its allocations depend on
  the operands: their lengths, leading zero digits, the % p division, the
  Euclid inverse); table entries are read at a secret-dependent offset
  (memory/cache access pattern, the XIP flash cache when the table is
  frozen on an RP2040); the RFC 6979 HMAC runs pure-Python SHA-2 on the key
  with value-dependent int sizes; the interpreter's allocator and GC add
  timing that depends on values; the exceptional cases of the addition
  formulas are a branch (reached only with negligible probability).
  So the operation sequence does not depend on secrets and the values are
  randomized, which defeats simple timing/SPA on the sequence and makes
  averaging harder, but the code is NOT constant time: do not rely on it
  where an attacker can take many precise timing, power or EM
  measurements of the device.
- Public-input paths (verify, public key validation) are not protected.
"""
import hashlib

from uspdm.compat import const

_BLIND_BITS = const(64)
_SLICE_COLS = const(2)  # comb columns per generator step (P-384 on the M0: ~3 M instr, up to ~5x that in a full heap)
_TBL_SHIFT = const(4)
_TBL_CHUNK = const(16)  # comb table points per stored chunk (1 << _TBL_SHIFT)


# A bytes constant of this module: where its data lives says where the table
# modules' constants would (uspdm.crypto modules are deployed alike).
_PROBE = b"uspdm.crypto.ec: constants in flash?"


def _consts_in_flash():
    """True when this module's constants stay in flash (ROMFS deploy, frozen
    modules), so a larger table module costs no heap; True on CPython (no
    heap budget); False when modules are copied into the heap on import (a
    stock `mpremote cp` deploy, the wasm build)."""
    try:
        import gc

        gc.mem_alloc
    except (ImportError, AttributeError):
        return True
    try:
        import uctypes
    except ImportError:
        return False
    return abs(uctypes.addressof(_PROBE) - uctypes.addressof(bytearray(4))) > 0x100000


class Curve:
    def __init__(self, name, size, p, b, n, gx, gy, hashname, comb, big=None):
        self.name = name
        self.size = size
        self.p = p
        self.b = b
        self.n = n
        self.gx = gx
        self.gy = gy
        self.hashname = hashname
        self.nbits = size * 8  # both orders have exactly 8*size bits
        self.comb = comb  # (h teeth, v sub-combs, b columns) of the table in use
        self.small = comb  # ec_<name>_tbl: resident in the heap with a stock deploy
        self.big = big     # ec_<name>_big: a larger table, used where it stays in flash
        self.use_big = None  # None: decided at the first table() (_consts_in_flash); tests force it (choose_table)
        self._tbl = None

    def table(self):
        """The fixed-base comb table: a tuple of memoryviews over chunks of
        _TBL_CHUNK points each (separate bytes objects of 1-1.5 KB, so that
        loading them into a fragmented heap needs no 4-6 KB free block).
        Sets self.comb to the parameters of the table it loaded: the larger
        one (ec_<name>_big) where module constants stay in flash, else
        ec_<name>_tbl (else computed)."""
        t = self._tbl
        if t is None:
            big = self.use_big
            if big is None:
                big = self.big is not None and _consts_in_flash()
            t = None
            if big and self.big is not None:
                try:
                    t = __import__("uspdm.crypto.ec_%s_big" % self.name, None, None, ["T"]).T
                    self.comb = self.big
                except ImportError:
                    t = None
            if t is None:
                self.comb = self.small
                try:
                    t = _import_tbl(self)
                except ImportError:
                    from uspdm.crypto import _ecgen

                    t = _ecgen.table_chunks(self, _ecgen.make_table(self))
            t = self._tbl = tuple(memoryview(x) for x in t)
        return t


def _import_tbl(c):
    """ec_<name>_tbl.T, the other curves' tables let go first: one comb table in
    the heap at a time (a small board keeps the preferred curve's loaded; a
    signature with the other curve swaps them, about 1 M instructions on the
    emulated M0, instead of holding both)."""
    drop_tables(c)
    return __import__("uspdm.crypto.ec_%s_tbl" % c.name, None, None, ["T"]).T


_hold = False


def drop_tables(keep=None):
    """Forget the comb tables held in the heap (P-384's is 6.4 KB; not the
    larger table that stays in flash), but keep's; returns how many.  Signing
    and key generation stay correct: the next one loads its table again (or,
    held off or short of memory, computes without it)."""
    import sys

    n = 0
    for c in CURVES:
        if c is not keep and c._tbl is not None and c.comb == c.small:
            c._tbl = None
            sys.modules.pop("uspdm.crypto.ec_%s_tbl" % c.name, None)
            try:
                delattr(sys.modules["uspdm.crypto"], "ec_%s_tbl" % c.name)
            except (AttributeError, KeyError):
                pass
            n += 1
    return n


def hold_tables(on):
    """on=True: drop the comb tables and load none until hold_tables(False);
    fixed-base operations meanwhile compute k*G without a table (slower)."""
    global _hold
    _hold = bool(on)
    if _hold:
        drop_tables()


P384 = Curve(
    "p384", 48,
    0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFFFF0000000000000000FFFFFFFF,
    0xB3312FA7E23EE7E4988E056BE3F82D19181D9C6EFE8141120314088F5013875AC656398D8A2ED19D2A85C8EDD3EC2AEF,
    0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973,
    0xAA87CA22BE8B05378EB1C71EF320AD746E1D3B628BA79B9859F741E082542A385502F25DBF55296C3A545E3872760AB7,
    0x3617DE4A96262C6F5D9E98BF9292DC29F8F41DBD289A147CE9DA3113B5F0B8C00A60B1CE1D7E819D7A431D7C90EA0E5F,
    "sha384", (6, 2, 38), (8, 2, 29),
)

P256 = Curve(
    "p256", 32,
    0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF,
    0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
    0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
    "sha256", (6, 2, 27),
)

CURVES = (P384, P256)


def _var():
    """The variable-base half (_ecvar), a demand module."""
    from uspdm import demand

    return demand.need("crypto._ecvar")


def __getattr__(name):
    # the parts of this module that live in _ecvar (board: KEY_EXCHANGE) or
    # _ecgen (host tools, tests, provisioning): see the module docstring.  A
    # name neither has leaves neither loaded (getattr(ec, name, None) probes)
    if name[:2] != "__":
        import sys

        from uspdm import demand

        had = demand.loaded("crypto._ecvar")
        try:
            return getattr(_var(), name)
        except AttributeError:
            if not had:
                demand.drop("crypto._ecvar", collect=False)
        had = "uspdm.crypto._ecgen" in sys.modules
        from uspdm.crypto import _ecgen

        try:
            return getattr(_ecgen, name)
        except AttributeError:
            if not had:
                demand.forget("uspdm.crypto._ecgen")
    raise AttributeError(name)


# ---------------------------------------------------------------- randomness

_rng = None


def set_rng(randbytes):
    """Install randbytes(n) -> bytes (e.g. the DRBG) for blinding; None = derive."""
    global _rng
    _rng = randbytes


def _blind_bytes(seed, nbytes):
    if _rng is not None:
        return _rng(nbytes)
    out = b""
    c = 0
    while len(out) < nbytes:
        h = hashlib.sha256(b"uspdm-ec-blind")
        h.update(bytes((c,)))
        h.update(seed)
        out += h.digest()
        c += 1
    return out[:nbytes]


# ---------------------------------------------------------------- helpers


def run_iter(gen):
    """Drive a *_iter generator to completion and return its result."""
    try:
        while True:
            next(gen)
    except StopIteration as e:
        return e.value


try:  # CPython 3.8+: modular inverse in C; MicroPython has none (returns 0)
    _POW_INV = pow(3, -1, 7) == 5
except (ValueError, TypeError):
    _POW_INV = False


def _inv(a, m):
    """a^-1 mod m (a not 0 mod m): pow(a, -1, m) on CPython, else extended
    Euclid (on MicroPython about 10x faster than pow(a, m-2, m))."""
    a %= m
    if _POW_INV:
        return pow(a, -1, m)
    x0 = 1
    x1 = 0
    r0 = a
    r1 = m
    while r1:
        q = r0 // r1
        r0, r1 = r1, r0 - q * r1
        x0, x1 = x1, x0 - q * x1
    if r0 != 1:
        raise ValueError("not invertible")
    return x0 % m


def _binv(a, m, blind):
    """Blinded inverse: b * (a*b)^-1."""
    b = blind % m or 1
    return _inv(a * b % m, m) * b % m


def _dbl(X, Y, Z, p):
    d = Z * Z % p
    g = Y * Y % p
    bt = X * g % p
    a = 3 * (X - d) * (X + d) % p
    X3 = (a * a - 8 * bt) % p
    return X3, (a * (4 * bt - X3) - 8 * g * g) % p, 2 * Y * Z % p


def _madd(X1, Y1, Z1, x2, y2, p):
    """Jacobian + affine."""
    if not Z1:
        return x2, y2, 1
    zz = Z1 * Z1 % p
    H = (x2 * zz - X1) % p
    r = (y2 * zz % p * Z1 - Y1) % p
    if not H:
        if r:
            return 1, 1, 0
        return _dbl(x2, y2, 1, p)
    HH = H * H % p
    HHH = H * HH % p
    V = X1 * HH % p
    X3 = (r * r - HHH - 2 * V) % p
    return X3, (r * (V - X3) - Y1 * HHH) % p, Z1 * H % p


def _affine(c, X, Y, Z, blind=1):
    p = c.p
    zi = _binv(Z, p, blind)
    z2 = zi * zi % p
    return X * z2 % p, Y * z2 % p * zi % p


def _prep_scalar(c, k, mb=None):
    """k (0..n-1) -> (odd k + m*n, bit budget T); m = mb (_BLIND_BITS random
    bytes) or 0.  The parity fix adds n, selected by index, not by a branch."""
    n = c.n
    extra = 2
    if mb is not None:
        k = k + int.from_bytes(mb, "big") * n
        extra += _BLIND_BITS
    k = (k + n, k)[k & 1]
    return k, c.nbits + extra


# ---------------------------------------------------------------- fixed base


def _comb_iter(c, k, zr, tbl):
    """k*G for odd k < 2^(h*v*b), Jacobian, over c's comb table tbl (which
    set c.comb); yields every few columns."""
    h, v, b = c.comb
    vb = v * b
    T = h * vb
    B = ((k + (1 << T) - 1) >> 1).to_bytes(T // 8 + 1, "little")
    p = c.p
    sz = c.size
    ent = 2 * sz
    mask = (1 << (h - 1)) - 1
    X = Y = 1
    Z = 0
    col = b - 1
    while col >= 0:
        if Z:
            X, Y, Z = _dbl(X, Y, Z, p)
        for t in range(v):
            q = t * b + col + (h - 1) * vb
            w = 0
            while q >= 0:
                w = (w << 1) | ((B[q >> 3] >> (q & 7)) & 1)
                q -= vb
            top = w >> (h - 1)
            e = (t << (h - 1)) | ((w ^ ((top - 1) & mask)) & mask)
            ch = tbl[e >> _TBL_SHIFT]
            o = (e & (_TBL_CHUNK - 1)) * ent
            x = int.from_bytes(ch[o:o + sz], "big")
            y = int.from_bytes(ch[o + sz:o + ent], "big")
            y = (p - y, y)[top]
            if Z:
                X, Y, Z = _madd(X, Y, Z, x, y, p)
            else:
                # start (or restart) in random projective coordinates
                z = zr % p or 1
                zz = z * z % p
                X, Y, Z = x * zz % p, y * zz % p * z % p, z
        if col % _SLICE_COLS == 0:
            yield
        col -= 1
    return X, Y, Z


def _fixed_iter(c, k, T, zr):
    """k*G (k odd, < 2^T) over c's comb table, or without it: held off
    (hold_tables), or it cannot be loaded now (MemoryError)."""
    tbl = c._tbl
    if tbl is None and not _hold:
        try:
            tbl = c.table()
        except MemoryError:
            pass
    if tbl is None:
        return (yield from _var()._window_iter(c, k, T, c.gx, c.gy, zr))
    return (yield from _comb_iter(c, k, zr, tbl))


# ---------------------------------------------------------------- keys


def _check_d(c, d):
    if not isinstance(d, int) or not 1 <= d < c.n:
        raise ValueError("private key out of range")


def generate_private_key(curve, randbytes):
    """Uniform d in [1, n-1] by rejection sampling of randbytes(size)."""
    for _ in range(64):
        d = int.from_bytes(randbytes(curve.size), "big")
        if 1 <= d < curve.n:
            return d
    raise ValueError("random source keeps failing")


def validate_public_key(curve, pub):
    """X||Y -> (x, y) if it is a valid point (cofactor 1), else ValueError.
    (Resident: KEY_EXCHANGE's handler checks the peer's key before the ECDH
    code is loaded.)"""
    sz = curve.size
    try:
        ln = len(pub)
    except TypeError:
        raise ValueError("public key must be bytes")
    if ln != 2 * sz:
        raise ValueError("public key must be %d bytes (X||Y), got %d" % (2 * sz, ln))
    x = int.from_bytes(pub[:sz], "big")
    y = int.from_bytes(pub[sz:], "big")
    p = curve.p
    if x == 0 and y == 0:
        raise ValueError("public key is the point at infinity")
    if x >= p or y >= p:
        raise ValueError("public key coordinate out of range (>= p)")
    if (y * y - x * x * x + 3 * x - curve.b) % p:
        raise ValueError("public key is not on the curve")
    return x, y


def ecdh_iter(curve, d, peer_pub, ephemeral=False):
    """_ecvar.ecdh_iter (see there), with the loading of _ecvar in a slice of
    its own (about 6 M instructions on the emulated M0, stock load)."""
    yield
    m = _var()
    yield
    return (yield from m.ecdh_iter(curve, d, peer_pub, ephemeral))


def _enc(c, x, y):
    return x.to_bytes(c.size, "big") + y.to_bytes(c.size, "big")


def _blinds(c, seed):
    """(scalar blind bytes, random Z for the start point, inversion blind)."""
    sz = c.size
    rb = _blind_bytes(seed, _BLIND_BITS // 8 + 2 * sz)
    o = _BLIND_BITS // 8
    return rb[:o], int.from_bytes(rb[o:o + sz], "big"), int.from_bytes(rb[o + sz:], "big")


def _kmul_g_iter(c, k, seed):
    """Blinded fixed-base k*G -> affine (x, y)."""
    mb, zr, ib = _blinds(c, seed)
    kb, T = _prep_scalar(c, k, mb)
    X, Y, Z = yield from _fixed_iter(c, kb, T, zr)
    if not Z:
        raise ValueError("point at infinity")
    yield   # the inversion of Z in a slice of its own
    return _affine(c, X, Y, Z, ib)


def public_key_iter(curve, d):
    _check_d(curve, d)
    x, y = yield from _kmul_g_iter(curve, d, d.to_bytes(curve.size, "big"))
    return _enc(curve, x, y)


def public_key(curve, d):
    return run_iter(public_key_iter(curve, d))


# ---------------------------------------------------------------- ECDSA


def _bits2int(c, h):
    e = int.from_bytes(h, "big")
    hb = 8 * len(h)
    if hb > c.nbits:
        e >>= hb - c.nbits
    return e


def _rfc6979_iter(c, d, digest, extra):
    """Candidate nonces k per RFC 6979 section 3.2 (3.6 with extra data).

    The HMAC hash is the one whose output length equals len(digest)
    (sha256/384/512, as in the RFC, where it is the message hash), else the
    curve's hash (whose length is the curve's size).
    Yields None between HMAC steps and ints (candidates in [1, n-1])."""
    from uspdm.crypto import hmac

    hl = len(digest)
    if hl != 32 and hl != 48 and hl != 64:
        hl = c.size
    name = "sha%d" % (8 * hl)
    n = c.n
    sz = c.size
    x = d.to_bytes(sz, "big")
    h1 = (_bits2int(c, digest) % n).to_bytes(sz, "big")
    tail = x + h1 + (extra or b"")
    V = b"\x01" * hl
    hk = hmac.Hmac(name, bytes(hl))
    for sep in (b"\x00", b"\x01"):
        K = _hmac_with(hk, V + sep + tail)
        yield None
        hk = hmac.Hmac(name, K)
        V = _hmac_with(hk, V)
        yield None
    while True:
        t = b""
        while len(t) < sz:
            V = _hmac_with(hk, V)
            t += V
        k = _bits2int(c, t)
        if 1 <= k < n:
            yield k
        K = _hmac_with(hk, V + b"\x00")
        hk = hmac.Hmac(name, K)
        V = _hmac_with(hk, V)
        yield None


def _hmac_with(hk, msg):
    m = hk.copy()
    m.update(msg)
    return m.digest()


def sign_iter(curve, d, digest, extra_entropy=None):
    """ECDSA signature r||s over a precomputed digest (RFC 6979 nonce)."""
    _check_d(curve, d)
    n = curve.n
    sz = curve.size
    e = _bits2int(curve, digest)
    attempt = 0
    while True:
        # candidate number `attempt`; the HMAC state (several KB with pure
        # SHA-2) is dropped before the scalar multiplication, and rebuilt
        # in the (negligibly likely) case that r or s is 0
        gen = _rfc6979_iter(curve, d, digest, extra_entropy)
        seen = 0
        while True:
            k = next(gen)
            if k is None:
                yield
            elif seen == attempt:
                break
            else:
                seen += 1
        gen = None
        attempt += 1
        kb = k.to_bytes(sz, "big")
        x, y = yield from _kmul_g_iter(curve, k, kb + digest)
        r = x % n
        if not r:
            continue
        yield   # the inversion of k in a slice of its own
        bl = _blind_bytes(kb + b"s" + digest, sz + _BLIND_BITS // 8)
        # s = k^-1 (e + r*d): blinded inverse, and d enters as d + m*n
        dm = d + int.from_bytes(bl[sz:], "big") * n
        s = _binv(k, n, int.from_bytes(bl[:sz], "big")) * ((e + r * dm) % n) % n
        if s:
            return r.to_bytes(sz, "big") + s.to_bytes(sz, "big")


def sign(curve, d, digest, extra_entropy=None):
    return run_iter(sign_iter(curve, d, digest, extra_entropy))
