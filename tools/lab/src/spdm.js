// The page's SPDM requester (DSP0274 1.0-1.3): builds every request, parses
// every response itself, keeps its own transcripts and verifies every
// signature with WebCrypto.  Independent of the board's code (lib/uspdm);
// the same rules as the host verifier (tools/uspdm_tools/requester.py), so
// the page and `uspdm attest` judge a board the same way.
//
// Every message goes through `exchange`, which records a trace entry the
// page shows: bytes, timing, MCTP packets, and (added by the flows) what
// the message appended to which transcript and the hash after it.
import { concat, bytes, digest, equal, hex, le16, le32, random, u16, u24, u32, versionStr, TimeoutError, sleep } from "./util.js";
import { ecdsaVerify } from "./pki.js";

export const C = {
  GET_DIGESTS: 0x81, GET_CERTIFICATE: 0x82, CHALLENGE: 0x83, GET_VERSION: 0x84, CHUNK_SEND: 0x85, CHUNK_GET: 0x86,
  GET_MEASUREMENTS: 0xe0, GET_CAPABILITIES: 0xe1, NEGOTIATE_ALGORITHMS: 0xe3, KEY_EXCHANGE: 0xe4, FINISH: 0xe5,
  HEARTBEAT: 0xe8, KEY_UPDATE: 0xe9, END_SESSION: 0xec, RESPOND_IF_READY: 0xff,
  DIGESTS: 0x01, CERTIFICATE: 0x02, CHALLENGE_AUTH: 0x03, VERSION: 0x04, CHUNK_SEND_ACK: 0x05, CHUNK_RESPONSE: 0x06,
  MEASUREMENTS: 0x60, CAPABILITIES: 0x61, ALGORITHMS: 0x63, KEY_EXCHANGE_RSP: 0x64, FINISH_RSP: 0x65,
  HEARTBEAT_ACK: 0x68, KEY_UPDATE_ACK: 0x69, END_SESSION_ACK: 0x6c, ERROR: 0x7f,
};
export const CODE_NAMES = Object.fromEntries(Object.entries(C).map(([k, v]) => [v, k]));

export const ERROR_NAMES = {
  0x01: "InvalidRequest", 0x02: "InvalidSession", 0x03: "Busy", 0x04: "UnexpectedRequest", 0x05: "Unspecified",
  0x06: "DecryptError", 0x07: "UnsupportedRequest", 0x08: "RequestInFlight", 0x09: "InvalidResponseCode",
  0x0a: "SessionLimitExceeded", 0x0b: "SessionRequired", 0x0c: "ResetRequired", 0x0d: "ResponseTooLarge",
  0x0e: "RequestTooLarge", 0x0f: "LargeResponse", 0x10: "MessageLost", 0x11: "InvalidPolicy",
  0x41: "VersionMismatch", 0x42: "ResponseNotReady", 0x43: "RequestResynch", 0x44: "OperationFailed",
  0x45: "NoPendingRequests", 0xff: "VendorDefined",
};

export const CAP_FLAGS = ["CACHE", "CERT", "CHAL", "MEAS_NO_SIG", "MEAS_SIG", "MEAS_FRESH", "ENCRYPT", "MAC", "MUT_AUTH",
  "KEY_EX", "PSK", "PSK_CTX", "ENCAP", "HBEAT", "KEY_UPD", "HANDSHAKE_IN_CLEAR", "PUB_KEY_ID", "CHUNK", "ALIAS_CERT",
  "SET_CERT", "CSR", "CERT_INSTALL_RESET", "EP_INFO0", "EP_INFO1", "MEL", "EVENT", "MULTI_KEY0", "MULTI_KEY1",
  "GET_KEY_PAIR_INFO", "SET_KEY_PAIR_INFO"];
export const CAP = { CERT: 1 << 1, CHAL: 1 << 2, MEAS_NO_SIG: 1 << 3, MEAS_SIG: 1 << 4, MEAS_MASK: 3 << 3, ENCRYPT: 1 << 6,
  MAC: 1 << 7, KEY_EX: 1 << 9, HBEAT: 1 << 13, KEY_UPD: 1 << 14, HANDSHAKE_IN_CLEAR: 1 << 15, CHUNK: 1 << 17 };

export const ASYM = { p384: 0x80, p256: 0x10 };
export const ASYM_NAMES = { 0x80: "ECDSA P-384", 0x10: "ECDSA P-256" };
export const ASYM_TO_ALG = { 0x80: "p384", 0x10: "p256" };
export const HASHES = { 0x02: ["SHA-384", "sha384", 48], 0x01: ["SHA-256", "sha256", 32] };
export const NATURAL_HASH = { p384: 0x02, p256: 0x01 };
export const MEAS_HASH_NAMES = { 0x01: "raw bit stream", 0x02: "SHA-256", 0x04: "SHA-384", 0x08: "SHA-512" };
export const MEAS_TYPES = { 0: "immutable ROM", 1: "mutable firmware", 2: "hardware configuration",
  3: "firmware configuration", 4: "measurement manifest", 5: "device mode", 6: "version", 7: "secure version number",
  8: "hash-extend", 9: "informational", 10: "structured manifest" };

