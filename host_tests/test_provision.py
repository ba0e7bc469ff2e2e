"""Lab PKI and `uspdm provision` (CPython): certificates parsed back with `cryptography`,
profile bytes checked at the DER level, provisioning into a simulated board's flash."""
import argparse
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from uspdm_tools import certs, provision

# DER of the basicConstraints extension with an empty value SEQUENCE (cA FALSE omitted):
#   SEQUENCE { OID 2.5.29.19, OCTET STRING { SEQUENCE {} } }
BC_EMPTY_EXT = bytes.fromhex("30090603551d1304023000")
OID_RESP_AUTH = "1.3.6.1.4.1.412.274.3"
OID_DEVICE_INFO = "1.3.6.1.4.1.412.274.1"


@pytest.fixture
def ca(tmp_path):
    c = certs.LabCA(str(tmp_path / "ca"))
    assert c.load_or_create() is True
    return c


def test_ca_files_and_permissions(ca, tmp_path):
    d = tmp_path / "ca"
    for n in ("ca.cert.pem", "ca.cert.der", "ca.key.pem"):
        assert (d / n).exists(), n
    assert stat.S_IMODE(os.stat(d / "ca.key.pem").st_mode) == 0o600
    pem = x509.load_pem_x509_certificate((d / "ca.cert.pem").read_bytes())
    der = x509.load_der_x509_certificate((d / "ca.cert.der").read_bytes())
    assert pem == der
    assert pem.subject == pem.issuer
    assert pem.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    key = serialization.load_pem_private_key((d / "ca.key.pem").read_bytes(), None)
    assert key.public_key().public_numbers() == pem.public_key().public_numbers()
    pem.verify_directly_issued_by(pem)
    # reloading reuses it
    again = certs.LabCA(str(d))
    assert again.load_or_create() is False
    assert again.root_cert == pem


@pytest.mark.parametrize("alg,curve", [("p384", ec.SECP384R1), ("p256", ec.SECP256R1)])
@pytest.mark.parametrize("intermediate", [False, True])
def test_leaf_profile(ca, alg, curve, intermediate):
    key = ec.generate_private_key(curve())
    chain = ca.issue_leaf(key.public_key(), "acme:widget:0042", use_intermediate=intermediate)
    assert len(chain) == (3 if intermediate else 2)
    cs = [x509.load_der_x509_certificate(d) for d in chain]
    assert chain[0] == ca.root_cert.public_bytes(serialization.Encoding.DER)
    for i in range(1, len(cs)):
        cs[i].verify_directly_issued_by(cs[i - 1])
    leaf, leaf_der = cs[-1], chain[-1]
    assert leaf.version == x509.Version.v3
    assert isinstance(leaf.public_key().curve, curve)
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
    ku = leaf.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE)
    assert ku.critical and ku.value.digital_signature
    assert not ku.value.key_cert_sign
    bc = leaf.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS)
    assert bc.value.ca is False and bc.value.path_length is None
    # byte level: the extension value is exactly 30 00
    assert BC_EMPTY_EXT in leaf_der
    eku = leaf.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value
    assert [o.dotted_string for o in eku] == [OID_RESP_AUTH]
    san = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    others = [g for g in san if isinstance(g, x509.OtherName)]
    assert len(others) == 1 and others[0].type_id.dotted_string == OID_DEVICE_INFO
    assert others[0].value == b"\x0c\x10acme:widget:0042"  # UTF8String
    if intermediate:
        bci = cs[1].extensions.get_extension_for_class(x509.BasicConstraints).value
        assert bci.ca and bci.path_length == 0
        assert stat.S_IMODE(os.stat(os.path.join(ca.dir, "intermediate.key.pem")).st_mode) == 0o600


def test_chain_buffer_and_validation(ca):
    key = ec.generate_private_key(ec.SECP384R1())
    chain = ca.issue_leaf(key.public_key(), "acme:widget:1")
    buf = certs.chain_buffer(chain, hashes.SHA384)
    assert int.from_bytes(buf[:2], "little") == len(buf)
    h = hashes.Hash(hashes.SHA384())
    h.update(chain[0])
    assert buf[4:52] == h.finalize()
    info = certs.validate_chain(buf, 48, hashes.SHA384, "p384", 0x13, ca.root_cert)
    assert info["device_info"] == "acme:widget:1"


