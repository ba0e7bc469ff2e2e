// The attestation flow and its verdict, as `uspdm attest` runs and words it
// (tools/uspdm_tools/verifier.py): same verdicts, exit codes, reasons and
// JSON report schema (`uspdm attest --json`).
import { Requester, ProtocolError, VerificationError, Unreachable, DeadlineExceeded, ASYM_NAMES, HASHES, MEAS_HASH_NAMES, MEAS_TYPES,
  CAP, capNames, measurementSummary } from "./spdm.js";
import { validateChain, ChainError, certName } from "./pki.js";
import { hex, versionStr, equal } from "./util.js";
import { openSession } from "./session.js";

export const EXIT = { TRUSTED: 0, USAGE: 1, UNREACHABLE: 2, PROTOCOL: 3, UNTRUSTED: 4, MISMATCH: 5 };
export const USPDM_INDEX_LABELS = { 0x40: "board configuration", 0x41: "MicroPython version", 0x42: "board / hardware",
  0x43: "security version number", 0x44: "file manifest", 0xfe: "device mode" };
export const MANIFEST_INDEX = 0x44;

export function fileNames(blocks) {
  for (const b of blocks) {
    if (b.index === MANIFEST_INDEX && b.raw_bitstream && b.type === 4) {
      const names = {};
      for (const line of new TextDecoder().decode(b.value).split(/\r?\n/)) {
        const sp = line.indexOf(" ");
        if (sp < 0) continue;
        const i = parseInt(line.slice(0, sp), 16);
        if (!Number.isNaN(i) && /^[0-9a-fA-F]+$/.test(line.slice(0, sp))) names[i] = line.slice(sp + 1);
      }
      return names;
    }
  }
  return {};
}

function text(b) {
  if (!b.raw_bitstream) return null;
  const v = b.value;
  if (!v.length) return null;
  for (const c of v) if (c < 32 || c >= 127) return null;
  return new TextDecoder().decode(v);
}

export function label(b) {
  const t = b.type, idx = b.index;
  let name;
  if (idx in USPDM_INDEX_LABELS) {
    name = USPDM_INDEX_LABELS[idx];
    if (idx === MANIFEST_INDEX && b.raw_bitstream) {
      // as Python's bytes.splitlines(): no empty last line for a trailing newline
      const lines = new TextDecoder().decode(b.value).split(/\r\n|\r|\n/);
      if (lines.length && lines[lines.length - 1] === "") lines.pop();
      const n = lines.length;
      return name + ": " + n + " files named";
    }
  } else if (b.file) name = b.file;
  else if (idx >= 1 && idx <= 0x3f && t === 1) name = "firmware file #" + idx;
  else name = t !== null && t !== undefined ? MEAS_TYPES[t] || "type " + t : "vendor-defined";
  const v = b.value;
  if (b.raw_bitstream && t === 7 && v.length === 8) {
    let n = 0n;
    for (let i = 7; i >= 0; i--) n = (n << 8n) | BigInt(v[i]);
    return name + ": " + n.toString();
  }
  if (b.raw_bitstream && t === 5 && v.length === 16) {
    const f = [0, 4, 8, 12].map((i) => (v[i] | (v[i + 1] << 8) | (v[i + 2] << 16) | (v[i + 3] << 24)) >>> 0);
    return name + ": operational 0x" + f[1].toString(16) + "/0x" + f[0].toString(16) + ", device 0x" + f[3].toString(16) + "/0x" + f[2].toString(16);
  }
  const tx = text(b);
  if (tx !== null) return name + ": " + tx;
  return name;
}

export function blockJson(b) {
  return { index: b.index, type: b.type, type_name: b.type in MEAS_TYPES ? MEAS_TYPES[b.type] : null,
    raw_bitstream: b.raw_bitstream, value: hex(b.value), label: label(b) };
}

export function compareGolden(blocks, golden) {
  const rows = [];
  let ok = true;
  const seen = new Set();
  for (const b of blocks) {
    const g = golden[b.index];
    seen.add(b.index);
    let verdict, why;
    if (!g) { verdict = "UNEXPECTED"; why = "not in golden file"; ok = false; }
    else if (hex(b.value) !== String(g.value).toLowerCase()) { verdict = "MISMATCH"; why = "differs from the golden value"; ok = false; }
    else if (g.type !== null && g.type !== undefined && g.type !== b.type) { verdict = "MISMATCH"; why = "type " + b.type + ", expected " + g.type; ok = false; }
    else { verdict = "OK"; why = ""; }
    const row = { index: b.index, verdict, detail: why };
    if (verdict === "MISMATCH") row.expected = String(g.value).toLowerCase();   // in full, as uspdm attest reports it
    rows.push(row);
  }
  for (const idx of Object.keys(golden).map(Number).sort((a, b) => a - b)) {
    if (!seen.has(idx)) { rows.push({ index: idx, verdict: "MISSING", detail: "in golden file, not reported by the device" }); ok = false; }
  }
  return { rows, ok };
}