const enc = new TextEncoder();
export const SIGN_CTX = {
  challenge: "responder-challenge_auth signing",
  measurements: "responder-measurements signing",
  kex: "responder-key_exchange_rsp signing",
};

// RESPOND_IF_READY attempts before giving up (once WT_max has passed twice, see resolve())
export const RNR_RETRIES = 20;

export class SpdmError extends Error {}
export class Unreachable extends SpdmError {}
export class ProtocolError extends SpdmError {
  constructor(msg, code = null, data = null) {
    if (code !== null) msg += ": ERROR " + (ERROR_NAMES[code] || "0x" + code.toString(16)) + " (0x" +
      code.toString(16).toUpperCase().padStart(2, "0") + ", data 0x" + (data || 0).toString(16).toUpperCase().padStart(2, "0") + ")";
    super(msg);
    this.code = code;
    this.data = data;
    this.errName = code !== null ? ERROR_NAMES[code] || "0x" + code.toString(16) : null;
  }
}
export class VerificationError extends SpdmError {}
// The whole run did not complete within its overall deadline (uspdm attest --deadline, 300 s by default).
export class DeadlineExceeded extends Unreachable {}

const oneBit = (v) => v !== 0 && (v & (v - 1)) === 0;

export function signingPrefix(version, context) {
  const tag = enc.encode("dmtf-spdm-v" + (version >> 4) + "." + (version & 0xf) + ".*");
  const ctx = enc.encode(context);
  return concat(tag, tag, tag, tag, new Uint8Array(36 - ctx.length), ctx);
}

export class Requester {
  constructor(link, { version = null, algs = ["p384", "p256"], timeoutMs = 5000, dts = 4096, maxMsg = 65536,
    portion = 1024, session = false, tamper = null, onTrace = () => {}, deadlineMs = 300000 } = {}) {
    this.link = link;
    this.wantVersion = version;
    this.algs = algs;
    this.timeoutMs = timeoutMs;
    this.dts = dts;
    this.maxMsg = maxMsg;
    this.portion = portion;
    this.session = session;
    this.tamper = tamper;       // {code, offset(rsp) -> index}: flip a byte of that response "in flight"
    this.onTrace = onTrace;
    this.deadlineMs = deadlineMs;
    this.deadlineAt = performance.now() + deadlineMs;
    this.timings = [];
    this.trace = [];
    this.transport = null;      // a session transport when measurements run inside a session
    this.reset();
  }

  reset() {
    this.version = null;
    this.versions = [];
    this.rspFlags = 0;
    this.ctExponent = null;
    this.rspDts = null;
    this.rspMax = null;
    this.asym = this.hash = this.measHash = null;
    this.measSpec = 0;
    this.digests = {};
    this.chains = {};
    this.A = new Uint8Array(0);
    this.B = new Uint8Array(0);
    this.C = new Uint8Array(0);
    this.L = new Uint8Array(0);
    this.authenticated = false;
    this.pending = [];
  }

  get H() { return HASHES[this.hash][2]; }
  get hashName() { return HASHES[this.hash][1]; }
  get hashLabel() { return HASHES[this.hash][0]; }
  get S() { return this.asym === 0x80 ? 96 : 64; }
  get alg() { return ASYM_TO_ALG[this.asym]; }

  hdr(code, p1 = 0, p2 = 0, ver = null) {
    return bytes(ver === null ? this.version : ver, code, p1, p2);
  }

  // ---- trace
  record(e) {
    e.id = this.trace.length;
    e.transcripts = [];
    this.trace.push(e);
    this.onTrace("add", e);
    return e;
  }

  // Append `data` (the part of message `e` that joins it) to transcript `name` and note the hash after it.
  async append(name, data, e, label) {
    this[name] = concat(this[name], data);
    if (!this.hash) {
      // the transcript hash is the negotiated one: noted once ALGORITHMS chose it
      this.pending.push([e, label || name, this[name], data.length]);
      return;
    }
    for (const p of this.pending.splice(0)) await this.noteTranscript(...p);
    await this.noteTranscript(e, label || name, this[name], data.length);
  }

  async noteTranscript(e, label, whole, appended, hashName) {
    const hn = hashName || (this.hash ? this.hashName : "sha256");
    const h = await digest(hn, whole);
    if (e) {
      e.transcripts.push({ name: label, appended, total: whole.length, hash: hex(h), hashAlg: hn.toUpperCase().replace("SHA", "SHA-") });
      this.onTrace("update", e);
    }
    return h;
  }

