"""GET_VERSION, GET_CAPABILITIES, NEGOTIATE_ALGORITHMS (DSP0274 1.0-1.3), incl. negative cases."""
from test_spdm_common import (
    parametrize, CHUNK_CAP, Peer, err, get_caps, get_digests, get_version, le32, make, neg_algs, rd16, rd32)

from uspdm.responder import Config

V = [0x10, 0x11, 0x12, 0x13]


def test_version_response():
    r = make()
    resp = r.handle(get_version())
    assert resp == bytes((0x10, 0x04, 0, 0, 0, 4)) + b"\x00\x10\x00\x11\x00\x12\x00\x13"


def test_version_configurable_and_mismatch():
    r = make(versions=[0x12, 0x11])
    assert r.handle(get_version()) == bytes((0x10, 0x04, 0, 0, 0, 2)) + b"\x00\x11\x00\x12"
    err(r.handle(b"\x11\x84\x00\x00"), 0x41, v=0x10)
    err(r.handle(b"\x10\x84\x00\x00\x00"), 0x01, v=0x10)
    # a version we do not offer is refused at GET_CAPABILITIES
    err(r.handle(get_caps(0x13)), 0x41)


def test_requests_before_version():
    # before GET_CAPABILITIES succeeded, ERROR carries SPDMVersion 0x10
    r = make()
    err(r.handle(get_caps(0x12)), 0x04, v=0x10)
    err(r.handle(get_digests(0x11)), 0x04, v=0x10)
    err(r.handle(bytes((0x55, 0x81, 0, 0))), 0x04, v=0x10)
    r.handle(get_version())
    err(r.handle(neg_algs(0x13)), 0x04, v=0x10)
    err(r.handle(get_caps(0x14)), 0x41, v=0x10)
    err(r.handle(get_caps(0x0F)), 0x41, v=0x10)
    err(r.handle(get_caps(0x12)[:-1]), 0x01, v=0x12)  # a field error: the request's version


@parametrize("v", V)
def test_capabilities(v):
    r = make(ct_exponent=17, data_transfer_size=512, max_spdm_msg_size=2048)
    r.handle(get_version())
    resp = r.handle(get_caps(v))
    assert resp[:2] == bytes((v, 0x61)) and resp[5] == 17
    flags = rd32(resp, 8)
    base = 0x02 | 0x04 | 0x10  # CERT, CHAL, MEAS_CAP=signed
    if v >= 0x12:
        assert len(resp) == 20 and flags == base | CHUNK_CAP
        assert rd32(resp, 12) == 512 and rd32(resp, 16) == 2048
    else:
        assert len(resp) == 12 and flags == base
    # order: a second GET_CAPABILITIES is unexpected
    err(r.handle(get_caps(v)), 0x04, v=v)


def test_capabilities_meas_unsigned_and_fresh():
    r = make(meas_cap="unsigned", meas_fresh=True, chunk_cap=False)
    r.handle(get_version())
    c = r.handle(get_caps(0x12))
    assert rd32(c, 8) == 0x02 | 0x04 | 0x08 | 0x20
    assert rd32(c, 12) == rd32(c, 16) == 1024  # no CHUNK_CAP: DataTransferSize == MaxSPDMmsgSize


@parametrize("v", [0x11, 0x12, 0x13])
def test_capabilities_invalid(v):
    cases = [
        get_caps(v)[:-1],                        # short
        get_caps(v, flags=0x6 | 0xC00),          # PSK_CAP reserved value 3
        get_caps(v, flags=0x6 | 0x40),           # ENCRYPT without KEY_EX/PSK
        get_caps(v, flags=0x4),                  # CHAL without CERT/PUB_KEY_ID
        get_caps(v, flags=0x6 | 0x10000),        # CERT and PUB_KEY_ID
        get_caps(v, ct=32),                      # CT exponent too large
    ]
    if v >= 0x12:
        cases += [
            get_caps(v, dts=41, mx=41),                          # below MinDataTransferSize
            get_caps(v, flags=0x6 | CHUNK_CAP, dts=100, mx=99),  # DTS > MaxSPDMmsgSize
            get_caps(v, dts=100, mx=200),                        # no CHUNK_CAP: DTS must equal max
        ]
    if v >= 0x13:
        cases.append(get_caps(v, p1=1))                          # algorithms requested without CHUNK_CAP
    for c in cases:
        r = make()
        r.handle(get_version())
        err(r.handle(c), 0x01, v=v)
        # the connection is still waiting for GET_CAPABILITIES
        assert r.handle(get_caps(v))[1] == 0x61


