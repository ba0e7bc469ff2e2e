"""The EC profile `make bench` prints for issue 10 (bench_chip.op_counts): the point
operations it counts are the ones ec.py really performs (counted here by wrapping
ec's formulas on CPython), so the floor it derives from the M0's measured unit costs
follows the code, not a hard-coded text."""
import os

import pytest

from uspdm.crypto import ec
from uspdm_tools import bench_chip


def _counting(monkeypatch):
    seen = {"dbl": 0, "madd": 0, "jadd": 0, "inv": 0}
    from uspdm.crypto import _ecvar   # the variable-base half (ECDH) binds the formulas too

    for name, key in (("_dbl", "dbl"), ("_madd", "madd"), ("_add", "jadd"), ("_inv", "inv")):
        real = getattr(_ecvar, name)

        def wrap(*a, _real=real, _key=key):
            seen[_key] += 1
            return _real(*a)

        for m in (ec, _ecvar):
            if name in m.__dict__:
                monkeypatch.setattr(m, name, wrap)
    return seen


@pytest.mark.parametrize("curve", ["p384", "p256"])
def test_profile_counts_match_ec(monkeypatch, curve):
    c = getattr(ec, curve.upper())
    c.table()   # sets c.comb to the table in use
    h, v, b = c.comb
    f = {"comb_h": h, "comb_v": v, "comb_b": b, "nbits": c.nbits}
    want = bench_chip.op_counts(f)
    d = ec.generate_private_key(c, os.urandom)
    peer = ec.public_key(c, ec.generate_private_key(c, os.urandom))
    c.table()
    seen = _counting(monkeypatch)
    ec.sign(c, d, bytes(c.size))
    # the comb's first column loads its point (no doubling, no addition); the inversions:
    # Z of the result (affine x) and k mod n
    assert seen == want["sign"], (seen, want["sign"])
    seen = _counting(monkeypatch)
    ec.ecdh(c, d, peer, True)
    assert seen == want["ecdh"], (seen, want["ecdh"])


def test_profile_lines_from_figures():
    f = {}
    for cn in ("p384", "p256"):
        c = getattr(ec, cn.upper())
        h, v, b = c.comb
        f.update({cn + "_comb_h": h, cn + "_comb_v": v, cn + "_comb_b": b, cn + "_nbits": c.nbits,
                  cn + "_mul": 16.0, cn + "_mod": 34.0, cn + "_inv": 2300.0, cn + "_dbl_bytes": 2752,
                  cn + "_madd_bytes": 3280, cn + "_jadd_bytes": 4480, cn + "_roomy_free": 150000,
                  cn + "_full_free": 35000, cn + "_roomy_gc": 700, cn + "_full_gc": 1800,
                  cn + "_roomy_sign": 72000, cn + "_full_sign": 88000, cn + "_roomy_ecdh": 240000,
                  cn + "_full_ecdh": 300000, cn + "_viper_mul": 48.0})
    lines, floor = bench_chip.profile_lines(f, "ecdh", 120000)
    # 386 doublings x (8, 7) + 77 madd x (11, 10) + 15 jadd x (16, 14), products x 16 + reductions x 34
    assert floor == pytest.approx((386 * 8 + 77 * 11 + 15 * 16) * 16 + (386 * 7 + 77 * 10 + 15 * 14) * 34 + 2 * 2300)
    assert any("x1.6 over" in x for x in lines) and any("viper" in x for x in lines)
    lines, floor = bench_chip.profile_lines(f, "sign", 60000)
    assert floor < 60000 and any("met only if" in x for x in lines)