  // ---- transport
  async xfer(req, timeoutMs) {
    const left = this.deadlineAt - performance.now();
    if (left <= 0) {
      throw new DeadlineExceeded("not done within the overall deadline of " + this.deadlineMs / 1000 + " s (at " +
        (CODE_NAMES[req[1]] || "0x" + hex([req[1]]).toUpperCase()) + ")");
    }
    timeoutMs = Math.min(timeoutMs, left);
    let r;
    const t0 = performance.now();
    try {
      if (this.transport) r = await this.transport(req, timeoutMs);
      else r = await this.link.request(concat(bytes(0x05), req), timeoutMs);
    } catch (e) {
      if (e instanceof TimeoutError) {
        throw new Unreachable("no answer to " + (CODE_NAMES[req[1]] || "0x" + hex([req[1]])) + " within " + (timeoutMs / 1000).toFixed(1) + " s");
      }
      throw e;
    }
    let body = r.body;
    if (!this.transport) {
      if (!body.length || body[0] !== 0x05) throw new ProtocolError("transport: answer is not an SPDM message (MCTP type " + (body[0] ?? "none") + ")");
      body = body.subarray(1);
    }
    const ms = performance.now() - t0;
    const reqE = this.record({ dir: "req", bytes: req, code: req[1], ms: 0, stats: r.stats, secured: !!this.transport, version: this.version });
    let rsp = new Uint8Array(body);
    let tampered = null;
    if (this.tamper && rsp.length > 1 && rsp[1] === this.tamper.code && !this.tamper.done) {
      tampered = this.tamper.offset(rsp, this);
      rsp[tampered] ^= 0x01;
      this.tamper.done = true;
    }
    const rspE = this.record({ dir: "rsp", bytes: rsp, code: rsp[1], ms, stats: r.stats, secured: !!this.transport,
      reqCode: req[1], reqBytes: req, tampered, version: this.version });
    if (rsp.length < 4) throw new ProtocolError("response to " + (CODE_NAMES[req[1]] || "?") + " shorter than an SPDM header (" + rsp.length + " bytes)");
    return { rsp, reqE, rspE };
  }

  timeout(crypto) {
    let t = this.timeoutMs;
    if (crypto && this.ctExponent !== null) t += Math.pow(2, this.ctExponent) / 1000;
    return t;
  }

  curVer(req) { return req[1] === C.GET_VERSION ? 0x10 : this.version; }

  // Send `req`; follow ResponseNotReady / LargeResponse / Busy; return the final response.
  async exchange(req, expect, { crypto = false, name = null } = {}) {
    name = name || CODE_NAMES[req[1]] || "0x" + hex([req[1]]);
    const t0 = performance.now();
    const stats = { retries: 0, chunks: 0 };
    let busy = 0;
    let x;
    for (;;) {
      x = await this.xfer(req, this.timeout(crypto));
      x = await this.resolve(req, x, crypto, stats);
      if (x.rsp[1] === C.ERROR && x.rsp[2] === 0x03 && busy < 3) { busy++; await sleep(100); continue; }
      break;
    }
    const rsp = x.rsp;
    // named as `uspdm attest --json` names them: the session's own messages are "(secured)",
    // the requests merely carried inside it (GET_MEASUREMENTS) keep their plain name
    const own = [C.FINISH, C.HEARTBEAT, C.KEY_UPDATE, C.END_SESSION].includes(req[1]);
    this.timings.push({ message: name + (this.transport && own ? " (secured)" : ""), ms: Math.round((performance.now() - t0) * 100) / 100,
      request_bytes: req.length, response_bytes: rsp.length, not_ready_retries: stats.retries, chunks: stats.chunks });
    if (rsp[1] === C.ERROR) throw new ProtocolError(name + " failed", rsp[2], rsp[3]);
    const exp = req[1] === C.GET_VERSION ? 0x10 : this.version;
    if (rsp[0] !== exp) throw new ProtocolError(name + ": response version 0x" + hex([rsp[0]]).toUpperCase() + ", expected 0x" + hex([exp]).toUpperCase());
    if (rsp[1] !== expect) throw new ProtocolError(name + ": unexpected response code 0x" + hex([rsp[1]]).toUpperCase() + " (" + (CODE_NAMES[rsp[1]] || "?") + "), expected " + CODE_NAMES[expect]);
    return { rsp, reqE: x.firstReqE || x.reqE, rspE: x.rspE };
  }

