"""Lab PKI for uspdm: root CA, optional intermediate, device leaf with the SPDM profile,
and validation of SPDM certificate chains (CPython, `cryptography`).

SPDM leaf profile (DSP0274 / libspdm's checks): X.509 v3; ECDSA key of the
negotiated curve; keyUsage digitalSignature (critical); basicConstraints
present and encoded `30 00` (cA FALSE omitted as the DER default; required
for SPDM 1.3); EKU id-DMTF-eku-responder-auth (1.3.6.1.4.1.412.274.3); a
subjectAltName otherName id-DMTF-device-info (1.3.6.1.4.1.412.274.1) with a
"vendor:model:serial" UTF8String.
"""
import datetime
import os
import stat
import struct

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

OID_DEVICE_INFO = ObjectIdentifier("1.3.6.1.4.1.412.274.1")
OID_HARDWARE_IDENTITY = ObjectIdentifier("1.3.6.1.4.1.412.274.2")
OID_EKU_RESPONDER = ObjectIdentifier("1.3.6.1.4.1.412.274.3")
OID_EKU_REQUESTER = ObjectIdentifier("1.3.6.1.4.1.412.274.4")

CURVES = {"p384": ec.SECP384R1, "p256": ec.SECP256R1}
SIG_HASH = {"p384": hashes.SHA384, "p256": hashes.SHA256}
COORD = {"p384": 48, "p256": 32}

BASIC_CONSTRAINTS_OID_DER = bytes.fromhex("0603551d13")


class ChainError(Exception):
    """The certificate chain is malformed, untrusted or violates the SPDM profile."""


# ------------------------------------------------------------------ CA dir

def default_ca_dir():
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "uspdm", "ca")


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _write(path, data, private=False):
    tmp = path + ".tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(tmp, flags, 0o600 if private else 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    if private:
        os.chmod(tmp, stat.S_IRUSR | stat.S_IWUSR)
    os.replace(tmp, path)


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class LabCA:
    """Root CA (and optional intermediate) kept in a directory:
    ca.cert.pem, ca.cert.der, ca.key.pem (0600); intermediate.cert.pem/.der, intermediate.key.pem."""

    def __init__(self, ca_dir):
        self.dir = ca_dir
        self.root_cert = self.root_key = None
        self.int_cert = self.int_key = None

    @property
    def root_pem_path(self):
        return os.path.join(self.dir, "ca.cert.pem")

    @property
    def root_der_path(self):
        return os.path.join(self.dir, "ca.cert.der")

    @property
    def root_key_path(self):
        return os.path.join(self.dir, "ca.key.pem")

    def exists(self):
        return os.path.exists(self.root_pem_path) and os.path.exists(self.root_key_path)

    def load_or_create(self, subject="uspdm lab root CA"):
        """Returns True when a new CA was created."""
        if self.exists():
            self.load()
            return False
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        key = ec.generate_private_key(ec.SECP384R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "uspdm lab"),
                          x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        now = _now()
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=365 * 30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA384()))
        _write(self.root_key_path, _key_pem(key), private=True)
        _write(self.root_pem_path, cert.public_bytes(serialization.Encoding.PEM))
        _write(self.root_der_path, cert.public_bytes(serialization.Encoding.DER))
        self.root_cert, self.root_key = cert, key
        return True

    def load(self):
        with open(self.root_pem_path, "rb") as f:
            self.root_cert = x509.load_pem_x509_certificate(f.read())
        with open(self.root_key_path, "rb") as f:
            self.root_key = serialization.load_pem_private_key(f.read(), None)
        ip = os.path.join(self.dir, "intermediate.cert.pem")
        ik = os.path.join(self.dir, "intermediate.key.pem")
        if os.path.exists(ip) and os.path.exists(ik):
            with open(ip, "rb") as f:
                self.int_cert = x509.load_pem_x509_certificate(f.read())
            with open(ik, "rb") as f:
                self.int_key = serialization.load_pem_private_key(f.read(), None)

    def ensure_intermediate(self, subject="uspdm lab intermediate CA"):
        """Returns True when a new intermediate was created."""
        if self.int_cert is not None:
            return False
        key = ec.generate_private_key(ec.SECP384R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "uspdm lab"),
                          x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        now = _now()
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(self.root_cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=365 * 20))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.root_key.public_key()),
                               critical=False)
                .sign(self.root_key, hashes.SHA384()))
        _write(os.path.join(self.dir, "intermediate.key.pem"), _key_pem(key), private=True)
        _write(os.path.join(self.dir, "intermediate.cert.pem"), cert.public_bytes(serialization.Encoding.PEM))
        _write(os.path.join(self.dir, "intermediate.cert.der"), cert.public_bytes(serialization.Encoding.DER))
        self.int_cert, self.int_key = cert, key
        return True

    def issue_leaf(self, public_key, device_info, subject=None, use_intermediate=False, days=365 * 10,
                   eku=(OID_EKU_RESPONDER,), basic_constraints=True):
        """Issue a device leaf for `public_key` (cryptography EC public key) with the SPDM profile;
        return the chain as a list of DER certificates, root first."""
        if use_intermediate:
            self.ensure_intermediate()
            issuer_cert, issuer_key = self.int_cert, self.int_key
        else:
            issuer_cert, issuer_key = self.root_cert, self.root_key
        leaf = issue_leaf(issuer_cert, issuer_key, public_key, device_info, subject=subject, days=days,
                          eku=eku, basic_constraints=basic_constraints)
        chain = [self.root_cert.public_bytes(serialization.Encoding.DER)]
        if use_intermediate:
            chain.append(self.int_cert.public_bytes(serialization.Encoding.DER))
        chain.append(leaf.public_bytes(serialization.Encoding.DER))
        return chain


