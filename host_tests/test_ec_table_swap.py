"""One fixed-base comb table in the heap at a time (uspdm.crypto.ec._import_tbl):
loading a curve's table lets the other curve's go, and signatures with either curve,
alternating, still verify (checked with the `cryptography` package).  The API
eviction uses under memory pressure (ec.drop_tables, ec.hold_tables) and the
fallback when a table cannot be loaded: signatures and keys stay correct without
the table (the variable-base method), and equal to the ones made with it."""
import hashlib
import os
import sys

import pytest

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec as cec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from uspdm.crypto import ec


def _verify(curve, pub, digest, sig):
    n = curve.size
    ccurve, h = (cec.SECP384R1(), hashes.SHA384()) if curve is ec.P384 else (cec.SECP256R1(), hashes.SHA256())
    key = cec.EllipticCurvePublicNumbers(int.from_bytes(pub[:n], "big"), int.from_bytes(pub[n:], "big"),
                                         ccurve).public_key()
    der = encode_dss_signature(int.from_bytes(sig[:n], "big"), int.from_bytes(sig[n:], "big"))
    key.verify(der, digest, cec.ECDSA(Prehashed(h)))   # raises InvalidSignature


def test_one_comb_table_at_a_time():
    for c in ec.CURVES:
        ec.choose_table(c, False)   # the small tables, as a stock deploy loads them
    try:
        keys = {}
        for c in (ec.P384, ec.P256):
            d = int.from_bytes(os.urandom(c.size), "big") % (c.n - 1) + 1
            keys[c.name] = (d, ec.public_key(c, d))
        for c, other in ((ec.P384, ec.P256), (ec.P256, ec.P384), (ec.P384, ec.P256)):
            d, pub = keys[c.name]
            digest = (hashlib.sha384 if c is ec.P384 else hashlib.sha256)(os.urandom(16)).digest()
            sig = ec.sign(c, d, digest)
            assert c._tbl is not None and other._tbl is None
            _verify(c, pub, digest, sig)
    finally:
        for c in ec.CURVES:
            ec.choose_table(c, None)


@pytest.fixture
def small_tables():
    for c in ec.CURVES:
        ec.choose_table(c, False)   # the small tables, as a stock deploy loads them
    yield
    ec.hold_tables(False)
    for c in ec.CURVES:
        ec.choose_table(c, None)


def _key(c):
    d = int.from_bytes(os.urandom(c.size), "big") % (c.n - 1) + 1
    digest = (hashlib.sha384 if c is ec.P384 else hashlib.sha256)(os.urandom(16)).digest()
    return d, digest


def test_drop_tables(small_tables):
    ec.P384.table()
    assert "uspdm.crypto.ec_p384_tbl" in sys.modules
    assert ec.drop_tables() == 1
    assert ec.P384._tbl is None and "uspdm.crypto.ec_p384_tbl" not in sys.modules
    assert ec.drop_tables() == 0
    d, digest = _key(ec.P384)
    sig = ec.sign(ec.P384, d, digest)   # loads it again
    assert ec.P384._tbl is not None
    _verify(ec.P384, ec.public_key(ec.P384, d), digest, sig)


@pytest.mark.parametrize("c", [ec.P384, ec.P256], ids=["p384", "p256"])
def test_hold_tables_signs_without(c, small_tables):
    d, digest = _key(c)
    pub = ec.public_key(c, d)
    sig = ec.sign(c, d, digest)                  # RFC 6979: deterministic
    hedged = ec.sign(c, d, digest, b"extra")
    ec.hold_tables(True)
    assert all(x._tbl is None for x in ec.CURVES)
    assert ec.public_key(c, d) == pub
    assert ec.sign(c, d, digest) == sig
    assert ec.sign(c, d, digest, b"extra") == hedged
    sig2 = ec.run_iter(ec.sign_iter(c, d, digest, os.urandom(32)))
    _verify(c, pub, digest, sig2)
    assert ec.verify(c, pub, digest, sig2)
    assert c._tbl is None                        # held: never loaded meanwhile
    ec.hold_tables(False)
    assert ec.sign(c, d, digest) == sig and c._tbl is not None


def test_table_that_does_not_fit(small_tables, monkeypatch):
    """MemoryError while loading the table (a fragmented heap): the operation runs
    without it, and the next one tries again."""
    c = ec.P384
    d, digest = _key(c)
    sig = ec.sign(c, d, digest)
    ec.drop_tables()
    tries = []

    def short(curve):
        tries.append(curve.name)
        raise MemoryError("memory allocation failed, allocating 1536 bytes")

    monkeypatch.setattr(ec, "_import_tbl", short)
    assert ec.sign(c, d, digest) == sig
    assert ec.public_key(c, 1) == c.gx.to_bytes(48, "big") + c.gy.to_bytes(48, "big")
    assert c._tbl is None and tries == ["p384", "p384"]
    monkeypatch.undo()
    assert ec.sign(c, d, digest) == sig and c._tbl is not None


def test_probing_a_missing_name_loads_nothing():
    """getattr(ec, name, None) for a name ec has nowhere (a feature probe, as
    session_gate does for hold_tables) leaves neither on-demand half loaded."""
    from uspdm import demand

    demand.drop("crypto._ecvar", collect=False)
    sys.modules.pop("uspdm.crypto._ecgen", None)
    assert getattr(ec, "no_such_function", None) is None
    assert not demand.loaded("crypto._ecvar") and "uspdm.crypto._ecgen" not in sys.modules
    assert getattr(ec, "hold_tables", None) is ec.hold_tables
    assert ec.verify is not None and demand.loaded("crypto._ecvar")   # a real name loads its half