  async resolve(req, x, crypto, stats) {
    const deadline = performance.now() + 60000;
    let tries = 0;
    let since = null;   // when the first ResponseNotReady came
    let waited = 0;
    const first = x.reqE;
    while (x.rsp[1] === C.ERROR && (x.rsp[2] === 0x42 || x.rsp[2] === 0x0f)) {
      const rsp = x.rsp;
      if (rsp[0] !== this.curVer(req)) throw new ProtocolError("ERROR response version mismatch");
      if (rsp[2] === 0x0f) {
        if (rsp.length < 5) throw new ProtocolError("LargeResponse without a handle");
        x = await this.chunkGet(rsp[4], stats);
        x.firstReqE = first;
        continue;
      }
      if (rsp.length < 8) throw new ProtocolError("ResponseNotReady without its extended data");
      const [rdtExp, reqCode, token, rdtm] = [rsp[4], rsp[5], rsp[6], rsp[7]];
      if (reqCode !== req[1]) throw new ProtocolError("ResponseNotReady names request 0x" + hex([reqCode]) + ", sent 0x" + hex([req[1]]));
      stats.retries = ++tries;
      const rdt = Math.pow(2, Math.min(rdtExp, 31)) / 1000;
      if (since === null) since = performance.now();
      // as the host requester: give up after RNR_RETRIES only once the board has also had its
      // own worst case, WT_max = RDT x RDTM, twice over (a busy host or a slow board stretches
      // the work; the count alone would give up after 20 x RDT)
      const spent = Math.max(waited, performance.now() - since);
      if (tries > RNR_RETRIES && spent >= 2 * rdt * Math.max(rdtm, 1)) {
        throw new ProtocolError((CODE_NAMES[req[1]] || "?") + ": still not ready after " + (tries - 1) + " RESPOND_IF_READY");
      }
      if (performance.now() > deadline) throw new Unreachable((CODE_NAMES[req[1]] || "?") + ": no response within 60 s of ResponseNotReady");
      const pause = Math.min(rdt, 2000);
      waited += pause;
      await sleep(pause);
      x = await this.xfer(this.hdr(C.RESPOND_IF_READY, req[1], token), this.timeoutMs + rdt * Math.max(rdtm, 1));
      x.firstReqE = first;
    }
    return x;
  }

  chunking() {
    return this.version !== null && this.version >= 0x12 && (this.rspFlags & CAP.CHUNK) && this.rspDts !== null;
  }

  async chunkGet(handle, stats) {
    if (!this.chunking()) throw new ProtocolError("LargeResponse although chunking was not negotiated");
    let seq = 0;
    let buf = new Uint8Array(0);
    let total = null;
    let last;
    for (;;) {
      const x = await this.xfer(concat(this.hdr(C.CHUNK_GET, 0, handle), le16(seq)), this.timeoutMs);
      last = x;
      const rsp = x.rsp;
      stats.chunks++;
      if (rsp[1] === C.ERROR) throw new ProtocolError("CHUNK_GET failed", rsp[2], rsp[3]);
      if (rsp[0] !== this.version || rsp[1] !== C.CHUNK_RESPONSE) throw new ProtocolError("bad CHUNK_RESPONSE");
      const hl = seq === 0 ? 16 : 12;
      if (rsp.length < hl) throw new ProtocolError("CHUNK_RESPONSE too short");
      if (rsp[3] !== handle || u16(rsp, 4) !== seq) throw new ProtocolError("CHUNK_RESPONSE handle/sequence mismatch");
      const size = u32(rsp, 8);
      if (seq === 0) total = u32(rsp, 12);
      if (rsp.length !== hl + size) throw new ProtocolError("CHUNK_RESPONSE ChunkSize does not match");
      buf = concat(buf, rsp.subarray(hl));
      if (buf.length > total) throw new ProtocolError("chunks exceed the announced LargeMessageSize");
      if (rsp[2] & 1) break;
      if (size === 0) throw new ProtocolError("empty non-final chunk");
      seq = (seq + 1) & 0xffff;
    }
    if (buf.length !== total || buf.length < 4) throw new ProtocolError("large response has " + buf.length + " bytes, announced " + total);
    // the reassembled response: shown as its own entry so its fields can be decoded
    const e = this.record({ dir: "rsp", bytes: buf, code: buf[1], ms: 0, reassembled: true, version: this.version, reqCode: null });
    return { rsp: buf, reqE: last.reqE, rspE: e };
  }

