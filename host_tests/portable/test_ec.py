"""P-384 / P-256 ECDSA and ECDH (uspdm.crypto.ec) against published vectors.

Sources (files in host_tests/vectors/): RFC 6979 A.2.5/A.2.6 deterministic
signatures, CAVP 186-3 SigVer [P-384,SHA-384], CAVP ECC CDH primitive
(P-256, P-384), CAVP 186-2 PKV (public key validation).
"""
try:
    import pytest

    parametrize = pytest.mark.parametrize
except ImportError:  # inside MicroPython the arguments come from the host

    def parametrize(*a):
        return lambda f: f

from _util import raises, read_blocks, unhex

from uspdm.crypto import ec, sha2

CURVES = {"P-256": ec.P256, "P-384": ec.P384}


def _first_k(c, d, digest, extra=None):
    for k in ec._rfc6979_iter(c, d, digest, extra):
        if k is not None:
            return k


def _rfc6979_cases(section):
    key = None
    for b in read_blocks("ecdsa_rfc6979.txt"):
        if b["_section"] != section:
            continue
        if "x" in b:
            key = b
            continue
        yield key, b


@parametrize("section", ["P-256", "P-384"])
def test_rfc6979_published(section):
    c = CURVES[section]
    n = 0
    for key, b in _rfc6979_cases(section):
        d = int(key["x"], 16)
        pub = unhex(key["Ux"]) + unhex(key["Uy"])
        if n == 0:
            assert ec.public_key(c, d) == pub
        digest = sha2.new(b["hash"], b["msg"].encode()).digest()
        assert _first_k(c, d, digest) == int(b["k"], 16), (section, b["hash"], b["msg"])
        sig = ec.sign(c, d, digest)
        assert sig == unhex(b["r"]) + unhex(b["s"]), (section, b["hash"], b["msg"])
        assert ec.verify(c, pub, digest, sig)
        n += 1
    assert n == (5 if section == "P-256" else 6)


def test_rfc6979_blinding_rng_does_not_change_result():
    # blinding randomness (installed RNG or derived) never changes the output
    key, b = next(_rfc6979_cases("P-384"))
    d = int(key["x"], 16)
    digest = sha2.new(b["hash"], b["msg"].encode()).digest()
    ctr = [0]

    def rng(n):
        ctr[0] += 1
        return bytes((ctr[0] * 7 + i) & 0xFF for i in range(n))

    cdh = next(read_blocks("ecc_cdh.txt"))  # P-256 COUNT 0
    ec.set_rng(rng)
    try:
        sig = ec.sign(ec.P384, d, digest)
        pub = ec.public_key(ec.P384, d)
        z = ec.ecdh(ec.P256, int(cdh["dIUT"], 16), unhex(cdh["QCAVSx"]) + unhex(cdh["QCAVSy"]))
    finally:
        ec.set_rng(None)
    assert ctr[0] >= 3
    assert sig == unhex(b["r"]) + unhex(b["s"])
    assert pub == unhex(key["Ux"]) + unhex(key["Uy"])
    assert z == unhex(cdh["ZIUT"])


def test_hedged_signature():
    key, b = next(_rfc6979_cases("P-384"))
    d = int(key["x"], 16)
    pub = unhex(key["Ux"]) + unhex(key["Uy"])
    digest = sha2.new(b["hash"], b["msg"].encode()).digest()
    s1 = ec.sign(ec.P384, d, digest, b"\x01" * 32)
    s2 = ec.sign(ec.P384, d, digest, b"\x02" * 32)
    assert s1 != s2
    assert s1 != unhex(b["r"]) + unhex(b["s"])
    assert s1 == ec.sign(ec.P384, d, digest, b"\x01" * 32)
    assert ec.verify(ec.P384, pub, digest, s1)
    assert ec.verify(ec.P384, pub, digest, s2)


