"""SPDM secure sessions (lib/uspdm/session.py, keysched.py, secured.py): key
schedule and secured messages against vectors made with the `cryptography`
package, then every session message and failure through the responder, driven
by the spec-written requester of _session_util."""
from _util import raises, read_blocks, unhex
from _session_util import NO_CLEAR_FLAGS, SESSION_FLAGS, Req, le16, make_responder, sm_opaque
from test_spdm_common import drbg, parametrize

from uspdm import keysched, secured
from uspdm import sess_hs as HS
from uspdm import session as S
from uspdm.storage import MemoryStorage

PSK = b"uspdm portable test psk"
HINT = b"lab-psk-1"
V = [0x11, 0x12, 0x13]


def setup(version=0x12, flags=NO_CLEAR_FLAGS, **kw):
    st = MemoryStorage()
    st.write("uspdm/psk_" + "".join("%02x" % b for b in HINT) + ".bin", PSK)
    mgr = S.SessionManager(drbg(b"mgr"), st, **kw)
    r = make_responder(mgr)
    q = Req(r, mgr, version, flags)
    q.vca()
    return mgr, r, q


def established(version=0x12, flags=NO_CLEAR_FLAGS, **kw):
    mgr, r, q = setup(version, flags, **kw)
    assert q.key_exchange()[1] == 0x64
    assert q.finish()[1] == 0x65
    return mgr, r, q


def is_err(rsp, code):
    assert rsp is not None and rsp[1] == 0x7F and rsp[2] == code, rsp


# ------------------------------------------------------------------ primitives
def test_bin_concat_layout():
    # DSP0274: u16 length (LE) || "spdm1.N " || label || context
    assert keysched.bin_concat(0x12, 48, b"derived") == b"\x30\x00spdm1.2 derived"
    assert keysched.bin_concat(0x11, 12, b"iv") == b"\x0c\x00spdm1.1 iv"
    assert keysched.bin_concat(0x13, 32, b"key", b"\x01\x02") == b"\x20\x00spdm1.3 key\x01\x02"


def test_key_schedule_vectors():
    n = 0
    for b in read_blocks("spdm_session.txt"):
        sec = b["_section"].split()
        if sec[0] != "keysched":
            continue
        hn, v, psk = sec[1], int(sec[2], 16), sec[3] == "psk"
        ks = keysched.KeySchedule(hn, v)
        ks.handshake(unhex(b["ikm"]), unhex(b["th1"]), psk=psk)
        assert bytes(ks.req_finished) == unhex(b["req_finished"]), b["_section"]
        assert bytes(ks.rsp_finished) == unhex(b["rsp_finished"])
        (rk, ri), (sk, si) = ks.hs_keys()
        assert (bytes(rk), bytes(ri), bytes(sk), bytes(si)) == (
            unhex(b["req_hs_key"]), unhex(b["req_hs_iv"]), unhex(b["rsp_hs_key"]), unhex(b["rsp_hs_iv"]))
        ks.application(unhex(b["th2"]))
        assert ks.req_finished is None and ks.hs is None  # handshake secrets wiped
        assert bytes(ks.req_app) == unhex(b["req_app"]) and bytes(ks.rsp_app) == unhex(b["rsp_app"])
        (ak, _), (_, ai) = ks.app_keys()
        assert bytes(ak) == unhex(b["req_app_key"]) and bytes(ai) == unhex(b["rsp_app_iv"])
        upd = ks.update_secret(ks.req_app)
        assert bytes(upd) == unhex(b["req_app_upd"])
        assert bytes(ks.key_iv(upd)[0]) == unhex(b["req_app_upd_key"])
        secret = ks.rsp_app
        ks.wipe()
        assert secret == bytearray(len(secret))
        n += 1
    assert n == 12