  // ---- VCA
  async getVersion() {
    this.reset();
    const req = bytes(0x10, C.GET_VERSION, 0, 0);
    const { rsp, reqE, rspE } = await this.exchange(req, C.VERSION);
    if (rsp.length < 6) throw new ProtocolError("VERSION too short");
    const n = rsp[5];
    if (n === 0 || rsp.length !== 6 + 2 * n) throw new ProtocolError("VERSION: " + n + " entries in " + rsp.length + " bytes");
    const vs = new Set();
    for (let i = 0; i < n; i++) vs.add((u16(rsp, 6 + 2 * i) >> 8) & 0xff);
    this.versions = [...vs].sort();
    const common = this.versions.filter((v) => [0x10, 0x11, 0x12, 0x13].includes(v));
    if (this.wantVersion !== null) {
      if (!this.versions.includes(this.wantVersion)) {
        throw new ProtocolError("responder does not support SPDM " + versionStr(this.wantVersion) + " (it offers " + this.versions.map(versionStr).join(", ") + ")");
      }
      this.version = this.wantVersion;
    } else {
      if (!common.length) throw new ProtocolError("no common SPDM version");
      this.version = Math.max(...common);
    }
    this.A = new Uint8Array(0);
    await this.append("A", req, reqE, "VCA");
    await this.append("A", rsp, rspE, "VCA");
  }

  sessionFlags() {
    // ENCRYPT MAC KEY_EX HBEAT KEY_UPD (the host's SessionRequester offers PSK too; the page does not)
    return this.session ? CAP.ENCRYPT | CAP.MAC | CAP.KEY_EX | CAP.HBEAT | CAP.KEY_UPD : 0;
  }

  async getCapabilities() {
    const v = this.version;
    let req;
    if (v === 0x10) req = this.hdr(C.GET_CAPABILITIES);
    else {
      const flags = this.sessionFlags() | (v >= 0x12 ? CAP.CHUNK : 0);
      req = concat(this.hdr(C.GET_CAPABILITIES), bytes(0, 0), le16(0), le32(flags));
      if (v >= 0x12) req = concat(req, le32(this.dts), le32(this.maxMsg));
    }
    const { rsp, reqE, rspE } = await this.exchange(req, C.CAPABILITIES);
    const need = v >= 0x12 ? 20 : 12;
    if (rsp.length !== need) throw new ProtocolError("CAPABILITIES is " + rsp.length + " bytes, expected " + need + " for SPDM " + versionStr(v));
    this.ctExponent = rsp[5];
    this.rspFlags = u32(rsp, 8);
    if ((this.rspFlags & CAP.MEAS_MASK) === CAP.MEAS_MASK) throw new ProtocolError("CAPABILITIES: MEAS_CAP has the reserved value 3");
    if (v >= 0x12) {
      this.rspDts = u32(rsp, 12);
      this.rspMax = u32(rsp, 16);
      if (this.rspDts < 42) throw new ProtocolError("CAPABILITIES: DataTransferSize below the minimum 42");
      if (this.rspMax < this.rspDts) throw new ProtocolError("CAPABILITIES: MaxSPDMmsgSize below DataTransferSize");
    }
    await this.append("A", req, reqE, "VCA");
    await this.append("A", rsp, rspE, "VCA");
  }

