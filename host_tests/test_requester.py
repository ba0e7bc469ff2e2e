"""The host requester against our responder (lib/uspdm), in process (CPython).

The requester shares no code with the responder: it parses the responses,
recomputes the transcripts (M1, L1) and verifies every signature with the
`cryptography` package; measurement values are checked against hashlib over the
measured file.  Every version 1.0-1.3, both algorithms, chunked transfers,
ResponseNotReady -> RESPOND_IF_READY, tampering on the wire.
"""
import hashlib
import os

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from uspdm_tools import certs, requester as rq
from uspdm_tools.loopback import LoopbackTransport

from uspdm.crypto import drbg as _drbg
from uspdm.identity import Identity
from uspdm.measurements import Measurements
from uspdm.responder import Config, Responder
from uspdm.storage import MemoryStorage

VERSIONS = ["1.0", "1.1", "1.2", "1.3"]
FW = b"def main():\n    print('hello from the board')\n"


class Board:
    """An in-process board: identity with both keys and chains, a measured firmware file."""

    def __init__(self, tmp, ca, intermediate=True, issue=None):
        self.drbg = _drbg.from_source(os.urandom)
        self.storage = MemoryStorage()
        self.identity = Identity(self.storage, self.drbg)
        self.ca = ca
        self.fw = os.path.join(str(tmp), "main.py")
        with open(self.fw, "wb") as f:
            f.write(FW)
        for alg in ("p384", "p256"):
            self.identity.ensure_key(alg)
            pub = certs.public_key_from_xy(alg, self.identity.public_key(alg))
            chain = (issue or ca.issue_leaf)(pub, "acme:widget:%s" % alg, use_intermediate=intermediate)
            self.identity.install_chain(0, alg, b"".join(chain))
        self.measure()

    def measure(self):
        m = Measurements()
        m.add_file(1, self.fw)
        m.add_raw(0x41, 6, b"MicroPython 1.26.0")
        m.add_svn(0x43, 3)
        m.add_device_mode()
        self.measurements = m
        return m

    def responder(self, **cfg):
        return Responder(self.identity, self.measurements, self.drbg, Config(**cfg))

    def transport(self, log=True, **cfg):
        return LoopbackTransport(self.responder(**cfg), log=log)


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    c = certs.LabCA(str(tmp_path_factory.mktemp("ca")))
    c.load_or_create()
    return c


@pytest.fixture(scope="module")
def board(tmp_path_factory, ca):
    return Board(tmp_path_factory.mktemp("board"), ca)


