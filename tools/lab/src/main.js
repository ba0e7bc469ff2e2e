// uspdm lab: the page.  Wires the boards (in-page, WebSocket bridge, Web
// Serial), the verifier and the views.  window.lab exposes the state for
// the browser tests (host_tests/test_lab.py).
import "./polyfill.js";
import { InPageBoard, eraseFlash } from "./board.js";
import { MctpLink, encodeFrame } from "./mctp.js";
import { attest, goldenDoc, goldenMap, EXIT, label as blockLabel } from "./verifier.js";
import { labCA, foreignRoot, issueLeaf, defaultDeviceInfo, certName, certPem, forgetCA, splitDer } from "./pki.js";
import { decode } from "./decode.js";
import { CODE_NAMES, MEAS_TYPES } from "./spdm.js";
import { concat, hex, short, shown, unhex } from "./util.js";
import * as x509 from "@peculiar/x509";

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
};

const state = {
  board: null,          // InPageBoard
  ca: null,             // the page's lab CA
  trustedRoot: null,    // DER the verifier trusts
  trustedLabel: "",
  foreign: false,
  tamper: false,
  modified: null,
  trace: [],
  selected: null,
  report: null,
  out: null,
  running: false,
  bridgeTarget: null,
  serial: null,
  bootError: null,
};
window.lab = state;

function log(line) {
  const box = $("board-log");
  if (!box) return;
  box.textContent += shown(line) + "\n";
  if (box.textContent.length > 20000) box.textContent = box.textContent.slice(-15000);
  box.scrollTop = box.scrollHeight;
}

function setStatus(text) {
  $("board-status").textContent = text;
}

function goldenKey() { return "uspdm-lab-golden-" + boardKind(); }
function boardKind() { return document.querySelector("input[name=board]:checked").value; }
function loadGolden() { try { return JSON.parse(localStorage.getItem(goldenKey()) || "null"); } catch (e) { return null; } }

function enable(on) {
  for (const b of document.querySelectorAll("[data-needs-board]")) b.disabled = !on;
}

// ------------------------------------------------------------ the in-page board
async function provision(board, ca, force = false) {
  const made = [];
  state.deviceChains = {};
  for (const alg of ["p384", "p256"]) {
    let ok = false;
    if (!force) {
      const chainHex = board.runSnippet("import board\nfrom uspdm.identity import Identity\n_c = Identity(board.storage(), board.drbg()).chain(0, '" + alg + "')\n_lab_out = _c.hex() if _c else ''\n");
      ok = chainHex.startsWith(hex(ca.der));
      if (ok) state.deviceChains[alg] = unhex(chainHex);
    }
    if (ok) continue;
    setStatus("provisioning " + { p384: "P-384", p256: "P-256" }[alg] + ": the board makes its key pair, the lab CA issues its certificate...");
    const xy = board.publicKey(alg);
    const info = await defaultDeviceInfo("web", xy);
    const chain = await issueLeaf(ca, alg, xy, info);
    board.installChain(alg, concat(...chain));
    state.deviceChains[alg] = concat(...chain);
    made.push({ p384: "P-384", p256: "P-256" }[alg]);
  }
  return made;
}

async function bootBoard({ force = false } = {}) {
  enable(false);
  const t0 = performance.now();
  setStatus("booting the board in this page (MicroPython WebAssembly)...");
  try {
    if (!state.board) state.board = new InPageBoard({ log });
    await state.board.boot();
    state.ca = await labCA();
    if (!state.foreign) { state.trustedRoot = state.ca.der; state.trustedLabel = "the page's lab CA"; }
    const made = await provision(state.board, state.ca, force);
    state.board.startDevice();
    setStatus("board in this page ready (" + ((performance.now() - t0) / 1000).toFixed(1) + " s): keys made on the board, " +
      (made.length ? "just provisioned " + made.join(" and ") : "provisioned") + " by the page's lab CA" +
      (state.modified ? "; MODIFIED file " + state.modified : ""));
    renderPKI();
    enable(true);
    $("board-ready").textContent = "ready";
  } catch (e) {
    state.bootError = String(e && e.stack || e);
    setStatus("the board did not boot: " + (e && e.message || e));
    console.warn(e);
  }
}

