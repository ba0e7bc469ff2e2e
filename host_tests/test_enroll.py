"""GET_CSR / SET_CERTIFICATE (issue 12), in process (CPython): our responder
(lib/uspdm) against the host requester (tools/uspdm_tools, `cryptography`).

The CSR is checked with `cryptography` (signature, subject, attributes, key),
installed chains with the verifier's own path validation (uspdm attest), every
malformed request gets its ERROR and leaves the slots as they were, the
policy settings hold, the CERT_INSTALL_RESET flow, and a power cut at every
single storage step of an install or an erase leaves each slot old or new."""
import os
import struct
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from uspdm_tools import certs
from uspdm_tools import enroll as E
from uspdm_tools import requester as R
from uspdm_tools import session_requester as SR
from uspdm_tools.loopback import LoopbackTransport

from uspdm import session as S
from uspdm.crypto import drbg as _drbg
from uspdm.identity import Identity
from uspdm.responder import Config, Responder
from uspdm.storage import MemoryStorage

from test_spdm_common import make_meas  # host_tests/portable on sys.path

ALGS = ("p384", "p256")
HASH = {"p384": hashes.SHA384, "p256": hashes.SHA256}


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    c = certs.LabCA(str(tmp_path_factory.mktemp("ca")))
    c.load_or_create()
    return c


class Link:
    """.spdm -> Responder.handle (deferred work done first), .secured -> SessionManager."""

    def __init__(self, r, mgr):
        self.r, self.mgr = r, mgr

    def spdm(self, req, timeout=None):
        while self.r.pending():
            self.r.work()
        rsp = self.r.handle(bytes(req))
        if rsp is None:
            raise TimeoutError("no answer")
        return rsp

    def secured(self, body, timeout=None):
        out = self.mgr.handle_secured(8, bytes(body), 0)
        if out is None:
            raise TimeoutError("no answer")
        return out


def make_board(ca, storage=None, provision=True, **cfg):
    st = storage if storage is not None else MemoryStorage()
    ident = Identity(st, _drbg.from_source(os.urandom))
    if provision:
        for alg in ALGS:
            xy = ident.ensure_key(alg)
            chain = ca.issue_leaf(certs.public_key_from_xy(alg, xy), "uspdm:test:%s" % alg)
            ident.install_chain(0, alg, b"".join(chain))
    st.write("uspdm/psk_%s.bin" % b"lab".hex(), b"k" * 32)
    mgr = S.SessionManager(_drbg.from_source(os.urandom), st)
    kw = {"csr_cap": True, "set_cert_cap": True}
    kw.update(cfg)
    c = S.configure(Config(**kw))
    r = Responder(ident, make_meas(), _drbg.from_source(os.urandom), c)
    S.attach(r, mgr)
    r.eid = 8
    return r, mgr, Link(r, mgr)


def slot_files(r):
    st = r.identity.storage
    return {k: v for k, v in st.files.items() if "/slot" in k}


def session(link, version="1.3", alg="p384", psk=False, **kw):
    q = SR.SessionRequester(link, version=version, algs=(alg,), sleep=lambda t: None, **kw)
    q.init_connection()
    if psk:
        s = q.open_session(psk_hint=b"lab", psk=b"k" * 32)
    else:
        q.get_digests()
        q.get_certificate(0)
        s = q.key_exchange(0)
        q.finish(s)
    return q, s, q.in_session(s)


def raw(inner, s, req):
    """Send one request inside the session, return the (decrypted) response."""
    return inner.t.spdm(req)


# ------------------------------------------------------------------ enroll
@pytest.mark.parametrize("version", ["1.2", "1.3"])
@pytest.mark.parametrize("alg", ALGS)
def test_enroll_every_slot(ca, version, alg):
    r, mgr, link = make_board(ca)
    before = None
    for slot in range(8):
        rep = E.enroll(link, ca, slot=slot, alg=alg, version=version, sleep=lambda t: None)
        assert rep["attest"]["verdict"] == "TRUSTED", rep
        assert rep["attest"]["subject"] == "CN=uspdm enrolled slot %d,O=uspdm lab" % slot
        # DIGESTS now lists the slot with Hash(the chain buffer we built)
        q = R.Requester(LoopbackTransport(r), version=version, algs=(alg,))
        q.init_connection()
        d = q.get_digests()
        assert slot in d
        buf = q.get_certificate(slot)
        info = certs.validate_chain(buf, q.hash_size, HASH[alg], alg, q.version, ca.root_cert, digest=d[slot])
        assert info["leaf_subject"] == "CN=uspdm enrolled slot %d,O=uspdm lab" % slot
        h = hashes.Hash(HASH[alg]())
        h.update(buf)
        assert d[slot] == h.finalize()
        if before is not None:
            assert before != d[slot]
        before = d[slot]
    assert sorted(d) == list(range(8))


def test_enroll_over_psk_session_blank_board(ca):
    """A board with no key and no certificate: PSK session, the key is made at GET_CSR."""
    r, mgr, link = make_board(ca, provision=False)
    assert r.identity.private_key("p256") is None
    rep = E.enroll(link, ca, slot=1, alg="p256", version="1.2", psk_hint=b"lab", psk=b"k" * 32,
                   sleep=lambda t: None)
    assert rep["session"] == "PSK" and rep["attest"]["verdict"] == "TRUSTED"
    assert rep["csr_key"] == r.identity.public_key("p256").hex()


def test_csr_checked_with_cryptography(ca):
    r, mgr, link = make_board(ca)
    q, s, inner = session(link, "1.3", "p384")
    ri = E.requester_info("lab board 7", "challenge text", "p384")
    rsp = inner.exchange(E.get_csr_request(0x13, ri), E.CSR, name="GET_CSR")
    der = E.parse_csr_response(rsp)
    csr = x509.load_der_x509_csr(der)
    assert csr.is_signature_valid
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA384)
    assert csr.subject.rfc4514_string() == "CN=lab board 7,O=uspdm lab"
    assert csr.attributes.get_attribute_for_oid(E.OID_UNSTRUCTURED_NAME).value == b"challenge text"
    pub = csr.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    assert pub[1:] == r.identity.public_key("p384")
    # empty RequesterInfo: the board's default subject, no attributes
    rsp = inner.exchange(E.get_csr_request(0x13, b""), E.CSR, name="GET_CSR")
    csr = x509.load_der_x509_csr(E.parse_csr_response(rsp))
    assert csr.is_signature_valid and csr.subject.rfc4514_string() == "CN=uspdm device,O=uspdm"
    assert len(list(csr.attributes)) == 0
    # the key the board attests with is the CSR's (checked by enroll against the session slot)
    E.check_csr(der, "p384", "lab board 7", "challenge text", certs.public_key_from_xy(
        "p384", r.identity.public_key("p384")))
    with pytest.raises(E.EnrollError):
        E.check_csr(der, "p384", expect_key=certs.public_key_from_xy("p256", r.identity.public_key("p256")))


