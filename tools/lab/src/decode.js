// Field-by-field decoding of every SPDM message the lab shows, each with a
// one-line explanation and the DSP0274 (1.3) section that defines it.
import { CODE_NAMES, ERROR_NAMES, ASYM_NAMES, HASHES, MEAS_HASH_NAMES, MEAS_TYPES, capNames } from "./spdm.js";
import { hex, u16, u24, u32, versionStr } from "./util.js";

export const SECTIONS = {
  GET_VERSION: ["10.3", "GET_VERSION / VERSION", "Which SPDM versions the responder speaks; always sent as version 1.0."],
  VERSION: ["10.3", "GET_VERSION / VERSION", "The responder lists its versions; both sides use the highest common one."],
  GET_CAPABILITIES: ["10.4", "GET_CAPABILITIES / CAPABILITIES", "The requester states what it can do and how large its messages may be."],
  CAPABILITIES: ["10.4", "GET_CAPABILITIES / CAPABILITIES", "The responder's capability flags: certificates, challenge, signed measurements, sessions..."],
  NEGOTIATE_ALGORITHMS: ["10.5", "NEGOTIATE_ALGORITHMS / ALGORITHMS", "The algorithms the requester accepts for signatures, hashes and sessions."],
  ALGORITHMS: ["10.5", "NEGOTIATE_ALGORITHMS / ALGORITHMS", "The responder picks exactly one of each: this fixes the signature and hash for the connection."],
  GET_DIGESTS: ["10.9", "GET_DIGESTS / DIGESTS", "Asks for the hash of the certificate chain in each provisioned slot."],
  DIGESTS: ["10.9", "GET_DIGESTS / DIGESTS", "One hash per provisioned slot: a cached chain can be recognised without reading it."],
  GET_CERTIFICATE: ["10.10", "GET_CERTIFICATE / CERTIFICATE", "Reads the certificate chain of a slot, one portion at a time."],
  CERTIFICATE: ["10.10", "GET_CERTIFICATE / CERTIFICATE", "A portion of the chain buffer: Length, RootHash, then the DER certificates, root first."],
  CHALLENGE: ["10.11", "CHALLENGE / CHALLENGE_AUTH", "A fresh nonce: the responder must sign the whole exchange so far (M1), proving it holds the leaf's key now."],
  CHALLENGE_AUTH: ["10.11", "CHALLENGE / CHALLENGE_AUTH", "Signed by the device key over M1: chain hash, its nonce, the measurement summary, our nonce inside M1."],
  GET_MEASUREMENTS: ["10.12", "GET_MEASUREMENTS / MEASUREMENTS", "Asks for measurement blocks (0 = just the count, 0xFF = all), signed over L1 with a fresh nonce."],
  MEASUREMENTS: ["10.12", "GET_MEASUREMENTS / MEASUREMENTS", "The measurement record (digests of what runs on the board) and a signature over L1."],
  ERROR: ["10.13", "ERROR", "The responder could not answer as asked; the error code says why."],
  RESPOND_IF_READY: ["10.14", "RESPOND_IF_READY", "Fetches a response the responder announced with ResponseNotReady (it was still signing)."],
  KEY_EXCHANGE: ["10.16", "KEY_EXCHANGE / KEY_EXCHANGE_RSP", "Starts a secure session: the requester's ephemeral ECDH public key and a session ID half."],
  KEY_EXCHANGE_RSP: ["10.16", "KEY_EXCHANGE / KEY_EXCHANGE_RSP", "The responder's ephemeral key, signed over TH with the device key, and an HMAC proving it derived the same secret."],
  FINISH: ["10.17", "FINISH / FINISH_RSP", "Encrypted with the handshake keys: the requester's HMAC over the transcript ends the handshake."],
  FINISH_RSP: ["10.17", "FINISH / FINISH_RSP", "The handshake is complete; both sides switch to application keys derived from TH2."],
  HEARTBEAT: ["10.20", "HEARTBEAT / HEARTBEAT_ACK", "Keeps the session alive inside the encrypted channel."],
  HEARTBEAT_ACK: ["10.20", "HEARTBEAT / HEARTBEAT_ACK", "The responder is still there and still has the session keys."],
  KEY_UPDATE: ["10.21", "KEY_UPDATE / KEY_UPDATE_ACK", "Rolls the session keys forward (UpdateAllKeys), then checks the new ones (VerifyNewKey)."],
  KEY_UPDATE_ACK: ["10.21", "KEY_UPDATE / KEY_UPDATE_ACK", "Acknowledged, already under the new key."],
  END_SESSION: ["10.24", "END_SESSION / END_SESSION_ACK", "Ends the session; both sides erase its keys."],
  END_SESSION_ACK: ["10.24", "END_SESSION / END_SESSION_ACK", "The session is over."],
  CHUNK_GET: ["", "CHUNK_GET / CHUNK_RESPONSE", "Fetches the next chunk of a response larger than our DataTransferSize."],
  CHUNK_RESPONSE: ["", "CHUNK_GET / CHUNK_RESPONSE", "One chunk of a large response."],
};

