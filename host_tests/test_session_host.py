"""Secure sessions, in process (CPython): our responder (lib/uspdm session
code) against the host session requester, whose key schedule, transcripts,
signature checks and secured-message framing use only the `cryptography`
package.  Every version 1.1-1.3, encrypted handshake and handshake in the
clear, certificate and PSK sessions (with and without responder context),
measurements inside the session, heartbeat, key update both ways, end."""
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from uspdm_tools import requester as R
from uspdm_tools import session_requester as SR

from uspdm import session as S
from uspdm.crypto import drbg as _drbg
from uspdm.responder import Config, Responder
from uspdm.storage import MemoryStorage

from test_spdm_common import make_identity, make_meas  # host_tests/portable on sys.path

PSK = os.urandom(32)
HINT = b"lab-psk-7"


class Link:
    """In-process link: .spdm -> Responder.handle, .secured -> SessionManager."""

    def __init__(self, r, mgr, eid=8):
        self.r, self.mgr, self.eid, self.now = r, mgr, eid, 0
        self.sent = []

    def spdm(self, req, timeout=None):
        self.r.now = self.now
        while self.r.pending():      # the board's idle loop
            self.r.work()
        rsp = self.r.handle(bytes(req))
        if rsp is None:
            raise TimeoutError("no answer")
        return rsp

    def secured(self, body, timeout=None):
        self.sent.append(bytes(body))
        out = self.mgr.handle_secured(self.eid, bytes(body), self.now)
        if out is None:
            raise TimeoutError("no answer")
        return out


def board(**kw):
    st = MemoryStorage()
    st.write("uspdm/psk_%s.bin" % HINT.hex(), PSK)
    mgr = S.SessionManager(_drbg.from_source(os.urandom), st, **kw)
    c = Config()
    c.dhe_priority = [0x10]
    c.aead_priority = [0x02]
    c.key_schedule_priority = [0x01]
    r = Responder(make_identity(("p384", "p256")), make_meas(), _drbg.from_source(os.urandom), c)
    S.attach(r, mgr)
    r.eid = 8
    return mgr, r, Link(r, mgr)


def connect(version="1.2", clear=False, algs=("p384",), **kw):
    mgr, r, link = board(**kw)
    q = SR.SessionRequester(link, version=version, algs=algs, clear_handshake=clear, sleep=lambda t: None)
    q.init_connection()
    q.get_digests()
    q.get_certificate(0)
    return mgr, r, link, q


@pytest.mark.parametrize("version", ["1.1", "1.2", "1.3"])
@pytest.mark.parametrize("clear", [False, True])
@pytest.mark.parametrize("defer", [False, True])
def test_certificate_session(version, clear, defer):
    mgr, r, link, q = connect(version, clear, heartbeat=30, defer=defer)
    s = q.key_exchange(0)
    assert s.in_clear == clear and s.heartbeat == 30
    assert [t.retries for t in q.timings if t.name == "KEY_EXCHANGE"] == [1 if defer else 0]
    q.finish(s)
    assert mgr.sessions[s.sid].state == S.ST_ESTABLISHED
    inner = q.in_session(s)
    m = inner.get_measurements()               # signed, L1 = A || session L, verified by cryptography
    assert len(m["blocks"]) == 4 and m["signature"]
    assert inner.get_measurements(signed=False, operation=0)["count"] == 4
    q.heartbeat(s)
    q.key_update(s)                            # requester direction
    q.key_update(s, all_keys=True)             # both directions
    q.heartbeat(s)
    inner.get_measurements()
    q.end_session(s)
    assert mgr.count() == 0
    assert all(b[0:4] == s.sid.to_bytes(4, "little") for b in link.sent)


@pytest.mark.parametrize("version", ["1.1", "1.2", "1.3"])
@pytest.mark.parametrize("mode", [S.PSK_WITH_CONTEXT, S.PSK_NO_CONTEXT])
def test_psk_session(version, mode):
    mgr, r, link, q = connect(version, psk_mode=mode, replayable_psk=True)
    s = q.psk_exchange(HINT, PSK)
    assert s.psk_context == (mode == S.PSK_WITH_CONTEXT)
    if s.psk_context:
        assert mgr.sessions[s.sid].state == S.ST_HANDSHAKE
        q.psk_finish(s)
    assert mgr.sessions[s.sid].state == S.ST_ESTABLISHED
    q.heartbeat(s)
    q.in_session(s).get_measurements()
    q.key_update(s, all_keys=True)
    q.end_session(s)


