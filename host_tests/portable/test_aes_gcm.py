"""AES (FIPS 197 examples) and AES-GCM (published GCM test cases, tampering)."""
from _util import raises, read_blocks, unhex

from uspdm.crypto import aes, gcm


def _h(s):
    return b"" if s == "-" else unhex(s)


def test_aes_fips197():
    n = 0
    for v in read_blocks("aes_fips197.txt"):
        a = aes.Aes(unhex(v["Key"]))
        assert a.encrypt_block(unhex(v["Plaintext"])) == unhex(v["Ciphertext"]), v["Example"]
        p = aes.Aes(unhex(v["Key"]), force_pure=True)
        assert p.encrypt_block(unhex(v["Plaintext"])) == unhex(v["Ciphertext"]), v["Example"]
        two = p.encrypt_blocks(unhex(v["Plaintext"]) * 2)
        assert two == unhex(v["Ciphertext"]) * 2
        n += 1
    assert n == 3


def test_aes_bad_key():
    raises(ValueError, aes.Aes, bytes(24 + 1))
    raises(ValueError, aes.Aes, b"")


def _published():
    return [v for v in read_blocks("aes_gcm.txt") if v["_section"] == "published"]


def test_gcm_published():
    for tb in (4, 8):
        for v in _published():
            key, iv, aad = unhex(v["Key"]), unhex(v["IV"]), _h(v["AAD"])
            pt, ct, tag = _h(v["PT"]), _h(v["CT"]), unhex(v["Tag"])
            g = gcm.AesGcm(key, tb)
            assert g.seal(iv, aad, pt) == ct + tag, v["Case"]
            assert g.open(iv, aad, ct + tag) == pt, v["Case"]
            # a key object is reusable
            assert g.seal(iv, aad, pt) == ct + tag
            assert gcm.seal(key, iv, aad, pt) == ct + tag
            assert gcm.open(key, iv, aad, ct + tag) == pt
            # bytearray/memoryview inputs
            assert g.open(bytearray(iv), memoryview(aad), bytearray(ct + tag)) == pt


def test_gcm_tampered_rejected():
    n = 0
    for v in read_blocks("aes_gcm.txt"):
        if v["_section"] != "tampered":
            continue
        g = gcm.AesGcm(unhex(v["Key"]))
        e = raises(gcm.AuthenticationError, g.open, unhex(v["IV"]), _h(v["AAD"]), _h(v["CT"]) + unhex(v["Tag"]))
        assert isinstance(e, ValueError)
        n += 1
    assert n == 9


def test_gcm_bad_inputs():
    v = _published()[5]  # case 14
    key, iv = unhex(v["Key"]), unhex(v["IV"])
    g = gcm.AesGcm(key)
    ok = g.seal(iv, b"", bytes(16))
    raises(ValueError, g.seal, iv[:8], b"", b"x")
    raises(ValueError, g.seal, iv + b"\x00", b"", b"x")
    raises(ValueError, g.open, iv[:11], b"", ok)
    raises(gcm.AuthenticationError, g.open, iv, b"", ok[:15])
    raises(gcm.AuthenticationError, g.open, iv, b"", b"")
    raises(gcm.AuthenticationError, g.open, iv, b"", ok[:-1])  # truncated tag
    raises(gcm.AuthenticationError, g.open, iv, b"", ok[1:])
    raises(gcm.AuthenticationError, g.open, unhex("00" * 11 + "01"), b"", ok)  # wrong IV
    raises(gcm.AuthenticationError, gcm.AesGcm(bytes(31) + b"\x01").open, iv, b"", ok)  # wrong key
    raises(ValueError, gcm.AesGcm, key, 5)


def test_gcm_roundtrip_lengths():
    v = _published()[6]  # case 15
    g = gcm.AesGcm(unhex(v["Key"]))
    g8 = gcm.AesGcm(unhex(v["Key"]), 8)
    iv = unhex(v["IV"])
    for n in (0, 1, 15, 16, 17, 31, 255, 256, 257, 600):
        pt = bytes((i * 7 + n) & 255 for i in range(n))
        aad = pt[: n % 23]
        ct = g.seal(iv, aad, pt)
        assert len(ct) == n + 16
        assert g8.seal(iv, aad, pt) == ct
        assert g.open(iv, aad, ct) == pt
        # ciphertext of a prefix is a prefix (CTR), consistent with published case 16 vs 15
    full = unhex(v["PT"])
    assert g.seal(iv, b"", full[:60])[:60] == unhex(v["CT"])[:60]


def test_gcm_seal_into_matches_published():
    # sealing in place (the session layer's path) gives the published ciphertext and tag,
    # in a bytearray and in a memoryview of a larger buffer, kernel and pure twin alike
    n = 0
    for v in _published():
        key, iv, aad, pt = unhex(v["Key"]), unhex(v["IV"]), _h(v["AAD"]), _h(v["PT"])
        want = _h(v["CT"]) + unhex(v["Tag"])
        for kw in ({}, {"kernel": False}):
            g = gcm.AesGcm(key, **kw)
            buf = bytearray(3) + bytearray(pt) + bytearray(16) + bytearray(2)
            g.seal_into(iv, aad, buf, 3, len(pt))
            assert bytes(buf[3:3 + len(pt) + 16]) == want, v.get("Case")
            assert bytes(buf[:3]) == bytes(3) and bytes(buf[-2:]) == bytes(2)
            big = bytearray(len(pt) + 40)
            mv = memoryview(big)[4:4 + len(pt) + 16]
            mv[0:len(pt)] = pt
            g.seal_into(iv, memoryview(bytearray(aad)), mv, 0, len(pt))
            assert bytes(mv) == want
        n += 1
    assert n >= 4