function renderPKI() {
  const box = $("pki");
  box.replaceChildren();
  if (state.ca) {
    box.append(el("h3", { text: "Lab CA made by this page" }),
      el("p", { text: certName(state.ca.der) + " (P-384; key kept in this browser)" }),
      el("details", {}, el("summary", { text: "root certificate (PEM)" }), el("pre", { class: "pem", text: certPem(state.ca.der) })));
  }
  for (const [alg, der] of Object.entries(state.deviceChains || {})) {
    const leaf = splitDer(der).pop();
    box.append(el("h3", { text: "Device certificate (" + { p384: "P-384", p256: "P-256" }[alg] + ") the lab CA issued for the board's own key" }),
      el("p", { text: certName(leaf) + ", slot 0; the private key was generated on the board and never left its flash" }),
      el("details", {}, el("summary", { text: "device certificate (PEM)" }), el("pre", { class: "pem", text: certPem(leaf) })));
  }
  box.append(el("p", {}, el("strong", { text: "Trusted root for the verifier: " }), state.trustedLabel + " — " + (state.trustedRoot ? certName(state.trustedRoot) : "none") +
    (state.foreign ? " (FOREIGN: exercise 2)" : "")));
}

// ------------------------------------------------------------ transports
function wsTransport() {
  return new Promise((resolve, reject) => {
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/bridge";
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    const t = { onData: null, kind: "bridge", label: "bridged board " + (state.bridgeTarget || ""),
      write: (d) => ws.send(d), close: () => ws.close() };
    const timer = setTimeout(() => { ws.close(); reject(new Error("the bridge did not answer")); }, 5000);
    ws.onopen = () => { clearTimeout(timer); resolve(t); };
    ws.onmessage = (m) => t.onData && t.onData(new Uint8Array(m.data));
    ws.onclose = (ev) => {
      clearTimeout(timer);
      if (ev.code !== 1000 && ev.code !== 1005) {
        t.closedWhy = ev.reason || "closed (" + ev.code + ")";
        reject(new Error("bridge: " + t.closedWhy));
      }
    };
  });
}

async function serialTransport() {
  if (!("serial" in navigator)) throw new Error("this browser has no Web Serial (use Chromium, Chrome or Edge)");
  if (!state.serial) {
    const port = await navigator.serial.requestPort();
    await port.open({ baudRate: 115200 });
    const t = { onData: null, kind: "serial", label: "board on Web Serial", port };
    const writer = port.writable.getWriter();
    // a write to a board that went away is an UNREACHABLE run, never an uncaught error
    t.write = (d) => writer.write(d).catch((e) => log("serial: " + e));
    (async () => {
      const reader = port.readable.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        if (value && t.onData) t.onData(value);
      }
    })().catch((e) => log("serial: " + e)).finally(() => {
      // the port is gone (unplugged): the next run asks for a port again
      if (state.serial === t) state.serial = null;
      try { writer.releaseLock(); port.close(); } catch (e) { /* already closed */ }
    });
    state.serial = t;
  }
  return state.serial;
}

// ------------------------------------------------------------ running
function opts() {
  const v = $("opt-version").value;
  const a = $("opt-alg").value;
  return { version: v === "auto" ? null : parseInt(v, 16), algs: a === "any" ? ["p384", "p256"] : [a] };
}