def test_secured_message_vectors():
    n = 0
    for b in read_blocks("spdm_session.txt"):
        if not b["_section"].startswith("secured"):
            continue
        sid, seq = int(b["sid"], 16), int(b["seq"], 16)
        app, pad, body = unhex(b["app"]), unhex(b["pad"]), unhex(b["body"])
        d = secured.Direction(bytearray(unhex(b["key"])), bytearray(unhex(b["iv"])))
        d.seq = seq
        assert secured.encode(sid, d, app, pad) == body
        assert d.seq == seq + 1
        r = secured.Direction(bytearray(unhex(b["key"])), bytearray(unhex(b["iv"])))
        r.seq = seq
        assert bytes(secured.decode(sid, r, body)) == app
        m = secured.Direction(bytearray(unhex(b["key"])), bytearray(unhex(b["iv"])))
        m.seq = seq
        assert secured.encode(sid, m, app, b"", mac_only=True) == unhex(b["mac_only"])
        m.seq = seq
        assert bytes(secured.decode(sid, m, unhex(b["mac_only"]), mac_only=True)) == app
        n += 1
    assert n == 4


def test_secured_decode_rejects():
    key, iv = bytearray(range(32)), bytearray(range(12))
    tx = secured.Direction(key, iv)
    body = secured.encode(7, tx, b"\x05\x12\xe8\x00\x00", b"\x00\x01")

    def fresh():
        return secured.Direction(bytearray(range(32)), bytearray(range(12)))

    raises(secured.SecuredError, secured.decode, 8, fresh(), body)             # other session
    raises(secured.SecuredError, secured.decode, 7, fresh(), body[:20])        # too short
    for i in (9, len(body) - 1):                                              # ciphertext / tag
        bad = bytearray(body)
        bad[i] ^= 0x01
        raises(secured.SecuredError, secured.decode, 7, fresh(), bytes(bad))
    long_len = body[:6] + le16(len(body)) + body[8:]                          # Length beyond body
    raises(secured.SecuredError, secured.decode, 7, fresh(), long_len)
    d = fresh()
    assert secured.decode(7, d, body) == b"\x05\x12\xe8\x00\x00"
    raises(secured.SecuredError, secured.decode, 7, d, body)                  # replay: counter moved on
    d = fresh()
    d.max_seq = 0
    raises(secured.SecuredError, secured.decode, 7, d, body)                  # counter exhausted
    raises(secured.SecuredError, secured.encode, 7, d, b"\x05x")


def test_opaque_formats():
    # SPDM 1.1 header: SpecID "DMTF" (0x444D5446 LE), OpaqueVersion 1, TotalElements, reserved
    o11 = HS.sm_supported(0x11, (0x1000, 0x1100))
    assert o11 == unhex("46544d44" "01010000" "0000" "0700" "010102" "0010" "0011" "00")
    assert HS.parse_sm_versions(0x11, o11) == [0x1000, 0x1100]
    # SPDM 1.2 general opaque format: TotalElements, 3 reserved, then the element
    sel = HS.sm_selection(0x12, 0x1100)
    assert sel == unhex("01000000" "0000" "0400" "01000011")
    assert HS.parse_sm_versions(0x12, HS.sm_supported(0x12, (0x1200,))) == [0x1200]
    for bad in (b"\x01\x00\x00", unhex("01000000000009000101010011000000"), unhex("02000000" "0000040001000011"),
                unhex("01000000" "0000" "0300" "010100" "ff")):
        raises(ValueError, HS.parse_sm_versions, 0x12, bad)
    raises(ValueError, HS.parse_sm_versions, 0x11, b"XXXX" + o11[4:])
    # an element of another registry is skipped
    assert HS.parse_sm_versions(0x12, unhex("01000000" "0500" "0000")) == []


# --------------------------------------------------------------------- flows
@parametrize("v", V)
def test_key_exchange_finish_encrypted(v):
    mgr, r, q = setup(v, NO_CLEAR_FLAGS, heartbeat=10)
    rsp = q.key_exchange(summary=0xFF)
    assert rsp[2] == 10  # HeartbeatPeriod
    assert len(rsp) == 4 + 4 + 32 + 96 + 48 + 2 + (16 if v == 0x11 else 12) + 96 + 48
    assert q.finish() == bytes((v, 0x65, 0, 0))
    s = mgr.sessions[q.sid]
    assert s.state == S.ST_ESTABLISHED and s.sm_version == 0x1100
    assert q.call(bytes((v, 0xE8, 0, 0))) == bytes((v, 0x68, 0, 0))
    assert q.call(bytes((v, 0xEC, 0, 0))) == bytes((v, 0x6C, 0, 0))
    assert mgr.count() == 0 and s.ks.req_app is None and s.req is None


