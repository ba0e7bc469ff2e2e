"""DSP0236 packetization and reassembly rules."""
from mctp import packet
from mctp.packet import Reassembler, packetize


def _hdr(dest, src, som, eom, seq, to, tag):
    # header written out from the DSP0236 bit layout
    return bytes((0x01, dest, src, (som << 7) | (eom << 6) | (seq << 4) | (to << 3) | tag))


def _msg(n, seed=1):
    return bytes((0x05,)) + bytes((i * 31 + seed) & 0xFF for i in range(n - 1))


def _feed_all(r, pkts, now=0):
    got = None
    for p in pkts:
        m = r.feed(p, now)
        if m is not None:
            assert got is None
            got = m
    return got


def test_header():
    assert packet.header(0x09, 0x08, 1, 1, 0, 1, 3) == b"\x01\x09\x08\xcb"
    assert packet.header(0x09, 0x08, 0, 1, 3, 0, 7) == b"\x01\x09\x08\x77"
    assert packet.parse_header(b"\x01\x09\x08\xcb\x05") == (9, 8, 0xCB)
    assert packet.parse_header(b"\x01\x09\x08") is None
    assert packet.parse_header(b"\x02\x09\x08\xc0") is None


def test_packetize_single():
    body = _msg(10)
    ps = packetize(0x20, 0x08, 5, 1, body, 64)
    assert len(ps) == 1
    assert bytes(ps[0]) == _hdr(0x20, 0x08, 1, 1, 0, 1, 5) + body


def test_packetize_multi_seq_wraps():
    body = _msg(64 * 5 + 3)
    ps = packetize(0x20, 0x08, 2, 0, body, 64)
    assert len(ps) == 6
    for i, p in enumerate(ps):
        som = 1 if i == 0 else 0
        eom = 1 if i == 5 else 0
        assert bytes(p[:4]) == _hdr(0x20, 0x08, som, eom, i & 3, 0, 2), i
        assert len(p) == 4 + (64 if i < 5 else 3)
    assert b"".join(bytes(p[4:]) for p in ps) == body
    # exact multiple of the MTU: no empty trailing packet
    ps = packetize(0x20, 0x08, 2, 0, _msg(128), 64)
    assert len(ps) == 2 and len(ps[1]) == 68 and ps[1][3] & 0x40


def test_packetize_mtus():
    body = _msg(1000)
    for mtu in (1, 7, 64, 250):
        ps = list(packet.iter_packets(9, 8, 1, 1, body, mtu))
        assert len(ps) == (1000 + mtu - 1) // mtu
        assert max(len(p) for p in ps) == 4 + mtu
        r = Reassembler(max_message=4096, max_contexts=2)
        m = _feed_all(r, ps)
        assert m is not None and bytes(m[3]) == body and m[:3] == (8, 1, 1)


def test_reassembly_up_to_bound():
    r = Reassembler(max_message=4160)
    body = _msg(4160)
    m = _feed_all(r, packetize(9, 8, 0, 1, body, 64))
    assert bytes(m[3]) == body
    # one byte more is rejected, and nothing is left behind
    assert _feed_all(r, packetize(9, 8, 0, 1, _msg(4161), 64)) is None
    assert r.too_big == 1 and r.contexts() == 0
    # and the next message still works
    assert bytes(_feed_all(r, packetize(9, 8, 0, 1, body, 64))[3]) == body


def test_out_of_sequence_discards():
    ps = packetize(9, 8, 3, 1, _msg(300), 64)
    r = Reassembler()
    # skip packet 2
    assert _feed_all(r, ps[:2] + ps[3:]) is None
    assert r.contexts() == 0 and r.dropped >= 1
    # duplicate packet
    assert _feed_all(r, ps[:2] + ps[1:]) is None
    assert r.contexts() == 0
    # complete message afterwards
    assert _feed_all(r, ps) is not None


def test_wrong_size_middle_and_eom():
    ps = packetize(9, 8, 3, 1, _msg(200), 64)
    r = Reassembler()
    short_mid = bytes(ps[1][:-1])
    assert _feed_all(r, [ps[0], short_mid] + ps[2:]) is None
    assert r.contexts() == 0
    # EOM larger than the first packet
    big_eom = bytes(ps[3]) + b"\x00" * 62  # 8+62 = 70 > 64 payload bytes
    assert _feed_all(r, ps[:3] + [big_eom]) is None
    assert r.contexts() == 0
    # EOM of exactly the first size is fine
    ps2 = packetize(9, 8, 3, 1, _msg(256), 64)
    assert bytes(_feed_all(r, ps2)[3]) == _msg(256)


def test_middle_or_eom_without_som():
    ps = packetize(9, 8, 3, 1, _msg(200), 64)
    r = Reassembler()
    assert _feed_all(r, ps[1:]) is None
    assert r.contexts() == 0 and r.dropped == 3


def test_new_som_restarts():
    a = packetize(9, 8, 3, 1, _msg(200, 1), 64)
    b = packetize(9, 8, 3, 1, _msg(150, 2), 64)
    r = Reassembler()
    m = _feed_all(r, a[:2] + b)
    assert bytes(m[3]) == _msg(150, 2)
    assert r.contexts() == 0
    # the rest of a is now garbage
    assert _feed_all(r, a[2:]) is None


