"""Secure-session figures on the simulated board (MicroPython under Node).

- establishment time: KEY_EXCHANGE through FINISH_RSP (encrypted handshake and
  in the clear), PSK_EXCHANGE through PSK_FINISH_RSP
- secured-message throughput: HEARTBEAT round trips and unsigned
  GET_MEASUREMENTS (all blocks) inside a session
- the live heap of the responder on real MicroPython (wasm build, the
  firmware's code: Responder + SessionManager) with one and with two open
  sessions and at the peak of an attestation (signed measurements) inside one
  session.  Each request and each deferred-work slice runs as its own
  MicroPython call so the GC can run in between (inside one call the wasm
  port cannot collect; that is also why the simulator's per-message heap log
  is not used), and gc.mem_alloc() after gc.collect() is the live heap.

Figures only.  Run: python -m uspdm_tools.bench session
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

from .benchutil import IDENTITY_VECTORS, LiveHeap

HINT = b"bench-psk"
PSK = bytes(range(48))


SETUP = r"""
import gc, sys, uspdm
from uspdm.responder import Responder, Config
from uspdm.identity import Identity
from uspdm.measurements import Measurements
from uspdm.storage import MemoryStorage
from uspdm.crypto.drbg import HmacDrbg
from uspdm import session
""" + IDENTITY_VECTORS + r"""drbg = HmacDrbg(b'\x01' * 32, b'nonce')
st = MemoryStorage()
st.write('uspdm/psk_%s.bin', PSK)
ident = Identity(st, drbg)
ident.set_private_key('p384', int(blocks['p384']['key'], 16))
ident.install_chain(0, 'p384', unhex(blocks['p384']['chain']))
meas = Measurements()
for i in range(1, 33):
    meas.add_digest(i, 1, b'firmware file %%d' %% i)
meas.add_raw(0x41, 6, sys.version.encode())
meas.add_raw(0x42, 2, b'board=sim')
meas.add_svn(0x43, 1)
meas.add_device_mode()
cfg = session.configure(Config(defer_signing=True, data_transfer_size=1024, max_spdm_msg_size=4096))
uspdm.M = session.SessionManager(drbg, st, max_sessions=2, heartbeat=0, defer=True)
uspdm.R = session.attach(Responder(ident, meas, drbg, cfg), uspdm.M)
uspdm.R.eid = 8
del blocks, sec
"""


class MpLink(LiveHeap):
    """Requester link into a Responder running in MicroPython, one call per
    message and per deferred-work slice; tracks the live heap after each."""

    def _call(self, expr):
        out = self.mp.run("import uspdm\n_o = %s\nprint(_o.hex() if _o else '-')" % expr).out.strip()
        self.live()
        return None if out in ("-", "") else bytes.fromhex(out)

    def _work(self):
        """The board's idle loop: deferred work (a signature, also one inside a session) in slices."""
        while self.mp.run("import uspdm\nprint(1 if uspdm.R.pending() else 0)").out.strip() == "1":
            self.mp.run("import uspdm\nuspdm.R.work()")
            self.live()

    def spdm(self, req, timeout=None):
        self._work()
        rsp = self._call("uspdm.R.handle(%r)" % bytes(req))
        if rsp is None:
            raise TimeoutError("no answer")
        return rsp

    def secured(self, body, timeout=None):
        self._work()
        rsp = self._call("uspdm.M.handle_secured(8, %r, 0)" % bytes(body))
        if rsp is None:
            raise TimeoutError("no answer")
        return rsp


def heap_figures():
    """Live heap (bytes) of the responder with sessions on MicroPython:
    dict(code, state, one_session, attestation_peak, two_sessions)."""
    from .mpy import MicroPython
    from .paths import REPO_ROOT
    from .session_requester import SessionRequester

    vec = os.path.relpath(os.path.join(REPO_ROOT, "host_tests", "vectors"), REPO_ROOT)
    with MicroPython(mounts=[(vec, "/vectors")]) as mp:
        link = MpLink(mp)
        mp.run("import uspdm.responder, uspdm.identity, uspdm.measurements, uspdm.storage, uspdm.session\n"
               "from uspdm.crypto import drbg, ec, gcm\nec.sign(ec.P384, 5, bytes(48))")
        fig = {"code": link.live()}
        mp.run("PSK = %r\n" % PSK + SETUP % HINT.hex())
        fig["state"] = link.live()
        link.peak = 0
        q = SessionRequester(link, version="1.3", algs=("p384",), sleep=lambda t: None)
        q.init_connection()
        q.get_digests()
        q.get_certificate(0)
        s = q.open_session(0)
        fig["handshake_peak"] = link.peak
        fig["one_session"] = link.live()
        link.peak = 0
        inner = q.in_session(s)
        inner.get_measurements(0, False)
        inner.get_measurements()             # signed: attestation inside the session
        fig["attestation_peak"] = link.peak
        s2 = q.psk_exchange(HINT, PSK)
        if s2.psk_context:
            q.psk_finish(s2)
        q.heartbeat(s2)
        fig["two_sessions"] = link.live()
        q.end_session(s)
        q.end_session(s2)
        fig["after_end"] = link.live()
    return fig