  async negotiateAlgorithms() {
    const v = this.version;
    let asym = 0, hsh = 0;
    for (const a of this.algs) { asym |= ASYM[a]; hsh |= NATURAL_HASH[a]; }
    this.offer = { asym, hsh };
    let tables = new Uint8Array(0);
    let ntab = 0;
    this.offerTables = { 2: 0, 3: 0, 4: 0, 5: 0 };
    if (v >= 0x11) {
      let dhe = 0;
      if (this.session) dhe = 0x10;   // secp384r1 (the board's DHE)
      else for (const a of this.algs) dhe |= a === "p384" ? 0x10 : 0x08;
      for (const [typ, val] of [[2, dhe], [3, 0x02], [4, asym], [5, 0x01]]) {
        tables = concat(tables, bytes(typ, 0x20), le16(val));
        this.offerTables[typ] = val;
        ntab++;
      }
    }
    const other = v >= 0x12 ? 0x02 : 0;
    const req = concat(this.hdr(C.NEGOTIATE_ALGORITHMS, ntab), le16(32 + tables.length), bytes(0x01, other), le32(asym), le32(hsh),
      new Uint8Array(12), bytes(0, 0, 0, 0), tables);
    const { rsp, reqE, rspE } = await this.exchange(req, C.ALGORITHMS);
    if (rsp.length < 36) throw new ProtocolError("ALGORITHMS too short (" + rsp.length + " bytes)");
    if (u16(rsp, 4) !== rsp.length) throw new ProtocolError("ALGORITHMS Length " + u16(rsp, 4) + " but " + rsp.length + " bytes received");
    this.measSpec = rsp[6];
    this.otherParams = rsp[7];
    this.measHash = u32(rsp, 8);
    this.asym = u32(rsp, 12);
    this.hash = u32(rsp, 16);
    if (rsp[32] || rsp[33]) throw new ProtocolError("ALGORITHMS selects extended algorithms we did not offer");
    if (!oneBit(this.asym) || !(this.asym & asym)) throw new ProtocolError("ALGORITHMS: BaseAsymSel 0x" + this.asym.toString(16) + " is not one of the offered 0x" + asym.toString(16));
    if (!oneBit(this.hash) || !(this.hash & hsh)) throw new ProtocolError("ALGORITHMS: BaseHashSel 0x" + this.hash.toString(16) + " is not one of the offered 0x" + hsh.toString(16));
    if (this.rspFlags & CAP.MEAS_MASK) {
      if (this.measSpec !== 0x01) throw new ProtocolError("ALGORITHMS: MeasurementSpecificationSel is not DMTF");
      if (!oneBit(this.measHash)) throw new ProtocolError("ALGORITHMS: MeasurementHashAlgo must have exactly one bit");
    } else if (this.measHash) throw new ProtocolError("ALGORITHMS: MeasurementHashAlgo set without MEAS_CAP");
    const n = v >= 0x11 ? rsp[2] : 0;
    let o = 36;
    this.tables = {};
    for (let i = 0; i < n; i++) {
      if (o + 4 > rsp.length) throw new ProtocolError("ALGORITHMS: structure table overruns the message");
      const typ = rsp[o], cnt = rsp[o + 1];
      if (cnt >> 4 !== 2 || cnt & 0xf) throw new ProtocolError("ALGORITHMS: unexpected structure table layout");
      if (!(typ in this.offerTables)) throw new ProtocolError("ALGORITHMS: structure table of type " + typ + " we did not send");
      const val = u16(rsp, o + 2);
      if (val && (!oneBit(val) || !(val & this.offerTables[typ]))) throw new ProtocolError("ALGORITHMS: table type " + typ + " selects 0x" + val.toString(16));
      this.tables[typ] = val;
      o += 4;
    }
    if (o !== rsp.length) throw new ProtocolError("ALGORITHMS: " + (rsp.length - o) + " trailing bytes");
    await this.append("A", req, reqE, "VCA");
    await this.append("A", rsp, rspE, "VCA");
  }

  async initConnection() {
    await this.getVersion();
    await this.getCapabilities();
    await this.negotiateAlgorithms();
  }

  // ---- digests / certificate
  async getDigests() {
    if (!(this.rspFlags & CAP.CERT)) throw new ProtocolError("responder has no CERT_CAP");
    this.L = new Uint8Array(0);
    const req = this.hdr(C.GET_DIGESTS);
    const { rsp, reqE, rspE } = await this.exchange(req, C.DIGESTS, { crypto: true });
    const mask = rsp[3];
    const n = [...Array(8).keys()].filter((i) => mask & (1 << i)).length;
    if (rsp.length !== 4 + n * this.H) throw new ProtocolError("DIGESTS: " + rsp.length + " bytes for " + n + " digests of " + this.H + " bytes");
    if (this.version >= 0x13 && mask & ~rsp[2]) throw new ProtocolError("DIGESTS: provisioned slots not within supported slots");
    this.digests = {};
    let o = 4;
    for (let s = 0; s < 8; s++) if (mask & (1 << s)) { this.digests[s] = rsp.slice(o, o + this.H); o += this.H; }
    this.B = new Uint8Array(0);
    this.C = new Uint8Array(0);
    await this.append("B", req, reqE, "M1 (B: digests, certificate)");
    await this.append("B", rsp, rspE, "M1 (B: digests, certificate)");
    return this.digests;
  }

  async getCertificate(slot = 0) {
    this.L = new Uint8Array(0);
    let buf = new Uint8Array(0);
    let total = null;
    for (;;) {
      let want = total === null ? this.portion : Math.min(this.portion, total - buf.length);
      want = Math.max(1, Math.min(want, 0xffff));
      const req = concat(this.hdr(C.GET_CERTIFICATE, slot), le16(buf.length), le16(want));
      const { rsp, reqE, rspE } = await this.exchange(req, C.CERTIFICATE, { name: "GET_CERTIFICATE" });
      if (rsp.length < 8) throw new ProtocolError("CERTIFICATE too short");
      if ((rsp[2] & 0xf) !== slot) throw new ProtocolError("CERTIFICATE for slot " + (rsp[2] & 0xf) + ", asked slot " + slot);
      const plen = u16(rsp, 4), rem = u16(rsp, 6);
      if (rsp.length !== 8 + plen) throw new ProtocolError("CERTIFICATE PortionLength " + plen + " but " + (rsp.length - 8) + " bytes follow");
      if (plen > want) throw new ProtocolError("CERTIFICATE returned " + plen + " bytes, " + want + " requested");
      if (plen === 0 && rem) throw new ProtocolError("CERTIFICATE returned an empty portion");
      buf = concat(buf, rsp.subarray(8));
      await this.append("B", req, reqE, "M1 (B: digests, certificate)");
      await this.append("B", rsp, rspE, "M1 (B: digests, certificate)");
      const t = buf.length + rem;
      if (total === null) total = t;
      else if (t !== total) throw new ProtocolError("CERTIFICATE: chain length changed from " + total + " to " + t);
      if (rem === 0) break;
    }
    this.chains[slot] = buf;
    return buf;
  }