export function cite(name) {
  const s = SECTIONS[name];
  if (!s) return "DSP0274";
  return "DSP0274 1.3 " + (s[0] ? "§" + s[0] + " " : "") + s[1];
}

class F {
  constructor(b) { this.b = b; this.fields = []; this.o = 0; }
  add(name, len, text) {
    if (this.o >= this.b.length && len > 0) return null;
    len = Math.max(0, Math.min(len, this.b.length - this.o));
    const v = this.b.subarray(this.o, this.o + len);
    this.fields.push({ name, off: this.o, len, text: typeof text === "function" ? text(v) : text ?? hex(v) });
    this.o += len;
    return v;
  }
  rest(name, text) { return this.add(name, this.b.length - this.o, text); }
}

const h8 = (v) => "0x" + hex(v).toUpperCase();
const le = (v) => v.length === 2 ? u16(v, 0) : v.length === 3 ? u24(v, 0) : u32(v, 0);
const bitsText = (val, names) => names.filter(([b]) => val & b).map(([, n]) => n).join(", ") || "none";

// Decode message bytes `b`.  ctx: {version, H (hash size), S (signature size), reqBytes (for responses)}
export function decode(b, ctx = {}) {
  const f = new F(b);
  const code = b[1];
  const name = CODE_NAMES[code] || "0x" + hex([code]);
  f.add("SPDMVersion", 1, (v) => versionStr(v[0]));
  f.add("RequestResponseCode", 1, (v) => h8(v) + " " + name);
  const H = ctx.H || 48, S = ctx.S || 96, V = b[0];
  const req = ctx.reqBytes;
  switch (name) {
    case "GET_VERSION": case "GET_DIGESTS": case "HEARTBEAT": case "HEARTBEAT_ACK": case "END_SESSION_ACK": case "FINISH_RSP":
      f.add("Param1", 1); f.add("Param2", 1);
      if (name === "FINISH_RSP") f.rest("ResponderVerifyData (in the clear only)");
      break;
    case "VERSION": {
      f.add("Param1", 1); f.add("Param2", 1); f.add("Reserved", 1);
      const n = f.add("VersionNumberEntryCount", 1, (v) => String(v[0]))[0];
      for (let i = 0; i < n; i++) f.add("VersionNumberEntry " + (i + 1), 2, (v) => "SPDM " + versionStr(u16(v, 0) >> 8));
      break;
    }
    case "GET_CAPABILITIES": case "CAPABILITIES":
      f.add("Param1", 1); f.add("Param2", 1);
      if (b.length > 4) {
        f.add("Reserved", 1);
        f.add("CTExponent", 1, (v) => v[0] + " (crypto timeout 2^" + v[0] + " us = " + (Math.pow(2, v[0]) / 1000).toFixed(1) + " ms)");
        f.add("Reserved", 2);
        f.add("Flags", 4, (v) => capNames(u32(v, 0)).join(" ") || "none");
        if (b.length >= 20) {
          f.add("DataTransferSize", 4, (v) => String(u32(v, 0)) + " bytes");
          f.add("MaxSPDMmsgSize", 4, (v) => String(u32(v, 0)) + " bytes");
        }
      }
      break;
    case "NEGOTIATE_ALGORITHMS": case "ALGORITHMS": {
      const rsp = name === "ALGORITHMS";
      const n = f.add("Param1 (structure tables)", 1, (v) => String(v[0]))[0];
      f.add("Param2", 1);
      f.add("Length", 2, (v) => String(u16(v, 0)));
      f.add(rsp ? "MeasurementSpecificationSel" : "MeasurementSpecification", 1, (v) => v[0] & 1 ? "DMTF" : h8(v));
      f.add(rsp ? "OtherParamsSelection" : "OtherParamsSupport", 1, (v) => (v[0] & 2 ? "opaque data format 1" : h8(v)));
      if (rsp) f.add("MeasurementHashAlgo", 4, (v) => MEAS_HASH_NAMES[u32(v, 0)] || h8(v));
      f.add(rsp ? "BaseAsymSel" : "BaseAsymAlgo", 4, (v) => bitsText(u32(v, 0), [[0x80, "ECDSA P-384"], [0x10, "ECDSA P-256"]]));
      f.add(rsp ? "BaseHashSel" : "BaseHashAlgo", 4, (v) => bitsText(u32(v, 0), [[0x02, "SHA-384"], [0x01, "SHA-256"]]));
      f.add("Reserved", rsp ? 12 : 12);
      f.add("ExtAsymCount / ExtHashCount / Reserved", rsp ? 4 : 4);
      const TN = { 2: "DHE", 3: "AEADCipherSuite", 4: "ReqBaseAsymAlg", 5: "KeySchedule" };
      const VN = { 2: [[0x10, "secp384r1"], [0x08, "secp256r1"]], 3: [[0x02, "AES-256-GCM"]], 4: [[0x80, "ECDSA P-384"], [0x10, "ECDSA P-256"]], 5: [[1, "SPDM key schedule"]] };
      for (let i = 0; i < n && f.o + 4 <= b.length; i++) {
        const t = b[f.o];
        f.add("AlgStruct " + (TN[t] || t), 4, (v) => bitsText(u16(v, 2), VN[t] || []));
      }
      break;
    }
    case "DIGESTS": {
      f.add("Param1 (supported slots)", 1, (v) => V >= 0x13 ? "0x" + hex(v) : "reserved");
      const m = f.add("Param2 (provisioned slot mask)", 1, (v) => "0x" + hex(v))[0];
      for (let s = 0; s < 8; s++) if (m & (1 << s)) f.add("Digest slot " + s, H, (v) => hex(v));
      break;
    }
    case "GET_CERTIFICATE":
      f.add("Param1 (slot)", 1, (v) => String(v[0] & 0xf)); f.add("Param2", 1);
      f.add("Offset", 2, (v) => String(u16(v, 0))); f.add("Length", 2, (v) => String(u16(v, 0)));
      break;
    case "CERTIFICATE":
      f.add("Param1 (slot)", 1, (v) => String(v[0] & 0xf)); f.add("Param2", 1);
      f.add("PortionLength", 2, (v) => String(u16(v, 0))); f.add("RemainderLength", 2, (v) => String(u16(v, 0)));
      f.rest("CertChain portion", (v) => v.length + " bytes of the chain buffer");
      break;
    case "CHALLENGE":
      f.add("Param1 (slot)", 1, (v) => String(v[0])); f.add("Param2 (measurement summary)", 1, (v) => ({ 0: "none", 1: "TCB", 255: "all" })[v[0]] ?? h8(v));
      f.add("Nonce", 32);
      if (V >= 0x13) f.add("RequesterContext", 8);
      break;
    case "CHALLENGE_AUTH": {
      f.add("Param1 (slot)", 1, (v) => String(v[0] & 0xf)); f.add("Param2 (slot mask)", 1, (v) => "0x" + hex(v));
      f.add("CertChainHash", H);
      f.add("Nonce", 32);
      const summ = req && req[3];
      if (summ) f.add("MeasurementSummaryHash", H);
      const ol = f.add("OpaqueDataLength", 2, (v) => String(u16(v, 0)));
      if (ol) f.add("OpaqueData", u16(ol, 0));
      if (V >= 0x13) f.add("RequesterContext", 8, (v) => hex(v) + " (echoes ours)");
      f.add("Signature", S, (v) => "ECDSA r||s over M1");
      break;
    }
    case "GET_MEASUREMENTS": {
      const attr = f.add("Param1 (attributes)", 1, (v) => (v[0] & 1 ? "signature requested" : "no signature") + (v[0] & 2 ? ", raw bit stream" : ""))[0];
      f.add("Param2 (operation)", 1, (v) => v[0] === 0 ? "0: count" : v[0] === 0xff ? "0xFF: all blocks" : "index " + v[0]);
      if (attr & 1) { f.add("Nonce", 32); if (V >= 0x11) f.add("SlotIDParam", 1, (v) => String(v[0])); }
      if (V >= 0x13) f.add("RequesterContext", 8);
      break;
    }
    case "MEASUREMENTS": {
      f.add("Param1 (total blocks, for a count)", 1, (v) => String(v[0]));
      f.add("Param2 (slot / content changed)", 1, (v) => "slot " + (v[0] & 0xf) + ", content changed " + ((v[0] >> 4) & 3));
      const n = f.add("NumberOfBlocks", 1, (v) => String(v[0]))[0];
      const rl = le(f.add("MeasurementRecordLength", 3, (v) => String(u24(v, 0))));
      const start = f.o;
      for (let i = 0; i < n && f.o < start + rl; i++) {
        const idx = b[f.o], sz = u16(b, f.o + 2);
        const t = b[f.o + 4];
        const what = ctx.names && ctx.names[idx] ? ctx.names[idx] + ": " : "";
        f.add("Block 0x" + idx.toString(16).padStart(2, "0"), 4 + sz, () =>
          what + (MEAS_TYPES[t & 0x7f] || "type " + (t & 0x7f)) + (t & 0x80 ? " (raw)" : " (digest)") + ", " + (sz - 3) + " bytes");
      }
      f.add("Nonce", 32);
      const ol = f.add("OpaqueDataLength", 2, (v) => String(u16(v, 0)));
      if (ol && u16(ol, 0)) f.add("OpaqueData", u16(ol, 0));
      if (V >= 0x13) f.add("RequesterContext", 8, (v) => hex(v) + " (echoes ours)");
      if (f.o < b.length) f.rest("Signature", () => "ECDSA r||s over L1");
      break;
    }
    case "ERROR":
      f.add("Param1 (error code)", 1, (v) => h8(v) + " " + (ERROR_NAMES[v[0]] || "?"));
      f.add("Param2 (error data)", 1);
      if (b[2] === 0x42) {
        f.add("RDTExponent", 1, (v) => "retry after 2^" + v[0] + " us = " + (Math.pow(2, v[0]) / 1000).toFixed(1) + " ms");
        f.add("RequestCode", 1, (v) => h8(v) + " " + (CODE_NAMES[v[0]] || ""));
        f.add("Token", 1); f.add("RDTM", 1);
      } else if (b[2] === 0x0f) f.add("Handle", 1);
      if (f.o < b.length) f.rest("ExtendedErrorData");
      break;
    case "RESPOND_IF_READY":
      f.add("Param1 (original request)", 1, (v) => h8(v) + " " + (CODE_NAMES[v[0]] || "")); f.add("Param2 (token)", 1);
      break;
    case "CHUNK_GET":
      f.add("Param1", 1); f.add("Param2 (handle)", 1); f.add("ChunkSeqNo", 2, (v) => String(u16(v, 0)));
      break;
    case "CHUNK_RESPONSE": {
      f.add("Param1 (last chunk)", 1, (v) => (v[0] & 1 ? "yes" : "no")); f.add("Param2 (handle)", 1);
      const seq = u16(f.add("ChunkSeqNo", 2, (v) => String(u16(v, 0))), 0);
      f.add("Reserved", 2); f.add("ChunkSize", 4, (v) => String(u32(v, 0)));
      if (seq === 0) f.add("LargeMessageSize", 4, (v) => String(u32(v, 0)));
      f.rest("SPDMchunk", (v) => v.length + " bytes");
      break;
    }
    case "KEY_EXCHANGE": {
      f.add("Param1 (measurement summary)", 1, (v) => ({ 0: "none", 1: "TCB", 255: "all" })[v[0]] ?? h8(v));
      f.add("Param2 (slot)", 1, (v) => String(v[0]));
      f.add("ReqSessionID", 2, (v) => "0x" + u16(v, 0).toString(16).padStart(4, "0"));
      f.add("SessionPolicy", 1); f.add("Reserved", 1);
      f.add("RandomData", 32);
      f.add("ExchangeData", 96, () => "ephemeral ECDH P-384 public key X||Y");
      const ol = f.add("OpaqueDataLength", 2, (v) => String(u16(v, 0)));
      if (ol) f.add("OpaqueData", u16(ol, 0), () => "secured-message versions we support (DSP0277)");
      break;
    }
    case "KEY_EXCHANGE_RSP": {
      f.add("Param1 (heartbeat period)", 1, (v) => v[0] + " s"); f.add("Param2", 1);
      f.add("RspSessionID", 2, (v) => "0x" + u16(v, 0).toString(16).padStart(4, "0"));
      f.add("MutAuthRequested", 1); f.add("SlotIDParam", 1);
      f.add("RandomData", 32);
      f.add("ExchangeData", 96, () => "the responder's ephemeral ECDH P-384 public key");
      if (req && req[2]) f.add("MeasurementSummaryHash", H);
      const ol = f.add("OpaqueDataLength", 2, (v) => String(u16(v, 0)));
      if (ol) f.add("OpaqueData", u16(ol, 0), () => "selected secured-message version");
      f.add("Signature", S, () => "ECDSA r||s over TH");
      f.rest("ResponderVerifyData", () => "HMAC over Hash(TH1)");
      break;
    }
    case "FINISH":
      f.add("Param1", 1); f.add("Param2", 1);
      f.rest("RequesterVerifyData", () => "HMAC over Hash(TH)");
      break;
    case "KEY_UPDATE": case "KEY_UPDATE_ACK":
      f.add("Param1 (operation)", 1, (v) => ({ 1: "UpdateKey", 2: "UpdateAllKeys", 3: "VerifyNewKey" })[v[0]] || h8(v));
      f.add("Param2 (tag)", 1);
      break;
    case "END_SESSION":
      f.add("Param1", 1, (v) => (v[0] & 1 ? "preserve negotiated state" : "clear negotiated state")); f.add("Param2", 1);
      break;
    default:
      f.add("Param1", 1); f.add("Param2", 1);
      if (f.o < b.length) f.rest("Payload");
  }
  if (f.o < b.length) f.rest("(trailing bytes)");
  const sec = SECTIONS[name];
  return { name, fields: f.fields, explain: sec ? sec[2] : "", cite: cite(name) };
}