def _row(name, value, unit=""):
    print("  %-52s %12s %s" % (name, value, unit))


def run(rounds=3, heartbeats=30):
    from .cmd_session import LinkAdapter
    from .link import SerialLink, Unreachable
    from .session_requester import SessionRequester
    from .simproc import SimProcess

    print("\n== session (simulated board: MicroPython/wasm, serial pty) ==")
    tmp = tempfile.mkdtemp(prefix="uspdm-bench-session-")
    flash = os.path.join(tmp, "flash")
    try:
        p = subprocess.run([sys.executable, "-m", "uspdm_tools.cli", "provision", "--flash", flash,
                            "--ca-dir", os.path.join(tmp, "ca")], capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            print("  provisioning failed: %s" % p.stderr.strip()[-300:])
            return
        os.makedirs(os.path.join(flash, "uspdm"), exist_ok=True)
        with open(os.path.join(flash, "uspdm", "psk_%s.bin" % HINT.hex()), "wb") as f:
            f.write(PSK)
        with SimProcess(flash=flash) as sim:
            raw = SerialLink(sim.port, timeout=60)
            link = LinkAdapter(raw, Unreachable)
            try:
                _bench(sim, link, SessionRequester, rounds, heartbeats)
            finally:
                raw.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        fig = heap_figures()
    except Exception as e:  # figures only: say why there are none
        print("  MicroPython heap figures unavailable: %s" % e)
        return
    code = fig["code"]
    _row("MicroPython live heap: code (uspdm modules + EC tables)", code, "B")
    _row("  + identity, 36 measurement blocks, responder, sessions", fig["state"] - code, "B")
    _row("  one open session (after FINISH)", fig["one_session"] - code, "B")
    _row("  peak during the handshake (between slices)", fig["handshake_peak"] - code, "B")
    _row("  peak, one session + attestation (signed measurements)", fig["attestation_peak"] - code,
         "B (target < 80 KB)")
    _row("  two open sessions", fig["two_sessions"] - code, "B")
    _row("  after both END_SESSION", fig["after_end"] - code, "B")


def _bench(sim, link, SessionRequester, rounds, heartbeats):
    for clear in (False, True):
        q = SessionRequester(link, version="1.3", clear_handshake=clear, timeout=60)
        q.init_connection()
        q.get_digests()
        q.get_certificate(0)
        ke, fin = [], []
        for _ in range(rounds):
            s = q.key_exchange(0)
            q.finish(s)
            ke.append(s.timings["KEY_EXCHANGE"])
            fin.append(s.timings["FINISH"])
            q.end_session(s)
        est = [a + b for a, b in zip(ke, fin)]
        label = "in the clear" if clear else "encrypted"
        _row("KEY_EXCHANGE -> FINISH_RSP (%s), mean of %d" % (label, rounds),
             "%.1f" % (1000 * sum(est) / len(est)), "ms")
        _row("  of which KEY_EXCHANGE (ECDH + keygen + sign)", "%.1f" % (1000 * sum(ke) / len(ke)), "ms")
    q = SessionRequester(link, version="1.3", timeout=60)
    q.init_connection()
    q.get_digests()
    q.get_certificate(0)
    ps = []
    for _ in range(rounds):
        t0 = time.monotonic()
        s = q.psk_exchange(HINT, PSK)
        if s.psk_context:
            q.psk_finish(s)
        ps.append(time.monotonic() - t0)
        q.end_session(s)
    _row("PSK_EXCHANGE -> PSK_FINISH_RSP, mean of %d" % rounds, "%.1f" % (1000 * sum(ps) / len(ps)), "ms")

    # throughput inside one session
    s = q.open_session(0)
    t0 = time.monotonic()
    for _ in range(heartbeats):
        q.heartbeat(s)
    dt = time.monotonic() - t0
    _row("HEARTBEAT round trips", "%.1f" % (heartbeats / dt), "msg/s")
    inner = q.in_session(s)
    n = 5
    t0 = time.monotonic()
    size = 0
    for _ in range(n):
        m = inner.get_measurements(0xFF, False)
        size += len(m["record"])
    dt = time.monotonic() - t0
    _row("GET_MEASUREMENTS (all, unsigned) in session", "%.1f" % (1000 * dt / n), "ms")
    _row("  secured payload throughput", "%.0f" % (size / dt), "B/s")
    q.end_session(s)


if __name__ == "__main__":
    run()
