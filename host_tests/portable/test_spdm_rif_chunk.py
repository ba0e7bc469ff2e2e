"""RESPOND_IF_READY (deferred signing), CHUNK_GET / CHUNK_SEND, ResponseTooLarge, resynch."""
from test_spdm_common import (
    parametrize, CHUNK_CAP, Peer, challenge, chain_buffer, err, get_caps, get_cert, get_digests, get_meas,
    get_version, le16, le32, make, make_meas, neg_algs, rd16, rd32, verify_sig)

CTX_C = b"responder-challenge_auth signing"
CTX_M = b"responder-measurements signing"


def rif(v, code, token):
    return bytes((v, 0xFF, code, token))


def test_deferred_challenge():
    v = 0x12
    r = make(defer_signing=True, rdt_exponent=18, rdtm=7)
    p = Peer(r, v)
    a = p.vca()
    ch = challenge(v)
    e = p.x(ch)
    err(e, 0x42, data=0, v=v)
    assert len(e) == 8 and e[4] == 18 and e[5] == 0x83 and e[7] == 7
    tok = e[6]
    assert r.pending()
    err(p.x(rif(v, 0x83, tok)), 0x42)           # not ready yet: ResponseNotReady again
    err(p.x(get_digests(v)), 0x03)               # other requests: Busy
    err(p.x(rif(v, 0x83, (tok + 1) & 0xFF)), 0x01)  # wrong token
    err(p.x(rif(v, 0xE0, tok)), 0x01)            # wrong request code
    err(p.x(rif(v, 0x83, tok) + b"\x00"), 0x01)  # RESPOND_IF_READY is a 4-byte header
    n = 0
    while r.work():
        n += 1
        assert n < 100000
    assert not r.pending() and n > 0
    resp = p.ok(rif(v, 0x83, tok), 0x03)
    o = 4 + 48 + 32 + 2
    assert verify_sig(v, "p384", "sha384", a + ch + resp[:o], CTX_C, resp[o:])
    err(p.x(rif(v, 0x83, tok)), 0x04)            # nothing pending any more
    # transcripts were updated exactly once: a new CHALLENGE covers A || C only
    ch2 = challenge(v, nonce=b"\x55" * 32)
    tok2 = p.x(ch2)[6]
    assert tok2 != tok
    while r.work():
        pass
    resp = p.ok(rif(v, 0x83, tok2), 0x03)
    assert verify_sig(v, "p384", "sha384", a + ch2 + resp[:o], CTX_C, resp[o:])


def test_deferred_measurements_and_version_while_pending():
    v = 0x13
    r = make(defer_signing=True)
    p = Peer(r, v)
    a = p.vca()
    q0 = get_meas(v, False, 1)
    l1 = a + q0 + p.ok(q0, 0x60)
    q = get_meas(v, True, 0xFF)
    e = p.x(q)
    err(e, 0x42)
    assert e[5] == 0xE0
    while r.work():
        pass
    resp = p.ok(rif(v, 0xE0, e[6]), 0x60)
    ln = resp[5] | (resp[6] << 8) | (resp[7] << 16)
    o = 8 + ln + 32 + 2 + 8
    assert verify_sig(v, "p384", "sha384", l1 + q + resp[:o], CTX_M, resp[o:])
    # GET_VERSION is answered while a signature is pending, and cancels it
    e = p.x(challenge(v))
    assert r.pending()
    assert p.x(get_version())[1] == 0x04
    assert not r.pending()
    err(p.x(rif(v, 0x83, e[6])), 0x04)


def test_rif_without_pending():
    p = Peer(make(), 0x11)
    p.vca()
    err(p.x(rif(0x11, 0x83, 1)), 0x04, v=0x11)
    assert not p.r.pending() and not p.r.work()


def chunk_get(v, handle, seq):
    return bytes((v, 0x86, 0, handle)) + le16(seq)


def collect(p, v, handle, dts):
    got = b""
    seq = 0
    total = None
    while True:
        c = p.ok(chunk_get(v, handle, seq), 0x06)
        assert len(c) <= dts and c[3] == handle and rd16(c, 4) == seq
        size = rd32(c, 8)
        if seq == 0:
            total = rd32(c, 12)
            data = c[16:]
        else:
            data = c[12:]
        assert len(data) == size
        got += data
        seq += 1
        if c[2] & 1:
            break
    assert len(got) == total
    return got