@parametrize("v", V)
def test_handshake_in_the_clear(v):
    mgr, r, q = setup(v, SESSION_FLAGS)
    rsp = q.key_exchange()
    assert q.clear and rsp[1] == 0x64   # no ResponderVerifyData (checked by the helper)
    rsp = q.finish()                      # FINISH in the clear; FINISH_RSP carries verify data
    assert rsp[1] == 0x65 and len(rsp) == 4 + 48
    assert q.call(bytes((v, 0xE8, 0, 0)))[1] == 0x68


@parametrize("v", V)
def test_finish_in_clear_refused_when_encrypted_handshake(v):
    """Without HANDSHAKE_IN_THE_CLEAR a FINISH outside the session is
    SessionRequired (1.2+) or Unspecified (1.1): DSP0274 1.2 error table,
    libspdm's FINISH handler, SPDM-Responder-Validator case 9.11.  The
    handshake itself goes on: the FINISH inside the session still works."""
    mgr, r, q = setup(v, NO_CLEAR_FLAGS)
    q.key_exchange()
    q.clear = True  # send FINISH as a plain SPDM message although the handshake is encrypted
    is_err(q.finish(), 0x0B if v >= 0x12 else 0x05)
    q.clear = False
    assert q.finish() == bytes((v, 0x65, 0, 0))
    # the responder side alone (requester offers the flag): still SessionRequired
    mgr, r, q = setup(v, SESSION_FLAGS, in_clear=False)
    assert not (q.rsp_flags & 0x8000)
    q.key_exchange()
    q.clear = True
    is_err(q.finish(), 0x0B if v >= 0x12 else 0x05)


def test_finish_bad_hmac_ends_session():
    mgr, r, q = setup(0x12, NO_CLEAR_FLAGS)
    q.key_exchange()
    is_err(q.finish(bad=True), 0x06)  # DecryptError, inside the session
    assert mgr.count() == 0


@parametrize("v", V)
def test_psk_with_context(v):
    mgr, r, q = setup(v, NO_CLEAR_FLAGS)
    rsp = q.psk_exchange(HINT, PSK)
    assert rsp[1] == 0x66 and rd(rsp, 8) == 48    # ResponderContext present
    assert mgr.sessions[q.sid].state == S.ST_HANDSHAKE
    assert q.call(bytes((v, 0xE8, 0, 0)))[2] == 0x04  # not before PSK_FINISH
    mgr, r, q = setup(v, NO_CLEAR_FLAGS)
    q.psk_exchange(HINT, PSK)
    assert q.psk_finish() == bytes((v, 0x67, 0, 0))
    assert q.call(bytes((v, 0xE8, 0, 0))) == bytes((v, 0x68, 0, 0))


def rd(b, o):
    return b[o] | (b[o + 1] << 8)


@parametrize("v", V)
def test_psk_without_context(v):
    mgr, r, q = setup(v, NO_CLEAR_FLAGS, psk_mode=S.PSK_NO_CONTEXT, replayable_psk=True)
    assert (q.rsp_flags >> 10) & 3 == 1
    rsp = q.psk_exchange(HINT, PSK)
    assert rd(rsp, 8) == 0
    assert mgr.sessions[q.sid].state == S.ST_ESTABLISHED   # no PSK_FINISH
    assert q.call(bytes((v, 0xE8, 0, 0))) == bytes((v, 0x68, 0, 0))
    is_err(q.call(bytes((v, 0xE7, 0, 0)) + bytes(48)), 0x04)


