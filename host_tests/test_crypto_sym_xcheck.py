"""CPython-only checks of the symmetric crypto core (lib/uspdm/crypto) against
the `cryptography` package and hashlib, plus the MicroPython-board branches
(C hashlib without copy(), cryptolib ECB) exercised through shims injected
into sys.modules."""
import hashlib
import hmac as std_hmac
import importlib
import os
import random
import sys

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as c_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from uspdm.crypto import aes, drbg, gcm, hkdf, sha2
from uspdm.crypto import hmac as u_hmac

HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}
VECTORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors")


def _c_hash(name, data):
    h = hashes.Hash(HASHES[name]())
    h.update(data)
    return h.finalize()


# -- randomized cross-checks ------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(HASHES))
def test_sha2_random_lengths(name):
    rng = random.Random(name)
    for _ in range(60):
        n = rng.choice([rng.randrange(0, 300), rng.randrange(0, 3000)])
        data = rng.randbytes(n)
        want = _c_hash(name, data)
        assert sha2.new(name, data).digest() == want
        p = sha2.pure(name)
        cut = sorted(rng.randrange(0, n + 1) for _ in range(3))
        p.update(data[: cut[0]])
        fork = p.copy()
        p.update(data[cut[0]:cut[1]])
        assert p.digest() == _c_hash(name, data[: cut[1]])  # mid-stream digest
        p.update(data[cut[1]:])
        assert p.digest() == want
        fork.update(memoryview(data)[cut[0]:])
        assert fork.digest() == want


@pytest.mark.parametrize("name", sorted(HASHES))
def test_hmac_random(name):
    rng = random.Random("hmac" + name)
    for _ in range(60):
        key = rng.randbytes(rng.choice([0, 1, 16, 32, 48, 64, 127, 128, 129, 200]))
        msg = rng.randbytes(rng.randrange(0, 700))
        h = c_hmac.HMAC(key, HASHES[name]())
        h.update(msg)
        want = h.finalize()
        assert u_hmac.hmac(name, key, msg) == want
        m = u_hmac.Hmac(name, key)
        c = m.copy()
        m.update(msg[:33])
        m.update(msg[33:])
        assert m.digest() == want
        c.update(msg)
        assert c.digest() == want


@pytest.mark.parametrize("name", sorted(HASHES))
def test_hkdf_random(name):
    rng = random.Random("hkdf" + name)
    hl = HASHES[name].digest_size
    for _ in range(40):
        ikm = rng.randbytes(rng.randrange(1, 100))
        salt = rng.randbytes(rng.choice([0, 16, hl, 200]))
        info = rng.randbytes(rng.randrange(0, 80))
        length = rng.choice([1, 16, hl, hl + 1, 100, 255 * hl])
        want = HKDF(HASHES[name](), length, salt or None, info).derive(ikm)
        prk = hkdf.extract(name, salt, ikm)
        assert hkdf.expand(name, prk, info, length) == want
        assert HKDFExpand(HASHES[name](), length, info).derive(prk) == want


@pytest.mark.parametrize("table_bits", [4, 8])
def test_gcm_both_ways(table_bits):
    rng = random.Random("gcm%d" % table_bits)
    for i in range(80):
        key = rng.randbytes(32 if i % 4 else 16)
        iv = rng.randbytes(12)
        aad = rng.randbytes(rng.choice([0, 1, 13, 16, 17, 40, 100]))
        pt = rng.randbytes(rng.choice([0, 1, 15, 16, 17, 100, 255, 256, 257, 1000]))
        ours = gcm.AesGcm(key, table_bits)
        theirs = AESGCM(key)
        ct = ours.seal(iv, aad, pt)
        assert theirs.decrypt(iv, ct, aad) == pt  # theirs opens ours
        ct2 = theirs.encrypt(iv, pt, aad)
        assert ct2 == ct
        assert ours.open(iv, aad, ct2) == pt  # ours opens theirs
        # tampering: tag, ciphertext, aad, iv -> rejected by both
        bad = []
        t = bytearray(ct2)
        t[-1 - rng.randrange(16)] ^= 1 << rng.randrange(8)
        bad.append((iv, aad, bytes(t)))
        if pt:
            t = bytearray(ct2)
            t[rng.randrange(len(pt))] ^= 1 << rng.randrange(8)
            bad.append((iv, aad, bytes(t)))
        bad.append((iv, aad + b"\x00", ct2))
        if aad:
            a = bytearray(aad)
            a[rng.randrange(len(aad))] ^= 0x80
            bad.append((iv, bytes(a), ct2))
        bad.append((iv[:11] + bytes([iv[11] ^ 1]), aad, ct2))
        for biv, baad, bct in bad:
            with pytest.raises(gcm.AuthenticationError):
                ours.open(biv, baad, bct)
            with pytest.raises(InvalidTag):
                theirs.decrypt(biv, bct, baad)


