// SPDM secure sessions for the page (DSP0274 KEY_EXCHANGE/FINISH/HEARTBEAT/
// KEY_UPDATE/END_SESSION, DSP0277 secured messages over MCTP), with
// WebCrypto: ECDH P-384, HMAC, HKDF-Expand (from HMAC), AES-256-GCM.
// The same rules as the host (tools/uspdm_tools/session_requester.py):
// BinConcat = u16 length || "spdm1.N " || label || context; salt_0 = 0^H;
// TH over VCA || Hash(cert chain buffer) || K || F; AEAD nonce = IV XOR the
// 64-bit sequence number (little endian); AAD = SessionID || SeqNum || Length.
import { C, ProtocolError, VerificationError, Unreachable, SIGN_CTX } from "./spdm.js";
import { bytes, concat, digest, equal, hex, hmac, le16, le32, random, u16, u32, enc, TimeoutError } from "./util.js";

const SM_VERSIONS = [0x1100, 0x1200];

async function expand(hashName, prk, info, length) {
  let t = new Uint8Array(0);
  let out = new Uint8Array(0);
  for (let i = 1; out.length < length; i++) {
    t = await hmac(hashName, prk, concat(t, info, bytes(i)));
    out = concat(out, t);
  }
  return out.slice(0, length);
}

function binConcat(version, length, label, context = new Uint8Array(0)) {
  return concat(le16(length), enc.encode("spdm" + (version >> 4) + "." + (version & 0xf) + " "), enc.encode(label), context);
}

function smOpaque(version, data) {
  let el = concat(bytes(0, 0), le16(data.length), data);
  el = concat(el, new Uint8Array((4 - (el.length % 4)) % 4));
  if (version >= 0x12) return concat(bytes(1, 0, 0, 0), el);
  return concat(le32(0x444d5446), bytes(1, 1, 0, 0), el);
}

function smSupported(version) {
  return smOpaque(version, concat(bytes(1, 1, SM_VERSIONS.length), ...SM_VERSIONS.map(le16)));
}

function parseSmSelection(version, data) {
  let total, off;
  if (version >= 0x12) {
    if (data.length < 4 || data.length % 4) throw new ProtocolError("opaque data is not in the 1.2 general format");
    total = data[0]; off = 4;
  } else {
    if (data.length < 8 || u32(data, 0) !== 0x444d5446 || data[4] !== 1) throw new ProtocolError("opaque data lacks the SPDM 1.1 secured-message header");
    total = data[5]; off = 8;
  }
  let sel = null;
  for (let i = 0; i < total; i++) {
    if (off + 4 > data.length) throw new ProtocolError("opaque element overruns");
    const id = data[off], vlen = data[off + 1];
    const dlen = u16(data, off + 2 + vlen);
    const body = off + 4 + vlen;
    if (body + dlen > data.length) throw new ProtocolError("opaque element overruns");
    if (id === 0 && vlen === 0 && dlen >= 4 && data[body] === 1 && data[body + 1] === 0) sel = u16(data, body + 2);
    off += (4 + vlen + dlen + 3) & ~3;
  }
  if (sel === null) throw new ProtocolError("no secured-message version selection in the opaque data");
  return sel;
}

class Direction {
  static async make(hashName, version, secret) {
    const d = new Direction();
    d.keyBytes = await expand(hashName, secret, binConcat(version, 32, "key"), 32);
    d.iv = await expand(hashName, secret, binConcat(version, 12, "iv"), 12);
    d.key = await crypto.subtle.importKey("raw", d.keyBytes, "AES-GCM", false, ["encrypt", "decrypt"]);
    d.seq = 0;
    return d;
  }
  nonce(seq) {
    const n = new Uint8Array(this.iv);
    let s = BigInt(seq);
    for (let i = 0; i < 8; i++) { n[i] ^= Number(s & 0xffn); s >>= 8n; }
    return n;
  }
}

export class Session {
  constructor(r, reqSid) {
    this.r = r;
    this.version = r.version;
    this.hashName = r.hashName;
    this.H = r.H;
    this.reqSid = reqSid;
    this.timings = {};
    this.secrets = {};
    this.inClear = false;
    this.transcript = null;
  }

