"""GET_DIGESTS, GET_CERTIFICATE, CHALLENGE / CHALLENGE_AUTH with M1 recomputed by the test."""
from test_spdm_common import (
    parametrize, MEAS_DEF, Peer, challenge, chain_buffer, err, expected_block, get_caps, get_cert,
    get_digests, get_meas, get_version, ids, make, make_identity, neg_algs, rd16, rd24, rd32,
    verify_sig)

from uspdm.crypto import sha2

V = [0x10, 0x11, 0x12, 0x13]
CTX = b"responder-challenge_auth signing"


@parametrize("v", V)
def test_digests(v):
    p = Peer(make(), v)
    p.vca()
    d = p.ok(get_digests(v), 0x01)
    assert d[2] == (0xFF if v >= 0x13 else 0) and d[3] == 0x01
    assert d[4:] == sha2.new("sha384", chain_buffer("p384", "sha384")).digest()


def test_digests_several_slots_and_p256():
    ident = make_identity(slots=(0, 3, 7))
    p = Peer(make(ident=ident), 0x12)
    p.vca(algs=neg_algs(0x12, asym=0x10, hashes=0x1))
    d = p.ok(get_digests(0x12), 0x01)
    h = sha2.new("sha256", chain_buffer("p256", "sha256")).digest()
    assert d[3] == 0x89 and d[4:] == h * 3


def test_certificate_read_in_pieces():
    for v in V:
        p = Peer(make(), v)
        p.vca()
        want = chain_buffer("p384", "sha384")
        got = b""
        off = 0
        while True:
            c = p.ok(get_cert(v, 0, off, 200), 0x02)
            n = rd16(c, 4)
            assert c[2] == 0 and n == len(c) - 8 and n <= 200
            assert rd16(c, 6) == len(want) - off - n
            got += c[8:]
            off += n
            if rd16(c, 6) == 0:
                break
        assert got == want


def test_certificate_whole_and_limits():
    p = Peer(make(data_transfer_size=4096), 0x12)
    p.vca()
    want = chain_buffer("p384", "sha384")
    c = p.ok(get_cert(0x12, 0, 0, 0xFFFF), 0x02)
    assert c[8:] == want and rd16(c, 6) == 0
    # portion limited by the requester's DataTransferSize without chunking
    p = Peer(make(), 0x12)
    p.vca(caps=get_caps(0x12, dts=300, mx=300))
    c = p.ok(get_cert(0x12, 0, 10, 0xFFFF), 0x02)
    assert len(c) == 300 and c[8:] == want[10:302] and rd16(c, 6) == len(want) - 302
    # 1.0/1.1: limited by our own DataTransferSize
    p = Peer(make(data_transfer_size=256), 0x11)
    p.vca()
    c = p.ok(get_cert(0x11, 0, 0, 0xFFFF), 0x02)
    assert len(c) == 256


def test_certificate_13_slot_size():
    p = Peer(make(), 0x13)
    p.vca()
    c = p.ok(get_cert(0x13, 0, 100, 100, p2=1), 0x02)
    assert rd16(c, 4) == 0 and rd16(c, 6) == len(chain_buffer("p384", "sha384")) and len(c) == 8
    assert p.ok(get_cert(0x13, 4, 0, 100, p2=1), 0x02) == bytes((0x13, 0x02, 4, 0, 0, 0, 0, 0))  # empty slot
    err(p.x(get_cert(0x13, 4, 0, 100)), 0x01)


def test_digests_nothing_provisioned():
    for v in (0x11, 0x12):
        p = Peer(make(ident=make_identity(slots=())), v)
        p.vca()
        err(p.x(get_digests(v)), 0x07, data=0x81)
    p = Peer(make(ident=make_identity(slots=())), 0x13)
    p.vca()
    assert p.ok(get_digests(0x13), 0x01) == bytes((0x13, 0x01, 0xFF, 0))


@parametrize("v", [0x10, 0x12, 0x13])
def test_certificate_invalid(v):
    p = Peer(make(), v)
    p.vca()
    total = len(chain_buffer("p384", "sha384"))
    err(p.x(get_cert(v, 0, total, 10)), 0x01, v=v)      # offset at the end
    err(p.x(get_cert(v, 0, 0xFFFF, 10)), 0x01, v=v)     # offset beyond
    err(p.x(get_cert(v, 1, 0, 10)), 0x01, v=v)          # slot not provisioned
    err(p.x(get_cert(v, 9, 0, 10)), 0x01, v=v)          # slot out of range
    err(p.x(get_cert(v, 0, 0, 10)[:7]), 0x01, v=v)      # short
    assert p.x(get_cert(v, 0, 0, 10))[1] == 0x02