def test_chunk_get_large_certificate():
    v = 0x12
    dts = 64
    r = make()
    p = Peer(r, v)
    p.vca(caps=get_caps(v, flags=0x6 | CHUNK_CAP, dts=dts, mx=8192))
    e = p.x(get_cert(v, 0, 0, 0xFFFF))
    err(e, 0x0F, data=0, v=v)
    assert len(e) == 5
    h = e[4]
    # a wrong handle or sequence number is InvalidRequest and ends the transfer (issue 11.1:
    # nobody gets to guess a handle; libspdm keeps it, a requester only loses a retry)
    err(p.x(chunk_get(v, (h + 1) & 0xFF, 0)), 0x01)   # wrong handle
    err(p.x(chunk_get(v, h, 0)), 0x04)                # gone
    e = p.x(get_cert(v, 0, 0, 0xFFFF))
    h = e[4]
    err(p.x(chunk_get(v, h, 1)), 0x01)                # wrong sequence number
    err(p.x(chunk_get(v, h, 0)), 0x04)                # gone
    # (the abandoned CERTIFICATEs are in the responder's M1: the requester starts over)
    p = Peer(r, v)
    p.vca(caps=get_caps(v, flags=0x6 | CHUNK_CAP, dts=dts, mx=8192))
    e = p.x(get_cert(v, 0, 0, 0xFFFF))
    h = e[4]
    big = collect(p, v, h, dts)
    want = chain_buffer("p384", "sha384")
    assert big[:2] == bytes((v, 0x02)) and big[8:] == want and rd16(big, 4) == len(want)
    err(p.x(chunk_get(v, h, 0)), 0x04)                # nothing left to get
    # the CERTIFICATE went into M1 as a whole: CHALLENGE still verifies
    ch = challenge(v)
    e = p.x(ch)
    assert e[1] == 0x7F and e[2] == 0x0F      # CHALLENGE_AUTH (182 bytes) is also large
    resp = collect(p, v, e[4], dts)
    o = 4 + 48 + 32 + 2
    assert verify_sig(v, "p384", "sha384", p.a + get_cert(v, 0, 0, 0xFFFF) + big + ch + resp[:o], CTX_C, resp[o:])


def test_chunk_get_dropped_by_other_request_and_versions():
    p = Peer(make(), 0x13)
    p.vca(caps=get_caps(0x13, flags=0x6 | CHUNK_CAP, dts=64, mx=8192))
    e = p.x(get_meas(0x13, False, 0xFF))
    err(e, 0x0F)
    p.ok(get_digests(0x13), 0x01)
    err(p.x(chunk_get(0x13, e[4], 0)), 0x04)
    p = Peer(make(), 0x11)
    p.vca()
    err(p.x(chunk_get(0x11, 1, 0)), 0x07, data=0x86)
    p = Peer(make(), 0x12)
    p.vca()  # requester without CHUNK_CAP
    err(p.x(chunk_get(0x12, 1, 0)), 0x04)


def test_response_too_large_without_chunking():
    p = Peer(make(), 0x12)
    p.vca(caps=get_caps(0x12, dts=64, mx=64))
    e = p.x(get_meas(0x12, False, 0xFF))
    err(e, 0x0D, v=0x12)
    assert len(e) == 8 and rd32(e, 4) > 64
    # the certificate is simply returned in portions that fit
    c = p.ok(get_cert(0x12, 0, 0, 0xFFFF), 0x02)
    assert len(c) == 64


def chunk_send(v, handle, seq, data, last, large=None, pad_to=None):
    m = bytes((v, 0x85, 1 if last else 0, handle)) + le16(seq) + b"\x00\x00" + le32(len(data))
    if large is not None:
        m += le32(large)
    m += data
    return m


