// Browser driver for the lab's tests (host_tests/test_lab.py): Playwright
// (playwright-core, npm) driving Debian's chromium headless -- no browser
// download.  It clicks through the page like a student and prints one JSON
// line with what it saw; pytest judges it.
//
//   node tools/lab/test/drive.mjs --url URL --out DIR --plan PLAN.json
//
// PLAN: {"steps": [{"name", "board": "in-page"|"bridge", "version": "13"|"12"|"auto",
//         "alg": "p384"|"p256"|"any", "action": "attest"|"session"|"golden"|"modify"|"root"|"tamper"|"reset"|"forget-golden",
//         "root": PATH (upload a trusted root first)}...], "clearStorage": bool}
// Every wait has a timeout; screenshots go to DIR/<name>.png.
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

function arg(name, dflt) {
  const i = process.argv.indexOf("--" + name);
  return i >= 0 ? process.argv[i + 1] : dflt;
}

export function chromiumPath() {
  for (const p of [process.env.USPDM_CHROMIUM, "/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser"]) {
    if (p && fs.existsSync(p)) return p;
  }
  return null;
}

const url = arg("url");
const out = arg("out", "build/lab-test");
const plan = JSON.parse(fs.readFileSync(arg("plan"), "utf8"));
const stepTimeout = Number(arg("step-timeout", "90000"));
fs.mkdirSync(out, { recursive: true });

const exe = chromiumPath();
if (!exe) {
  console.log(JSON.stringify({ skip: "chromium is not installed (apt-get install chromium)" }));
  process.exit(0);
}

