"""`uspdm attest` / `uspdm golden` (CPython): verdicts and exit codes, text and JSON reports,
golden capture and comparison, against our responder in process (the serial
path is covered by test_verifier_sim.py)."""
import argparse
import io
import json
import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization

from uspdm_tools import certs, verifier
from uspdm_tools.loopback import LoopbackTransport
from uspdm_tools.cli import build_parser

from test_requester import Board


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    c = certs.LabCA(str(tmp_path_factory.mktemp("ca")))
    c.load_or_create()
    return c


@pytest.fixture
def board(tmp_path, ca):
    return Board(tmp_path, ca)


def args(ca, **kw):
    a = build_parser().parse_args(["attest", "--port", "loopback", "--root", ca.root_pem_path])
    for k, v in kw.items():
        setattr(a, k, v)
    return a


def run(cmd, a, transport, capsys):
    rc = cmd(a, transport=transport)
    out = capsys.readouterr()
    return rc, out.out, out.err


def golden_file(board, ca, tmp_path, capsys, **cfg):
    a = build_parser().parse_args(["golden", "--port", "loopback", "--root", ca.root_pem_path])
    rc, out, err = run(verifier.cmd_golden, a, LoopbackTransport(board.responder(**cfg)), capsys)
    assert rc == 0, err
    p = tmp_path / "golden.json"
    p.write_text(out)
    return p, json.loads(out)


def test_trusted_text_report(board, ca, capsys):
    rc, out, err = run(verifier.cmd_attest, args(ca), LoopbackTransport(board.responder()), capsys)
    assert rc == 0, out
    for s in ("SPDM 1.3", "ECDSA P-384", "CN=uspdm device", "device-info acme:widget:p384",
              "3 certificates", "CHALLENGE_AUTH signature valid", "signature valid over L1",
              "MicroPython version", "unchecked", "GET_CERTIFICATE", "Verdict: TRUSTED"):
        assert s in out, s


def test_trusted_json(board, ca, capsys):
    rc, out, _ = run(verifier.cmd_attest, args(ca, json=True, spdm_version="1.1", alg="p256"),
                     LoopbackTransport(board.responder()), capsys)
    assert rc == 0
    rep = json.loads(out)
    assert rep["verdict"] == "TRUSTED" and rep["exit_code"] == 0
    assert rep["connection"]["version"] == "1.1"
    assert rep["connection"]["base_asym"] == "ECDSA P-256"
    assert rep["identity"]["device_info"] == "acme:widget:p256"
    assert len(rep["measurements"]["blocks"]) == 4
    assert {t["message"] for t in rep["timings"]} >= {"GET_VERSION", "CHALLENGE", "GET_MEASUREMENTS"}


def test_golden_roundtrip_and_modified_firmware(board, ca, tmp_path, capsys):
    g, doc = golden_file(board, ca, tmp_path, capsys)
    assert doc["format"] == verifier.GOLDEN_FORMAT
    by = {m["index"]: m for m in doc["measurements"]}
    assert by[0x41]["label"] == "MicroPython version: MicroPython 1.26.0"
    assert by[0x43]["label"].endswith(": 3")
    rc, out, _ = run(verifier.cmd_attest, args(ca, golden=str(g)), LoopbackTransport(board.responder()), capsys)
    assert rc == 0, out
    assert "all 4 measurements match" in out
    # the firmware file changes (and the board reboots: measurements taken again)
    with open(board.fw, "ab") as f:
        f.write(b"# patched\n")
    board.measure()
    rc, out, _ = run(verifier.cmd_attest, args(ca, golden=str(g), json=True),
                     LoopbackTransport(board.responder()), capsys)
    assert rc == verifier.EXIT_MISMATCH == 5
    rep = json.loads(out)
    bad = [r for r in rep["golden"] if r["verdict"] != "OK"]
    assert [r["index"] for r in bad] == [1] and bad[0]["verdict"] == "MISMATCH"
    assert rep["verdict"] == "MEASUREMENT MISMATCH"


def test_golden_missing_and_unexpected(board, ca, tmp_path, capsys):
    g, doc = golden_file(board, ca, tmp_path, capsys)
    doc["measurements"] = [m for m in doc["measurements"] if m["index"] != 0x43]
    doc["measurements"].append({"index": 0x30, "type": 1, "value": "00" * 48})
    g.write_text(json.dumps(doc))
    rc, out, _ = run(verifier.cmd_attest, args(ca, golden=str(g)), LoopbackTransport(board.responder()), capsys)
    assert rc == 5
    assert "UNEXPECTED" in out and "MISSING" in out