def test_psk_wrong_key_is_detected_by_the_requester():
    mgr, r, link, q = connect("1.3")
    with pytest.raises(R.VerificationError):
        q.psk_exchange(HINT, b"not the psk")


def test_psk_13_salt_differs_from_12():
    """SPDM 1.3 PSK sessions use salt_0 = 0xFF..; a requester that used zeros fails."""
    mgr, r, link, q = connect("1.3")
    orig = SR.HostSession.salt0
    SR.HostSession.salt0 = lambda self: b"\x00" * self.H
    try:
        with pytest.raises(R.VerificationError):
            q.psk_exchange(HINT, PSK)
    finally:
        SR.HostSession.salt0 = orig


def test_p256_connection_uses_sha256_key_schedule():
    mgr, r, link, q = connect("1.2", algs=("p256",))
    assert q.hash == R.HASH_SHA256
    s = q.open_session(0)
    assert s.H == 32 and len(s.secrets["req_app"]) == 32
    q.in_session(s).get_measurements()
    q.end_session(s)


def test_two_sessions_and_a_third_refused():
    mgr, r, link, q = connect("1.2", max_sessions=2)
    a = q.open_session(0)
    b = q.open_session(0)
    with pytest.raises(R.ProtocolError) as e:
        q.key_exchange(0)
    assert e.value.code == 0x0A  # SessionLimitExceeded
    q.heartbeat(a)
    q.heartbeat(b)
    q.in_session(a).get_measurements()
    q.in_session(b).get_measurements()
    q.end_session(a)
    c = q.open_session(0)
    q.heartbeat(c)


def test_tampered_response_is_detected():
    mgr, r, link, q = connect("1.2")
    s = q.open_session(0)
    orig = link.secured

    def flip(body, timeout=None):
        out = bytearray(orig(body, timeout))
        out[12] ^= 1
        return bytes(out)

    link.secured = flip
    with pytest.raises(SR.SessionError):
        q.heartbeat(s)


def test_responder_rejects_tampering_and_replay():
    for how in ("ct", "aad", "replay"):
        mgr, r, link, q = connect("1.2")
        s = q.open_session(0)
        req = bytes((0x12, 0xE8, 0, 0))
        body = s.encode(req)
        if how == "replay":
            assert s.decode(link.secured(body))[1] == 0x68
        elif how == "ct":
            body = body[:9] + bytes((body[9] ^ 0x40,)) + body[10:]
        else:
            # header as expected on the wire, tag computed over another Length
            d = s.req
            d.seq -= 1
            pt = AESGCM(d.key).decrypt(d.nonce(d.seq), body[8:], body[:8])
            bad_aad = body[:6] + (int.from_bytes(body[6:8], "little") + 1).to_bytes(2, "little")
            body = body[:8] + AESGCM(d.key).encrypt(d.nonce(d.seq), pt, bad_aad)
            d.seq += 1
        out = s.decode(link.secured(body))
        assert out[1] == 0x7F and out[2] == 0x06, how   # DecryptError inside the session
        assert mgr.count() == 0
        with pytest.raises(TimeoutError):
            link.secured(s.encode(req))                 # the session is gone: dropped


def test_heartbeat_timeout_and_key_wipe():
    mgr, r, link, q = connect("1.2", heartbeat=1)
    s = q.open_session(0)
    sess = mgr.sessions[s.sid]
    key = sess.rsp.key
    link.now = 1500
    q.heartbeat(s)
    link.now = 1500 + 2001
    mgr.tick(link.now)
    assert mgr.count() == 0 and key == bytearray(len(key))
    with pytest.raises(R.Unreachable):
        q.heartbeat(s)


def test_finish_tamper_gives_decrypt_error():
    mgr, r, link, q = connect("1.2")
    s = q.key_exchange(0)
    with pytest.raises(R.ProtocolError) as e:
        q.finish(s, tamper=True)
    assert e.value.code == 0x06 and mgr.count() == 0


def test_requester_sequence_numbers_and_padding_on_the_wire():
    mgr, r, link, q = connect("1.2")
    s = q.open_session(0)
    for _ in range(3):
        q.heartbeat(s)
    # handshake key: FINISH was seq 0; application key: heartbeats 0, 1, 2
    assert [int.from_bytes(b[4:6], "little") for b in link.sent] == [0, 0, 1, 2]
    lens = {len(b) for b in link.sent[1:]}
    assert all(8 + 2 + 5 + 1 + 16 <= n <= 8 + 2 + 5 + 32 + 16 for n in lens)