const result = { console: [], pageErrors: [], steps: [] };
const browser = await chromium.launch({ executablePath: exe, headless: true, timeout: 60000,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
try {
  const ctx = await browser.newContext({ viewport: { width: 1600, height: 1000 }, acceptDownloads: true });
  if (plan.fakeSerial) {
    // Web Serial cannot be automated (the port chooser needs a person): stand in for the
    // browser's navigator.serial with a port whose byte streams go to `uspdm lab`'s bridge,
    // so the page's own Web Serial code path (requestPort, open, readable/writable) is exercised.
    await ctx.addInitScript(() => {
      const port = {
        async open(opts) {
          this.opts = opts;
          const ws = new WebSocket("ws://" + location.host + "/bridge");
          ws.binaryType = "arraybuffer";
          await new Promise((res, rej) => { ws.onopen = res; ws.onerror = () => rej(new Error("bridge refused")); });
          let ctrl;
          this.readable = new ReadableStream({ start(c) { ctrl = c; } });
          ws.onmessage = (m) => ctrl.enqueue(new Uint8Array(m.data));
          ws.onclose = () => { try { ctrl.close(); } catch (e) { /* closed */ } };
          this.writable = new WritableStream({ write(chunk) { ws.send(chunk); } });
          this.ws = ws;
        },
        async close() { this.ws.close(); },
        getInfo() { return { usbVendorId: 0x2e8a, usbProductId: 0x0005 }; },
      };
      window.__fakeSerialPort = port;
      Object.defineProperty(navigator, "serial", { configurable: true, value: { requestPort: async () => port, getPorts: async () => [port] } });
    });
  }
  const page = await ctx.newPage();
  page.setDefaultTimeout(stepTimeout);
  page.on("console", (m) => { if (m.type() === "error" || m.type() === "warning") result.console.push(m.type() + ": " + m.text()); });
  page.on("pageerror", (e) => result.pageErrors.push(String(e && e.stack || e)));
  await page.goto(url, { timeout: 30000 });
  if (plan.clearStorage) {
    await page.evaluate(() => localStorage.clear());
    await page.reload({ timeout: 30000 });
  }
  const t0 = Date.now();
  await page.waitForFunction(() => document.getElementById("board-ready").textContent === "ready" || (window.lab && window.lab.bootError),
    null, { timeout: 90000 });
  result.bootSeconds = (Date.now() - t0) / 1000;
  result.bootError = await page.evaluate(() => window.lab.bootError);
  await page.screenshot({ path: path.join(out, "00-booted.png"), fullPage: false });
  for (const st of plan.steps) {
    const s0 = Date.now();
    if (st.board) await page.check("input[name=board][value=" + st.board + "]");
    if (st.version) await page.selectOption("#opt-version", st.version === "auto" ? "auto" : st.version);
    if (st.alg) await page.selectOption("#opt-alg", st.alg);
    if (st.root) await page.setInputFiles("#root-file", st.root);
    const before = await page.evaluate(() => Number(document.getElementById("run-done").textContent || 0));
    const buttons = { attest: "#btn-attest", session: "#btn-session", golden: "#btn-golden", modify: "#ex-modify",
      root: "#ex-root", tamper: "#ex-tamper", reset: "#ex-reset", "forget-golden": "#btn-forget-golden" };
    if (st.action === "export") {
      const [dl] = await Promise.all([page.waitForEvent("download", { timeout: 30000 }), page.click("#btn-export")]);
      const fp = path.join(out, st.name + ".json");
      await dl.saveAs(fp);
      result.steps.push({ name: st.name, exported: JSON.parse(fs.readFileSync(fp, "utf8")), report: await page.evaluate(() => window.lab.report) });
      continue;
    }
    if (st.keyboard) {
      // reach the button with the keyboard alone
      await page.focus(buttons[st.action]);
      await page.keyboard.press("Enter");
    } else await page.click(buttons[st.action]);
    let expectRuns = { modify: 1, golden: 1, attest: 1, session: 1, root: 1, tamper: 1 }[st.action] || 0;
    if (st.action === "modify" && st.expectCapture) expectRuns = 2;
    if (expectRuns) {
      await page.waitForFunction((n) => Number(document.getElementById("run-done").textContent || 0) >= n, before + expectRuns, { timeout: stepTimeout });
    } else if (st.action === "reset") {
      await page.waitForFunction(() => !document.getElementById("btn-attest").disabled, null, { timeout: stepTimeout });
      await page.waitForTimeout(200);
      await page.waitForFunction(() => !document.getElementById("btn-attest").disabled, null, { timeout: stepTimeout });
    }
    const info = await page.evaluate(() => {
      const rep = window.lab.report;
      const sel = window.lab.selected;
      return {
        report: rep,
        verdictText: document.getElementById("verdict").innerText,
        boardLog: document.getElementById("board-log").textContent.slice(-3000),
        status: document.getElementById("board-status").textContent,
        messages: window.lab.trace.map((e) => (e.dir === "req" ? "> " : "< ") + (document.querySelector('[data-msg="' + e.id + '"] .arrow-name') || {}).textContent),
        selected: sel,
        detail: document.getElementById("detail").innerText,
        measRowsBad: Array.from(document.querySelectorAll("table.meas tr.g-bad")).map((r) => r.innerText),
        chainText: document.getElementById("chain").innerText,
        transcripts: window.lab.trace.reduce((n, e) => n + e.transcripts.length, 0),
        signatures: window.lab.trace.filter((e) => e.signature).map((e) => ({ what: e.signature.what, ok: e.signature.ok })),
        securedMessages: window.lab.trace.filter((e) => e.secured).map((e) => (document.querySelector('[data-msg="' + e.id + '"] .arrow-name') || {}).textContent),
        tampered: window.lab.trace.filter((e) => e.tampered !== null && e.tampered !== undefined).map((e) => e.id),
        chainHex: window.lab.out && window.lab.out.req.chains[0] ? Array.from(window.lab.out.req.chains[0], (x) => x.toString(16).padStart(2, "0")).join("") : null,
        rootHex: window.lab.trustedRoot ? Array.from(window.lab.trustedRoot, (x) => x.toString(16).padStart(2, "0")).join("") : null,
      };
    });
    if (st.keyboardNav && info.messages.length) {
      await page.focus('[data-msg="0"] button');
      await page.keyboard.press("ArrowDown");
      await page.keyboard.press("ArrowDown");
      info.keyboardSelected = await page.evaluate(() => window.lab.selected);
    }
    info.name = st.name;
    info.seconds = (Date.now() - s0) / 1000;
    await page.screenshot({ path: path.join(out, st.name + ".png"), fullPage: !!st.fullPage });
    result.steps.push(info);
  }
} catch (e) {
  result.error = String(e && e.stack || e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