def test_large_csr_through_chunk_get(ca):
    r, mgr, link = make_board(ca)
    q, s, inner = session(link, "1.2", "p384", data_transfer_size=256, max_spdm_msg_size=4096)
    ri = E.requester_info("x" * 60, "a" * 250, "p384")
    assert len(ri) <= 512
    rsp = inner.exchange(E.get_csr_request(0x12, ri), E.CSR, name="GET_CSR")
    assert [t.chunks for t in q.timings if t.name == "GET_CSR"][0] >= 3   # CHUNK_GET brought it
    csr = x509.load_der_x509_csr(E.parse_csr_response(rsp))
    assert csr.is_signature_valid and len(rsp) > 256
    # more than 512 B of RequesterInfo is refused (bounded)
    big = E.requester_info("x" * 60, "a" * 400, "p384")
    assert len(big) > 512
    with pytest.raises(R.ProtocolError) as ei:
        inner.exchange(E.get_csr_request(0x12, big), E.CSR, name="GET_CSR")
    assert ei.value.code == R.ERR_INVALID_REQUEST


def test_deferred_csr_signature_respond_if_ready(ca):
    """In the clear (lab setting) with deferred signing: ResponseNotReady, then RESPOND_IF_READY."""
    r, mgr, link = make_board(ca, enroll_in_clear=True, defer_signing=True)
    q = R.Requester(LoopbackTransport(r), version="1.2", algs=("p256",), sleep=lambda t: None)
    q.init_connection()
    rsp = q.exchange(E.get_csr_request(0x12, b""), E.CSR, name="GET_CSR")
    assert [t.retries for t in q.timings if t.name == "GET_CSR"] == [1]
    assert x509.load_der_x509_csr(E.parse_csr_response(rsp)).is_signature_valid


class SlicedLink(Link):
    """As the board's loop: the deferred work runs between messages, a few slices
    per message at most (so a RESPOND_IF_READY can find it not ready yet)."""

    def __init__(self, r, mgr, per=40):
        Link.__init__(self, r, mgr)
        self.slices = 0
        self.per = per

    def _slice(self):
        for _ in range(self.per):
            if not self.r.pending():
                break
            self.r.work()
            self.slices += 1

    def spdm(self, req, timeout=None):
        self._slice()
        rsp = self.r.handle(bytes(req))
        if rsp is None:
            raise TimeoutError("no answer")
        return rsp

    def secured(self, body, timeout=None):
        self._slice()
        return Link.secured(self, body, timeout)


@pytest.mark.parametrize("alg", ALGS)
def test_deferred_csr_in_session(ca, alg):
    """Inside a KEY_EXCHANGE session with deferred signing (as on the chip): GET_CSR
    answers ResponseNotReady, its key and signature work runs in work() slices, and
    a RESPOND_IF_READY inside the session collects the CSR; outside the session
    (or in another) it is not collectable; ending the session drops it."""
    r, mgr, _ = make_board(ca, defer_signing=True)
    link = SlicedLink(r, mgr)
    r.identity._pubs.clear()   # the device key's public key not computed yet this boot
    rep = E.enroll(link, ca, slot=3, alg=alg, version="1.3", sleep=lambda t: None, timeout=5)
    assert rep["attest"]["verdict"] == "TRUSTED"
    assert link.slices > 10   # (the work came in slices, not in one step)
    # raw: the pending CSR belongs to the session
    q, s, inner = session(link, "1.3", alg)
    req = E.get_csr_request(0x13, E.requester_info("a", "b", alg))
    rsp = inner.t.spdm(req)
    assert rsp[1] == 0x7F and rsp[2] == R.ERR_RESPONSE_NOT_READY
    rif = bytes((0x13, 0xFF, rsp[5], rsp[6]))
    assert r.pend is not None and r.pend.sess is not None
    while r.pending():
        r.work()
    out = q.t.spdm(rif)                      # outside the session: not its answer
    assert out[1] == 0x7F and out[2] == R.ERR_UNEXPECTED_REQUEST
    got = inner.t.spdm(rif)                  # inside: the CSR
    assert got[1] == 0x6D and x509.load_der_x509_csr(E.parse_csr_response(got)).is_signature_valid
    # a session that ends with a CSR pending takes it along: the connection is not left Busy
    rsp = inner.t.spdm(req)
    assert rsp[2] == R.ERR_RESPONSE_NOT_READY and r.pend is not None
    q.end_session(s)
    assert r.pend is None
    assert q.get_digests()


# ------------------------------------------------------------------ refusals
def _err(rsp):
    assert rsp[1] == 0x7F, rsp.hex()
    return rsp[2]


def test_outside_session_refused_unless_lab_setting(ca):
    r, mgr, link = make_board(ca)
    q = R.Requester(LoopbackTransport(r), version="1.3", algs=("p384",))
    q.init_connection()
    before = dict(slot_files(r))
    t = q.t
    assert _err(t.spdm(E.get_csr_request(0x13, b""))) == 0x0B  # SessionRequired
    chain = ca.issue_leaf(certs.public_key_from_xy("p384", r.identity.public_key("p384")), "x:y:z")
    buf = certs.chain_buffer(chain, hashes.SHA384)
    with pytest.raises(R.ProtocolError) as ei:   # (CHUNK_SEND: larger than the DataTransferSize)
        q.exchange(E.set_certificate_request(0x13, 2, buf), E.SET_CERTIFICATE_RSP)
    assert ei.value.code == 0x0B
    assert slot_files(r) == before
    r2, _, _ = make_board(ca, enroll_in_clear=True)
    q = R.Requester(LoopbackTransport(r2), version="1.3", algs=("p384",))
    q.init_connection()
    buf = certs.chain_buffer(ca.issue_leaf(certs.public_key_from_xy("p384", r2.identity.public_key("p384")),
                                           "x:y:z"), hashes.SHA384)
    rsp = q.exchange(E.set_certificate_request(0x13, 2, buf), E.SET_CERTIFICATE_RSP)
    assert rsp[2] == 2


