// Real MicroPython (WebAssembly build) under Node, driven over stdin/stdout.
//
// Usage: node tools/mpy/runner.mjs [--root DIR] [--heap BYTES] [--mount SRC:DST ...] [--flash DIR]
//
// The repository's lib/ is copied into the in-memory filesystem at /lib (on
// sys.path), plus any --mount SRC:DST folders; with --flash DIR that host
// folder is mirrored at /flash (uspdmFlashSync() writes it back, and it is
// synced after every request).  Then each line on stdin is a JSON request {"id": n, "code": "...", "measure": bool}; each answer is one
// JSON line on stdout: {"id", "ok", "out", "error", "alloc", "live"}.
//   out   - what the code printed
//   error - the MicroPython traceback, or null
//   alloc - bytes allocated while the code ran with the GC disabled: an upper
//           bound of its peak heap (MicroPython's gc.mem_alloc difference)
//   live  - bytes still allocated after gc.collect() (retained by the code)
//   exit  - present when the code called sys.exit(N): N
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { startMicroPython, parseArgs } from "./mpcore.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const opts = parseArgs(process.argv.slice(2), { root: path.resolve(here, "..", ".."), heap: 8 * 1024 * 1024, flash: null });

let outBuf = [];
const mp = await startMicroPython({ ...opts, stdout: (line) => outBuf.push(line) });

mp.runPython(`
import sys, gc
if '/lib' not in sys.path:
    sys.path.append('/lib')
def __uspdm_exit(e):
    c = e.args[0] if e.args else 0
    if c is None:
        return 0
    if isinstance(c, int):
        return c
    print(c)
    return 1
def __uspdm_exec(__src, __measure):
    g = {'__name__': '__main__'}
    code = -1
    if __measure:
        gc.collect()
        a0 = gc.mem_alloc()
        gc.disable()
        try:
            try:
                exec(__src, g)
            except SystemExit as e:
                code = __uspdm_exit(e)
            a1 = gc.mem_alloc()
        finally:
            gc.enable()
        g = None
        gc.collect()
        return '%d %d %d' % (a1 - a0, gc.mem_alloc() - a0, code)
    try:
        exec(__src, g)
    except SystemExit as e:
        code = __uspdm_exit(e)
    return '0 0 %d' % code
`);
const pyExec = mp.globals.get("__uspdm_exec");

function send(obj) {
  fs.writeSync(1, JSON.stringify(obj) + "\n");
}

send({ ready: true, version: String(mp.pyimport("sys").version) });

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of rl) {
  if (!line.trim()) continue;
  let req;
  try { req = JSON.parse(line); } catch (e) { send({ id: null, ok: false, error: "bad request: " + e }); continue; }
  outBuf = [];
  let res = { id: req.id, ok: true, error: null, alloc: 0, live: 0 };
  try {
    const r = String(pyExec(req.code, !!req.measure)).split(" ");
    res.alloc = parseInt(r[0], 10);
    res.live = parseInt(r[1], 10);
    const ex = parseInt(r[2], 10);
    if (ex >= 0) res.exit = ex;   // the code called sys.exit(N)
  } catch (e) {
    res.ok = false;
    res.error = String(e && e.message ? e.message : e);
  }
  res.out = outBuf.join("\n");
  try { globalThis.uspdmFlashSync(); } catch (e) { res.ok = false; res.error = "flash sync failed: " + e; }
  send(res);
}
