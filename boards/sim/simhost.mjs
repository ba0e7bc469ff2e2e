// The simulated board's "hardware": real MicroPython (wasm) running the
// firmware, with the board's USB serial on this process's stdin/stdout
// (raw bytes both ways; `uspdm sim` connects them to a pseudo-terminal or
// TCP) and its log on stderr.
//
// Usage: node boards/sim/simhost.mjs [--root DIR] [--flash DIR] [--heap BYTES] [--verbose 1]
//        [--i2c 1 [--i2c-addr 0x1D] [--bridge-addr 0x10] [--i2c-irq hard|mem] [--i2c-trace 1]]
// With --i2c the serial belongs to a bridge board that reaches the responder
// board (the firmware Device, --flash) over a simulated I2C bus
// (boards/sim/i2cbus.py).
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startMicroPython, parseArgs } from "../../tools/mpy/mpcore.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const opts = parseArgs(process.argv.slice(2), {
  root: path.resolve(here, "..", ".."),
  heap: 4 * 1024 * 1024,
  flash: null,
  verbose: "0",
  i2c: "0",
  "i2c-addr": "0x1D",
  "bridge-addr": "0x10",
  "i2c-irq": "hard",
  "i2c-trace": "0",
});

function log(line) {
  fs.writeSync(2, line + "\n");
}

const mp = await startMicroPython({
  root: opts.root,
  heap: opts.heap,
  flash: opts.flash,
  mounts: [["firmware", "/firmware"], ["boards/sim", "/board"], ...opts.mounts],
  stdout: (line) => log(line),
});

mp.runPython(`
import sys
sys.path.insert(0, '/board')
sys.path.insert(0, '/firmware')
import main as _fw
_dev = _fw.make_device(sim=True, verbose=${opts.verbose === "1" ? "True" : "False"})
`);
if (opts.i2c === "1") {
  mp.runPython(`
import i2cbus
_dev = i2cbus.I2CSystem(_dev, prot_addr=${parseInt(opts["i2c-addr"])}, bridge_addr=${parseInt(opts["bridge-addr"])},
                        hard=${opts["i2c-irq"] === "mem" ? "False" : "True"}, trace=${opts["i2c-trace"] === "1" ? "True" : "False"})
`);
}
const dev = mp.globals.get("_dev");
// Look the methods up once: every attribute read through the JS proxy makes a
// bound-method object that the proxy table keeps alive on the MicroPython
// heap (about 16 bytes a call), which the -v heap figures would count as the
// firmware's and which slowly fills the heap of a long run.
const feedHex = dev.feed_hex;
const idleHex = dev.idle_hex;
const devPending = dev.pending;
// Heap figures are sampled in a call of their own, after each feed/idle
// (see Device.heap_sample); with --i2c, I2CSystem.heap_sample gives the responder board's.
const heapSample = (() => {
  try { const f = mp.globals.get("_dev").heap_sample; return f ? () => f() : () => {}; } catch (e) { return () => {}; }
})();

let idleScheduled = false;
function idle() {
  idleScheduled = false;
  let more = false;
  try {
    const out = String(idleHex());
    if (out.length) fs.writeSync(1, Buffer.from(out, "hex"));
    if (out.length) heapSample();
    more = !!devPending();
  } catch (e) {
    log("sim: firmware error in idle: " + (e && e.message ? e.message : e));
  }
  if (more) schedule();
}
function schedule() {
  if (!idleScheduled) {
    idleScheduled = true;
    setImmediate(idle);
  }
}

process.stdin.on("data", (chunk) => {
  try {
    const out = String(feedHex(chunk.toString("hex")));
    if (out.length) fs.writeSync(1, Buffer.from(out, "hex"));
    heapSample();
    if (devPending()) schedule();
  } catch (e) {
    // The firmware catches everything itself; this is a bug worth a log line,
    // never a reason to stop serving.
    log("sim: firmware error: " + (e && e.message ? e.message : e));
  }
});
// Timers (reassembly expiry, heartbeat) run even when the line is quiet.
setInterval(schedule, 250);
process.stdin.on("end", () => process.exit(0));
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));
log("sim: board ready");