def send_large(p, v, msg, dts, handle=7):
    first = dts - 16
    rest = dts - 12
    out = [chunk_send(v, handle, 0, msg[:first], False, len(msg))]
    off = first
    seq = 1
    while off < len(msg):
        part = msg[off:off + rest]
        off += len(part)
        out.append(chunk_send(v, handle, seq, part, off >= len(msg)))
        seq += 1
    acks = [p.x(m) for m in out]
    for i, a in enumerate(acks[:-1]):
        assert a == bytes((v, 0x05, 0, handle)) + le16(i)
    return acks[-1]


def big_algorithms(v):
    return neg_algs(v, ext_a=8, tables=[(2, 0x10, 0), (3, 0x02, 0), (4, 0x80, 0), (5, 0x01, 0)])


def test_chunk_send_large_algorithms():
    v = 0x12
    dts = 48
    r = make(data_transfer_size=dts, max_spdm_msg_size=1024)
    p = Peer(r, v)
    gv = get_version()
    a = gv + p.ok(gv, 0x04)
    gc = get_caps(v, flags=0x6 | CHUNK_CAP, dts=4096, mx=4096)
    caps = p.ok(gc, 0x61)
    assert rd32(caps, 12) == dts
    a += gc + caps
    na = big_algorithms(v)
    assert len(na) == 80
    ack = send_large(p, v, na, dts)
    assert ack[:6] == bytes((v, 0x05, 0, 7)) + le16(2)
    algs = ack[6:]
    assert algs[1] == 0x63 and algs[2] == 4
    a += na + algs
    # the reassembled request is in the transcript: CHALLENGE verifies
    ch = challenge(v)
    resp = p.ok(ch, 0x03)
    o = 4 + 48 + 32 + 2
    assert verify_sig(v, "p384", "sha384", a + ch + resp[:o], CTX_C, resp[o:])


def test_chunk_send_errors():
    v = 0x13
    dts = 48
    p = Peer(make(data_transfer_size=dts, max_spdm_msg_size=1024), v)
    p.vca(caps=get_caps(v, flags=0x6 | CHUNK_CAP, dts=4096, mx=4096), algs=None)
    msg = get_meas(v, False, 0xFF) + bytes(60)
    first = chunk_send(v, 3, 0, msg[:32], False, len(msg))
    # bad sequence number on the second chunk
    assert p.x(first) == bytes((v, 0x05, 0, 3, 0, 0))
    a = p.x(chunk_send(v, 3, 5, msg[32:68], True))
    assert a[:6] == bytes((v, 0x05, 1, 3, 5, 0)) and a[6:] == bytes((v, 0x7F, 0x01, 0))
    # first chunk flagged last / too large a total / not a full DataTransferSize
    for m in (chunk_send(v, 3, 0, msg[:32], True, len(msg)),
              chunk_send(v, 3, 0, msg[:32], False, 5000),
              chunk_send(v, 3, 0, msg[:20], False, len(msg)),
              chunk_send(v, 3, 1, msg[:36], False)):
        a = p.x(m)
        assert a[1] == 0x05 and a[2] == 1 and a[7] == 0x7F
    # a clean transfer works afterwards, response embedded
    ack = send_large(p, v, msg, dts, handle=9)
    assert ack[6:8] == bytes((v, 0x60))
    assert ack[6 + 4] == 4