def test_cavp_sigver_p384_sha384():
    n = 0
    for b in read_blocks("ecdsa_sigver_p384_sha384.txt"):
        digest = sha2.sha384(unhex(b["Msg"])).digest()
        pub = unhex(b["Qx"]) + unhex(b["Qy"])
        sig = unhex(b["R"]) + unhex(b["S"])
        want = b["Result"].startswith("P")
        assert ec.verify(ec.P384, pub, digest, sig) == want, b["Result"]
        n += 1
    assert n == 15


@parametrize("section", ["P-256", "P-384"])
def test_cavp_ecc_cdh(section):
    c = CURVES[section]
    n = 0
    for b in read_blocks("ecc_cdh.txt"):
        if b["_section"] != section:
            continue
        d = ec.private_key_from_bytes(c, unhex(b["dIUT"]))
        assert ec.public_key(c, d) == unhex(b["QIUTx"]) + unhex(b["QIUTy"])
        peer = unhex(b["QCAVSx"]) + unhex(b["QCAVSy"])
        assert ec.ecdh(c, d, peer) == unhex(b["ZIUT"]), b["COUNT"]
        assert ec.ecdh(c, d, peer, True) == unhex(b["ZIUT"]), b["COUNT"]   # ephemeral: no scalar blinding
        n += 1
    assert n == 3


def _natural(h):
    # a coordinate as given (odd digit counts padded to whole bytes)
    if len(h) % 2:
        h = "0" + h
    return unhex(h)


@parametrize("section", ["P-256", "P-384"])
def test_cavp_pkv(section):
    c = CURVES[section]
    npass = nfail = 0
    for b in read_blocks("ec_pkv.txt"):
        if b["_section"] != section:
            continue
        x = _natural(b["Qx"])
        y = _natural(b["Qy"])
        # fixed width when it fits (leading zeros), else the longer string
        x = bytes(max(0, c.size - len(x))) + x
        y = bytes(max(0, c.size - len(y))) + y
        pub = x + y
        if b["Result"].startswith("P"):
            assert ec.validate_public_key(c, pub) == (int(b["Qx"], 16), int(b["Qy"], 16))
            npass += 1
        else:
            raises(ValueError, ec.validate_public_key, c, pub)
            raises(ValueError, ec.ecdh, c, 12345, pub)
            assert ec.verify(c, pub, bytes(c.size), bytes([1] * (2 * c.size))) is False
            nfail += 1
    assert npass >= 3 and nfail >= 8


@parametrize("name", ["P-256", "P-384"])
def test_public_key_validation_messages(name):
    c = CURVES[name]
    sz = c.size
    gx = c.gx.to_bytes(sz, "big")
    gy = c.gy.to_bytes(sz, "big")
    assert ec.validate_public_key(c, gx + gy) == (c.gx, c.gy)
    # -G is valid too
    assert ec.validate_public_key(c, gx + (c.p - c.gy).to_bytes(sz, "big"))[1] == c.p - c.gy
    cases = [
        (gx + gy[:-1], "bytes"),  # too short
        (b"\x04" + gx + gy, "bytes"),  # SEC1 prefix is not accepted
        (b"", "bytes"),
        (bytes(2 * sz), "infinity"),
        (c.p.to_bytes(sz, "big") + gy, "range"),  # x = p
        (gx + c.p.to_bytes(sz, "big"), "range"),  # y = p
        (gx + (c.gy ^ 1).to_bytes(sz, "big"), "curve"),
        (bytes(sz - 1) + b"\x01" + bytes(sz), "curve"),  # (1, 0)
    ]
    raises(ValueError, ec.validate_public_key, c, None)
    raises(ValueError, ec.ecdh, c, 5, None)
    for pub, word in cases:
        e = raises(ValueError, ec.validate_public_key, c, pub)
        assert word in str(e), (word, str(e))
        raises(ValueError, ec.ecdh, c, 5, pub)


