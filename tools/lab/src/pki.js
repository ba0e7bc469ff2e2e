// The page's lab CA (provisioning the in-page board) and the verifier's
// certificate checks: @peculiar/x509 / asn1-x509 / asn1js for every
// certificate structure (no hand-written ASN.1), WebCrypto for the keys.
// The checks and their wording follow the host verifier
// (tools/uspdm_tools/certs.py validate_chain / check_leaf_profile), so the
// page's verdicts mean what `uspdm attest` means.
import "./polyfill.js";
import * as x509 from "@peculiar/x509";
import * as asn1x509 from "@peculiar/asn1-x509";
import { AsnConvert } from "@peculiar/asn1-schema";
import * as asn1js from "asn1js";
import { b64, concat, digest, equal, hex, u16, unb64 } from "./util.js";

x509.cryptoProvider.set(globalThis.crypto);

export const OID_DEVICE_INFO = "1.3.6.1.4.1.412.274.1";
export const OID_EKU_RESPONDER = "1.3.6.1.4.1.412.274.3";
export const OID_EKU_REQUESTER = "1.3.6.1.4.1.412.274.4";
const OID_BC = "2.5.29.19";
const CURVE = { p384: "P-384", p256: "P-256" };
const SIGHASH = { "P-384": "SHA-384", "P-256": "SHA-256" };
const CA_KEY = "uspdm-lab-ca";
const DAY = 86400000;

export class ChainError extends Error {}

// ------------------------------------------------------------------ lab CA
async function newCA(cn) {
  const keys = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-384" }, true, ["sign", "verify"]);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: hex(crypto.getRandomValues(new Uint8Array(8))).replace(/^[89a-f]/, "1"),
    name: [{ "2.5.4.10": ["uspdm lab"] }, { "2.5.4.3": [cn] }],
    notBefore: new Date(now - DAY),
    notAfter: new Date(now + 365 * 30 * DAY),
    keys,
    signingAlgorithm: { name: "ECDSA", hash: "SHA-384" },
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert, keys, der: new Uint8Array(cert.rawData) };
}

// The lab CA the page made (kept in localStorage: it is a classroom CA, not a secret worth more).
export async function labCA({ fresh = false } = {}) {
  if (!fresh) {
    try {
      const j = JSON.parse(localStorage.getItem(CA_KEY) || "null");
      if (j) {
        const priv = await crypto.subtle.importKey("jwk", j.key, { name: "ECDSA", namedCurve: "P-384" }, true, ["sign"]);
        const cert = new x509.X509Certificate(unb64(j.cert));
        return { cert, keys: { privateKey: priv, publicKey: await cert.publicKey.export() }, der: new Uint8Array(cert.rawData), created: false };
      }
    } catch (e) { /* make a new one */ }
  }
  const ca = await newCA("uspdm lab root CA");
  const jwk = await crypto.subtle.exportKey("jwk", ca.keys.privateKey);
  localStorage.setItem(CA_KEY, JSON.stringify({ key: jwk, cert: b64(ca.der) }));
  ca.created = true;
  return ca;
}

// A root nobody issued the board's chain under (the "foreign root" exercise).
export async function foreignRoot() {
  const ca = await newCA("uspdm lab root CA");   // same name, different key: names alone prove nothing
  return ca.der;
}

export function forgetCA() {
  localStorage.removeItem(CA_KEY);
}

function utf8Der(s) {
  return new Uint8Array(new asn1js.Utf8String({ value: s }).toBER(false));
}

