// Shared start-up of the WebAssembly MicroPython used by the host runner
// (tools/mpy/runner.mjs) and by the simulated board (boards/sim/simhost.mjs).
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import fs from "node:fs";
import path from "node:path";

function copyIn(mp, src, dst) {
  try { mp.FS.mkdir(dst); } catch (e) { /* exists */ }
  for (const ent of fs.readdirSync(src, { withFileTypes: true })) {
    if (ent.name === "__pycache__" || ent.name.startsWith(".")) continue;
    const s = path.join(src, ent.name);
    const d = dst + "/" + ent.name;
    if (ent.isDirectory()) copyIn(mp, s, d);
    else if (ent.isFile()) mp.FS.writeFile(d, fs.readFileSync(s));
  }
}

// Mirror the interpreter's /flash to the host folder.  The mirror only ever
// writes what the board wrote and deletes what the board deleted: `known`
// holds the host paths it copied in or wrote; a host entry it does not know
// (created beside the running board, a dot-file, a symlink) is never touched,
// and nothing is written through a symlink.  Files are 0600 (keys, PSKs),
// folders 0700.
function isPlainFile(p) {
  try { return fs.lstatSync(p).isFile(); } catch (e) { return null; }
}
function syncOut(mp, src, dst, known) {
  try {
    const st = fs.lstatSync(dst);
    if (!st.isDirectory()) return;   // replaced by something else on the host: leave it alone
  } catch (e) {
    fs.mkdirSync(dst, { recursive: true, mode: 0o700 });
    known.add(dst);
  }
  const seen = new Set();
  for (const name of mp.FS.readdir(src)) {
    if (name === "." || name === "..") continue;
    const s = src + "/" + name;
    const d = path.join(dst, name);
    seen.add(d);
    if (mp.FS.isDir(mp.FS.stat(s).mode)) {
      syncOut(mp, s, d, known);
    } else {
      const plain = isPlainFile(d);
      if (plain === false) continue;   // a host folder/symlink/device in the way: never write through it
      const data = mp.FS.readFile(s);
      let same = false;
      if (plain) {
        try { same = Buffer.compare(fs.readFileSync(d), Buffer.from(data)) === 0; } catch (e) { /* unreadable */ }
      }
      if (!same) {
        const tmp = d + ".uspdm-tmp";
        fs.rmSync(tmp, { force: true });
        fs.writeFileSync(tmp, data, { mode: 0o600, flag: "wx" });
        fs.renameSync(tmp, d);
      }
      known.add(d);
    }
  }
  // what the board deleted: only entries the mirror itself put there
  for (const ent of fs.readdirSync(dst, { withFileTypes: true })) {
    const d = path.join(dst, ent.name);
    if (seen.has(d) || !known.has(d)) continue;
    if (ent.isDirectory()) {
      if (!dirOnlyKnown(d, known)) continue;
      fs.rmSync(d, { recursive: true, force: true });
    } else if (ent.isFile()) {
      fs.rmSync(d, { force: true });
    } else {
      continue;
    }
    known.delete(d);
  }
}
// True when every entry under the host folder d is one the mirror wrote.
function dirOnlyKnown(d, known) {
  for (const ent of fs.readdirSync(d, { withFileTypes: true })) {
    const p = path.join(d, ent.name);
    if (!known.has(p)) return false;
    if (ent.isDirectory()) { if (!dirOnlyKnown(p, known)) return false; }
    else if (!ent.isFile()) return false;
  }
  return true;
}

// Copy the host flash folder in, remembering what came from it (regular
// files and folders only: dot-files, __pycache__ and symlinks stay on the host).
function copyFlashIn(mp, src, dst, known) {
  try { mp.FS.mkdir(dst); } catch (e) { /* exists */ }
  for (const ent of fs.readdirSync(src, { withFileTypes: true })) {
    if (ent.name === "__pycache__" || ent.name.startsWith(".")) continue;
    const s = path.join(src, ent.name);
    const d = dst + "/" + ent.name;
    if (ent.isDirectory()) { known.add(s); copyFlashIn(mp, s, d, known); }
    else if (ent.isFile()) { mp.FS.writeFile(d, fs.readFileSync(s)); known.add(s); }
  }
}

// Start MicroPython with <root>/lib at /lib (on sys.path), `mounts`
// ([[hostDir, fsDir], ...]) copied in, and the host folder `flash` (if any)
// mirrored at /flash: globalThis.uspdmFlashSync() writes it back.
export async function startMicroPython({ root, heap = 8 * 1024 * 1024, mounts = [], flash = null, stdout, stderr }) {
  const mp = await loadMicroPython({ heapsize: heap, stdout, stderr: stderr || stdout });
  copyIn(mp, path.join(root, "lib"), "/lib");
  for (const [src, dst] of mounts) copyIn(mp, path.resolve(root, src), dst);
  if (flash) {
    fs.mkdirSync(flash, { recursive: true, mode: 0o700 });
    const known = new Set();
    copyFlashIn(mp, flash, "/flash", known);
    globalThis.uspdmFlashSync = () => { syncOut(mp, "/flash", flash, known); return true; };
  } else {
    try { mp.FS.mkdir("/flash"); } catch (e) { /* exists */ }
    globalThis.uspdmFlashSync = () => false;
  }
  // The host's entropy source, for the simulated board's RNG.
  globalThis.uspdmRandomHex = (n) => {
    const b = new Uint8Array(n);
    globalThis.crypto.getRandomValues(b);
    return Buffer.from(b).toString("hex");
  };
  mp.runPython("import sys\nif '/lib' not in sys.path: sys.path.append('/lib')\n");
  return mp;
}

export function parseArgs(argv, defaults) {
  const out = { ...defaults, mounts: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--root") out.root = path.resolve(argv[++i]);
    else if (a === "--heap") out.heap = parseInt(argv[++i], 10);
    else if (a === "--mount") { const [s, d] = argv[++i].split(":"); out.mounts.push([s, d]); }
    else if (a === "--flash") out.flash = path.resolve(argv[++i]);
    else if (a.startsWith("--")) out[a.slice(2)] = argv[++i];
  }
  return out;
}