async function run({ session = false, capture = false } = {}) {
  if (state.running) return null;
  state.running = true;
  enable(false);
  state.trace = [];
  state.selected = null;
  $("messages").replaceChildren();
  $("detail").replaceChildren(el("p", { text: "Select a message to see its fields." }));
  setVerdict(null, "running...");
  let transport;
  const kind = boardKind();
  try {
    if (kind === "in-page") {
      if (!state.board || !state.board.dev) throw new Error("the board in this page is not ready");
      transport = state.board;
    } else if (kind === "bridge") transport = await wsTransport();
    else transport = await serialTransport();
  } catch (e) {
    state.running = false;
    enable(true);
    setVerdict({ verdict: "UNREACHABLE", exit_code: EXIT.UNREACHABLE, reason: String(e.message || e) });
    return null;
  }
  const link = new MctpLink(transport);
  const g = capture ? null : loadGolden();
  const o = opts();
  const tamper = state.tamper ? { code: 0x03, offset: (rsp, r) => 4 + r.H + 5, done: false } : null;
  const t0 = performance.now();
  let out;
  try {
    out = await attest(link, { ...o, root: state.trustedRoot, golden: g ? goldenMap(g) : null, goldenMeta: g, session, tamper,
      onTrace: (what, e) => onTrace(what, e), onStage: (s) => setVerdict(null, "running: " + s + "...") });
  } finally {
    if (transport.kind === "bridge") transport.close();
  }
  const rep = out.report;
  rep.port = kind === "in-page" ? "in-page board" : kind === "bridge" ? "bridge " + (state.bridgeTarget || "") : "Web Serial";
  rep.transport = kind === "in-page" ? "the board simulated in this page (MicroPython WebAssembly; MCTP over its serial, DSP0253)"
    : kind === "bridge" ? "WebSocket bridge of uspdm lab to " + (state.bridgeTarget || "?") + " (MCTP over serial, DSP0253)"
      : "Web Serial (MCTP over serial, DSP0253)";
  rep.root_file = state.trustedLabel;
  rep.golden_file = g ? "golden captured in this page (" + g.captured + ")" : null;
  state.report = rep;
  state.out = out;
  state.elapsed = performance.now() - t0;
  if (capture) {
    if (rep.exit_code === EXIT.TRUSTED) {
      localStorage.setItem(goldenKey(), JSON.stringify(goldenDoc(rep, rep.port)));
      setVerdict(rep, null, "golden measurements captured: " + rep.measurements.blocks.length + " blocks");
    } else setVerdict(rep, null, "no golden captured");
  } else setVerdict(rep);
  renderChain(out.chainView, rep);
  renderMeasurements(out.blocks, rep);
  renderTimings(rep);
  renderGoldenInfo();
  $("json").textContent = JSON.stringify(rep, null, 2);
  // Show where it failed: the message whose check failed
  const bad = state.trace.find((e) => e.tampered !== null && e.tampered !== undefined) || [...state.trace].reverse().find((e) => e.signature && !e.signature.ok);
  if (bad) select(bad.id);
  state.running = false;
  enable(true);
  $("run-done").textContent = String(Number($("run-done").textContent || 0) + 1);
  return rep;
}

function setVerdict(rep, running, extra) {
  const v = $("verdict");
  v.className = "verdict";
  v.replaceChildren();
  if (!rep) {
    v.classList.add("v-running");
    v.append(el("span", { class: "icon", "aria-hidden": "true", text: "…" }), el("span", { text: running || "" }));
    return;
  }
  const cls = { TRUSTED: "v-ok", "MEASUREMENT MISMATCH": "v-warn" }[rep.verdict] || "v-bad";
  const icon = { TRUSTED: "✔", "MEASUREMENT MISMATCH": "⚠" }[rep.verdict] || "✖";
  v.classList.add(cls);
  v.append(el("span", { class: "icon", "aria-hidden": "true", text: icon }),
    el("span", { class: "vword", id: "verdict-word", text: "Verdict: " + rep.verdict }),
    el("span", { class: "vreason", text: " — " + shown(rep.reason) }),
    el("span", { class: "vexit", text: " (exit status " + rep.exit_code + ")" }));
  if (extra) v.append(el("div", { class: "vextra", text: extra }));
}

// ------------------------------------------------------------ messages
function onTrace(what, e) {
  if (what === "add") {
    state.trace.push(e);
    $("messages").append(messageRow(e));
  } else {
    const row = document.querySelector('[data-msg="' + e.id + '"]');
    if (row) row.replaceWith(messageRow(e));
    if (state.selected === e.id) renderDetail(e);
  }
}