def test_interleaved_tags_and_sources():
    a = packetize(9, 8, 1, 1, _msg(300, 1), 64)
    b = packetize(9, 8, 2, 1, _msg(260, 2), 64)
    c = packetize(9, 10, 1, 1, _msg(200, 3), 64)  # other requester, same tag as a
    r = Reassembler(max_contexts=4)
    order = []
    for i in range(6):
        for s in (a, b, c):
            if i < len(s):
                order.append(s[i])
    done = {}
    for p in order:
        m = r.feed(p, 0)
        if m is not None:
            done[(m[0], m[1])] = bytes(m[3])
    assert done == {(8, 1): _msg(300, 1), (8, 2): _msg(260, 2), (10, 1): _msg(200, 3)}


def test_tag_owner_is_part_of_key():
    rq = packetize(9, 8, 1, 1, _msg(100, 1), 64)
    rs = packetize(9, 8, 1, 0, _msg(100, 2), 64)
    r = Reassembler()
    got = [r.feed(p, 0) for p in (rq[0], rs[0], rq[1], rs[1])]
    assert got[0] is None and got[1] is None
    assert got[2][2] == 1 and bytes(got[2][3]) == _msg(100, 1)
    assert got[3][2] == 0 and bytes(got[3][3]) == _msg(100, 2)


def test_context_limit_evicts_oldest():
    r = Reassembler(max_contexts=2)
    msgs = [packetize(9, 8, t, 1, _msg(200, t), 64) for t in range(3)]
    for t in range(3):
        assert r.feed(msgs[t][0], t) is None
    assert r.contexts() == 2 and r.evicted == 1
    # tag 0 (oldest) was evicted
    assert _feed_all(r, msgs[0][1:], 3) is None
    assert bytes(_feed_all(r, msgs[1][1:], 3)[3]) == _msg(200, 1)
    assert bytes(_feed_all(r, msgs[2][1:], 3)[3]) == _msg(200, 2)


def test_stale_context_expires():
    r = Reassembler(timeout_ms=100)
    ps = packetize(9, 8, 1, 1, _msg(200), 64)
    r.feed(ps[0], 1000)
    r.feed(ps[1], 1050)
    assert r.contexts() == 1
    assert _feed_all(r, ps[2:], 1200) is None  # 150 ms after the last packet
    assert r.expired == 1 and r.contexts() == 0
    # a clock that goes backwards (ticks wrap) also expires
    r.feed(ps[0], 5000)
    r.expire(10)
    assert r.contexts() == 0
    # within the timeout it completes
    assert _feed_all(r, ps, 7000) is not None


def test_zero_length_and_short_packets():
    r = Reassembler()
    assert r.feed(b"", 0) is None
    assert r.feed(b"\x01\x09\x08", 0) is None
    assert r.feed(b"\x01\x09\x08\xc0", 0) is None  # SOM+EOM, no body
    assert r.feed(b"\x01\x09\x08\x80", 0) is None  # SOM, no body
    assert r.contexts() == 0
    assert r.feed(None, 0) is None


def test_bounded_memory_under_flood():
    r = Reassembler(max_message=1024, max_contexts=3)
    # many SOMs from many sources and tags, then endless middles
    for s in range(8, 40):
        for t in range(8):
            r.feed(bytes((1, 9, s, 0x88 | t)) + bytes(64), 0)
    assert r.contexts() <= 3
    for i in range(200):
        r.feed(bytes((1, 9, 39, 0x08 | 7 | (((i + 1) & 3) << 4))) + bytes(64), 0)
        assert r.buffered() <= 3 * 1024
    assert r.too_big >= 1


def test_shared_byte_budget():
    """Issue 11.4: partial messages stay within a budget shared with other buffers."""
    r = Reassembler(max_message=4160, max_contexts=4)
    other = [0]   # bytes the caller holds elsewhere (CHUNK_SEND)
    r.room = lambda: 1000 - other[0] - r.buffered()
    # four sources each start a 4 KB message: the budget, not 4 x 4 KB, bounds what is held
    for s in range(20, 24):
        r.feed(bytes((1, 9, s, 0x88)) + bytes(64), 0)
        for i in range(1, 40):
            r.feed(bytes((1, 9, s, 0x08 | ((i & 3) << 4))) + bytes(64), 0)
            assert r.buffered() <= 1000
    assert r.over_budget == 4 and r.contexts() == 0
    # a partial message that stalled gives way (oldest first) to one that needs the room
    r.feed(bytes((1, 9, 30, 0x88)) + bytes(64), 0)
    for i in range(1, 10):
        r.feed(bytes((1, 9, 30, 0x08 | ((i & 3) << 4))) + bytes(64), 0)
    assert r.buffered() == 640
    ps = packetize(9, 8, 1, 1, _msg(600), 64)
    out = _feed_all(r, ps, 1)
    assert out is not None and bytes(out[3]) == _msg(600)
    assert r.evicted == 1 and r.contexts() == 0
    # with the caller's own buffers taking the budget, nothing partial is kept
    r.reset()
    other[0] = 990
    assert r.feed(ps[0], 2) is None and r.contexts() == 0
    # single-packet messages need no reassembly budget
    one = packetize(9, 8, 2, 1, _msg(40), 64)
    assert len(one) == 1 and r.feed(one[0], 3) is not None


def test_packetize_type_byte_given_apart():
    # the type byte given apart (mt) gives the very packets of the whole message
    for n in (1, 2, 63, 64, 65, 127, 128, 129, 300):
        whole = _msg(n)
        for mtu in (1, 2, 7, 64):
            a = [bytes(p) for p in packetize(0x20, 0x08, 3, 0, whole, mtu)]
            b = [bytes(p) for p in packetize(0x20, 0x08, 3, 0, memoryview(whole)[1:], mtu, whole[0])]
            assert a == b, (n, mtu)