def _mutated_chain(ca, **kw):
    key = ec.generate_private_key(ec.SECP384R1())
    root = ca.root_cert.public_bytes(serialization.Encoding.DER)
    leaf = certs.issue_leaf(ca.root_cert, ca.root_key, key.public_key(), "acme:widget:2", **kw)
    return certs.chain_buffer([root, leaf.public_bytes(serialization.Encoding.DER)], hashes.SHA384)


def test_validation_failures(ca, tmp_path):
    foreign = certs.LabCA(str(tmp_path / "other"))
    foreign.load_or_create()
    good = _mutated_chain(ca)
    with pytest.raises(certs.ChainError, match="trusted root"):
        certs.validate_chain(good, 48, hashes.SHA384, "p384", 0x13, foreign.root_cert)
    # wrong key type for the negotiated algorithm
    with pytest.raises(certs.ChainError, match="secp256r1"):
        certs.validate_chain(good, 48, hashes.SHA384, "p256", 0x13, ca.root_cert)
    # requester-only EKU
    bad = _mutated_chain(ca, eku=(certs.OID_EKU_REQUESTER,))
    with pytest.raises(certs.ChainError, match="requester-authentication only"):
        certs.validate_chain(bad, 48, hashes.SHA384, "p384", 0x12, ca.root_cert)
    # no EKU at all is fine
    certs.validate_chain(_mutated_chain(ca, eku=()), 48, hashes.SHA384, "p384", 0x13, ca.root_cert)
    # missing basicConstraints: fine for 1.2, not for 1.3
    nobc = _mutated_chain(ca, basic_constraints=False)
    certs.validate_chain(nobc, 48, hashes.SHA384, "p384", 0x12, ca.root_cert)
    with pytest.raises(certs.ChainError, match="basicConstraints"):
        certs.validate_chain(nobc, 48, hashes.SHA384, "p384", 0x13, ca.root_cert)
    # no keyUsage
    with pytest.raises(certs.ChainError, match="keyUsage"):
        certs.validate_chain(_mutated_chain(ca, key_usage=False), 48, hashes.SHA384, "p384", 0x13, ca.root_cert)
    # tampered leaf (one byte of its signature)
    t = bytearray(good)
    t[-5] ^= 1
    with pytest.raises(certs.ChainError, match="not signed"):
        certs.validate_chain(bytes(t), 48, hashes.SHA384, "p384", 0x13, ca.root_cert)
    # root hash, length field, digest
    t = bytearray(good)
    t[10] ^= 1
    with pytest.raises(certs.ChainError, match="RootHash"):
        certs.validate_chain(bytes(t), 48, hashes.SHA384, "p384", 0x13, ca.root_cert)
    with pytest.raises(certs.ChainError, match="Length"):
        certs.validate_chain(good + b"\x00", 48, hashes.SHA384, "p384", 0x13, ca.root_cert)
    with pytest.raises(certs.ChainError, match="DIGESTS"):
        certs.validate_chain(good, 48, hashes.SHA384, "p384", 0x13, ca.root_cert, digest=b"\x00" * 48)


def test_bc_encoding_check_is_byte_level(ca):
    """A leaf whose basicConstraints says cA FALSE explicitly (30 03 01 01 00, not DER) fails 1.3."""
    key = ec.generate_private_key(ec.SECP384R1())
    leaf = certs.issue_leaf(ca.root_cert, ca.root_key, key.public_key(), "acme:w:3", basic_constraints=False)
    # add an explicit-FALSE basicConstraints as an unrecognized extension with raw bytes
    b = (x509.CertificateBuilder().subject_name(leaf.subject).issuer_name(leaf.issuer)
         .public_key(key.public_key()).serial_number(leaf.serial_number)
         .not_valid_before(leaf.not_valid_before_utc).not_valid_after(leaf.not_valid_after_utc))
    for e in leaf.extensions:
        b = b.add_extension(e.value, e.critical)
    b = b.add_extension(x509.UnrecognizedExtension(ExtensionOID.BASIC_CONSTRAINTS, b"\x30\x03\x01\x01\x00"), False)
    odd = b.sign(ca.root_key, hashes.SHA384())
    buf = certs.chain_buffer([ca.root_cert.public_bytes(serialization.Encoding.DER),
                              odd.public_bytes(serialization.Encoding.DER)], hashes.SHA384)
    with pytest.raises(certs.ChainError, match="30 00"):
        certs.validate_chain(buf, 48, hashes.SHA384, "p384", 0x13, ca.root_cert)


# ------------------------------------------------------------ provisioning (sim flash)

