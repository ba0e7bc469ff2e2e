"""Viper kernels (lib/uspdm/crypto/_*v.py) where they run natively: the unix
port (x64, 64-bit viper integers) and the emulated Cortex-M0 (armv6m, 32-bit,
as deployed: .mpy copied into the heap).  Each kernel is checked against its
pure-Python twin and against values computed here by independent code
(CPython's hashlib, the `cryptography` package).  The twins themselves run
on CPython and the wasm build in host_tests/portable/.
"""
import hashlib
import hmac as pyhmac

import pytest

from uspdm_tools import native

ENGINES = ["unix", "m0"]


def _run(engine, src):
    if engine == "unix":
        why = native.unix_reason()
        if why:
            pytest.skip(why)
        rc, out, err = native.run_unix(src)
    else:
        why = native.m0_reason()
        if why:
            pytest.skip(why)
        # m0-rom: the code in place in ROMFS, as a ROMFS deploy (module constants in flash:
        # the larger P-384 comb table is used there)
        rc, out, err = native.run_m0(src, load="rom" if engine == "m0-rom" else "ram")
    assert rc == 0 and "KERNEL-OK" in out, "rc=%s\n%s\n%s" % (rc, out, err)
    return out


def _msg(n, seed=0):
    return bytes((i * 131 + seed * 7 + (i >> 8)) & 255 for i in range(n))


SHA_LENGTHS = (0, 1, 3, 55, 111, 112, 113, 127, 128, 129, 239, 240, 255, 256, 1000, 1024)


@pytest.mark.parametrize("engine", ENGINES + ["m0-rom"])
def test_sha512_kernel(engine):
    """m0-rom: the round constants are read in place from flash where they are
    word-aligned there, else from an aligned copy (_sha512v)."""
    cases = []
    for name in ("sha384", "sha512"):
        for n in SHA_LENGTHS:
            cases.append((name, n, hashlib.new(name, _msg(n, n)).digest()))
    src = r"""
from uspdm.crypto import sha2
def msg(n, seed):
    return bytes((i * 131 + seed * 7 + (i >> 8)) & 255 for i in range(n))
CASES = %r
assert sha2.backend('sha384') == 'viper', sha2.backend('sha384')
assert sha2.backend('sha512') == 'viper'
for name, n, md in CASES:
    m = msg(n, n)
    assert sha2.new(name, m).digest() == md, (name, n)
    assert sha2.kernel(name, m).digest() == md, (name, n)
    assert sha2.pure(name, m).digest() == md, (name, n)
    # streamed in uneven pieces, with a fork and a non-final digest midway
    h = sha2.new(name)
    i = 0
    step = 1
    while i < n:
        h.update(m[i:i + step])
        i += step
        step = step * 3 + 1
        if i > n // 2 and step > 40:
            f = h.copy()
            f.digest()
            h.digest()
    assert h.digest() == md, (name, n, 'streamed')
    if n:
        f = h.copy()
        f.update(b'x')
        assert h.digest() == md and f.digest() != md
# FIPS 180-4 examples
assert sha2.sha384(b'abc').digest().hex() == 'cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7'
assert sha2.sha512(b'abc').digest().hex()[:32] == 'ddaf35a193617abacc417349ae204131'
print('KERNEL-OK')
""" % (cases,)
    _run(engine, src)


@pytest.mark.parametrize("engine", ENGINES)
def test_hmac_hkdf_on_kernel(engine):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

    cases = []
    for name in ("sha384", "sha512"):
        for kl in (0, 20, 48, 128, 129, 200):
            key = _msg(kl, 1)
            for ml in (0, 64, 300):
                cases.append((name, kl, ml, pyhmac.new(key, _msg(ml, 2), name).digest()))
    hk = []
    for ln in (48, 32, 12, 100):
        prk = _msg(48, ln)
        info = _msg(ln % 17 + 10, 3)
        hk.append((ln, HKDFExpand(hashes.SHA384(), ln, info).derive(prk)))
    src = r"""
from uspdm.crypto import sha2, hmac, hkdf
def msg(n, seed):
    return bytes((i * 131 + seed * 7 + (i >> 8)) & 255 for i in range(n))
assert sha2.backend('sha384') == 'viper'
for name, kl, ml, mac in %r:
    assert hmac.hmac(name, msg(kl, 1), msg(ml, 2)) == mac, (name, kl, ml)
for ln, okm in %r:
    assert hkdf.expand('sha384', msg(48, ln), msg(ln %% 17 + 10, 3), ln) == okm, ln
print('KERNEL-OK')
""" % (cases, hk)
    _run(engine, src)


