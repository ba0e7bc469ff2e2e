"""HMAC_DRBG (SP 800-90A) against NIST CAVP known answers; limits and reseeding."""
from _util import raises, read_blocks, unhex

from uspdm.crypto import drbg


def _h(s):
    return b"" if s == "-" else unhex(s)


def test_cavp_hmac_drbg_sha256():
    n = 0
    for v in read_blocks("hmac_drbg_sha256.txt"):
        d = drbg.HmacDrbg(_h(v["EntropyInput"]), _h(v["Nonce"]), _h(v["PersonalizationString"]))
        assert d.reseed_counter == 1
        if v["_section"] == "pr_false":
            d.reseed(_h(v["EntropyInputReseed"]), _h(v["AdditionalInputReseed"]))
        d.generate(128, _h(v["AdditionalInput1"]))
        assert d.generate(128, _h(v["AdditionalInput2"])) == unhex(v["ReturnedBits"]), (v["_section"], v["Count"])
        assert d.reseed_counter == 3
        n += 1
    assert n == 5


def test_split_requests_differ_from_one_request():
    v = list(read_blocks("hmac_drbg_sha256.txt"))[0]
    a = drbg.HmacDrbg(unhex(v["EntropyInput"]), unhex(v["Nonce"]))
    b = drbg.HmacDrbg(unhex(v["EntropyInput"]), unhex(v["Nonce"]))
    x = a.generate(64)
    assert b.generate(32) == x[:32]  # same V chain for the first request
    assert b.generate(32) != x[32:]  # state update between requests
    assert a.randbytes(7) != b.randbytes(7)
    assert len(a.generate(0)) == 0


def test_limits():
    e = bytes(range(32))
    raises(ValueError, drbg.HmacDrbg, e[:31])
    d = drbg.HmacDrbg(e, b"nonce", b"pers")
    raises(ValueError, d.generate, drbg.MAX_REQUEST + 1)
    raises(ValueError, d.generate, -1)
    raises(ValueError, d.reseed, e[:16])
    # reseed interval: a raw-entropy generator refuses, a sourced one reseeds itself
    d.reseed_counter = d.reseed_interval + 1
    raises(drbg.ReseedRequired, d.generate, 16)
    d.reseed(e)
    assert d.reseed_counter == 1
    assert len(d.generate(16)) == 16


def test_from_source():
    calls = []

    def src(n):
        calls.append(n)
        return bytes((len(calls) * 17 + i) & 255 for i in range(n))

    d = drbg.from_source(src, b"uspdm")
    assert calls == [32, 16]
    x = d.randbytes(48)
    assert len(x) == 48
    d.reseed_counter = d.reseed_interval + 1
    y = d.generate(16)
    assert calls == [32, 16, 32] and d.reseed_counter == 2 and len(y) == 16
    # same source sequence -> same output (deterministic given entropy)
    calls2 = []

    def src2(n):
        calls2.append(n)
        return bytes((len(calls2) * 17 + i) & 255 for i in range(n))

    assert drbg.from_source(src2, b"uspdm").randbytes(48) == x
    raises(ValueError, drbg.from_source, lambda n: b"\x00" * (n - 1))


def test_sha384_instance():
    d = drbg.HmacDrbg(bytes(48), b"", b"", "sha384")
    assert len(d.generate(100)) == 100