def test_capabilities_13_supported_algorithms_block():
    r = make()
    r.handle(get_version())
    resp = r.handle(get_caps(0x13, flags=0x6 | CHUNK_CAP, p1=1))
    assert len(resp) == 20 + 30
    # DSP0274 1.3 / libspdm: CAPABILITIES Param1 bit 0 announces the SupportedAlgorithms block
    assert resp[:4] == bytes((0x13, 0x61, 0x01, 0x00))
    blk = resp[20:]
    assert blk[0] == 0 and blk[1] == 0 and rd16(blk, 2) == 30 and blk[4] == 1
    assert rd32(blk, 6) == 0x90 and rd32(blk, 10) == 0x3
    assert blk[14:26] == bytes(12) and blk[26:30] == bytes(4)  # reserved, ext counts 0, MEL spec 0
    # the block follows the request's AlgStruct layout: AlgType, AlgCount 0x20, AlgSupported u16
    r = make(dhe_priority=[0x10], aead_priority=[0x02])
    r.handle(get_version())
    resp = r.handle(get_caps(0x13, flags=0x6 | CHUNK_CAP, p1=1))
    assert resp[2] == 1 and len(resp) == 20 + 30 + 8
    blk = resp[20:]
    assert blk[0] == 2 and rd16(blk, 2) == 38
    assert blk[30:] == bytes((2, 0x20, 0x10, 0, 3, 0x20, 0x02, 0))
    # not requested: plain 20-byte CAPABILITIES, Param1 0
    r = make()
    r.handle(get_version())
    resp = r.handle(get_caps(0x13, flags=0x6 | CHUNK_CAP))
    assert len(resp) == 20 and resp[2] == 0


@parametrize("v", V)
def test_algorithms_default_p384(v):
    p = Peer(make(), v)
    tabs = [(2, 0x18, 0), (3, 0x02, 0), (4, 0x90, 0), (5, 0x01, 0)] if v >= 0x11 else []
    p.vca(algs=neg_algs(v, tables=tabs))
    resp = p.r.handle(get_digests(v))
    assert resp[1] == 0x01
    # re-run to inspect the ALGORITHMS response itself
    r = make()
    r.handle(get_version())
    r.handle(get_caps(v))
    a = r.handle(neg_algs(v, tables=tabs))
    n = 4 if v >= 0x11 else 0
    assert a[:4] == bytes((v, 0x63, n, 0)) and rd16(a, 4) == 36 + 4 * n == len(a)
    assert a[6] == 1 and a[7] == (2 if v >= 0x12 else 0)
    assert rd32(a, 8) == 0x04 and rd32(a, 12) == 0x80 and rd32(a, 16) == 0x02
    assert a[31] == 0 and a[32] == 0 and a[33] == 0  # MELspecSel, ext counts
    for i in range(n):
        t = a[36 + 4 * i:40 + 4 * i]
        assert t == bytes((tabs[i][0], 0x20, 0, 0))  # nothing selected (no sessions yet)


def test_algorithms_priority_and_pairs():
    # board prefers P-256
    r = make(asym_priority=["p256", "p384"])
    p = Peer(r, 0x12)
    a = p.vca()[-36:]
    assert rd32(a, 12) == 0x10 and rd32(a, 16) == 0x01 and rd32(a, 8) == 0x02
    # requester offers only P-256 with SHA-384: independent hash selection
    r = make()
    p = Peer(r, 0x12)
    a = p.vca(algs=neg_algs(0x12, asym=0x10, hashes=0x2))[-36:]
    assert rd32(a, 12) == 0x10 and rd32(a, 16) == 0x02 and rd32(a, 8) == 0x04
    # no measurement spec requested: no measurement hash
    p = Peer(make(), 0x12)
    a = p.vca(algs=neg_algs(0x12, spec=0))[-36:]
    assert a[6] == 0 and rd32(a, 8) == 0
    # opaque format 0 requested: selected
    p = Peer(make(), 0x12)
    assert p.vca(algs=neg_algs(0x12, other=1))[-36:][7] == 1
    # OtherParamsSupport is a set of formats: both offered -> exactly one selected,
    # the general format 1 first (libspdm's priority); only unknown ones -> none
    for offered, sel in ((3, 2), (0x0B, 2), (0x09, 1), (0x0C, 0), (0, 0)):
        p = Peer(make(), 0x12)
        assert p.vca(algs=neg_algs(0x12, other=offered))[-36:][7] == sel


