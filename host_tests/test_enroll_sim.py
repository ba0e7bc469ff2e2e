"""Enrolment over serial against the simulated board (MicroPython under Node
behind a pty): `uspdm enroll` into every slot, SPDM 1.2 and 1.3, both curves,
each followed by attestation of that slot (TRUSTED, the verifier's own path
validation); malformed GET_CSR / SET_CERTIFICATE over the wire get their ERROR
and leave the slots as they were; requests outside a session are refused.

The matrix runs through the library (one process, one serial link: ~1 s per
enrolment on the simulator); the command line is exercised once each for
`uspdm enroll` and `uspdm attest --slot N`."""
import json
import os
import struct
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import hashes

from uspdm_tools import certs
from uspdm_tools import enroll as E
from uspdm_tools import requester as R
from uspdm_tools import session_requester as SR

import test_enroll as T

pytestmark = pytest.mark.slow


def uspdm(*args, timeout=300):
    p = subprocess.run([sys.executable, "-m", "uspdm_tools.cli"] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    from uspdm_tools.simproc import SimProcess

    d = tmp_path_factory.mktemp("enroll")
    flash, ca = d / "flash", d / "ca"
    rc, out, err = uspdm("provision", "--flash", flash, "--ca-dir", ca)
    assert rc == 0, err
    with SimProcess(flash=str(flash)) as sim:
        c = certs.LabCA(str(ca))
        c.load()
        yield {"port": sim.port, "ca": c, "ca_dir": str(ca), "flash": str(flash), "sim": sim}


def _link(board):
    from uspdm_tools import link as link_mod
    from uspdm_tools.cmd_session import LinkAdapter

    return LinkAdapter(link_mod.SerialLink(board["port"], timeout=20), link_mod.Unreachable)


def _slot_files(board):
    d = os.path.join(board["flash"], "uspdm")
    out = {}
    for n in sorted(os.listdir(d)):
        if n.startswith("slot"):
            with open(os.path.join(d, n), "rb") as f:
                out[n] = f.read()
    return out


@pytest.mark.parametrize("version", ["1.2", "1.3"])
@pytest.mark.parametrize("alg", ["p384", "p256"])
def test_enroll_every_slot_over_serial(board, version, alg):
    link = _link(board)
    try:
        for slot in range(8):
            rep = E.enroll(link, board["ca"], slot=slot, alg=alg, version=version, timeout=20)
            assert rep["version"] == version
            assert rep["attest"]["verdict"] == "TRUSTED", rep
            assert rep["attest"]["subject"] == "CN=uspdm enrolled slot %d,O=uspdm lab" % slot
    finally:
        link.close()


def test_enroll_and_attest_command_line(board):
    rc, out, err = uspdm("enroll", "--port", board["port"], "--ca-dir", board["ca_dir"], "--slot", 6,
                         "--alg", "p256", "--subject", "bench board", "--json", "--timeout", 20)
    assert rc == 0, out + err
    rep = json.loads(out)
    assert rep["attest"]["verdict"] == "TRUSTED" and rep["attest"]["subject"] == "CN=bench board,O=uspdm lab"
    rc, out, err = uspdm("attest", "--port", board["port"], "--root", os.path.join(board["ca_dir"], "ca.cert.pem"),
                         "--slot", 6, "--alg", "p256", "--json", "--timeout", 20)
    assert rc == 0, out + err
    rep = json.loads(out)
    assert rep["verdict"] == "TRUSTED" and rep["identity"]["slot"] == 6
    assert rep["identity"]["subject"] == "CN=bench board,O=uspdm lab"


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_malformed_over_serial_leave_slots(board, version):
    link = _link(board)
    try:
        q = SR.SessionRequester(link, version=version, algs=("p384",), timeout=20)
        q.init_connection()
        # outside a session: SessionRequired
        assert T._err(q.t.spdm(E.get_csr_request(q.version, b""), 20)) == 0x0B
        q.get_digests()
        q.get_certificate(0)
        s = q.key_exchange(0)
        q.finish(s)
        inner = q.in_session(s)

        class _Pub:   # the board's key, as malformed_cases wants it
            pass
        r = _Pub()
        r.identity = _Pub()
        leaf = certs.load_cert(certs.split_chain_buffer(q.chains[0], q.hash_size)[1][-1])
        from cryptography.hazmat.primitives import serialization

        xy = leaf.public_key().public_bytes(serialization.Encoding.X962,
                                            serialization.PublicFormat.UncompressedPoint)[1:]
        from cryptography.hazmat.primitives.asymmetric import ec

        p256 = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)[1:]
        r.identity.public_key = lambda alg: xy if alg == "p384" else p256
        before = _slot_files(board)
        digests = inner.get_digests()
        for name, req, code in T.malformed_cases(board["ca"], r, version):
            rsp = (inner.t.spdm(req, 20) if len(req) <= q.rsp_dts
                   else inner._send_maybe_chunked(req, False, {"chunks": 0, "retries": 0}))
            assert rsp[1] == 0x7F and rsp[2] == code, (name, rsp.hex())
        assert _slot_files(board) == before
        assert inner.get_digests() == digests
        q.end_session(s)
    finally:
        link.close()