def run_flow(t, ca, version=None, alg=None, slot=0, **opts):
    opts.setdefault("sleep", lambda s: None)
    q = rq.Requester(t, version=version, algs=(alg,) if alg else ("p384", "p256"), **opts)
    q.init_connection()
    digests = q.get_digests()
    prog = []
    buf = q.get_certificate(slot, progress=lambda a, b: prog.append((a, b)))
    alg_name = rq.ASYM_TO_ALG[q.asym]
    # .get: a corrupted DIGESTS SlotMask may name other slots (CHALLENGE_AUTH's signature over
    # M1 then catches the corruption)
    info = certs.validate_chain(buf, q.hash_size, rq.HASHES[q.hash][1], alg_name, q.version, ca.root_cert,
                                digest=digests.get(slot))
    ch = q.challenge(slot)
    count = q.measurement_count(slot)
    m = q.get_measurements(0xFF, signed=True, slot=slot)
    return q, info, ch, count, m, prog


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("alg", ["p384", "p256"])
def test_full_flow(board, ca, version, alg):
    t = board.transport()
    q, info, ch, count, m, prog = run_flow(t, ca, version, alg)
    assert rq.version_str(q.version) == version
    assert q.asym == rq.ALGS[alg][0]
    curve = ec.SECP384R1 if alg == "p384" else ec.SECP256R1
    assert isinstance(info["leaf_key"].curve, curve)
    # the leaf certifies the board's own key
    xy = board.identity.public_key(alg)
    assert info["leaf_key"].public_bytes(serialization.Encoding.X962,
                                         serialization.PublicFormat.UncompressedPoint) == b"\x04" + bytes(xy)
    assert info["device_info"] == "acme:widget:%s" % alg
    assert prog[-1][0] == prog[-1][1]
    # measurements: count, indices, values checked with hashlib
    assert count == 4
    blocks = {b["index"]: b for b in m["blocks"]}
    assert sorted(blocks) == [1, 0x41, 0x43, 0xFE]
    mh = {rq.MEAS_HASH_SHA384: hashlib.sha384, rq.MEAS_HASH_SHA256: hashlib.sha256}[q.meas_hash]
    assert blocks[1]["type"] == 1 and not blocks[1]["raw_bitstream"]
    assert blocks[1]["value"] == mh(FW).digest()
    assert blocks[0x41]["raw_bitstream"] and blocks[0x41]["value"] == b"MicroPython 1.26.0"
    assert blocks[0x43]["value"] == (3).to_bytes(8, "little")
    assert len(blocks[0xFE]["value"]) == 16
    # the summary hash in CHALLENGE_AUTH covers exactly these blocks
    assert ch["summary_hash"] == rq.measurement_summary(q.version, q.hash, m["blocks"])
    # transport saw no chunking and no RESPOND_IF_READY by default
    codes = [req[1] for req, _ in t.log]
    assert 0x85 not in codes and 0x86 not in codes and 0xFF not in codes


def test_version_choice(board, ca):
    q, *_ = run_flow(board.transport(versions=[0x10, 0x11, 0x12]), ca)
    assert q.version == 0x12
    q, *_ = run_flow(board.transport(), ca)
    assert q.version == 0x13
    q = rq.Requester(board.transport(versions=[0x11, 0x12]), version="1.3")
    with pytest.raises(rq.ProtocolError, match="does not support SPDM 1.3"):
        q.init_connection()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_chunked_transfers(board, ca, version):
    """Responder receives at most 42 bytes, we at most 64: CHUNK_SEND and CHUNK_GET carry the flow."""
    t = board.transport(data_transfer_size=42, max_spdm_msg_size=4096)
    q, info, ch, count, m, _ = run_flow(t, ca, version, data_transfer_size=64, cert_portion=1024)
    codes = [req[1] for req, _ in t.log]
    assert 0x85 in codes, "NEGOTIATE_ALGORITHMS (48 bytes) must go by CHUNK_SEND"
    assert 0x86 in codes, "CERTIFICATE/CHALLENGE_AUTH must come back by CHUNK_GET"
    for req, rsp in t.log:
        assert len(req) <= 42 and len(rsp) <= 64
    assert count == 4 and len(m["blocks"]) == 4


def test_chunking_not_used_before_1_2(board, ca):
    t = board.transport(data_transfer_size=42)
    q, *_ = run_flow(t, ca, "1.1", data_transfer_size=64)
    assert not any(req[1] in (0x85, 0x86) for req, _ in t.log)


@pytest.mark.parametrize("version", VERSIONS)
def test_response_not_ready(board, ca, version):
    t = board.transport(defer_signing=True)
    q, *_ = run_flow(t, ca, version)
    rir = [req for req, _ in t.log if req[1] == 0xFF]
    assert {r[2] for r in rir} == {0x83, 0xE0}  # CHALLENGE and the signed GET_MEASUREMENTS
    by = {}
    for x in q.timings:
        by.setdefault(x.name, []).append(x.retries)
    assert by["CHALLENGE"][0] >= 1 and by["GET_MEASUREMENTS"][-1] >= 1


def test_response_not_ready_waits_rdt(board, ca):
    slept = []
    t = board.transport(defer_signing=True, rdt_exponent=14, rdtm=5)
    run_flow(t, ca, "1.2", sleep=slept.append)
    assert slept and all(abs(s - (1 << 14) / 1e6) < 1e-9 for s in slept)


