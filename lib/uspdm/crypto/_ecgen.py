"""Comb-table generation and private-key encoding for uspdm.crypto.ec: what the
host tools, tests and provisioning use and a board never runs (reached through
ec's attributes: ec.make_table, ec.table_module, ...; a board imports it only
if a stored table module is missing).
"""
from uspdm.compat import const
from uspdm.crypto.ec import _affine, _check_d, _enc, _prep_scalar, run_iter

_TBL_CHUNK = const(16)  # points per stored chunk: ec's _TBL_CHUNK


def choose_table(c, big):
    """Tests and benchmarks: curve c uses the larger comb table (True), the small
    one (False) or decides as on the board (None), from the next operation on."""
    c.use_big = big
    c._tbl = None
    c.comb = c.small


def table_bytes(c):
    """c's whole comb table as one bytes object (tests)."""
    return b"".join(bytes(x) for x in c.table())


def private_key_from_bytes(curve, b):
    if len(b) != curve.size:
        raise ValueError("private key must be %d bytes" % curve.size)
    d = int.from_bytes(b, "big")
    _check_d(curve, d)
    return d


def private_key_to_bytes(curve, d):
    _check_d(curve, d)
    return d.to_bytes(curve.size, "big")


def table_chunks(c, tbl):
    """The comb table bytes cut into the chunks ec_<name>_tbl.T stores."""
    n = _TBL_CHUNK * 2 * c.size
    return tuple(tbl[i:i + n] for i in range(0, len(tbl), n))


def table_module(c, big=False):
    """Source of lib/uspdm/crypto/ec_<name>_tbl.py (big: lib_rom/uspdm/crypto/
    ec_<name>_big.py, the larger table used where module constants stay in
    flash; it is deployed only with the code in ROMFS)."""
    comb = c.big if big else c.small
    h, v, b = comb
    chunks = table_chunks(c, make_table(c, comb))
    out = ['"""Fixed-base comb table for %s (generated, do not edit).' % c.name.upper(), "",
           "%d sub-combs x %d affine points X||Y (%d bytes each), teeth=%d, columns=%d, in %d chunks of"
           % (v, 1 << (h - 1), 2 * c.size, h, b, len(chunks)),
           "%d points; layout and meaning: uspdm.crypto.ec._comb_iter / make_table.  Regenerate with"
           % _TBL_CHUNK,
           "`python -c \"from uspdm.crypto import ec; print(ec.table_module(ec.%s%s), end='')\" > %s`"
           % (c.name.upper(), ", big=True" if big else "",
              ("../lib_rom/uspdm/crypto/ec_%s_big.py" % c.name) if big else "THIS_FILE"),
           "(in lib/); checked against the `cryptography` package by host_tests/test_ec_xcheck.py.",
           '"""', "", "T = ("]
    for ch in chunks:
        out.append("    (")
        for i in range(0, len(ch), 24):
            out.append("        %r" % (ch[i:i + 24],))
        out.append("    ),")
    out.append(")")
    return "\n".join(out) + "\n"


def make_table(c, comb=None):
    """The comb table of c as bytes (what ec_<name>_tbl.T stores, in chunks),
    for comb (default: the small table's parameters)."""
    from uspdm.crypto._ecvar import _window_iter

    h, v, b = comb or c.small
    vb = v * b
    n = c.n
    half = 1 << (h - 1)
    out = []
    for t in range(v):
        for idx in range(half):
            s = 1 << ((h - 1) * vb)
            for j in range(h - 1):
                if (idx >> j) & 1:
                    s += 1 << (j * vb)
                else:
                    s -= 1 << (j * vb)
            s = (s << (t * b)) % n
            k, T = _prep_scalar(c, s)
            X, Y, Z = run_iter(_window_iter(c, k, T, c.gx, c.gy))
            x, y = _affine(c, X, Y, Z)
            out.append(_enc(c, x, y))
    return b"".join(out)
