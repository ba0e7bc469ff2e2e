"""Secure sessions end to end over serial against the simulated board
(MicroPython under Node behind a pty): the host session requester (its own
key schedule and AES-GCM via `cryptography`) talks MCTP type 0x05 / 0x06 to
the board's lib/uspdm session code.

Two boards: A with the defaults (PSK with responder context, no heartbeat,
2 sessions) and B tuned through uspdm/session.json (PSK without context,
heartbeat 3 s, a low sequence-number limit, KEY_EXCHANGE computed in idle-loop
slices behind ResponseNotReady)."""
import json
import os
import subprocess
import sys
import time

import pytest

from uspdm_tools import requester as R
from uspdm_tools import session_requester as SR
from uspdm_tools.cmd_session import LinkAdapter

pytestmark = pytest.mark.slow

PSK = bytes(range(32))
HINT = b"lab-psk-1"
VERSIONS = ["1.1", "1.2", "1.3"]


def uspdm(*args, timeout=300, env=None):
    p = subprocess.run([sys.executable, "-m", "uspdm_tools.cli"] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout, env=env)
    return p.returncode, p.stdout, p.stderr


def make_board(tmp, session_cfg=None):
    from uspdm_tools.simproc import SimProcess

    flash, ca = tmp / "flash", tmp / "ca"
    rc, out, err = uspdm("provision", "--flash", flash, "--ca-dir", ca)
    assert rc == 0, err
    (flash / "uspdm").mkdir(parents=True, exist_ok=True)
    (flash / "uspdm" / ("psk_%s.bin" % HINT.hex())).write_bytes(PSK)
    (tmp / "psk.bin").write_bytes(PSK)   # the host's copy, beside (never inside) the board's flash folder
    if session_cfg is not None:
        (flash / "uspdm" / "session.json").write_text(json.dumps(session_cfg))
    return SimProcess(flash=str(flash)), str(ca / "ca.cert.pem"), str(tmp / "psk.bin")


@pytest.fixture(scope="module")
def board_a(request, tmp_path_factory):
    real = request.config.getoption("--port")
    if real:
        # a real board: provisioned with the lab CA (USPDM_TEST_ROOT) and, for the PSK
        # tests, the PSK of uspdm/psk_<hex of "lab-psk-1">.bin = bytes(range(32))
        from uspdm_tools import certs

        root = os.environ.get("USPDM_TEST_ROOT") or os.path.join(certs.default_ca_dir(), "ca.cert.pem")
        pskf = tmp_path_factory.mktemp("psk") / "psk.bin"
        pskf.write_bytes(PSK)
        yield {"port": real, "root": root, "psk_file": str(pskf), "sim": None}
        return
    sim, root, pskf = make_board(tmp_path_factory.mktemp("sa"))
    with sim:
        yield {"port": sim.port, "root": root, "psk_file": pskf, "sim": sim}


@pytest.fixture(scope="module")
def board_b(request, tmp_path_factory):
    if request.config.getoption("--port"):
        pytest.skip("board B is a simulator tuned through uspdm/session.json")
    sim, root, pskf = make_board(tmp_path_factory.mktemp("sb"),
                                 {"psk_mode": 1, "allow_replayable_psk": True, "heartbeat": 3, "max_seq": 8, "max_sessions": 2,
                                  "defer_key_exchange": True})
    with sim:
        yield {"port": sim.port, "root": root, "psk_file": pskf, "sim": sim}


class Conn:
    def __init__(self, port, version=None, clear=False, timeout=20.0, **opts):
        from uspdm_tools import link as link_mod

        self.raw = link_mod.SerialLink(port, timeout=timeout)
        self.link = LinkAdapter(self.raw, link_mod.Unreachable)
        self.q = SR.SessionRequester(self.link, version=version, clear_handshake=clear, timeout=timeout, **opts)
        self.q.init_connection()

    def cert_session(self, slot=0):
        if slot not in self.q.chains:
            self.q.get_digests()
            self.q.get_certificate(slot)
        return self.q.open_session(slot)

    def close(self):
        self.raw.close()


