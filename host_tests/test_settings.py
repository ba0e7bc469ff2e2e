"""The declared schema of board settings (firmware/settings.py): the host refuses
a bad --set before writing anything; the board reports a bad settings file at
boot and keeps the default; the schema covers every setting the code reads."""
import os
import re
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "firmware"))

import settings  # noqa: E402

BAD = ["versions=2.0", "asym_priority=p999", "sessions=maybe", "default_eid=300", "mode=router",
       "nosuch=1", "asym_priority=p384,p384", "i2c_addr=0x80", "repl_escape=2"]


def uspdm(*args, timeout=120):
    p = subprocess.run([sys.executable, "-m", "uspdm_tools.cli"] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def test_schema_covers_every_setting_the_code_reads():
    keys = set()
    for base in ("firmware", "boards", "lib"):
        for dp, dn, fns in os.walk(os.path.join(ROOT, base)):
            for fn in fns:
                if fn.endswith(".py"):
                    src = open(os.path.join(dp, fn)).read()
                    keys |= set(re.findall(r"(?:cfg|config\(\))\.get\(\"([a-z0-9_]+)\"", src))
                    keys |= set(re.findall(r"cfg\[\"([a-z0-9_]+)\"\]", src))
    assert keys, "no settings found"
    assert keys - set(settings.SCHEMA) == set()


@pytest.mark.parametrize("board", ["rp2040", "esp32", "sim"])
def test_board_defaults_are_valid(board):
    import importlib.util

    spec = importlib.util.spec_from_file_location("b_" + board, os.path.join(ROOT, "boards", board, "board.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for k, v in mod.DEFAULTS.items():
        assert settings.check(k, v) is None, (k, v)


def test_check_values():
    for kv in BAD:
        k, v = kv.split("=", 1)
        assert settings.check(k, settings.parse_value(v)) is not None, kv
    for kv in ("versions=1.0,1.2", "asym_priority=p256,p384", "sessions=0", "defer_signing=auto", "led_pin=LED",
               "led_pin=25", "i2c_addr=0x1D", "mode=bridge"):
        k, v = kv.split("=", 1)
        assert settings.check(k, settings.parse_value(v)) is None, kv


@pytest.mark.parametrize("kv", BAD)
def test_sim_set_refuses_bad_settings(tmp_path, kv):
    flash = tmp_path / "flash"
    rc, out, err = uspdm("sim", "--flash", flash, "--set", kv, timeout=60)
    assert rc == 1 and "Traceback" not in err
    assert "bad setting" in err and len(err.strip().splitlines()) == 1
    assert not (flash / "uspdm" / "board.cfg").exists()   # nothing written


def test_deploy_set_refuses_bad_settings():
    rc, out, err = uspdm("deploy", "--board", "rp2040", "--port", "/dev/x", "--dry-run", "--set", "versions=2.0")
    assert rc == 1 and "bad setting: versions=2.0" in err and "mpremote" not in out


def test_board_reports_a_bad_settings_file_at_boot(request, tmp_path):
    if request.config.getoption("--port"):
        pytest.skip("simulator only")
    from uspdm_tools.link import SerialLink
    from uspdm_tools.simproc import SimProcess

    flash = tmp_path / "flash"
    (flash / "uspdm").mkdir(parents=True)
    (flash / "uspdm" / "board.cfg").write_text("versions=2.0\nsessions=maybe\nserial_mtu=64\n")
    with SimProcess(flash=str(flash), wait_measurements=False) as sim:
        with SerialLink(sim.port, timeout=10) as l:
            rsp = l.spdm(b"\x10\x84\x00\x00", timeout=20)   # still serves, with the defaults
            assert rsp[1] == 0x04 and rsp[5] == 4            # all four versions (default kept)
            cc, data = l.control(0x05)
            assert 0x06 in data[1:1 + data[0]]               # sessions default (on) kept
        log = sim.log_text()
    assert "bad setting in uspdm/board.cfg ignored (default kept): versions=2.0" in log
    assert "sessions=maybe: must be 0 or 1" in log
