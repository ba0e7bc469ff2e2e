"""End to end over a serial port: MCTP control on the board (the simulated
board by default, a real one with --port).  Frames are built and decoded
independently with pymctp where it matters."""
import os
import time

import pytest

from mctp import serial as mserial
from uspdm_tools.link import SerialLink, Unreachable


@pytest.fixture(scope="module")
def port(request, tmp_path_factory):
    real = request.config.getoption("--port")
    if real:
        yield real
        return
    from uspdm_tools.simproc import SimProcess

    with SimProcess(flash=str(tmp_path_factory.mktemp("flash"))) as sim:
        yield sim.port


@pytest.fixture
def link(port):
    with SerialLink(port, timeout=10) as l:
        yield l


def get_eid(link):
    cc, data = link.control(0x02)
    assert cc == 0
    return data[0]


def test_get_eid_and_types(link):
    cc, data = link.control(0x02)
    assert cc == 0 and len(data) == 3
    cc, data = link.control(0x05)
    assert cc == 0
    assert set(data[1:1 + data[0]]) >= {0x00, 0x05}
    cc, data = link.control(0x04, b"\xff")
    assert cc == 0 and data[0] >= 1
    assert data[1] == 0xF1  # MCTP 1.x
    cc, data = link.control(0x04, b"\x42")
    assert cc == 0x80  # message type not supported


def test_unsupported_command(link):
    cc, _ = link.control(0x7E)
    assert cc == 0x05


def test_set_eid_rejects_reserved(link):
    for bad in (0x00, 0xFF):
        cc, _ = link.control(0x01, bytes((0x00, bad)))
        assert cc == 0x02


def test_set_eid_then_address_by_eid(link):
    cc, data = link.control(0x01, bytes((0x00, 0x22)))
    assert cc == 0 and data[1] == 0x22
    assert get_eid(link) == 0x22
    # addressed by its new EID
    cc, data = link.control(0x02, eid=0x22)
    assert cc == 0 and data[0] == 0x22
    # a packet for another EID is dropped: no answer
    with pytest.raises(Unreachable):
        link.control(0x02, eid=0x23, timeout=1.0)


def test_garbage_and_truncated_frames_then_valid(link):
    eid = get_eid(link)
    good = mserial.encode_frame(bytes((1, 0, 8, 0xC8, 0x00, 0x80, 0x02)))
    junk = [
        os.urandom(300),
        b"\x7e" * 20,
        good[:7],                      # truncated frame
        good[:-3] + b"\x00\x00\x7e",   # bad FCS
        b"\x7e\x01\xff" + os.urandom(40),  # impossible length
        b"\x7e\x02\x07" + good[3:],    # wrong revision
    ]
    for j in junk:
        link.send_raw(j)
    time.sleep(0.2)
    assert get_eid(link) == eid   # still answering, and the garbage changed nothing


def test_large_multipacket_request_is_reassembled(link):
    # A 1 KB SPDM message (an invalid request) crosses 17 packets; the board
    # must reassemble it and answer (with an SPDM ERROR), proving the path.
    body = bytes((0x10, 0xFE)) + bytes(1022)
    rsp = link.spdm(body, timeout=20)
    assert rsp[1] == 0x7F  # ERROR


def test_eid_persists_across_restart_and_tcp_carries_the_same_stream(request, tmp_path):
    if request.config.getoption("--port"):
        pytest.skip("simulator only (restarts the board)")
    import socket

    from uspdm_tools.simproc import SimProcess

    with socket.socket() as s:  # a free loopback port for --tcp
        s.bind(("127.0.0.1", 0))
        tcp_port = s.getsockname()[1]
    flash = str(tmp_path / "flash")
    # the EID is kept on the flash only when a board setting asks for it (issue 11.7)
    with SimProcess(flash=flash, wait_measurements=False, extra_args=["--set", "persist_eid=1"]) as sim:
        with SerialLink(sim.port, timeout=10) as l:
            cc, data = l.control(0x01, bytes((0x00, 0x42)))
            assert cc == 0 and data[1] == 0x42
    # the EID was written to the board's flash folder ...
    assert open(os.path.join(flash, "uspdm", "eid.bin"), "rb").read() == b"\x42"
    # ... and a restarted board comes back with it, on the pty and on TCP
    with SimProcess(flash=flash, wait_measurements=False, extra_args=["--tcp", "127.0.0.1:%d" % tcp_port]) as sim:
        with SerialLink(sim.port, timeout=10) as l:
            assert get_eid(l) == 0x42
        with SerialLink("socket://127.0.0.1:%d" % tcp_port, timeout=10) as l:
            assert get_eid(l) == 0x42
            cc, data = l.control(0x04, b"\x00")
            assert cc == 0 and data[1] == 0xF1


def test_sim_runs_the_mpy_build(request, tmp_path):
    # `uspdm sim --mpy` runs the firmware compiled by mpy-cross (what a board
    # gets from `uspdm deploy`): MCTP control and SPDM GET_VERSION answer.
    if request.config.getoption("--port"):
        pytest.skip("simulator only")
    from uspdm_tools.simproc import SimProcess

    with SimProcess(flash=str(tmp_path / "flash"), wait_measurements=False, extra_args=["--mpy"]) as sim:
        with SerialLink(sim.port, timeout=20) as l:
            assert get_eid(l) == 0
            rsp = l.spdm(b"\x10\x84\x00\x00", timeout=20)
            assert rsp[1] == 0x04 and rsp[5] >= 1  # VERSION with at least one entry
        assert "firmware /firmware/device.mpy" in sim.log_text()


def test_sim_settings_leave_sessions_out(request, tmp_path):
    # `uspdm sim --set sessions=0` writes uspdm/board.cfg on the flash, as
    # `uspdm deploy --set` does on a board: the board then does not offer
    # secured messages (MCTP type 0x06).
    if request.config.getoption("--port"):
        pytest.skip("simulator only")
    from uspdm_tools.simproc import SimProcess

    flash = tmp_path / "flash"
    with SimProcess(flash=str(flash), wait_measurements=False, extra_args=["--set", "sessions=0"]) as sim:
        with SerialLink(sim.port, timeout=10) as l:
            cc, data = l.control(0x05)
            assert cc == 0 and list(data[1:1 + data[0]]) == [0x00, 0x05]
    assert (flash / "uspdm" / "board.cfg").read_text() == "sessions=0\n"
    with SimProcess(flash=str(flash), wait_measurements=False, extra_args=["--set", "sessions=1"]) as sim:
        with SerialLink(sim.port, timeout=10) as l:
            cc, data = l.control(0x05)
            assert cc == 0 and 0x06 in data[1:1 + data[0]]