def test_psk_failures():
    mgr, r, q = setup(0x12, NO_CLEAR_FLAGS)
    is_err(q.psk_exchange(b"unknown", PSK), 0x01)
    assert mgr.count() == 0
    q.psk_exchange(HINT, PSK)
    is_err(q.psk_finish(bad=True), 0x06)
    assert mgr.count() == 0
    # PSK salt rule: a 1.2 requester that used the 1.3 salt would not verify (checked by the helper)
    mgr, r, q = setup(0x12, NO_CLEAR_FLAGS, psk_mode=0)
    is_err(q.psk_exchange(HINT, PSK), 0x07)


def test_tampered_ciphertext_and_header():
    for tamper in ("ct", "aad"):
        mgr, r, q = established()
        s = mgr.sessions[q.sid]
        is_err(q.call(bytes((0x12, 0xE8, 0, 0)), tamper=tamper), 0x06)
        assert mgr.count() == 0 and s.state == 0 and s.rsp is None
        assert mgr.stats["decrypt_errors"] == 1


def test_replay_rejected():
    mgr, r, q = established()
    body = q.wrap(bytes((0x12, 0xE8, 0, 0)))
    assert q.unwrap(q.send(body))[1] == 0x68
    out = q.send(body)   # same sequence number again
    assert q.unwrap(out)[2] == 0x06 and mgr.count() == 0


def test_unknown_session_id_dropped():
    mgr, r, q = established()
    d = q.tx.seq
    assert q.send(q.wrap(bytes((0x12, 0xE8, 0, 0)), sid=q.sid ^ 0x10000)) is None
    assert mgr.count() == 1 and mgr.stats["dropped"] == 1
    q.tx.seq = d  # the dropped message did not consume the responder's counter
    assert q.call(bytes((0x12, 0xE8, 0, 0)))[1] == 0x68
    # from another EID: dropped too
    q.eid = 9
    assert q.send(q.wrap(bytes((0x12, 0xE8, 0, 0)))) is None


def test_sequence_overflow_guard():
    mgr, r, q = established(max_seq=3)
    assert q.call(bytes((0x12, 0xE8, 0, 0)))[1] == 0x68   # app seq 0
    assert q.call(bytes((0x12, 0xE8, 0, 0)))[1] == 0x68   # 1
    assert q.call(bytes((0x12, 0xE8, 0, 0)))[1] == 0x68   # 2 (last usable)
    # counter 3 would be used: refused, the session ends without sending anything
    assert q.call(bytes((0x12, 0xE8, 0, 0))) is None
    assert mgr.count() == 0


def test_heartbeat_timeout():
    mgr, r, q = established(heartbeat=2)
    q.now = 3900
    assert q.call(bytes((0x12, 0xE8, 0, 0)))[1] == 0x68
    q.now = 3900 + 4001   # more than 2 x HeartbeatPeriod without a message
    mgr.tick(q.now)
    assert mgr.count() == 0 and mgr.stats["timeouts"] == 1
    mgr, r, q = established(heartbeat=2)
    q.now = 4001
    assert q.call(bytes((0x12, 0xE8, 0, 0))) is None   # torn down on arrival
    assert mgr.count() == 0
    mgr, r, q = established(heartbeat=0)
    q.now = 10 ** 9
    assert q.call(bytes((0x12, 0xE8, 0, 0)))[1] == 0x68  # no heartbeat: no timeout


def _ku(q, op, tag=0x5A):
    return q.call(bytes((0x12, 0xE9, op, tag)))


def test_key_update_requester_direction():
    mgr, r, q = established()
    assert _ku(q, 1) == bytes((0x12, 0x69, 1, 0x5A))
    new = q.exp(q.req_app, b"traffic upd", b"", 48)
    old_tx = q.tx
    q.req_app = new
    q.tx = type(old_tx)(q.exp(new, b"key", b"", 32), q.exp(new, b"iv", b"", 12))
    assert _ku(q, 3, 7) == bytes((0x12, 0x69, 3, 7))
    assert q.call(bytes((0x12, 0xE8, 0, 0)))[1] == 0x68
    # the old key is gone after VerifyNewKey
    q.tx = old_tx
    is_err(q.call(bytes((0x12, 0xE8, 0, 0))), 0x06)


