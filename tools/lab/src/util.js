// Small byte helpers shared by the lab's modules.
export const enc = new TextEncoder();
export const dec = new TextDecoder();

export function hex(b, sep = "") {
  return Array.from(b || [], (x) => x.toString(16).padStart(2, "0")).join(sep);
}

export function unhex(h) {
  h = String(h).replace(/\s+/g, "");
  const out = new Uint8Array(h.length >> 1);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(h.substr(2 * i, 2), 16);
  return out;
}

export function concat(...parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export function bytes(...xs) {
  return new Uint8Array(xs);
}

export const u16 = (b, o) => b[o] | (b[o + 1] << 8);
export const u24 = (b, o) => b[o] | (b[o + 1] << 8) | (b[o + 2] << 16);
export const u32 = (b, o) => (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;
export const le16 = (v) => bytes(v & 0xff, (v >> 8) & 0xff);
export const le32 = (v) => bytes(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);

export function equal(a, b) {
  if (!a || !b || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function random(n) {
  const b = new Uint8Array(n);
  crypto.getRandomValues(b);
  return b;
}

export function b64(b) {
  let s = "";
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
  return btoa(s);
}

export function unb64(s) {
  const t = atob(s);
  const out = new Uint8Array(t.length);
  for (let i = 0; i < t.length; i++) out[i] = t.charCodeAt(i);
  return out;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function withTimeout(p, ms, what) {
  let t;
  return Promise.race([
    p,
    new Promise((_, rej) => {
      t = setTimeout(() => rej(new TimeoutError(what + " (no answer within " + (ms / 1000).toFixed(1) + " s)")), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

export class TimeoutError extends Error {}

export function versionStr(v) {
  return (v >> 4) + "." + (v & 0xf);
}

export function short(h, n = 24) {
  h = String(h);
  return h.length <= n ? h : h.slice(0, n - 3) + "...";
}

// WebCrypto digests
const HASH_NAME = { sha256: "SHA-256", sha384: "SHA-384", sha512: "SHA-512" };
export async function digest(alg, data) {
  return new Uint8Array(await crypto.subtle.digest(HASH_NAME[alg] || alg, data));
}

export async function hmac(alg, key, data) {
  const k = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: HASH_NAME[alg] || alg }, false, ["sign"]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", k, data));
}

// Untrusted text on the page: anything a device sent (file names in its
// manifest, certificate subjects, device-info, error text built from them)
// is shown with every control or format character (C0, DEL, C1, bidi
// overrides, zero-width, line/paragraph separators) as a visible \xNN /
// \uNNNN escape, as the host's reports do (tools/uspdm_tools/screen.py).
// The page only ever sets textContent, so no markup can get in either.
const BAD = /[\u0000-\u001f\u007f-\u009f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff]/g;
export function shown(s) {
  return String(s).replace(BAD, (c) => {
    const o = c.charCodeAt(0);
    return o < 0x100 ? "\\x" + o.toString(16).padStart(2, "0") : "\\u" + o.toString(16).padStart(4, "0");
  });
}