def test_capability_bits_only_when_enabled(ca):
    for kw, want in (({}, 0x180000), ({"csr_cap": False, "set_cert_cap": False}, 0),
                     ({"cert_install_reset": True}, 0x380000)):
        r, _, _ = make_board(ca, **kw)
        for v, ver in (("1.1", 0x11), ("1.2", 0x12), ("1.3", 0x13)):
            q = R.Requester(LoopbackTransport(r), version=v, algs=("p384",))
            q.init_connection()
            assert q.rsp_flags & 0x380000 == (want if ver >= 0x12 else 0)
    r, _, _ = make_board(ca, csr_cap=False, set_cert_cap=False, enroll_in_clear=True)
    q = R.Requester(LoopbackTransport(r), version="1.2", algs=("p384",))
    q.init_connection()
    rsp = q.t.spdm(E.get_csr_request(0x12, b""))
    assert _err(rsp) == 0x07 and rsp[3] == 0xED  # UnsupportedRequest, the request code
    # SPDM 1.1: no such request
    q = R.Requester(LoopbackTransport(r), version="1.1", algs=("p384",))
    q.init_connection()
    assert _err(q.t.spdm(bytes((0x11, 0xEE, 1, 0)))) == 0x07


def _chain(ca, r, alg="p384", key_alg=None, **kw):
    xy = r.identity.public_key(key_alg or alg)
    pub = certs.public_key_from_xy(key_alg or alg, xy)
    return ca.issue_leaf(pub, "uspdm:test:x", **kw)


def malformed_cases(ca, r, v):
    """(name, request, expected ERROR code) for SET_CERTIFICATE / GET_CSR."""
    H = 48
    good = certs.chain_buffer(_chain(ca, r), hashes.SHA384)
    ders = _chain(ca, r)
    stranger = ec.generate_private_key(certs.CURVES["p384"]()).public_key()
    foreign_key = certs.chain_buffer(ca.issue_leaf(stranger, "a:b:c"), hashes.SHA384)
    ver = 0x13 if v == "1.3" else 0x12
    cases = [
        ("csr short", bytes((ver, 0xED, 0, 0, 0, 0)), 0x01),
        ("csr ri past end", bytes((ver, 0xED, 0, 0)) + struct.pack("<HH", 10, 0) + b"\x30\x03", 0x01),
        ("csr opaque past end", bytes((ver, 0xED, 0, 0)) + struct.pack("<HH", 0, 8) + b"\x01\x00", 0x01),
        ("csr opaque too long", bytes((ver, 0xED, 0, 0)) + struct.pack("<HH", 0, 1028) + bytes(1028), 0x01),
        ("csr opaque malformed", bytes((ver, 0xED, 0, 0)) + struct.pack("<HH", 0, 4) + b"\x02\x00\x00\x00", 0x01),
        ("csr ri not DER", E.get_csr_request(ver, b"\x30\x05\x02\x01\x00\x30"), 0x01),
        ("csr ri not a CRI", E.get_csr_request(ver, b"\x30\x03\x02\x01\x00"), 0x01),
        ("csr ri trailing", E.get_csr_request(ver, E.requester_info("a", "b") + b"\x00"), 0x01),
        ("set short", bytes((ver, 0xEE, 1, 0)) + good[:20], 0x01),
        ("set bad slot", bytes((ver, 0xEE, 9, 0)) + good, 0x01),
        ("set Length past end", bytes((ver, 0xEE, 1, 0)) + struct.pack("<H", len(good) + 10) + good[2:], 0x01),
        ("set Length too small", bytes((ver, 0xEE, 1, 0)) + struct.pack("<H", 20) + good[2:], 0x01),
        ("set reserved", bytes((ver, 0xEE, 1, 0)) + good[:2] + b"\x01\x00" + good[4:], 0x01),
        ("set truncated chain", bytes((ver, 0xEE, 1, 0)) + struct.pack("<H", len(good) - 30) + good[2:-30], 0x05),
        ("set wrong root hash", bytes((ver, 0xEE, 1, 0)) + good[:4] + bytes(H) + good[4 + H:], 0x05),
        ("set key not the device's", bytes((ver, 0xEE, 1, 0)) + foreign_key, 0x05),
        ("set leaf key other curve", bytes((ver, 0xEE, 1, 0)) + certs.chain_buffer(
            _chain(ca, r, key_alg="p256"), hashes.SHA384), 0x05),
        ("set leaf without keyUsage", bytes((ver, 0xEE, 1, 0)) + certs.chain_buffer(
            [ders[0], certs.issue_leaf(ca.root_cert, ca.root_key, certs.public_key_from_xy(
                "p384", r.identity.public_key("p384")), "a:b:c", key_usage=False).public_bytes(
                serialization.Encoding.DER)], hashes.SHA384), 0x05),
        ("set garbage certs", bytes((ver, 0xEE, 1, 0)) + struct.pack("<HH", 4 + H + 10, 0) + bytes(H) + bytes(10),
         0x05),
    ]
    if ver == 0x13:
        cases += [
            ("csr KeyPairID without multi-key", E.get_csr_request(ver, b"", p1=1), 0x01),
            ("csr cert model", E.get_csr_request(ver, b"", p2=1), 0x01),
            ("csr tag without reset flow", E.get_csr_request(ver, b"", p2=1 << 3), 0x01),
            ("set KeyPairID", bytes((ver, 0xEE, 1, 1)) + good, 0x01),
            ("set cert model", bytes((ver, 0xEE, 0x11, 0)) + good, 0x01),
            ("set erase with model", bytes((ver, 0xEE, 0x91, 0)), 0x01),
            ("set 1.3 leaf without basicConstraints", bytes((ver, 0xEE, 1, 0)) + certs.chain_buffer(
                _chain(ca, r, basic_constraints=False), hashes.SHA384), 0x05),
        ]
    return cases


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_malformed_requests_get_their_error_and_leave_slots(ca, version):
    sys.modules.pop("uspdm.enroll", None)
    r, mgr, link = make_board(ca)
    q, s, inner = session(link, version, "p384")
    cases = malformed_cases(ca, r, version)
    before = dict(slot_files(r))
    for name, req, code in cases:
        rsp = inner.t.spdm(req) if len(req) <= q.rsp_dts else inner._send_maybe_chunked(req, False, {
            "chunks": 0, "retries": 0})
        assert rsp[1] == 0x7F and rsp[2] == code, (name, rsp.hex())
        assert slot_files(r) == before, name
        assert s.state != "ended"
    # and the session still works: a good install afterwards
    buf = certs.chain_buffer(_chain(ca, r), hashes.SHA384)
    ver = 0x13 if version == "1.3" else 0x12
    rsp = inner.exchange(E.set_certificate_request(ver, 1, buf), E.SET_CERTIFICATE_RSP)
    assert rsp[2] == 1 and "uspdm/slot1_p384.der" in slot_files(r)
    # nothing of the enrolment code stays imported
    assert "uspdm.enroll" not in sys.modules