def test_cert_cap_off():
    p = Peer(make(cert_cap=False, chal_cap=False), 0x12)
    p.vca()
    err(p.x(get_digests(0x12)), 0x07, data=0x81)
    err(p.x(get_cert(0x12)), 0x07, data=0x82)
    err(p.x(challenge(0x12)), 0x07, data=0x83)


def test_flags_without_cert_cap_stay_consistent():
    # DSP0274 / validator assertion 2.x.13: CHAL_CAP or MEAS_CAP=2 (signed) need
    # CERT_CAP (or PUB_KEY_ID_CAP, which uspdm does not offer)
    for v in V:
        r = make(cert_cap=False)
        r.handle(get_version())
        c = r.handle(get_caps(v))
        flags = rd32(c, 8)
        assert flags & 0x3E == 0x08, hex(flags)    # MEAS_CAP unsigned only; no CERT/CHAL
    p = Peer(make(cert_cap=False), 0x12)
    p.vca()
    err(p.x(challenge(0x12)), 0x07, data=0x83)
    err(p.x(get_meas(0x12, True)), 0x01)
    assert p.x(get_meas(0x12, False))[1] == 0x60


@parametrize("v", [0x11, 0x12])
def test_opaque_data_and_1024_limit(v):
    blob = bytes((1, 0, 0, 0, 0, 0, 4, 0, 0xAA, 0xBB, 0xCC, 0xDD))
    for opaque, want in ((blob, blob), (bytes(1024), bytes(1024)), (bytes(1025), b"")):
        p = Peer(make(opaque=opaque), v)
        p.vca()
        resp = p.ok(challenge(v, 0, 0), 0x03)
        o = 4 + 48 + 32
        assert rd16(resp, o) == len(want) and resp[o + 2:o + 2 + len(want)] == want
        assert len(resp) == o + 2 + len(want) + 96
        m = p.ok(get_meas(v, False, 0x41), 0x60)
        o = 8 + rd24(m, 5) + 32
        assert rd16(m, o) == len(want) and m[o + 2:] == want
    # SPDM 1.2+ with OpaqueDataFmt none selected: no opaque data at all
    if v >= 0x12:
        p = Peer(make(opaque=blob), v)
        p.vca(algs=neg_algs(v, other=0))
        resp = p.ok(challenge(v, 0, 0), 0x03)
        assert rd16(resp, 4 + 48 + 32) == 0


def summary(kind, hashname):
    blocks = b""
    for d in MEAS_DEF:
        if kind == 0xFF or d[1] in (0, 1):
            blocks += expected_block(d[0], d[1], d[2], d[3], hashname)
    return sha2.new(hashname, blocks).digest()


@parametrize("v", V)
def test_challenge_signature_over_m1(v):
    p = Peer(make(), v)
    a = p.vca()
    gd = get_digests(v)
    b = gd + p.ok(gd, 0x01)
    gc = get_cert(v, 0, 0, 500)
    b += gc + p.ok(gc, 0x02)
    gc = get_cert(v, 0, 500, 0xFFFF)
    b += gc + p.ok(gc, 0x02)
    ch = challenge(v, 0, 0xFF)
    resp = p.ok(ch, 0x03)
    H = 48
    assert resp[2] == 0 and resp[3] == 0x01
    assert resp[4:4 + H] == sha2.new("sha384", chain_buffer("p384", "sha384")).digest()
    o = 4 + H + 32
    assert resp[o:o + H] == summary(0xFF, "sha384")
    o += H
    assert rd16(resp, o) == 0
    o += 2
    if v >= 0x13:
        assert resp[o:o + 8] == b"CTX-0001"
        o += 8
    assert len(resp) == o + 96
    assert verify_sig(v, "p384", "sha384", a + b + ch + resp[:o], CTX, resp[o:])
    # B and C were consumed: the next CHALLENGE covers A || C only
    ch2 = challenge(v, 0, 1, nonce=b"\x33" * 32)
    resp2 = p.ok(ch2, 0x03)
    o2 = 4 + H + 32 + H + 2 + (8 if v >= 0x13 else 0)
    assert resp2[4 + H + 32:4 + H + 32 + H] == summary(1, "sha384")
    assert verify_sig(v, "p384", "sha384", a + ch2 + resp2[:o2], CTX, resp2[o2:])


def test_repeated_digests_restart_b():
    # GET_DIGESTS resets B: digests, certificate, digests again -> the
    # CHALLENGE_AUTH signature covers A || (last GET_DIGESTS/DIGESTS) || C.
    v = 0x12
    p = Peer(make(), v)
    a = p.vca()
    gd = get_digests(v)
    p.ok(gd, 0x01)
    gc = get_cert(v, 0, 0, 0xFFFF)
    p.ok(gc, 0x02)
    b = gd + p.ok(gd, 0x01)
    ch = challenge(v, 0, 0)
    resp = p.ok(ch, 0x03)
    o = 4 + 48 + 32 + 2
    assert verify_sig(v, "p384", "sha384", a + b + ch + resp[:o], CTX, resp[o:])