def test_aes_random():
    rng = random.Random("aes")
    for kl in (16, 32):
        for _ in range(50):
            k, p = rng.randbytes(kl), rng.randbytes(16)
            want = Cipher(algorithms.AES(k), modes.ECB()).encryptor().update(p)
            assert aes.Aes(k).encrypt_block(p) == want
            assert aes.Aes(k, force_pure=True).encrypt_block(p) == want


def test_gcm_ct_eq_used():
    # open() must compare tags with compat.ct_eq (constant time)
    import inspect

    assert "ct_eq(" in inspect.getsource(gcm.AesGcm.open)


# -- independent checks of the checked-in vector files -------------------------------
def _blocks(name):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "portable"))
    import _util

    return list(_util.read_blocks(name))


def test_vector_files_agree_with_references():
    u = bytes.fromhex
    for v in _blocks("sha2_fips180.txt"):
        assert hashlib.new(v["Alg"], u(v["Msg"]) * int(v["Repeat"])).hexdigest() == v["MD"]
    for v in _blocks("sha2_msg.txt"):
        m = u(v["Msg"]) if v["Len"] != "0" else b""
        assert hashlib.new(v["_section"], m).hexdigest() == v["MD"]
    for v in _blocks("hmac_rfc4231.txt"):
        mac = std_hmac.new(u(v["Key"]), u(v["Data"]), v["Alg"]).hexdigest()
        tr = int(v["Trunc"])
        assert (mac[: 2 * tr] if tr else mac) == v["MAC"]
    for v in _blocks("hkdf.txt"):
        h = HASHES[v["Hash"]]()
        assert HKDF(h, int(v["L"]), u(v["Salt"]) or None, u(v["Info"])).derive(u(v["IKM"])).hex() == v["OKM"]
    for v in _blocks("aes_fips197.txt"):
        e = Cipher(algorithms.AES(u(v["Key"])), modes.ECB()).encryptor()
        assert e.update(u(v["Plaintext"])).hex() == v["Ciphertext"]
    f = lambda s: b"" if s == "-" else u(s)  # noqa: E731
    for v in _blocks("aes_gcm.txt"):
        g = AESGCM(u(v["Key"]))
        if v["_section"] == "published":
            assert g.encrypt(u(v["IV"]), f(v["PT"]), f(v["AAD"])) == f(v["CT"]) + u(v["Tag"])
        else:
            with pytest.raises(InvalidTag):
                g.decrypt(u(v["IV"]), f(v["CT"]) + u(v["Tag"]), f(v["AAD"]))


def test_drbg_from_urandom():
    d = drbg.from_source(os.urandom)
    a, b = d.randbytes(32), d.randbytes(32)
    assert a != b and len(a) == 32


# -- MicroPython board branches via shims ----------------------------------------------
class _FinalizingHash:
    """Mimics MicroPython's C hashlib objects: no copy(), digest() finalizes."""

    made = 0

    def __init__(self, name, data=b""):
        self._h = hashlib.new(name)
        self._done = False
        _FinalizingHash.made += 1
        if data:
            self.update(data)

    def update(self, data):
        if self._done:
            raise ValueError("hash already finalized")
        self._h.update(data)

    def digest(self):
        if self._done:
            raise ValueError("hash already finalized")
        self._done = True
        return self._h.digest()


class _FakeHashlib:
    __name__ = "hashlib"

    def __init__(self, names):
        for n in names:
            setattr(self, n, self._ctor(n))

    @staticmethod
    def _ctor(n):
        def make(data=b""):
            return _FinalizingHash(n, data)

        return make


class _FakeCryptolibAes:
    def __init__(self, key, mode):
        assert mode == 1, "only ECB (1) is used"
        assert isinstance(key, (bytes, bytearray))
        self._e = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor()

    def encrypt(self, buf, out=None):
        assert out is None
        assert len(buf) % 16 == 0 and len(buf) > 0
        _FakeCryptolib.calls += 1
        return self._e.update(bytes(buf))