def test_erase_1_3_and_digests(ca):
    r, mgr, link = make_board(ca)
    q, s, inner = session(link, "1.3", "p384")
    buf = certs.chain_buffer(_chain(ca, r), hashes.SHA384)
    inner.exchange(E.set_certificate_request(0x13, 4, buf), E.SET_CERTIFICATE_RSP)
    d = inner.get_digests()
    assert 4 in d
    rsp = inner.exchange(E.set_certificate_request(0x13, 4, p1_extra=0x80), E.SET_CERTIFICATE_RSP)
    assert rsp[2] == 4
    assert sorted(inner.get_digests()) == [0]
    assert "uspdm/slot4_p384.der" not in slot_files(r)


def test_lock_slot0(ca):
    for version, code in (("1.2", 0x05), ("1.3", 0x44)):
        r, mgr, link = make_board(ca, lock_slot0=True)
        q, s, inner = session(link, version, "p384")
        ver = 0x12 if version == "1.2" else 0x13
        before = dict(slot_files(r))
        buf = certs.chain_buffer(_chain(ca, r), hashes.SHA384)
        with pytest.raises(R.ProtocolError) as ei:
            inner.exchange(E.set_certificate_request(ver, 0, buf), E.SET_CERTIFICATE_RSP)
        assert ei.value.code == code
        if ver == 0x13:
            with pytest.raises(R.ProtocolError) as ei:
                inner.exchange(E.set_certificate_request(ver, 0, p1_extra=0x80), E.SET_CERTIFICATE_RSP)
            assert ei.value.code == code
        assert slot_files(r) == before
        inner.exchange(E.set_certificate_request(ver, 1, buf), E.SET_CERTIFICATE_RSP)  # other slots: fine


def test_unsupported_slot_refused(ca):
    r, mgr, link = make_board(ca, supported_slots=0x03)
    q, s, inner = session(link, "1.3", "p384")
    buf = certs.chain_buffer(_chain(ca, r), hashes.SHA384)
    with pytest.raises(R.ProtocolError) as ei:
        inner.exchange(E.set_certificate_request(0x13, 5, buf), E.SET_CERTIFICATE_RSP)
    assert ei.value.code == R.ERR_INVALID_REQUEST


# -------------------------------------------- SPDM 1.3 multi-key, --new-key
def _xy(pub):
    return pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)[1:]


@pytest.mark.parametrize("alg", ALGS)
def test_new_key_every_slot_1_3(ca, alg):
    """GET_CSR with KeyPairID slot+2: the board makes a fresh key pair, the CSR
    (checked with `cryptography`) holds it, SET_CERTIFICATE installs it, the
    slot signs with it (the verifier checks CHALLENGE/MEASUREMENTS against the
    new leaf), in 1.3 with the multi-key connection and in 1.2 without one."""
    r, mgr, link = make_board(ca, multi_key=True)
    device = r.identity.public_key(alg)
    keys = set()
    for slot in range(8):
        rep = E.enroll(link, ca, slot=slot, alg=alg, version="1.3", sleep=lambda t: None, new_key=True)
        assert rep["attest"]["verdict"] == "TRUSTED" and rep["key_pair_id"] == slot + 2, rep
        assert rep["attest"]["key_pair_id"] == slot + 2
        key = bytes.fromhex(rep["csr_key"])
        assert key != device and key not in keys
        keys.add(key)
        assert r.identity.key_pair(slot + 2, alg)[1] == key
    # the same slots attested by a 1.2 requester (no multi-key): each signs with its own key
    for slot in (0, 5):
        code, arep = __import__("uspdm_tools.verifier", fromlist=["attest"]).attest(
            LoopbackTransport(r), ca.root_cert, version="1.2", slot=slot, algs=(alg,))
        assert code == 0 and "key_pair_id" not in arep["identity"], arep
        assert bytes.fromhex(arep["identity"]["key"].split()[-1]) == r.identity.key_pair(slot + 2, alg)[1]
    # again into slot 3: its chain is on its own key pair, so it is erased first and a new key is made
    rep = E.enroll(link, ca, slot=3, alg=alg, version="1.3", sleep=lambda t: None, new_key=True)
    assert rep["erased_first"] and rep["attest"]["verdict"] == "TRUSTED"
    assert bytes.fromhex(rep["csr_key"]) not in keys


