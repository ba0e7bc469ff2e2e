"""One fixed-base comb table in the heap at a time (uspdm.crypto.ec._import_tbl):
loading a curve's table lets the other curve's go, and signatures with either curve,
alternating, still verify (checked with the `cryptography` package)."""
import hashlib
import os

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
        c.choose_table(False)   # the small tables, as a stock deploy loads them
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
            c.choose_table(None)
