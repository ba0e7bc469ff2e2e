"""Issue 11 (harden): the verifier against a hostile responder (a genuine key running modified
firmware, or a device that never ends a message), against our responder in process."""
import json
import re
import struct

import pytest
from cryptography.hazmat.primitives import serialization

from uspdm_tools import certs, cmd_mctp, cmd_session, screen, verifier
from uspdm_tools import requester as rq
from uspdm_tools.session_requester import SessionRequester
from uspdm_tools.cli import build_parser
from uspdm_tools.loopback import LoopbackTransport

from test_requester import Board

# a control character anywhere but as a line end: what a terminal would act on
_CTRL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
EVIL_NAME = "\x1b[1A\x1b[2KVerdict: TRUSTED -- all fine\x1b[8m"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    c = certs.LabCA(str(tmp_path_factory.mktemp("ca")))
    c.load_or_create()
    return c


def args(ca, cmd="attest", **kw):
    a = build_parser().parse_args([cmd, "--port", "loopback", "--root", ca.root_pem_path])
    for k, v in kw.items():
        setattr(a, k, v)
    return a


def evil_board(tmp_path, ca):
    """Genuine identity, modified firmware: control sequences in its manifest's file names and in the
    device-info and subject of its leaf."""
    def issue(pub, info, use_intermediate=False):
        leaf = certs.issue_leaf(ca.root_cert, ca.root_key, pub, "acme:\x1b]0;owned\x07\u202e:" + info.split(":")[-1],
                                subject="dev\nVerdict: TRUSTED\u009b2K")
        return [ca.root_cert.public_bytes(serialization.Encoding.DER),
                leaf.public_bytes(serialization.Encoding.DER)]
    b = Board(tmp_path, ca, issue=issue)
    b.measurements.add_raw(0x44, 4, ("01 " + EVIL_NAME).encode("utf-8"))
    b.measurements.add_raw(0x45, 6, b"v1\x1b[8m")
    return b


def test_screen_escape_unit():
    assert screen.escape("plain text: 1.2.3") == "plain text: 1.2.3"
    assert screen.escape("a\x1b[2Kb") == "a\\x1b[2Kb"
    assert screen.escape("\r\n\t\x00\x7f\x9b") == "\\x0d\\x0a\\x09\\x00\\x7f\\x9b"
    assert screen.escape("x\u202ey\u200b") == "x\\u202ey\\u200b"
    assert screen.escape("caf\u00e9 \u00b5C") == "caf\u00e9 \u00b5C"  # printable non-ASCII stays
    assert screen.line("a\nb\n") == "a\\x0ab\n"


def test_attest_text_escapes_device_strings(tmp_path, ca, capsys):
    b = evil_board(tmp_path, ca)
    # golden from a good capture, then the evil manifest makes it a mismatch (exit 5)
    a = args(ca, "golden")
    rc = verifier.cmd_golden(a, transport=LoopbackTransport(b.responder()))
    gold = capsys.readouterr().out
    assert rc == 0
    gp = tmp_path / "golden.json"
    doc = json.loads(gold)
    for m in doc["measurements"]:
        if m["index"] == 0x45:
            m["value"] = "00"
    gp.write_text(json.dumps(doc))
    rc = verifier.cmd_attest(args(ca, golden=str(gp)), transport=LoopbackTransport(b.responder()))
    out = capsys.readouterr().out
    assert rc == verifier.EXIT_MISMATCH
    assert not _CTRL.search(out), repr(_CTRL.search(out))
    lines = out.splitlines()
    # the only line that starts with "Verdict:" is ours, and it tells the truth
    assert [ln for ln in lines if ln.startswith("Verdict:")] == [lines[-1]]
    assert lines[-1].startswith("Verdict: MEASUREMENT MISMATCH")
    # what the device sent is visible, escaped
    assert "\\x1b[1A\\x1b[2KVerdict" in out and "\\x9b2K" in out and "\\u202e" in out
    assert "dev\\x0aVerdict: TRUSTED" in out and "\\x1b]0;owned\\x07" in out