@parametrize("v", [0x10, 0x11, 0x12, 0x13])
def test_algorithms_invalid(v):
    cases = [
        neg_algs(v)[:31],                         # short
        neg_algs(v, length=33),                   # Length does not match the content
        neg_algs(v, asym=0x01),                   # no common asymmetric algorithm (RSA only)
        neg_algs(v, hashes=0x04),                 # no common hash (SHA-512 only)
        neg_algs(v, ext_a=2)[:-4],                # ext algorithms truncated
    ]
    if v == 0x10:
        cases.append(neg_algs(v, ext_a=9, length=None))  # > 8 external algorithms; also Length > 64
    if v >= 0x11:
        cases += [
            neg_algs(v, tables=[(1, 1, 0)]),                  # unknown AlgType
            neg_algs(v, tables=[(3, 2, 0), (2, 0x10, 0)]),    # AlgType not increasing
            neg_algs(v, tables=[(2, 0x10, 0), (2, 0x10, 0)]),  # duplicate AlgType
            neg_algs(v, tables=[(2, 0, 0)]),                  # empty AlgSupported
            neg_algs(v, tables=[(2, 0x10, 0)], ntab=2),       # count larger than the tables present
            neg_algs(v, ext_a=10, ext_h=11),                  # > 20 external algorithms / Length > 128
        ]
        bad = bytearray(neg_algs(v, tables=[(2, 0x10, 0)]))
        bad[33] = 0x30  # AlgCount fixed size 3
        cases.append(bytes(bad))
    for c in cases:
        r = make()
        r.handle(get_version())
        r.handle(get_caps(v))
        err(r.handle(c), 0x01, v=v)
        assert r.handle(neg_algs(v))[1] == 0x63


def test_algorithms_order_and_version():
    r = make()
    r.handle(get_version())
    err(r.handle(neg_algs(0x12)), 0x04)       # before CAPABILITIES
    r.handle(get_caps(0x12))
    err(r.handle(neg_algs(0x11)), 0x41, v=0x12)  # version differs from the negotiated one
    assert r.handle(neg_algs(0x12))[1] == 0x63
    err(r.handle(neg_algs(0x12)), 0x04, v=0x12)  # twice


def test_unsupported_and_order_errors():
    p = Peer(make(), 0x12)
    r = p.r
    r.handle(get_version())
    r.handle(get_caps(0x12))
    err(r.handle(get_digests(0x12)), 0x04, v=0x12)          # before ALGORITHMS
    err(r.handle(bytes((0x12, 0x83, 0, 0)) + bytes(32)), 0x04)  # CHALLENGE before ALGORITHMS
    err(r.handle(bytes((0x13, 0xE0, 0, 0))), 0x04, v=0x12)  # order is checked before the version
    err(r.handle(bytes((0x12, 0xE4, 0, 0)) + bytes(40)), 0x04)  # anything before ALGORITHMS
    r.handle(neg_algs(0x12))
    err(r.handle(bytes((0x12, 0xE4, 0, 0)) + bytes(40)), 0x07, data=0xE4)  # KEY_EXCHANGE unsupported
    err(r.handle(bytes((0x12, 0xFE, 0, 0))), 0x07, data=0xFE)
    err(r.handle(bytes((0x12, 0x04, 0, 0))), 0x07, data=0x04)  # a response code
    err(r.handle(bytes((0x13, 0xE0, 0, 0))), 0x41, v=0x12)


def test_get_version_resets():
    p = Peer(make(), 0x13)
    p.vca()
    assert p.r.handle(get_version())[1] == 0x04
    err(p.r.handle(get_digests(0x13)), 0x04)
    assert p.r.handle(get_caps(0x11))[1] == 0x61  # a different version after the reset


def test_config_rejects_unknown_option():
    try:
        Config(no_such_option=1)
    except AttributeError:
        return
    raise AssertionError("unknown option accepted")


def test_dts_le32_helper():
    assert le32(0x01020304) == b"\x04\x03\x02\x01"


def test_13_multi_key_conn_selection():
    # a requester that can only do multi-key connections gets RequesterMultiKeyConnSel
    p = Peer(make(), 0x13)
    a = p.vca(caps=get_caps(0x13, flags=0x6 | 0x04000000))[-36:]
    assert a[7] == 0x12
    p = Peer(make(), 0x13)
    assert p.vca()[-36:][7] == 0x02
