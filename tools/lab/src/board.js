// The board simulated in the page: this checkout's firmware/ and lib/ (and
// boards/web/board.py), served by `uspdm lab` at /board-files.json, running
// on the pinned MicroPython WebAssembly build.  Its flash (/flash: keys,
// certificate chains, EID) is kept in the browser's localStorage.  The page
// talks to it only through its USB serial bytes (SimDevice.feed_hex/idle_hex, firmware/simdev.py),
// exactly like the verifier talks to a real board.
import { b64, hex, unb64, unhex, random } from "./util.js";

const FLASH_KEY = "uspdm-lab-flash";

export class InPageBoard {
  constructor({ log = () => {} } = {}) {
    this.log = log;
    this.onData = null;
    this.files = null;       // path -> Uint8Array, as served
    this.overrides = {};     // path -> Uint8Array (lab exercise: modified files)
    this.mp = null;
    this.dev = null;
    this.busy = false;
    this.idleTimer = null;
    this.kind = "in-page";
    this.label = "board simulated in this page (MicroPython WebAssembly)";
  }

  async loadFiles() {
    const r = await fetch("board-files.json", { cache: "no-store" });
    if (!r.ok) throw new Error("cannot load the board's files: HTTP " + r.status);
    const j = await r.json();
    this.files = {};
    for (const [p, v] of Object.entries(j)) this.files[p] = unb64(v);
  }

  file(path) {
    return this.overrides[path] || this.files[path];
  }

  // Boot: the interpreter (loaded once per page), the code and the flash,
  // then (startDevice) the firmware's Device.  A reboot keeps the
  // interpreter but forgets every module the firmware imported, so the
  // files as they are now (a lab exercise may have changed one) run afresh.
  // One interpreter per page: the WebAssembly build's JS proxies refer to
  // the last loaded instance, so a second one would corrupt the first.
  async boot() {
    if (!this.files) await this.loadFiles();
    this.stopIdle();
    const first = !this.mp;
    if (first) {
      const mod = await import(new URL("micropython.mjs", location.href).href);
      this.mp = await mod.loadMicroPython({
        heapsize: 8 * 1024 * 1024,
        url: new URL("micropython.wasm", location.href).href,
        stdout: (line) => this.log(line),
        stderr: (line) => this.log(line),
      });
    }
    const FS = this.mp.FS;
    const mkdirs = (p) => {
      let cur = "";
      for (const part of p.split("/").filter(Boolean)) {
        cur += "/" + part;
        try { FS.mkdir(cur); } catch (e) { /* exists */ }
      }
    };
    for (const p of Object.keys(this.files)) {
      mkdirs(p.slice(0, p.lastIndexOf("/")));
      FS.writeFile(p, this.file(p));
    }
    rmTree(FS, "/flash");
    mkdirs("/flash");
    for (const [p, v] of Object.entries(loadFlash())) {
      mkdirs(p.slice(0, p.lastIndexOf("/")));
      FS.writeFile(p, unb64(v));
    }
    globalThis.uspdmFlashSync = () => { saveFlash(FS); return true; };
    globalThis.uspdmRandomHex = (n) => hex(random(Number(n)));
    if (first) {
      this.mp.runPython(
        "import sys, gc\n" +
        "for _p in ('/lib', '/firmware', '/board'):\n" +
        "    if _p not in sys.path: sys.path.insert(0, _p)\n" +
        "_lab_base = set(sys.modules)\n");
    } else {
      this.mp.runPython(
        "_dev = None\n" +
        "for _k in list(sys.modules):\n" +
        "    if _k not in _lab_base: del sys.modules[_k]\n" +
        "gc.collect()\n");
    }
    this.log("--- board boot " + (first ? "(power on)" : "(reset)") + " ---");
  }

  // The board's identity: its own key pair (made on the board) and, once
  // the page's lab CA issued it, its certificate chain.
  runSnippet(code) {
    this.mp.runPython("_lab_out = None\n" + code);
    return String(this.mp.globals.get("_lab_out"));
  }

  publicKey(alg) {
    return unhex(this.runSnippet(
      "import board, binascii\nfrom uspdm.identity import Identity\n" +
      "_i = Identity(board.storage(), board.drbg())\n_i.ensure_key('" + alg + "')\n" +
      "_lab_out = binascii.hexlify(bytes(_i.public_key('" + alg + "'))).decode()\n"));
  }

  hasChain(alg, slot = 0) {
    return this.runSnippet(
      "import board\nfrom uspdm.identity import Identity\n" +
      "_lab_out = 1 if Identity(board.storage(), board.drbg()).chain(" + slot + ", '" + alg + "') else 0\n") === "1";
  }

  installChain(alg, der, slot = 0) {
    return this.runSnippet(
      "import board, binascii\nfrom uspdm.identity import Identity\n" +
      "_i = Identity(board.storage(), board.drbg())\n" +
      "_i.install_chain(" + slot + ", '" + alg + "', binascii.unhexlify('" + hex(der) + "'))\n" +
      "_lab_out = len(_i.chain(" + slot + ", '" + alg + "') or b'')\n");
  }

  // Start serving: the firmware's Device on the "USB serial".
  startDevice() {
    this.mp.runPython(
      "import board\nfrom simdev import SimDevice\n" +
      "_dev = SimDevice(board, verbose=False)\n");
    this.dev = this.mp.globals.get("_dev");
    this.scheduleIdle(0);
  }

  write(data) {
    if (!this.dev) return;
    // Deliver asynchronously, as a wire would.
    setTimeout(() => {
      let out = "";
      try { out = String(this.dev.feed_hex(hex(data))); } catch (e) { this.log("board: " + e); }
      if (out.length && this.onData) this.onData(unhex(out));
      this.scheduleIdle(0);
    }, 0);
  }

  scheduleIdle(ms) {
    if (this.idleTimer || !this.dev) return;
    this.idleTimer = setTimeout(() => this.idle(), ms);
  }

  idle() {
    this.idleTimer = null;
    if (!this.dev) return;
    let more = false;
    try {
      const out = String(this.dev.idle_hex());
      if (out.length && this.onData) this.onData(unhex(out));
      more = !!this.dev.pending();
    } catch (e) {
      this.log("board: error in idle: " + e);
    }
    // deferred signing and background digests run in slices; timers every 250 ms
    this.scheduleIdle(more ? 0 : 250);
  }

  stopIdle() {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    this.dev = null;
  }

  close() { this.stopIdle(); }

  measuredFiles() {
    return Object.keys(this.files).sort();
  }
}

function rmTree(FS, dir) {
  let names;
  try { names = FS.readdir(dir); } catch (e) { return; }
  for (const name of names) {
    if (name === "." || name === "..") continue;
    const p = dir + "/" + name;
    if (FS.isDir(FS.stat(p).mode)) { rmTree(FS, p); FS.rmdir(p); } else FS.unlink(p);
  }
}

function loadFlash() {
  try { return JSON.parse(localStorage.getItem(FLASH_KEY) || "{}"); } catch (e) { return {}; }
}

function saveFlash(FS) {
  const out = {};
  const walk = (dir) => {
    for (const name of FS.readdir(dir)) {
      if (name === "." || name === "..") continue;
      const p = dir + "/" + name;
      if (FS.isDir(FS.stat(p).mode)) walk(p);
      else out[p] = b64(FS.readFile(p));
    }
  };
  walk("/flash");
  localStorage.setItem(FLASH_KEY, JSON.stringify(out));
}

export function eraseFlash() {
  localStorage.removeItem(FLASH_KEY);
}
