"""HMAC (RFC 4231) and HKDF (RFC 5869) vectors; streaming/copy behaviour."""
from _util import read_blocks, unhex

from uspdm.crypto import hmac


def test_hmac_rfc4231():
    n = 0
    for v in read_blocks("hmac_rfc4231.txt"):
        key, data, mac = unhex(v["Key"]), unhex(v["Data"]), unhex(v["MAC"])
        tr = int(v["Trunc"])
        out = hmac.hmac(v["Alg"], key, data)
        assert (out[:tr] if tr else out) == mac, (v["Case"], v["Alg"])
        n += 1
    assert n == 21


def test_hmac_streaming_and_copy():
    for v in read_blocks("hmac_rfc4231.txt"):
        if v["Case"] != "7":
            continue
        key, data, mac = unhex(v["Key"]), unhex(v["Data"]), unhex(v["MAC"])
        tmpl = hmac.Hmac(v["Alg"], key)
        m = tmpl.copy()
        m.update(data[:10])
        fork = m.copy()
        m.update(data[10:])
        assert m.digest() == mac
        assert m.digest() == mac  # non-finalizing
        fork.update(data[10:100])
        fork.update(data[100:])
        assert fork.digest() == mac
        m2 = tmpl.copy()  # the template is untouched by its copies
        m2.update(data)
        assert m2.digest() == mac
        assert tmpl.digest_size == len(mac)


def test_hkdf_vectors():
    from uspdm.crypto import hkdf

    n = 0
    for v in read_blocks("hkdf.txt"):
        name = v["Hash"]
        ikm, salt, info = unhex(v["IKM"]), unhex(v["Salt"]), unhex(v["Info"])
        prk = hkdf.extract(name, salt, ikm)
        assert prk == unhex(v["PRK"]), (v["_section"], v["Case"])
        okm = hkdf.expand(name, prk, info, int(v["L"]))
        assert okm == unhex(v["OKM"]), (v["_section"], v["Case"])
        assert hkdf.hkdf(name, salt, ikm, info, int(v["L"])) == okm
        n += 1
    assert n == 9


def test_hkdf_limits():
    from _util import raises

    from uspdm.crypto import hkdf

    prk = bytes(32)
    assert len(hkdf.expand("sha256", prk, b"", 255 * 32)) == 255 * 32
    raises(ValueError, hkdf.expand, "sha256", prk, b"", 255 * 32 + 1)
    assert hkdf.expand("sha256", prk, b"x", 0) == b""