def test_key_pair_made_once_and_retired_with_its_chain(ca):
    """Flash wear: GET_CSRs for a slot's own key pair write it once (a requester
    repeating GET_CSR does not rewrite the flash); the key pair retires when its
    slot's chain is erased or replaced by one on the device key, and the next
    GET_CSR makes a fresh one."""
    class Counting(MemoryStorage):
        writes = 0

        def write(self, name, data):
            if "/kp" in name:
                Counting.writes += 1
            return MemoryStorage.write(self, name, data)

    r, mgr, link = make_board(ca, storage=Counting(), multi_key=True)
    q, s, inner = session(link, "1.3", "p384", multi_key=True)
    ri = E.requester_info("k", "k")
    keys = []
    for _ in range(3):
        rsp = inner.exchange(E.get_csr_request(0x13, ri, p1=5, p2=1), E.CSR)
        keys.append(_xy(x509.load_der_x509_csr(E.parse_csr_response(rsp)).public_key()))
    assert Counting.writes == 1 and keys[0] == keys[1] == keys[2] == r.identity.key_pair(5, "p384")[1]
    own = certs.chain_buffer(ca.issue_leaf(certs.public_key_from_xy("p384", keys[0]), "a:b:c"), hashes.SHA384)
    inner.exchange(E.set_certificate_request(0x13, 3, own, p1_extra=0x10, p2=5), E.SET_CERTIFICATE_RSP)
    assert inner.get_digests() and inner.key_pairs[3]["key_pair_id"] == 5
    # erased: the key pair goes with the chain
    inner.exchange(E.set_certificate_request(0x13, 3, p1_extra=0x80, p2=5), E.SET_CERTIFICATE_RSP)
    assert r.identity.key_pair(5, "p384") is None
    rsp = inner.exchange(E.get_csr_request(0x13, ri, p1=5, p2=1), E.CSR)
    fresh = _xy(x509.load_der_x509_csr(E.parse_csr_response(rsp)).public_key())
    assert fresh != keys[0] and Counting.writes == 2
    own = certs.chain_buffer(ca.issue_leaf(certs.public_key_from_xy("p384", fresh), "a:b:c"), hashes.SHA384)
    inner.exchange(E.set_certificate_request(0x13, 3, own, p1_extra=0x10, p2=5), E.SET_CERTIFICATE_RSP)
    # replaced by a chain on the device key: retired too
    dev = certs.chain_buffer(_chain(ca, r), hashes.SHA384)
    inner.exchange(E.set_certificate_request(0x13, 3, dev, p1_extra=0x10, p2=1), E.SET_CERTIFICATE_RSP)
    assert r.identity.key_pair(5, "p384") is None
    inner.get_digests()
    assert inner.key_pairs[3]["key_pair_id"] == 1


def test_new_key_refused_without_1_3_multi_key(ca):
    r, mgr, link = make_board(ca)   # no multi_key setting
    before = dict(r.identity.storage.files)
    with pytest.raises(E.EnrollError) as ei:
        E.enroll(link, ca, slot=2, alg="p384", version="1.3", sleep=lambda t: None, new_key=True)
    assert "multi_key=1" in str(ei.value) and ei.value.code == E.EXIT_USAGE
    r, mgr, link = make_board(ca, multi_key=True)
    before = dict(r.identity.storage.files)
    with pytest.raises(E.EnrollError) as ei:
        E.enroll(link, ca, slot=2, alg="p384", version="1.2", sleep=lambda t: None, new_key=True)
    assert "needs SPDM 1.3" in str(ei.value) and ei.value.code == E.EXIT_USAGE
    assert dict(r.identity.storage.files) == before


def test_multi_key_digests_certificate_layout(ca):
    """Raw bytes: DIGESTS = header, Digest[n], KeyPairID[n], CertificateInfo[n],
    KeyUsageMask[n] (u16 LE) in slot order; CERTIFICATE Param2 = CertificateInfo;
    only when the requester asked for the multi-key connection."""
    r, mgr, link = make_board(ca, multi_key=True)
    E.enroll(link, ca, slot=2, alg="p384", version="1.3", sleep=lambda t: None, new_key=True)
    E.enroll(link, ca, slot=5, alg="p384", version="1.3", sleep=lambda t: None)   # on the device key
    for mk in (True, False):
        q = R.Requester(LoopbackTransport(r), version="1.3", algs=("p384",), multi_key=mk)
        q.init_connection()
        assert q.rsp_flags & (3 << 26) == 2 << 26   # MULTI_KEY_CAP = 10b (negotiated)
        rsp = q.t.spdm(bytes((0x13, 0x81, 0, 0)))
        assert rsp[1] == 0x01 and rsp[3] == 0b100101
        n, H = 3, 48
        if mk:
            assert len(rsp) == 4 + n * H + 4 * n
            o = 4 + n * H
            assert list(rsp[o:o + 3]) == [1, 4, 1]          # KeyPairID: device key, slot 2's own, device key
            assert list(rsp[o + 3:o + 6]) == [1, 1, 1]      # CertificateInfo: DeviceCert
            assert struct.unpack_from("<3H", rsp, o + 6) == (7, 7, 7)   # KeyEx | Challenge | Measurement
        else:
            assert len(rsp) == 4 + n * H
        cert = q.t.spdm(bytes((0x13, 0x82, 2, 0)) + struct.pack("<HH", 0, 100))
        assert cert[1] == 0x02 and cert[3] == (1 if mk else 0)
    # a requester asking for the multi-key connection from a board without MULTI_KEY_CAP: InvalidRequest
    r2, _, _ = make_board(ca)
    q = R.Requester(LoopbackTransport(r2), version="1.3", algs=("p384",), multi_key=True)
    q.get_version()
    q.get_capabilities()
    q.rsp_flags |= 2 << 26   # (pretend it offered it)
    with pytest.raises(R.ProtocolError) as ei:
        q.negotiate_algorithms()
    assert ei.value.code == R.ERR_INVALID_REQUEST


def test_multi_key_verifier_checks_digests_fields():
    D = bytes(48)
    good = bytes((0x13, 0x01, 0xFF, 0x03)) + b"\x11" * 96 + bytes((1, 3, 1, 1)) + struct.pack("<2H", 7, 7)
    assert R.parse_key_pair_fields(good, 100, 0x03, {0: b"\x11" * 48, 1: b"\x11" * 48})[1] == {
        "key_pair_id": 3, "cert_model": 1, "key_usage": 7}
    for name, tail in (("model reserved", bytes((1, 3, 1, 4)) + struct.pack("<2H", 7, 7)),
                       ("info reserved bits", bytes((1, 3, 1, 0x09)) + struct.pack("<2H", 7, 7)),
                       ("slot 0 generic", bytes((1, 3, 3, 1)) + struct.pack("<2H", 7, 7)),
                       ("slot 0 no usage", bytes((1, 3, 1, 1)) + struct.pack("<2H", 0x4000, 7)),
                       ("usage reserved", bytes((1, 3, 1, 1)) + struct.pack("<2H", 7, 0x0107)),
                       ("KeyPairID 0", bytes((1, 0, 1, 1)) + struct.pack("<2H", 7, 7))):
        with pytest.raises(R.ProtocolError):
            R.parse_key_pair_fields(good[:100] + tail, 100, 0x03, {0: b"\x11" * 48, 1: b"\x11" * 48})
    with pytest.raises(R.ProtocolError):   # CertModel 0 (no certificate) with a non-zero digest
        R.parse_key_pair_fields(good[:100] + bytes((1, 3, 1, 0)) + struct.pack("<2H", 7, 7), 100, 0x03,
                                {0: b"\x11" * 48, 1: b"\x11" * 48})
    assert D == bytes(48)