// Issue the device leaf for the board's public key (X||Y) with the SPDM leaf profile.
export async function issueLeaf(ca, alg, xy, deviceInfo, subject) {
  const pub = await crypto.subtle.importKey("raw", concat(new Uint8Array([4]), xy),
    { name: "ECDSA", namedCurve: CURVE[alg] }, true, ["verify"]);
  const san = new asn1x509.SubjectAlternativeName([
    new asn1x509.GeneralName({ otherName: new asn1x509.OtherName({ typeId: OID_DEVICE_INFO, value: utf8Der(deviceInfo).buffer }) }),
  ]);
  const now = Date.now();
  const cn = subject || "uspdm device " + deviceInfo.split(":").pop();
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: hex(crypto.getRandomValues(new Uint8Array(8))).replace(/^[89a-f]/, "2"),
    subject: [{ "2.5.4.10": ["uspdm lab"] }, { "2.5.4.3": [cn] }],
    issuer: ca.cert.subjectName,
    notBefore: new Date(now - DAY),
    notAfter: new Date(now + 365 * 10 * DAY),
    publicKey: pub,
    signingKey: ca.keys.privateKey,
    signingAlgorithm: { name: "ECDSA", hash: "SHA-384" },
    extensions: [
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      // cA FALSE is the DER default: the value encodes as 30 00 (required at SPDM 1.3)
      new x509.BasicConstraintsExtension(false, undefined, false),
      new x509.ExtendedKeyUsageExtension([OID_EKU_RESPONDER], false),
      new x509.Extension("2.5.29.17", false, AsnConvert.serialize(san)),
      await x509.SubjectKeyIdentifierExtension.create(pub),
      await x509.AuthorityKeyIdentifierExtension.create(ca.keys.publicKey),
    ],
  });
  return [ca.der, new Uint8Array(leaf.rawData)];
}

export async function defaultDeviceInfo(boardName, xy) {
  return "uspdm:" + boardName + ":" + hex(await digest("sha256", xy)).slice(0, 16);
}

// ------------------------------------------------------------------ checks
const ATTR = { "2.5.4.3": "CN", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST",
  "2.5.4.9": "STREET", "0.9.2342.19200300.100.1.25": "DC", "0.9.2342.19200300.100.1.1": "UID" };

