"""uspdm.identity (keys and chains on storage) and uspdm.measurements (blocks, file digests)."""
from _util import raises, scratch_dir
from test_spdm_common import drbg, expected_block, ids

from uspdm.crypto import ec, sha2
from uspdm.identity import Identity, der_elements
from uspdm.measurements import Measurements, file_digest, files_digest
from uspdm.storage import MemoryStorage


def test_key_generated_once_and_stored():
    st = MemoryStorage()
    ident = Identity(st, drbg(b"k"))
    assert ident.private_key("p256") is None and ident.public_key("p256") is None
    q = ident.ensure_key("p256")
    d = ident.private_key("p256")
    assert 1 <= d < ec.P256.n and q == ec.public_key(ec.P256, d)
    assert st.read("uspdm/key_p256.bin") == d.to_bytes(32, "big")
    # a new Identity on the same storage loads it instead of generating another
    again = Identity(st, drbg(b"other"))
    assert again.ensure_key("p256") == q and again.private_key("p256") == d
    assert again.public_key("p256") == ec.public_key(ec.P256, d)


def test_chains_and_masks():
    st = MemoryStorage()
    ident = Identity(st, None)
    chain = ids()["p384"][1]
    assert ident.provisioned_mask("p384") == 0 and ident.chain(0, "p384") is None
    ident.install_chain(2, "p384", chain)
    assert ident.provisioned_mask("p384") == 0   # a chain without its key is not usable
    assert "missing" in ident.problems[("p384", -1)]
    ident.set_private_key("p384", ids()["p384"][0])
    ident.install_chain(5, "p384", chain)
    assert ident.provisioned_mask("p384") == 0x24 and ident.provisioned_mask("p256") == 0
    assert ident.chain(2, "p384") == chain and st.read("uspdm/slot5_p384.der") == chain
    buf, dig = ident.chain_buffer(2, "p384", "sha384")
    root_len = der_elements(chain)[0][1]
    assert buf[:2] == bytes(((len(buf) & 0xFF), len(buf) >> 8)) and buf[2:4] == b"\x00\x00"
    assert buf[4:52] == sha2.new("sha384", chain[:root_len]).digest() and buf[52:] == chain
    assert dig == sha2.new("sha384", buf).digest()
    assert ident.delete_chain(5, "p384") and ident.provisioned_mask("p384") == 0x04
    assert len(der_elements(chain)) == 3
    raises(ValueError, ident.install_chain, 0, "p384", b"\x04\x01\x00")
    raises(ValueError, ident.install_chain, 0, "p384", chain[:-1])
    raises(ValueError, ident.install_chain, 8, "p384", chain)
    raises(ValueError, ident.install_chain, 0, "rsa", chain)
    # with a device key, the leaf must carry it
    ident.set_private_key("p384", ids()["p384"][0])
    ident.install_chain(1, "p384", chain)
    ident.set_private_key("p384", ids()["p384"][0] ^ 1)
    raises(ValueError, ident.install_chain, 1, "p384", chain)
    ident.install_chain(1, "p384", chain, check_key=False)
    assert ident.provisioned_mask("p384") == 0   # no leaf holds this key


def _ref_buffer(chain, hashname):
    root_len = der_elements(chain)[0][1]
    rh = sha2.new(hashname, chain[:root_len]).digest()
    n = 4 + len(rh) + len(chain)
    return bytes((n & 0xFF, n >> 8, 0, 0)) + rh + chain


def _check_streamed(ident, slot, alg, hashname, chain):
    ref = _ref_buffer(chain, hashname)
    total, rh, dig = ident.chain_info(slot, alg, hashname)
    assert total == len(ref) and rh == ref[4:4 + len(rh)] and dig == sha2.new(hashname, ref).digest()
    assert ident.chain_digest(slot, alg, hashname) == dig
    buf = bytearray(len(ref) + 8)
    for off in (0, 1, 3, 4, 5, 4 + len(rh) - 1, 4 + len(rh), 4 + len(rh) + 1, 255, 256, 300, len(ref) - 1):
        for n in (1, 2, 7, 40, 255, 256, 257, 1024, len(ref)):
            mv = memoryview(buf)[0:n]
            if off + n > len(ref):
                assert not ident.chain_read(slot, alg, hashname, off, mv)
                continue
            assert ident.chain_read(slot, alg, hashname, off, mv), (off, n)
            assert bytes(mv) == ref[off:off + n], (off, n)
    assert ident.chain_buffer(slot, alg, hashname) == (ref, dig)


