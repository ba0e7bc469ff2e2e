"""Variable-base scalar multiplication, ECDH and ECDSA verification: the half
of uspdm.crypto.ec that attestation never runs.

Reached through uspdm.crypto.ec's attributes (ec.ecdh_iter, ec.verify, ...),
which load this module on demand (uspdm.demand leaf "crypto._ecvar"): on a
board it is in the heap only while KEY_EXCHANGE needs it (an ECDH drops it
when it ends) or while fixed-base operations run without a comb table
(ec.hold_tables).  Methods and side-channel notes: uspdm.crypto.ec.
"""
from uspdm.compat import const
from uspdm.crypto.ec import (_affine, _bits2int, _blinds, _check_d, _dbl, _fixed_iter, _inv,
                             _madd, _prep_scalar, run_iter, validate_public_key)

_W = const(5)  # variable-base window width (table of 2^(_W-1) odd multiples)
_SLICE_WINS = const(1)  # windows per generator step (P-384 on the M0: ~3 M instr, up to ~5x that in a full heap)


def _add(X1, Y1, Z1, X2, Y2, Z2, p):
    """Jacobian + Jacobian."""
    if not Z1:
        return X2, Y2, Z2
    if not Z2:
        return X1, Y1, Z1
    z1 = Z1 * Z1 % p
    z2 = Z2 * Z2 % p
    U1 = X1 * z2 % p
    H = (X2 * z1 - U1) % p
    S1 = Y1 * z2 % p * Z2 % p
    r = (Y2 * z1 % p * Z1 - S1) % p
    if not H:
        if r:
            return 1, 1, 0
        return _dbl(X1, Y1, Z1, p)
    HH = H * H % p
    HHH = H * HH % p
    V = U1 * HH % p
    X3 = (r * r - HHH - 2 * V) % p
    return X3, (r * (V - X3) - S1 * HHH) % p, Z1 * Z2 % p * H % p


def _window_iter(c, k, T, x, y, zr=1):
    """k*(x, y) for odd k < 2^T with signed fixed windows, Jacobian; the
    start point gets projective Z = zr (random when blinding)."""
    from uspdm.crypto import ec

    p = c.p
    # comb tables held off (a small heap: ec.hold_tables): 4-bit windows, 8 points
    # precomputed instead of 16 (about 2 KB less at the peak, ~3 % slower)
    W = 4 if ec._hold else _W
    # odd multiples 1P..(2^W - 1)P in Jacobian, then to affine with one inversion
    half = 1 << (W - 1)
    X2, Y2, Z2 = _dbl(x, y, 1, p)
    pts = [(x, y, 1)]
    for i in range(half - 1):
        X, Y, Z = pts[-1]
        pts.append(_add(X, Y, Z, X2, Y2, Z2, p))
        if i % 3 == 2:
            yield
    yield
    acc = [1] * half
    a = 1
    for i in range(half):
        acc[i] = a
        a = a * pts[i][2] % p
    ai = _inv(a, p)
    yield   # an inversion and the conversions below are slices of their own (a full heap makes each dear)
    tx = [0] * half
    ty = [0] * half
    for i in range(half - 1, -1, -1):
        X, Y, Z = pts[i]
        pts[i] = None   # (freed as the affine table fills)
        zi = ai * acc[i] % p
        ai = ai * Z % p
        z2 = zi * zi % p
        tx[i] = X * z2 % p
        ty[i] = Y * z2 % p * zi % p
        if i % 4 == 0:
            yield
    pts = acc = None
    nw = (T + W - 1) // W
    T = nw * W
    B = ((k + (1 << T) - 1) >> 1).to_bytes(T // 8 + 2, "little")
    mask = half - 1
    X = Y = 1
    Z = 0
    i = nw - 1
    while i >= 0:
        if Z:
            for _ in range(W):
                X, Y, Z = _dbl(X, Y, Z, p)
        q = i * W
        w = ((B[q >> 3] | (B[(q >> 3) + 1] << 8)) >> (q & 7)) & (2 * half - 1)
        top = w >> (W - 1)
        j = (w ^ ((top - 1) & mask)) & mask
        yy = ty[j]
        yy = (p - yy, yy)[top]
        if Z:
            X, Y, Z = _madd(X, Y, Z, tx[j], yy, p)
        else:
            z = zr % p or 1
            zz = z * z % p
            X, Y, Z = tx[j] * zz % p, yy * zz % p * z % p, z
        if i % _SLICE_WINS == 0:
            yield
        i -= 1
    return X, Y, Z


def _done():
    """An ECDH ended: this module leaves the heap (the next one loads it again;
    a generator still running keeps its own functions), unless the comb
    tables are held off (ec.hold_tables: fixed-base operations use it)."""
    from uspdm.crypto import ec

    if not ec._hold:
        from uspdm import demand

        demand.drop("crypto._ecvar", collect=False)


# ---------------------------------------------------------------- ECDH


def ecdh_iter(curve, d, peer_pub, ephemeral=False):
    """ephemeral=True: d is used for this one ECDH only (SPDM KEY_EXCHANGE's
    DHE key), so the scalar is not blinded: blinding defends against attacks
    that average many traces of the same scalar, which a key used once never
    gives; the operation sequence is still fixed and the coordinates and
    the final inversion still randomized.  It saves 64 of the 450 scalar
    bits: 12 of 90 windows (about 13% of a P-384 ECDH)."""
    _check_d(curve, d)
    x, y = validate_public_key(curve, peer_pub)
    mb, zr, ib = _blinds(curve, d.to_bytes(curve.size, "big") + peer_pub)
    k, T = _prep_scalar(curve, d, None if ephemeral else mb)
    X, Y, Z = yield from _window_iter(curve, k, T, x, y, zr)
    if not Z:
        raise ValueError("shared secret is the point at infinity")
    yield
    x, y = _affine(curve, X, Y, Z, ib)
    _done()
    return x.to_bytes(curve.size, "big")


def ecdh(curve, d, peer_pub, ephemeral=False):
    return run_iter(ecdh_iter(curve, d, peer_pub, ephemeral))


# ---------------------------------------------------------------- ECDSA verification


def verify_iter(curve, pub, digest, sig):
    """True if sig (r||s) is valid for digest under pub; False on any bad input."""
    try:
        sz = curve.size
        if len(sig) != 2 * sz:
            return False
        x, y = validate_public_key(curve, pub)
        n = curve.n
        r = int.from_bytes(sig[:sz], "big")
        s = int.from_bytes(sig[sz:], "big")
        if not (0 < r < n and 0 < s < n):
            return False
        e = _bits2int(curve, digest)
    except (ValueError, TypeError):
        return False
    w = _inv(s, n)
    u1 = e * w % n
    u2 = r * w % n
    p = curve.p
    if u1:
        k, T = _prep_scalar(curve, u1)
        X1, Y1, Z1 = yield from _fixed_iter(curve, k, T, 1)
    else:
        X1 = Y1 = 1
        Z1 = 0
    k, T = _prep_scalar(curve, u2)
    X2, Y2, Z2 = yield from _window_iter(curve, k, T, x, y)
    X, Y, Z = _add(X1, Y1, Z1, X2, Y2, Z2, p)
    if not Z:
        return False
    zz = Z * Z % p
    if r * zz % p == X:
        return True
    return r + n < p and (r + n) * zz % p == X


def verify(curve, pub, digest, sig):
    try:
        return run_iter(verify_iter(curve, pub, digest, sig))
    except Exception:
        return False