def test_multi_key_malformed_get_their_error_and_leave_slots(ca):
    r, mgr, link = make_board(ca, multi_key=True)
    E.enroll(link, ca, slot=2, alg="p384", version="1.3", sleep=lambda t: None, new_key=True)
    q, s, inner = session(link, "1.3", "p384", multi_key=True)
    assert q.mk_conn
    good = certs.chain_buffer(_chain(ca, r), hashes.SHA384)          # device key (KeyPairID 1)
    own2 = certs.chain_buffer(ca.issue_leaf(certs.public_key_from_xy("p384", r.identity.key_pair(4, "p384")[1]),
                                            "a:b:c"), hashes.SHA384)
    ri = E.requester_info("x", "y")
    cases = [
        ("csr KeyPairID 0", E.get_csr_request(0x13, ri, p1=0, p2=1), 0x01),
        ("csr KeyPairID past the last", E.get_csr_request(0x13, ri, p1=10, p2=1), 0x01),
        ("csr model 0", E.get_csr_request(0x13, ri, p1=1, p2=0), 0x01),
        ("csr AliasCert model", E.get_csr_request(0x13, ri, p1=1, p2=2), 0x01),
        ("set KeyPairID 0", bytes((0x13, 0xEE, 0x11, 0)) + good, 0x01),
        ("set model 0", bytes((0x13, 0xEE, 0x01, 1)) + good, 0x01),
        ("set GenericCert model", bytes((0x13, 0xEE, 0x31, 1)) + good, 0x01),
        ("set another slot's key pair", bytes((0x13, 0xEE, 0x11, 4)) + own2, 0x01),
        ("set key pair not made yet", bytes((0x13, 0xEE, 0x13, 5)) + good, 0x01),
        ("set erase with model", bytes((0x13, 0xEE, 0x92, 4)), 0x01),
        ("set erase KeyPairID 0", bytes((0x13, 0xEE, 0x82, 0)), 0x01),
        ("set KeyPairID 1 with slot 2's key", bytes((0x13, 0xEE, 0x13, 1)) + own2, 0x05),
        ("set own KeyPairID with the device key", bytes((0x13, 0xEE, 0x12, 4)) + good, 0x05),
    ]
    before = dict(slot_files(r))
    kps = {k: v for k, v in r.identity.storage.files.items() if "/kp" in k}
    for name, req, code in cases:
        rsp = inner.t.spdm(req) if len(req) <= q.rsp_dts else inner._send_maybe_chunked(req, False, {
            "chunks": 0, "retries": 0})
        assert rsp[1] == 0x7F and rsp[2] == code, (name, rsp.hex())
        assert slot_files(r) == before, name
        assert {k: v for k, v in r.identity.storage.files.items() if "/kp" in k} == kps, name
    d = inner.get_digests()
    assert inner.key_pairs[2]["key_pair_id"] == 4 and sorted(d) == [0, 2]


# ------------------------------------------------------------ reset flow
def reboot(r, ca, **cfg):
    """A new boot on the same flash."""
    kw = {"cert_install_reset": True}
    kw.update(cfg)
    return make_board(ca, storage=r.identity.storage, provision=False, **kw)


def test_reset_required_flow_1_3(ca):
    r, mgr, link = make_board(ca, cert_install_reset=True)
    q, s, inner = session(link, "1.3", "p384")
    ri = E.requester_info("reset me", "t", "p384")
    rsp = inner.t.spdm(E.get_csr_request(0x13, ri))
    assert _err(rsp) == 0x0C
    tag = rsp[3]
    assert 1 <= tag <= 7
    # same boot, with the tag: still ResetRequired
    rsp = inner.t.spdm(E.get_csr_request(0x13, ri, p2=tag << 3))
    assert _err(rsp) == 0x0C and rsp[3] == tag
    # an unknown tag; a tag with Overwrite
    free = 7 if tag != 7 else 6
    assert _err(inner.t.spdm(E.get_csr_request(0x13, ri, p2=free << 3))) == 0x04
    assert _err(inner.t.spdm(E.get_csr_request(0x13, ri, p2=(tag << 3) | 0x80))) == 0x01
    # SET_CERTIFICATE: committed, effective after the reset
    buf = certs.chain_buffer(_chain(ca, r), hashes.SHA384)
    assert _err(inner.t.spdm(E.set_certificate_request(0x13, 3, buf))) == 0x0C
    assert sorted(inner.get_digests()) == [0]
    r2, mgr2, link2 = reboot(r, ca)
    q2, s2, inner2 = session(link2, "1.3", "p384")
    assert sorted(inner2.get_digests()) == [0, 3]
    rsp = inner2.exchange(E.get_csr_request(0x13, ri, p2=tag << 3), E.CSR)
    csr = x509.load_der_x509_csr(E.parse_csr_response(rsp))
    assert csr.is_signature_valid and "CN=reset me" in csr.subject.rfc4514_string()
    # the tag is used up
    assert _err(inner2.t.spdm(E.get_csr_request(0x13, ri, p2=tag << 3))) == 0x04


