"""uspdm.crypto.ec cross-checked against the `cryptography` package (CPython).

Randomized: keys, signatures both ways, ECDH both ways, invalid points,
malformed signatures, the stored comb tables, and the checked-in vector
files re-checked with cryptography (so a transcription slip would show).
"""
import hashlib
import os
import random

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec as cec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

from uspdm.crypto import ec

CASES = [
    (ec.P384, cec.SECP384R1(), hashes.SHA384(), hashlib.sha384),
    (ec.P256, cec.SECP256R1(), hashes.SHA256(), hashlib.sha256),
]
IDS = ["p384", "p256"]
N = 12
HERE = os.path.dirname(os.path.abspath(__file__))


def _raw_pub(key):
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )[1:]


def _their_pub(curve, raw):
    return cec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + raw)


def _their_verify(c, curve, h, raw_pub, digest, sig):
    r = int.from_bytes(sig[: c.size], "big")
    s = int.from_bytes(sig[c.size :], "big")
    try:
        _their_pub(curve, raw_pub).verify(encode_dss_signature(r, s), digest, cec.ECDSA(Prehashed(h)))
        return True
    except InvalidSignature:
        return False


@pytest.mark.parametrize("c,curve,h,hf", CASES, ids=IDS)
def test_keys_and_signatures_both_ways(c, curve, h, hf):
    for i in range(N):
        d = ec.generate_private_key(c, os.urandom)
        theirs = cec.derive_private_key(d, curve)
        pub = ec.public_key(c, d)
        assert pub == _raw_pub(theirs)
        digest = hf(os.urandom(20)).digest()
        extra = os.urandom(32) if i % 2 else None
        sig = ec.sign(c, d, digest, extra)
        assert len(sig) == 2 * c.size
        assert _their_verify(c, curve, h, pub, digest, sig)
        assert ec.verify(c, pub, digest, sig)
        # theirs -> ours
        der = theirs.sign(digest, cec.ECDSA(Prehashed(h)))
        r, s = decode_dss_signature(der)
        sig2 = r.to_bytes(c.size, "big") + s.to_bytes(c.size, "big")
        assert ec.verify(c, pub, digest, sig2)
        # tampered: both reject
        bad = bytearray(sig2)
        bad[random.randrange(len(bad))] ^= 1 << random.randrange(8)
        bad = bytes(bad)
        assert ec.verify(c, pub, digest, bad) == _their_verify(c, curve, h, pub, digest, bad) == False  # noqa: E712
        other = hf(digest).digest()
        assert not ec.verify(c, pub, other, sig2)


@pytest.mark.parametrize("c,curve,h,hf", CASES, ids=IDS)
def test_digest_lengths_bits2int(c, curve, h, hf):
    # digests longer and shorter than the order (bits2int truncation)
    d = ec.generate_private_key(c, os.urandom)
    pub = ec.public_key(c, d)
    for hh, f in ((hashes.SHA256(), hashlib.sha256), (hashes.SHA384(), hashlib.sha384), (hashes.SHA512(), hashlib.sha512)):
        digest = f(os.urandom(8)).digest()
        sig = ec.sign(c, d, digest)
        assert _their_verify(c, curve, hh, pub, digest, sig)
        der = cec.derive_private_key(d, curve).sign(digest, cec.ECDSA(Prehashed(hh)))
        r, s = decode_dss_signature(der)
        assert ec.verify(c, pub, digest, r.to_bytes(c.size, "big") + s.to_bytes(c.size, "big"))


@pytest.mark.parametrize("c,curve,h,hf", CASES, ids=IDS)
def test_edge_digests(c, curve, h, hf):
    # e = 0 (u1 = 0) and e >= n (reduced), both ways
    d = ec.generate_private_key(c, os.urandom)
    pub = ec.public_key(c, d)
    theirs = cec.derive_private_key(d, curve)
    for digest in (bytes(c.size), b"\xff" * c.size, c.n.to_bytes(c.size, "big")):
        sig = ec.sign(c, d, digest)
        assert _their_verify(c, curve, h, pub, digest, sig)
        r, s = decode_dss_signature(theirs.sign(digest, cec.ECDSA(Prehashed(h))))
        assert ec.verify(c, pub, digest, r.to_bytes(c.size, "big") + s.to_bytes(c.size, "big"))