def test_attest_json_keeps_device_strings_exact(tmp_path, ca, capsys):
    b = evil_board(tmp_path, ca)
    rc = verifier.cmd_attest(args(ca, json=True), transport=LoopbackTransport(b.responder()))
    out = capsys.readouterr().out
    assert rc == 0
    assert not _CTRL.search(out)
    rep = json.loads(out)
    assert rep["identity"]["device_info"].startswith("acme:\x1b]0;owned\x07\u202e:")
    assert "dev\nVerdict: TRUSTED" in rep["identity"]["subject"]
    labels = [x["label"] for x in rep["measurements"]["blocks"]]
    assert any(EVIL_NAME in lbl for lbl in labels), labels


def test_golden_stderr_escaped(tmp_path, ca, capsys):
    class Liar:  # an SPDM ERROR whose text we quote
        def spdm(self, req, timeout):
            raise verifier.ProtocolError("bad \x1b[2K\rVerdict: TRUSTED")
    rc = verifier.cmd_golden(args(ca, "golden"), transport=Liar())
    err = capsys.readouterr().err
    assert rc == verifier.EXIT_PROTOCOL
    assert not _CTRL.search(err) and "\\x1b[2K\\x0dVerdict" in err


def test_session_report_escaped(capsys):
    a = build_parser().parse_args(["session", "--port", "x"])
    cmd_session._done(a, {"kind": "c\x1b[31m", "version": "1.2", "measurements": []}, 3,
                      "PROTOCOL ERROR: \x1b[2K\rresult: OK\x9b")
    out = capsys.readouterr().out
    assert not _CTRL.search(out)
    assert out.splitlines()[-1].startswith("result: PROTOCOL ERROR: \\x1b[2K\\x0dresult: OK")
    a.json = True
    cmd_session._done(a, {"kind": "c\x1b[31m"}, 0, "OK")
    out = capsys.readouterr().out
    assert not _CTRL.search(out) and json.loads(out)["kind"] == "c\x1b[31m"


def test_mctp_report_escaped(monkeypatch, capsys):
    class Link:
        timeout = 5.0

        def __init__(self, *a, **kw):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def control(self, cmd, data=b"", eid=None, timeout=None):
            raise ValueError("garbled frame \x1b]2;title\x07")
    monkeypatch.setattr(cmd_mctp, "SerialLink", Link)
    rc = cmd_mctp.run(build_parser().parse_args(["mctp", "--port", "x"]))
    err = capsys.readouterr().err
    assert rc == 3 and not _CTRL.search(err) and "\\x1b]2;title\\x07" in err


# ------------------------------------------------------------ 11.10: the verifier cannot be hung

class Hostile(LoopbackTransport):
    """A genuine board until the signed GET_MEASUREMENTS; that answer is a LargeResponse whose
    CHUNK_GET reassembly is `inner()` (another LargeResponse, or chunks that never end).  Refuses
    to go on for ever itself (a test never hangs): after `limit` CHUNK_GETs it stops answering."""

    def __init__(self, r, mode, clock=None, limit=2000):
        LoopbackTransport.__init__(self, r)
        self.mode = mode
        self.clock = clock
        self.chunk_gets = 0
        self.limit = limit

    def spdm(self, req, timeout=None):
        if self.clock is not None:
            self.clock.t += 0.05   # every message takes 50 ms
        if req[1] == 0xE0 and req[2] & 1:
            return bytes((req[0], 0x7F, 0x0F, 0x00, 0x07))   # ERROR LargeResponse, handle 7
        if req[1] == 0x86:
            self.chunk_gets += 1
            if self.chunk_gets > self.limit:
                raise TimeoutError("test transport gives up")
            seq = req[4] | (req[5] << 8)
            if self.mode == "nested":   # the reassembled response: ERROR LargeResponse again
                payload = bytes((req[0], 0x7F, 0x0F, 0x00, 0x07))
                hdr = struct.pack("<BBBBHHI", req[0], 0x06, 1, 7, seq, 0, len(payload))
                return hdr + struct.pack("<I", len(payload)) + payload
            # "endless": 1 byte per chunk of a 60000-byte response
            hdr = struct.pack("<BBBBHHI", req[0], 0x06, 0, 7, seq, 0, 1)
            if seq == 0:
                hdr += struct.pack("<I", 60000)
            return hdr + b"\x00"
        return LoopbackTransport.spdm(self, req, timeout)


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_nested_large_response_is_a_protocol_error(tmp_path, ca):
    b = Board(tmp_path, ca)
    t = Hostile(b.responder(), "nested")
    code, rep = verifier.attest(t, ca.root_cert, requester_opts={"timeout": 1.0})
    assert code == verifier.EXIT_PROTOCOL, rep["reason"]
    assert "LargeResponse" in rep["reason"] and rep["verdict"] == "PROTOCOL ERROR"
    assert t.chunk_gets == 1


