// MCTP (DSP0236) over serial (DSP0253), written for the page: the lab's
// requester side of the board's "USB serial".  Independent of lib/mctp.
//
// Frame: 7E | 01 | count | escaped packet | FCS hi | FCS lo | 7E
//   FCS-16 (RFC 1662, no final complement) over revision, count, packet;
//   0x7E/0x7D inside the packet are sent as 7D 5E / 7D 5D; the FCS is sent raw
//   (a received FCS may come raw or escaped: both are accepted).
// Packet: 4-byte header (version 1, dest EID, src EID, SOM EOM seq TO tag) + payload.
import { concat, TimeoutError } from "./util.js";

const FLAG = 0x7e;
const ESC = 0x7d;
export const HOST_EID = 8;
export const MTU = 64;

const T = (() => {
  const t = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x8408 : c >>> 1;
    t[i] = c;
  }
  return t;
})();

export function fcs16(data, crc = 0xffff) {
  for (const b of data) crc = (crc >>> 8) ^ T[(crc ^ b) & 0xff];
  return crc;
}

export function encodeFrame(pkt) {
  const out = [FLAG, 1, pkt.length];
  for (const b of pkt) {
    if (b === FLAG || b === ESC) out.push(ESC, b ^ 0x20);
    else out.push(b);
  }
  // the FCS goes out raw (unescaped), as libmctp and Linux send it
  const f = fcs16(concat(new Uint8Array([1, pkt.length]), pkt));
  out.push(f >> 8, f & 0xff);
  out.push(FLAG);
  return new Uint8Array(out);
}

export class FrameDecoder {
  constructor() {
    this.state = "idle";
    this.errors = 0;
  }
  feed(data) {
    const out = [];
    for (let b of data) {
      switch (this.state) {
        case "idle":
          if (b === FLAG) this.state = "rev";
          break;
        case "rev":
          if (b === FLAG) break;
          this.state = b === 1 ? "count" : "idle";
          break;
        case "count":
          if (b === 0) { this.state = "idle"; break; }
          this.n = b;
          this.buf = [];
          this.fcs = [];
          this.esc = false;
          this.state = "body";
          break;
        case "body":
          if (b === FLAG) { this.errors++; this.state = "rev"; break; }
          if (this.esc) { b ^= 0x20; this.esc = false; }
          else if (b === ESC) { this.esc = true; break; }
          this.buf.push(b);
          if (this.buf.length === this.n) {
            // the tail we expect: FCS raw or escaped, then the closing flag
            const pkt = new Uint8Array(this.buf);
            const f = fcs16(concat(new Uint8Array([1, this.n]), pkt));
            const raw = [f >> 8, f & 0xff, FLAG];
            const escd = [];
            for (const x of [f >> 8, f & 0xff]) x === FLAG || x === ESC ? escd.push(ESC, x ^ 0x20) : escd.push(x);
            escd.push(FLAG);
            this.tails = [raw, escd];
            this.tpos = 0;
            this.pkt = pkt;
            this.state = "tail";
          }
          break;
        case "tail": {
          this.tails = this.tails.filter((t) => t[this.tpos] === b);
          this.tpos++;
          if (!this.tails.length) { this.errors++; this.state = b === FLAG ? "rev" : "idle"; break; }
          const done = this.tails.find((t) => t.length === this.tpos);
          if (done) { out.push(this.pkt); this.state = "rev"; }
          break;
        }
      }
    }
    return out;
  }
}

export function packetize(dest, src, tag, to, body, mtu = MTU) {
  const pkts = [];
  let seq = 0;
  for (let o = 0; o < body.length || o === 0; o += mtu) {
    const part = body.subarray(o, o + mtu);
    const som = o === 0 ? 0x80 : 0;
    const eom = o + mtu >= body.length ? 0x40 : 0;
    pkts.push(concat(new Uint8Array([1, dest, src, som | eom | (seq << 4) | (to ? 8 : 0) | tag]), part));
    seq = (seq + 1) & 3;
    if (eom) break;
  }
  return pkts;
}

// The requester's MCTP endpoint over a byte transport ({write(bytes), onData}).
export class MctpLink {
  constructor(transport, { eid = 0, mtu = MTU } = {}) {
    this.t = transport;
    this.eid = eid;
    this.mtu = mtu;
    this.tag = 0;
    this.dec = new FrameDecoder();
    this.partial = null;
    this.waiters = [];
    this.stats = null;
    transport.onData = (d) => this._rx(d);
  }
  _rx(data) {
    if (this.stats) this.stats.rxBytes += data.length;
    for (const pkt of this.dec.feed(data)) {
      if (pkt.length < 4 || (pkt[0] & 0x0f) !== 1) continue;
      if (pkt[1] !== HOST_EID && pkt[1] !== 0) continue;
      const f = pkt[3];
      if (this.stats) { this.stats.rxPackets++; if (this.stats.rxPkts.length < 64) this.stats.rxPkts.push(pkt); }
      if (f & 0x80) this.partial = { src: pkt[2], tag: f & 7, to: f & 8, seq: (f >> 4) & 3, parts: [pkt.subarray(4)] };
      else if (this.partial && ((f >> 4) & 3) === ((this.partial.seq + 1) & 3) && (f & 7) === this.partial.tag) {
        this.partial.seq = (f >> 4) & 3;
        this.partial.parts.push(pkt.subarray(4));
      } else { this.partial = null; continue; }
      if (f & 0x40) {
        const m = this.partial;
        this.partial = null;
        const body = concat(...m.parts);
        const i = this.waiters.findIndex((w) => w.tag === m.tag && !m.to);
        if (i >= 0) this.waiters.splice(i, 1)[0].resolve(body);
      }
    }
  }
  // Send one MCTP message (body starts with the message type) and wait for the answer.
  request(body, timeoutMs) {
    this.tag = (this.tag + 1) & 7;
    const tag = this.tag;
    const pkts = packetize(this.eid, HOST_EID, tag, true, body, this.mtu);
    // what went over the wire, for the page's "on the wire" view
    this.stats = { txPackets: pkts.length, txBytes: 0, rxPackets: 0, rxBytes: 0, txPkts: pkts.slice(0, 64), rxPkts: [] };
    const stats = this.stats;
    return new Promise((resolve, reject) => {
      const w = { tag, resolve: (b) => { clearTimeout(w.timer); resolve({ body: b, stats }); } };
      w.timer = setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new TimeoutError("no MCTP answer within " + (timeoutMs / 1000).toFixed(1) + " s"));
      }, timeoutMs);
      this.waiters.push(w);
      for (const p of pkts) {
        const fr = encodeFrame(p);
        stats.txBytes += fr.length;
        this.t.write(fr);
      }
    });
  }
}
