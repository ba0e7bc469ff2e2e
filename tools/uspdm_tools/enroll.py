"""uspdm enroll: give a running board a certificate over SPDM itself.

    uspdm enroll --port P [--slot N] [--ca-dir DIR] [--alg p384|p256] [--new-key]
                 [--psk-hint H --psk-file F] [--version 1.2|1.3]

1. Negotiates SPDM 1.2+ and opens a secure session: KEY_EXCHANGE/FINISH with
   a slot the board already has (its chain validated against the lab root
   first), or PSK_EXCHANGE with --psk-hint/--psk-file (a board with no
   certificate yet).
2. Inside the session: GET_CSR with our RequesterInfo (subject, one
   attribute).  With --new-key (SPDM 1.3, a board with multi_key=1): GET_CSR
   names KeyPairID slot+2 and the board makes a fresh key pair for the slot
   (a slot already on its own key pair is erased first); without a
   multi-key connection there is no way to ask for one, and it says so.  The CSR is checked with `cryptography`: its signature, its
   subject and attribute, and that its key is the key the board attests with
   (the leaf key of the session's slot; a PSK-only board proves it in step 5).
3. The lab CA (as `uspdm provision`) issues the leaf, with the same SPDM leaf
   profile, for the CSR's key.
4. SET_CERTIFICATE writes the chain into --slot (CHUNK_SEND when it is larger
   than the board's DataTransferSize); the session ends.
5. Attests against the new slot (`uspdm attest --slot N`) and prints the result.

`uspdm provision` is the offline path (first boot, over mpremote or the
simulator's flash folder); `uspdm enroll` is the protocol path for a board
that is running its firmware.  Exit status: 0 enrolled and TRUSTED, 1 usage,
2 unreachable, 3 protocol error or refused, 4 verification failed.
"""
import argparse
import json
import os
import struct
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from . import certs as certs_mod
from . import requester as R

EXIT_OK, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_PROTOCOL, EXIT_UNTRUSTED = 0, 1, 2, 3, 4

GET_CSR = 0xED
CSR = 0x6D
SET_CERTIFICATE = 0xEE
SET_CERTIFICATE_RSP = 0x6E
CAP_SET_CERT = 1 << 19
CAP_CSR = 1 << 20
CAP_CERT_INSTALL_RESET = 1 << 21
ERR_RESET_REQUIRED = 0x0C
ERR_SESSION_REQUIRED = 0x0B

R.CODE_NAMES.setdefault(GET_CSR, "GET_CSR")
R.CODE_NAMES.setdefault(CSR, "CSR")
R.CODE_NAMES.setdefault(SET_CERTIFICATE, "SET_CERTIFICATE")
R.CODE_NAMES.setdefault(SET_CERTIFICATE_RSP, "SET_CERTIFICATE_RSP")

OID_UNSTRUCTURED_NAME = x509.ObjectIdentifier("1.2.840.113549.1.9.2")
_HASH_OF = {"p384": hashes.SHA384, "p256": hashes.SHA256}


class EnrollError(Exception):
    def __init__(self, msg, code=EXIT_PROTOCOL):
        Exception.__init__(self, msg)
        self.code = code


def _tlv(tag, body):
    n = len(body)
    if n < 0x80:
        ln = bytes((n,))
    elif n < 0x100:
        ln = bytes((0x81, n))
    else:
        ln = bytes((0x82, n >> 8, n & 0xFF))
    return bytes((tag,)) + ln + body


