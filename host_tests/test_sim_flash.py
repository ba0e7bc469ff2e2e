"""The simulated board's flash folder (`--flash DIR`) and the simulator's
plumbing, through the real `uspdm` command: the mirror never loses a user's
files, one user at a time (a lock naming the holder's PID), keys are 0600 on
the host, the pty never blocks the board, no temporary folders are left."""
import os
import socket
import stat
import subprocess
import sys
import time

import pytest

from uspdm_tools.simproc import SimProcess

pytestmark = pytest.mark.usefixtures("sim_only")


@pytest.fixture
def sim_only(request):
    if request.config.getoption("--port"):
        pytest.skip("simulator only")


def uspdm(*args, timeout=120, env=None):
    p = subprocess.run([sys.executable, "-m", "uspdm_tools.cli"] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout, env=env)
    return p.returncode, p.stdout, p.stderr


def one_line_error(err):
    assert "Traceback" not in err, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    return lines[0]


def user_files(d):
    """A folder that is not a board's: a git checkout, dot-files, a symlink, notes."""
    (d / ".git").mkdir(parents=True)
    (d / ".git" / "config").write_text("[core]\n")
    (d / ".env").write_text("SECRET=1\n")
    (d / "__pycache__").mkdir()
    (d / "__pycache__" / "x.pyc").write_bytes(b"\x00")
    (d / "notes.txt").write_text("mine\n")
    os.symlink("/etc/hostname", d / "link")
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


@pytest.mark.parametrize("cmd", ["provision", "sim"])
def test_flash_dir_with_user_files_is_refused_and_untouched(tmp_path, cmd):
    d = tmp_path / "home"
    before = user_files(d)
    args = ["provision", "--flash", d, "--ca-dir", tmp_path / "ca"] if cmd == "provision" else ["sim", "--flash", d]
    rc, out, err = uspdm(*args, timeout=60)
    assert rc == 1
    line = one_line_error(err)
    assert "not the simulated board's" in line and ".env" in line
    assert sorted(str(p.relative_to(d)) for p in d.rglob("*")) == before
    assert not (tmp_path / "ca").exists()   # nothing created before the refusal


@pytest.mark.parametrize("what", ["file", "proc"])
def test_flash_on_a_file_or_proc_is_one_line(tmp_path, what):
    target = tmp_path / "f.txt" if what == "file" else "/proc"
    if what == "file":
        target.write_text("x")
    for args in (["sim", "--flash", target], ["provision", "--flash", target, "--ca-dir", tmp_path / "ca"]):
        rc, out, err = uspdm(*args, timeout=60)
        assert rc == 1
        one_line_error(err)


def test_mirror_keeps_host_files_and_locks_the_folder(tmp_path):
    flash = tmp_path / "flash"
    rc, out, err = uspdm("provision", "--flash", flash, "--ca-dir", tmp_path / "ca", "--alg", "p256")
    assert rc == 0, err
    # keys (and every board file) are private to the user on the host
    for f in (flash / "uspdm").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    from uspdm_tools.link import SerialLink

    with SimProcess(flash=str(flash), wait_measurements=False, extra_args=["--set", "persist_eid=1"]) as sim:
        # a second user of the same folder is refused, naming the holder's PID
        rc, out, err = uspdm("provision", "--flash", flash, "--ca-dir", tmp_path / "ca", timeout=60)
        assert rc == 1
        line = one_line_error(err)
        assert "in use by uspdm sim (PID %d)" % sim.proc.pid in line
        rc, out, err = uspdm("sim", "--flash", flash, timeout=60)
        assert rc == 1 and "PID %d" % sim.proc.pid in one_line_error(err)
        # a file the user puts beside the board's while it runs survives the board's next write
        (flash / "uspdm" / "mine.txt").write_text("keep me")
        with SerialLink(sim.port, timeout=10) as l:
            cc, data = l.control(0x01, bytes((0x00, 0x33)))   # Set EID: the board writes uspdm/eid.bin
            assert cc == 0
        deadline = time.monotonic() + 10
        while not (flash / "uspdm" / "eid.bin").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (flash / "uspdm" / "eid.bin").read_bytes() == b"\x33"
        assert (flash / "uspdm" / "mine.txt").read_text() == "keep me"
    # the lock is released with the simulator
    assert not (flash / ".uspdm-flash.lock").exists()