def test_reset_required_flow_multi_key_new_key_pair(ca):
    """1.3 multi-key with the reset flow: the KeyPairID is part of the request the
    tag stands for; after the reset the CSR is for a fresh key pair of slot 4."""
    r, mgr, link = make_board(ca, cert_install_reset=True, multi_key=True)
    q, s, inner = session(link, "1.3", "p384", multi_key=True)
    ri = E.requester_info("reset me", "t", "p384")
    rsp = inner.t.spdm(E.get_csr_request(0x13, ri, p1=6, p2=1))
    assert _err(rsp) == 0x0C
    tag = rsp[3]
    assert r.identity.key_pair(6, "p384") is None   # nothing made before the reset
    r2, mgr2, link2 = reboot(r, ca, multi_key=True)
    q2, s2, inner2 = session(link2, "1.3", "p384", multi_key=True)
    # the same tag with another KeyPairID is not that request
    assert _err(inner2.t.spdm(E.get_csr_request(0x13, ri, p1=1, p2=1 | (tag << 3)))) == 0x04
    rsp = inner2.exchange(E.get_csr_request(0x13, ri, p1=6, p2=1 | (tag << 3)), E.CSR)
    csr = x509.load_der_x509_csr(E.parse_csr_response(rsp))
    assert csr.is_signature_valid
    assert _xy(csr.public_key()) == r2.identity.key_pair(6, "p384")[1] != r2.identity.public_key("p384")


def test_reset_required_tags_busy_and_overwrite(ca):
    r, mgr, link = make_board(ca, cert_install_reset=True)
    q, s, inner = session(link, "1.3", "p384")
    tags = set()
    for i in range(7):
        rsp = inner.t.spdm(E.get_csr_request(0x13, E.requester_info("n%d" % i, "t")))
        assert _err(rsp) == 0x0C
        tags.add(rsp[3])
    assert tags == set(range(1, 8))
    assert _err(inner.t.spdm(E.get_csr_request(0x13, b""))) == 0x03  # Busy: no free tag
    rsp = inner.t.spdm(E.get_csr_request(0x13, b"", p2=0x80))  # Overwrite: drops them all
    assert _err(rsp) == 0x0C and rsp[3] == 1
    names = [k for k in r.identity.storage.files if k.startswith("uspdm/csr")]
    assert names == ["uspdm/csr1.bin"]


def test_reset_required_flow_1_2(ca):
    r, mgr, link = make_board(ca, cert_install_reset=True)
    q, s, inner = session(link, "1.2", "p256")
    rsp = inner.t.spdm(E.get_csr_request(0x12, b""))
    assert _err(rsp) == 0x0C and rsp[3] == 0
    r2, mgr2, link2 = reboot(r, ca)
    q2, s2, inner2 = session(link2, "1.2", "p256")
    rsp = inner2.exchange(E.get_csr_request(0x12, b""), E.CSR)
    assert x509.load_der_x509_csr(E.parse_csr_response(rsp)).is_signature_valid
    # 1.3 erase with the reset flow: the slot goes at the next boot
    q3, s3, inner3 = session(link2, "1.3", "p256")
    assert _err(inner3.t.spdm(E.set_certificate_request(0x13, 0, p1_extra=0x80))) == 0x0C
    assert 0 in inner3.get_digests()
    r3, mgr3, link3 = reboot(r2, ca, enroll_in_clear=True)
    q = R.Requester(LoopbackTransport(r3), version="1.3", algs=("p256",))
    q.init_connection()
    assert q.get_digests() == {}


# ------------------------------------------------------------- power cuts
class PowerCut(Exception):
    pass


