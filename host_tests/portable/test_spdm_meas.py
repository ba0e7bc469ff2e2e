"""GET_MEASUREMENTS / MEASUREMENTS: count, one, all, signed/unsigned, L1 recomputed by the test."""
from test_spdm_common import (
    parametrize, MEAS_DEF, Peer, challenge, err, expected_block, get_cert, get_digests, get_meas, make,
    make_identity, make_meas, neg_algs, rd16, rd24, verify_sig)

CTX = b"responder-measurements signing"
V = [0x10, 0x11, 0x12, 0x13]


def all_blocks(hashname="sha384"):
    return b"".join(expected_block(d[0], d[1], d[2], d[3], hashname) for d in MEAS_DEF)


def parse(v, resp, signed, sig_size=96):
    n = resp[4]
    ln = rd24(resp, 5)
    rec = resp[8:8 + ln]
    o = 8 + ln
    nonce = resp[o:o + 32]
    o += 32
    ol = rd16(resp, o)
    o += 2 + ol
    ctx = None
    if v >= 0x13:
        ctx = resp[o:o + 8]
        o += 8
    assert len(resp) == o + (sig_size if signed else 0)
    return n, rec, nonce, ctx, o


@parametrize("v", V)
def test_count_one_all(v):
    p = Peer(make(), v)
    p.vca()
    r = p.ok(get_meas(v, False, 0), 0x60)
    n, rec, nonce, ctx, _ = parse(v, r, False)
    assert r[2] == len(MEAS_DEF) and n == 0 and rec == b"" and len(nonce) == 32
    if v >= 0x13:
        assert ctx == b"CTX-meas"
    r = p.ok(get_meas(v, False, 0x41), 0x60)
    n, rec, _, _, _ = parse(v, r, False)
    assert r[2] == 0 and n == 1 and rec == expected_block(0x41, 6, "raw", b"MicroPython 1.26.0", "sha384")
    r = p.ok(get_meas(v, False, 0xFF), 0x60)
    n, rec, _, _, _ = parse(v, r, False)
    assert n == len(MEAS_DEF) and rec == all_blocks()
    err(p.x(get_meas(v, False, 7)), 0x01, v=v)   # unknown index


@parametrize("v", V)
def test_signed_l1(v):
    p = Peer(make(), v)
    a = p.vca()
    l1 = a if v >= 0x12 else b""
    for op in (0, 1, 0xFE):
        q = get_meas(v, False, op)
        l1 += q + p.ok(q, 0x60)
    q = get_meas(v, True, 0xFF)
    r = p.ok(q, 0x60)
    n, rec, nonce, ctx, o = parse(v, r, True)
    assert rec == all_blocks()
    if v >= 0x11:
        assert r[3] & 0x0F == 0
    if v >= 0x12:
        assert r[3] & 0x30 == 0x20  # no change detected
    else:
        assert r[3] & 0x30 == 0
    assert verify_sig(v, "p384", "sha384", l1 + q + r[:o], CTX, r[o:])
    # L1 was reset after the signed response
    q2 = get_meas(v, True, 2, nonce=b"\x44" * 32)
    r2 = p.ok(q2, 0x60)
    o2 = parse(v, r2, True)[4]
    assert verify_sig(v, "p384", "sha384", (a if v >= 0x12 else b"") + q2 + r2[:o2], CTX, r2[o2:])


def test_l1_reset_by_other_request_and_errors():
    v = 0x12
    p = Peer(make(), v)
    a = p.vca()
    p.ok(get_meas(v, False, 1), 0x60)
    p.ok(get_digests(v), 0x01)           # any other request resets L1
    q1 = get_meas(v, False, 2)
    r1 = p.ok(q1, 0x60)
    q = get_meas(v, True, 1)
    r = p.ok(q, 0x60)
    o = parse(v, r, True)[4]
    assert verify_sig(v, "p384", "sha384", a + q1 + r1 + q + r[:o], CTX, r[o:])
    # a failing GET_MEASUREMENTS resets L1 as well
    p.ok(get_meas(v, False, 1), 0x60)
    err(p.x(get_meas(v, False, 9)), 0x01)
    q = get_meas(v, True, 1)
    r = p.ok(q, 0x60)
    o = parse(v, r, True)[4]
    assert verify_sig(v, "p384", "sha384", a + q + r[:o], CTX, r[o:])


def test_content_changed():
    meas = make_meas()
    p = Peer(make(meas=meas), 0x13)
    p.vca()
    p.ok(get_meas(0x13, False, 1), 0x60)
    meas.set_raw(0x41, b"MicroPython 1.27.0")
    r = p.ok(get_meas(0x13, True, 0x41), 0x60)
    assert r[3] & 0x30 == 0x10
    assert parse(0x13, r, True)[1][7:] == b"MicroPython 1.27.0"
    r = p.ok(get_meas(0x13, True, 0x41), 0x60)
    assert r[3] & 0x30 == 0x20


def test_signed_slot_and_p256():
    ident = make_identity(slots=(0, 2))
    p = Peer(make(ident=ident), 0x11)
    a = p.vca(algs=neg_algs(0x11, asym=0x10, hashes=0x1))
    q = get_meas(0x11, True, 1, slot=2)
    r = p.ok(q, 0x60)
    o = parse(0x11, r, True, 64)[4]
    assert r[3] == 2 and parse(0x11, r, True, 64)[1] == expected_block(1, 1, "digest", b"firmware image", "sha256")
    assert verify_sig(0x11, "p256", "sha256", q + r[:o], CTX, r[o:])
    assert a