function messageRow(e) {
  const name = CODE_NAMES[e.code] || "0x" + hex([e.code]);
  const req = e.dir === "req";
  const sigMark = e.signature ? (e.signature.ok ? " ✔ signature" : " ✖ SIGNATURE FAILS") : "";
  const tamperMark = e.tampered !== null && e.tampered !== undefined ? " ⚠ TAMPERED" : "";
  const label = (req ? "Requester to responder: " : "Responder to requester: ") + name + (e.secured ? " (in the secure session)" : "") + sigMark + tamperMark;
  const li = el("li", { class: "msg " + (req ? "m-req" : "m-rsp") + (e.signature && !e.signature.ok ? " m-fail" : "") + (e.secured ? " m-sec" : ""), "data-msg": e.id });
  const btn = el("button", { class: "msgbtn", "aria-label": label, "aria-pressed": state.selected === e.id ? "true" : "false",
    onclick: () => select(e.id), onkeydown: (ev) => navKey(ev, e.id) },
  el("span", { class: "lane lane-req", text: req ? "Requester" : "" }),
  el("span", { class: "arrow" }, el("span", { class: "arrow-name", text: (req ? "" : "◀ ") + name + (e.secured ? " (session)" : "") + (req ? " ▶" : "") + (e.reassembled ? " (reassembled)" : "") }),
    el("span", { class: "arrow-meta", text: e.bytes.length + " B" + (e.ms ? ", " + e.ms.toFixed(1) + " ms" : "") + sigMark + tamperMark })),
  el("span", { class: "lane lane-rsp", text: req ? "" : "Responder" }));
  li.append(btn);
  return li;
}

function navKey(ev, id) {
  let n = null;
  if (ev.key === "ArrowDown") n = Math.min(id + 1, state.trace.length - 1);
  else if (ev.key === "ArrowUp") n = Math.max(id - 1, 0);
  else if (ev.key === "Home") n = 0;
  else if (ev.key === "End") n = state.trace.length - 1;
  if (n === null) return;
  ev.preventDefault();
  select(n);
  const b = document.querySelector('[data-msg="' + n + '"] button');
  if (b) b.focus();
}

function select(id) {
  state.selected = id;
  for (const b of document.querySelectorAll(".msgbtn")) b.setAttribute("aria-pressed", b.parentElement.dataset.msg === String(id) ? "true" : "false");
  renderDetail(state.trace[id]);
}