class _FakeCryptolib:
    __name__ = "cryptolib"
    calls = 0
    aes = _FakeCryptolibAes


@pytest.fixture
def board_modules(request):
    names = request.param
    saved = {k: sys.modules.get(k) for k in ("hashlib", "cryptolib")}
    sys.modules["hashlib"] = _FakeHashlib(names)
    sys.modules["cryptolib"] = _FakeCryptolib
    mods = [sha2, u_hmac, hkdf, aes, gcm, drbg]
    # Restore each module's original namespace afterwards rather than
    # reloading again: other modules (uspdm.secured, ...) hold the original
    # classes (AuthenticationError, AesGcm), which must stay the ones raised.
    originals = [dict(m.__dict__) for m in mods]
    for m in mods:
        importlib.reload(m)
    try:
        yield names
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        for m, d in zip(mods, originals):
            m.__dict__.clear()
            m.__dict__.update(d)


@pytest.mark.parametrize("board_modules", [("sha256",), ("sha256", "sha384", "sha512")], indirect=True)
def test_board_hashlib_replay_branch(board_modules):
    names = board_modules
    for n in ("sha256", "sha384", "sha512"):
        assert sha2.backend(n) == ("replay" if n in names else "pure")
    rng = random.Random(7)
    for n in ("sha256", "sha384", "sha512"):
        for _ in range(20):
            data = rng.randbytes(rng.randrange(0, 1500))
            cut = rng.randrange(0, len(data) + 1)
            h = sha2.new(n)
            for i in range(0, cut, 97):
                h.update(data[i:min(i + 97, cut)])
            fork = h.copy()
            assert h.digest() == _c_hash(n, data[:cut])
            assert h.digest() == _c_hash(n, data[:cut])  # not finalized
            h.update(data[cut:])
            assert h.digest() == _c_hash(n, data)
            fork.update(b"other")
            assert fork.digest() == _c_hash(n, data[:cut] + b"other")
            assert h.digest() == _c_hash(n, data)
            assert fork.digest_size == len(_c_hash(n, b""))
        # transcript-like: many small appends, digest in between, forks
        h = sha2.new(n)
        acc = b""
        for i in range(50):
            piece = bytes([i]) * (i % 9)
            h.update(bytearray(piece))
            acc += piece
            if i % 7 == 0:
                assert h.copy().digest() == _c_hash(n, acc)
        assert h.digest() == _c_hash(n, acc)
    # HMAC / HKDF / DRBG over the replay backend
    key = b"k" * 48
    for n in ("sha256", "sha384"):
        assert u_hmac.hmac(n, key, b"msg") == std_hmac.new(key, b"msg", n).digest()
        assert hkdf.expand(n, key, b"info", 200) == HKDFExpand(HASHES[n](), 200, b"info").derive(key)
    v = _blocks("hmac_drbg_sha256.txt")[-1]
    f = lambda s: b"" if s == "-" else bytes.fromhex(s)  # noqa: E731
    d = drbg.HmacDrbg(f(v["EntropyInput"]), f(v["Nonce"]))
    d.reseed(f(v["EntropyInputReseed"]))
    d.generate(128)
    assert d.generate(128).hex() == v["ReturnedBits"]


@pytest.mark.parametrize("board_modules", [("sha256",)], indirect=True)
def test_board_cryptolib_branch(board_modules):
    assert aes.has_cryptolib()
    rng = random.Random(11)
    for _ in range(30):
        key = rng.randbytes(32)
        p = rng.randbytes(16)
        assert aes.Aes(key).encrypt_block(p) == Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(p)
        iv = rng.randbytes(12)
        aad = rng.randbytes(rng.randrange(0, 40))
        pt = rng.randbytes(rng.randrange(0, 1200))
        before = _FakeCryptolib.calls
        g = gcm.AesGcm(key)
        ct = g.seal(iv, aad, pt)
        assert _FakeCryptolib.calls > before  # keystream came from cryptolib
        assert ct == AESGCM(key).encrypt(iv, pt, aad)
        assert g.open(iv, aad, ct) == pt
        t = bytearray(ct)
        t[-1] ^= 1
        with pytest.raises(gcm.AuthenticationError):
            g.open(iv, aad, bytes(t))
    # pure path still selectable next to cryptolib
    assert aes.Aes(bytes(32), force_pure=True).encrypt_block(bytes(16)) == aes.Aes(bytes(32)).encrypt_block(bytes(16))