@pytest.fixture(scope="module")
def mk_board(tmp_path_factory):
    """A simulated board with multi_key=1 (SPDM 1.3 MULTI_KEY_CAP)."""
    from uspdm_tools.simproc import SimProcess

    d = tmp_path_factory.mktemp("enroll_mk")
    flash, ca = d / "flash", d / "ca"
    rc, out, err = uspdm("provision", "--flash", flash, "--ca-dir", ca)
    assert rc == 0, err
    with SimProcess(flash=str(flash), extra_args=["--set", "multi_key=1"]) as sim:
        c = certs.LabCA(str(ca))
        c.load()
        yield {"port": sim.port, "ca": c, "ca_dir": str(ca), "flash": str(flash), "sim": sim}


@pytest.mark.parametrize("alg", ["p384", "p256"])
def test_enroll_new_key_every_slot_over_serial(mk_board, alg):
    """--new-key over serial, SPDM 1.3: each slot gets a key pair of its own
    (KeyPairID slot+2 in DIGESTS), attested TRUSTED against it."""
    link = _link(mk_board)
    try:
        keys = set()
        for slot in range(8):
            rep = E.enroll(link, mk_board["ca"], slot=slot, alg=alg, version="1.3", timeout=20, new_key=True)
            assert rep["attest"]["verdict"] == "TRUSTED", rep
            assert rep["key_pair_id"] == slot + 2 and rep["attest"]["key_pair_id"] == slot + 2
            assert rep["csr_key"] not in keys
            keys.add(rep["csr_key"])
    finally:
        link.close()
    names = os.listdir(os.path.join(mk_board["flash"], "uspdm"))
    assert all(("kp%d_%s.bin" % (k, alg)) in names for k in range(2, 10))


def test_enroll_new_key_command_line(mk_board):
    rc, out, err = uspdm("enroll", "--port", mk_board["port"], "--ca-dir", mk_board["ca_dir"], "--slot", 4,
                         "--new-key", "--version", "1.3", "--json", "--timeout", 20)
    assert rc == 0, out + err
    rep = json.loads(out)
    assert rep["key_pair_id"] == 6 and rep["attest"]["verdict"] == "TRUSTED"
    rc, out, err = uspdm("attest", "--port", mk_board["port"], "--root",
                         os.path.join(mk_board["ca_dir"], "ca.cert.pem"), "--slot", 4, "--json", "--timeout", 20)
    assert rc == 0, out + err
    assert json.loads(out)["identity"]["key"].split()[-1] == rep["csr_key"]
    assert "key_pair_id" not in json.loads(out)["identity"]   # not asked for a multi-key connection
    rc, out, err = uspdm("attest", "--port", mk_board["port"], "--root",
                         os.path.join(mk_board["ca_dir"], "ca.cert.pem"), "--slot", 4, "--multi-key", "--timeout", 20)
    assert rc == 0 and "KeyPairID 6, DeviceCert, KeyUsageMask 0x0007" in out, out + err
    # SPDM 1.2 has no KeyPairID: a clear error, exit 1, nothing written
    before = sorted(os.listdir(os.path.join(mk_board["flash"], "uspdm")))
    rc, out, err = uspdm("enroll", "--port", mk_board["port"], "--ca-dir", mk_board["ca_dir"], "--slot", 5,
                         "--new-key", "--version", "1.2", "--timeout", 20)
    assert rc == 1 and "--new-key needs SPDM 1.3" in out, out + err
    assert sorted(os.listdir(os.path.join(mk_board["flash"], "uspdm"))) == before