def test_mirror_deletes_only_what_the_board_deleted(tmp_path):
    from uspdm_tools.mpy import MicroPython

    flash = tmp_path / "flash"
    (flash / "uspdm").mkdir(parents=True)
    (flash / "uspdm" / "old.bin").write_bytes(b"1")
    with MicroPython(flash=str(flash), board="sim") as mp:
        (flash / "uspdm" / "host.bin").write_bytes(b"h")     # appears while the board runs
        (flash / ".hidden").write_text("h")
        mp.run("import board\nst = board.storage()\nst.write('uspdm/new.bin', b'n')\nst.delete('uspdm/old.bin')\n"
               "st.write('uspdm/x.bin', b'x')\n")
        mp.run("import os\nos.remove('/flash/uspdm/x.bin')\n")
    assert (flash / "uspdm" / "new.bin").read_bytes() == b"n"
    assert not (flash / "uspdm" / "old.bin").exists()
    assert not (flash / "uspdm" / "x.bin").exists()
    assert (flash / "uspdm" / "host.bin").read_bytes() == b"h"
    assert (flash / ".hidden").read_text() == "h"


def test_pty_nobody_reads_does_not_stall_the_board(tmp_path):
    """A TCP-only client: the pty fills up (nobody reads it) and the board keeps answering on TCP."""
    from uspdm_tools.link import SerialLink

    with socket.socket() as s:  # a free loopback port for --tcp
        s.bind(("127.0.0.1", 0))
        addr = "127.0.0.1:%d" % s.getsockname()[1]
    with SimProcess(flash=str(tmp_path / "flash"), wait_measurements=False, extra_args=["--tcp", addr],
                    verbose=False) as sim:
        with SerialLink("socket://" + addr, timeout=10) as l:
            got = 0
            t0 = time.monotonic()
            # each SPDM VERSION answer is ~20 bytes framed; 64 KB of output is 4x a pty's buffer
            n = 0
            while got < 64 * 1024:
                rsp = l.spdm(b"\x10\x84\x00\x00", timeout=10)
                assert rsp[1] == 0x04
                got = l.stats["rx_bytes"]
                n += 1
                assert time.monotonic() - t0 < 240, "too slow: %d bytes in %d answers" % (got, n)
        assert sim.proc.poll() is None
    assert "nobody reads the serial port" in sim.log_text()


def test_no_temporary_folders_left(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path / "t"))
    os.makedirs(env["TMPDIR"])
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from uspdm_tools.simproc import SimProcess\n"
            "with SimProcess(wait_measurements=False) as s: pass\n" % os.path.join(
                os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert os.listdir(env["TMPDIR"]) == []


def test_verbose_heap_figure_does_not_drift(tmp_path):
    """`uspdm sim -v` reports the firmware's heap: 400 identical requests leave it flat
    (host-side proxy objects used to add ~32 bytes a message)."""
    import re

    from uspdm_tools.link import SerialLink

    with SimProcess(flash=str(tmp_path / "flash")) as sim:
        with SerialLink(sim.port, timeout=10) as l:
            for _ in range(400):
                assert l.control(0x02)[0] == 0   # Get Endpoint ID
        deadline = time.monotonic() + 10
        while len(re.findall(r"heap: live (\d+)", sim.log_text())) < 400 and time.monotonic() < deadline:
            time.sleep(0.05)
        lives = [int(x) for x in re.findall(r"heap: live (\d+)", sim.log_text())]
    assert len(lives) >= 400
    tail = lives[100:]
    assert max(tail) - min(tail) < 1024, (tail[0], tail[-1])