def test_foreign_root_exit_4(board, tmp_path, capsys):
    other = certs.LabCA(str(tmp_path / "other"))
    other.load_or_create()
    a = args(other)
    a.root = other.root_der_path  # DER accepted too
    rc, out, _ = run(verifier.cmd_attest, a, LoopbackTransport(board.responder()), capsys)
    assert rc == verifier.EXIT_UNTRUSTED == 4
    assert "Verdict: UNTRUSTED" in out and "trusted root" in out


def test_missing_basic_constraints_exit_4_only_for_1_3(tmp_path, ca, capsys):
    def issue(pub, info, use_intermediate=False):
        leaf = certs.issue_leaf(ca.root_cert, ca.root_key, pub, info, basic_constraints=False)
        return [ca.root_cert.public_bytes(serialization.Encoding.DER),
                leaf.public_bytes(serialization.Encoding.DER)]
    b = Board(tmp_path, ca, issue=issue)
    rc, out, _ = run(verifier.cmd_attest, args(ca, spdm_version="1.3"), LoopbackTransport(b.responder()), capsys)
    assert rc == 4 and "basicConstraints" in out
    rc, out, _ = run(verifier.cmd_attest, args(ca, spdm_version="1.2"), LoopbackTransport(b.responder()), capsys)
    assert rc == 0, out


def test_tampered_signature_exit_4(board, ca, capsys):
    class Mitm(LoopbackTransport):
        def spdm(self, req, timeout=None):
            rsp = LoopbackTransport.spdm(self, req, timeout)
            if rsp[1] == 0x60 and req[2] & 1:
                rsp = rsp[:-1] + bytes((rsp[-1] ^ 0x80,))
            return rsp
    rc, out, _ = run(verifier.cmd_attest, args(ca), Mitm(board.responder()), capsys)
    assert rc == 4 and "measurements signing" in out


def test_unreachable_exit_2(ca, capsys):
    class Dead:
        def spdm(self, req, timeout):
            raise TimeoutError("no answer")
    rc, out, _ = run(verifier.cmd_attest, args(ca), Dead(), capsys)
    assert rc == verifier.EXIT_UNREACHABLE == 2
    assert "UNREACHABLE" in out


def test_protocol_error_exit_3(board, ca, capsys):
    # the board does not speak the version we insist on
    rc, out, _ = run(verifier.cmd_attest, args(ca, spdm_version="1.3"),
                     LoopbackTransport(board.responder(versions=[0x10, 0x11])), capsys)
    assert rc == verifier.EXIT_PROTOCOL == 3
    assert "PROTOCOL ERROR" in out

    class Garbage:
        def spdm(self, req, timeout):
            return b"\x10\x04"
    rc, out, _ = run(verifier.cmd_attest, args(ca, json=True), Garbage(), capsys)
    assert rc == 3 and json.loads(out)["verdict"] == "PROTOCOL ERROR"

    class Err:  # ERROR UnexpectedRequest to GET_CAPABILITIES
        def __init__(self, r):
            self.t = LoopbackTransport(r)

        def spdm(self, req, timeout):
            if req[1] == 0xE1:
                return bytes((req[0], 0x7F, 0x04, 0x00))
            return self.t.spdm(req, timeout)
    rc, out, _ = run(verifier.cmd_attest, args(ca, json=True), Err(board.responder()), capsys)
    rep = json.loads(out)
    assert rc == 3 and rep["spdm_error"]["name"] == "UnexpectedRequest"


