"""Every random field and ephemeral key the responder sends is fresh (DSP0274:
the responder's nonces and RandomData are new random values; KEY_EXCHANGE
uses a new ephemeral DHE key each time, which is what gives sessions forward
secrecy).  Each is collected over several responses of ONE responder (one
DRBG) and must never repeat and never be all zeros; on CPython and on
MicroPython."""
from _session_util import NO_CLEAR_FLAGS, Req, make_responder
from test_spdm_common import Peer, challenge, drbg, get_digests, get_meas, make, parametrize, rd16

from uspdm import session as S
from uspdm.storage import MemoryStorage

N = 4
PSK = b"uspdm freshness psk"
HINT = b"fresh-1"


def fresh(values, what):
    assert len(values) >= 2
    for v in values:
        assert len(v) > 0 and v != bytes(len(v)), "%s is all zeros" % what
        assert v != bytes((v[0],)) * len(v), "%s is one repeated byte" % what
    assert len(set(bytes(v) for v in values)) == len(values), "%s repeats across responses: %r" % (
        what, [bytes(v).hex() for v in values])


@parametrize("v", [0x10, 0x11, 0x12, 0x13])
def test_measurements_nonce_fresh(v):
    p = Peer(make(), v)
    p.vca()
    for signed in (False, True):
        nonces = []
        for i in range(N):
            r = p.ok(get_meas(v, signed, 0x41, nonce=bytes((i + 1,)) * 32), 0x60)
            # MEASUREMENTS: hdr 4, NumberOfBlocks 1, MeasurementRecordLength 3, record, Nonce 32
            ln = r[5] | (r[6] << 8) | (r[7] << 16)
            nonces.append(r[8 + ln:8 + ln + 32])
        fresh(nonces, "MEASUREMENTS Nonce (%s)" % ("signed" if signed else "unsigned"))


@parametrize("v", [0x10, 0x12, 0x13])
def test_challenge_auth_nonce_fresh(v):
    p = Peer(make(), v)
    p.vca()
    d = p.ok(get_digests(v), 0x01)
    nonces = []
    for i in range(N):
        r = p.ok(challenge(v, nonce=bytes((0x30 + i,)) * 32), 0x03)
        # CHALLENGE_AUTH: hdr 4, CertChainHash H, Nonce 32; H from the slot-0 digest (SHA-384 here)
        assert r[4:4 + 48] == d[4:4 + 48], "not the SHA-384 selection this test expects"
        nonces.append(r[4 + 48:4 + 48 + 32])
    fresh(nonces, "CHALLENGE_AUTH Nonce")


def _session_setup(v):
    st = MemoryStorage()
    st.write("uspdm/psk_" + "".join("%02x" % b for b in HINT) + ".bin", PSK)
    mgr = S.SessionManager(drbg(b"fresh-mgr"), st)
    r = make_responder(mgr)
    q = Req(r, mgr, v, NO_CLEAR_FLAGS)
    q.vca()
    return mgr, r, q


@parametrize("v", [0x11, 0x12, 0x13])
def test_key_exchange_random_data_and_dhe_key_fresh(v):
    mgr, r, q = _session_setup(v)
    randoms, dhe, sids = [], [], []
    for i in range(N):
        rsp = q.key_exchange(rid=0x1000 + i)
        assert rsp[1] == 0x64, rsp
        # KEY_EXCHANGE_RSP: hdr 4, RspSessionID 2, MutAuthRequested 1, SlotIDParam 1, RandomData 32,
        # ExchangeData (the responder's ephemeral P-384 public key) 96
        randoms.append(rsp[8:40])
        dhe.append(rsp[40:136])
        sids.append(rsp[4:6])
        assert q.finish()[1] == 0x65
        end = q.call(bytes((v, 0xEC, 0, 0)))
        assert end is not None and end[1] == 0x6C, end
    fresh(randoms, "KEY_EXCHANGE_RSP RandomData")
    fresh(dhe, "KEY_EXCHANGE_RSP ephemeral DHE public key")
    assert mgr.count() == 0


@parametrize("v", [0x11, 0x13])
def test_psk_exchange_responder_context_fresh(v):
    mgr, r, q = _session_setup(v)
    ctxs = []
    for i in range(N):
        rsp = q.psk_exchange(HINT, PSK)
        assert rsp[1] == 0x66, rsp
        cl = rd16(rsp, 8)
        if not cl:
            return   # a board without a responder context (then PSK_FINISH is absent): nothing random here
        ctxs.append(rsp[12:12 + cl])
        assert q.psk_finish()[1] == 0x67
        end = q.call(bytes((v, 0xEC, 0, 0)))
        assert end is not None and end[1] == 0x6C, end
    fresh(ctxs, "PSK_EXCHANGE_RSP ResponderContext")