@pytest.mark.parametrize("c,curve,h,hf", CASES, ids=IDS)
def test_ecdh_both_ways(c, curve, h, hf):
    for _ in range(N):
        a = cec.generate_private_key(curve)
        b = ec.generate_private_key(c, os.urandom)
        b_pub = ec.public_key(c, b)
        z1 = ec.ecdh(c, b, _raw_pub(a))
        z2 = a.exchange(cec.ECDH(), _their_pub(curve, b_pub))
        assert z1 == z2 and len(z1) == c.size
        assert ec.ecdh(c, b, _raw_pub(a), ephemeral=True) == z2   # KEY_EXCHANGE's unblinded one-time key


@pytest.mark.parametrize("c,curve,h,hf", CASES, ids=IDS)
def test_invalid_points_rejected_by_both(c, curve, h, hf):
    sz = c.size
    for _ in range(N):
        pub = bytearray(_raw_pub(cec.generate_private_key(curve)))
        pub[random.randrange(len(pub))] ^= 1 << random.randrange(8)
        pub = bytes(pub)
        x = int.from_bytes(pub[:sz], "big")
        y = int.from_bytes(pub[sz:], "big")
        on = x < c.p and y < c.p and (y * y - x ** 3 + 3 * x - c.b) % c.p == 0
        assert not on  # a one-bit flip never stays on the curve in practice
        with pytest.raises(ValueError):
            _their_pub(curve, pub)
        with pytest.raises(ValueError):
            ec.validate_public_key(c, pub)
        with pytest.raises(ValueError):
            ec.ecdh(c, 5, pub)
        assert ec.verify(c, pub, bytes(sz), b"\x01" * (2 * sz)) is False
    for pub in (c.p.to_bytes(sz, "big") + c.gy.to_bytes(sz, "big"), bytes(2 * sz)):
        with pytest.raises(ValueError):
            _their_pub(curve, pub)
        with pytest.raises(ValueError):
            ec.validate_public_key(c, pub)


@pytest.mark.parametrize("c,curve,h,hf", CASES, ids=IDS)
def test_malformed_signatures_rejected(c, curve, h, hf):
    sz = c.size
    d = ec.generate_private_key(c, os.urandom)
    pub = ec.public_key(c, d)
    digest = hf(b"x").digest()
    sig = ec.sign(c, d, digest)
    r, s = sig[:sz], sig[sz:]
    n = c.n.to_bytes(sz, "big")
    for bad in (bytes(sz) + s, r + bytes(sz), n + s, r + n, b"\xff" * (2 * sz), sig[:-1], sig + b"\x00", b""):
        assert ec.verify(c, pub, digest, bad) is False
        if len(bad) == 2 * sz:
            assert _their_verify(c, curve, h, pub, digest, bad) is False


ROM_LIB = os.path.join(os.path.dirname(HERE), "lib_rom")


