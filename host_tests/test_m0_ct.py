"""Answer within CT on the emulated Cortex-M0 (`uspdm sim --m0` with default
settings: RP2040-sized 200 KB heap, firmware loaded as a stock deploy does, RP2040
time estimated from exact instruction counts; a P-384 + P-256 identity).

A requester that never sends RESPOND_IF_READY (as DMTF's validator) gets
CHALLENGE_AUTH and signed MEASUREMENTS directly, late, within the CT the board
advertised, over serial and through `--emu-port` (DMTF spdm-emu's socket
protocol); MCTP control is answered while a signature is under way; our own
verifier's RESPOND_IF_READY path still works on a board set to defer_signing=1.
KEY_EXCHANGE_RSP the same way on a board whose code runs from its ROMFS partition
(`uspdm deploy --to romfs`: with the stock load, the 200 KB heap does not hold
the session handshake today, see test_m0_budget).  Every signature, transcript and
verify data is checked by the host's own code (`cryptography`)."""
import os
import subprocess
import sys
import time

import pytest

from uspdm_tools import m0board
from uspdm_tools import requester as R
from uspdm_tools.link import SerialLink, Unreachable
from uspdm_tools.verifier import LinkTransport

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

FW = m0board.default_firmware()
WHY = m0board.check(FW) if FW else "no firmware image"


def _board(request, tmp_path_factory, name, extra=()):
    if WHY is not None:
        pytest.skip("emulated Cortex-M0 unavailable: %s" % WHY)
    if request.config.getoption("--port"):
        pytest.skip("simulator only")
    from uspdm_tools.simproc import SimProcess

    tmp = tmp_path_factory.mktemp(name)
    flash, ca = str(tmp / "flash"), str(tmp / "ca")
    subprocess.run([sys.executable, "-m", "uspdm_tools.cli", "provision", "--flash", flash, "--ca-dir", ca],
                   check=True, capture_output=True, timeout=300)
    sim = SimProcess(flash=flash, extra_args=["--m0", FW, "-v"] + list(extra), start_timeout=300)
    return sim, ca + "/ca.cert.pem"


@pytest.fixture(scope="module")
def m0(request, tmp_path_factory):
    sim, root = _board(request, tmp_path_factory, "m0ct", ["--emu-port", "0", "--emu-keep-serving"])
    with sim:
        yield {"sim": sim, "root": root}
        if os.environ.get("USPDM_M0CT_LOG"):
            with open(os.environ["USPDM_M0CT_LOG"], "w") as f:
                f.write(sim.log_text())


def _kinstr(log, what):
    """The most k-instructions of a `what` line of the board's -v log (emulated board time)."""
    lines = [x for x in log.splitlines() if what in x]
    line = max(lines, key=lambda x: int(x.split(what + ": ")[1].split(" k-instr")[0].replace(",", "")))
    return int(line.split(what + ": ")[1].split(" k-instr")[0].replace(",", "")), line


def _kinstr_when_logged(sim, what, least=10000, wait=15.0):
    """_kinstr once the board's figures for `what` are in the log: they reach the log file
    through the simulator process, so they can land just after the answer the host read."""
    end = time.monotonic() + wait
    while True:
        log = sim.log_text()
        lines = [x for x in log.splitlines() if what in x]
        if lines:
            k, line = _kinstr(log, what)
            if k > least or time.monotonic() > end:
                return k, line, log
        elif time.monotonic() > end:
            return 0, "no %r line in the board's log" % what, log
        time.sleep(0.1)


def _signed_flows(transport, alg="p384"):
    """VCA, DIGESTS, CERTIFICATE, CHALLENGE and a signed GET_MEASUREMENTS of every
    block, by a requester that never sends RESPOND_IF_READY."""
    q = R.Requester(transport, algs=(alg,), rnr_retries=0, timeout=60)
    q.init_connection()
    q.get_digests()
    q.get_certificate(0)
    q.challenge(0)
    m = q.get_measurements(0xFF, signed=True)
    assert len(m["blocks"]) >= 5
    assert all(t.retries == 0 for t in q.timings), [(t.name, t.retries) for t in q.timings]
    return q


@pytest.mark.parametrize("alg", ["p384", "p256"])
def test_m0_signed_flows_without_response_not_ready(m0, alg):
    root_pem = m0["root"]
    from uspdm_tools.verifier import attest, load_root

    root, _ = load_root(root_pem)
    link = SerialLink(m0["sim"].port, timeout=60)
    try:
        # the verifier's attestation (chain to the root, CHALLENGE_AUTH and MEASUREMENTS
        # signatures over the transcripts) by a requester that never sends RESPOND_IF_READY
        code, rep = attest(LinkTransport(link, Unreachable), root, algs=(alg,),
                           requester_opts={"rnr_retries": 0, "timeout": 60})
    finally:
        link.close()
    assert code == 0, rep.get("reason")
    assert all(t.retries == 0 for t in rep["timings"]), [(t.name, t.retries) for t in rep["timings"]]
    # the CT the board advertised covers the signing it did (RP2040 time from instruction counts)
    ct_ms = (1 << rep["connection"]["ct_exponent"]) / 1000
    for what in ("CHALLENGE -> CHALLENGE_AUTH", "GET_MEASUREMENTS -> MEASUREMENTS"):
        k, line, log = _kinstr_when_logged(m0["sim"], what)
        assert "answered directly within CT" in log, log[-2000:]
        assert k > 10000, line             # the signature's work is in it
        assert k * m0board.KINSTR_US / 1000 < ct_ms, (line, ct_ms)