  async deriveHandshake(z, th1) {
    const v = this.version, hn = this.hashName, H = this.H;
    const hs = await hmac(hn, new Uint8Array(H), z);
    const reqHs = await expand(hn, hs, binConcat(v, H, "req hs data", th1), H);
    const rspHs = await expand(hn, hs, binConcat(v, H, "rsp hs data", th1), H);
    this.secrets = { handshake: hs, req_hs: reqHs, rsp_hs: rspHs,
      req_finished: await expand(hn, reqHs, binConcat(v, H, "finished"), H),
      rsp_finished: await expand(hn, rspHs, binConcat(v, H, "finished"), H) };
    this.req = await Direction.make(hn, v, reqHs);
    this.rsp = await Direction.make(hn, v, rspHs);
  }

  async deriveApplication(th2) {
    const v = this.version, hn = this.hashName, H = this.H;
    const salt1 = await expand(hn, this.secrets.handshake, binConcat(v, H, "derived"), H);
    const master = await hmac(hn, salt1, new Uint8Array(H));
    this.secrets.req_app = await expand(hn, master, binConcat(v, H, "req app data", th2), H);
    this.secrets.rsp_app = await expand(hn, master, binConcat(v, H, "rsp app data", th2), H);
    this.req = await Direction.make(hn, v, this.secrets.req_app);
    this.rsp = await Direction.make(hn, v, this.secrets.rsp_app);
  }

  async nextSecret(which) {
    const v = this.version, hn = this.hashName, H = this.H;
    this.secrets[which] = await expand(hn, this.secrets[which], binConcat(v, H, "traffic upd"), H);
    return Direction.make(hn, v, this.secrets[which]);
  }

  async encode(spdm) {
    const d = this.req;
    const seq = d.seq++;
    const app = concat(bytes(0x05), spdm);
    const padN = 1 + (random(1)[0] % 32);
    const pt = concat(le16(app.length), app, random(padN));
    const hdr = concat(le32(this.sid), le16(seq & 0xffff), le16(pt.length + 16));
    const ct = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv: d.nonce(seq), additionalData: hdr, tagLength: 128 }, d.key, pt));
    return concat(hdr, ct);
  }

  async decode(body) {
    const d = this.rsp;
    const seq = d.seq++;
    if (body.length < 24) throw new VerificationError("secured response too short (" + body.length + " bytes)");
    const sid = u32(body, 0), wseq = u16(body, 4), length = u16(body, 6);
    if (sid !== this.sid) throw new VerificationError("secured response for session 0x" + sid.toString(16) + ", ours is 0x" + this.sid.toString(16));
    if (wseq !== (seq & 0xffff)) throw new VerificationError("secured response sequence number " + wseq + ", expected " + (seq & 0xffff));
    if (length < 16 || 8 + length > body.length) throw new VerificationError("secured response Length does not fit");
    let pt;
    try {
      pt = new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv: d.nonce(seq), additionalData: body.subarray(0, 8), tagLength: 128 },
        d.key, body.subarray(8, 8 + length)));
    } catch (e) {
      throw new VerificationError("secured response fails authentication");
    }
    const n = u16(pt, 0);
    if (n > pt.length - 2) throw new VerificationError("AppDataLength beyond the plaintext");
    const app = pt.subarray(2, 2 + n);
    if (!app.length || app[0] !== 0x05) throw new VerificationError("secured response does not carry an SPDM message");
    return app.slice(1);
  }

  // the requester's transport while inside the session
  get transport() {
    return async (req, timeoutMs) => {
      const body = await this.encode(req);
      let r;
      try {
        r = await this.r.link.request(concat(bytes(0x06), body), timeoutMs);
      } catch (e) {
        if (e instanceof TimeoutError) throw new Unreachable("no answer to " + (req[1] in C ? req[1] : "a request") + " inside the session");
        throw e;
      }
      if (!r.body.length || r.body[0] !== 0x06) throw new ProtocolError("inside the session the answer is not a secured message");
      const spdm = await this.decode(r.body.subarray(1));
      r.stats.wire = { request: body.length, response: r.body.length - 1 };
      return { body: spdm, stats: r.stats };
    };
  }

  async heartbeat() {
    const r = this.r;
    r.transport = this.transport;
    const { rsp } = await r.exchange(r.hdr(C.HEARTBEAT), C.HEARTBEAT_ACK);
    if (rsp.length !== 4) throw new ProtocolError("HEARTBEAT_ACK is " + rsp.length + " bytes");
  }

  async keyUpdate() {
    // UpdateAllKeys: the responder answers under its new key already (libspdm); then VerifyNewKey
    const r = this.r;
    r.transport = async (req, timeoutMs) => {
      const body = await this.encode(req);
      const x = await r.link.request(concat(bytes(0x06), body), timeoutMs);
      this.rsp = await this.nextSecret("rsp_app");
      const spdm = await this.decode(x.body.subarray(1));
      this.req = await this.nextSecret("req_app");
      return { body: spdm, stats: x.stats };
    };
    const tag = random(1)[0];
    const a = await r.exchange(r.hdr(C.KEY_UPDATE, 2, tag), C.KEY_UPDATE_ACK);
    if (a.rsp[2] !== 2 || a.rsp[3] !== tag) throw new ProtocolError("bad KEY_UPDATE_ACK " + hex(a.rsp));
    a.rspE.note = "both directions now use keys derived with \"traffic upd\" from the previous secrets";
    r.transport = this.transport;
    const tag2 = random(1)[0];
    const b = await r.exchange(r.hdr(C.KEY_UPDATE, 3, tag2), C.KEY_UPDATE_ACK);
    if (b.rsp[2] !== 3 || b.rsp[3] !== tag2) throw new ProtocolError("bad KEY_UPDATE_ACK " + hex(b.rsp));
  }

  async end() {
    const r = this.r;
    r.transport = this.transport;
    await r.exchange(r.hdr(C.END_SESSION, 0), C.END_SESSION_ACK);
    r.transport = null;
  }
}