@pytest.fixture
def table_choice():
    """Forces a curve's comb table (choose_table) and restores the automatic choice;
    the larger table's module (lib_rom/, what a ROMFS deploy adds to lib/) is made
    importable for the test."""
    import importlib.util
    import sys

    used = []
    added = []

    def choose(c, big):
        used.append(c)
        name = "uspdm.crypto.ec_%s_big" % c.name
        path = os.path.join(ROM_LIB, "uspdm", "crypto", "ec_%s_big.py" % c.name)
        if big and name not in sys.modules and os.path.exists(path):
            spec = importlib.util.spec_from_file_location(name, path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            sys.modules[name] = mod
            added.append(name)
        ec.choose_table(c, big)

    yield choose
    for c in used:
        ec.choose_table(c, None)
    for name in added:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("big", [False, True], ids=["tbl", "big"])
@pytest.mark.parametrize("c,curve,h,hf", CASES, ids=IDS)
def test_stored_comb_table(c, curve, h, hf, big, table_choice):
    """Every stored table point equals cryptography's scalar*G (the small table, and
    the larger one used where module constants stay in flash)."""
    if big and c.big is None:
        pytest.skip("no larger table for %s" % c.name)
    table_choice(c, big)
    tbl = ec.table_bytes(c)
    assert c.comb == (c.big if big else c.small)
    hh, v, b = c.comb
    vb = v * b
    ent = 2 * c.size
    assert len(tbl) == v * (1 << (hh - 1)) * ent
    for t in range(v):
        for idx in range(1 << (hh - 1)):
            s = 1 << ((hh - 1) * vb)
            for j in range(hh - 1):
                s += (1 if (idx >> j) & 1 else -1) << (j * vb)
            s = (s << (t * b)) % c.n
            o = ((t << (hh - 1)) + idx) * ent
            assert tbl[o : o + ent] == _raw_pub(cec.derive_private_key(s, curve)), (t, idx)
    assert tbl == ec.make_table(c, c.comb)


@pytest.mark.parametrize("big", [False, True], ids=["tbl", "big"])
@pytest.mark.parametrize("c,curve,h,hf", CASES, ids=IDS)
def test_both_tables_sign_and_keygen(c, curve, h, hf, big, table_choice):
    """Public keys and signatures with either comb table, checked by cryptography."""
    table_choice(c, big)
    for i in range(N):
        d = ec.generate_private_key(c, os.urandom)
        pub = ec.public_key(c, d)
        assert pub == _raw_pub(cec.derive_private_key(d, curve))
        digest = hf(os.urandom(20)).digest()
        sig = ec.sign(c, d, digest, os.urandom(32))
        assert _their_verify(c, curve, h, pub, digest, sig)
        assert ec.verify(c, pub, digest, sig)
    assert c.comb == (c.big if big and c.big else c.small)


def _blocks(name):
    section, cur = "", {}
    with open(os.path.join(HERE, "vectors", name)) as f:
        for line in list(f) + [""]:
            line = line.strip()
            if line.startswith("["):
                section = line[1:-1]
            elif "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                cur[k.strip()] = v.strip()
            elif not line and cur:
                cur["_section"] = section
                yield cur
                cur = {}


def test_vector_files_agree_with_cryptography():
    curves = {"P-256": (ec.P256, cec.SECP256R1()), "P-384": (ec.P384, cec.SECP384R1())}
    hs = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}
    n = 0
    key = None
    for b in _blocks("ecdsa_rfc6979.txt"):
        c, curve = curves[b["_section"]]
        if "x" in b:
            key = b
            assert _raw_pub(cec.derive_private_key(int(key["x"], 16), curve)).hex() == (key["Ux"] + key["Uy"]).lower()
            continue
        digest = hashlib.new(b["hash"], b["msg"].encode()).digest()
        sig = bytes.fromhex(b["r"] + b["s"])
        assert _their_verify(c, curve, hs[b["hash"]], bytes.fromhex(key["Ux"] + key["Uy"]), digest, sig)
        n += 1
    for b in _blocks("ecdsa_sigver_p384_sha384.txt"):
        pub = bytes.fromhex(b["Qx"] + b["Qy"])
        digest = hashlib.sha384(bytes.fromhex(b["Msg"])).digest()
        try:
            ok = _their_verify(ec.P384, cec.SECP384R1(), hashes.SHA384(), pub, digest, bytes.fromhex(b["R"] + b["S"]))
        except ValueError:  # Q not on the curve
            ok = False
        assert ok == b["Result"].startswith("P")
        n += 1
    for b in _blocks("ecc_cdh.txt"):
        c, curve = curves[b["_section"]]
        k = cec.derive_private_key(int(b["dIUT"], 16), curve)
        assert _raw_pub(k).hex() == b["QIUTx"] + b["QIUTy"]
        z = k.exchange(cec.ECDH(), _their_pub(curve, bytes.fromhex(b["QCAVSx"] + b["QCAVSy"])))
        assert z.hex() == b["ZIUT"]
        n += 1
    for b in _blocks("ec_pkv.txt"):
        c, curve = curves[b["_section"]]
        x, y = int(b["Qx"], 16), int(b["Qy"], 16)
        if x >= c.p or y >= c.p:  # (OpenSSL reduces such coordinates mod p)
            ok = False
        else:
            try:
                cec.EllipticCurvePublicNumbers(x, y, curve).public_key()
                ok = True
            except ValueError:
                ok = False
        assert ok == b["Result"].startswith("P"), b
        n += 1
    assert n == 11 + 15 + 6 + 24
