// Build the lab page into build/lab/ (run by `make setup` and by `uspdm lab`
// when the sources changed): esbuild bundles tools/lab/src/main.js with the
// pinned npm packages (@peculiar/x509 ...); the MicroPython WebAssembly
// build is copied beside it, unchanged.  Nothing is fetched at run time.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..", "..");
const out = path.join(root, "build", "lab");
fs.mkdirSync(out, { recursive: true });

await esbuild.build({
  entryPoints: [path.join(here, "src", "main.js")],
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["chrome110", "firefox115"],
  outfile: path.join(out, "lab.js." + process.pid + ".tmp"),   // concurrent builds never share a file
  logLevel: "warning",
  legalComments: "none",
});
fs.renameSync(path.join(out, "lab.js." + process.pid + ".tmp"), path.join(out, "lab.js"));
for (const f of fs.readdirSync(path.join(here, "web"))) {
  fs.copyFileSync(path.join(here, "web", f), path.join(out, f));
}
const mp = path.join(root, "node_modules", "@micropython", "micropython-webassembly-pyscript");
for (const f of ["micropython.mjs", "micropython.wasm"]) fs.copyFileSync(path.join(mp, f), path.join(out, f));
console.log("lab page built in " + path.relative(root, out));