def test_chunk_send_min_size_chunks():
    # SPDM-Responder-Validator 19.1 / libspdm: every CHUNK_SEND but the last is between
    # MinDataTransferSize (42) and the Responder's DataTransferSize, and the large
    # message only has to exceed 42 bytes -- here 42-byte chunks to a 1024-byte DTS.
    v = 0x12
    p = Peer(make(), v)
    gv = get_version()
    a = gv + p.ok(gv, 0x04)
    gc = get_caps(v, flags=0x6 | CHUNK_CAP, dts=4096, mx=4096)
    caps = p.ok(gc, 0x61)
    assert rd32(caps, 12) == 1024
    a += gc + caps
    na = big_algorithms(v)
    c0 = chunk_send(v, 5, 0, na[:26], False, len(na))
    c1 = chunk_send(v, 5, 1, na[26:56], False)
    c2 = chunk_send(v, 5, 2, na[56:], True)
    assert len(c0) == len(c1) == 42
    assert p.x(c0) == bytes((v, 0x05, 0, 5)) + le16(0)
    assert p.x(c1) == bytes((v, 0x05, 0, 5)) + le16(1)
    ack = p.x(c2)
    assert ack[:6] == bytes((v, 0x05, 0, 5)) + le16(2)
    algs = ack[6:]
    assert algs[1] == 0x63 and rd16(algs, 4) == len(algs) == 36 + 16
    a += na + algs
    ch = challenge(v)
    resp = p.ok(ch, 0x03)
    o = 4 + 48 + 32 + 2
    assert verify_sig(v, "p384", "sha384", a + ch + resp[:o], CTX_C, resp[o:])
    # a non-last chunk below MinDataTransferSize is an early error
    p = Peer(make(), v)
    p.vca(caps=get_caps(v, flags=0x6 | CHUNK_CAP, dts=4096, mx=4096))
    p.x(chunk_send(v, 6, 0, na[:26], False, len(na)))
    a = p.x(chunk_send(v, 6, 1, na[26:55], False))
    assert a[:6] == bytes((v, 0x05, 1, 6)) + le16(1) and a[6:] == bytes((v, 0x7F, 0x01, 0))
    # so is a large message of MinDataTransferSize or less
    a = p.x(chunk_send(v, 6, 0, na[:26], False, 42))
    assert a[2] == 1 and a[7] == 0x7F


def test_request_too_large():
    v = 0x12
    p = Peer(make(data_transfer_size=48), v)
    p.vca(caps=get_caps(v, flags=0x6 | CHUNK_CAP, dts=4096, mx=4096))
    err(p.x(get_meas(v, False, 0xFF) + bytes(60)), 0x0E, v=v)
    assert p.x(get_meas(v, False, 0xFF) + bytes(44))[1] == 0x60  # 48 bytes: fits


def test_chunk_send_response_needs_chunk_get():
    v = 0x12
    dts = 48
    p = Peer(make(data_transfer_size=dts, max_spdm_msg_size=2048), v)
    p.vca(caps=get_caps(v, flags=0x6 | CHUNK_CAP, dts=64, mx=4096))
    msg = get_meas(v, False, 0xFF) + bytes(60)
    ack = send_large(p, v, msg, dts)
    assert ack[6:9] == bytes((v, 0x7F, 0x0F))
    big = collect(p, v, ack[10], 64)
    assert big[1] == 0x60 and big[4] == 4


def test_internal_failure_requires_resynch():
    class Broken:
        def count(self):
            raise RuntimeError("flash read failed")

    meas = make_meas()
    r = make(meas=meas)
    p = Peer(r, 0x12)
    p.vca()
    meas.count = Broken().count
    err(p.x(get_meas(0x12, False, 0)), 0x05, v=0x12)
    err(p.x(get_digests(0x12)), 0x43, v=0x12)
    err(p.x(challenge(0x12)), 0x43)
    p.vca()
    assert p.x(get_digests(0x12))[1] == 0x01


def test_algorithms_tables_mirror_request():
    p = Peer(make(), 0x11)
    a = p.vca(algs=neg_algs(0x11, tables=[(2, 0x10, 1), (5, 0x01, 0)]))
    algs = a[-44:]
    assert algs[2] == 2 and algs[36:] == bytes((2, 0x20, 0, 0, 5, 0x20, 0, 0))


def test_deferred_response_delivered_in_chunks():
    v = 0x13
    r = make(defer_signing=True)
    p = Peer(r, v)
    a = p.vca(caps=get_caps(v, flags=0x6 | CHUNK_CAP, dts=64, mx=8192))
    ch = challenge(v)
    e = p.x(ch)
    err(e, 0x42)
    while r.work():
        pass
    e2 = p.x(rif(v, 0x83, e[6]))
    err(e2, 0x0F)
    resp = collect(p, v, e2[4], 64)
    o = 4 + 48 + 32 + 2 + 8
    assert resp[1] == 0x03 and len(resp) == o + 96
    assert verify_sig(v, "p384", "sha384", a + ch + resp[:o], CTX_C, resp[o:])


def _oom_gen():
    raise MemoryError("test: heap short")
    yield  # noqa (a generator)