// KEY_EXCHANGE + FINISH: returns an established Session.
export async function openSession(r, slot = 0) {
  const v = r.version;
  if (v < 0x11) throw new ProtocolError("sessions need SPDM 1.1 or later");
  const summary = r.rspFlags & 0x18 ? 0xff : 0;   // all measurements' summary hash when the board measures
  const reqSid = 1 + (u16(random(2), 0) % 0xfffd);
  const s = new Session(r, reqSid);
  s.inClear = false;   // the page does not offer HANDSHAKE_IN_THE_CLEAR: the handshake is always encrypted
  const eph = await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-384" }, false, ["deriveBits"]);
  const pub = new Uint8Array(await crypto.subtle.exportKey("raw", eph.publicKey)).subarray(1);
  const opq = smSupported(v);
  const req = concat(r.hdr(C.KEY_EXCHANGE, summary, slot), le16(reqSid), bytes(0, 0), random(32), pub, le16(opq.length), opq);
  const t0 = performance.now();
  const { rsp, reqE, rspE } = await r.exchange(req, C.KEY_EXCHANGE_RSP, { crypto: true });
  const H = s.H, S = r.S;
  if (rsp.length < 40 + 96 + 2) throw new ProtocolError("KEY_EXCHANGE_RSP too short");
  s.rspSid = u16(rsp, 4);
  if (rsp[6] !== 0) throw new ProtocolError("KEY_EXCHANGE_RSP requests mutual authentication (we did not offer it)");
  let o = 40;
  const peer = rsp.slice(o, o + 96); o += 96;
  o += summary ? H : 0;
  const olen = u16(rsp, o); o += 2;
  s.smVersion = parseSmSelection(v, rsp.subarray(o, o + olen)); o += olen;
  if (!SM_VERSIONS.map((x) => x & 0xff00).includes(s.smVersion & 0xff00)) throw new ProtocolError("responder selected a secured-message version we did not offer");
  if (rsp.length !== o + S + H) throw new ProtocolError("KEY_EXCHANGE_RSP is " + rsp.length + " bytes, expected " + (o + S + H));
  const sig = rsp.slice(o, o + S);
  const ct = await digest(r.hashName, r.chains[slot]);
  let th = concat(r.A, ct, req, rsp.subarray(0, o));
  await r.noteTranscript(reqE, "TH (session: VCA + Hash(chain) + KEY_EXCHANGE)", concat(r.A, ct, req), req.length);
  await r.noteTranscript(rspE, "TH (up to the signature)", th, o);
  rspE.sigCovers = "TH = VCA (" + r.A.length + " B) + Hash(certificate chain) (" + ct.length + " B) + KEY_EXCHANGE (" + req.length + " B) + KEY_EXCHANGE_RSP up to its signature (" + o + " B) = " + th.length + " bytes";
  await r.verifySig(SIGN_CTX.kex, th, sig, rspE, "KEY_EXCHANGE_RSP over TH");
  th = concat(th, sig);
  let peerKey;
  try {
    peerKey = await crypto.subtle.importKey("raw", concat(bytes(4), peer), { name: "ECDH", namedCurve: "P-384" }, false, []);
  } catch (e) {
    throw new VerificationError("responder's ExchangeData is not a P-384 point");
  }
  const z = new Uint8Array(await crypto.subtle.deriveBits({ name: "ECDH", public: peerKey }, eph.privateKey, 384));
  const th1 = await digest(r.hashName, th);
  await s.deriveHandshake(z, th1);
  rspE.keySchedule = [
    ["ECDH shared secret (P-384, our ephemeral key x theirs)", z],
    ["Hash(TH1): TH up to and with the signature", th1],
    ["handshake secret = HMAC(salt 0, shared secret) (HKDF-Extract)", s.secrets.handshake],
    ["request handshake secret = HKDF-Expand(handshake, \"req hs data\" + Hash(TH1))", s.secrets.req_hs],
    ["response handshake secret = HKDF-Expand(handshake, \"rsp hs data\" + Hash(TH1))", s.secrets.rsp_hs],
    ["response finished key = HKDF-Expand(rsp hs, \"finished\")", s.secrets.rsp_finished],
    ["handshake AES-256-GCM key / IV (responder to requester)", concat(s.rsp.keyBytes, s.rsp.iv)],
  ].map(([k, v]) => [k, hex(v)]);
  const vd = rsp.slice(o + S);
  const want = await hmac(r.hashName, s.secrets.rsp_finished, th1);
  rspE.verifyData = { ok: equal(want, vd), what: "ResponderVerifyData = HMAC(rsp finished key, Hash(TH1))", th1: hex(th1) };
  if (!equal(want, vd)) throw new VerificationError("KEY_EXCHANGE_RSP ResponderVerifyData does not verify");
  th = concat(th, vd);
  await r.noteTranscript(rspE, "TH1 + ResponderVerifyData", th, S + H);
  s.sid = ((s.rspSid << 16) | reqSid) >>> 0;
  s.timings.KEY_EXCHANGE = performance.now() - t0;
  // FINISH, encrypted with the handshake keys
  const t1 = performance.now();
  const hdr = r.hdr(C.FINISH, 0, 0);
  const rvd = await hmac(r.hashName, s.secrets.req_finished, await digest(r.hashName, concat(th, hdr)));
  const freq = concat(hdr, rvd);
  r.transport = s.transport;
  let f;
  try {
    f = await r.exchange(freq, C.FINISH_RSP, { crypto: true });
  } finally {
    r.transport = null;
  }
  if (f.rsp.length !== 4) throw new ProtocolError("FINISH_RSP is " + f.rsp.length + " bytes, expected 4");
  th = concat(th, freq);
  await r.noteTranscript(f.reqE, "TH (session)", th, freq.length);
  th = concat(th, f.rsp);
  await r.noteTranscript(f.rspE, "TH2 (session)", th, f.rsp.length);
  f.reqE.note = "RequesterVerifyData = HMAC(req finished key, Hash(TH up to FINISH's header)); sent encrypted with the handshake keys";
  const th2 = await digest(r.hashName, th);
  await s.deriveApplication(th2);
  f.rspE.keySchedule = [
    ["Hash(TH2): TH through FINISH_RSP", th2],
    ["request application secret = HKDF-Expand(master, \"req app data\" + Hash(TH2))", s.secrets.req_app],
    ["response application secret = HKDF-Expand(master, \"rsp app data\" + Hash(TH2))", s.secrets.rsp_app],
    ["application AES-256-GCM key / IV (requester to responder)", concat(s.req.keyBytes, s.req.iv)],
  ].map(([k, v]) => [k, hex(v)]);
  f.rspE.note = "application keys derived from Hash(TH2): everything after this travels under them";
  s.transcript = th;
  s.timings.FINISH = performance.now() - t1;
  return s;
}