def test_key_update_all_keys():
    mgr, r, q = established()
    body = q.send(q.wrap(bytes((0x12, 0xE9, 2, 1))))
    newr = q.exp(q.rsp_app, b"traffic upd", b"", 48)
    q.rx = type(q.rx)(q.exp(newr, b"key", b"", 32), q.exp(newr, b"iv", b"", 12))
    assert q.unwrap(body) == bytes((0x12, 0x69, 2, 1))   # ACK already under the new response key
    newq = q.exp(q.req_app, b"traffic upd", b"", 48)
    q.tx = type(q.tx)(q.exp(newq, b"key", b"", 32), q.exp(newq, b"iv", b"", 12))
    assert _ku(q, 3) == bytes((0x12, 0x69, 3, 0x5A))
    assert q.call(bytes((0x12, 0xE8, 0, 0)))[1] == 0x68


def test_key_update_order_rules():
    mgr, r, q = established()
    is_err(_ku(q, 3), 0x01)   # VerifyNewKey without an update
    is_err(_ku(q, 9), 0x01)   # unknown operation
    mgr, r, q = established()
    assert _ku(q, 1)[1] == 0x69
    # still on the old key: the responder falls back to its backup (libspdm) and refuses a 2nd update
    is_err(_ku(q, 1), 0x01)


def test_session_limit_and_concurrency():
    mgr, r, q = setup(0x12, NO_CLEAR_FLAGS, max_sessions=2)
    q.key_exchange(rid=1)
    assert q.finish()[1] == 0x65
    a = (q.sid, q.tx, q.rx)
    q.key_exchange(rid=2)
    assert q.finish()[1] == 0x65
    assert mgr.count() == 2
    is_err(q.key_exchange(rid=3), 0x0A)   # SessionLimitExceeded
    assert q.call(bytes((0x12, 0xE8, 0, 0)))[1] == 0x68
    q.sid, q.tx, q.rx = a
    assert q.call(bytes((0x12, 0xE8, 0, 0)))[1] == 0x68
    assert q.call(bytes((0x12, 0xEC, 0, 0)))[1] == 0x6C
    assert q.key_exchange(rid=3)[1] == 0x64   # a slot is free again


def test_key_exchange_errors():
    mgr, r, q = setup(0x12, NO_CLEAR_FLAGS)
    is_err(q.key_exchange(slot=3), 0x01)          # unprovisioned slot
    is_err(q.key_exchange(summary=5), 0x01)       # bad summary type
    ke = q.x  # raw requests
    good = bytes((0x12, 0xE4, 0, 0)) + le16(9) + bytes(34)
    is_err(ke(good + bytes(96) + b"\x00\x00"), 0x01)                 # not a P-384 point
    is_err(ke(good + bytes(50)), 0x01)                               # truncated
    is_err(ke(bytes((0x11, 0xE4, 0, 0)) + bytes(200)), 0x41)         # version mismatch
    opq = sm_opaque(0x12, (0x0900,))
    from uspdm.crypto import ec
    pub = ec.public_key(ec.P384, 5)
    is_err(ke(good + pub + le16(len(opq)) + opq), 0x01)              # no common secured-message version
    mgr3, r3, q3 = setup(0x13, NO_CLEAR_FLAGS)
    opq = sm_opaque(0x13)
    ev = bytes((0x13, 0xE4, 0, 0)) + le16(9) + b"\x02\x00" + bytes(32) + pub + le16(len(opq)) + opq
    is_err(q3.x(ev), 0x01)                                          # EventAllPolicy without EVENT_CAP
    assert mgr.count() == 0
    # before ALGORITHMS
    mgr2 = S.SessionManager(drbg(b"x"), MemoryStorage())
    r2 = make_responder(mgr2)
    r2.handle(bytes((0x10, 0x84, 0, 0)))
    is_err(r2.handle(good + pub + b"\x00\x00"), 0x04)