function esc4514(v) {
  let s = String(v).replace(/([\\,+"<>;=])/g, "\\$1");
  if (s.startsWith("#") || s.startsWith(" ")) s = "\\" + s;
  if (s.endsWith(" ")) s = s.slice(0, -1) + "\\ ";
  return s;
}

// RFC 4514 string of a Name, as Python cryptography's rfc4514_string() writes it (last RDN first).
export function rfc4514(name) {
  const rdns = name.toJSON();
  return rdns.slice().reverse().map((rdn) => Object.entries(rdn).map(([oid, vals]) =>
    vals.map((v) => (ATTR[oid] || oid) + "=" + esc4514(v)).join("+")).join("+")).join(",");
}

function iso(d) {
  return d.toISOString().replace(/\.\d{3}Z$/, "+00:00");
}

export function splitDer(buf) {
  const out = [];
  let o = 0;
  while (o < buf.length) {
    const r = asn1js.fromBER(buf.slice(o).buffer);
    if (r.offset === -1 || !(r.result instanceof asn1js.Sequence)) throw new ChainError("certificate " + out.length + " is not a DER SEQUENCE");
    out.push(buf.slice(o, o + r.offset));
    o += r.offset;
  }
  return out;
}

export function splitChainBuffer(buf, H) {
  if (buf.length < 4 + H) throw new ChainError("chain buffer shorter than its header");
  const len = u16(buf, 0);
  if (len !== buf.length) throw new ChainError("chain buffer Length field " + len + " but " + buf.length + " bytes retrieved");
  if (u16(buf, 2) !== 0) throw new ChainError("chain buffer Reserved field is not zero");
  const ders = splitDer(buf.subarray(4 + H));
  if (!ders.length) throw new ChainError("chain buffer holds no certificate");
  return { rootHash: buf.slice(4, 4 + H), ders };
}

async function issuedBy(cert, issuer) {
  if (rfc4514(cert.issuerName) !== rfc4514(issuer.subjectName)) return false;
  try {
    return await cert.verify({ publicKey: issuer.publicKey, signatureOnly: true });
  } catch (e) {
    return false;
  }
}

function rawExtension(der, oid) {
  const c = AsnConvert.parse(der, asn1x509.Certificate);
  const t = c.tbsCertificate;
  const e = (t.extensions || []).find((x) => x.extnID === oid);
  return { version: t.version + 1, ext: e ? { critical: e.critical, value: new Uint8Array(e.extnValue.buffer) } : null };
}

function deviceInfoOf(cert) {
  const ext = cert.getExtension("2.5.29.17");
  if (!ext) return null;
  const san = AsnConvert.parse(ext.value, asn1x509.SubjectAlternativeName);
  for (const gn of san) {
    if (gn.otherName && gn.otherName.typeId === OID_DEVICE_INFO) {
      const r = asn1js.fromBER(gn.otherName.value);
      if (r.offset === -1) return "(undecodable)";
      return r.result.valueBlock.value !== undefined ? String(r.result.valueBlock.value) : null;
    }
  }
  return null;
}

// The SPDM leaf profile (DSP0274 "Leaf certificate" requirements, as libspdm checks them).
function leafProfile(cert, der, alg, version, checks) {
  const notes = [];
  const raw = rawExtension(der, OID_BC);
  if (raw.version !== 3) throw new ChainError("leaf is not an X.509 v3 certificate");
  checks.push("X.509 v3");
  const pa = cert.publicKey.algorithm;
  if (pa.name !== "ECDSA" && pa.name !== "EC" || pa.namedCurve !== CURVE[alg]) {
    throw new ChainError("leaf key is not " + (alg === "p384" ? "secp384r1" : "secp256r1") + " (the negotiated algorithm)");
  }
  checks.push("key on " + CURVE[alg] + " (the negotiated algorithm)");
  const bc = raw.ext;
  if (version >= 0x13) {
    if (!bc) throw new ChainError("SPDM 1.3 leaf lacks basicConstraints");
    if (hex(bc.value) !== "3000") throw new ChainError("SPDM 1.3 leaf basicConstraints is encoded " + hex(bc.value) + ", expected 30 00");
    checks.push("basicConstraints encoded 30 00 (SPDM 1.3)");
  }
  const ku = cert.getExtension(x509.KeyUsagesExtension);
  if (!ku) throw new ChainError("leaf has no keyUsage extension");
  if (!(ku.usages & x509.KeyUsageFlags.digitalSignature)) throw new ChainError("leaf keyUsage lacks digitalSignature");
  checks.push("keyUsage digitalSignature");
  const eku = cert.getExtension(x509.ExtendedKeyUsageExtension);
  if (eku) {
    const oids = eku.usages.map(String);
    if (oids.includes(OID_EKU_REQUESTER) && !oids.includes(OID_EKU_RESPONDER)) throw new ChainError("leaf EKU is requester-authentication only");
    notes.push("EKU: " + oids.join(", "));
    checks.push("EKU allows responder authentication");
  } else {
    notes.push("no EKU");
  }
  if (bc) {
    const b = cert.getExtension(x509.BasicConstraintsExtension);
    if (b && b.ca) throw new ChainError("leaf basicConstraints says cA TRUE");
    checks.push("basicConstraints cA FALSE");
  }
  const di = deviceInfoOf(cert);
  if (di !== null) {
    notes.push("device-info: " + di);
    checks.push("subjectAltName device-info " + di);
  }
  return notes;
}

// RFC 5280 6.1 path rules beyond signatures, validity and cA, as the host verifier applies them
// (certs.check_path): no unprocessed critical extension (the trust anchor's own are anchor data),
// keyCertSign on every issuer whose keyUsage is present, pathLenConstraint.
const PROCESSED = new Set(["2.5.29.19", "2.5.29.15", "2.5.29.37", "2.5.29.17", "2.5.29.14", "2.5.29.35"]);
const EXT_NAMES = { "2.5.29.32": "certificatePolicies", "2.5.29.30": "nameConstraints", "2.5.29.36": "policyConstraints",
  "2.5.29.54": "inhibitAnyPolicy", "2.5.29.18": "issuerAltName", "2.5.29.31": "cRLDistributionPoints",
  "1.3.6.1.5.5.7.1.1": "authorityInfoAccess" };
function checkPath(certs, firstIsAnchor, view) {
  const n = certs.length;
  const selfIssued = (c) => rfc4514(c.subjectName) === rfc4514(c.issuerName);
  for (let i = 0; i < n; i++) {
    const c = certs[i];
    const name = rfc4514(c.subjectName);
    if (!(i === 0 && firstIsAnchor)) {
      for (const e of c.extensions) {
        if (e.critical && !PROCESSED.has(e.type)) {
          view.certificates[i].checks.push({ ok: false, text: "unsupported critical extension " + e.type });
          throw new ChainError("certificate " + i + " (" + name + ") has an unsupported critical extension " +
            (EXT_NAMES[e.type] ? EXT_NAMES[e.type] + " (" + e.type + ")" : e.type));
        }
      }
      view.certificates[i].checks.push({ ok: true, text: "no unprocessed critical extension" });
    }
    if (i === n - 1) break;
    const ku = c.getExtension(x509.KeyUsagesExtension);
    if (ku && !(ku.usages & x509.KeyUsageFlags.keyCertSign)) {
      view.certificates[i].checks.push({ ok: false, text: "keyUsage lacks keyCertSign" });
      throw new ChainError("certificate " + i + " (" + name + ") issues certificate " + (i + 1) + " but its keyUsage lacks keyCertSign");
    }
    if (ku) view.certificates[i].checks.push({ ok: true, text: "keyUsage keyCertSign (may sign certificates)" });
    const bc = c.getExtension(x509.BasicConstraintsExtension);
    if (bc && bc.pathLength !== undefined && bc.pathLength !== null) {
      let below = 0;
      for (let j = i + 1; j < n - 1; j++) if (!selfIssued(certs[j])) below++;
      if (below > bc.pathLength) {
        view.certificates[i].checks.push({ ok: false, text: "pathLenConstraint " + bc.pathLength + " exceeded" });
        throw new ChainError("certificate " + i + " (" + name + ") has pathLenConstraint " + bc.pathLength + " but " + below +
          " CA certificate" + (below !== 1 ? "s" : "") + " follow" + (below !== 1 ? "" : "s"));
      }
      view.certificates[i].checks.push({ ok: true, text: "pathLenConstraint " + bc.pathLength + " respected" });
    }
  }
}

// Validate an SPDM chain buffer against the trusted root (DER).  Returns the
// same description as certs.validate_chain, plus per-certificate checks for the page.
export async function validateChain(buf, hashAlg, H, alg, version, trustedDer, slotDigest) {
  const view = { certificates: [], checks: [] };
  const fail = (msg) => { const e = new ChainError(msg); e.view = view; return e; };
  const bufHash = await digest(hashAlg, buf);
  if (slotDigest && !equal(slotDigest, bufHash)) throw fail("DIGESTS entry does not match the hash of the retrieved chain");
  view.checks.push("DIGESTS entry = " + hashAlg.toUpperCase().replace("SHA", "SHA-") + "(chain buffer)");
  let parts;
  try { parts = splitChainBuffer(buf, H); } catch (e) { throw fail(e.message); }
  const { rootHash, ders } = parts;
  if (!equal(await digest(hashAlg, ders[0]), rootHash)) throw fail("RootHash does not match the hash of the first certificate");
  view.checks.push("RootHash = hash of the first certificate");
  let certs;
  try { certs = ders.map((d) => new x509.X509Certificate(d)); } catch (e) { throw fail("unparsable certificate: " + e.message); }
  for (let i = 0; i < certs.length; i++) {
    const c = certs[i];
    view.certificates.push({ role: i === 0 ? "root" : i === certs.length - 1 ? "leaf" : "intermediate",
      subject: rfc4514(c.subjectName), issuer: rfc4514(c.issuerName), not_before: iso(c.notBefore), not_after: iso(c.notAfter),
      key: c.publicKey.algorithm.namedCurve, der: ders[i], checks: [], pem: c.toString("pem") });
  }
  const trusted = new x509.X509Certificate(trustedDer);
  const v0 = view.certificates[0];
  if (!equal(ders[0], trustedDer)) {
    if (!(await issuedBy(certs[0], trusted))) {
      v0.checks.push({ ok: false, text: "not the trusted root, and not signed by it" });
      const fp = async (d) => hex(await digest("sha256", d));
      const sameName = rfc4514(certs[0].issuerName) === rfc4514(trusted.subjectName);
      throw fail("chain does not lead to the trusted root: the board's chain starts at " + rfc4514(certs[0].subjectName) +
        " (SHA-256 " + (await fp(ders[0])) + "), the trusted root is " + rfc4514(trusted.subjectName) + " (SHA-256 " +
        (await fp(trustedDer)) + ")" + (sameName ? "; same name, different CA: the board was provisioned with another lab CA " +
        "(another --ca-dir or machine): give that CA's root with --root, or provision the board again" : ""));
    }
    v0.checks.push({ ok: true, text: "signed by the trusted root" });
  } else {
    v0.checks.push({ ok: true, text: "is the trusted root (byte for byte)" });
    if (!(await issuedBy(certs[0], certs[0]))) {
      v0.checks.push({ ok: false, text: "self-signature does not verify" });
      throw fail("root certificate is not validly self-signed");
    }
    v0.checks.push({ ok: true, text: "self-signature verifies" });
  }
  for (let i = 1; i < certs.length; i++) {
    if (!(await issuedBy(certs[i], certs[i - 1]))) {
      view.certificates[i].checks.push({ ok: false, text: "signature by certificate " + (i - 1) + " does not verify" });
      throw fail("certificate " + i + " (" + rfc4514(certs[i].subjectName) + ") is not signed by certificate " + (i - 1) +
        " (" + rfc4514(certs[i - 1].subjectName) + "): bad signature");
    }
    view.certificates[i].checks.push({ ok: true, text: "signature by " + view.certificates[i - 1].role + " verifies" });
  }
  const now = new Date();
  for (let i = 0; i < certs.length; i++) {
    const c = certs[i];
    if (c.notBefore > now || c.notAfter < now) {
      view.certificates[i].checks.push({ ok: false, text: "not valid now" });
      throw fail("certificate " + i + " (" + rfc4514(c.subjectName) + ") is not valid now (" + iso(c.notBefore) + " .. " + iso(c.notAfter) + ")");
    }
    view.certificates[i].checks.push({ ok: true, text: "valid now (" + iso(c.notBefore).slice(0, 10) + " .. " + iso(c.notAfter).slice(0, 10) + ")" });
    if (i < certs.length - 1) {
      const bc = c.getExtension(x509.BasicConstraintsExtension);
      if (!bc || !bc.ca) {
        view.certificates[i].checks.push({ ok: false, text: "not a CA" });
        throw fail("certificate " + i + " (" + rfc4514(c.subjectName) + ") is not a CA but issues certificate " + (i + 1));
      }
      view.certificates[i].checks.push({ ok: true, text: "basicConstraints cA TRUE (may issue)" });
    }
  }
  const leafChecks = [];
  let notes;
  try {
    notes = leafProfile(certs[certs.length - 1], ders[ders.length - 1], alg, version, leafChecks);
  } catch (e) {
    for (const t of leafChecks) view.certificates[certs.length - 1].checks.push({ ok: true, text: t });
    view.certificates[certs.length - 1].checks.push({ ok: false, text: "SPDM leaf profile: " + e.message });
    throw fail(e.message);
  }
  for (const t of leafChecks) view.certificates[certs.length - 1].checks.push({ ok: true, text: "SPDM leaf profile: " + t });
  try {
    checkPath(certs, equal(ders[0], trustedDer), view);
  } catch (e) {
    throw fail(e.message);
  }
  const leaf = certs[certs.length - 1];
  const spki = new Uint8Array(await crypto.subtle.exportKey("raw", await leaf.publicKey.export({ name: "ECDSA", namedCurve: CURVE[alg] }, ["verify"])));
  const fps = [];
  for (const d of ders) fps.push(hex(await digest("sha256", d)));
  return {
    certificates: certs.map((c, i) => ({ subject: rfc4514(c.subjectName), issuer: rfc4514(c.issuerName),
      not_after: iso(c.notAfter), fingerprint_sha256: fps[i] })),
    leaf_subject: rfc4514(leaf.subjectName),
    device_info: deviceInfoOf(leaf),
    leaf_xy: spki.subarray(1),
    notes,
    chain_hash: bufHash,
    view,
  };
}

export function certName(der) {
  return rfc4514(new x509.X509Certificate(der).subjectName);
}

export function certPem(der) {
  return new x509.X509Certificate(der).toString("pem");
}

// ECDSA verify of a raw r||s SPDM signature with the leaf's public key (X||Y).
export async function ecdsaVerify(alg, xy, hashName, sig, message) {
  const key = await crypto.subtle.importKey("raw", concat(new Uint8Array([4]), xy), { name: "ECDSA", namedCurve: CURVE[alg] }, false, ["verify"]);
  return crypto.subtle.verify({ name: "ECDSA", hash: hashName }, key, sig, message);
}
export { SIGHASH };
