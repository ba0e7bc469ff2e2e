"""Issue 11.11: X.509 path validation per RFC 5280 6.1 in the verifier (certs.validate_chain), each
rule checked against the `cryptography` package's own path validator (x509.verification) on the same
chain; the SPDM leaf profile checks stay."""
import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification as V
from cryptography.x509.oid import ExtensionOID, NameOID, ObjectIdentifier

from uspdm_tools import certs

NOW = datetime.datetime.now(datetime.timezone.utc)
DER = serialization.Encoding.DER
LEAF_KEY = ec.generate_private_key(ec.SECP384R1())


def make_ca(name, issuer=None, ikey=None, pathlen=None, ku=True, key_cert_sign=True, extra=()):
    k = ec.generate_private_key(ec.SECP384R1())
    n = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    b = (x509.CertificateBuilder().subject_name(n).issuer_name(issuer.subject if issuer else n)
         .public_key(k.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=True, path_length=pathlen), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False))
    if ku:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, key_cert_sign, True, False, False),
                            critical=True)
    if issuer is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ikey.public_key()), critical=False)
    for ext, crit in extra:
        b = b.add_extension(ext, critical=crit)
    return b.sign(ikey or k, hashes.SHA384()), k


ROOT, ROOT_KEY = make_ca("path root")


def leaf(issuer, ikey, extra=()):
    return certs.issue_leaf(issuer, ikey, LEAF_KEY.public_key(), "acme:widget:1", extra_extensions=extra)


def ours(chain, version=0x13):
    """validate_chain on the SPDM chain buffer of `chain` (root first): None or the ChainError text."""
    buf = certs.chain_buffer([c.public_bytes(DER) for c in chain], hashes.SHA384)
    try:
        certs.validate_chain(buf, 48, hashes.SHA384, "p384", version, ROOT)
    except certs.ChainError as e:
        return str(e)
    return None


def theirs(chain):
    """cryptography's RFC 5280 path validator (webpki CA rules, any leaf extensions permitted):
    None or its error text."""
    v = (V.PolicyBuilder().store(V.Store([ROOT])).time(NOW)
         .extension_policies(ca_policy=V.ExtensionPolicy.webpki_defaults_ca(),
                             ee_policy=V.ExtensionPolicy.permit_all())
         .build_client_verifier())
    try:
        v.verify(chain[-1], chain[1:-1])
    except V.VerificationError as e:
        return str(e)
    return None


def test_good_chains_pass_both():
    i1, k1 = make_ca("int 1", ROOT, ROOT_KEY, pathlen=1)
    i2, k2 = make_ca("int 2", i1, k1, pathlen=0)
    for chain in ([ROOT, leaf(ROOT, ROOT_KEY)], [ROOT, i1, leaf(i1, k1)], [ROOT, i1, i2, leaf(i2, k2)]):
        assert ours(chain) is None
        assert theirs(chain) is None


def test_path_len_constraint():
    i1, k1 = make_ca("int 1", ROOT, ROOT_KEY, pathlen=0)
    i2, k2 = make_ca("int 2", i1, k1)
    chain = [ROOT, i1, i2, leaf(i2, k2)]
    err = ours(chain)
    assert err and "pathLenConstraint 0" in err and "int 1" in err
    assert theirs(chain) and "path length" in theirs(chain)
    # on the root itself
    root0, rk0 = make_ca("root pathlen 0", pathlen=0)
    i3, k3 = make_ca("int 3", root0, rk0)
    buf = certs.chain_buffer([c.public_bytes(DER) for c in (root0, i3, leaf(i3, k3))], hashes.SHA384)
    with pytest.raises(certs.ChainError, match="pathLenConstraint 0"):
        certs.validate_chain(buf, 48, hashes.SHA384, "p384", 0x13, root0)
    # a leaf directly under a pathLen 0 CA is fine
    assert ours([ROOT, i1, leaf(i1, k1)]) is None


def test_issuer_without_key_cert_sign():
    i1, k1 = make_ca("no keyCertSign", ROOT, ROOT_KEY, key_cert_sign=False)
    chain = [ROOT, i1, leaf(i1, k1)]
    err = ours(chain)
    assert err and "keyCertSign" in err and "no keyCertSign" in err
    assert theirs(chain)


def test_unknown_critical_extension_in_leaf():
    odd = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    chain = [ROOT, leaf(ROOT, ROOT_KEY, extra=[(odd, True)])]
    err = ours(chain)
    assert err and "unsupported critical extension 1.3.6.1.4.1.99999.1" in err
    assert theirs(chain) and "critical" in theirs(chain)
    # the same extension, not critical, is ignored (RFC 5280 4.2)
    assert ours([ROOT, leaf(ROOT, ROOT_KEY, extra=[(odd, False)])]) is None
    # a known extension we do not process (nameConstraints), critical, is refused too
    nc = x509.NameConstraints(permitted_subtrees=[x509.DNSName("example.com")], excluded_subtrees=None)
    err = ours([ROOT, leaf(ROOT, ROOT_KEY, extra=[(nc, True)])])
    assert err and "nameConstraints" in err


def test_unknown_critical_extension_in_intermediate():
    odd = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.99999.2"), b"\x05\x00")
    i1, k1 = make_ca("odd int", ROOT, ROOT_KEY, extra=[(odd, True)])
    chain = [ROOT, i1, leaf(i1, k1)]
    assert "unsupported critical extension" in (ours(chain) or "")
    assert theirs(chain)


def test_leaf_profile_checks_stay():
    # SPDM 1.3 leaf without basicConstraints: still refused by the profile check
    lf = certs.issue_leaf(ROOT, ROOT_KEY, LEAF_KEY.public_key(), "acme:widget:1", basic_constraints=False)
    assert "basicConstraints" in (ours([ROOT, lf]) or "")
    assert ours([ROOT, lf], version=0x12) is None
    # a leaf without digitalSignature is refused although RFC 5280 alone accepts it
    lf = certs.issue_leaf(ROOT, ROOT_KEY, LEAF_KEY.public_key(), "acme:widget:1", key_usage=False)
    assert "keyUsage" in (ours([ROOT, lf]) or "")
    assert ExtensionOID.KEY_USAGE in certs.PROCESSED_EXTENSIONS