def test_session_requests_in_the_clear():
    mgr, r, q = established()
    for code in (0xE8, 0xE9, 0xEC, 0xE7):
        is_err(q.x(bytes((0x12, code, 0, 0))), 0x0B)   # SessionRequired (1.2+)
    is_err(q.x(bytes((0x13, 0xE8, 0, 0))), 0x41)       # VersionMismatch first
    mgr, r, q = established(0x11)
    is_err(q.x(bytes((0x11, 0xE8, 0, 0))), 0x05)       # 1.1: Unspecified, as libspdm


def test_session_requests_in_the_clear_not_negotiated():
    """libspdm checks HBEAT_CAP / KEY_UPD_CAP / PSK_CAP before the session: a
    HEARTBEAT, KEY_UPDATE or PSK_FINISH the requester did not negotiate is
    UnsupportedRequest (ErrorData = the request code), not SessionRequired."""
    no_hb_ku_psk = NO_CLEAR_FLAGS & ~((1 << 13) | (1 << 14) | (3 << 10))
    mgr, r, q = setup(0x12, no_hb_ku_psk)
    for code in (0xE8, 0xE9, 0xE7):
        rsp = q.x(bytes((0x12, code, 0, 0)))
        is_err(rsp, 0x07)
        assert rsp[3] == code
    is_err(q.x(bytes((0x12, 0xEC, 0, 0))), 0x0B)        # END_SESSION: no capability of its own


def test_session_only_requests_exact_size():
    """HEARTBEAT, END_SESSION and PSK_FINISH only travel inside a session, so
    there is no transport padding to tolerate: a wrong size is InvalidRequest
    (libspdm's handlers), and the session goes on."""
    mgr, r, q = established()
    is_err(q.call(bytes((0x12, 0xE8, 0, 0, 0))), 0x01)
    is_err(q.call(bytes((0x12, 0xEC, 0, 0, 0))), 0x01)
    assert q.call(bytes((0x12, 0xE8, 0, 0))) == bytes((0x12, 0x68, 0, 0))
    mgr, r, q = setup(0x12, NO_CLEAR_FLAGS)
    q.psk_exchange(HINT, PSK)
    is_err(q.call(bytes((0x12, 0xE7, 0, 0)) + bytes(49)), 0x01)
    assert mgr.count() == 1
    # PSK_FINISH outside a session at a responder without PSK context: not negotiated at all
    mgr, r, q = setup(0x12, NO_CLEAR_FLAGS, psk_mode=S.PSK_NO_CONTEXT, replayable_psk=True)
    is_err(q.x(bytes((0x12, 0xE7, 0, 0)) + bytes(48)), 0x07)


@parametrize("smv", [0x1100, 0x1200])
def test_nonce_counter_big_endian_only_before_secured_1_2(smv):
    """DSP0277 1.2 defines the counter in the AEAD nonce as little endian
    (libspdm then uses little endian unconditionally); only 1.0/1.1 leave it
    open, where a big-endian requester is followed from counter 1 on."""
    mgr, r, q = setup(0x12, NO_CLEAR_FLAGS)
    q.smv = (smv,)
    q.key_exchange()
    assert q.finish()[1] == 0x65
    assert mgr.sessions[q.sid].sm_version == smv
    q.tx.big = True
    assert q.call(bytes((0x12, 0xE8, 0, 0)))[1] == 0x68   # counter 0: both encodings agree
    if smv < 0x1200:
        q.rx.big = True
        assert q.call(bytes((0x12, 0xE8, 0, 0)))[1] == 0x68
        assert mgr.sessions[q.sid].endian == "be"
    else:
        is_err(q.call(bytes((0x12, 0xE8, 0, 0))), 0x06)    # DecryptError, little-endian reply
        assert mgr.count() == 0


def test_spdm_10_has_no_sessions():
    mgr, r, q = setup(0x10, 0)
    assert not (q.rsp_flags & 0xFFC0)
    is_err(q.x(bytes((0x10, 0xE4, 0, 0)) + bytes(200)), 0x07)