function renderDetail(e) {
  const box = $("detail");
  box.replaceChildren();
  const r = state.out ? state.out.req : null;
  const names = {};
  for (const b of (state.out && state.out.blocks) || []) names[b.index] = b.file || blockLabel(b).split(": ")[0];
  const ctx = { H: r && r.hash ? r.H : 48, S: r && r.asym ? r.S : 96, reqBytes: e.reqBytes, names };
  const d = decode(e.bytes, ctx);
  box.append(el("h3", { id: "detail-title", text: (e.dir === "req" ? "Request " : "Response ") + d.name + " — " + e.bytes.length + " bytes" }),
    el("p", { class: "explain" }, d.explain + " ", el("cite", { text: "(" + d.cite + ")" })));
  if (e.secured) box.append(el("p", { class: "note", text: "Sent inside the secure session: on the wire it was an encrypted DSP0277 secured message (session ID, sequence number, length, AES-256-GCM ciphertext and tag" +
    (e.stats && e.stats.wire ? ", " + (e.dir === "req" ? e.stats.wire.request : e.stats.wire.response) + " bytes" : "") + "); shown here decrypted." }));
  if (e.stats) box.append(el("p", { class: "note", text: "Carried over MCTP/serial (DSP0236, DSP0253): " +
    (e.dir === "req" ? e.stats.txPackets + " packet(s), " + e.stats.txBytes + " framed bytes" : e.stats.rxPackets + " packet(s), " + e.stats.rxBytes + " framed bytes") }));
  if (e.stats && (e.stats.txPkts || e.stats.rxPkts)) box.append(wireView(e));
  if (e.tampered !== null && e.tampered !== undefined) {
    const fld = d.fields.find((f) => e.tampered >= f.off && e.tampered < f.off + f.len);
    box.append(el("p", { class: "alert", role: "alert", text: "⚠ TAMPERED IN FLIGHT: byte " + e.tampered + " (field " + (fld ? fld.name : "?") + ") was flipped between the board and the verifier (exercise 3). The signature below no longer verifies." }));
  }
  // field table + hex dump, fields numbered so no colour is needed to match them
  const dump = el("div", { class: "hexdump", role: "group", "aria-label": "message bytes" });
  d.fields.forEach((f, i) => {
    const sp = el("span", { class: "fb fb" + (i % 4), "data-f": i, title: f.name });
    sp.append(el("sup", { class: "fnum", text: String(i + 1) }));
    for (let k = 0; k < f.len; k++) {
      const pos = f.off + k;
      const byte = el("span", { class: "byte" + (pos === e.tampered ? " tampered" : ""), text: hex([e.bytes[pos]]) });
      if (pos === e.tampered) byte.setAttribute("aria-label", "tampered byte " + hex([e.bytes[pos]]));
      sp.append(byte);
      if (k > 64 && f.len > 80) { sp.append(el("span", { class: "more", text: " …(" + (f.len - k - 1) + " more bytes)" })); break; }
    }
    dump.append(sp, " ");
  });
  const tbl = el("table", { class: "fields" }, el("caption", { text: "Fields (numbers match the bytes above)" }),
    el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "#" }), el("th", { scope: "col", text: "field" }), el("th", { scope: "col", text: "offset" }),
      el("th", { scope: "col", text: "bytes" }), el("th", { scope: "col", text: "value" }))));
  const tb = el("tbody");
  d.fields.forEach((f, i) => {
    const tr = el("tr", { tabindex: "0", "data-f": i, onfocus: () => hl(i, true), onblur: () => hl(i, false), onmouseenter: () => hl(i, true), onmouseleave: () => hl(i, false) },
      el("td", { text: String(i + 1) }), el("th", { scope: "row", text: f.name }), el("td", { text: String(f.off) }), el("td", { text: String(f.len) }),
      el("td", { class: "val", text: shown(f.text) }));
    if (e.tampered !== null && e.tampered !== undefined && e.tampered >= f.off && e.tampered < f.off + f.len) tr.classList.add("tampered-row");
    tb.append(tr);
  });
  tbl.append(tb);
  box.append(dump, tbl);
  if (e.transcripts.length) {
    const t = el("table", { class: "transcripts" }, el("caption", { text: "Transcripts: what this message appended, and the running hash after it" }),
      el("thead", {}, el("tr", {}, ...["transcript", "appended", "total", "hash after this message"].map((h) => el("th", { scope: "col", text: h })))));
    const b2 = el("tbody");
    for (const x of e.transcripts) b2.append(el("tr", {}, el("th", { scope: "row", text: x.name }), el("td", { text: x.appended + " B" }), el("td", { text: x.total + " B" }),
      el("td", { class: "val", text: x.hashAlg + " " + x.hash })));
    t.append(b2);
    box.append(t);
  }
  if (e.sigCovers || e.signature) {
    const s = e.signature;
    box.append(el("div", { class: "sig " + (s && !s.ok ? "sig-bad" : "sig-ok") },
      el("h4", { text: s ? (s.ok ? "✔ Signature verifies" : "✖ Signature does NOT verify") + " — " + s.what : "Signature" }),
      el("p", { text: "It covers " + (e.sigCovers || "") }),
      s ? el("p", { text: "Signed message = " + (s.prefix ? s.prefix + " + " : "") + s.hashAlg + "(transcript) = " + s.hashAlg + " " + s.transcriptHash + ", verified with the leaf certificate's public key (WebCrypto ECDSA)." }) : null));
  }
  if (e.keySchedule) {
    const t = el("table", { class: "transcripts" }, el("caption", { text: "Key schedule (DSP0274 key schedule, DSP0277 keys): the page's own values for this session, computed with WebCrypto" }));
    const tb = el("tbody");
    for (const [k, v] of e.keySchedule) tb.append(el("tr", {}, el("th", { scope: "row", text: k }), el("td", { class: "val", text: v })));
    t.append(tb);
    box.append(t);
  }
  if (e.verifyData) box.append(el("p", { class: "note", text: (e.verifyData.ok ? "✔ " : "✖ ") + e.verifyData.what + "; Hash(TH1) = " + e.verifyData.th1 }));
  if (e.note) box.append(el("p", { class: "note", text: e.note }));
}

