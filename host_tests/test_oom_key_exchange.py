"""Issue 9 item 4 for KEY_EXCHANGE: out of memory anywhere in it (loading the session
stack, the EC work, the key schedule, building or sending the answer) gives ERROR Busy
(or ResponseNotReady, then Busy at RESPOND_IF_READY), never another error, and the
connection stays usable: once memory is back the same requester opens a session.

The device runs in the unix port with a hard heap (as host_tests/test_out_of_memory.py:
ballast taken from the heap leaves it short while a request is handled and its deferred
work runs).  A sweep of ballast levels covers the points where the heap runs out; two
requesters interleave: A's KEY_EXCHANGE and B's CHALLENGE run side by side, each in its
slices, as on a board serving two EIDs.  The requests are built from DSP0274 layouts
here (the one-time key with `cryptography`)."""
import os

import pytest

import test_out_of_memory as T
from cryptography.hazmat.primitives.asymmetric import ec as cec

pytestmark = pytest.mark.skipif(T.native.unix_reason() is not None, reason=str(T.native.unix_reason()))

V = 0x12
BUSY, NOT_READY = "7f/03", "7f/42"


def le16(v):
    return bytes((v & 255, v >> 8))


def le32(v):
    return v.to_bytes(4, "little")


# GET_VERSION, GET_CAPABILITIES (ENCRYPT MAC KEY_EX HBEAT KEY_UPD HANDSHAKE_IN_THE_CLEAR + CERT),
# NEGOTIATE_ALGORITHMS (P-384, SHA-384; secp384r1, AES-256-GCM, ECDSA P-384, SPDM key schedule)
VCA = [bytes((0x10, 0x84, 0, 0)),
       bytes((V, 0xE1, 0, 0, 0, 12, 0, 0)) + le32(0xF2C2) + le32(4096) * 2,
       (bytes((V, 0xE3, 4, 0)) + le16(32 + 16) + bytes((1, 2)) + le32(0x80) + le32(0x2) + bytes(16)
        + b"".join(bytes((t, 0x20)) + le16(v) for t, v in ((2, 0x10), (3, 0x02), (4, 0x80), (5, 1))))]
_SM = b"\x01\x01\x01" + le16(0x1100)   # secured message versions: 1.1
_EL = b"\x00\x00" + le16(len(_SM)) + _SM
OPAQUE = b"\x01\x00\x00\x00" + _EL + bytes((-len(_EL)) & 3)


def key_exchange(rid):
    k = cec.generate_private_key(cec.SECP384R1())
    n = k.public_key().public_numbers()
    pub = n.x.to_bytes(48, "big") + n.y.to_bytes(48, "big")
    return bytes((V, 0xE4, 0, 0)) + le16(rid) + b"\x00\x00" + os.urandom(32) + pub + le16(len(OPAQUE)) + OPAQUE


# the child of test_out_of_memory, with: the signing time of a slow board (work deferred and
# answered late, or ResponseNotReady with defer_signing=1), a second requester, and an op that
# feeds requests and runs the idle loop with the heap short throughout
def _child_src(defer):
    src = T.CHILD.replace("bytes((100, 0, 0, 0))", "bytes((0xd0, 0x07, 0, 0))")   # 2 s a signature
    src = src.replace('"defer_signing": 0', '"defer_signing": %d' % defer if defer is not None else '"x": 0')
    src = src.replace("rq = Requester(eid=8)", "rq = Requester(eid=8)\nrqB = Requester(eid=9)")
    # the ballast as a chain of small nodes (a list grown to thousands of entries would need a
    # large block itself and stop the filling early on a fragmented heap); taking it and
    # letting it go allocate nothing else
    i = src.index("def fill(keep):")
    j = src.index("def run_idle(")
    src = src[:i] + """def fill(keep):
    global ballast
    gc.collect()
    head = ballast
    try:
        while True:
            head = (head, bytearray(256))
    except MemoryError:
        pass
    n = 0
    while n < keep and head is not None:
        head = head[0]
        n += 1
    ballast = head
    gc.collect()


def free():
    global ballast
    ballast = None
    gc.collect()


""" + src[j:]
    src = src.replace("ballast = []\n", "ballast = None\n")
    return src.replace('    elif op == "state":', r'''    elif op == "work":
        # requests fed (A's, then B's), then the idle loop until no work is pending;
        # everything the device sends is decoded per requester (MCTP destination EID)
        frames = []
        for who, h in cmd["reqs"]:
            q = rq if who == "A" else rqB
            tag, pkts = q.request(0, b"\x05" + binascii.unhexlify(h))
            frames.append(b"".join(mserial.encode_frame(p) for p in pkts))
        outs = [None] * 32
        no = 0
        rng = range(6000)
        i = -1
        at = cmd.get("at", -1)   # the idle step at which the ballast is taken (-1: before the requests)
        if at < 0:
            fill(cmd["keep"])
        try:
            for f in frames:
                outs[no] = dev.feed(f)
                no += 1
            for i in rng:
                if i == at:
                    fill(cmd["keep"])
                board.t += 1
                o = dev.idle()
                if o and no < 32:
                    outs[no] = o
                    no += 1
                if not dev.pending():
                    break
        finally:
            free()
        r["steps"] = i
        res = {"A": [], "B": []}
        for o in outs:
            for p in dec.feed(o or b""):
                q, who = (rq, "A") if p[1] == 8 else (rqB, "B")
                m = q.receive_packet(p)
                if m is not None:
                    res[who].append(binascii.hexlify(bytes(m[2][1:])).decode())
        r["rsps"] = res
    elif op == "state":''')


