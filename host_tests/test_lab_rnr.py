"""The lab page's requester (tools/lab/src/spdm.js, run under Node) follows
ResponseNotReady as the host requester does (tools/uspdm_tools/requester.py):
past RNR_RETRIES attempts it keeps asking while the board's own worst case,
WT_max = RDT x RDTM, has not passed twice over, and gives up once it has."""
import json
import os
import shutil
import subprocess

import pytest

from uspdm_tools.paths import REPO_ROOT

ESBUILD = os.path.join(REPO_ROOT, "node_modules", ".bin", "esbuild")

# A fake board: answers `notReady` ResponseNotReady errors (RDT = 2^rdtExp us, RDTM = rdtm),
# then a VERSION response.  Prints how many RESPOND_IF_READY went out, how long it took, and
# what the requester concluded.
RUNNER = r"""
import fs from "node:fs";
import { Requester, RNR_RETRIES } from "./spdm.mjs";
const job = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const r = new Requester(null, { timeoutMs: 1000 });
r.version = 0x12;
let sent = 0;
const rnr = (token) => new Uint8Array([0x12, 0x7f, 0x42, 0x00, job.rdtExp, 0x81, token, job.rdtm]);
r.xfer = async (req) => {
  sent++;
  if (req[1] !== 0xff && req[1] !== 0x81) throw new Error("unexpected request 0x" + req[1].toString(16));
  if (req[1] === 0xff && req[3] !== 7) throw new Error("wrong token " + req[3]);
  const rsp = sent > job.notReady ? new Uint8Array([0x12, 0x01, 0, 0, 0, 1, 0, 0x12]) : rnr(7);
  return { rsp, reqE: {}, rspE: {} };
};
const req = new Uint8Array([0x12, 0x81, 0, 0]);
const t0 = performance.now();
const out = { limit: RNR_RETRIES };
try {
  const x = await r.resolve(req, await r.xfer(req), false, { retries: 0, chunks: 0 });
  out.code = x.rsp[1];
} catch (e) {
  out.error = e.constructor.name + ": " + e.message;
}
out.rir = sent - 1;
out.ms = performance.now() - t0;
console.log(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if not (os.path.exists(ESBUILD) and shutil.which("node")):
        pytest.skip("npm packages or node missing: run `make setup`")
    d = tmp_path_factory.mktemp("labrnr")
    subprocess.run([ESBUILD, os.path.join(REPO_ROOT, "tools", "lab", "src", "spdm.js"), "--bundle", "--format=esm",
                    "--platform=node", "--log-level=warning", "--outfile=" + str(d / "spdm.mjs")],
                   check=True, timeout=120)
    (d / "run.mjs").write_text(RUNNER)

    def go(**job):
        (d / "job.json").write_text(json.dumps(job))
        p = subprocess.run(["node", str(d / "run.mjs"), str(d / "job.json")], capture_output=True, text=True,
                           timeout=120, cwd=str(d))
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)
    return go


def test_keeps_asking_past_the_count_while_wt_max_has_not_passed_twice(run):
    # RDT 1 ms, RDTM 50: WT_max 50 ms; 30 not-ready answers at ~1 ms each stay inside 2 x WT_max
    out = run(rdtExp=10, rdtm=50, notReady=30)
    assert out.get("code") == 0x01, out
    assert out["rir"] == 30 > out["limit"]


def test_gives_up_after_the_count_once_wt_max_has_passed_twice(run):
    # RDTM 1: WT_max = RDT = 1 ms, long gone after 20 tries
    out = run(rdtExp=10, rdtm=1, notReady=1000)
    assert "ProtocolError" in out.get("error", "") and "still not ready after" in out["error"], out
    # the count is the limit: the attempt past it is not sent
    assert out["rir"] == out["limit"], out