def _args(flash, ca_dir, **kw):
    d = dict(port=None, flash=str(flash), ca_dir=str(ca_dir), slot=0, alg="all", intermediate=False,
             subject=None, device_info=None, new_key=False)
    d.update(kw)
    return argparse.Namespace(**d)


def _leaf_of(path):
    der = open(path, "rb").read()
    ders = certs.der_split(der)
    return [x509.load_der_x509_certificate(d) for d in ders], ders


def _scalar_pub(path, curve):
    d = int.from_bytes(open(path, "rb").read(), "big")
    return ec.derive_private_key(d, curve()).public_key().public_numbers()


def test_provision_sim_flash(tmp_path, capsys):
    flash, ca_dir = tmp_path / "flash", tmp_path / "ca"
    assert provision.cmd_provision(_args(flash, ca_dir, intermediate=True)) == 0
    out = capsys.readouterr()
    assert "ca.cert.pem" in out.err and "ca.cert.pem" in out.out
    root = x509.load_der_x509_certificate((ca_dir / "ca.cert.der").read_bytes())
    for alg, curve in (("p384", ec.SECP384R1), ("p256", ec.SECP256R1)):
        cs, ders = _leaf_of(flash / "uspdm" / ("slot0_%s.der" % alg))
        assert len(cs) == 3 and cs[0] == root
        cs[1].verify_directly_issued_by(cs[0])
        cs[2].verify_directly_issued_by(cs[1])
        # the leaf certifies the key the board generated and stored (checked here from the sim flash)
        assert cs[2].public_key().public_numbers() == _scalar_pub(flash / "uspdm" / ("key_%s.bin" % alg), curve)
        assert BC_EMPTY_EXT in ders[2]
        info = certs.validate_chain(
            certs.chain_buffer(ders, hashes.SHA384), 48, hashes.SHA384, alg, 0x13, root)
        assert info["device_info"].startswith("uspdm:sim:")
    key384 = (flash / "uspdm" / "key_p384.bin").read_bytes()

    # idempotent: same key, new chain into another slot
    assert provision.cmd_provision(_args(flash, ca_dir, alg="p384", slot=3, device_info="acme:w:9")) == 0
    assert (flash / "uspdm" / "key_p384.bin").read_bytes() == key384
    cs, _ = _leaf_of(flash / "uspdm" / "slot3_p384.der")
    assert len(cs) == 2 and certs.device_info(cs[1]) == "acme:w:9"
    assert "reused" in capsys.readouterr().out

    # --new-key replaces it
    assert provision.cmd_provision(_args(flash, ca_dir, alg="p384", new_key=True)) == 0
    assert (flash / "uspdm" / "key_p384.bin").read_bytes() != key384
    cs, _ = _leaf_of(flash / "uspdm" / "slot0_p384.der")
    assert cs[-1].public_key().public_numbers() == _scalar_pub(flash / "uspdm" / "key_p384.bin", ec.SECP384R1)


def _cli(*args, env=None, timeout=120):
    import subprocess
    import sys as _sys

    p = subprocess.run([_sys.executable, "-m", "uspdm_tools.cli"] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout, env=env)
    return p.returncode, p.stdout, p.stderr


def _last_line(err):
    assert "Traceback" not in err, err
    return [l for l in err.splitlines() if l.strip()][-1]


def test_provision_unreachable_port(tmp_path):
    rc, out, err = _cli("provision", "--port", "/dev/does-not-exist-uspdm", "--ca-dir", tmp_path / "ca")
    assert rc == provision.EXIT_UNREACHABLE
    assert "no such port /dev/does-not-exist-uspdm" in _last_line(err)
    assert not (tmp_path / "ca").exists()   # nothing created for a board that is not there


def test_provision_port_on_the_simulators_pty(tmp_path):
    import os as _os

    master, slave = _os.openpty()
    try:
        rc, out, err = _cli("provision", "--port", _os.ttyname(slave), "--ca-dir", tmp_path / "ca")
    finally:
        _os.close(master)
        _os.close(slave)
    assert rc == provision.EXIT_USAGE
    assert "pseudo-terminal" in _last_line(err) and "--flash" in _last_line(err)