def test_in_session_measurements_and_vendor():
    seen = []

    def hook(msg, s):
        seen.append((bytes(msg), s.id))
        return bytes((0x12, 0x7E, 0, 0)) + b"ok"

    mgr, r, q = established(vendor_hook=hook)
    rsp = q.call(bytes((0x12, 0xE0, 0, 0)))
    assert rsp[1] == 0x60 and rsp[2] == 4      # measurement count inside the session
    rsp = q.call(bytes((0x12, 0x81, 0, 0)))
    assert rsp[1] == 0x01                      # DIGESTS inside the session
    rsp = q.call(bytes((0x12, 0xFE, 0, 0, 0, 0, 0)))
    assert rsp == bytes((0x12, 0x7E, 0, 0)) + b"ok" and seen[0][1] == q.sid
    is_err(q.call(bytes((0x12, 0x83, 0, 0)) + bytes(32)), 0x04)   # CHALLENGE not in a session
    is_err(q.call(bytes((0x12, 0xE4, 0, 0)) + bytes(200)), 0x04)  # no KEY_EXCHANGE inside one


def test_in_session_signed_measurements_deferred():
    """With defer_signing, a signed GET_MEASUREMENTS inside a session answers
    ResponseNotReady (inside the session), is signed in work() slices, and
    RESPOND_IF_READY inside that session collects exactly what the direct path
    answers (twin responders, same seeds); the clear side and other requests
    never see it, and an ended session's pending work is dropped."""
    req = bytes((0x12, 0xE0, 0x01, 0x01)) + bytes(range(32)) + b"\x00"   # signed, index 1, slot 0
    direct = established()
    mgr, r, q = established()
    r.cfg.defer_signing = True
    want = direct[2].call(req)
    assert want[1] == 0x60 and len(want) > 96
    rsp = q.call(req)
    assert rsp[1] == 0x7F and rsp[2] == 0x42 and rsp[5] == 0xE0 and r.pending()
    rir = bytes((0x12, 0xFF, 0xE0, rsp[6]))
    is_err(r.handle(rir), 0x04)                          # not in the clear
    is_err(r.handle(bytes((0x12, 0x81, 0, 0))), 0x03)    # Busy meanwhile
    is_err(q.call(bytes((0x12, 0xFF, 0xE0, rsp[6] ^ 1))), 0x01)   # wrong token
    steps = 0
    while r.work():
        steps += 1
    assert steps > 3
    assert q.call(rir) == want                           # identical to the direct answer
    rsp = q.call(req)                                    # and the next one goes on the same way
    while r.work():
        pass
    want = direct[2].call(req)
    assert want[1] == 0x60 and q.call(bytes((0x12, 0xFF, 0xE0, rsp[6]))) == want
    # the session ends while its signature is pending: nobody is left Busy
    rsp = q.call(req)
    assert rsp[1] == 0x7F and rsp[2] == 0x42 and r.pending()
    assert q.call(bytes((0x12, 0xEC, 0, 0))) == bytes((0x12, 0x6C, 0, 0))
    assert r.handle(bytes((0x12, 0x81, 0, 0)))[1] == 0x01 and not r.pending()


def test_in_session_request_sent_again_while_pending_gets_not_ready():
    """Inside a session: a signed GET_MEASUREMENTS whose RESPOND_IF_READY got ERROR Busy
    is sent again by the requester (the next sequence number); while its signature is
    computed that gets ResponseNotReady for the same work, not Busy, and RESPOND_IF_READY
    then collects what the direct path answers.  The same bytes in the clear are Busy."""
    req = bytes((0x12, 0xE0, 0x01, 0x01)) + bytes(range(32)) + b"\x00"
    direct = established()
    mgr, r, q = established()
    r.cfg.defer_signing = True
    want = direct[2].call(req)
    rsp = q.call(req)
    assert rsp[1] == 0x7F and rsp[2] == 0x42 and r.pending()
    tok = rsp[6]
    r.work()
    again = q.call(req)
    assert again[1] == 0x7F and again[2] == 0x42 and again[5] == 0xE0 and again[6] == tok
    is_err(r.handle(req), 0x03)                          # not the session's: Busy
    while r.work():
        pass
    assert q.call(bytes((0x12, 0xFF, 0xE0, tok))) == want


