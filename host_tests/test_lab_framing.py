"""The lab page's own MCTP-over-serial code (tools/lab/src/mctp.js, run under
Node) against independent references: the worked DSP0253 example, the FCS
from crcmod (CRC-16/MCRF4XX), the escapes undone by hand, and frames made by
the board's encoder (lib/mctp/serial.py) mixed with line noise."""
import json
import os
import random
import shutil
import subprocess

import crcmod.predefined
import pytest

from mctp import serial
from mctp.packet import packetize
from uspdm_tools.paths import REPO_ROOT

ESBUILD = os.path.join(REPO_ROOT, "node_modules", ".bin", "esbuild")

RUNNER = r"""
import fs from "node:fs";
import { encodeFrame, FrameDecoder, packetize, fcs16 } from "./mctp.mjs";
const job = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const hex = (b) => Buffer.from(b).toString("hex");
const un = (h) => new Uint8Array(Buffer.from(h, "hex"));
const out = {
  frames: job.packets.map((p) => hex(encodeFrame(un(p)))),
  fcs: job.packets.map((p) => fcs16(new Uint8Array([1, un(p).length, ...un(p)]))),
  packetized: job.messages.map((m) => packetize(m.dest, m.src, m.tag, true, un(m.body), m.mtu).map(hex)),
};
const dec = new FrameDecoder();
out.decoded = [];
for (const chunk of job.stream) for (const p of dec.feed(un(chunk))) out.decoded.push(hex(p));
console.log(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def js(tmp_path_factory):
    if not (os.path.exists(ESBUILD) and shutil.which("node")):
        pytest.skip("npm packages or node missing: run `make setup`")
    d = tmp_path_factory.mktemp("labjs")
    subprocess.run([ESBUILD, os.path.join(REPO_ROOT, "tools", "lab", "src", "mctp.js"), "--bundle", "--format=esm",
                    "--platform=neutral", "--log-level=warning", "--outfile=" + str(d / "mctp.mjs")],
                   check=True, timeout=120)
    (d / "run.mjs").write_text(RUNNER)

    def run(job):
        (d / "job.json").write_text(json.dumps(job))
        p = subprocess.run(["node", str(d / "run.mjs"), str(d / "job.json")], capture_output=True, text=True,
                           timeout=120, cwd=str(d))
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)
    return run


def _unstuff(frame):
    assert frame[0] == 0x7E and frame[-1] == 0x7E and frame[1] == 0x01
    count = frame[2]
    pkt = bytearray()
    i = 3
    while len(pkt) < count:
        b = frame[i]
        assert b != 0x7E
        if b == 0x7D:
            i += 1
            b = frame[i] ^ 0x20
        pkt.append(b)
        i += 1
    return bytes(pkt), frame[i:-1]


def test_page_framing_matches_references(js):
    rng = random.Random(1234)
    crc = crcmod.predefined.mkPredefinedCrcFun("crc-16-mcrf4xx")
    packets = [bytes.fromhex("010008c8008002")]   # the worked example (shared/spec/wire-notes.md)
    packets += [bytes(rng.choice((0x7E, 0x7D, rng.randrange(256))) for _ in range(rng.randrange(5, 69)))
                for _ in range(300)]
    messages = [{"dest": 0, "src": 8, "tag": t, "mtu": 64, "body": os.urandom(n).hex()}
                for t, n in enumerate((1, 63, 64, 65, 128, 1033, 4000))]
    # the board's frames, split at random points, with noise between some of them
    stream = b""
    want = []
    for p in packets[1:120]:
        if rng.random() < 0.2:
            stream += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6))).replace(b"\x7e", b"")
        stream += serial.encode_frame(p)
        want.append(p)
    cuts = sorted(rng.sample(range(1, len(stream)), 40))
    chunks = [stream[a:b].hex() for a, b in zip([0] + cuts, cuts + [len(stream)])]
    out = js({"packets": [p.hex() for p in packets], "messages": messages, "stream": chunks})

    assert out["frames"][0] == "7e0107010008c80080022bc17e"
    for p, fr, f in zip(packets, out["frames"], out["fcs"]):
        frame = bytes.fromhex(fr)
        pkt, tail = _unstuff(frame)
        assert pkt == p
        want_fcs = crc(bytes((1, len(p))) + p)
        assert f == want_fcs
        assert tail == want_fcs.to_bytes(2, "big")          # the FCS goes out raw, as libmctp sends it
        assert frame == serial.encode_frame(p)              # byte for byte what the board sends
        assert serial.SerialDecoder().feed(frame) == [p]    # and what the board accepts
    for m, pk in zip(messages, out["packetized"]):
        assert [bytes.fromhex(x) for x in pk] == [bytes(x) for x in packetize(m["dest"], m["src"], m["tag"], True,
                                                                            bytes.fromhex(m["body"]), m["mtu"])]
    assert [bytes.fromhex(x) for x in out["decoded"]] == want


def test_page_escapes_device_text_as_the_host_does(tmp_path):
    """Device text the page shows (manifest names, subjects, reasons) escapes control and
    format characters as the host's reports do (uspdm_tools.screen.escape)."""
    if not (os.path.exists(ESBUILD) and shutil.which("node")):
        pytest.skip("npm packages or node missing: run `make setup`")
    from uspdm_tools.screen import escape

    subprocess.run([ESBUILD, os.path.join(REPO_ROOT, "tools", "lab", "src", "util.js"), "--bundle", "--format=esm",
                    "--platform=neutral", "--log-level=warning", "--outfile=" + str(tmp_path / "util.mjs")],
                   check=True, timeout=120)
    samples = ["firmware/main.py", "\x1b[2Kfake OK", "a\rb\nc\td", "\x9b31m", "\u202eexe.txt", "zero\u200bwidth",
               "line\u2028sep", "\ufeffbom", "caf\u00e9 \u65e5\u672c", "\x7f\x00", "soft\u00adhyphen"]
    (tmp_path / "s.json").write_text(json.dumps(samples))
    (tmp_path / "run.mjs").write_text('import fs from "node:fs"; import { shown } from "./util.mjs";\n'
                                      'console.log(JSON.stringify(JSON.parse(fs.readFileSync("s.json", "utf8")).map(shown)));\n')
    p = subprocess.run(["node", "run.mjs"], capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == [escape(s) for s in samples]