FAKE_BOARDS = {
    # what mpremote does on a port: the exit code and the one line we print
    "silent": ("import time; time.sleep(60)", 2, "no answer from"),
    "firmware": ("sys.stderr.write('mpremote: could not enter raw repl\\n'); sys.exit(1)", 2, "BOOTSEL"),
    "busy": ("sys.stderr.write('mpremote: failed to access PORT (it may be in use by another program)\\n'); "
             "sys.exit(1)", 2, "in use by another program"),
    "bare": ("print('USPDM-PROBE micropython'); sys.stderr.write('Traceback (most recent call last):\\n"
             "ImportError: no module named \\'board\\'\\n'); sys.exit(1)", 3, "uspdm deploy"),
}


@pytest.mark.parametrize("kind", sorted(FAKE_BOARDS))
def test_provision_port_problems_are_one_bounded_line(tmp_path, kind):
    import os as _os
    import sys as _sys
    import time as _time

    body, code, words = FAKE_BOARDS[kind]
    fake = tmp_path / "mpremote"
    fake.write_text("#!%s\nimport sys\n%s\n" % (_sys.executable, body))
    fake.chmod(0o755)
    port = tmp_path / "ttyFAKE0"
    port.write_text("")
    env = dict(_os.environ, USPDM_MPREMOTE=str(fake))
    t0 = _time.monotonic()
    rc, out, err = _cli("provision", "--port", port, "--ca-dir", tmp_path / "ca", "--timeout", "2", env=env)
    assert _time.monotonic() - t0 < 30
    assert rc == code, err
    assert words in _last_line(err)
    assert not (tmp_path / "ca").exists()


FAKE_MPREMOTE = """#!%s
# stands in for `mpremote connect PORT exec CODE`: runs CODE on the simulated board whose flash is PORT
import sys
sys.path.insert(0, %r)
from uspdm_tools.mpy import MicroPython, MicroPythonError
assert sys.argv[1] == "connect" and sys.argv[3] == "exec", sys.argv
with MicroPython(flash=sys.argv[2], board="sim") as mp:
    try:
        r = mp.run(sys.argv[4])
    except MicroPythonError as e:
        sys.stderr.write(e.traceback)
        sys.exit(1)
    print(r.out)
"""


def test_provision_through_mpremote_command(tmp_path, capsys):
    """The --port path builds `mpremote connect PORT exec CODE` and parses its output."""
    import sys as _sys
    from uspdm_tools.paths import TOOLS_DIR
    fake = tmp_path / "mpremote"
    fake.write_text(FAKE_MPREMOTE % (_sys.executable, TOOLS_DIR))
    fake.chmod(0o755)
    flash = tmp_path / "flash"
    flash.mkdir()
    dev = provision.MpremoteDevice(str(flash), exe=str(fake))
    a = argparse.Namespace(port=str(flash), flash=None, ca_dir=str(tmp_path / "ca"), slot=2, alg="p256",
                           intermediate=False, subject="bench unit 7", device_info=None, new_key=False)
    assert provision.cmd_provision(a, device=dev) == 0
    cs, _ = _leaf_of(flash / "uspdm" / "slot2_p256.der")
    assert cs[-1].subject.rfc4514_string().startswith("CN=bench unit 7")
    assert cs[-1].public_key().public_numbers() == _scalar_pub(flash / "uspdm" / "key_p256.bin", ec.SECP256R1)
    # board-side failure is reported as such (exit 3)
    bad = provision.MpremoteDevice(str(tmp_path / "missing-flash"), exe=str(fake))
    bad.run = lambda code: (_ for _ in ()).throw(provision.DeviceError("boom"))
    assert provision.cmd_provision(a, device=bad) == provision.EXIT_DEVICE


def test_provision_psk_into_sim_flash(tmp_path):
    flash, ca_dir = tmp_path / "flash", tmp_path / "ca"
    pskf = tmp_path / "psk.bin"
    pskf.write_bytes(bytes(range(32)))
    assert provision.cmd_provision(_args(flash, ca_dir, alg="p256", psk_hint="lab1", psk_file=str(pskf))) == 0
    # stored where the board's session manager looks it up: uspdm/psk_<hint hex>.bin
    assert (flash / "uspdm" / ("psk_%s.bin" % b"lab1".hex())).read_bytes() == bytes(range(32))
    # without a file a random PSK is made and its host copy kept (mode 0600) in the CA dir
    assert provision.cmd_provision(_args(flash, ca_dir, alg="p256", psk_hint="lab2")) == 0
    host = ca_dir / "psk-lab2.bin"
    assert (host.stat().st_mode & 0o777) == 0o600
    assert (flash / "uspdm" / ("psk_%s.bin" % b"lab2".hex())).read_bytes() == host.read_bytes()
    assert len(host.read_bytes()) == 32
    # a file without a hint is a usage error
    assert provision.cmd_provision(_args(flash, ca_dir, psk_file=str(pskf))) == 1


