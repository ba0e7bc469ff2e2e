"""What a careless user sees: one line and the documented exit status, never a
traceback.  Every case runs the real `uspdm` command in a subprocess."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

COMMANDS = ["sim", "mctp", "provision", "attest", "golden", "session", "deploy", "mpy"]


def uspdm(*args, timeout=120, env=None, **kw):
    p = subprocess.run([sys.executable, "-m", "uspdm_tools.cli"] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout, env=env, **kw)
    return p.returncode, p.stdout, p.stderr


def one_line(err):
    assert "Traceback" not in err, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_no_command_is_a_usage_error():
    rc, out, err = uspdm()
    assert rc == 1 and "a command is needed" in err


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_help_lists_its_exit_codes(cmd):
    rc, out, err = uspdm(cmd, "--help")
    assert rc == 0
    block = out[out.index("exit status:"):]
    assert "\n  130 " in block and "\n  1 " in block
    if cmd != "mpy":
        assert "\n  0 " in block   # mpy: the code's own status


def test_mpy_missing_file_and_exit_codes(tmp_path):
    rc, out, err = uspdm("mpy", tmp_path / "nope.py")
    assert rc == 1 and "cannot read" in one_line(err)
    rc, out, err = uspdm("mpy", "-c", "import sys\nprint('before')\nsys.exit(3)")
    assert rc == 3 and out.strip() == "before" and "Traceback" not in err
    f = tmp_path / "ok.py"
    f.write_text("import sys\nsys.exit(0)\n")
    assert uspdm("mpy", f)[0] == 0
    rc, out, err = uspdm("mpy", "-c", "raise ValueError('x')")
    assert rc == 1 and "ValueError" in err


def test_broken_pipe_keeps_the_exit_status():
    """`uspdm ... | head -1`: the reader goes away; no BrokenPipeError, the command's own status."""
    p = subprocess.Popen([sys.executable, "-m", "uspdm_tools.cli", "mpy", "-c",
                          "import sys\nfor i in range(30000): print(i)\nsys.exit(4)"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = p.stdout.readline()
        p.stdout.close()
        err = p.stderr.read().decode()
        rc = p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert first.strip() == b"0"
    assert rc == 4 and "Traceback" not in err and "BrokenPipe" not in err


def test_ctrl_c_is_one_line():
    p = subprocess.Popen([sys.executable, "-m", "uspdm_tools.cli", "mpy", "-c", "while True:\n    pass\n"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(3)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130
    assert one_line(err.decode()) == "uspdm: interrupted"


def test_sim_tcp_port_in_use(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        rc, out, err = uspdm("sim", "--flash", tmp_path / "flash", "--tcp", "127.0.0.1:%d" % port, timeout=60)
    assert rc == 1
    assert "cannot serve TCP on 127.0.0.1:%d" % port in one_line(err)
    rc, out, err = uspdm("sim", "--flash", tmp_path / "flash", "--tcp", "5555", timeout=60)
    assert rc == 1 and "HOST:PORT" in one_line(err)


def test_deploy_missing_port_is_unreachable():
    rc, out, err = uspdm("deploy", "--board", "rp2040", "--port", "/dev/no-such-uspdm-port")
    assert rc == 2 and "no such port" in one_line(err)


def test_missing_micropython_install_is_one_line_and_creates_nothing(tmp_path):
    """No node_modules (`make setup` not run): provision and sim say so, and no lab CA is created first."""
    env = dict(os.environ, PATH=str(tmp_path / "empty-bin"))   # no `node` on the PATH
    os.makedirs(env["PATH"])
    rc, out, err = uspdm("provision", "--flash", tmp_path / "flash", "--ca-dir", tmp_path / "ca", env=env)
    assert rc == 1 and "node" in one_line(err) and not (tmp_path / "ca").exists()
    rc, out, err = uspdm("sim", "--flash", tmp_path / "flash2", env=env, timeout=60)
    assert rc == 1 and "node" in one_line(err)


@pytest.mark.parametrize("args", [
    ["mctp", "--port", "/dev/x", "--eid", "300"],
    ["mctp", "--port", "/dev/x", "--set-eid", "0"],
    ["mctp", "--port", "/dev/x", "--timeout", "0"],
    ["attest", "--port", "/dev/x", "--timeout", "-1"],
    ["attest", "--port", "/dev/x", "--eid", "300"],
    ["attest", "--port", "/dev/x", "--via-i2c", "0x80"],
    ["golden", "--port", "/dev/x", "--deadline", "nan"],
    ["session", "--port", "/dev/x", "--eid", "-1"],
    ["session", "--port", "/dev/x", "--timeout", "0"],
    ["provision", "--port", "/dev/x", "--timeout", "0"],
])
def test_bad_arguments_are_usage_errors(args):
    rc, out, err = uspdm(*args)
    assert rc == 1 and "Traceback" not in err
    assert "error: argument" in err


@pytest.mark.parametrize("doc,words", [
    ('{"format": "something-else/2", "measurements": [{"index": 1, "value": "00"}]}', "not a uspdm golden file"),
    ('{"format": "uspdm-golden/1", "measurements": []}', "holds no measurements"),
    ('{"format": "uspdm-golden/1"}', "no 'measurements' list"),
    ('not json', "cannot read golden file"),
])
def test_bad_golden_file_text_and_json(tmp_path, doc, words):
    import json

    g = tmp_path / "golden.json"
    g.write_text(doc)
    root = tmp_path / "root.pem"
    from uspdm_tools import certs

    ca = certs.LabCA(str(tmp_path / "ca"))
    ca.load_or_create()
    rc, out, err = uspdm("attest", "--port", "/dev/x", "--root", ca.root_pem_path, "--golden", g)
    assert rc == 1 and words in one_line(err) and out == ""
    rc, out, err = uspdm("attest", "--port", "/dev/x", "--root", ca.root_pem_path, "--golden", g, "--json")
    rep = json.loads(out)
    assert rc == 1 and rep["exit_code"] == 1 and words in rep["reason"]


def test_mctp_json_errors_are_json():
    import json

    rc, out, err = uspdm("mctp", "--port", "/dev/no-such-uspdm-port", "--json")
    assert rc == 2
    rep = json.loads(out)
    assert rep["verdict"] == "UNREACHABLE" and rep["exit_code"] == 2


def test_silent_port_says_what_it_waited_for(tmp_path):
    """A pty nobody serves (the simulator was stopped): one reachability check, then the likely fix."""
    from uspdm_tools import certs

    ca = certs.LabCA(str(tmp_path / "ca"))
    ca.load_or_create()
    master, slave = os.openpty()
    try:
        port = os.ttyname(slave)
        for cmd in ("attest", "golden", "session"):
            t0 = time.monotonic()
            rc, out, err = uspdm(cmd, "--port", port, "--root", ca.root_pem_path, "--timeout", "2")
            assert rc == 2, (cmd, out, err)
            text = out + err
            assert "nothing answers MCTP on %s (no reply to Get Endpoint ID within 2 s)" % port in text
            assert "is `uspdm sim` still running" in text
            assert time.monotonic() - t0 < 30
        rc, out, err = uspdm("attest", "--port", "/dev/no-such-uspdm-port", "--root", ca.root_pem_path)
        assert rc == 2 and "is the board plugged in" in out
    finally:
        os.close(master)
        os.close(slave)


def test_make_test_with_a_missing_port_stops_at_once():
    here = os.path.dirname(os.path.abspath(__file__))
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                        os.path.join(here, "test_settings.py"), "--port", "/dev/no-such-uspdm-port"],
                       capture_output=True, text=True, timeout=120, cwd=os.path.dirname(here))
    assert p.returncode == 2, p.stdout[-2000:]
    assert "no board to test on --port /dev/no-such-uspdm-port" in p.stdout + p.stderr
    assert "is the board plugged in" in p.stdout + p.stderr
    assert " passed" not in p.stdout and " failed" not in p.stdout
    assert time.monotonic() - t0 < 60


def test_ctrl_c_during_make_demo(tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while `make demo` runs:
    one line, exit 130, the simulated board stopped (its flash lock released)."""
    p = subprocess.Popen([sys.executable, "-m", "uspdm_tools.demo", "--dir", str(tmp_path / "demo")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "demo" / "flash" / ".uspdm-flash.lock").exists() or \
                "uspdm sim" not in (tmp_path / "demo" / "flash" / ".uspdm-flash.lock").read_text(errors="replace"):
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.1)
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    err = err.decode()
    assert p.returncode == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "demo: interrupted (the simulated board was stopped)"
    from uspdm_tools.flashdir import FlashLock

    FlashLock(str(tmp_path / "demo" / "flash"), "test").close()   # released: the board is not running any more