  async verifySig(context, transcript, sig, e, what) {
    const v = this.version;
    const th = await digest(this.hashName, transcript);
    const message = v >= 0x12 ? concat(signingPrefix(v, context), th) : transcript;
    const ok = await ecdsaVerify(this.alg, this.leafXY, this.hashLabel, sig, message);
    const info = { what, context, transcriptBytes: transcript.length, transcriptHash: hex(th), hashAlg: this.hashLabel,
      prefix: v >= 0x12 ? "dmtf-spdm-v" + versionStr(v) + ".* x4 + \"" + context + "\"" : null, ok, signature: hex(sig) };
    if (e) { e.signature = info; this.onTrace("update", e); }
    if (!ok) throw new VerificationError("signature does not verify (" + context + ")");
    return info;
  }

  // ---- challenge
  async challenge(slot = 0) {
    if (!(this.rspFlags & CAP.CHAL)) throw new ProtocolError("responder has no CHAL_CAP");
    this.L = new Uint8Array(0);
    const summary = this.rspFlags & CAP.MEAS_MASK ? 0xff : 0;
    let req = concat(this.hdr(C.CHALLENGE, slot, summary), random(32));
    let context = null;
    if (this.version >= 0x13) { context = random(8); req = concat(req, context); }
    const { rsp, reqE, rspE } = await this.exchange(req, C.CHALLENGE_AUTH, { crypto: true });
    const H = this.H, S = this.S;
    if ((rsp[2] & 0xf) !== (slot & 0xf)) throw new ProtocolError("CHALLENGE_AUTH for slot " + (rsp[2] & 0xf) + ", challenged slot " + slot);
    if (!(rsp[3] & (1 << slot))) throw new ProtocolError("CHALLENGE_AUTH SlotMask lacks slot " + slot);
    let o = 4;
    if (rsp.length < o + H + 32 + (summary ? H : 0) + 2) throw new ProtocolError("CHALLENGE_AUTH too short");
    const chainHash = rsp.slice(o, o + H); o += H;
    o += 32;
    let summaryHash = null;
    if (summary) { summaryHash = rsp.slice(o, o + H); o += H; }
    const olen = u16(rsp, o); o += 2;
    if (olen > 1024) throw new ProtocolError("CHALLENGE_AUTH OpaqueLength > 1024");
    o += olen;
    if (this.version >= 0x13) {
      if (!equal(rsp.subarray(o, o + 8), context)) throw new ProtocolError("CHALLENGE_AUTH RequesterContext does not echo ours");
      o += 8;
    }
    if (rsp.length !== o + S) throw new ProtocolError("CHALLENGE_AUTH is " + rsp.length + " bytes, expected " + (o + S));
    const sig = rsp.slice(o);
    if (this.chains[slot] && !equal(chainHash, await digest(this.hashName, this.chains[slot]))) {
      throw new VerificationError("CHALLENGE_AUTH CertChainHash does not match the retrieved chain of slot " + slot);
    }
    await this.append("C", req, reqE, "M1 (C: challenge)");
    await this.append("C", rsp.subarray(0, o), rspE, "M1 (C: challenge)");
    const m1 = concat(this.A, this.B, this.C);
    rspE.sigCovers = "M1 = VCA (" + this.A.length + " B) + B (" + this.B.length + " B) + C (" + this.C.length + " B) = " + m1.length + " bytes: everything exchanged since GET_VERSION, the CHALLENGE_AUTH up to its signature";
    await this.verifySig(SIGN_CTX.challenge, m1, sig, rspE, "CHALLENGE_AUTH over M1");
    this.B = new Uint8Array(0);
    this.C = new Uint8Array(0);
    this.authenticated = true;
    return { chainHash, summaryType: summary, summaryHash, m1Len: m1.length };
  }