def _utf8_der(s):
    b = s.encode("utf-8")
    if len(b) < 0x80:
        return b"\x0c" + bytes((len(b),)) + b
    if len(b) < 0x100:
        return b"\x0c\x81" + bytes((len(b),)) + b
    return b"\x0c\x82" + struct.pack(">H", len(b)) + b


def issue_leaf(issuer_cert, issuer_key, public_key, device_info, subject=None, days=365 * 10,
               eku=(OID_EKU_RESPONDER,), basic_constraints=True, key_usage=True, extra_extensions=()):
    """extra_extensions: (extension value, critical) pairs added as they are (tests)."""
    cn = subject or ("uspdm device " + device_info.split(":")[-1])
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "uspdm lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = _now()
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_cert.subject).public_key(public_key)
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(days=1))
         .not_valid_after(now + datetime.timedelta(days=days)))
    if key_usage:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
    if basic_constraints:
        # cA FALSE is the DER default and is omitted: the extension value encodes as 30 00
        b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    b = b.add_extension(x509.SubjectAlternativeName([x509.OtherName(OID_DEVICE_INFO, _utf8_der(device_info))]),
                        critical=False)
    b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    for ext, crit in extra_extensions:
        b = b.add_extension(ext, critical=crit)
    return b.sign(issuer_key, hashes.SHA384() if isinstance(issuer_key.curve, ec.SECP384R1) else hashes.SHA256())


def public_key_from_xy(alg, xy):
    """X||Y (big-endian coordinates) -> cryptography EC public key."""
    if len(xy) != 2 * COORD[alg]:
        raise ValueError("public key for %s must be %d bytes, got %d" % (alg, 2 * COORD[alg], len(xy)))
    return ec.EllipticCurvePublicKey.from_encoded_point(CURVES[alg](), b"\x04" + bytes(xy))


def load_cert(path_or_bytes):
    """PEM or DER certificate from a path or bytes."""
    data = path_or_bytes
    if isinstance(path_or_bytes, str):
        with open(path_or_bytes, "rb") as f:
            data = f.read()
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


# ------------------------------------------------------------ DER walking

def der_read(buf, o):
    """(tag, value_start, value_end) of the TLV at o."""
    if o + 2 > len(buf):
        raise ChainError("truncated DER")
    tag = buf[o]
    ln = buf[o + 1]
    o += 2
    if ln & 0x80:
        n = ln & 0x7F
        if n == 0 or n > 3 or o + n > len(buf):
            raise ChainError("bad DER length")
        ln = int.from_bytes(buf[o:o + n], "big")
        o += n
    if o + ln > len(buf):
        raise ChainError("DER value overruns its container")
    return tag, o, o + ln