def test_deferred_work_out_of_memory_is_busy_and_retryable():
    # a deferred signature that runs out of memory: RESPOND_IF_READY gets ERROR Busy (send
    # the request again), and the request sent again is served and signed
    v = 0x12
    r = make(defer_signing=True)
    p = Peer(r, v)
    a = p.vca()
    ch = challenge(v)
    tok = p.x(ch)[6]
    r.pend.gen = _oom_gen()
    assert not r.work()                          # the slice ran out of memory: nothing pending
    err(p.x(rif(v, 0x83, tok)), 0x03, v=v)       # Busy
    err(p.x(rif(v, 0x83, tok)), 0x04, v=v)       # then nothing is pending
    tok = p.x(ch)[6]
    r.pend.gen = _oom_gen()
    r.work()
    q = get_meas(v, False, 1)                    # any other request after it is served
    p.ok(q, 0x60)
    ch2 = challenge(v, nonce=b"\x66" * 32)
    tok = p.x(ch2)[6]
    while r.work():
        pass
    resp = p.ok(rif(v, 0x83, tok), 0x03)
    o = 4 + 48 + 32 + 2
    assert verify_sig(v, "p384", "sha384", a + ch2 + resp[:o], CTX_C, resp[o:])


def test_response_buffer_shared_by_requesters():
    # the board's response buffer: a deferred signed MEASUREMENTS keeps no copy of its
    # body across requests (its parts, the record by reference) and is assembled in the
    # buffer when delivered; another requester's responses meanwhile use the buffer too;
    # all byte-exact and signed
    from uspdm.responder import Config, Parts

    v = 0x13
    cfg = Config(defer_signing=True)
    cfg.rsp_buffer = bytearray(1536)
    meas = make_meas()
    assert meas.freeze(("sha384",))   # as on a booted board: the record of all blocks is kept
    ra, rb = make(cfg, meas=meas), make(cfg, meas=meas)
    pa, pb = Peer(ra, v), Peer(rb, v)
    a_a, a_b = pa.vca(), pb.vca()
    qa = get_meas(v, True, 0xFF)
    e = pa.x(qa)
    err(e, 0x42)
    assert isinstance(ra.pend.body, Parts) and len(ra.pend.body) > 150
    assert ra.pend.body.parts[1] is ra.meas.record(0xFF, "sha384")[0]   # the record itself, not a copy
    qb = get_meas(v, True, 0xFF, nonce=b"\x33" * 32)
    tb = pb.x(qb)[6]
    # a third requester's unsigned answer, built in the buffer while both signatures are pending
    pu = Peer(make(cfg, meas=meas), v)
    pu.vca()
    qu = get_meas(v, False, 0xFF)
    got = pu.x(qu)
    assert isinstance(got, memoryview)
    got = bytes(got)
    while ra.work() or rb.work():
        pass
    rsp_b = pb.ok(rif(v, 0xE0, tb), 0x60)
    assert isinstance(rsp_b, memoryview)   # assembled in the buffer when delivered
    rsp_b = bytes(rsp_b)
    rsp_a = bytes(pa.ok(rif(v, 0xE0, e[6]), 0x60))
    for a, q, rsp in ((a_a, qa, rsp_a), (a_b, qb, rsp_b)):
        o = len(rsp) - 96
        assert verify_sig(v, "p384", "sha384", a + q + rsp[:o], CTX_M, rsp[o:])
    # answered at once (unsigned), a response from the buffer equals the one built
    # without it
    cfg2 = Config(defer_signing=True)
    pc = Peer(make(cfg2), v)
    pc.vca()
    want = pc.x(qu)
    assert not isinstance(want, memoryview)
    assert got[:len(got) - 42] == bytes(want)[:len(want) - 42]   # nonce and context differ
    # signed at once (no deferral): assembled in the buffer, verified
    cfg3 = Config()
    cfg3.rsp_buffer = bytearray(1536)
    pd = Peer(make(cfg3), v)
    a_d = pd.vca()
    rsp = pd.ok(qa, 0x60)
    assert isinstance(rsp, memoryview)
    rsp = bytes(rsp)
    assert verify_sig(v, "p384", "sha384", a_d + qa + rsp[:len(rsp) - 96], CTX_M, rsp[len(rsp) - 96:])
    # a buffer too small for it: a block of its own, the same bytes
    cfg3.rsp_buffer = bytearray(64)
    a_d = pd.vca()
    rsp = pd.ok(qa, 0x60)
    assert not isinstance(rsp, memoryview)
    assert verify_sig(v, "p384", "sha384", a_d + qa + rsp[:len(rsp) - 96], CTX_M, rsp[len(rsp) - 96:])