def test_unreachable_and_protocol_errors(board, ca):
    class Dead:
        def spdm(self, req, timeout):
            raise TimeoutError("silence")

    with pytest.raises(rq.Unreachable):
        rq.Requester(Dead()).init_connection()
    # CHALLENGE before the connection is negotiated: UnexpectedRequest from the responder
    q = rq.Requester(board.transport())
    q.get_version()
    q.version = 0x12
    q.rsp_flags = rq.CAP_CHAL | rq.CAP_CERT
    q.asym, q.hash = rq.ASYM_P384, rq.HASH_SHA384
    with pytest.raises(rq.ProtocolError) as ei:
        q.challenge(0, public_key=ec.generate_private_key(ec.SECP384R1()).public_key())
    assert ei.value.code is not None and ei.value.request == 0x83  # an SPDM ERROR, reported with its name
    assert ei.value.name in str(ei.value)


class Mitm(LoopbackTransport):
    def __init__(self, responder, mutate):
        LoopbackTransport.__init__(self, responder)
        self.mutate = mutate

    def spdm(self, request, timeout=None):
        return self.mutate(bytes(request), LoopbackTransport.spdm(self, request, timeout))


def flip(code, pos, once=True):
    state = {"done": False}

    def m(req, rsp):
        if rsp[1] == code and not (once and state["done"]):
            state["done"] = True
            b = bytearray(rsp)
            b[pos] ^= 0x01
            return bytes(b)
        return rsp
    return m


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("code,pos,exc", [
    (0x03, -1, rq.VerificationError),        # CHALLENGE_AUTH signature
    (0x03, -40, rq.VerificationError),       # CHALLENGE_AUTH signed content (opaque/nonce/summary)
    (0x03, 6, rq.VerificationError),         # CertChainHash
    (0x60, 14, rq.VerificationError),        # a measurement byte in the signed MEASUREMENTS
    (0x02, 200, certs.ChainError),           # a certificate byte in transit
    (0x04, 7, rq.VerificationError),         # VERSION entry (transcript A differs from the responder's)
])
def test_tampering_on_the_wire(board, ca, version, code, pos, exc):
    t = Mitm(board.responder(), flip(code, pos))
    if code == 0x04:
        # the changed entry must still decode to a usable version list
        t.mutate = lambda req, rsp: (rsp[:6] + bytes((rsp[6] ^ 0x01,)) + rsp[7:]) if rsp[1] == 0x04 else rsp
    with pytest.raises(exc):
        run_flow(t, ca, version)


def test_foreign_root_untrusted(board, tmp_path):
    other = certs.LabCA(str(tmp_path / "other"))
    other.load_or_create()
    with pytest.raises(certs.ChainError, match="trusted root"):
        run_flow(board.transport(), other, "1.3")


def test_chain_with_forged_leaf(tmp_path, ca):
    """Root is ours, but the leaf was signed by another key under our root's name."""
    rogue = certs.LabCA(str(tmp_path / "rogue"))
    rogue.load_or_create()

    def issue(pub, info, use_intermediate=False):
        leaf = certs.issue_leaf(ca.root_cert, rogue.root_key, pub, info)
        return [ca.root_cert.public_bytes(serialization.Encoding.DER),
                leaf.public_bytes(serialization.Encoding.DER)]
    b = Board(tmp_path, ca, issue=issue)
    with pytest.raises(certs.ChainError, match="not signed"):
        run_flow(b.transport(), ca, "1.3")