class _FailAt:
    """A SimFlashDevice that fails at the first snippet containing `marker`."""

    def __init__(self, flash, marker):
        self.dev = provision.SimFlashDevice(str(flash))
        self.where = self.dev.where
        self.marker = marker

    def run(self, code):
        if self.marker in code:
            raise provision.DeviceError("the board stopped answering (test)")
        return self.dev.run(code)

    def close(self):
        self.dev.close()


@pytest.mark.parametrize("marker", ["print('STAGED'",
                                    "os.rename"])
def test_provision_is_atomic(tmp_path, marker):
    """A failure after the new key was made (staging a chain, or the switch itself) leaves
    the old key and chain in place, and nothing staged behind."""
    flash, ca_dir = tmp_path / "flash", tmp_path / "ca"
    assert provision.cmd_provision(_args(flash, ca_dir)) == 0
    before = {p.name: p.read_bytes() for p in (flash / "uspdm").iterdir()}
    dev = _FailAt(flash, marker)
    assert provision.cmd_provision(_args(flash, ca_dir, new_key=True), device=dev) == provision.EXIT_DEVICE
    after = {p.name: p.read_bytes() for p in (flash / "uspdm").iterdir()}
    assert after == before
    # and the next run completes the change
    assert provision.cmd_provision(_args(flash, ca_dir, new_key=True)) == 0
    names = sorted(p.name for p in (flash / "uspdm").iterdir())
    assert not [n for n in names if n.endswith((".new", ".tmp"))]
    assert (flash / "uspdm" / "key_p384.bin").read_bytes() != before["key_p384.bin"]
    for alg, curve in (("p384", ec.SECP384R1), ("p256", ec.SECP256R1)):
        cs, _ = _leaf_of(flash / "uspdm" / ("slot0_%s.der" % alg))
        assert cs[-1].public_key().public_numbers() == _scalar_pub(flash / "uspdm" / ("key_%s.bin" % alg), curve)


def test_one_board_identity_for_every_algorithm(tmp_path):
    flash, ca_dir = tmp_path / "flash", tmp_path / "ca"
    assert provision.cmd_provision(_args(flash, ca_dir)) == 0
    infos = {certs.device_info(_leaf_of(flash / "uspdm" / ("slot0_%s.der" % a))[0][-1]) for a in ("p384", "p256")}
    assert len(infos) == 1 and infos.pop().startswith("uspdm:sim:")
    # and it survives a new key
    assert provision.cmd_provision(_args(flash, ca_dir, alg="p256", new_key=True)) == 0
    assert certs.device_info(_leaf_of(flash / "uspdm" / "slot0_p256.der")[0][-1]) == \
        certs.device_info(_leaf_of(flash / "uspdm" / "slot0_p384.der")[0][-1])


@pytest.mark.parametrize("damage", ["key_truncated", "key_zero", "key_ff", "chain_truncated"])
def test_damaged_identity_reported_at_boot_and_by_attest(request, tmp_path, damage):
    if request.config.getoption("--port"):
        pytest.skip("simulator only")
    from uspdm_tools.simproc import SimProcess

    flash, ca_dir = tmp_path / "flash", tmp_path / "ca"
    assert provision.cmd_provision(_args(flash, ca_dir, alg="p384")) == 0
    key, chain = flash / "uspdm" / "key_p384.bin", flash / "uspdm" / "slot0_p384.der"
    if damage == "key_truncated":
        key.write_bytes(key.read_bytes()[:20])
    elif damage == "key_zero":
        key.write_bytes(bytes(48))
    elif damage == "key_ff":
        key.write_bytes(b"\xff" * 48)
    else:
        chain.write_bytes(chain.read_bytes()[:-30])
    with SimProcess(flash=str(flash)) as sim:
        rc, out, err = _cli("attest", "--port", sim.port, "--root", ca_dir / "ca.cert.pem", "--alg", "p384")
        log = sim.log_text()
    assert "spdm: identity problem: uspdm/%s" % ("slot0_p384.der" if damage.startswith("chain") else
                                                 "key_p384.bin") in log
    assert "identity provisioned for nothing" in log
    assert rc == 3 and "not provisioned" in out and "Traceback" not in out + err
