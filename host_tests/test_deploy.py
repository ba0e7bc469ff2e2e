"""uspdm deploy without a board: the staged filesystem, the mpremote command
plan, the whole flow with a stand-in mpremote (recording its arguments),
verification against the simulated board's serial port (responder and
bridge), and clear failures."""
import os
import subprocess
import sys
import types

import pytest

from uspdm_tools import deploy


def uspdm(*args, timeout=300):
    p = subprocess.run([sys.executable, "-m", "uspdm_tools.cli"] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from uspdm_tools import build_mpy

    d = tmp_path_factory.mktemp("build")
    count, errors = build_mpy.build(arches=("armv6m", "xtensawin"), out=str(d), quiet=True)
    assert errors == []
    return str(d)


@pytest.mark.parametrize("board", ["rp2040", "esp32"])
def test_stage_layout(built, board, tmp_path):
    roots = deploy.stage(board, built, str(tmp_path))
    for need in ("main.py", "board.mpy", "device.mpy", "i2c.mpy", "bridge.mpy", "serve.mpy", "usb_serial.mpy",
                 "boardlib.mpy"):
        assert need in roots and (tmp_path / need).exists(), need
    assert "main.mpy" not in roots and "i2cbus.mpy" not in roots     # the sim bus stays on the PC
    assert (tmp_path / "lib" / "mctp" / "smbus.mpy").exists()
    assert (tmp_path / "lib" / "uspdm" / "compat.mpy").exists()
    assert not list((tmp_path / "lib").rglob("*.py"))
    # the larger P-384 comb table (lib_rom/) goes only into a ROMFS image, never to the filesystem
    assert not (tmp_path / "lib" / "uspdm" / "crypto" / "ec_p384_big.mpy").exists()
    arch = deploy.BOARDS[board]
    rom = deploy.romfs_tree(str(tmp_path), roots, str(tmp_path / "romfs"), os.path.join(built, arch, "lib_rom"))
    assert os.path.exists(os.path.join(rom, "lib", "uspdm", "crypto", "ec_p384_big.mpy"))
    assert os.path.exists(os.path.join(rom, "lib", "uspdm", "crypto", "ec.mpy"))
    with open(tmp_path / "board.mpy", "rb") as f:
        assert f.read(2) == b"M\x06"
    # the staged board module is the requested board's
    src = open(os.path.join(deploy.REPO_ROOT, "boards", board, "board.py")).read()
    assert ('NAME = "%s"' % board) in src


def test_plan_order_and_scripts(tmp_path):
    (tmp_path / "lib" / "mctp").mkdir(parents=True)
    (tmp_path / "lib" / "mctp" / "smbus.mpy").write_bytes(b"M\x06")
    cmds = deploy.plan("/dev/ttyACM0", str(tmp_path), ["main.py", "board.mpy", "device.mpy"],
                       {"mode": "bridge", "bridge_target": 0x1D})
    assert all(c[:2] == ["connect", "/dev/ttyACM0"] for c in cmds)
    kinds = [c[2] for c in cmds]
    assert kinds == ["exec", "fs", "fs", "exec", "reset"]
    assert cmds[1][3:6] == ["cp", "-r", str(tmp_path / "lib")] and cmds[1][-1] == ":"
    assert cmds[2][-1] == ":" and cmds[2][4:-1] == [str(tmp_path / n) for n in ("main.py", "board.mpy", "device.mpy")]
    # stale sources that would shadow the .mpy files are removed (not main.py)
    ns = {}
    removed = []
    fake_os = types.SimpleNamespace(remove=removed.append)
    exec(cmds[0][3].replace("import os\n", ""), {"os": fake_os}, ns)
    assert removed == ["board.py", "device.py", "lib/mctp/smbus.py"]
    # settings file, parsed back by the firmware's parser
    files = {}

    class F:
        def __init__(self, name, mode):
            self.name = name

        def write(self, t):
            files[self.name] = t

        def close(self):
            pass

    exec(cmds[3][3].replace("import os\n", ""), {"os": types.SimpleNamespace(mkdir=lambda p: None), "open": F})
    sys.path.insert(0, os.path.join(deploy.REPO_ROOT, "firmware"))
    import boardlib

    assert boardlib.parse_settings(files["uspdm/board.cfg"]) == {"mode": "bridge", "bridge_target": 0x1D}


def test_settings_validation():
    ns = types.SimpleNamespace(mode=None, i2c_addr=0x80, bridge_target=None, set=[])
    with pytest.raises(deploy.DeployError):
        deploy.settings_from_args(ns)
    ns = types.SimpleNamespace(mode="bridge", i2c_addr=None, bridge_target=0x22, set=["i2c_freq=400000", "led_pin=LED"])
    assert deploy.settings_from_args(ns) == {"mode": "bridge", "bridge_target": 0x22, "i2c_freq": 400000,
                                             "led_pin": "LED"}
    for bad in ("x=y", "sessions=maybe", "versions=2.0", "asym_priority=p999", "i2c_freq=5", "defer_signing=2"):
        ns.set = [bad]
        with pytest.raises(deploy.DeployError, match="bad setting"):
            deploy.settings_from_args(ns)
    ns.set = ["novalue"]
    with pytest.raises(deploy.DeployError):
        deploy.settings_from_args(ns)


def test_dry_run_cli(tmp_path):
    rc, out, err = uspdm("deploy", "--board", "rp2040", "--port", "/dev/ttyACM9", "--dry-run",
                         "--stage-dir", tmp_path / "stage", "--mode", "bridge")
    assert rc == 0, err
    assert "compiling for rp2040 (armv6m)" in out
    assert "mpremote connect /dev/ttyACM9 fs cp -r" in out
    assert "mpremote connect /dev/ttyACM9 reset" in out
    assert "settings: mode=bridge" in out


def _fake_mpremote(tmp_path, rc=0):
    log = tmp_path / "mpremote.log"
    exe = tmp_path / "mpremote"
    exe.write_text("#!%s\nimport sys\nopen(%r, 'a').write(repr(sys.argv[1:]) + '\\n')\n"
                   "sys.stderr.write('failed to access /dev/x\\n') if %d else None\nsys.exit(%d)\n"
                   % (sys.executable, str(log), rc, rc))
    exe.chmod(0o755)
    return str(exe), log


def test_full_flow_with_fake_mpremote_and_the_simulated_board(tmp_path):
    from uspdm_tools.simproc import SimProcess

    exe, log = _fake_mpremote(tmp_path)
    with SimProcess(flash=str(tmp_path / "flash")) as sim:
        rc, out, err = uspdm("deploy", "--board", "esp32", "--port", sim.port, "--mpremote", exe, "--timeout", "20")
    assert rc == 0, out + err
    assert "board answers Get Endpoint ID" in out and "done: esp32" in out
    calls = [eval(line) for line in log.read_text().splitlines()]
    # the ROMFS probe (no answer from the fake: no partition), then .mpy files to the filesystem
    assert [c[2] for c in calls] == ["exec", "exec", "fs", "fs", "reset"]
    assert "rom_ioctl" in calls[0][3]
    assert "no ROMFS partition" in out
    assert all(c[1] == sim.port for c in calls)


def _fake_mpremote_romfs(tmp_path, parts=1, size=1 << 20):
    log = tmp_path / "mpremote.log"
    exe = tmp_path / "mpremote"
    exe.write_text("#!%s\nimport sys\nopen(%r, 'a').write(repr(sys.argv[1:]) + '\\n')\n"
                   "if sys.argv[3] == 'exec' and 'rom_ioctl' in sys.argv[4]:\n"
                   "    print('USPDM-ROMFS %d %d')\n" % (sys.executable, str(log), parts, size))
    exe.chmod(0o755)
    return str(exe), log


def test_romfs_offered_when_the_board_has_a_partition(tmp_path):
    from uspdm_tools.simproc import SimProcess

    exe, log = _fake_mpremote_romfs(tmp_path)
    with SimProcess(flash=str(tmp_path / "flash")) as sim:
        rc, out, err = uspdm("deploy", "--board", "rp2040", "--port", sim.port, "--mpremote", exe, "--timeout", "20")
    assert rc == 0, out + err
    assert "ROMFS partition (1024 KB)" in out and "done: rp2040" in out
    calls = [eval(line) for line in log.read_text().splitlines()]
    assert [c[2] for c in calls] == ["exec", "exec", "romfs", "fs", "reset"]
    romfs = calls[2]
    assert romfs[3:5] == ["--no-mpy", "deploy"]
    # the code is in the ROMFS tree; only main.py is copied to the filesystem
    assert [os.path.basename(a) for a in calls[3][4:-1]] == ["main.py"]
    # the stale .mpy copies that would shadow /rom are removed first
    assert "'device.mpy'" in calls[1][3] and "'lib/uspdm/responder.mpy'" in calls[1][3]


def test_romfs_probe_parsing_and_plan(tmp_path):
    assert deploy.parse_romfs_probe("USPDM-ROMFS 1 4096\n") == (1, 4096)
    assert deploy.parse_romfs_probe("Traceback...\n") == (-1, 0)
    assert deploy.parse_romfs_probe("USPDM-ROMFS 0 0") == (0, 0)
    st = tmp_path / "fs"
    (st / "lib" / "uspdm").mkdir(parents=True)
    (st / "lib" / "uspdm" / "x.mpy").write_bytes(b"M")
    for r in ("main.py", "device.mpy", "board.mpy"):
        (st / r).write_bytes(b"x")
    roots = ["board.mpy", "device.mpy", "main.py"]
    tree = deploy.romfs_tree(str(st), roots, str(tmp_path / "rom"))
    got = sorted(os.path.relpath(os.path.join(d, f), tree) for d, _, fs in os.walk(tree) for f in fs)
    assert got == ["lib/board.mpy", "lib/device.mpy", "lib/uspdm/x.mpy"]
    cmds = deploy.plan("/dev/x", str(st), roots, {}, tree)
    assert [c[2] for c in cmds] == ["exec", "romfs", "fs", "reset"]


def test_bridge_flow_verifies_through_the_bridge(tmp_path):
    from uspdm_tools.simproc import SimProcess

    exe, log = _fake_mpremote(tmp_path)
    with SimProcess(flash=str(tmp_path / "flash"), extra_args=["--i2c"]) as sim:
        rc, out, err = uspdm("deploy", "--board", "rp2040", "--port", sim.port, "--mpremote", exe,
                             "--mode", "bridge", "--timeout", "20")
    assert rc == 0, out + err
    assert "bridge answers: own I2C 0x10, target 0x1d" in out
    assert "PRoT at 0x1d answers Get Endpoint ID" in out
    calls = [eval(line) for line in log.read_text().splitlines()]
    assert [c[2] for c in calls] == ["exec", "exec", "fs", "fs", "exec", "reset"]   # ROMFS probe first


def test_clear_errors(tmp_path):
    exe, _ = _fake_mpremote(tmp_path, rc=1)
    rc, out, err = uspdm("deploy", "--board", "rp2040", "--port", "/dev/ttyACM9", "--mpremote", exe)
    assert rc == 2 and "no such port /dev/ttyACM9" in err   # checked before anything else
    port = tmp_path / "ttyFAKE"
    port.write_text("")
    rc, out, err = uspdm("deploy", "--board", "rp2040", "--port", port, "--mpremote", exe)
    assert rc == 3 and "mpremote exec failed: failed to access /dev/x" in err and "BOOTSEL" in err
    # a port where nothing answers
    master, slave = os.openpty()
    try:
        exe, _ = _fake_mpremote(tmp_path, rc=0)
        rc, out, err = uspdm("deploy", "--board", "rp2040", "--port", os.ttyname(slave), "--mpremote", exe,
                             "--timeout", "3")
        assert rc == 2 and "did not answer Get Endpoint ID" in err
    finally:
        os.close(master)
        os.close(slave)


def test_verify_recognises_a_board_left_in_bridge_mode(tmp_path):
    from uspdm_tools.link import SerialLink
    from uspdm_tools.simproc import SimProcess

    with SimProcess(flash=str(tmp_path / "flash"), extra_args=["--i2c"]) as sim:
        with SerialLink(sim.port, timeout=5) as link:
            assert link.bridge_command(2, b"\x33")[0] == 0     # nobody at 0x33
        said = []
        assert deploy.verify(sim.port, "responder", timeout=15, say=said.append)
    assert "the board is a bridge" in said[-1] and "target 0x33" in said[-1]


def test_deploy_states_the_repl_escape_loudly(tmp_path):
    rc, out, err = uspdm("deploy", "--board", "rp2040", "--port", "/dev/ttyACM9", "--dry-run",
                         "--stage-dir", tmp_path / "stage", "--set", "repl_escape=1")
    assert rc == 0, err
    assert "WARNING: repl_escape=1" in out and "private key" in out
    rc, out, err = uspdm("deploy", "--board", "esp32", "--port", "/dev/ttyACM9", "--dry-run", "--stage-dir", tmp_path / "stage")
    assert rc == 0, err
    assert "WARNING" not in out and "REPL: only with BOOT held" in out


def test_dry_run_commands_work_after_it_exits(tmp_path):
    import shlex

    rc, out, err = uspdm("deploy", "--board", "esp32", "--port", "/dev/ttyACM9", "--dry-run",
                         "--stage-dir", tmp_path / "stage", "--set", "sessions=0")
    assert rc == 0, err
    block = out[out.index("  mpremote"):out.index("(staged files kept")]
    words = shlex.split(block)          # the whole block is valid shell: quoted scripts included
    cmds = " ".join(words).split("mpremote connect")[1:]
    assert len(cmds) == 5
    assert any("f.write('sessions=0\\n')" in c for c in cmds)   # the settings script in full
    paths = [w for w in words if str(tmp_path / "stage") in w]
    assert paths and all(os.path.exists(p) for p in paths)   # staged files are still there