def test_challenge_p256_no_summary():
    p = Peer(make(), 0x12)
    a = p.vca(algs=neg_algs(0x12, asym=0x10, hashes=0x1))
    ch = challenge(0x12, 0, 0)
    resp = p.ok(ch, 0x03)
    o = 4 + 32 + 32 + 2
    assert len(resp) == o + 64
    assert verify_sig(0x12, "p256", "sha256", a + ch + resp[:o], CTX, resp[o:])


def test_challenge_nonce_is_fresh():
    p = Peer(make(), 0x12)
    p.vca()
    n1 = p.ok(challenge(0x12), 0x03)[52:84]
    n2 = p.ok(challenge(0x12), 0x03)[52:84]
    assert n1 != n2


@parametrize("v", [0x11, 0x13])
def test_challenge_invalid(v):
    p = Peer(make(), v)
    p.vca()
    err(p.x(challenge(v, 1)), 0x01, v=v)        # slot not provisioned
    err(p.x(challenge(v, 8)), 0x01, v=v)        # slot out of range
    err(p.x(challenge(v, 0xFF)), 0x01, v=v)     # no pre-provisioned public key
    err(p.x(challenge(v, 0, 2)), 0x01, v=v)     # bad summary type
    err(p.x(challenge(v)[:-1]), 0x01, v=v)      # short (1.3: requester context missing)
    assert p.x(challenge(v))[1] == 0x03


def test_challenge_summary_without_measurements():
    p = Peer(make(meas_cap=None), 0x12)
    p.vca()
    err(p.x(challenge(0x12, 0, 1)), 0x01)
    assert p.x(challenge(0x12, 0, 0))[1] == 0x03
    # and no measurement spec negotiated
    p = Peer(make(), 0x12)
    p.vca(algs=neg_algs(0x12, spec=0))
    err(p.x(challenge(0x12, 0, 0xFF)), 0x01)


def test_m1_reset_by_measurements_and_errors_do_not_change_it():
    v = 0x12
    p = Peer(make(), v)
    a = p.vca()
    p.ok(get_digests(v), 0x01)
    p.ok(get_meas(v, False, 0), 0x60)        # resets B
    gd = get_digests(v)
    b = gd + p.ok(gd, 0x01)
    err(p.x(get_cert(v, 5)), 0x01)           # failed request: no transcript change
    err(p.x(challenge(v, 3)), 0x01)
    ch = challenge(v)
    resp = p.ok(ch, 0x03)
    o = 4 + 48 + 32 + 2
    assert verify_sig(v, "p384", "sha384", a + b + ch + resp[:o], CTX, resp[o:])


def test_m1_kept_by_measurements_after_authentication():
    # libspdm_reset_message_buffer_via_request_code (used by libspdm's requester and
    # responder): GET_MEASUREMENTS ends an unfinished CHALLENGE sequence only while the
    # connection is not authenticated; after a CHALLENGE_AUTH, B keeps growing.
    v = 0x12
    p = Peer(make(), v)
    a = p.vca()
    p.ok(get_digests(v), 0x01)
    p.ok(get_meas(v, False, 1), 0x60)        # not authenticated yet: B restarts
    ch = challenge(v)
    resp = p.ok(ch, 0x03)
    o = 4 + 48 + 32 + 2
    assert verify_sig(v, "p384", "sha384", a + ch + resp[:o], CTX, resp[o:])
    gd = get_digests(v)
    b = gd + p.ok(gd, 0x01)
    p.ok(get_meas(v, False, 1), 0x60)        # authenticated: B is kept
    gc = get_cert(v, 0, 0, 0x200)
    b += gc + p.ok(gc, 0x02)
    p.ok(get_meas(v, True, 0xFF), 0x60)
    ch = challenge(v, nonce=b"\x44" * 32)
    resp = p.ok(ch, 0x03)
    assert verify_sig(v, "p384", "sha384", a + b + ch + resp[:o], CTX, resp[o:])
    # GET_VERSION starts a new, unauthenticated connection
    p = Peer(p.r, v)
    a = p.vca()
    p.ok(get_digests(v), 0x01)
    p.ok(get_meas(v, False, 1), 0x60)
    ch = challenge(v)
    resp = p.ok(ch, 0x03)
    assert verify_sig(v, "p384", "sha384", a + ch + resp[:o], CTX, resp[o:])


def test_identity_vectors_present():
    assert set(ids()) == {"p384", "p256"}
    assert get_version() == b"\x10\x84\x00\x00"
