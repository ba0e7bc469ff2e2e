"""NEGOTIATE_ALGORITHMS with session capabilities on both sides: the
algorithm a negotiated capability needs must be selectable, else
InvalidRequest (libspdm's responder: KEY_EX needs a DHE group,
ENCRYPT/MAC an AEAD suite, KEY_EX/PSK the SPDM key schedule and, in 1.2+,
the general opaque data format 1)."""
from uspdm import consts as C
from _session_util import SESSION_FLAGS, SessionManager, Req, le16, le32, make_responder
from test_spdm_common import drbg


def _neg(v, tables, other=0x02):
    mgr = SessionManager(drbg(b"m"), None)
    q = Req(make_responder(mgr), mgr, v)
    req = bytes((0x10, 0x84, 0, 0))
    q.x(req)
    req = bytes((v, 0xE1, 0, 0, 0, 10, 0, 0)) + le32(SESSION_FLAGS)
    if v >= 0x12:
        req += le32(4096) + le32(4096)
    assert q.x(req)[1] == 0x61
    tabs = b"".join(bytes((t, 0x20)) + le16(val) for t, val in tables)
    req = (bytes((v, 0xE3, len(tables), 0)) + le16(32 + len(tabs)) + bytes((1, other if v >= 0x12 else 0))
           + le32(C.ASYM_ECDSA_P384) + le32(C.HASH_SHA384) + bytes(16) + tabs)
    return q.x(req)


GOOD = [(2, C.DHE_SECP384R1), (3, C.AEAD_AES_256_GCM), (4, C.ASYM_ECDSA_P384), (5, 1)]


def test_all_session_algorithms_selectable():
    for v in (0x11, 0x12, 0x13):
        rsp = _neg(v, GOOD)
        assert rsp[1] == 0x63, (v, rsp)


def test_no_common_dhe_group():
    rsp = _neg(0x12, [(2, C.DHE_SECP256R1)] + GOOD[1:])
    assert rsp[1] == 0x7F and rsp[2] == 0x01


def test_no_common_aead():
    rsp = _neg(0x12, [GOOD[0], (3, C.AEAD_AES_128_GCM)] + GOOD[2:])
    assert rsp[1] == 0x7F and rsp[2] == 0x01


def test_missing_key_schedule_table():
    rsp = _neg(0x13, GOOD[:3])
    assert rsp[1] == 0x7F and rsp[2] == 0x01


def test_sessions_need_opaque_format_1():
    rsp = _neg(0x12, GOOD, other=0x01)   # only format 0 offered
    assert rsp[1] == 0x7F and rsp[2] == 0x01
    assert _neg(0x12, GOOD, other=0x03)[1] == 0x63   # both offered: format 1 selected