@pytest.mark.parametrize("engine", ENGINES)
def test_aes_gcm_kernels(engine):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    cases = []
    for kl in (16, 32):
        for n in (0, 1, 15, 16, 17, 64, 100, 127, 128, 129, 1024):
            key = _msg(kl, n)
            iv = _msg(12, n + 1)
            aad = _msg(n % 37, n + 2)
            cases.append((kl, n, AESGCM(key).encrypt(iv, _msg(n, 5), aad)))
    # an all-ones IV: the 32-bit counter increment must not touch the IV bytes
    key = _msg(32, 9)
    iv = b"\xff" * 12
    wrap = AESGCM(key).encrypt(iv, _msg(80, 5), b"")
    src = r"""
from uspdm.crypto import gcm, aes
def msg(n, seed):
    return bytes((i * 131 + seed * 7 + (i >> 8)) & 255 for i in range(n))
assert aes.has_kernel()
for kl, n, ct in %r:
    key, iv, aad, pt = msg(kl, n), msg(12, n + 1), msg(n %% 37, n + 2), msg(n, 5)
    k = gcm.AesGcm(key, 4, True, True)
    assert k._ctx is not None and k._aes._ks is not None
    assert k.seal(iv, aad, pt) == ct, (kl, n)
    assert k.open(iv, aad, ct) == pt
    assert gcm.AesGcm(key, 4, True, False).seal(iv, aad, pt) == ct, (kl, n, 'twin')
    bad = bytearray(ct)
    bad[-1] ^= 1
    try:
        k.open(iv, aad, bytes(bad))
        raise AssertionError('tampered tag accepted')
    except gcm.AuthenticationError:
        pass
    k.wipe()
    assert not any(k._ctx) and not any(k._aes._ks)
assert gcm.AesGcm(msg(32, 9), 4, True, True).seal(b'\xff' * 12, b'', msg(80, 5)) == %r
print('KERNEL-OK')
""" % (cases, wrap)
    _run(engine, src)


@pytest.mark.parametrize("engine", ENGINES + ["m0-rom"])
def test_ec_on_native_ports(engine):
    """P-384/P-256 sign, public key and ECDH as the board computes them (the
    comb table in chunks, the slices), checked here with `cryptography`."""
    from cryptography.hazmat.primitives.asymmetric import ec as cec
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
    from cryptography.hazmat.primitives import hashes

    curves = {"p384": (cec.SECP384R1(), hashes.SHA384(), 48), "p256": (cec.SECP256R1(), hashes.SHA256(), 32)}
    src = r"""
from uspdm.crypto import ec, drbg
rng = drbg.HmacDrbg(bytes(32), b'native-test', b'', 'sha256')
ec.set_rng(rng.generate)
for name in ('p384', 'p256'):
    c = getattr(ec, name.upper())
    d = 0x1234567 * (c.n // 0x7654321) % c.n
    q = 0xABCDEF * (c.n // 0x1FEDCB) % c.n
    dig = bytes(range(c.size))
    print('R', name, ec.public_key(c, d).hex(), ec.sign(c, d, dig, rng.generate(32)).hex(),
          ec.ecdh(c, d, ec.public_key(c, q)).hex(), ec.ecdh(c, d, ec.public_key(c, q), True).hex())
    print('T', name, c.comb)
    # without the comb table (ec.hold_tables: what eviction does under memory pressure):
    # the same deterministic signature and public key, by the variable-base method
    # (a table that stays in flash, ROMFS: kept, it costs no heap)
    s1 = ec.sign(c, d, dig)
    ec.hold_tables(True)
    assert c._tbl is None or c.comb != c.small
    s2 = ec.sign(c, d, dig)
    p2 = ec.public_key(c, q)
    assert c._tbl is None or c.comb != c.small
    ec.hold_tables(False)
    print('H', name, s1 == s2, p2 == ec.public_key(c, q), c._tbl is not None)
print('KERNEL-OK')
"""
    out = _run(engine, src)
    held = [x.split()[1:] for x in out.splitlines() if x.startswith("H ")]
    assert held == [["p384", "True", "True", "True"], ["p256", "True", "True", "True"]], held
    # which comb table each engine used: the larger P-384 one only where constants stay in flash
    tables = dict((x.split(None, 2)[1], x.split(None, 2)[2]) for x in out.splitlines() if x.startswith("T "))
    assert tables["p384"] == ("(8, 2, 29)" if engine == "m0-rom" else "(6, 2, 38)"), tables
    assert tables["p256"] == "(6, 2, 27)"
    n = 0
    for line in out.splitlines():
        if not line.startswith("R "):
            continue
        _, name, pub, sig, z, ze = line.split()
        assert ze == z   # the ephemeral (unblinded) ECDH agrees
        curve, h, size = curves[name]
        order = {"p384": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973,
                 "p256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551}[name]
        d = 0x1234567 * (order // 0x7654321) % order
        q = 0xABCDEF * (order // 0x1FEDCB) % order
        key = cec.derive_private_key(d, curve)
        nums = key.public_key().public_numbers()
        assert bytes.fromhex(pub) == nums.x.to_bytes(size, "big") + nums.y.to_bytes(size, "big")
        sig = bytes.fromhex(sig)
        der = encode_dss_signature(int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big"))
        key.public_key().verify(der, bytes(range(size)), cec.ECDSA(Prehashed(h)))
        peer = cec.derive_private_key(q, curve).public_key()
        assert bytes.fromhex(z) == key.exchange(cec.ECDH(), peer)
        n += 1
    assert n == 2