def requester_info(subject_cn, attribute_text, alg="p384"):
    """DER CertificationRequestInfo for GET_CSR: version 0, our subject, a
    placeholder key (the board puts its own), one unstructuredName attribute."""
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "uspdm lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]).public_bytes()
    spki = ec.generate_private_key(certs_mod.CURVES[alg]()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    oid = b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x09\x02"
    attr = _tlv(0x30, oid + _tlv(0x31, _tlv(0x0C, attribute_text.encode())))
    return _tlv(0x30, b"\x02\x01\x00" + name + spki + _tlv(0xA0, attr))


def get_csr_request(version, ri, opaque=b"", p1=0, p2=0):
    return bytes((version, GET_CSR, p1, p2)) + struct.pack("<HH", len(ri), len(opaque)) + ri + opaque


def set_certificate_request(version, slot, chain_buf=b"", p1_extra=0, p2=0):
    return bytes((version, SET_CERTIFICATE, (slot & 0x0F) | p1_extra, p2)) + chain_buf


def parse_csr_response(rsp):
    if len(rsp) < 8:
        raise R.ProtocolError("CSR response shorter than its header")
    n = struct.unpack_from("<H", rsp, 4)[0]
    if len(rsp) != 8 + n:
        raise R.ProtocolError("CSR response: CSRLength %d but %d bytes follow" % (n, len(rsp) - 8))
    return bytes(rsp[8:])


def check_csr(der, alg, subject_cn=None, attribute_text=None, expect_key=None):
    """Parse and check a CSR with `cryptography`; returns the CSR object."""
    try:
        csr = x509.load_der_x509_csr(der)
    except ValueError as e:
        raise EnrollError("the board's CSR is not valid DER PKCS#10: %s" % e, EXIT_UNTRUSTED)
    if not csr.is_signature_valid:
        raise EnrollError("the CSR's signature does not verify", EXIT_UNTRUSTED)
    pk = csr.public_key()
    if not isinstance(pk, ec.EllipticCurvePublicKey) or not isinstance(pk.curve, certs_mod.CURVES[alg]):
        raise EnrollError("the CSR's key is not %s" % alg.upper(), EXIT_UNTRUSTED)
    if not isinstance(csr.signature_hash_algorithm, _HASH_OF[alg]):
        raise EnrollError("the CSR is not signed with ECDSA/%s" % _HASH_OF[alg].name, EXIT_UNTRUSTED)
    if subject_cn is not None:
        cns = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if cns != [subject_cn]:
            raise EnrollError("the CSR's subject is %s, asked for CN=%s" % (csr.subject.rfc4514_string(), subject_cn),
                              EXIT_UNTRUSTED)
    if attribute_text is not None:
        try:
            got = csr.attributes.get_attribute_for_oid(OID_UNSTRUCTURED_NAME).value
        except x509.AttributeNotFound:
            raise EnrollError("the CSR lacks the requested attribute", EXIT_UNTRUSTED)
        if got != attribute_text.encode():
            raise EnrollError("the CSR's attribute differs from the request", EXIT_UNTRUSTED)
    if expect_key is not None:
        raw = serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        if pk.public_bytes(*raw) != expect_key.public_bytes(*raw):
            raise EnrollError("the CSR's key is not the key the board attests with", EXIT_UNTRUSTED)
    return csr


def enroll(link, ca, slot=0, alg="p384", version=None, psk_hint=None, psk=None, session_slot=None,
           subject=None, device_info=None, timeout=10.0, log=None, attest=True, sleep=None, new_key=False,
           requester_opts=None):
    """Run the enrolment over `link` (.spdm/.secured like link.SerialLink).
    Returns a report dict; raises EnrollError / requester errors.
    new_key: the board makes slot `slot` a fresh key pair of its own (SPDM 1.3
    multi-key connection, KeyPairID slot + 2) and the CSR is for that key."""
    from .session_requester import SessionRequester

    say = log or (lambda s: None)
    rep = {"slot": slot, "alg": alg}
    kw = {"timeout": timeout}
    if sleep is not None:
        kw["sleep"] = sleep
    kw.update(requester_opts or {})   # (e.g. rnr_retries / rnr_timeout for a slow board)
    # a 1.3 multi-key connection when the board negotiates one: KeyPairIDs in DIGESTS
    q = SessionRequester(link, version=version, algs=(alg,), multi_key=True, **kw)
    q.init_connection()
    v = q.version
    rep["version"] = R.version_str(v)
    if v < 0x12:
        raise EnrollError("the board speaks SPDM %s; GET_CSR/SET_CERTIFICATE need 1.2 or later" % R.version_str(v))
    need = CAP_CSR | CAP_SET_CERT
    if q.rsp_flags & need != need:
        raise EnrollError("the board does not offer GET_CSR and SET_CERTIFICATE (CSR_CAP/SET_CERT_CAP); "
                          "board setting enroll=1")
    kp = 0   # KeyPairID of GET_CSR / SET_CERTIFICATE: 0 without a multi-key connection
    if q.mk_conn:
        kp = slot + 2 if new_key else 1
        rep["key_pair_id"] = kp
    elif new_key:
        if v < 0x13:
            raise EnrollError("--new-key needs SPDM 1.3: a 1.2 GET_CSR has no KeyPairID, so the board cannot be "
                              "asked for a new key pair (this connection is SPDM %s)" % R.version_str(v), EXIT_USAGE)
        raise EnrollError("--new-key: the board does not offer multiple key pairs (SPDM 1.3 MULTI_KEY_CAP); "
                          "board setting multi_key=1", EXIT_USAGE)
    hash_algo = R.HASHES[q.hash][1]
    attested_key = session_key = None
    if psk is not None:
        say("opening a PSK session (hint %r)..." % psk_hint)
        s = q.open_session(psk_hint=psk_hint, psk=psk)
        rep["session"] = "PSK"
    else:
        digests = q.get_digests()
        if not digests:
            raise EnrollError("the board has no certificate yet: enroll it with --psk-hint/--psk-file, "
                              "or with `uspdm provision`", EXIT_USAGE)
        if session_slot is not None:
            sslot = session_slot
        else:
            # the lowest slot on the device key (its key is what GET_CSR KeyPairID 1 certifies),
            # not the slot a --new-key enrolment is about to replace
            cands = [sl for sl in sorted(digests) if q.key_pairs.get(sl, {}).get("key_pair_id", 1) == 1
                     and not (new_key and sl == slot)] or [sl for sl in sorted(digests) if not (new_key and sl == slot)]
            sslot = cands[0] if cands else sorted(digests)[0]
        if sslot not in digests:
            raise EnrollError("slot %d is not provisioned (provisioned: %s)" % (sslot, sorted(digests)), EXIT_USAGE)
        buf = q.get_certificate(sslot)
        try:
            info = certs_mod.validate_chain(buf, q.hash_size, hash_algo, alg, v, ca.root_cert,
                                            digest=digests[sslot])
        except certs_mod.ChainError as e:
            raise EnrollError("the board's slot %d chain does not validate to the lab root: %s" % (sslot, e),
                              EXIT_UNTRUSTED)
        if not new_key and q.key_pairs.get(sslot, {}).get("key_pair_id", 1) == 1:
            attested_key = info["leaf_key"]   # the device key: what the CSR must hold
        session_key = info["leaf_key"]
        say("board identity (slot %d): %s; opening a session (KEY_EXCHANGE)..." % (sslot, info["leaf_subject"]))
        s = q.key_exchange(sslot)
        q.finish(s)
        rep["session"] = "KEY_EXCHANGE slot %d" % sslot
    inner = q.in_session(s)
    cn = subject or "uspdm enrolled slot %d" % slot
    attr = "uspdm enroll slot %d" % slot
    old_kp = q.key_pairs.get(slot, {}).get("key_pair_id")
    if new_key and slot in (q.digests or {}) and old_kp == kp:
        # the slot's chain is on its own key pair already: erased first, so that
        # the board makes a fresh key pair (a key pair in use is never replaced)
        if psk is None and slot == sslot:
            raise EnrollError("slot %d opened this session: use --session-slot with another slot" % slot, EXIT_USAGE)
        say("slot %d holds a chain on its own key pair: erasing it so the board makes a fresh one..." % slot)
        rsp = inner.exchange(set_certificate_request(v, slot, b"", p1_extra=0x80, p2=kp), SET_CERTIFICATE_RSP,
                             crypto=True, name="SET_CERTIFICATE (erase)")
        rep["erased_first"] = True
    say("GET_CSR%s..." % (" (KeyPairID %d: a new key pair for slot %d)" % (kp, slot) if new_key else ""))
    try:
        # 1.3 multi-key: Param1 KeyPairID, Param2 CSRCertModel DeviceCert (1)
        rsp = inner.exchange(get_csr_request(v, requester_info(cn, attr, alg), p1=kp, p2=1 if kp else 0), CSR,
                             crypto=True, name="GET_CSR")
    except R.ProtocolError as e:
        if e.code == ERR_RESET_REQUIRED:
            raise EnrollError("the board needs a reset before it answers GET_CSR (CERT_INSTALL_RESET): reset it "
                              "and run `uspdm enroll` again")
        raise
    der = parse_csr_response(rsp)
    csr = check_csr(der, alg, cn, attr, attested_key)
    if new_key:
        raw = serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        got = csr.public_key().public_bytes(*raw)
        if psk is None and got == session_key.public_bytes(*raw):
            raise EnrollError("--new-key: the CSR's key is the session slot's key, not a new one", EXIT_UNTRUSTED)
    rep["csr_bytes"] = len(der)
    key_xy = csr.public_key().public_bytes(serialization.Encoding.X962,
                                           serialization.PublicFormat.UncompressedPoint)[1:]
    rep["csr_key"] = key_xy.hex()
    info_str = device_info or "uspdm:enrolled:%s" % __import__("hashlib").sha256(key_xy).hexdigest()[:16]
    say("CSR OK (%d bytes, key %s...); issuing the %s leaf for %r" % (len(der), key_xy.hex()[:32], alg.upper(),
                                                                       info_str))
    chain = ca.issue_leaf(csr.public_key(), info_str, subject=cn)
    buf = certs_mod.chain_buffer(chain, hash_algo)
    say("SET_CERTIFICATE slot %d (%d bytes)..." % (slot, len(buf)))
    reset = False
    try:
        # 1.3 multi-key: Param1 bits 6:4 SetCertModel DeviceCert (1), Param2 KeyPairID
        rsp = inner.exchange(set_certificate_request(v, slot, buf, p1_extra=0x10 if kp else 0, p2=kp),
                             SET_CERTIFICATE_RSP, crypto=True, name="SET_CERTIFICATE")
        if rsp[2] & 0x0F != slot:
            raise R.ProtocolError("SET_CERTIFICATE_RSP names slot %d" % (rsp[2] & 0x0F))
    except R.ProtocolError as e:
        if e.code != ERR_RESET_REQUIRED:
            raise
        reset = True
    rep["chain_bytes"] = len(buf)
    rep["device_info"] = info_str
    q.end_session(s)
    if reset:
        rep["result"] = "installed; takes effect after a board reset (CERT_INSTALL_RESET)"
        return rep
    if attest:
        from . import verifier

        say("attesting against slot %d..." % slot)
        opts = dict(kw)
        opts["multi_key"] = bool(kp)
        code, arep = verifier.attest(link, ca.root_cert, version=version, slot=slot, algs=(alg,),
                                     requester_opts=opts)
        rep["attest"] = {"verdict": arep.get("verdict"), "reason": arep.get("reason"),
                         "subject": (arep.get("identity") or {}).get("subject")}
        if kp:
            rep["attest"]["key_pair_id"] = (arep.get("identity") or {}).get("key_pair_id")
        if code != 0:
            raise EnrollError("attestation against the new slot: %s (%s)" % (arep.get("verdict"),
                                                                                arep.get("reason")), code)
    rep["result"] = "enrolled"
    return rep


def register(sub):
    p = sub.add_parser("enroll", help="enrol a running board over SPDM (GET_CSR, lab CA, SET_CERTIFICATE)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", required=True, help="serial port of the board (or the simulator's pty)")
    p.add_argument("--eid", type=int, default=None, help="MCTP endpoint ID of the board")
    p.add_argument("--slot", type=int, default=0, choices=range(8), metavar="N", help="slot to write (0-7)")
    p.add_argument("--session-slot", type=int, default=None, choices=range(8), metavar="N",
                   help="slot whose key opens the session (default: the lowest provisioned)")
    p.add_argument("--ca-dir", default=None, help="lab CA directory (default %s)" % certs_mod.default_ca_dir())
    p.add_argument("--alg", choices=["p384", "p256"], default="p384", help="curve (default p384)")
    p.add_argument("--version", dest="spdm_version", choices=["1.2", "1.3"], default=None,
                   help="SPDM version (default: the highest both support)")
    p.add_argument("--new-key", action="store_true",
                   help="the board makes the slot a fresh key pair of its own (SPDM 1.3, board setting multi_key=1); "
                        "the CSR and the new leaf are for that key")
    p.add_argument("--psk-hint", default=None, help="open a PSK session with this hint (with --psk-file)")
    p.add_argument("--psk-file", default=None, help="file holding the PSK bytes")
    p.add_argument("--subject", default=None, help="leaf common name (default: uspdm enrolled slot N)")
    p.add_argument("--device-info", default=None, help="device-info SAN string (default uspdm:enrolled:<key hash>)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    from .verifier import _usage_exit

    p.error = _usage_exit(p)
    p.set_defaults(func=cmd_enroll)


def cmd_enroll(args):
    psk = hint = None
    if (args.psk_hint is None) != (args.psk_file is None):
        print("uspdm enroll: --psk-hint and --psk-file go together", file=sys.stderr)
        return EXIT_USAGE
    if args.psk_file:
        try:
            with open(args.psk_file, "rb") as f:
                psk = f.read()
        except OSError as e:
            print("uspdm enroll: cannot read %s: %s" % (args.psk_file, e), file=sys.stderr)
            return EXIT_USAGE
        hint = args.psk_hint.encode()
    ca_dir = args.ca_dir or certs_mod.default_ca_dir()
    ca = certs_mod.LabCA(ca_dir)
    try:
        ca.load_or_create()
    except (OSError, ValueError) as e:
        print("uspdm enroll: cannot use the CA in %s: %s" % (ca_dir, e), file=sys.stderr)
        return EXIT_USAGE
    from . import link as link_mod
    from .cmd_session import LinkAdapter

    kw = {"timeout": args.timeout}
    if args.eid is not None:
        kw["eid"] = args.eid
    log = None if args.json else (lambda s: print("uspdm enroll: " + s, flush=True))
    try:
        link = LinkAdapter(link_mod.SerialLink(args.port, **kw), link_mod.Unreachable)
    except (link_mod.Unreachable, OSError) as e:
        return _done(args, {"port": args.port}, EXIT_UNREACHABLE, "UNREACHABLE: %s" % e)
    rep = {"port": args.port}
    try:
        rep.update(enroll(link, ca, slot=args.slot, alg=args.alg, version=args.spdm_version, psk_hint=hint,
                          psk=psk, session_slot=args.session_slot, subject=args.subject,
                          device_info=args.device_info, timeout=args.timeout, log=log, new_key=args.new_key))
        code, verdict = EXIT_OK, rep["result"].upper() if rep["result"] != "enrolled" else (
            "ENROLLED: slot %d %s, attestation %s" % (args.slot, args.alg.upper(), rep["attest"]["verdict"]))
    except EnrollError as e:
        code, verdict = e.code, "FAILED: %s" % e
    except R.Unreachable as e:
        code, verdict = EXIT_UNREACHABLE, "UNREACHABLE: %s" % e
    except R.VerificationError as e:
        code, verdict = EXIT_UNTRUSTED, "VERIFICATION FAILED: %s" % e
    except R.ProtocolError as e:
        code, verdict = EXIT_PROTOCOL, "PROTOCOL ERROR: %s" % e
    finally:
        link.close()
    return _done(args, rep, code, verdict)


def _done(args, rep, code, verdict):
    rep["verdict"] = verdict
    rep["exit_code"] = code
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        print("result: %s" % verdict)
    sys.stdout.flush()
    return code


if __name__ == "__main__":  # pragma: no cover
    from .cli import main

    sys.exit(main(["enroll"] + sys.argv[1:]))