class Child(T.Child):
    def __init__(self, defer, heapsize="1M"):
        src = _child_src(defer) % {"lib": T.LIB_DIR, "firmware": T.FIRMWARE, "portable": T.PORTABLE,
                                   "vectors": T.VECTORS}
        self.path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "uspdm-oom-kex-%d.py" % os.getpid())
        with open(self.path, "w") as f:
            f.write(src)
        self.p = T.subprocess.Popen([T.native.unix_binary(), "-X", "heapsize=" + heapsize, self.path],
                                    stdin=T.subprocess.PIPE, stdout=T.subprocess.PIPE, stderr=T.subprocess.PIPE,
                                    text=True, cwd=T.REPO_ROOT)


def _kind(h):
    b = bytes.fromhex(h)
    return "%02x" % b[1] + ("/%02x" % b[2] if b[1] == 0x7F else "")


def _connect(c, who):
    for m in VCA:
        r = c.cmd(op="work", reqs=[(who, m.hex())], keep=100000)
        rsp = r["rsps"][who]
        assert rsp and _kind(rsp[-1]) != BUSY and not rsp[-1][2:4] == "7f", (m.hex(), r)


# (idle step at which the ballast is taken, 256-byte blocks left free): before the requests, from
# where nothing can be answered to where it all fits; then taken part-way, once the session stack
# is loaded: during the EC work (key pair, ECDH, signature), the key schedule and the answer
# (B: with requester B's CHALLENGE interleaved, or A alone)
POINTS = [(-1, k, True) for k in list(range(4, 120, 9)) + list(range(120, 1000, 29))] + \
    [(at, k, True) for at in (3, 8, 15, 30, 60, 100, 140) for k in (2, 6, 12, 24)] + \
    [(at, k, False) for at in (10, 25, 40, 60, 90, 130) for k in (2, 6)]


@pytest.mark.parametrize("defer", [None, 1], ids=["answered-late", "not-ready"])
def test_key_exchange_out_of_memory_is_busy(defer):
    c = Child(defer)
    try:
        c.cmd(op="idle", n=3000)
        _connect(c, "A")
        _connect(c, "B")
        seen = {}
        for at, keep, two in POINTS:
            reqs = [("A", key_exchange(0x1000 + keep).hex())]
            if two:
                reqs.append(("B", (bytes((V, 0x83, 0, 0)) + os.urandom(32)).hex()))
            r = c.cmd(op="work", reqs=reqs, keep=keep, at=at)
            a = [_kind(h) for h in r["rsps"]["A"]]
            b = [_kind(h) for h in r["rsps"]["B"]]
            for h in r["rsps"]["A"]:
                k = _kind(h)
                if k == NOT_READY:   # collected with RESPOND_IF_READY, the heap still short
                    x = bytes.fromhex(h)
                    r2 = c.cmd(op="work", reqs=[("A", bytes((V, 0xFF, x[5], x[6])).hex())], keep=keep)
                    a += ["rif:" + _kind(y) for y in r2["rsps"]["A"]]
            key = " ".join(a) + " | " + " ".join(b)
            seen[key] = seen.get(key, 0) + 1
            # nothing but the answer itself, Busy or ResponseNotReady: never Unspecified
            for k in a:
                assert k.split(":")[-1] in ("64", BUSY, NOT_READY), (at, keep, a, b, r["logs"])
            for k in b:
                assert k in ("03", BUSY, NOT_READY), (at, keep, a, b, r["logs"])
            # the connections are kept (GET_VERSION starts them afresh for the next level,
            # ending the session a successful KEY_EXCHANGE opened)
            _connect(c, "A")
            _connect(c, "B")
        print("\nKEY_EXCHANGE + CHALLENGE short of memory (%s): %s" % (defer, seen))
        # the sweep reached both ends: out of memory somewhere, and sessions opened
        assert any(BUSY in k for k in seen), seen
        assert any(k.startswith("64") or "rif:64" in k for k in seen), seen
        # and with memory back, KEY_EXCHANGE succeeds as if nothing had happened
        r = c.cmd(op="work", reqs=[("A", key_exchange(0x2222).hex())], keep=100000)
        ks = [_kind(h) for h in r["rsps"]["A"]]
        if ks == [NOT_READY]:
            x = bytes.fromhex(r["rsps"]["A"][0])
            ks = [_kind(h) for h in c.cmd(op="work", reqs=[("A", bytes((V, 0xFF, x[5], x[6])).hex())],
                                          keep=100000)["rsps"]["A"]]
        assert ks == ["64"], ks
    finally:
        c.close()