function finish(rep, code, verdict, why) {
  rep.exit_code = code;
  rep.verdict = verdict;
  rep.reason = why;
  return rep;
}

// Run the flow over an MctpLink.  opts: {root (DER), golden ({index: entry}), goldenMeta, version (0x12..), algs,
// slot, session, tamper, onTrace, onStage}.  Returns {report, req, chainView, blocks, session}.
export async function attest(link, opts) {
  const rep = { verdict: null, exit_code: null, errors: [] };
  const r = new Requester(link, { version: opts.version ?? null, algs: opts.algs || ["p384", "p256"],
    timeoutMs: opts.timeoutMs || 5000, deadlineMs: opts.deadlineMs || 300000, session: !!opts.session, tamper: opts.tamper, onTrace: opts.onTrace });
  rep.timings = r.timings;
  const out = { report: rep, req: r, chainView: null, blocks: null, session: null };
  let stage = "connect";
  const st = (s) => { stage = s; if (opts.onStage) opts.onStage(s); };
  let ch = null;
  let meas = null;
  let sess = null;
  try {
    st("negotiation");
    await r.initConnection();
    rep.connection = {
      version: versionStr(r.version),
      versions_offered: r.versions.map(versionStr),
      base_asym: ASYM_NAMES[r.asym] || "0x" + r.asym.toString(16),
      base_hash: HASHES[r.hash][0],
      measurement_hash: r.measHash ? MEAS_HASH_NAMES[r.measHash] || "0x" + r.measHash.toString(16) : "none",
      capabilities: capNames(r.rspFlags),
      ct_exponent: r.ctExponent,
      data_transfer_size: r.rspDts,
      max_spdm_msg_size: r.rspMax,
    };
    const slot = opts.slot || 0;
    st("digests");
    const digests = await r.getDigests();
    rep.slots_provisioned = Object.keys(digests).map(Number).sort();
    if (!(slot in digests)) {
      throw new ProtocolError("slot " + slot + " is not provisioned (provisioned: " + (rep.slots_provisioned.join(", ") || "none") + ")");
    }
    st("certificate");
    const buf = await r.getCertificate(slot);
    st("chain");
    let info;
    try {
      info = await validateChain(buf, r.hashName, r.H, r.alg, r.version, opts.root, digests[slot]);
    } catch (e) {
      if (e instanceof ChainError) {
        out.chainView = e.view || null;
        throw new VerificationError("certificate chain: " + e.message);
      }
      throw e;
    }
    out.chainView = info.view;
    r.leafXY = info.leaf_xy;
    rep.identity = {
      slot,
      subject: info.leaf_subject,
      device_info: info.device_info,
      key: (ASYM_NAMES[r.asym]) + " " + hex(info.leaf_xy),
      chain_bytes: buf.length,
      chain: info.certificates,
      profile_notes: info.notes,
      root: certName(opts.root),
    };
    st("challenge");
    ch = await r.challenge(slot);
    rep.challenge = { signature: "valid", m1_bytes: ch.m1Len, summary_type: ch.summaryType, cert_chain_hash: hex(ch.chainHash) };
    let mr = r;
    if (opts.session) {
      st("session");
      sess = await openSession(r, slot);
      out.session = sess;
      rep.session = { id: "0x" + sess.sid.toString(16).toUpperCase().padStart(8, "0"), handshake: sess.inClear ? "in the clear" : "encrypted",
        establishment_ms: Math.round(10 * (sess.timings.KEY_EXCHANGE + sess.timings.FINISH)) / 10 };
      r.transport = sess.transport;
    }
    if (r.rspFlags & CAP.MEAS_MASK) {
      st("measurements");
      const count = (await mr.getMeasurements(0, false, slot)).count;
      const signed = !!(r.rspFlags & CAP.MEAS_SIG);
      meas = await mr.getMeasurements(0xff, signed, slot);
      const names = fileNames(meas.blocks);
      for (const b of meas.blocks) if (b.index in names && b.index !== MANIFEST_INDEX) b.file = names[b.index];
      out.blocks = meas.blocks;
      rep.measurements = {
        count_reported: count,
        signed,
        signature: signed ? "valid" : "not signed (responder cannot sign)",
        l1_bytes: meas.l1Len ?? null,
        content_changed: meas.contentChanged,
        blocks: meas.blocks.map(blockJson),
      };
      if (count !== meas.blocks.length) throw new ProtocolError("responder reports " + count + " measurements but sent " + meas.blocks.length + " blocks");
      if (ch.summaryHash && ch.summaryType === 0xff) {
        const want = await measurementSummary(r.hashName, meas.blocks);
        if (equal(want, ch.summaryHash)) rep.challenge.summary_hash = "matches measurements";
        else if (r.version <= 0x11 && equal(await measurementSummary(r.hashName, meas.blocks, true), ch.summaryHash)) {
          rep.challenge.summary_hash = "matches measurements (SPDM 1.0/1.1.1 form)";
        } else throw new VerificationError("CHALLENGE_AUTH measurement summary hash does not match the measurements");
      }
      if (!signed) throw new VerificationError("measurements are not signed (responder lacks MEAS_CAP with signature)");
    }
    if (sess) {
      st("session");
      await sess.heartbeat();
      await sess.keyUpdate();
      await sess.heartbeat();
      st("end session");
      await sess.end();
      r.transport = null;
    }
  } catch (e) {
    r.transport = null;
    if (e instanceof DeadlineExceeded) return (finish(rep, EXIT.UNREACHABLE, "DEADLINE EXCEEDED", e.message + " (during " + stage + ")"), out);
    if (e instanceof Unreachable) return (finish(rep, EXIT.UNREACHABLE, "UNREACHABLE", e.message + " (during " + stage + ")"), out);
    if (e instanceof ProtocolError) {
      if (e.code !== null) rep.spdm_error = { code: e.code, name: e.errName, data: e.data };
      return (finish(rep, EXIT.PROTOCOL, "PROTOCOL ERROR", e.message + " (during " + stage + ")"), out);
    }
    if (e instanceof VerificationError) return (finish(rep, EXIT.UNTRUSTED, "UNTRUSTED", e.message + " (during " + stage + ")"), out);
    rep.errors.push(String(e && e.stack || e));
    return (finish(rep, EXIT.PROTOCOL, "PROTOCOL ERROR", "page error: " + (e && e.message || e) + " (during " + stage + ")"), out);
  }
  const golden = opts.golden;
  if (!golden) {
    rep.golden = null;
    return (finish(rep, EXIT.TRUSTED, "TRUSTED", "identity verified; measurements signed but UNCHECKED (no --golden)"), out);
  }
  const { rows, ok } = compareGolden(meas ? meas.blocks : [], golden);
  rep.golden = rows;
  if (!ok) {
    const bad = rows.filter((x) => x.verdict !== "OK").length;
    let why = "identity verified, but " + bad + " measurement(s) differ from the golden file";
    const gh = (opts.goldenMeta || {}).measurement_hash;
    if (gh && ![gh, "none"].includes(rep.connection.measurement_hash)) {
      why += " (the golden file holds " + gh + " digests, this connection negotiated " + rep.connection.measurement_hash + ": capture it with the same --alg)";
    }
    return (finish(rep, EXIT.MISMATCH, "MEASUREMENT MISMATCH", why), out);
  }
  return (finish(rep, EXIT.TRUSTED, "TRUSTED", "identity verified; all " + rows.length + " measurements match the golden file"), out);
}

// A golden file (`uspdm golden` format) from a trusted report.
export function goldenDoc(rep, port) {
  return {
    format: "uspdm-golden/1",
    captured: new Date().toISOString().replace(/\.\d{3}Z$/, "+00:00"),
    port,
    device: { subject: rep.identity.subject, device_info: rep.identity.device_info },
    spdm_version: rep.connection.version,
    measurement_hash: rep.connection.measurement_hash,
    measurements: rep.measurements.blocks.map((b) => ({ index: b.index, type: b.type, type_name: b.type_name,
      raw_bitstream: b.raw_bitstream, value: b.value, label: b.label })),
  };
}

export function goldenMap(doc) {
  if (!doc || !Array.isArray(doc.measurements)) throw new Error("no 'measurements' list");
  const m = {};
  for (const e of doc.measurements) m[Number(e.index)] = e;
  return m;
}