// The MCTP packets (DSP0236) that carried the message, each as its DSP0253 serial frame.
function wireView(e) {
  const pkts = (e.dir === "req" ? e.stats.txPkts : e.stats.rxPkts) || [];
  const d = el("details", { class: "wire" }, el("summary", { text: "On the wire: " + pkts.length + " MCTP packet(s) in DSP0253 serial frames" + (e.secured ? " (type 0x06: secured message)" : "") }));
  d.append(el("p", { class: "hint", text: "Frame = 7E flag, 01 revision, byte count, the packet (7E/7D escaped as 7D 5E/7D 5D), FCS-16, 7E flag. " +
    "Packet = MCTP header (version 1, destination EID, source EID, SOM/EOM/sequence/tag-owner/tag) + payload; the first payload byte of a message is its type (05 SPDM, 06 secured SPDM)." + (e.dir === "rsp" ? " Received frames are shown re-encoded from the packets the page decoded." : "") }));
  const tbl = el("table", { class: "wiretbl" }, el("thead", {}, el("tr", {}, ...["#", "MCTP header", "payload", "frame (hex)"].map((h) => el("th", { scope: "col", text: h })))));
  const tb = el("tbody");
  pkts.slice(0, 8).forEach((p, i) => {
    const f = p[3];
    const hdr = "dest " + p[1] + ", src " + p[2] + (f & 0x80 ? ", SOM" : "") + (f & 0x40 ? ", EOM" : "") + ", seq " + ((f >> 4) & 3) + (f & 8 ? ", TO" : "") + ", tag " + (f & 7);
    const fr = encodeFrame(p);
    tb.append(el("tr", {}, el("td", { text: String(i + 1) }), el("td", { text: hdr }), el("td", { text: (p.length - 4) + " B" + (f & 0x80 ? " (type " + hex([p[4]]) + ")" : "") }),
      el("td", { class: "val", text: hex(fr.subarray(0, 12), " ") + (fr.length > 12 ? " … " + hex(fr.subarray(fr.length - 3), " ") : "") + "  (" + fr.length + " B)" })));
  });
  if (pkts.length > 8) tb.append(el("tr", {}, el("td", { colspan: "4", text: "… " + (pkts.length - 8) + " more packets" })));
  tbl.append(tb);
  d.append(tbl);
  return d;
}

function hl(i, on) {
  for (const x of document.querySelectorAll('#detail [data-f="' + i + '"]')) x.classList.toggle("hl", on);
}

// ------------------------------------------------------------ chain / measurements / timings
function renderChain(view, rep) {
  const box = $("chain");
  box.replaceChildren();
  if (!view) { box.append(el("p", { text: "No chain retrieved." })); return; }
  const ul = el("ol", { class: "chainlist" });
  for (const c of view.certificates) {
    const checks = el("ul", { class: "checks" });
    for (const k of c.checks) checks.append(el("li", { class: k.ok ? "ok" : "bad", text: (k.ok ? "✔ PASS: " : "✖ FAIL: ") + shown(k.text) }));
    ul.append(el("li", { class: "cert" }, el("h4", { text: c.role.toUpperCase() + ": " + shown(c.subject) }),
      el("p", { text: "issuer " + shown(c.issuer) + "; key " + c.key + "; valid until " + c.not_after.slice(0, 10) }), checks,
      el("details", {}, el("summary", { text: "PEM" }), el("pre", { class: "pem", text: c.pem }))));
  }
  const general = el("ul", { class: "checks" }, ...view.checks.map((t) => el("li", { class: "ok", text: "✔ PASS: " + t })));
  box.append(el("p", { text: "Chain buffer checks:" }), general, ul);
  if (rep.identity) box.append(el("p", { text: "SPDM leaf profile OK: " + shown(rep.identity.profile_notes.join("; ")) }));
}