def der_split(buf):
    """Split concatenated DER structures (certificates) -> list of bytes."""
    out = []
    o = 0
    while o < len(buf):
        tag, s, e = der_read(buf, o)
        if tag != 0x30:
            raise ChainError("certificate %d is not a DER SEQUENCE" % len(out))
        out.append(bytes(buf[o:e]))
        o = e
    return out


def raw_extensions(cert_der):
    """{oid_der_bytes: (critical, raw extnValue bytes)} read from the certificate DER itself."""
    _, s, e = der_read(cert_der, 0)          # Certificate
    _, ts, te = der_read(cert_der, s)        # TBSCertificate
    o = ts
    out = {}
    while o < te:
        tag, vs, ve = der_read(cert_der, o)
        if tag == 0xA3:
            _, ss, se = der_read(cert_der, vs)  # Extensions SEQUENCE
            p = ss
            while p < se:
                _, es, ee = der_read(cert_der, p)
                q = es
                t, os_, oe = der_read(cert_der, q)
                oid = bytes(cert_der[q:oe])
                q = oe
                crit = False
                t, bs, be = der_read(cert_der, q)
                if t == 0x01:
                    crit = cert_der[bs] != 0
                    q = be
                    t, bs, be = der_read(cert_der, q)
                if t != 0x04:
                    raise ChainError("extension without OCTET STRING")
                out[oid] = (crit, bytes(cert_der[bs:be]))
                p = ee
        o = ve
    return out


def tbs_version(cert_der):
    _, s, _ = der_read(cert_der, 0)
    _, ts, _ = der_read(cert_der, s)
    tag, vs, ve = der_read(cert_der, ts)
    if tag != 0xA0:
        return 1
    _, is_, ie = der_read(cert_der, vs)
    return int.from_bytes(cert_der[is_:ie], "big") + 1


# ------------------------------------------------------------ chain buffer

def chain_buffer(ders, hash_algo):
    """SPDM chain buffer: Length u16 | Reserved u16 | RootHash | DER certs root first."""
    h = hashes.Hash(hash_algo())
    h.update(ders[0])
    body = h.finalize() + b"".join(ders)
    total = 4 + len(body)
    return struct.pack("<HH", total, 0) + body


def split_chain_buffer(buf, hash_size):
    """-> (root_hash, [der...]) ; raises ChainError on a malformed buffer."""
    if len(buf) < 4 + hash_size:
        raise ChainError("chain buffer shorter than its header")
    length, reserved = struct.unpack_from("<HH", buf, 0)
    if length != len(buf):
        raise ChainError("chain buffer Length field %d but %d bytes retrieved" % (length, len(buf)))
    if reserved != 0:
        raise ChainError("chain buffer Reserved field is not zero")
    root_hash = bytes(buf[4:4 + hash_size])
    ders = der_split(buf[4 + hash_size:])
    if not ders:
        raise ChainError("chain buffer holds no certificate")
    return root_hash, ders


# ------------------------------------------------------------ validation

def _name(cert):
    try:
        return cert.subject.rfc4514_string()
    except Exception:
        return "?"