def test_chain_streamed_from_storage():
    """GET_CERTIFICATE's chain buffer is never built: its length, root hash and digest
    come from two passes over the stored chain in 256-byte pieces, any portion is
    read into the caller's buffer; checked against the buffer built here."""
    with scratch_dir("uspdm-ident-stream") as tmp:
        from uspdm.storage import FileStorage

        for st in (MemoryStorage(), FileStorage(tmp + "/f")):
            for alg in ("p384", "p256"):
                d, chain = ids()[alg]
                st.write("uspdm/key_%s.bin" % alg, d.to_bytes(48 if alg == "p384" else 32, "big"))
                st.write("uspdm/slot0_%s.der" % alg, chain)
            ident = Identity(st, None)
            assert ident.provisioned_mask("p384") == 1 and ident.provisioned_mask("p256") == 1
            for alg in ("p384", "p256"):
                for hn in ("sha256", "sha384"):
                    _check_streamed(ident, 0, alg, hn, ids()[alg][1])
            # a chain whose length is a multiple of the piece size, and one of one piece
            # plus a byte (chain_info checks the first certificate's framing only)
            for body in (252, 508, 253, 20):
                fake = bytes((0x30, 0x82, body >> 8, body & 0xFF)) + bytes(range(256)) * 2
                fake = fake[:4 + body]
                st.write("uspdm/slot6_p256.der", fake)
                ident._dig.clear()
                _check_streamed(ident, 6, "p256", "sha256", fake)
            # damaged: nothing there, truncated root certificate, not DER
            ident._dig.clear()
            assert ident.chain_info(7, "p256", "sha256") is None and ident.chain_digest(7, "p256", "sha256") is None
            assert ident.chain_info(9, "p256", "sha256") is None
            for bad in (b"\x30\x82\x01\x00" + bytes(100), b"\x04\x01\x00", b"\x30", b"\x30\x80" + bytes(9)):
                st.write("uspdm/slot6_p256.der", bad)
                ident._dig.clear()
                assert ident.chain_info(6, "p256", "sha256") is None, bad
                assert not ident.chain_read(6, "p256", "sha256", 0, bytearray(1))
            # a slot written again (enrolment): what was kept for it is dropped
            chain = ids()["p384"][1]
            before = ident.chain_digest(0, "p384", "sha384")
            ident.install_chain(0, "p384", ids()["p256"][1], check_key=False)
            assert ident.chain_digest(0, "p384", "sha384") == sha2.new(
                "sha384", _ref_buffer(ids()["p256"][1], "sha384")).digest() != before
            ident.install_chain(0, "p384", chain)
            _check_streamed(ident, 0, "p384", "sha384", chain)
            assert ident.delete_chain(0, "p384")
            assert ident.chain_info(0, "p384", "sha384") is None


def _damaged(key=None, chain=None):
    st = MemoryStorage()
    d, good = ids()["p384"]
    st.write("uspdm/key_p384.bin", d.to_bytes(48, "big") if key is None else key)
    st.write("uspdm/slot0_p384.der", good if chain is None else chain)
    st.write("uspdm/slot3_p384.der", good)
    return Identity(st, None)


def test_damaged_identity_is_not_provisioned():
    """A truncated/zero/0xFF key or a truncated chain is found when the slots are
    listed (at boot), reported, and the slot counts as not provisioned."""
    from uspdm.crypto import ec as _ec

    assert _damaged().provisioned_mask("p384") == 0x09 and _damaged().problems == {}
    d = ids()["p384"][0].to_bytes(48, "big")
    for key, words in ((d[:47], "47 bytes"), (bytes(48), "not a valid private key"),
                       (b"\xff" * 48, "not a valid private key"), (b"", "0 bytes"),
                       (_ec.P384.n.to_bytes(48, "big"), "not a valid private key")):
        ident = _damaged(key=key)
        assert ident.provisioned_mask("p384") == 0, key
        assert words in ident.problems[("p384", -1)], ident.problems
    good = ids()["p384"][1]
    for chain in (good[:-1], good[:200], b"\x00" * 40):
        ident = _damaged(chain=chain)
        assert ident.provisioned_mask("p384") == 0x08     # slot 0 out, slot 3 still fine
        assert "slot 0 reported as not provisioned" in ident.problems[("p384", 0)]