@pytest.mark.parametrize("kw,versions_ok,versions_bad,match", [
    (dict(eku=(certs.OID_EKU_REQUESTER,)), [], VERSIONS, "requester-authentication only"),
    (dict(basic_constraints=False), ["1.0", "1.1", "1.2"], ["1.3"], "basicConstraints"),
])
def test_leaf_profile_on_device(tmp_path, ca, kw, versions_ok, versions_bad, match):
    def issue(pub, info, use_intermediate=False):
        leaf = certs.issue_leaf(ca.root_cert, ca.root_key, pub, info, **kw)
        return [ca.root_cert.public_bytes(serialization.Encoding.DER),
                leaf.public_bytes(serialization.Encoding.DER)]
    b = Board(tmp_path, ca, issue=issue)
    for v in versions_ok:
        run_flow(b.transport(), ca, v)
    for v in versions_bad:
        with pytest.raises(certs.ChainError, match=match):
            run_flow(b.transport(), ca, v)


def test_unsigned_and_single_index(board, ca):
    q = rq.Requester(board.transport())
    q.init_connection()
    m = q.get_measurements(0xFF, signed=False)
    assert len(m["blocks"]) == 4 and "signature" not in m
    blk = q.measurement(0x41)
    assert blk["value"] == b"MicroPython 1.26.0"
    # signed single index needs the chain of the slot
    q.get_digests()
    q.get_certificate(0)
    m1 = q.get_measurements(1, signed=True)
    assert [b["index"] for b in m1["blocks"]] == [1]
    with pytest.raises(rq.ProtocolError):
        q.measurement(0x30)  # no such index


def test_slot_not_provisioned(board, ca):
    q = rq.Requester(board.transport())
    q.init_connection()
    d = q.get_digests()
    assert list(d) == [0]
    with pytest.raises(rq.ProtocolError):
        q.get_certificate(5)


# ------------------------------------------------------------ robustness

from hypothesis import given, settings, HealthCheck, strategies as st  # noqa: E402


class Replay:
    """Answers with recorded responses in order (whatever the request)."""

    def __init__(self, responses, mutate_at=None, mutate=None):
        self.responses = responses
        self.i = 0
        self.mutate_at = mutate_at
        self.mutate = mutate

    def spdm(self, req, timeout):
        if self.i >= len(self.responses):
            raise TimeoutError("replay exhausted")
        rsp = self.responses[self.i]
        if self.i == self.mutate_at:
            rsp = self.mutate(rsp)
        self.i += 1
        return rsp


def _fixed_rng(n):
    return bytes(range(n))


_RECORDED = {}


def recorded(board, ca, version):
    if version not in _RECORDED:
        t = board.transport(data_transfer_size=42, defer_signing=True)
        run_flow(t, ca, version, rng=_fixed_rng, data_transfer_size=64)
        _RECORDED[version] = [rsp for _, rsp in t.log]
    return _RECORDED[version]


@pytest.mark.parametrize("version", VERSIONS)
def test_replay_verifies(board, ca, version):
    rs = recorded(board, ca, version)
    run_flow(Replay(rs), ca, version, rng=_fixed_rng, data_transfer_size=64)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), version=st.sampled_from(VERSIONS))
def test_mutated_responses_give_clean_errors(board, ca, data, version):
    """Any corruption of any response ends in SpdmError/ChainError (never a crash, never trusted
    unless the corruption hit bytes nobody signs or checks, e.g. a reserved field)."""
    rs = recorded(board, ca, version)
    i = data.draw(st.integers(0, len(rs) - 1))
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "byte"]))
    pos = data.draw(st.integers(0, max(0, len(rs[i]) - 1)))
    val = data.draw(st.integers(1, 255))

    def mutate(r):
        if kind == "flip":
            b = bytearray(r)
            b[pos] ^= val
            return bytes(b)
        if kind == "truncate":
            return r[:pos]
        if kind == "extend":
            return r + bytes((val,)) * (1 + pos % 7)
        b = bytearray(r)
        b[pos] = val
        return bytes(b)
    if mutate(rs[i]) == rs[i]:
        return   # "byte" wrote the value that was there
    try:
        run_flow(Replay(rs, i, mutate), ca, version, rng=_fixed_rng, data_transfer_size=64)
    except (rq.SpdmError, certs.ChainError):
        return
    # The flow came out TRUSTED: only bytes nobody signs or checks may have changed.
    assert not hits_signed_or_checked(rs[i], kind, pos, mutate(rs[i])), (
        "TRUSTED although response %d (code 0x%02x) was corrupted: %s at %d" % (i, rs[i][1], kind, pos))