  // ---- measurements
  async getMeasurements(operation = 0xff, signed = true, slot = 0) {
    if (!(this.rspFlags & CAP.MEAS_MASK)) throw new ProtocolError("responder has no MEAS_CAP");
    const v = this.version;
    let req = this.hdr(C.GET_MEASUREMENTS, signed ? 1 : 0, operation);
    if (signed) {
      req = concat(req, random(32));
      if (v >= 0x11) req = concat(req, bytes(slot));
    }
    let context = null;
    if (v >= 0x13) { context = random(8); req = concat(req, context); }
    const { rsp, reqE, rspE } = await this.exchange(req, C.MEASUREMENTS, { crypto: signed });
    if (!this.authenticated) { this.B = new Uint8Array(0); this.C = new Uint8Array(0); }
    if (rsp.length < 8) throw new ProtocolError("MEASUREMENTS too short");
    const nblocks = rsp[4];
    const rlen = u24(rsp, 5);
    let o = 8;
    if (o + rlen + 34 > rsp.length) throw new ProtocolError("MEASUREMENTS record length " + rlen + " overruns the message");
    const record = rsp.slice(o, o + rlen); o += rlen;
    o += 32;
    const olen = u16(rsp, o); o += 2;
    if (olen > 1024) throw new ProtocolError("MEASUREMENTS OpaqueLength > 1024");
    o += olen;
    if (v >= 0x13) {
      if (!equal(rsp.subarray(o, o + 8), context)) throw new ProtocolError("MEASUREMENTS RequesterContext does not echo ours");
      o += 8;
    }
    const S = signed ? this.S : 0;
    if (rsp.length !== o + S) throw new ProtocolError("MEASUREMENTS is " + rsp.length + " bytes, expected " + (o + S));
    let blocks = [];
    if (operation === 0) {
      if (nblocks || rlen) throw new ProtocolError("MEASUREMENTS count answer carries blocks");
    } else {
      if (operation === 0xff && nblocks === 0) throw new ProtocolError("MEASUREMENTS: no blocks for 'all'");
      blocks = parseRecord(record, nblocks);
      for (const b of blocks) if (b.spec !== this.measSpec) throw new ProtocolError("measurement block " + b.index + " has the wrong MeasurementSpecification");
      if (new Set(blocks.map((b) => b.index)).size !== blocks.length) throw new ProtocolError("MEASUREMENTS: duplicate block indices");
    }
    const contentChanged = v >= 0x12 ? (rsp[3] >> 4) & 3 : 0;
    if (signed && v >= 0x11 && (rsp[3] & 0xf) !== slot) throw new ProtocolError("MEASUREMENTS for slot " + (rsp[3] & 0xf) + ", asked slot " + slot);
    const label = "L1 (measurements)";
    await this.append("L", req, reqE, label);
    await this.append("L", rsp.subarray(0, o), rspE, label);
    const out = { count: operation === 0 ? rsp[2] : blocks.length, blocks, signed, contentChanged, record };
    if (signed) {
      const l1 = concat(v >= 0x12 ? this.A : new Uint8Array(0), this.L);
      this.L = new Uint8Array(0);
      rspE.sigCovers = "L1 = " + (v >= 0x12 ? "VCA (" + this.A.length + " B) + " : "") + "every GET_MEASUREMENTS/MEASUREMENTS since the last signed one, this one up to its signature = " + l1.length + " bytes";
      await this.noteTranscript(rspE, "L1 (signed: VCA + L)", l1, 0);
      await this.verifySig(SIGN_CTX.measurements, l1, rsp.slice(o), rspE, "MEASUREMENTS over L1");
      out.l1Len = l1.length;
    }
    return out;
  }
}

export function parseRecord(record, count) {
  const blocks = [];
  let o = 0;
  while (o < record.length) {
    if (record.length - o < 4) throw new ProtocolError("truncated measurement block header");
    const index = record[o], spec = record[o + 1], size = u16(record, o + 2);
    if (o + 4 + size > record.length) throw new ProtocolError("measurement block " + index + " overruns the record");
    const body = record.slice(o + 4, o + 4 + size);
    const b = { index, spec, raw: record.slice(o, o + 4 + size), offset: o };
    if (spec === 0x01) {
      if (size < 3) throw new ProtocolError("DMTF measurement block " + index + " too short");
      const vtype = body[0], vsize = u16(body, 1);
      if (vsize + 3 !== size) throw new ProtocolError("DMTF measurement block " + index + ": value size does not match block size");
      b.type = vtype & 0x7f;
      b.raw_bitstream = !!(vtype & 0x80);
      b.value = body.slice(3);
    } else {
      b.type = null;
      b.raw_bitstream = null;
      b.value = body;
    }
    if (index === 0 || index === 0xff) throw new ProtocolError("measurement block with reserved index " + index);
    blocks.push(b);
    o += 4 + size;
  }
  if (count !== undefined && count !== blocks.length) throw new ProtocolError("MEASUREMENTS announces " + count + " blocks but carries " + blocks.length);
  return blocks;
}

export async function measurementSummary(hashName, blocks, legacy = false) {
  const parts = blocks.map((b) => (legacy ? b.raw.subarray(4) : b.raw));
  return digest(hashName, concat(...parts));
}

export function capNames(flags) {
  return CAP_FLAGS.filter((_, i) => flags & (1 << i));
}