@parametrize("name", ["P-256", "P-384"])
def test_verify_rejects_malformed(name):
    c = CURVES[name]
    sz = c.size
    d = 0x1234567
    pub = ec.public_key(c, d)
    dig = bytes(range(sz))
    sig = ec.sign(c, d, dig)
    assert ec.verify(c, pub, dig, sig)
    r = sig[:sz]
    s = sig[sz:]
    nb = c.n.to_bytes(sz, "big")
    z = bytes(sz)
    bad = [
        z + s, r + z, nb + s, r + nb, sig[:-1], sig + b"\x00", b"", b"\x30" + sig,
        (int.from_bytes(r, "big") + c.n).to_bytes(sz + 1, "big") + s,
        bytes([sig[0] ^ 1]) + sig[1:], sig[:-1] + bytes([sig[-1] ^ 1]),
        s + r,
    ]
    for b in bad:
        assert ec.verify(c, pub, dig, b) is False, b
    # (r, n - s) is the other valid ECDSA signature (no low-s rule in ECDSA)
    assert ec.verify(c, pub, dig, r + (c.n - int.from_bytes(s, "big")).to_bytes(sz, "big")) is True
    assert ec.verify(c, pub, dig[:-1] + bytes([dig[-1] ^ 1]), sig) is False
    assert ec.verify(c, pub[:-1], dig, sig) is False
    assert ec.verify(c, bytes(2 * sz), dig, sig) is False
    assert ec.verify(c, pub, dig, None) is False
    assert ec.verify(c, None, dig, sig) is False
    assert ec.verify(c, ec.public_key(c, d + 1), dig, sig) is False


@parametrize("name", ["P-256", "P-384"])
def test_verify_edge_cases(name):
    # signatures built from the ECDSA equation s = k^-1 (e + r d) mod n
    c = CURVES[name]
    n = c.n
    sz = c.size
    d = 0x5EED
    pub = ec.public_key(c, d)
    k = 0x12345
    r = int.from_bytes(ec.public_key(c, k)[:sz], "big") % n
    kinv = pow(k, n - 2, n)
    # e = r*d: u1*G == u2*Q, the final addition is a doubling
    e = r * d % n
    s = kinv * (e + r * d) % n
    sig = r.to_bytes(sz, "big") + s.to_bytes(sz, "big")
    assert ec.verify(c, pub, e.to_bytes(sz, "big"), sig)
    # e = -r*d: u1*G == -u2*Q, the sum is the point at infinity -> s = 0, no signature;
    # e = 0: u1 = 0
    s = kinv * (r * d) % n
    assert ec.verify(c, pub, bytes(sz), r.to_bytes(sz, "big") + s.to_bytes(sz, "big"))
    # digest >= n (all ones) is reduced mod n
    e = int.from_bytes(b"\xff" * sz, "big")
    s = kinv * (e + r * d) % n
    sig = r.to_bytes(sz, "big") + s.to_bytes(sz, "big")
    assert ec.verify(c, pub, b"\xff" * sz, sig)
    assert ec.verify(c, pub, (e % n).to_bytes(sz, "big"), sig)
    # a digest longer than the order: leftmost bits (bits2int)
    long = b"\x80" + bytes(sz)
    e = int.from_bytes(long[:sz], "big")
    s = kinv * (e + r * d) % n
    assert ec.verify(c, pub, long, r.to_bytes(sz, "big") + s.to_bytes(sz, "big"))
    assert ec.sign(c, d, bytes(sz))  # e = 0 signs
    assert ec.verify(c, pub, bytes(sz), ec.sign(c, d, bytes(sz)))


def test_private_key_bytes():
    c = ec.P384
    n = c.n
    assert ec.private_key_from_bytes(c, (n - 1).to_bytes(48, "big")) == n - 1
    assert ec.private_key_from_bytes(c, bytes(47) + b"\x01") == 1
    assert ec.private_key_to_bytes(c, 1) == bytes(47) + b"\x01"
    raises(ValueError, ec.private_key_from_bytes, c, bytes(48))
    raises(ValueError, ec.private_key_from_bytes, c, n.to_bytes(48, "big"))
    raises(ValueError, ec.private_key_from_bytes, c, b"\x01" * 47)
    raises(ValueError, ec.private_key_to_bytes, c, 0)
    raises(ValueError, ec.private_key_to_bytes, c, n)
    raises(ValueError, ec.public_key, c, 0)
    raises(ValueError, ec.public_key, c, n)
    raises(ValueError, ec.sign, c, n, bytes(48))
    raises(ValueError, ec.ecdh, c, 0, ec.public_key(c, 2))