def fingerprint(cert):
    """SHA-256 fingerprint, in full (two lab CAs share their subject name:
    only the fingerprint tells them apart, so it is never shortened)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def check_leaf_profile(cert, cert_der, alg, version, requester=False):
    """The SPDM leaf profile as libspdm checks it. Returns a list of notes; raises ChainError."""
    notes = []
    if tbs_version(cert_der) != 3:
        raise ChainError("leaf is not an X.509 v3 certificate")
    pk = cert.public_key()
    if not isinstance(pk, ec.EllipticCurvePublicKey) or not isinstance(pk.curve, CURVES[alg]):
        raise ChainError("leaf key is not %s (the negotiated algorithm)" % CURVES[alg].name)
    exts = raw_extensions(cert_der)
    bc = exts.get(BASIC_CONSTRAINTS_OID_DER)
    if version >= 0x13:
        if bc is None:
            raise ChainError("SPDM 1.3 leaf lacks basicConstraints")
        if bc[1] != b"\x30\x00":
            raise ChainError("SPDM 1.3 leaf basicConstraints is encoded %s, expected 30 00" % bc[1].hex())
    try:
        cert.extensions
    except ValueError as e:
        raise ChainError("leaf extensions are not valid DER: %s" % e)
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise ChainError("leaf has no keyUsage extension")
    if not ku.digital_signature:
        raise ChainError("leaf keyUsage lacks digitalSignature")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        oids = set(eku)
        mine = OID_EKU_REQUESTER if requester else OID_EKU_RESPONDER
        other = OID_EKU_RESPONDER if requester else OID_EKU_REQUESTER
        if other in oids and mine not in oids:
            raise ChainError("leaf EKU is %s-authentication only" % ("responder" if requester else "requester"))
        notes.append("EKU: " + ", ".join(o.dotted_string for o in eku))
    except x509.ExtensionNotFound:
        notes.append("no EKU")
    if bc is not None:
        try:
            bcv = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            bcv = None
        if bcv is not None and bcv.ca:
            raise ChainError("leaf basicConstraints says cA TRUE")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for gn in san:
            if isinstance(gn, x509.OtherName) and gn.type_id == OID_DEVICE_INFO:
                try:
                    _, s, e = der_read(gn.value, 0)
                    notes.append("device-info: " + gn.value[s:e].decode("utf-8", "replace"))
                except ChainError:
                    notes.append("device-info: (undecodable)")
    except x509.ExtensionNotFound:
        pass
    return notes


def device_info(cert):
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for gn in san:
        if isinstance(gn, x509.OtherName) and gn.type_id == OID_DEVICE_INFO:
            try:
                _, s, e = der_read(gn.value, 0)
                return gn.value[s:e].decode("utf-8", "replace")
            except ChainError:
                return None
    return None


# extensions this validator processes (RFC 5280 6.1.4 (o), 6.1.5 (f): any other extension marked
# critical makes the path invalid); nameConstraints and the policy extensions are not processed, so
# a critical one is refused rather than ignored
PROCESSED_EXTENSIONS = {
    x509.oid.ExtensionOID.BASIC_CONSTRAINTS, x509.oid.ExtensionOID.KEY_USAGE,
    x509.oid.ExtensionOID.EXTENDED_KEY_USAGE, x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    x509.oid.ExtensionOID.SUBJECT_KEY_IDENTIFIER, x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
}


def _self_issued(c):
    return c.subject == c.issuer


def check_path(certs, first_is_anchor):
    """RFC 5280 6.1 path rules beyond signatures, validity and cA (checked by the caller), for a
    chain root first: pathLenConstraint (6.1.4 (l)/(m)), keyCertSign on every issuer whose
    keyUsage is present (6.1.4 (n)), no unprocessed critical extension (6.1.4 (o), 6.1.5 (f)).
    `first_is_anchor`: certs[0] is the trusted root itself (its own extensions are trust-anchor
    data, its pathLenConstraint is still honoured, as OpenSSL and libspdm's verifiers do)."""
    n = len(certs)
    for i, c in enumerate(certs):
        try:
            exts = c.extensions
        except ValueError as e:
            raise ChainError("certificate %d (%s) has invalid extensions: %s" % (i, _name(c), e))
        if not (i == 0 and first_is_anchor):
            for e in exts:
                if e.critical and e.oid not in PROCESSED_EXTENSIONS:
                    name = getattr(e.oid, "_name", None)
                    label = e.oid.dotted_string if not name or name == "Unknown OID" else "%s (%s)" % (
                        name, e.oid.dotted_string)
                    raise ChainError("certificate %d (%s) has an unsupported critical extension %s"
                                     % (i, _name(c), label))
        if i == n - 1:
            break
        # c issues certs[i + 1]
        try:
            ku = exts.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            ku = None
        if ku is not None and not ku.key_cert_sign:
            raise ChainError("certificate %d (%s) issues certificate %d but its keyUsage lacks keyCertSign"
                             % (i, _name(c), i + 1))
        try:
            bc = exts.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            bc = None
        if bc is not None and bc.path_length is not None:
            # non-self-issued intermediates below c (the leaf does not count)
            below = sum(1 for j in range(i + 1, n - 1) if not _self_issued(certs[j]))
            if below > bc.path_length:
                raise ChainError("certificate %d (%s) has pathLenConstraint %d but %d CA certificate%s follow%s"
                                 % (i, _name(c), bc.path_length, below, "s" if below != 1 else "",
                                    "" if below != 1 else "s"))


def validate_chain(buf, hash_size, hash_algo, alg, version, trusted_root, digest=None, now=None):
    """Validate an SPDM chain buffer. `trusted_root`: cryptography Certificate.
    `digest`: the DIGESTS entry for the slot (checked against Hash(buffer)).
    Returns a dict describing the chain; raises ChainError."""
    h = hashes.Hash(hash_algo())
    h.update(bytes(buf))
    buf_hash = h.finalize()
    if digest is not None and bytes(digest) != buf_hash:
        raise ChainError("DIGESTS entry does not match the hash of the retrieved chain")
    root_hash, ders = split_chain_buffer(buf, hash_size)
    h = hashes.Hash(hash_algo())
    h.update(ders[0])
    if h.finalize() != root_hash:
        raise ChainError("RootHash does not match the hash of the first certificate")
    try:
        certs = [x509.load_der_x509_certificate(d) for d in ders]
    except ValueError as e:
        raise ChainError("unparsable certificate: %s" % e)
    now = now or _now()
    root = certs[0]
    trusted_der = trusted_root.public_bytes(serialization.Encoding.DER)
    if ders[0] != trusted_der:
        # the chain may start below the trusted root (signed by it)
        try:
            root.verify_directly_issued_by(trusted_root)
        except Exception:
            raise ChainError(
                "chain does not lead to the trusted root: the board's chain starts at %s (SHA-256 %s), the "
                "trusted root is %s (SHA-256 %s)%s" % (
                    _name(root), fingerprint(root), _name(trusted_root), fingerprint(trusted_root),
                    "; same name, different CA: the board was provisioned with another lab CA (another "
                    "--ca-dir or machine): give that CA's root with --root, or provision the board again"
                    if root.issuer == trusted_root.subject else ""))
    else:
        try:
            root.verify_directly_issued_by(root)
        except Exception:
            raise ChainError("root certificate is not validly self-signed")
    for i in range(1, len(certs)):
        try:
            certs[i].verify_directly_issued_by(certs[i - 1])
        except Exception as e:
            raise ChainError("certificate %d (%s) is not signed by certificate %d (%s): %s"
                             % (i, _name(certs[i]), i - 1, _name(certs[i - 1]), str(e) or "bad signature"))
    for i, c in enumerate(certs):
        if c.not_valid_before_utc > now or c.not_valid_after_utc < now:
            raise ChainError("certificate %d (%s) is not valid now (%s .. %s)" % (
                i, _name(c), c.not_valid_before_utc.isoformat(), c.not_valid_after_utc.isoformat()))
        if i < len(certs) - 1:
            try:
                bc = c.extensions.get_extension_for_class(x509.BasicConstraints).value
            except x509.ExtensionNotFound:
                bc = None
            except ValueError as e:
                raise ChainError("certificate %d (%s) has invalid extensions: %s" % (i, _name(c), e))
            if bc is None or not bc.ca:
                raise ChainError("certificate %d (%s) is not a CA but issues certificate %d" % (i, _name(c), i + 1))
    notes = check_leaf_profile(certs[-1], ders[-1], alg, version)
    check_path(certs, ders[0] == trusted_der)
    leaf = certs[-1]
    return {
        "certificates": [{"subject": _name(c), "issuer": c.issuer.rfc4514_string(),
                          "not_after": c.not_valid_after_utc.isoformat(),
                          "fingerprint_sha256": c.fingerprint(hashes.SHA256()).hex()} for c in certs],
        "leaf_subject": _name(leaf),
        "device_info": device_info(leaf),
        "leaf_key": leaf.public_key(),
        "notes": notes,
        "chain_hash": buf_hash,
    }