class CuttingStorage:
    """MemoryStorage whose k-th mutating step raises (the board loses power
    there).  A create() cut after writing half the data leaves a torn file."""

    def __init__(self, inner, cut_at, torn=False):
        self.inner, self.cut_at, self.torn, self.steps = inner, cut_at, torn, 0
        self.on_write = None

    def _step(self):
        self.steps += 1
        if self.steps == self.cut_at:
            raise PowerCut()

    def read(self, name):
        return self.inner.read(name)

    def exists(self, name):
        return self.inner.exists(name)

    def list(self, folder):
        return self.inner.list(folder)

    def write(self, name, data):
        self._step()
        self.inner.write(name, data)

    def create(self, name, data):
        if self.steps + 1 == self.cut_at and self.torn:
            self.inner.create(name, bytes(data)[:len(data) // 2])
        self._step()
        self.inner.create(name, data)

    def rename(self, a, b):
        self._step()
        self.inner.rename(a, b)

    def delete(self, name):
        self._step()
        return self.inner.delete(name)


class CuttingFlash(CuttingStorage):
    """Like boards/m0's Flash: no create(), no rename() (a rename is a write, then a delete)."""

    create = None
    rename = None

    def __getattribute__(self, name):
        if name in ("create", "rename"):
            raise AttributeError(name)
        return object.__getattribute__(self, name)


def _snapshot(st):
    return dict(st.files)


@pytest.mark.parametrize("flash", [CuttingStorage, CuttingFlash])
@pytest.mark.parametrize("op", ["install-new-slot", "replace", "erase", "install-at-boot", "erase-at-boot"])
def test_power_cut_at_every_step(ca, op, flash):
    base = MemoryStorage()
    r, _, _ = make_board(ca, storage=base)
    ident = r.identity
    old = ident.chain(0, "p384")
    new = b"".join(_chain(ca, r))
    slot = 2 if op == "install-new-slot" else 0
    at_boot = op.endswith("at-boot")
    snap = _snapshot(base)
    old_val = ident.chain(slot, "p384")
    want_new = None if op.startswith("erase") else new
    k = 1
    while True:
        for torn in (False, True):
            st = MemoryStorage()
            st.files = dict(snap)
            cut = flash(st, k, torn)
            victim = Identity(cut)
            victim._recovered = True
            finished = False
            try:
                if op.startswith("erase"):
                    victim.delete_chain(slot, "p384", at_boot=at_boot)
                else:
                    victim.install_chain(slot, "p384", new, check_key=False, at_boot=at_boot)
                finished = True
            except PowerCut:
                pass
            # reboot (as often as it takes: a cut during recovery is recovered next time)
            for _ in range(2):
                after = Identity(st).chain(slot, "p384")
                assert after in (old_val, want_new), (op, k, torn)
            if finished:
                assert after == want_new, (op, k)
                assert not [n for n in st.files if n.endswith((".wip", ".cmt", ".pnd"))]
            # the other algorithm's slot and the other slots are untouched
            assert Identity(st).chain(0, "p256") == snap["uspdm/slot0_p256.der"]
            if slot != 0:
                assert Identity(st).chain(0, "p384") == old
        if finished:
            break
        k += 1
    # every storage step was cut once: create, rename .wip->.cmt, remove old, rename .cmt->slot
    # (a storage without rename: each rename is a write and a delete)
    want = {"install-new-slot": (3, 5), "replace": (4, 6), "erase": (1, 1), "install-at-boot": (2, 3),
            "erase-at-boot": (2, 3)}[op]
    assert k - 1 == want[flash is CuttingFlash]


def test_power_cut_during_recovery(ca):
    """Cut during a commit, then cut again at every step of the boot's recovery."""
    base = MemoryStorage()
    r, _, _ = make_board(ca, storage=base)
    new = b"".join(_chain(ca, r))
    # commit happened (.cmt exists), old still there: cut right after rename .wip -> .cmt
    for cut_install in range(3, 6):
        st = MemoryStorage()
        st.files = dict(base.files)
        try:
            Identity(CuttingStorage(st, cut_install)).install_chain(0, "p384", new, check_key=False)
        except PowerCut:
            pass
        k = 1
        while True:
            st2 = MemoryStorage()
            st2.files = dict(st.files)
            try:
                Identity(CuttingStorage(st2, k)).chain(0, "p384")
                done = True
            except PowerCut:
                done = False
            assert Identity(st2).chain(0, "p384") == new
            if done:
                break
            k += 1


# ------------------------------------------------------------- MicroPython
MPY_BOARD = """
import gc, sys
from uspdm.storage import MemoryStorage
from uspdm.identity import Identity
from uspdm.measurements import Measurements
from uspdm.responder import Config, Responder
from uspdm.crypto import drbg as _d
from uspdm.crypto import sha2
_rng = _d.HmacDrbg(sha2.new('sha256', b'mpy').digest(), b'nonce-0123456789')
st = MemoryStorage()
ident = Identity(st, _rng)
ident.set_private_key('p384', int('%s', 16))
ident.install_chain(0, 'p384', bytes.fromhex('%s'))
r = Responder(ident, Measurements([(1, 1, 'digest', b'fw')]), _rng,
              Config(csr_cap=True, set_cert_cap=True, enroll_in_clear=True, data_transfer_size=4096,
                     chunk_cap=False, asym_priority=['p384']))
def send(h):
    return r.handle(bytes.fromhex(h)).hex()
"""


def test_enrolment_on_micropython(ca, mpy):
    """The board code on real MicroPython: CSR checked with `cryptography`, a chain
    installed and shown in DIGESTS, the modules dropped afterwards."""
    from cryptography.hazmat.primitives.asymmetric import ec as cec

    key = cec.generate_private_key(cec.SECP384R1())
    d = key.private_numbers().private_value
    slot0 = b"".join(ca.issue_leaf(key.public_key(), "uspdm:mpy:0"))
    # VCA requests for SPDM 1.3 without chunking (recorded from the host requester)
    cpy = R.Requester(LoopbackTransport(Responder(Identity(MemoryStorage()), make_meas(), _drbg.from_source(
        os.urandom), Config(data_transfer_size=4096, chunk_cap=False, asym_priority=["p384"])), log=True),
        version="1.3", algs=("p384",))
    cpy.init_connection()
    vca = [q.hex() for q, _ in cpy.t.log]
    # the board lives in a module of the interpreter's filesystem, so it persists between runs
    mpy.run("import sys\nf = open('/enr_board.py', 'w')\nf.write(%r)\nf.close()\n"
            "sys.modules.pop('enr_board', None)\nif '/' not in sys.path: sys.path.insert(0, '/')\n"
            "import enr_board" % (MPY_BOARD % ("%x" % d, slot0.hex())))

    def send(req_hex):
        return mpy.run("import enr_board\nprint(enr_board.send(%r))" % req_hex).out.strip()

    for h in vca:
        out = send(h)
        assert bytes.fromhex(out)[1] != 0x7F, out
    # refused before the enrolment code is imported (KeyPairID without a multi-key connection)
    assert bytes.fromhex(send(E.get_csr_request(0x13, b"", p1=1).hex()))[1:3] == b"\x7f\x01"
    ri = E.requester_info("micro board", "from mpy", "p384")
    before = mpy.run("import gc\ngc.collect(); print(gc.mem_alloc())").out.strip()
    rsp = bytes.fromhex(send(E.get_csr_request(0x13, ri).hex()))
    csr = E.check_csr(E.parse_csr_response(rsp), "p384", "micro board", "from mpy", key.public_key())
    assert csr.is_signature_valid
    chain = ca.issue_leaf(key.public_key(), "uspdm:mpy:5")
    buf = certs.chain_buffer(chain, hashes.SHA384)
    rsp = bytes.fromhex(send(E.set_certificate_request(0x13, 5, buf).hex()))
    assert rsp == bytes((0x13, 0x6E, 5, 0))
    bad = certs.chain_buffer(ca.issue_leaf(cec.generate_private_key(cec.SECP384R1()).public_key(), "a:b:c"),
                             hashes.SHA384)
    rsp = bytes.fromhex(send(E.set_certificate_request(0x13, 6, bad).hex()))
    assert rsp[1:3] == b"\x7f\x05"
    rsp = bytes.fromhex(send("13810000"))
    assert rsp[1] == 0x01 and rsp[3] == 0x21   # DIGESTS: slots 0 and 5
    h = hashes.Hash(hashes.SHA384())
    h.update(buf)
    assert rsp[4 + 48:4 + 96] == h.finalize()
    probe = ("import uspdm, sys, gc\nprint([m for m in ('enroll',) "
             "if ('uspdm.' + m) in sys.modules or hasattr(uspdm, m)])\n"
             "gc.collect(); print(gc.mem_alloc())")
    out = mpy.run(probe).out.split()
    assert out[0] == "[]"
    first = int(out[1]) - int(before)
    # steady state: two more enrolment rounds leave the heap where it was (no module stays)
    for _ in range(2):
        assert bytes.fromhex(send(E.get_csr_request(0x13, ri).hex()))[1] == 0x6D
        assert bytes.fromhex(send(E.set_certificate_request(0x13, 5, buf).hex()))[1] == 0x6E
    out2 = mpy.run(probe).out.split()
    assert out2[0] == "[]"
    again = int(out2[1]) - int(out[1])
    print("MicroPython (wasm) heap after the first GET_CSR + SET_CERTIFICATE: +%d B (interned names); "
          "after two more rounds: %+d B" % (first, again))
    assert again < 1024, (out[1], out2[1])