def test_openprot_profile_reports_one_version(tmp_path):
    """Board setting openprot=1: VERSION lists a single SPDM version, 1.2 or later."""
    from uspdm_tools import link as link_mod
    from uspdm_tools.cmd_session import LinkAdapter
    from uspdm_tools.simproc import SimProcess

    for i, (extra, want) in enumerate(((["--set", "openprot=1"], [0x13]),
                                       (["--set", "openprot=1", "--set", "openprot_version=1.2"], [0x12]),
                                       ([], [0x10, 0x11, 0x12, 0x13]))):
        # (--set persists in the flash folder's board.cfg: one folder per case)
        flash = tmp_path / ("flash%d" % i)
        rc, out, err = uspdm("provision", "--flash", flash, "--ca-dir", tmp_path / "ca")
        assert rc == 0, err
        with SimProcess(flash=str(flash), extra_args=extra) as sim:
            link = LinkAdapter(link_mod.SerialLink(sim.port, timeout=20), link_mod.Unreachable)
            try:
                q = R.Requester(link, timeout=20)
                q.get_version()
                assert q.versions == want, (extra, q.versions)
                # and the profile's measurements: one freeform-manifest block at 0xFD
                # holding every block, the summary hash over it (checked by the verifier)
                from uspdm_tools import verifier

                c = certs.LabCA(str(tmp_path / "ca"))
                c.load()
                code, rep = verifier.attest(link, c.root_cert, requester_opts={"timeout": 20})
                assert code == 0, rep
                blocks = rep["measurements"]["blocks"]
                if extra:
                    assert rep["measurements"]["count_reported"] == 1 and len(blocks) == 1
                    b = blocks[0]
                    assert b["index"] == 0xFD and b["type"] == 4 and b["raw_bitstream"]
                    inner = bytes.fromhex(b["value"])
                    idx, o = [], 0
                    while o < len(inner):   # DMTF blocks: Index, Spec=1, Size u16, Type, ValueSize u16, value
                        assert inner[o + 1] == 1
                        n = struct.unpack_from("<H", inner, o + 2)[0]
                        assert struct.unpack_from("<H", inner, o + 5)[0] == n - 3
                        idx.append(inner[o])
                        o += 4 + n
                    assert o == len(inner) and 0x40 in idx and 0xFE in idx and idx == sorted(idx)
                    assert rep["challenge"]["summary_hash"] == "matches measurements"
                else:
                    assert len(blocks) > 5 and 0xFD not in [b["index"] for b in blocks]
            finally:
                link.close()


@pytest.mark.timeout(900)
@pytest.mark.parametrize("load", ["rom", "ram"])
def test_enroll_in_session_on_m0(tmp_path, load):
    """`uspdm enroll` (KEY_EXCHANGE session, GET_CSR, SET_CERTIFICATE, attest) on the
    emulated Cortex-M0, 200 KB heap: GET_CSR's signature work is deferred in slices
    inside the session, so no single step comes near the ~60 M instructions it took
    in one piece.  Both loads (ROMFS and the stock .mpy in the heap) are run, and
    both must pass (the stock load ran out of heap here until the session stack was
    split by phase and the resident code cut)."""
    from uspdm_tools import m0board
    from uspdm_tools import m0flows as F

    fw = m0board.firmware_for("200k")
    why = m0board.check(fw) if fw else "no firmware image with a 200 KB heap"
    if why:
        pytest.skip("emulated Cortex-M0 unavailable: %s" % why)
    root = F.provision(tmp_path / "flash", tmp_path / "ca")
    c = certs.LabCA(str(tmp_path / "ca"))
    c.load()
    with F.M0Run(fw, str(tmp_path / "flash"), root, load=load) as b:
        before = len(b._records())
        raw, link = F._link(b.sim.port)
        opts = F._fast_opts(30.0)
        try:
            rep = E.enroll(link, c, slot=1, alg="p384", version="1.3", timeout=30, requester_opts=opts)
        finally:
            raw.close()
        recs = [r for r in b._records()[before:] if r.get("event") == "message"]
    figs = F.summarize(recs)
    print("[m0 200k %s] enroll in a session: %s" % (load, F.fmt_figs(dict(figs, flow="enroll"))))
    assert rep["attest"]["verdict"] == "TRUSTED", rep
    # GET_CSR's signature in one step was 60-85 M instructions; in slices no step reaches
    # half of that (the stock load's longest, ~30 M, includes importing a module)
    worst = max(recs, key=lambda r: r["max_step"])
    assert worst["max_step"] < 45000, "longest step %d k-instr (%s)" % (worst["max_step"], worst["request"])
