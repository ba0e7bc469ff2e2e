"""`uspdm sim --m0`: the firmware on the emulated Cortex-M0 (qemu-system-arm,
MicroPython for armv6m with a hard heap) behind the same serial interface as
the wasm board.  Skipped, saying why, without qemu-system-arm or an image
(USPDM_M0_FW, or ../shared/m0/firmware-h200k.elf beside the clone)."""
import json
import os
import subprocess
import sys
import time

import pytest

from uspdm_tools import m0board

pytestmark = pytest.mark.slow

FW = m0board.default_firmware()
WHY = m0board.check(FW)
needs_m0 = pytest.mark.skipif(WHY is not None, reason="emulated Cortex-M0 unavailable: %s" % WHY)


def uspdm(*args, timeout=300, env=None):
    p = subprocess.run([sys.executable, "-m", "uspdm_tools.cli"] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout, env=env)
    return p.returncode, p.stdout, p.stderr


def test_missing_image_or_qemu_is_one_clear_line(tmp_path):
    rc, out, err = uspdm("sim", "--m0", tmp_path / "nope.elf", "--flash", tmp_path / "f", timeout=60)
    assert rc == 1
    assert err.strip().count("\n") == 0 and "nope.elf" in err and "no such file" in err
    env = dict(os.environ, QEMU_SYSTEM_ARM=str(tmp_path / "no-qemu"))
    rc, out, err = uspdm("sim", "--m0", "--flash", tmp_path / "f", timeout=60, env=env)
    assert rc == 1
    assert err.strip().count("\n") == 0 and "qemu-system-arm not found" in err and "apt-get install" in err


def test_frame_parsing_helpers():
    assert m0board.parse_max_free("GC: total: 200064\n No. of 1-blocks: 3, max blk sz: 20, max free sz: 12254\n") \
        == 12254 * 16
    assert m0board.parse_max_free("nothing") is None
    from mctp import serial as mserial

    # an SPDM ERROR ResponseNotReady in an MCTP serial frame is named as such
    pkt = bytes((0x01, 0x08, 0x00, 0xC8, 0x05, 0x12, 0x7F, 0x42, 0x00))
    d = m0board.describe(mserial.encode_frame(pkt))
    assert d and m0board.label(*d[0][:3], rsp=True) == "ERROR ResponseNotReady"
    assert m0board.label(0x05, 0xFF, 0x83) == "CHALLENGE"   # RESPOND_IF_READY completes a CHALLENGE


def _children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _descendants(pid):
    out = []
    for c in _children(pid):
        out.append(c)
        out += _descendants(c)
    return out


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@needs_m0
def test_m0_board_attests_persists_flash_and_restarts(tmp_path):
    from uspdm_tools import link as link_mod
    from uspdm_tools.simproc import SimProcess

    flash, ca = tmp_path / "flash", tmp_path / "ca"
    rc, out, err = uspdm("provision", "--flash", flash, "--ca-dir", ca)
    assert rc == 0, err
    stats = tmp_path / "stats.jsonl"
    # bytecode in place (ROMFS): the attestation fits there today; the stock load's budgets
    # are host_tests/test_m0_budget.py
    with SimProcess(flash=str(flash), extra_args=["--m0", FW, "--m0-load", "rom", "--m0-stats", str(stats),
                                                  "--set", "svn=7", "--set", "persist_eid=1"]) as sim:
        log = sim.log_text()
        assert "emulated Cortex-M0" in log and "measurements ready" in log, log[-3000:]
        assert "board=m0" not in log   # measurements are not logged, but the board name is:
        assert "uspdm: board m0" in log
        # MCTP control Set Endpoint ID: the board persists its EID; the write lands in the folder
        with link_mod.SerialLink(sim.port, timeout=20) as lk:
            rsp = lk.control(0x01, bytes((0x00, 0x2A)))
            assert rsp[0] == 0x00, rsp
        deadline = time.monotonic() + 20
        while not (flash / "uspdm" / "eid.bin").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (flash / "uspdm" / "eid.bin").read_bytes() == b"\x2a"
        rc, out, err = uspdm("attest", "--port", sim.port, "--root", ca / "ca.cert.pem", "--alg", "p256",
                             "--json", "--timeout", "30")
        assert rc == 0, out + err
        rep = json.loads(out)
        assert rep["verdict"] == "TRUSTED" and rep["measurements"]["signature"] == "valid"
        svn = [b for b in rep["measurements"]["blocks"] if b["index"] == 0x43]
        assert svn and "07" in json.dumps(svn[0])   # --set svn=7 reached the board's settings
        recs = [json.loads(x) for x in stats.read_text().splitlines()]
        msgs = [r for r in recs if r["event"] == "message"]
        assert any(r["request"] == "CHALLENGE" and r["response"] == "CHALLENGE_AUTH" for r in msgs)
        for r in msgs:
            assert r["kinstr"] > 0 and 0 < r["live"] < 200064 and 0 < r["max_free"] < 200064
        # qemu dies: the board restarts (a watchdog reset) with its flash, and answers again
        qemus = [p for p in _descendants(sim.proc.pid) if "qemu-system-arm" in _cmdline(p)]
        assert len(qemus) == 1
        os.kill(qemus[0], 9)
        deadline = time.monotonic() + 120
        while sim.log_text().count("sim: board ready") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sim.log_text().count("sim: board ready") == 2, sim.log_text()[-2000:]
        with link_mod.SerialLink(sim.port, eid=0x2A, timeout=30) as lk:
            rsp = lk.spdm(b"\x10\x84\x00\x00")
            assert rsp[1] == 0x04