function renderMeasurements(blocks, rep) {
  const box = $("meas");
  box.replaceChildren();
  if (!blocks) { box.append(el("p", { text: "No measurements read." })); return; }
  const gv = {};
  for (const g of rep.golden || []) gv[g.index] = g;
  const t = el("table", { class: "meas" }, el("caption", { text: blocks.length + " measurement blocks; signature " + rep.measurements.signature + (rep.golden ? "; compared with the golden capture" : "; no golden capture: UNCHECKED") }),
    el("thead", {}, el("tr", {}, ...["index", "what (file behind the digest)", "type", "value", "golden"].map((h) => el("th", { scope: "col", text: h })))));
  const tb = el("tbody");
  for (const b of blocks) {
    const g = gv[b.index];
    const verdict = rep.golden ? (g ? g.verdict : "?") : "unchecked";
    const lab = blockLabel(b);
    const tr = el("tr", { class: verdict === "OK" ? "g-ok" : verdict === "unchecked" ? "" : "g-bad", "data-index": b.index },
      el("td", { text: "0x" + b.index.toString(16).padStart(2, "0") }),
      el("th", { scope: "row", text: shown(lab.split(": ")[0]) }),
      el("td", { text: (b.raw_bitstream ? "raw: " : "digest: ") + (MEAS_TYPES[b.type] || "type " + b.type) }),
      el("td", { class: "val", text: shown(short(lab.includes(": ") && b.raw_bitstream ? lab.split(": ").slice(1).join(": ") : hex(b.value), 48)) }),
      el("td", { class: "gv", text: (verdict === "OK" ? "✔ OK" : verdict === "unchecked" ? "— unchecked" : "✖ " + verdict) + (g && g.detail ? " (" + g.detail + ")" : "") }));
    if (g && g.expected) {
      // never shortened: two digests that differ must look different
      tr.children[3].textContent = "got " + hex(b.value) + " / expected " + g.expected;
    }
    tb.append(tr);
  }
  for (const g of rep.golden || []) if (g.verdict === "MISSING") tb.append(el("tr", { class: "g-bad" }, el("td", { text: "0x" + g.index.toString(16) }), el("th", { text: "" }), el("td"), el("td"), el("td", { class: "gv", text: "✖ MISSING (" + g.detail + ")" })));
  t.append(tb);
  box.append(t);
}

function renderTimings(rep) {
  const box = $("timings");
  box.replaceChildren();
  const t = el("table", {}, el("thead", {}, el("tr", {}, ...["message", "ms", "request B", "response B", "RESPOND_IF_READY", "chunks"].map((h) => el("th", { scope: "col", text: h })))));
  const tb = el("tbody");
  let total = 0;
  for (const x of rep.timings) {
    total += x.ms;
    tb.append(el("tr", {}, el("th", { scope: "row", text: x.message }), el("td", { text: x.ms.toFixed(1) }), el("td", { text: String(x.request_bytes) }),
      el("td", { text: String(x.response_bytes) }), el("td", { text: String(x.not_ready_retries) }), el("td", { text: String(x.chunks) })));
  }
  tb.append(el("tr", {}, el("th", { scope: "row", text: "total" }), el("td", { text: total.toFixed(1) })));
  t.append(tb);
  box.append(t);
}

function renderGoldenInfo() {
  const g = loadGolden();
  $("golden-info").textContent = g ? "Golden capture for this board: " + g.measurements.length + " blocks, " + g.measurement_hash + ", captured " + g.captured : "No golden capture for this board yet: measurements are reported UNCHECKED.";
}

function download(text, name) {
  const blob = new Blob([text], { type: "application/json" });
  const a = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  a.remove();
}

function exportJson() {
  if (state.report) download(JSON.stringify(state.report, null, 2) + "\n", "uspdm-attest.json");
}

// ------------------------------------------------------------ exercises
async function exModify() {
  if (boardKind() !== "in-page") { setVerdict(null, "exercise 1 needs the board in this page"); return; }
  if (!loadGolden()) await run({ capture: true });
  const path = "/firmware/device.py";
  const orig = state.board.files[path];
  state.board.overrides[path] = concat(orig, new TextEncoder().encode("\n# changed in the lab: this line was not there when the golden measurements were taken\n"));
  state.modified = "firmware/device.py";
  await bootBoard();
  return run();
}

async function exForeign() {
  state.trustedRoot = await foreignRoot();
  state.trustedLabel = "a foreign root (exercise 2)";
  state.foreign = true;
  renderPKI();
  return run();
}