def test_get_version_ends_sessions_and_wipes():
    mgr, r, q = established()
    s = mgr.sessions[q.sid]
    key = s.req.key
    q.x(bytes((0x10, 0x84, 0, 0)))
    assert mgr.count() == 0 and key == bytearray(32)


def test_end_session_preserve_flag_accepted():
    mgr, r, q = established()
    # no CACHE_CAP: there is no preserved negotiated state, the flag is accepted and has nothing to clear
    assert q.call(bytes((0x12, 0xEC, 1, 0))) == bytes((0x12, 0x6C, 0, 0))
    assert mgr.count() == 0


def test_key_exchange_deferred_with_respond_if_ready():
    mgr, r, q = setup(0x13, NO_CLEAR_FLAGS, defer=True)
    # while the EC work is pending, the half-made session is not usable
    from uspdm.crypto import ec

    rsp = r.handle(bytes((0x13, 0xE4, 0, 0)) + le16(7) + bytes(34) + ec.public_key(ec.P384, 3) + b"\x00\x00")
    assert rsp[1] == 0x7F and rsp[2] == 0x42 and rsp[5] == 0xE4   # ResponseNotReady for KEY_EXCHANGE
    assert mgr.count() == 1 and r.pending()
    sid = list(mgr.sessions)[0]
    assert mgr.handle_secured(8, le16(sid & 0xFFFF) + le16(sid >> 16) + bytes(30), 0) is None
    r.handle(bytes((0x10, 0x84, 0, 0)))          # GET_VERSION abandons it
    assert mgr.count() == 0 and not r.pending()
    mgr, r, q = setup(0x13, NO_CLEAR_FLAGS, defer=True)
    assert q.key_exchange()[1] == 0x64 and q.rnr == 1
    assert q.finish()[1] == 0x65
    assert q.call(bytes((0x13, 0xE8, 0, 0)))[1] == 0x68


def test_board_configuration():
    st = MemoryStorage()
    m = S.from_board(drbg(b"c"), st, {"max_sessions": 3})
    assert (m.max_sessions, m.heartbeat, m.psk_mode, m.in_clear, m.defer) == (3, S.DEFAULT_HEARTBEAT, 2, True, None)
    st.write(S.SESSION_CONFIG, b'{"heartbeat": 5, "psk_mode": 1, "handshake_in_the_clear": false, "max_seq": 9,'
                               b' "defer_key_exchange": true}')
    m = S.from_board(drbg(b"c"), st, {"max_sessions": 3})
    # psk_mode=1 alone is refused (issue 11.13: replayable keys): PSK with responder context
    assert (m.max_sessions, m.heartbeat, m.psk_mode, m.in_clear, m.max_seq, m.defer) == (3, 5, 2, False, 9, True)
    assert m.cap_flags(0x12) & 0x8C00 == 0x0800
    m = S.from_board(drbg(b"c"), st, {"max_sessions": 3, "allow_replayable_psk": 1})
    assert (m.max_sessions, m.heartbeat, m.psk_mode, m.in_clear, m.max_seq, m.defer) == (3, 5, 1, False, 9, True)
    assert m.cap_flags(0x12) & 0x8C00 == 0x0400          # PSK without context, no handshake in the clear
    assert m.cap_flags(0x10) == 0
    st.write(S.SESSION_CONFIG, b"{not json")
    assert S.from_board(drbg(b"c"), st).max_sessions == 2


def test_nonce_counter_layouts():
    iv = bytearray(range(12))
    le = secured.Direction(bytearray(32), iv).nonce(0x0102)
    be = secured.Direction(bytearray(32), iv, big=True).nonce(0x0102)
    assert le == bytes((0 ^ 2, 1 ^ 1)) + bytes(iv[2:])
    assert be == bytes(iv[:10]) + bytes((10 ^ 1, 11 ^ 2))
    assert secured.Direction(bytearray(32), iv).nonce(0) == secured.Direction(bytearray(32), iv, big=True).nonce(0)