@pytest.mark.parametrize("psk", [False, True])
def test_cmd_session_scenario(psk):
    from uspdm_tools import cmd_session

    from cryptography import x509

    from uspdm_tools import certs

    mgr, r, link = board(heartbeat=20)
    root = x509.load_der_x509_certificate(certs.der_split(r.identity.chain(0, "p384"))[0])
    q = SR.SessionRequester(link, version="1.3")
    rep = cmd_session.exercise(q, 0, HINT if psk else None, PSK if psk else None, root)
    names = [x["step"] for x in rep["steps"]]
    assert names[-1] == "END_SESSION" and "HEARTBEAT" in names
    assert rep["heartbeat_period_s"] == 20 and len(rep["measurements"]) == 4
    assert mgr.count() == 0 and mgr.stats["opened"] == 1
    assert rep["chain"].startswith("valid to the trusted root")


def test_cmd_session_never_ok_without_a_root():
    """A certificate session with nothing to check the chain against is a verification failure."""
    from uspdm_tools import cmd_session

    mgr, r, link = board()
    q = SR.SessionRequester(link, version="1.3")
    with pytest.raises(R.VerificationError, match="no trusted root"):
        cmd_session.exercise(q, 0, None, None, None)


@pytest.mark.parametrize("version", ["1.1", "1.3"])
def test_attest_inside_a_session(version):
    from cryptography import x509

    from uspdm_tools import certs, verifier

    mgr, r, link = board()
    root = x509.load_der_x509_certificate(certs.der_split(r.identity.chain(0, "p384"))[0])
    code, rep = verifier.attest(link, root, version=version, algs=("p384",), session=True)
    assert code == 0, rep
    assert rep["session"]["handshake"] == "encrypted" and rep["measurements"]["signature"] == "valid"
    assert mgr.stats["opened"] == 1 and mgr.count() == 0   # ended after the measurements
    import io

    out = io.StringIO()
    verifier.report_text(rep, out)
    assert "Session       0x" in out.getvalue()


def test_mac_only_session():
    """Requester without ENCRYPT_CAP: the session authenticates but does not encrypt
    (AAD = header || application data, no AppDataLength, no padding)."""
    mgr, r, link = board()
    q = SR.SessionRequester(link, version="1.2", encrypt=False, sleep=lambda t: None)
    q.init_connection()
    s = q.open_session(0)
    assert s.mac_only and mgr.sessions[s.sid].mac_only
    q.heartbeat(s)
    body = link.sent[-1]
    assert body[8:13] == b"\x05\x12\xe8\x00\x00"        # the request travels in the clear
    q.in_session(s).get_measurements()
    q.key_update(s, all_keys=True)
    tampered = bytearray(s.encode(bytes((0x12, 0xE8, 0, 0))))
    tampered[11] ^= 1                                   # flip a byte of the (unencrypted) message
    out = s.decode(link.secured(bytes(tampered)))
    assert out[1] == 0x7F and out[2] == 0x06 and mgr.count() == 0


@pytest.mark.parametrize("big,sm_versions,endian", [
    (False, SR.SM_VERSIONS, "le"),
    (True, (0x1100,), "be"),            # secured-message 1.1: byte order open, a big-endian peer is followed
    (True, SR.SM_VERSIONS, "le"),       # 1.2 selected: DSP0277 1.2 fixes little endian on both sides
])
def test_nonce_counter_endianness_detected(big, sm_versions, endian):
    """The counter goes into the nonce little endian; with secured-message
    1.0/1.1 (which leave the byte order open) a requester that uses big
    endian is followed from counter 1 on, as libspdm's optional decode-both."""
    mgr, r, link = board()
    q = SR.SessionRequester(link, version="1.3", big_endian=big, sm_versions=sm_versions, sleep=lambda t: None)
    q.init_connection()
    s = q.open_session(0)
    assert mgr.sessions[s.sid].sm_version == max(sm_versions) & 0xFF00
    for _ in range(3):
        q.heartbeat(s)
    assert mgr.sessions[s.sid].endian == endian
    q.key_update(s, all_keys=True)
    q.heartbeat(s)
    q.heartbeat(s)
    q.end_session(s)