# Responses whose every byte is in a signed transcript (M1: VCA, DIGESTS, CERTIFICATE,
# CHALLENGE_AUTH; L1: VCA from 1.2, MEASUREMENTS) or is the signature itself.
SIGNED_RESPONSES = (0x04, 0x61, 0x63, 0x01, 0x02, 0x03, 0x60)
CHUNK_RESPONSE = 0x06


def hits_signed_or_checked(rsp, kind, pos, new):
    """True when this corruption must never come out TRUSTED.  Unchecked: the
    ERROR ResponseNotReady / LargeResponse fields (timing hints, a token the
    replay ignores), CHUNK_SEND_ACK framing, and CHUNK_RESPONSE's reserved
    bits (Param1 except LastChunk, bit 0; the 2 reserved bytes at offsets 6-7):
    none of them is signed; the large message a chunk carries is."""
    code = rsp[1]
    if code in SIGNED_RESPONSES:
        return True
    if code == CHUNK_RESPONSE:
        if kind in ("flip", "byte") and pos in (6, 7):
            return False
        if kind in ("flip", "byte") and pos == 2 and not (new[2] ^ rsp[2]) & 1:
            return False
        return True
    return False


def test_mutation_oracle_every_signed_byte():
    """Deterministic sweep beside the random one: flip every byte of every signed response of a
    1.2 flow (chunked, deferred): none comes out TRUSTED."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        c = certs.LabCA(os.path.join(tmp, "ca"))
        c.load_or_create()
        b = Board(tmp, c)
        t = b.transport(data_transfer_size=42, defer_signing=True)
        run_flow(t, c, "1.2", rng=_fixed_rng, data_transfer_size=64)
        rs = [rsp for _, rsp in t.log]
        run_flow(Replay(rs), c, "1.2", rng=_fixed_rng, data_transfer_size=64)   # unmutated: TRUSTED
        checked = 0
        for i, r in enumerate(rs):
            if r[1] not in SIGNED_RESPONSES:
                continue
            for pos in range(0, len(r), max(1, len(r) // 24)):
                def mutate(x, pos=pos):
                    y = bytearray(x)
                    y[pos] ^= 0x01
                    return bytes(y)
                with pytest.raises((rq.SpdmError, certs.ChainError)):
                    run_flow(Replay(rs, i, mutate), c, "1.2", rng=_fixed_rng, data_transfer_size=64)
                checked += 1
        assert checked > 100


@pytest.mark.parametrize("version", ["1.1", "1.3"])
def test_repeated_digests_restart_b_before_challenge(board, ca, version):
    # GET_DIGESTS resets B of M1 on both sides (libspdm): a requester that
    # reads digests, the chain, then digests again must still verify CHALLENGE_AUTH.
    t = board.transport()
    q = rq.Requester(t, version=version, sleep=lambda s: None)
    q.init_connection()
    q.get_digests()
    q.get_certificate(0)
    q.get_digests()
    q.challenge(0)


@pytest.mark.parametrize("version", ["1.0", "1.2", "1.3"])
def test_measurements_reset_m1_only_before_authentication(board, ca, version):
    # libspdm_reset_message_buffer_via_request_code on both sides: GET_MEASUREMENTS
    # restarts M1 while unauthenticated; after CHALLENGE_AUTH, B keeps growing.
    t = board.transport()
    q = rq.Requester(t, version=version, sleep=lambda s: None)
    q.init_connection()
    q.get_digests()
    q.get_certificate(0)
    q.get_measurements(1, signed=False)
    assert q.B == b""
    q.challenge(0)
    assert q.authenticated
    q.get_digests()
    q.get_measurements(1, signed=False)
    q.get_certificate(0)
    assert q.B
    q.challenge(0)
    q.init_connection()
    assert not q.authenticated