def test_busy_after_out_of_memory_keeps_the_transcripts():
    # the request answered Busy is as if it had not come: the one sent again is signed
    # over the same M1 (A || B || C) and L1 (earlier unsigned measurements)
    v = 0x12
    r = make(defer_signing=True)
    p = Peer(r, v)
    a = p.vca()
    qd = get_digests(v)
    b = qd + p.ok(qd, 0x01)
    ch = challenge(v)
    tok = p.x(ch)[6]
    r.pend.gen = _oom_gen()
    r.work()
    err(p.x(rif(v, 0x83, tok)), 0x03, v=v)
    tok = p.x(ch)[6]
    while r.work():
        pass
    resp = p.ok(rif(v, 0x83, tok), 0x03)
    o = 4 + 48 + 32 + 2
    assert verify_sig(v, "p384", "sha384", a + b + ch + resp[:o], CTX_C, resp[o:])
    q0 = get_meas(v, False, 1)
    l1 = a + q0 + p.ok(q0, 0x60)
    q = get_meas(v, True, 0xFF)
    tok = p.x(q)[6]
    r.pend.gen = _oom_gen()
    r.work()
    err(p.x(rif(v, 0xE0, tok)), 0x03, v=v)
    tok = p.x(q)[6]
    while r.work():
        pass
    resp = p.ok(rif(v, 0xE0, tok), 0x60)
    o = len(resp) - 96
    assert verify_sig(v, "p384", "sha384", l1 + q + resp[:o], CTX_M, resp[o:])


def test_request_sent_again_while_its_work_runs_gets_not_ready():
    # a requester whose RESPOND_IF_READY got ERROR Busy (the board short of memory for a
    # moment) sends the request itself again, as libspdm's requester does: the same bytes
    # while its signature is being computed, or done and not collected yet, get
    # ResponseNotReady for that work (same token), not Busy; the answer is then signed
    # over the request once.  Another request, or the same one with another nonce, is Busy
    v = 0x13
    r = make(defer_signing=True)
    p = Peer(r, v)
    a = p.vca()
    q = get_meas(v, True, 0xFF)
    e = p.x(q)
    err(e, 0x42)
    tok = e[6]
    for _ in range(3):
        assert r.work()                           # part of the signature only
    e2 = p.x(q)
    err(e2, 0x42)
    assert e2[5] == 0xE0 and e2[6] == tok and r.pending()
    err(p.x(get_meas(v, True, 0xFF, nonce=b"\x44" * 32)), 0x03)   # another request: Busy
    err(p.x(get_digests(v)), 0x03)
    while r.work():
        pass
    e3 = p.x(q)                                   # done, not collected: ResponseNotReady again
    err(e3, 0x42)
    assert e3[6] == tok
    resp = p.ok(rif(v, 0xE0, tok), 0x60)
    ln = resp[5] | (resp[6] << 8) | (resp[7] << 16)
    o = 8 + ln + 32 + 2 + 8
    assert len(resp) == o + 96
    assert verify_sig(v, "p384", "sha384", a + q + resp[:o], CTX_M, resp[o:])
    # collected: the same bytes now are a new request (new work, new token)
    e4 = p.x(q)
    err(e4, 0x42)
    assert e4[6] != tok
    # a CHALLENGE sent again likewise; its answer covers A || C once
    while r.work():
        pass
    p.ok(rif(v, 0xE0, e4[6]), 0x60)
    a = p.vca()
    ch = challenge(v)
    tok = p.x(ch)[6]
    r.work()
    e5 = p.x(ch)
    err(e5, 0x42)
    assert e5[5] == 0x83 and e5[6] == tok
    while r.work():
        pass
    resp = p.ok(rif(v, 0x83, tok), 0x03)
    o = 4 + 48 + 32 + 2 + 8
    assert verify_sig(v, "p384", "sha384", a + ch + resp[:o], CTX_C, resp[o:])
