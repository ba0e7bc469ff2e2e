"""`uspdm lab` in a real browser: Playwright (playwright-core from npm) drives
Debian's chromium headless through tools/lab/test/drive.mjs, which clicks
through the page like a student and reports what the page showed.

- the page attests the board simulated in it (the real firmware/ and lib/ on
  MicroPython WebAssembly) for SPDM 1.2 and 1.3 with P-384 and P-256, and in
  a secure session, and reaches TRUSTED;
- the three lab exercises give the failing verdicts `uspdm attest` would;
- the chain the page's lab CA made for its board passes the host verifier
  (certs.validate_chain, the `cryptography` package): an independent check;
- through `--port-bridge` to a `uspdm sim`, the page's report equals
  `uspdm attest --json` for the same board state (deterministic fields),
  which also tests the page's serial transport (DSP0253 framing) end to end;
- no console errors; a screenshot of each state in build/lab-test/.

Skipped, with the reason, only when chromium or the npm packages are missing.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from uspdm_tools import certs
from uspdm_tools.paths import REPO_ROOT

pytestmark = pytest.mark.slow

DRIVE = os.path.join(REPO_ROOT, "tools", "lab", "test", "drive.mjs")
SHOTS = os.path.join(REPO_ROOT, "build", "lab-test")


def _chromium():
    for p in (os.environ.get("USPDM_CHROMIUM"), "/usr/lib/chromium/chromium", "/usr/bin/chromium"):
        if p and os.path.exists(p):
            return p
    return None


def _need_browser():
    if not _chromium():
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    if not os.path.isdir(os.path.join(REPO_ROOT, "node_modules", "playwright-core")):
        pytest.skip("npm packages missing: run `make setup`")
    if not shutil.which("node"):
        pytest.skip("node is not installed")


class Lab:
    def __init__(self, tmp, bridge=None):
        self.url_file = os.path.join(tmp, "url")
        cmd = [sys.executable, "-m", "uspdm_tools.cli", "lab", "--no-browser", "--url-file", self.url_file]
        if bridge:
            cmd += ["--port-bridge", bridge]
        self.log = open(os.path.join(tmp, "lab.log"), "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 120   # may bundle the page first
        while not os.path.exists(self.url_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                with open(os.path.join(tmp, "lab.log")) as f:
                    raise RuntimeError("uspdm lab did not start: " + f.read()[-2000:])
            time.sleep(0.05)
        with open(self.url_file) as f:
            self.url = f.read().strip()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def drive(url, plan, tmp, out_name, timeout=240):
    plan_path = os.path.join(tmp, out_name + ".plan.json")
    with open(plan_path, "w") as f:
        json.dump(plan, f)
    out = os.path.join(SHOTS, out_name)
    p = subprocess.run(["node", DRIVE, "--url", url, "--out", out, "--plan", plan_path, "--step-timeout", "90000"],
                       capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    if res.get("skip"):
        pytest.skip(res["skip"])
    assert not res.get("error"), res.get("error")
    assert not res.get("bootError"), res.get("bootError")
    assert res["pageErrors"] == [], res["pageErrors"]
    errors = [c for c in res["console"] if c.startswith("error")]
    assert errors == [], errors
    return {s["name"]: s for s in res["steps"]}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    _need_browser()
    tmp = str(tmp_path_factory.mktemp("lab"))
    lab = Lab(tmp)
    yield lab, tmp
    lab.stop()


def _trusted(step, version=None, alg=None):
    rep = step["report"]
    assert rep["verdict"] == "TRUSTED", step["verdictText"]
    assert rep["exit_code"] == 0
    assert "Verdict: TRUSTED" in step["verdictText"]
    if version:
        assert rep["connection"]["version"] == version
    if alg:
        assert rep["connection"]["base_asym"] == {"p384": "ECDSA P-384", "p256": "ECDSA P-256"}[alg]
    assert rep["challenge"]["signature"] == "valid"
    assert rep["measurements"]["signature"] == "valid"
    assert all(s["ok"] for s in step["signatures"]) and len(step["signatures"]) >= 2
    return rep


def test_in_page_board_versions_curves_session_and_exercises(lab):
    lab, tmp = lab
    steps = [
        {"name": "01-attest-1.3-p384", "board": "in-page", "version": "13", "alg": "p384", "action": "attest",
         "fullPage": True, "keyboardNav": True},
        {"name": "02-attest-1.3-p256", "version": "13", "alg": "p256", "action": "attest"},
        {"name": "03-attest-1.2-p384", "version": "12", "alg": "p384", "action": "attest"},
        {"name": "04-attest-1.2-p256", "version": "12", "alg": "p256", "action": "attest", "keyboard": True},
        {"name": "05-session-1.3", "version": "13", "alg": "any", "action": "session", "fullPage": True},
        {"name": "06-golden-capture", "version": "13", "alg": "p384", "action": "golden"},
        {"name": "07-attest-golden-match", "action": "attest"},
        {"name": "08-ex1-modified-firmware", "action": "modify", "fullPage": True},
        {"name": "09-reset", "action": "reset"},
        {"name": "10-ex2-foreign-root", "action": "root", "fullPage": True},
        {"name": "11-reset", "action": "reset"},
        {"name": "12-ex3-tampered", "action": "tamper"},
        {"name": "13-after-exercises", "action": "attest"},
        {"name": "14-export", "action": "export"},
    ]
    s = drive(lab.url, {"clearStorage": True, "steps": steps}, tmp, "in-page")

    for name, v, a in (("01-attest-1.3-p384", "1.3", "p384"), ("02-attest-1.3-p256", "1.3", "p256"),
                       ("03-attest-1.2-p384", "1.2", "p384"), ("04-attest-1.2-p256", "1.2", "p256")):
        rep = _trusted(s[name], v, a)
        assert rep["golden"] is None and "UNCHECKED" in rep["reason"]
        assert rep["identity"]["device_info"].startswith("uspdm:web:")
        msgs = " ".join(s[name]["messages"])
        for m in ("GET_VERSION", "VERSION", "CAPABILITIES", "ALGORITHMS", "DIGESTS", "CERTIFICATE", "CHALLENGE_AUTH",
                  "MEASUREMENTS"):
            assert m in msgs
        assert s[name]["transcripts"] >= 10       # every message shows what it appended and the hash after it
    # the page shows each message decoded, and arrow keys move the selection
    assert s["01-attest-1.3-p384"]["keyboardSelected"] == 2
    first = s["01-attest-1.3-p384"]
    assert first["report"]["measurements"]["blocks"][0]["label"].startswith("firmware/")
    assert "SPDM leaf profile" in first["chainText"] and "PASS" in first["chainText"]

    # the chain the page's lab CA issued passes the host verifier (cryptography), SPDM 1.3 profile included
    from cryptography.hazmat.primitives import hashes

    root = certs.load_cert(bytes.fromhex(first["rootHex"]))
    info = certs.validate_chain(bytes.fromhex(first["chainHex"]), 48, hashes.SHA384, "p384", 0x13, root)
    assert info["device_info"] == first["report"]["identity"]["device_info"]
    assert [c["fingerprint_sha256"] for c in info["certificates"]] == \
        [c["fingerprint_sha256"] for c in first["report"]["identity"]["chain"]]
    assert info["notes"] == first["report"]["identity"]["profile_notes"]

    sess = _trusted(s["05-session-1.3"], "1.3")
    assert sess["session"]["handshake"] == "encrypted"
    msgs = " ".join(s["05-session-1.3"]["messages"])
    for m in ("KEY_EXCHANGE", "KEY_EXCHANGE_RSP", "FINISH", "FINISH_RSP", "HEARTBEAT", "HEARTBEAT_ACK", "KEY_UPDATE",
              "KEY_UPDATE_ACK", "END_SESSION", "END_SESSION_ACK"):
        assert m in msgs
    assert any(sig["what"].startswith("KEY_EXCHANGE_RSP") and sig["ok"] for sig in s["05-session-1.3"]["signatures"])
    secured = " ".join(s["05-session-1.3"]["securedMessages"])    # shown as sent inside the session
    for m in ("FINISH", "GET_MEASUREMENTS", "MEASUREMENTS", "HEARTBEAT", "KEY_UPDATE_ACK", "END_SESSION_ACK"):
        assert m in secured
    assert "KEY_EXCHANGE" not in secured and "CHALLENGE" not in secured
    assert "END_SESSION (secured)" in [t["message"] for t in sess["timings"]]

    assert s["06-golden-capture"]["report"]["verdict"] == "TRUSTED"
    ok = s["07-attest-golden-match"]["report"]
    assert ok["verdict"] == "TRUSTED" and "match the golden file" in ok["reason"]
    assert all(g["verdict"] == "OK" for g in ok["golden"])

    # exercise 1: a firmware file changed on the board -> its measurement differs, named by file
    m = s["08-ex1-modified-firmware"]
    rep = m["report"]
    assert rep["verdict"] == "MEASUREMENT MISMATCH" and rep["exit_code"] == 5, m["verdictText"]
    bad = [g for g in rep["golden"] if g["verdict"] != "OK"]
    assert len(bad) == 1 and bad[0]["detail"] == "differs from the golden value"
    assert len(bad[0]["expected"]) == 96                # the golden SHA-384 digest, in full
    blk = [b for b in rep["measurements"]["blocks"] if b["index"] == bad[0]["index"]][0]
    assert blk["label"] == "firmware/device.py"
    assert len(m["measRowsBad"]) == 1 and "firmware/device.py" in m["measRowsBad"][0] and "MISMATCH" in m["measRowsBad"][0]

    # exercise 2: a foreign root -> the chain does not lead to it
    f = s["10-ex2-foreign-root"]["report"]
    assert f["verdict"] == "UNTRUSTED" and f["exit_code"] == 4
    assert "chain does not lead to the trusted root" in f["reason"] and "(during chain)" in f["reason"]
    # the same words as uspdm attest: both roots by fingerprint, and why two roots can share a name
    assert "same name, different CA" in f["reason"] and f["reason"].count("SHA-256 ") == 2
    assert "FAIL" in s["10-ex2-foreign-root"]["chainText"]

    # exercise 3: one byte of CHALLENGE_AUTH flipped in flight -> its signature fails, and the page shows where
    t = s["12-ex3-tampered"]
    assert t["report"]["verdict"] == "UNTRUSTED" and t["report"]["exit_code"] == 4
    assert "signature does not verify (responder-challenge_auth signing) (during challenge)" in t["report"]["reason"]
    assert len(t["tampered"]) == 1 and t["selected"] == t["tampered"][0]
    assert "TAMPERED IN FLIGHT" in t["detail"] and "Nonce" in t["detail"]
    assert "does NOT verify" in t["detail"]

    # after undoing the exercises the board is trusted again and matches its golden capture
    after = s["13-after-exercises"]["report"]
    assert after["verdict"] == "TRUSTED" and "match the golden file" in after["reason"]
    # Export JSON downloads the report shown
    assert s["14-export"]["exported"] == s["14-export"]["report"] and s["14-export"]["exported"]["verdict"] == "TRUSTED"
    for name in s:
        if name != "14-export":
            assert os.path.exists(os.path.join(SHOTS, "in-page", name + ".png"))


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


DETERMINISTIC = ("verdict", "exit_code", "reason", "errors", "connection", "slots_provisioned", "identity", "golden")
# not compared: timings (values), and how each reached the board (port, transport, root_file, golden_file)


def test_bridge_json_equals_uspdm_attest(tmp_path):
    """The page's serial transport and verifier against `uspdm sim` through `uspdm lab --port-bridge`:
    the same board state gives the same report as `uspdm attest --json`."""
    _need_browser()
    from uspdm_tools.simproc import SimProcess

    flash, ca = tmp_path / "flash", tmp_path / "ca"
    p = subprocess.run([sys.executable, "-m", "uspdm_tools.cli", "provision", "--flash", str(flash), "--ca-dir", str(ca),
                        "--intermediate"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    root = str(ca / "ca.cert.pem")
    port = _free_port()
    with SimProcess(flash=str(flash), extra_args=["--tcp", "127.0.0.1:%d" % port], verbose=False) as sim:
        host = {}
        for key, v, a, extra in (("1.3", "1.3", "p384", []), ("1.2", "1.2", "p256", []),
                                 ("session", "1.3", "p384", ["--session"])):
            p = subprocess.run([sys.executable, "-m", "uspdm_tools.cli", "attest", "--port", sim.port, "--root", root,
                                "--version", v, "--alg", a, "--json", "--timeout", "20"] + extra,
                               capture_output=True, text=True, timeout=300)
            assert p.returncode == 0, p.stdout + p.stderr
            host[key] = json.loads(p.stdout)
        lab = Lab(str(tmp_path), bridge="tcp:127.0.0.1:%d" % port)
        try:
            s = drive(lab.url, {"clearStorage": True, "fakeSerial": True, "steps": [
                {"name": "b1-bridge-1.3-p384", "board": "bridge", "root": root, "version": "13", "alg": "p384",
                 "action": "attest", "fullPage": True},
                {"name": "b2-bridge-1.2-p256", "version": "12", "alg": "p256", "action": "attest"},
                {"name": "b4-bridge-session-1.3", "version": "13", "alg": "p384", "action": "session"},
                # the page's Web Serial transport, its port standing in for a USB one (see drive.mjs)
                {"name": "b3-webserial-1.3-p384", "board": "serial", "version": "13", "alg": "p384", "action": "attest"},
            ]}, str(tmp_path), "bridge")
        finally:
            lab.stop()
    assert s["b3-webserial-1.3-p384"]["report"]["port"] == "Web Serial"
    for name, v in (("b1-bridge-1.3-p384", "1.3"), ("b2-bridge-1.2-p256", "1.2"), ("b3-webserial-1.3-p384", "1.3")):
        page = s[name]["report"]
        h = host[v]
        assert page["verdict"] == "TRUSTED", s[name]["verdictText"]
        assert len(page["identity"]["chain"]) == 3    # root, intermediate, leaf made by the host's lab CA
        for k in DETERMINISTIC:
            assert page.get(k) == h.get(k), "%s differs:\npage %r\nhost %r" % (k, page.get(k), h.get(k))
        for k in ("signature", "m1_bytes", "summary_type", "cert_chain_hash", "summary_hash"):
            assert page["challenge"].get(k) == h["challenge"].get(k), k
        for k in ("count_reported", "signed", "signature", "l1_bytes", "blocks"):
            assert page["measurements"][k] == h["measurements"][k], k
        # same report schema (the timings' values differ run to run, their keys do not)
        assert set(page) >= set(h) - {"port", "root_file", "golden_file"}
        assert page["transport"].startswith("Web" if name.startswith("b3") else "WebSocket bridge")
        assert set(page["timings"][0]) == set(h["timings"][0])
        assert [t["message"] for t in page["timings"]] == [t["message"] for t in h["timings"]]
    # in a secure session (KEY_EXCHANGE, FINISH, measurements inside it): the same identity and measurements
    page, h = s["b4-bridge-session-1.3"]["report"], host["session"]
    assert page["verdict"] == h["verdict"] == "TRUSTED", s["b4-bridge-session-1.3"]["verdictText"]
    for k in ("verdict", "exit_code", "reason", "slots_provisioned", "identity", "golden"):
        assert page.get(k) == h.get(k), k
    assert page["session"]["handshake"] == h["session"]["handshake"] == "encrypted"
    for k in ("count_reported", "signed", "signature", "l1_bytes", "blocks"):
        assert page["measurements"][k] == h["measurements"][k], k
    host_msgs = [t["message"] for t in h["timings"]]
    page_msgs = [t["message"] for t in page["timings"]]
    assert page_msgs[:len(host_msgs) - 1] == host_msgs[:-1]     # the page adds HEARTBEAT and KEY_UPDATE before END_SESSION
    assert page_msgs[-1] == host_msgs[-1] == "END_SESSION (secured)"