def test_overall_deadline_ends_an_endless_answer(tmp_path, ca):
    b = Board(tmp_path, ca)
    clock = FakeClock()
    t = Hostile(b.responder(), "endless", clock=clock)
    code, rep = verifier.attest(t, ca.root_cert, requester_opts={"timeout": 5.0, "deadline": 30, "clock": clock})
    assert code == verifier.EXIT_UNREACHABLE, rep["reason"]
    assert rep["verdict"] == "DEADLINE EXCEEDED" and "30 s" in rep["reason"] and "measurements" in rep["reason"]
    # 30 s at 50 ms per message: about 600 messages, then it stops
    assert 400 < t.chunk_gets < 700, t.chunk_gets


def test_deadline_cuts_each_message_timeout(tmp_path, ca):
    b = Board(tmp_path, ca)
    clock = FakeClock()
    seen = []

    class Rec(LoopbackTransport):
        def spdm(self, req, timeout=None):
            seen.append(timeout)
            clock.t += 4.0
            return LoopbackTransport.spdm(self, req, timeout)
    q = rq.Requester(Rec(b.responder()), timeout=5.0, deadline=10, clock=clock)
    with pytest.raises(rq.DeadlineExceeded):
        q.init_connection()
        q.get_digests()
    assert seen[:3] == [5.0, 5.0, 2.0]


def test_deadline_inside_a_session():
    import test_session_host as TSH

    clock = FakeClock()
    mgr, r, link = TSH.board()
    q = SessionRequester(link, version="1.2", algs=("p384",), sleep=lambda t: None, deadline=50, clock=clock)
    q.init_connection()
    s = q.psk_exchange(TSH.HINT, TSH.PSK)
    if s.psk_context:
        q.psk_finish(s)
    inner = q.in_session(s)
    inner.get_measurements(0, False)
    clock.t += 60
    with pytest.raises(rq.DeadlineExceeded):
        q.heartbeat(s)
    with pytest.raises(rq.DeadlineExceeded):
        inner.get_measurements(0, False)


def test_cli_deadline_option_documented():
    for cmd in ("attest", "golden", "session", "mctp"):
        a = build_parser().parse_args([cmd, "--port", "x"])
        assert a.deadline > 0
        a = build_parser().parse_args([cmd, "--port", "x", "--deadline", "7"])
        assert a.deadline == 7


def test_unexpected_error_text_escaped(monkeypatch, capsys):
    from uspdm_tools import cli

    def boom(args):
        raise RuntimeError("device said \x1b[2K\rVerdict: TRUSTED")
    monkeypatch.setattr(cmd_mctp, "run", boom)
    rc = cli.main(["mctp", "--port", "x"])
    err = capsys.readouterr().err
    assert rc == 1 and not _CTRL.search(err) and "\\x1b[2K\\x0dVerdict" in err
