"""End to end over serial: a board set to defer its signatures answers
CHALLENGE and signed GET_MEASUREMENTS with ResponseNotReady, and the
verifier's RESPOND_IF_READY gets the signed answers (checked with
`cryptography` by the verifier)."""
import subprocess
import sys

import pytest

from uspdm_tools.link import SerialLink, Unreachable
from uspdm_tools.verifier import LinkTransport, attest, load_root


@pytest.mark.parametrize("setting,deferred", [("1", True), ("0", False)])
def test_defer_signing_setting_over_serial(request, tmp_path, setting, deferred):
    if request.config.getoption("--port"):
        pytest.skip("simulator only (sets the board's settings)")
    from uspdm_tools.simproc import SimProcess

    flash, ca = str(tmp_path / "flash"), str(tmp_path / "ca")
    subprocess.run([sys.executable, "-m", "uspdm_tools.cli", "provision", "--flash", flash, "--ca-dir", ca,
                    "--alg", "p384"], check=True, capture_output=True, timeout=300)
    root, _ = load_root(ca + "/ca.cert.pem")
    with SimProcess(flash=flash, extra_args=["--set", "defer_signing=" + setting]) as sim:
        link = SerialLink(sim.port, timeout=20)
        try:
            code, rep = attest(LinkTransport(link, Unreachable), root)
        finally:
            link.close()
        log = sim.log_text()
    assert code == 0, rep.get("reason")
    retries = {t.name: t.retries for t in rep["timings"]}
    assert (retries["CHALLENGE"] >= 1) == deferred
    assert ("deferred (ResponseNotReady)" in log) == deferred


# -- answered directly within CT (defer_signing=auto on a slow board) ------------
# The simulated board with a slowed signer (slow_sign_ms: every signing job takes
# at least that long, in 10 ms busy slices, like a slow chip): CHALLENGE, signed
# GET_MEASUREMENTS and KEY_EXCHANGE are answered directly (no ResponseNotReady, so
# a requester without RESPOND_IF_READY works), within the CT the board advertises,
# and MCTP control keeps being answered while a signature is under way.
import time  # noqa: E402

from uspdm_tools import requester as R  # noqa: E402

SLOW_MS = 1000   # CT from it: 2^21 us (1.25 x 1000 ms rounded up), so the work has room under load


@pytest.fixture(scope="module")
def slow_board(request, tmp_path_factory):
    if request.config.getoption("--port"):
        pytest.skip("simulator only (slows the board's signer with a setting)")
    from uspdm_tools.simproc import SimProcess

    tmp = tmp_path_factory.mktemp("ct")
    flash, ca = str(tmp / "flash"), str(tmp / "ca")
    subprocess.run([sys.executable, "-m", "uspdm_tools.cli", "provision", "--flash", flash, "--ca-dir", ca,
                    "--alg", "p384"], check=True, capture_output=True, timeout=300)
    with SimProcess(flash=flash, extra_args=["--set", "slow_sign_ms=%d" % SLOW_MS]) as sim:
        yield {"sim": sim, "root": ca + "/ca.cert.pem"}


def test_attestation_answered_directly_within_ct(slow_board):
    root, _ = load_root(slow_board["root"])
    link = SerialLink(slow_board["sim"].port, timeout=10)
    try:
        req_opts = {"rnr_retries": 0}     # a requester that never sends RESPOND_IF_READY
        code, rep = attest(LinkTransport(link, Unreachable), root, requester_opts=req_opts)
    finally:
        link.close()
    assert code == 0, rep.get("reason")
    t = {x.name: x for x in rep["timings"]}
    assert t["CHALLENGE"].retries == 0
    assert t["CHALLENGE"].seconds * 1000 >= SLOW_MS * 0.9
    log = slow_board["sim"].log_text()
    assert "answered directly within CT" in log
    assert all(x.retries == 0 for x in rep["timings"])
    # CT advertised in CAPABILITIES covers the work: 2^CTExponent us >= the time it took
    ct_exp = rep["connection"]["ct_exponent"]
    assert (1 << ct_exp) / 1000 >= t["CHALLENGE"].seconds * 1000


def _collect(link, need, deadline, also=()):
    """Read the line until tag `need` has its answer (answers to tags in `also`
    are kept when they come too): {tag: (time, body)}."""
    got = {}
    want_tags = set(also) | {need}
    while need not in got and time.monotonic() < deadline:
        data = link.ser.read(1)
        if not data:
            continue
        data += link.ser.read(link.ser.in_waiting or 0)
        for pkt in link._decoder.feed(data):
            m = link._rq.receive_packet(pkt, int(time.monotonic() * 1000))
            if m is not None and m[1] in want_tags and m[1] not in got:
                got[m[1]] = (time.monotonic(), m[2])
    return got


def test_mctp_control_answered_during_a_signature(slow_board):
    link = SerialLink(slow_board["sim"].port, timeout=10)
    try:
        q = R.Requester(LinkTransport(link, Unreachable))
        q.init_connection()
        v = q.version
        ch = bytes((v, 0x83, 0, 0)) + bytes(range(32)) + (bytes(8) if v >= 0x13 else b"")
        t0 = time.monotonic()
        ch_tag, pkts = link._rq.request(link.eid, b"\x05" + ch)
        link.send_packets(pkts)
        answers = []
        done = None
        n = 0
        while done is None and time.monotonic() - t0 < 30:
            n += 1
            # Get Endpoint ID, on the other tags (the CHALLENGE's stays outstanding)
            tag, pkts = link._rq.request(link.eid, b"\x00\x80\x02", tag=(ch_tag + 1 + n % 7) & 7)
            sent = time.monotonic()
            link.send_packets(pkts)
            got = _collect(link, tag, sent + 5, also=(ch_tag,))
            assert tag in got, "Get Endpoint ID unanswered during the signature"
            answers.append(got[tag][0] - sent)
            assert got[tag][1][:4] == b"\x00\x00\x02\x00"
            if ch_tag in got:
                done = got[ch_tag]
            time.sleep(0.05)
        if done is None:
            done = _collect(link, ch_tag, time.monotonic() + 30).get(ch_tag)
    finally:
        link.close()
    assert done is not None, "no CHALLENGE_AUTH"
    body = done[1]
    assert body[0] == 0x05 and body[2] == 0x03, body[:8].hex()   # CHALLENGE_AUTH itself, no ResponseNotReady
    assert done[0] - t0 >= SLOW_MS / 1000 * 0.9
    # several control round trips happened while the board was signing, each quick
    assert len(answers) >= 5, answers
    assert max(answers) < 0.5, answers


def test_key_exchange_answered_directly_within_ct(slow_board):
    from uspdm_tools.cmd_session import LinkAdapter
    from uspdm_tools.session_requester import SessionRequester

    link = SerialLink(slow_board["sim"].port, timeout=10)
    try:
        q = SessionRequester(LinkAdapter(link, Unreachable), rnr_retries=0)
        q.init_connection()
        q.get_digests()
        q.get_certificate(0)
        t0 = time.monotonic()
        s = q.key_exchange(0)         # signature and verify data checked by the host
        kex_s = time.monotonic() - t0
        q.finish(s)
        inner = q.in_session(s)
        m = inner.get_measurements(1, True)     # signed, inside the session: answered directly too
        assert len(m["blocks"]) == 1
        q.end_session(s)
    finally:
        link.close()
    assert kex_s >= SLOW_MS / 1000 * 0.9      # KEY_EXCHANGE_RSP itself, late (rnr_retries=0)
    assert kex_s * 1e6 < (1 << q.ct_exponent)