def _collect(link, need, deadline, also=()):
    from test_sim_deferred import _collect as c

    return c(link, need, deadline, also)


def test_m0_control_answered_during_a_signature(m0):
    link = SerialLink(m0["sim"].port, timeout=60)
    try:
        q = R.Requester(LinkTransport(link, Unreachable), algs=("p384",), timeout=60)
        q.init_connection()
        v = q.version
        ch = bytes((v, 0x83, 0, 0)) + bytes(range(32)) + (bytes(8) if v >= 0x13 else b"")
        t0 = time.monotonic()
        ch_tag, pkts = link._rq.request(link.eid, b"\x05" + ch)
        link.send_packets(pkts)
        n = before = 0
        done = None
        while done is None and time.monotonic() - t0 < 120:
            n += 1
            # Get Endpoint ID on the other tags (the CHALLENGE's stays outstanding)
            tag, pkts = link._rq.request(link.eid, b"\x00\x80\x02", tag=(ch_tag + 1 + n % 7) & 7)
            link.send_packets(pkts)
            got = _collect(link, tag, time.monotonic() + 30, also=(ch_tag,))
            assert tag in got, "Get Endpoint ID unanswered during the signature"
            assert got[tag][1][:4] == b"\x00\x00\x02\x00"
            if ch_tag in got:
                done = got[ch_tag]
                if done[0] > got[tag][0]:
                    before += 1
            else:
                before += 1
    finally:
        link.close()
    assert done is not None and done[1][0] == 0x05 and done[1][2] == 0x03, done   # CHALLENGE_AUTH itself
    assert before >= 2, before     # control answered while CHALLENGE_AUTH was still being computed


def test_m0_signed_flows_through_the_emu_port(m0):
    from uspdm_tools import emu

    c = emu.EmuClient(*m0["sim"].emu_addr, timeout=60)
    try:
        _signed_flows(LinkTransport(c, emu.Unreachable))
    finally:
        c.close()


@pytest.fixture(scope="module")
def m0_rom(request, tmp_path_factory):
    sim, root = _board(request, tmp_path_factory, "m0ctrom", ["--m0-load", "rom", "--emu-port", "0",
                                                               "--emu-keep-serving"])
    with sim:
        yield {"sim": sim, "root": root}
        if os.environ.get("USPDM_M0CT_LOG"):
            with open(os.environ["USPDM_M0CT_LOG"] + ".rom", "w") as f:
                f.write(sim.log_text())


@pytest.mark.parametrize("board", ["m0", "m0_rom"])
def test_m0_key_exchange_answered_within_ct(board, request):
    """A session opened as DMTF's requester opens it (through the emu port, no
    RESPOND_IF_READY): KEY_EXCHANGE_RSP comes directly, within CT."""
    from uspdm_tools import emu
    from uspdm_tools.cmd_session import LinkAdapter
    from uspdm_tools.session_requester import SessionRequester

    b = request.getfixturevalue(board)
    c = emu.EmuClient(*b["sim"].emu_addr, timeout=60)
    try:
        q = SessionRequester(LinkAdapter(c, emu.Unreachable), algs=("p384",), rnr_retries=0, timeout=60)
        q.init_connection()
        q.get_digests()
        q.get_certificate(0)
        s = q.key_exchange(0)      # KEY_EXCHANGE_RSP: signature and ResponderVerifyData checked by the host
        q.finish(s)
        q.heartbeat(s)
        # a signed GET_MEASUREMENTS inside the session: answered directly (encrypted when done)
        m = q.in_session(s).get_measurements(1, True)
        assert len(m["blocks"]) == 1
        q.end_session(s)
    finally:
        c.close()
    assert all(t.retries == 0 for t in q.timings), [(t.name, t.retries) for t in q.timings]
    k, line, _log = _kinstr_when_logged(b["sim"], "KEY_EXCHANGE -> KEY_EXCHANGE_RSP")
    ct_ms = (1 << q.ct_exponent) / 1000
    assert k > 10000 and k * m0board.KINSTR_US / 1000 < ct_ms, (line, ct_ms)


@pytest.fixture(scope="module")
def m0_polled(request, tmp_path_factory):
    sim, root = _board(request, tmp_path_factory, "m0ctrnr", ["--set", "defer_signing=1"])
    with sim:
        yield {"sim": sim, "root": root}


def test_m0_defer_signing_1_keeps_respond_if_ready(m0_polled):
    """defer_signing=1: ResponseNotReady, and our verifier's RESPOND_IF_READY gets the
    signed answers (as libspdm's requester does)."""
    from uspdm_tools import m0flows
    from uspdm_tools.verifier import attest, load_root

    root, _ = load_root(m0_polled["root"])
    link = SerialLink(m0_polled["sim"].port, timeout=60)
    try:
        code, rep = attest(LinkTransport(link, Unreachable), root, algs=("p384",),
                           requester_opts=m0flows._fast_opts(60.0))
    finally:
        link.close()
    assert code == 0, rep.get("reason")
    retries = {t.name: t.retries for t in rep["timings"]}
    assert retries["CHALLENGE"] >= 1, retries
    assert "deferred (ResponseNotReady)" in m0_polled["sim"].log_text()