@parametrize("v", [0x11, 0x12, 0x13])
def test_measurements_invalid(v):
    p = Peer(make(), v)
    p.vca()
    err(p.x(get_meas(v, True, 1, slot=1)), 0x01, v=v)     # slot without a chain
    err(p.x(get_meas(v, True, 1, slot=0x0F)), 0x01, v=v)  # no pre-provisioned public key
    err(p.x(get_meas(v, True, 1)[:-1]), 0x01, v=v)        # short
    if v >= 0x13:
        err(p.x(get_meas(v, False, 1)[:-1]), 0x01, v=v)   # requester context missing
    assert p.x(get_meas(v, True, 1))[1] == 0x60


def test_measurement_caps():
    p = Peer(make(meas_cap="unsigned"), 0x12)
    p.vca()
    err(p.x(get_meas(0x12, True, 1)), 0x01)
    assert p.x(get_meas(0x12, False, 1))[1] == 0x60
    p = Peer(make(meas_cap=None), 0x12)
    p.vca()
    err(p.x(get_meas(0x12, False, 1)), 0x07, data=0xE0)
    p = Peer(make(), 0x12)
    p.vca(algs=neg_algs(0x12, spec=0))
    err(p.x(get_meas(0x12, False, 1)), 0x04)


def test_measurements_and_challenge_interleave():
    v = 0x13
    p = Peer(make(), v)
    a = p.vca()
    p.ok(get_cert(v, 0, 0, 100), 0x02)
    q = get_meas(v, True, 0xFF)
    r = p.ok(q, 0x60)
    o = parse(v, r, True)[4]
    assert verify_sig(v, "p384", "sha384", a + q + r[:o], CTX, r[o:])
    ch = challenge(v)
    c = p.ok(ch, 0x03)
    oc = 4 + 48 + 32 + 2 + 8
    assert verify_sig(v, "p384", "sha384", a + ch + c[:oc], b"responder-challenge_auth signing", c[oc:])


def test_compact_and_files_string(tmp_path=None):
    """Measurements.compact() copies the cached digests into new objects (same values,
    what the board does once its background digests are done); add_files keeps the paths
    as one string and digests them as files_digest does (SHA-256 checked with the port's
    hashlib)."""
    import hashlib
    import os

    from uspdm.measurements import Measurements

    d = "/tmp" if tmp_path is None else str(tmp_path)
    paths = []
    for i, data in enumerate((b"abc" * 100, b"", b"\x00" * 700)):
        p = os.path.join(d, "uspdm_meas_compact_%d.bin" % i)
        with open(p, "wb") as f:
            f.write(data)
        paths.append(p)
    m = Measurements()
    m.add_files(1, paths)
    m.add_digest(2, 3, b"config")
    h = hashlib.sha256()
    for p in paths:
        pb = p.encode()
        with open(p, "rb") as f:
            data = f.read()
        h.update(len(pb).to_bytes(2, "little") + pb + len(data).to_bytes(4, "little") + data)
    want = {1: h.digest(), 2: hashlib.sha256(b"config").digest()}
    before = {}
    for b in m.blocks:
        assert b.value_for("sha256")[1] == want[b.index]
        before[b.index] = b._digests["sha256"]
    m.compact()
    for b in m.blocks:
        got = b._digests["sha256"]
        assert got == want[b.index] and got is not before[b.index]
        assert b.value_for("sha256")[1] == want[b.index]
    for p in paths:
        os.remove(p)


def test_freeze_same_answers():
    """Measurements.freeze(): records, one index, count and both summary hashes
    are what the blocks gave (both hashes, OpenPRoT's single block too); a hash
    not digested yet leaves it as it was; a frozen hash that was not asked has no record."""
    from uspdm.measurements import Measurements

    def build():
        m = Measurements()
        m.add_digest(1, 1, b"firmware")
        m.add_digest(2, 3, b"config", tcb=True)
        m.add_raw(0x41, 6, b"MicroPython 1.26")
        m.add_svn(0x43, 7)
        m.add_device_mode()
        return m

    import os

    path = "/tmp/uspdm_meas_freeze.bin"
    with open(path, "wb") as f:
        f.write(b"firmware file" * 50)
    ref = build()
    ref.add_file(3, path)
    m = build()
    m.add_file(3, path)
    assert not m.freeze(("sha384", "sha256"))   # the file not digested yet
    assert m.blocks is not None
    m.prepare("sha384")
    assert not m.freeze(("sha384", "sha256"))
    m.prepare("sha256")
    assert m.freeze(("sha384", "sha256")) and m.blocks is None
    assert m.count() == ref.count() == 6
    for h in ("sha384", "sha256"):
        assert m.record(0xFF, h) == ref.record(0xFF, h)
        for i in (1, 2, 3, 0x41, 0x43, 0xFE, 0x42):
            assert m.record(i, h) == ref.record(i, h)
        for kind in (1, 0xFF):
            assert m.summary_hash(kind, "sha384", h) == ref.summary_hash(kind, "sha384", h)
    assert m.record(0xFF, "sha512") is None
    s, r = build(), build()
    s.single = r.single = 0xFD
    assert s.freeze(("sha384", "sha256"))   # no file: in-memory values are digested here
    assert s.count() == 1 and s.record(0xFF, "sha384") == r.record(0xFF, "sha384")
    assert s.record(0xFD, "sha256") == r.record(0xFD, "sha256") and s.record(1, "sha256") is None
    assert s.summary_hash(1, "sha384") == r.summary_hash(1, "sha384")
    os.remove(path)