def test_generate_private_key_rejection_sampling():
    c = ec.P256
    outputs = [c.n.to_bytes(32, "big"), bytes(32), b"\xff" * 32, bytes(31) + b"\x07"]
    calls = []

    def rb(n):
        calls.append(n)
        return outputs[len(calls) - 1]

    assert ec.generate_private_key(c, rb) == 7
    assert calls == [32, 32, 32, 32]
    raises(ValueError, ec.generate_private_key, c, lambda n: bytes(n))


def test_small_scalars_and_negation():
    # k*G for k = 1, 2, 3, n-1 and n-2 (= -(2G)): edge digits of the recoding
    c = ec.P384
    g = c.gx.to_bytes(48, "big") + c.gy.to_bytes(48, "big")
    assert ec.public_key(c, 1) == g
    g2 = ec.public_key(c, 2)
    x2 = g2[:48]
    y2 = int.from_bytes(g2[48:], "big")
    assert ec.public_key(c, c.n - 2) == x2 + (c.p - y2).to_bytes(48, "big")
    assert ec.public_key(c, c.n - 1) == g[:48] + (c.p - c.gy).to_bytes(48, "big")
    # ECDH with the generator as peer equals the public key's X
    for k in (1, 2, 3, c.n - 1, 0xABCDEF):
        assert ec.ecdh(c, k, g) == ec.public_key(c, k)[:48]
    # ECDH is symmetric
    a, b = 0x1111, c.n - 0x2222
    assert ec.ecdh(c, a, ec.public_key(c, b)) == ec.ecdh(c, b, ec.public_key(c, a))


def test_iterators_slice_work():
    c = ec.P384
    d = 0xC0FFEE
    pub = ec.public_key(c, d)
    dig = bytes(48)

    def drive(g):
        steps = 0
        try:
            while True:
                next(g)
                steps += 1
        except StopIteration as e:
            return steps, e.value

    steps, v = drive(ec.public_key_iter(c, d))
    assert v == pub and steps >= 3
    steps, sig = drive(ec.sign_iter(c, d, dig))
    assert sig == ec.sign(c, d, dig) and steps >= 5
    steps, ok = drive(ec.verify_iter(c, pub, dig, sig))
    assert ok is True and steps >= 5
    peer = ec.public_key(c, 3)
    steps, z = drive(ec.ecdh_iter(c, d, peer))
    assert z == ec.ecdh(c, d, peer) == ec.ecdh(c, 3, pub) and steps >= 5
    assert ec.run_iter(ec.public_key_iter(c, d)) == pub


def test_table_fallback_when_module_missing():
    # a curve whose stored table module does not exist builds the comb
    # table itself (make_table); it must equal the stored P-256 table, which
    # test_ec_xcheck checks point by point against the cryptography package
    c = ec.P256
    c2 = ec.Curve("nosuch", c.size, c.p, c.b, c.n, c.gx, c.gy, c.hashname, c.comb)
    assert ec.table_bytes(c2) == ec.table_bytes(c)
    assert max(len(x) for x in c.table()) <= 16 * 2 * c.size  # chunks, no 4 KB block needed
    assert ec.public_key(c2, 0xABC) == ec.public_key(c, 0xABC)


def test_without_comb_table():
    # ec.hold_tables (eviction under memory pressure): k*G by the variable-base
    # method gives the same keys and the same deterministic signatures
    c = ec.P256
    d = 0xBADC0DE
    dig = bytes(range(32))
    pub = ec.public_key(c, d)
    sig = ec.sign(c, d, dig)
    ec.hold_tables(True)
    try:
        assert c._tbl is None
        assert ec.public_key(c, d) == pub and ec.sign(c, d, dig) == sig
        assert c._tbl is None
    finally:
        ec.hold_tables(False)
    assert ec.sign(c, d, dig) == sig and c._tbl is not None