def test_usage_errors_exit_1(board, ca, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    rc, _, err = run(verifier.cmd_attest, args(ca, golden=str(bad)), LoopbackTransport(board.responder()), capsys)
    assert rc == 1 and "golden" in err
    rc, _, err = run(verifier.cmd_attest, args(ca, root=str(tmp_path / "none.pem")),
                     LoopbackTransport(board.responder()), capsys)
    assert rc == 1


def test_slot_not_provisioned_exit_3(board, ca, capsys):
    rc, out, _ = run(verifier.cmd_attest, args(ca, slot=3), LoopbackTransport(board.responder()), capsys)
    assert rc == 3 and "slot 3 is not provisioned" in out


def test_help_documents_exit_codes():
    p = subprocess.run([sys.executable, "-m", "uspdm_tools.cli", "attest", "--help"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0
    for s in ("0  trusted", "2  unreachable", "3  protocol error", "4  untrusted identity",
              "5  measurement mismatch"):
        assert s in p.stdout
    p = subprocess.run([sys.executable, "-m", "uspdm_tools.cli", "attest"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 1 and "--port" in p.stderr


def test_progress_bar(board, ca, capsys):
    a = args(ca, progress=True)
    rc, out, err = run(verifier.cmd_attest, a, LoopbackTransport(board.responder()), capsys)
    assert rc == 0
    assert "certificate [" in err and "#" * 30 in err


def test_golden_of_other_hash_explained(board, ca, tmp_path, capsys):
    g, doc = golden_file(board, ca, tmp_path, capsys)  # P-384 board default: SHA-384 digests
    rc, out, _ = run(verifier.cmd_attest, args(ca, golden=str(g), alg="p256"),
                     LoopbackTransport(board.responder()), capsys)
    assert rc == 5
    assert "golden file holds SHA-384 digests" in out


def test_responder_without_measurements(board, ca, tmp_path, capsys):
    rc, out, _ = run(verifier.cmd_attest, args(ca), LoopbackTransport(board.responder(meas_cap=None)), capsys)
    assert rc == 0 and "does not advertise MEAS_CAP" in out
    g, _ = golden_file(board, ca, tmp_path, capsys)
    rc, out, _ = run(verifier.cmd_attest, args(ca, golden=str(g)),
                     LoopbackTransport(board.responder(meas_cap=None)), capsys)
    assert rc == 5 and "MISSING" in out
    # measurements that cannot be signed do not make a trusted device
    rc, out, _ = run(verifier.cmd_attest, args(ca), LoopbackTransport(board.responder(meas_cap="unsigned")), capsys)
    assert rc == 4 and "not signed" in out


def test_file_manifest_names_digests():
    from uspdm_tools import verifier as v

    blocks = [
        {"index": 1, "type": 1, "raw_bitstream": False, "value": bytes(48)},
        {"index": 2, "type": 1, "raw_bitstream": False, "value": bytes(48)},
        {"index": 0x44, "type": 4, "raw_bitstream": True, "value": b"01 firmware/main.py\n02 lib/uspdm/responder.py"},
    ]
    names = v.file_names(blocks)
    assert names == {1: "firmware/main.py", 2: "lib/uspdm/responder.py"}
    blocks[1]["file"] = names[2]
    assert v._label(blocks[1]) == "lib/uspdm/responder.py"
    assert v._label(blocks[0]).startswith("firmware file #1")
    assert v._label(blocks[2]) == "file manifest: 2 files named"
    # a manifest of the wrong form names nothing
    assert v.file_names([dict(blocks[2], type=9)]) == {}


def test_mismatch_never_looks_equal_on_screen(board, ca, tmp_path, capsys):
    """A golden value that differs from the measured one only after the first 40 hex digits:
    the text report prints both in full, so they cannot look equal; transport and CT are explained."""
    g, doc = golden_file(board, ca, tmp_path, capsys)
    by = {m["index"]: m for m in doc["measurements"]}
    v = by[1]["value"]
    by[1]["value"] = v[:40] + ("0" if v[40] != "0" else "1") + v[41:]
    g.write_text(json.dumps(doc))
    a = args(ca, golden=str(g))
    a.port = "/dev/ttyACM0"
    a.via_i2c = 0x1D
    rc, out, _ = run(verifier.cmd_attest, a, LoopbackTransport(board.responder()), capsys)
    assert rc == verifier.EXIT_MISMATCH
    lines = out.splitlines()
    got = [l for l in lines if l.strip().startswith("got ")]
    exp = [l for l in lines if l.strip().startswith("expected ")]
    assert got and exp
    full_got = "".join(l.split()[-1] for l in lines[lines.index(got[0]):lines.index(exp[0])])
    assert full_got == v and by[1]["value"] in "".join(l.split()[-1] for l in lines[lines.index(exp[0]):])
    assert "Transport     I2C 0x1d (MCTP over SMBus/I2C, DSP0237) via the uspdm bridge on serial /dev/ttyACM0" in out
    assert "the longest the board may take to answer a signing request" in out
