"""End to end over serial: `uspdm provision --flash` then `uspdm attest` / `uspdm golden`
against the simulated board (MicroPython under Node behind a pty), every SPDM version.
With --port, the real board on that port is attested instead (it must be provisioned
with the lab CA given by USPDM_TEST_ROOT, default ~/.config/uspdm/ca/ca.cert.pem)."""
import json
import os
import subprocess
import sys

import pytest

from uspdm_tools import certs

pytestmark = pytest.mark.slow


def uspdm(*args, timeout=300):
    p = subprocess.run([sys.executable, "-m", "uspdm_tools.cli"] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def board(request, tmp_path_factory):
    real = request.config.getoption("--port")
    if real:
        root = os.environ.get("USPDM_TEST_ROOT") or os.path.join(certs.default_ca_dir(), "ca.cert.pem")
        yield {"port": real, "root": root, "ca": os.path.dirname(root), "flash": None, "sim": None}
        return
    from uspdm_tools.simproc import SimProcess

    d = tmp_path_factory.mktemp("e2e")
    flash, ca = d / "flash", d / "ca"
    rc, out, err = uspdm("provision", "--flash", flash, "--ca-dir", ca, "--intermediate")
    assert rc == 0, err
    with SimProcess(flash=str(flash)) as sim:
        yield {"port": sim.port, "root": str(ca / "ca.cert.pem"), "ca": str(ca), "flash": str(flash), "sim": sim}


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2", "1.3"])
def test_attest_every_version(board, version):
    rc, out, err = uspdm("attest", "--port", board["port"], "--root", board["root"], "--version", version,
                         "--json", "--timeout", "20")
    assert rc == 0, out + err
    rep = json.loads(out)
    assert rep["verdict"] == "TRUSTED"
    assert rep["connection"]["version"] == version
    assert rep["challenge"]["signature"] == "valid"
    assert rep["measurements"]["signature"] == "valid"
    assert len(rep["measurements"]["blocks"]) >= 1
    names = [t["message"] for t in rep["timings"]]
    for m in ("GET_VERSION", "GET_CAPABILITIES", "NEGOTIATE_ALGORITHMS", "GET_DIGESTS", "GET_CERTIFICATE",
              "CHALLENGE", "GET_MEASUREMENTS"):
        assert m in names


@pytest.mark.parametrize("alg", ["p384", "p256"])
def test_attest_both_algorithms_text_report(board, alg):
    rc, out, err = uspdm("attest", "--port", board["port"], "--root", board["root"], "--alg", alg,
                         "--timeout", "20")
    assert rc == 0, out + err
    assert ("ECDSA P-384" if alg == "p384" else "ECDSA P-256") in out
    assert "Verdict: TRUSTED" in out


def test_golden_then_attest_and_mismatch(board, tmp_path):
    g = tmp_path / "golden.json"
    rc, out, err = uspdm("golden", "--port", board["port"], "--root", board["root"], "--timeout", "20")
    assert rc == 0, err
    g.write_text(out)
    doc = json.loads(out)
    assert doc["measurements"]
    rc, out, err = uspdm("attest", "--port", board["port"], "--root", board["root"], "--golden", g,
                         "--timeout", "20")
    assert rc == 0, out + err
    assert "MISMATCH" not in out
    # a changed reference value -> measurement mismatch (exit 5)
    v = doc["measurements"][0]["value"]
    doc["measurements"][0]["value"] = ("0" if v[0] != "0" else "1") + v[1:]
    g.write_text(json.dumps(doc))
    rc, out, err = uspdm("attest", "--port", board["port"], "--root", board["root"], "--golden", g,
                         "--timeout", "20")
    assert rc == 5, out + err
    assert "MISMATCH" in out


def test_foreign_root_is_untrusted(board, tmp_path):
    other = certs.LabCA(str(tmp_path / "other"))
    other.load_or_create()
    rc, out, err = uspdm("attest", "--port", board["port"], "--root", other.root_der_path, "--timeout", "20")
    assert rc == 4, out + err
    assert "UNTRUSTED" in out


def test_unreachable_exit_code(tmp_path):
    rc, out, err = uspdm("attest", "--port", str(tmp_path / "no-such-port"), "--root",
                         os.devnull, "--timeout", "1")
    # the root is unreadable as a certificate: usage error first
    assert rc == 1
    ca = certs.LabCA(str(tmp_path / "ca"))
    ca.load_or_create()
    rc, out, err = uspdm("attest", "--port", str(tmp_path / "no-such-port"), "--root", ca.root_pem_path,
                         "--timeout", "1")
    assert rc == 2, out + err
    assert "UNREACHABLE" in out


def test_modified_firmware_file_fails_golden_over_serial(request, tmp_path, monkeypatch):
    """A copy of the firmware tree runs on the simulated board; after a firmware file
    changes, the board's signed measurements no longer match the golden file (exit 5)."""
    if request.config.getoption("--port"):
        pytest.skip("needs the simulated board")
    import shutil

    from uspdm_tools.paths import REPO_ROOT
    from uspdm_tools.simproc import SimProcess

    tree = tmp_path / "tree"
    for d in ("lib", "firmware", "boards", "tools"):
        shutil.copytree(os.path.join(REPO_ROOT, d), tree / d,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    os.symlink(os.path.join(REPO_ROOT, "node_modules"), tree / "node_modules")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tree / "tools"), str(tree / "lib")]))
    flash, ca = tmp_path / "flash", tmp_path / "ca"
    rc, out, err = uspdm("provision", "--flash", flash, "--ca-dir", ca, "--alg", "p384")
    assert rc == 0, err
    root = str(ca / "ca.cert.pem")
    g = tmp_path / "golden.json"
    with SimProcess(flash=str(flash)) as sim:
        rc, out, err = uspdm("golden", "--port", sim.port, "--root", root, "--timeout", "20", "-o", g)
        assert rc == 0, err
        rc, out, err = uspdm("attest", "--port", sim.port, "--root", root, "--golden", g, "--timeout", "20")
        assert rc == 0, out + err
    main_py = tree / "firmware" / "main.py"
    main_py.write_text(main_py.read_text() + "\n# locally modified\n")
    with SimProcess(flash=str(flash)) as sim:
        rc, out, err = uspdm("attest", "--port", sim.port, "--root", root, "--golden", g, "--timeout", "20",
                             "--json")
    assert rc == 5, out + err
    rep = json.loads(out)
    bad = [r for r in rep["golden"] if r["verdict"] != "OK"]
    assert len(bad) == 1 and bad[0]["verdict"] == "MISMATCH"
    blk = [b for b in rep["measurements"]["blocks"] if b["index"] == bad[0]["index"]][0]
    assert blk["type"] == 1  # a firmware file digest