@pytest.fixture
def conn_factory():
    made = []

    def make(port, **kw):
        c = Conn(port, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("clear", [False, True])
def test_certificate_session_every_version(board_a, conn_factory, version, clear):
    c = conn_factory(board_a["port"], version=version, clear=clear)
    q = c.q
    assert q.rsp_flags & SR.CAP_KEY_EX and q.rsp_flags & SR.CAP_HANDSHAKE_IN_THE_CLEAR
    s = c.cert_session()
    assert s.in_clear == clear
    inner = q.in_session(s)
    m = inner.get_measurements()        # signed inside the session, L1 checked by cryptography
    assert m["blocks"] and m["signature"]
    q.heartbeat(s)
    q.key_update(s)
    q.key_update(s, all_keys=True)
    inner.get_measurements(0xFF, False)
    q.end_session(s)


@pytest.mark.parametrize("version", VERSIONS)
def test_psk_with_context(board_a, conn_factory, version):
    c = conn_factory(board_a["port"], version=version)
    s = c.q.psk_exchange(HINT, PSK)
    assert s.psk_context
    c.q.psk_finish(s)
    c.q.heartbeat(s)
    c.q.in_session(s).get_measurements(0, False)
    c.q.end_session(s)


def test_psk_without_context(board_b, conn_factory):
    c = conn_factory(board_b["port"], version="1.3")
    assert (c.q.rsp_flags >> 10) & 3 == 1
    s = c.q.psk_exchange(HINT, PSK)
    assert not s.psk_context and s.heartbeat == 3
    c.q.heartbeat(s)
    c.q.end_session(s)


def test_psk_unknown_hint(board_a, conn_factory):
    c = conn_factory(board_a["port"], version="1.2")
    with pytest.raises(R.ProtocolError) as e:
        c.q.psk_exchange(b"nobody", PSK)
    assert e.value.code == 0x01


def _expect_decrypt_error_then_gone(c, s, body):
    rsp = s.decode(c.link.secured(body, 10))
    assert rsp[1] == 0x7F and rsp[2] == 0x06
    with pytest.raises(TimeoutError):
        c.link.secured(s.encode(bytes((c.q.version, 0xE8, 0, 0))), 2)


def test_tampered_ciphertext(board_a, conn_factory):
    c = conn_factory(board_a["port"], version="1.2")
    s = c.cert_session()
    body = bytearray(s.encode(bytes((0x12, 0xE8, 0, 0))))
    body[12] ^= 0x01
    _expect_decrypt_error_then_gone(c, s, bytes(body))


def test_tampered_header_aad(board_a, conn_factory):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    c = conn_factory(board_a["port"], version="1.2")
    s = c.cert_session()
    body = s.encode(bytes((0x12, 0xE8, 0, 0)))
    d = s.req
    seq = d.seq - 1
    pt = AESGCM(d.key).decrypt(d.nonce(seq), body[8:], body[:8])
    aad = body[:6] + (int.from_bytes(body[6:8], "little") ^ 0x100).to_bytes(2, "little")
    _expect_decrypt_error_then_gone(c, s, body[:8] + AESGCM(d.key).encrypt(d.nonce(seq), pt, aad))


def test_replay(board_a, conn_factory):
    c = conn_factory(board_a["port"], version="1.3")
    s = c.cert_session()
    body = s.encode(bytes((0x13, 0xE8, 0, 0)))
    assert s.decode(c.link.secured(body, 10))[1] == 0x68
    _expect_decrypt_error_then_gone(c, s, body)


def test_wrong_session_id_is_ignored(board_a, conn_factory):
    c = conn_factory(board_a["port"], version="1.2")
    s = c.cert_session()
    d = s.req.seq
    with pytest.raises(TimeoutError):
        c.link.secured(s.encode(bytes((0x12, 0xE8, 0, 0)), sid=s.sid ^ 0x00010000), 2)
    s.req.seq = d
    c.q.heartbeat(s)          # the real session is untouched
    c.q.end_session(s)


def test_two_sessions_third_refused(board_a, conn_factory):
    c = conn_factory(board_a["port"], version="1.2")
    a = c.cert_session()
    b = c.q.open_session(0)
    with pytest.raises(R.ProtocolError) as e:
        c.q.psk_exchange(HINT, PSK)
    assert e.value.code == 0x0A   # SessionLimitExceeded
    c.q.heartbeat(a)
    c.q.heartbeat(b)
    c.q.end_session(a)
    c.q.end_session(b)


def test_sequence_number_guard(board_b, conn_factory):
    c = conn_factory(board_b["port"], version="1.2")
    s = c.q.psk_exchange(HINT, PSK)   # no PSK_FINISH on board B
    for _ in range(8):               # counters 0..7 are usable with max_seq 8
        c.q.heartbeat(s)
    with pytest.raises(TimeoutError):   # counter 8: the board ends the session, says nothing
        c.link.secured(s.encode(bytes((0x12, 0xE8, 0, 0))), 2)
    with pytest.raises(TimeoutError):
        c.link.secured(s.encode(bytes((0x12, 0xE8, 0, 0))), 2)


def test_heartbeat_timeout(board_b, conn_factory):
    c = conn_factory(board_b["port"], version="1.2")
    s = c.q.psk_exchange(HINT, PSK)
    c.q.heartbeat(s)
    time.sleep(2.0)
    c.q.heartbeat(s)                  # within 2 x 3 s: alive
    time.sleep(7.5)                   # > 2 x HeartbeatPeriod of silence
    with pytest.raises(TimeoutError):
        c.link.secured(s.encode(bytes((0x12, 0xE8, 0, 0))), 2)
    assert "heartbeat timeout" in board_b["sim"].log_text()


def test_cli_session_certificate_and_psk(board_a):
    rc, out, err = uspdm("session", "--port", board_a["port"], "--root", board_a["root"], "--json",
                         "--timeout", "20")
    assert rc == 0, out + err
    rep = json.loads(out)
    assert rep["result"] == "OK" and rep["chain"].startswith("valid")
    assert [x["step"] for x in rep["steps"]][-1] == "END_SESSION"
    rc, out, err = uspdm("session", "--port", board_a["port"], "--psk-hint", HINT.decode(),
                         "--psk-file", board_a["psk_file"], "--version", "1.3", "--timeout", "20",
                         "--root", board_a["root"])
    assert rc == 0, out + err
    assert "PSK (with responder context)" in out and "result: OK" in out
    rc, out, err = uspdm("session", "--port", board_a["port"], "--clear-handshake", "--version", "1.1",
                         "--root", board_a["root"], "--timeout", "20")
    assert rc == 0, out + err
    assert "handshake in the clear" in out and "chain: valid to the trusted root" in out


def test_cli_session_uses_the_lab_ca_by_default(board_a, tmp_path):
    """Without --root `uspdm session` trusts what `uspdm attest` trusts (the lab CA): a board
    provisioned by another CA is a verification failure, never "result: OK"; no CA at all is a usage error."""
    from uspdm_tools import certs

    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    rc, out, err = uspdm("session", "--port", board_a["port"], "--timeout", "20", env=env)
    assert rc == 1 and "no --root given and no lab CA" in err and "OK" not in out
    certs.LabCA(os.path.join(str(tmp_path / "cfg"), "uspdm", "ca")).load_or_create()   # another lab CA
    rc, out, err = uspdm("session", "--port", board_a["port"], "--timeout", "20", env=env)
    assert rc == 4, out + err
    assert "result: VERIFICATION FAILED" in out and "result: OK" not in out
    assert "same name, different CA" in out and out.count("SHA-256 ") >= 2


def test_key_exchange_deferred(board_b, conn_factory):
    # RDT is the simulator's (fast) signing time: on a loaded machine the deferred work takes
    # many RDTs, so the RESPOND_IF_READY count is bounded by time here, not by 20 tries
    c = conn_factory(board_b["port"], version="1.2", rnr_retries=10000, rnr_timeout=60.0)
    s = c.cert_session()
    assert [t.retries for t in c.q.timings if t.name == "KEY_EXCHANGE"][0] >= 1   # ResponseNotReady seen
    c.q.heartbeat(s)
    c.q.in_session(s).get_measurements(0, False)
    c.q.end_session(s)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_attest_inside_session(board_a, version):
    rc, out, err = uspdm("attest", "--port", board_a["port"], "--root", board_a["root"], "--session",
                         "--version", version, "--json", "--timeout", "20")
    assert rc == 0, out + err
    rep = json.loads(out)
    assert rep["verdict"] == "TRUSTED" and rep["session"]["handshake"] == "encrypted"
    assert rep["measurements"]["signature"] == "valid"
    names = [t["message"] for t in rep["timings"]]
    assert "KEY_EXCHANGE" in names and "END_SESSION (secured)" in names
