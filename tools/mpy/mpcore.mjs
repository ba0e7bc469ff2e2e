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

// Mirror the interpreter's /flash to the host folder: write what changed,
// remove what was deleted.
function syncOut(mp, src, dst) {
  fs.mkdirSync(dst, { recursive: true });
  const seen = new Set();
  for (const name of mp.FS.readdir(src)) {
    if (name === "." || name === "..") continue;
    seen.add(name);
    const s = src + "/" + name;
    const d = path.join(dst, name);
    if (mp.FS.isDir(mp.FS.stat(s).mode)) {
      syncOut(mp, s, d);
    } else {
      const data = mp.FS.readFile(s);
      let same = false;
      try { same = Buffer.compare(fs.readFileSync(d), Buffer.from(data)) === 0; } catch (e) { /* new */ }
      if (!same) {
        fs.writeFileSync(d + ".tmp", data);
        fs.renameSync(d + ".tmp", d);
      }
    }
  }
  for (const ent of fs.readdirSync(dst, { withFileTypes: true })) {
    if (!seen.has(ent.name)) fs.rmSync(path.join(dst, ent.name), { recursive: true, force: true });
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
    fs.mkdirSync(flash, { recursive: true });
    copyIn(mp, flash, "/flash");
    globalThis.uspdmFlashSync = () => { syncOut(mp, "/flash", flash); return true; };
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