async function exTamper() {
  state.tamper = true;
  const rep = await run();
  state.tamper = false;
  return rep;
}

async function exReset() {
  state.tamper = false;
  state.foreign = false;
  if (state.board) state.board.overrides = {};
  state.modified = null;
  if (state.ca) { state.trustedRoot = state.ca.der; state.trustedLabel = "the page's lab CA"; }
  renderPKI();
  if (boardKind() === "in-page") await bootBoard();
}

async function loadRoot(file) {
  const data = new Uint8Array(await file.arrayBuffer());
  const text = new TextDecoder().decode(data);
  const cert = text.includes("-----BEGIN") ? new x509.X509Certificate(text) : new x509.X509Certificate(data);
  state.trustedRoot = new Uint8Array(cert.rawData);
  state.trustedLabel = file.name;
  state.foreign = false;
  renderPKI();
}

// ------------------------------------------------------------ start
async function start() {
  if (!window.isSecureContext || !(globalThis.crypto && crypto.subtle)) {
    // WebCrypto (and Web Serial) exist only in a secure context: https, or http on localhost
    setStatus("This page needs a secure context: open it as http://localhost:PORT/ on the machine running " +
      "`uspdm lab` (from another machine the browser withholds WebCrypto). See the README, 'The attestation lab'.");
    return;
  }
  try {
    const cfg = await (await fetch("config.json", { cache: "no-store" })).json();
    state.bridgeTarget = cfg.bridge;
  } catch (e) { /* served without config */ }
  const br = $("board-bridge");
  if (!state.bridgeTarget) {
    br.disabled = true;
    $("bridge-label").textContent = "On the bridge (start `uspdm lab --port-bridge PORT` to offer one)";
  } else $("bridge-label").textContent = "On the bridge: " + state.bridgeTarget;
  if (!("serial" in navigator)) {
    $("board-serial").disabled = true;
    $("serial-label").textContent = "On Web Serial (not in this browser: use Chromium, Chrome or Edge)";
  }
  $("btn-attest").addEventListener("click", () => run());
  $("btn-session").addEventListener("click", () => run({ session: true }));
  $("btn-golden").addEventListener("click", () => run({ capture: true }));
  $("btn-forget-golden").addEventListener("click", () => { localStorage.removeItem(goldenKey()); renderGoldenInfo(); });
  $("btn-export").addEventListener("click", exportJson);
  $("ex-modify").addEventListener("click", exModify);
  $("ex-root").addEventListener("click", exForeign);
  $("ex-tamper").addEventListener("click", exTamper);
  $("ex-reset").addEventListener("click", exReset);
  $("btn-reprovision").addEventListener("click", async () => { eraseFlash(); forgetCA(); state.foreign = false; await bootBoard({ force: true }); });
  $("golden-file").addEventListener("change", async (ev) => {
    const f = ev.target.files[0];
    if (!f) return;
    try {
      const doc = JSON.parse(await f.text());
      goldenMap(doc);   // checks it has measurements
      localStorage.setItem(goldenKey(), JSON.stringify(doc));
      renderGoldenInfo();
    } catch (e) {
      $("golden-info").textContent = "cannot use " + f.name + " as a golden file (uspdm golden's format): " + e.message;
    }
  });
  $("btn-export-golden").addEventListener("click", () => {
    const g = loadGolden();
    if (g) download(JSON.stringify(g, null, 2) + "\n", "golden.json");
  });
  $("root-file").addEventListener("change", (ev) => ev.target.files[0] && loadRoot(ev.target.files[0]).catch((e) => setVerdict(null, "cannot read that root: " + e.message)));
  for (const r of document.querySelectorAll("input[name=board]")) r.addEventListener("change", () => {
    renderGoldenInfo();
    if (boardKind() === "in-page" && state.ca) { state.trustedRoot = state.ca.der; state.trustedLabel = "the page's lab CA"; renderPKI(); }
    enable(boardKind() !== "in-page" || !!(state.board && state.board.dev));
  });
  state.api = { run, exModify, exForeign, exTamper, exReset, bootBoard, loadGolden };
  renderGoldenInfo();
  await bootBoard();
}

start();