def test_boot_takes_the_key_from_the_leaf_and_checks_it_once():
    """Boot computes no d*G: the leaf certificate's key is used, checked against
    d*G once in slices (check_keys_iter), and the result kept on the storage."""
    d, chain = ids()["p384"]
    st = MemoryStorage()
    st.write("uspdm/key_p384.bin", d.to_bytes(48, "big"))
    st.write("uspdm/slot0_p384.der", chain)
    ident = Identity(st, None)
    assert ident.provisioned_mask("p384") == 0x01 and ident.keys_unchecked()
    assert ident._pubs == {} and st.read("uspdm/keychk_p384.bin") is None
    gen = ident.check_keys_iter()
    steps = 0
    try:
        while True:
            next(gen)
            steps += 1
    except StopIteration as e:
        assert e.value == []
    assert steps > 3 and not ident.keys_unchecked()
    assert ident._pubs["p384"] == ec.public_key(ec.P384, d) and len(st.read("uspdm/keychk_p384.bin")) == 16
    again = Identity(st, None)   # the next boot: checked already, nothing computed
    assert again.provisioned_mask("p384") == 0x01 and not again.keys_unchecked()
    assert again._pubs["p384"] == ec.public_key(ec.P384, d)
    # a new key with the old leaf: used until the check, which reports it and takes the slot out
    st.write("uspdm/key_p384.bin", (d ^ 1).to_bytes(48, "big"))
    other = Identity(st, None)
    assert other.provisioned_mask("p384") == 0x01 and other.keys_unchecked()
    assert ec.run_iter(other.check_keys_iter()) == ["p384"]
    assert other.provisioned_mask("p384") == 0 and "does not hold the device key" in other.problems[("p384", 0)]
    later = Identity(st, None)   # a failed check is not kept: the next boot checks again
    assert later.provisioned_mask("p384") == 0x01 and later.keys_unchecked()
    # a leaf without a P-384 key in its SubjectPublicKeyInfo
    st.write("uspdm/key_p256.bin", ids()["p256"][0].to_bytes(32, "big"))
    st.write("uspdm/slot0_p256.der", chain)
    bad = Identity(st, None)
    assert bad.provisioned_mask("p256") == 0 and "holds no p256 key" in bad.problems[("p256", 0)]


def test_measurement_blocks_and_summary():
    m = Measurements([(3, 1, "digest", b"abc"), (1, 6, "raw", b"v1")])
    m.add_svn(0x43, 0x0102)
    m.add_device_mode()
    assert [b.index for b in m.blocks] == [1, 3, 0x43, 0xFE] and m.count() == 4
    rec, n = m.record(0xFF, "sha256")
    want = (expected_block(1, 6, "raw", b"v1", "sha256") + expected_block(3, 1, "digest", b"abc", "sha256")
            + expected_block(0x43, 7, "raw", b"\x02\x01" + bytes(6), "sha256"))
    assert n == 4 and rec.startswith(want)
    dm = rec[len(want):]
    assert dm[:7] == bytes((0xFE, 1, 19, 0, 0x85, 16, 0)) and len(dm) == 23
    assert m.record(2, "sha256") is None
    assert m.summary_hash(1, "sha384", "sha256") == sha2.new(
        "sha384", expected_block(3, 1, "digest", b"abc", "sha256")).digest()
    assert m.summary_hash(0xFF, "sha256") == sha2.new("sha256", rec).digest()
    v = m.version
    m.set_raw(1, b"v2")
    assert m.version == v + 1 and m.record(1, "sha384")[0][7:] == b"v2"
    raises(ValueError, Measurements, [(0, 1, "raw", b"x")])
    raises(ValueError, Measurements, [(1, 1, "hashed", b"x")])


def test_file_digests_streamed():
    with scratch_dir("uspdm-meas") as tmp:
        _file_digests_streamed(tmp)


def _file_digests_streamed(TMP):
    data = bytes(range(256)) * 9 + b"tail"
    p1 = TMP + "/uspdm-meas-a.bin"
    p2 = TMP + "/uspdm-meas-b.bin"
    with open(p1, "wb") as f:
        f.write(data)
    with open(p2, "wb") as f:
        f.write(b"second")
    assert file_digest(p1, "sha384") == sha2.new("sha384", data).digest()
    want = sha2.new("sha256")
    for p, d in ((p1, data), (p2, b"second")):
        pb = p.encode()
        want.update(bytes((len(pb) & 0xFF, len(pb) >> 8)) + pb + len(d).to_bytes(4, "little") + d)
    assert files_digest([p1, p2], "sha256") == want.digest()
    m = Measurements()
    m.add_file(1, p1)
    m.add_files(2, [p1, p2], dmtf_type=3)
    m.prepare("sha384")
    assert m.record(1, "sha384")[0] == bytes((1, 1, 51, 0, 1, 48, 0)) + sha2.new("sha384", data).digest()
    assert m.get(2).tcb is False and m.get(1).tcb is True
    with open(p1, "wb") as f:
        f.write(b"changed")
    assert m.record(1, "sha384")[0][7:] == sha2.new("sha384", data).digest()  # cached until refresh
    m.refresh()
    assert m.record(1, "sha384")[0][7:] == sha2.new("sha384", b"changed").digest()
