"""The lab page's certificate checks (tools/lab/src/pki.js: @peculiar/x509,
asn1js, WebCrypto; run under Node) give the host verifier's verdicts, in the
same words: a corpus of good and broken SPDM chains built with the
`cryptography` package goes through both, and certs.validate_chain's answer
(trusted, or its ChainError message) must be the page's."""
import datetime
import json
import os
import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from uspdm_tools import certs
from uspdm_tools.paths import REPO_ROOT

ESBUILD = os.path.join(REPO_ROOT, "node_modules", ".bin", "esbuild")

RUNNER = r"""
import fs from "node:fs";
import { validateChain } from "./pki.mjs";
const cases = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const un = (h) => new Uint8Array(Buffer.from(h, "hex"));
const out = [];
for (const c of cases) {
  try {
    const r = await validateChain(un(c.buf), c.hashAlg, c.H, c.alg, c.version, un(c.root), null);
    out.push({ ok: true, notes: r.notes, device_info: r.device_info, leaf_subject: r.leaf_subject, certificates: r.certificates });
  } catch (e) {
    out.push({ ok: false, error: e.message, kind: e.constructor.name });
  }
}
console.log(JSON.stringify(out));
"""

DER = serialization.Encoding.DER
NOW = datetime.datetime.now(datetime.timezone.utc)


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "uspdm lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn, key, issuer=None, issuer_key=None, path_length=None, ku_cert_sign=True, days=3650):
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer.subject if issuer else _name(cn))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
         .add_extension(x509.KeyUsage(False, False, False, False, False, ku_cert_sign, True, False, False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    return b.sign(issuer_key or key, hashes.SHA384())


def _leaf(issuer, issuer_key, key, info="uspdm:test:0123456789abcdef", ku=True, bc=True, eku=(certs.OID_EKU_RESPONDER,),
          extra=None, not_after=None):
    c = certs.issue_leaf(issuer, issuer_key, key.public_key(), info, eku=eku, basic_constraints=bc, key_usage=ku)
    if extra is None and not_after is None:
        return c
    # rebuild with the same fields plus the variation
    b = (x509.CertificateBuilder().subject_name(c.subject).issuer_name(c.issuer).public_key(key.public_key())
         .serial_number(c.serial_number).not_valid_before(c.not_valid_before_utc)
         .not_valid_after(not_after or c.not_valid_after_utc))
    for e in c.extensions:
        b = b.add_extension(e.value, e.critical)
    if extra is not None:
        b = b.add_extension(extra, critical=True)
    return b.sign(issuer_key, hashes.SHA384())


def _case(ders, root, alg="p384", version=0x13):
    hb, H, ha = (hashes.SHA384, 48, "sha384") if alg == "p384" else (hashes.SHA256, 32, "sha256")
    buf = certs.chain_buffer(ders, hb)
    return {"buf": buf.hex(), "hashAlg": ha, "H": H, "alg": alg, "version": version,
            "root": root.public_bytes(DER).hex(), "_hb": hb}


def _corpus():
    rk = ec.generate_private_key(ec.SECP384R1())
    ik = ec.generate_private_key(ec.SECP384R1())
    lk = ec.generate_private_key(ec.SECP384R1())
    lk256 = ec.generate_private_key(ec.SECP256R1())
    fk = ec.generate_private_key(ec.SECP384R1())
    root = _ca("uspdm lab root CA", rk)
    foreign = _ca("uspdm lab root CA", fk)
    inter = _ca("uspdm lab intermediate CA", ik, root, rk, path_length=0)
    d = lambda c: c.public_bytes(DER)  # noqa: E731
    good = _leaf(root, rk, lk)
    cases = {
        "good root+leaf 1.3": _case([d(root), d(good)], root),
        "good with intermediate 1.2": _case([d(root), d(inter), d(_leaf(inter, ik, lk))], root, version=0x12),
        "good P-256 leaf": _case([d(root), d(_leaf(root, rk, lk256))], root, alg="p256"),
        "chain starts below the trusted root": _case([d(inter), d(_leaf(inter, ik, lk))], root),
        "foreign root, same name": _case([d(root), d(good)], foreign),
        "leaf key on the wrong curve": _case([d(root), d(_leaf(root, rk, lk256))], root, alg="p384"),
        "leaf without digitalSignature": _case([d(root), d(_leaf(root, rk, lk, ku=False))], root),
        "1.3 leaf without basicConstraints": _case([d(root), d(_leaf(root, rk, lk, bc=False))], root),
        "1.2 leaf without basicConstraints": _case([d(root), d(_leaf(root, rk, lk, bc=False))], root, version=0x12),
        "requester-only EKU": _case([d(root), d(_leaf(root, rk, lk, eku=(certs.OID_EKU_REQUESTER,)))], root),
        "no EKU": _case([d(root), d(_leaf(root, rk, lk, eku=()))], root),
        "expired leaf": _case([d(root), d(_leaf(root, rk, lk, not_after=NOW - datetime.timedelta(hours=1)))], root),
        "unknown critical extension": _case([d(root), d(_leaf(root, rk, lk, extra=x509.UnrecognizedExtension(
            x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")))], root),
        "issuer without keyCertSign": _case([d(root), d(_ca("uspdm lab intermediate CA", ik, root, rk, ku_cert_sign=False)),
                                             d(_leaf(inter, ik, lk))], root),
        "pathLenConstraint exceeded": _case([d(root), d(inter), d(_ca("second intermediate", lk256, inter, ik)),
                                             d(_leaf(_ca("second intermediate", lk256, inter, ik), lk256, lk))], root),
        "leaf signed by another key": _case([d(root), d(_leaf(foreign, fk, lk))], root),
    }
    # a flipped byte inside the leaf's signature
    bad = bytearray(d(good))
    bad[-5] ^= 0x01
    cases["leaf signature tampered"] = _case([d(root), bytes(bad)], root)
    return cases


@pytest.fixture(scope="module")
def js(tmp_path_factory):
    if not (os.path.exists(ESBUILD) and shutil.which("node")):
        pytest.skip("npm packages or node missing: run `make setup`")
    d = tmp_path_factory.mktemp("labpki")
    subprocess.run([ESBUILD, os.path.join(REPO_ROOT, "tools", "lab", "src", "pki.js"), "--bundle", "--format=esm",
                    "--platform=node", "--log-level=warning", "--outfile=" + str(d / "pki.mjs")], check=True, timeout=120)
    (d / "run.mjs").write_text(RUNNER)

    def run(cases):
        (d / "cases.json").write_text(json.dumps(cases))
        p = subprocess.run(["node", str(d / "run.mjs"), str(d / "cases.json")], capture_output=True, text=True,
                           timeout=120, cwd=str(d))
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)
    return run


def test_page_chain_verdicts_equal_host(js):
    corpus = _corpus()
    names = list(corpus)
    page = js([{k: v for k, v in corpus[n].items() if k != "_hb"} for n in names])
    outcomes = {}
    for name, got in zip(names, page):
        c = corpus[name]
        root = x509.load_der_x509_certificate(bytes.fromhex(c["root"]))
        try:
            info = certs.validate_chain(bytes.fromhex(c["buf"]), c["H"], c["_hb"], c["alg"], c["version"], root)
            want = {"ok": True, "notes": info["notes"], "device_info": info["device_info"],
                    "leaf_subject": info["leaf_subject"], "certificates": info["certificates"]}
        except certs.ChainError as e:
            want = {"ok": False, "error": str(e)}
        if not want["ok"]:
            assert got.get("kind") == "ChainError", (name, got)
            got = {"ok": False, "error": got["error"]}
        assert got == want, name
        outcomes[name] = want["ok"]
    # the corpus really has both kinds, and each broken chain is refused
    assert {n for n, ok in outcomes.items() if ok} == {
        "good root+leaf 1.3", "good with intermediate 1.2", "good P-256 leaf", "chain starts below the trusted root",
        "1.2 leaf without basicConstraints", "no EKU"}, outcomes
