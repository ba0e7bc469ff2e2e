"""Secure-session figures on the simulated board (MicroPython under Node).

- establishment time: KEY_EXCHANGE through FINISH_RSP (encrypted handshake and
  in the clear), PSK_EXCHANGE through PSK_FINISH_RSP
- secured-message throughput: HEARTBEAT round trips and unsigned
  GET_MEASUREMENTS (all blocks) inside a session
- the board's live heap (gc.mem_alloc() after gc.collect(), logged by the
  firmware after every message) with one and with two open sessions, and
  during attestation (signed measurements) inside one session

Figures only.  Run: python -m uspdm_tools.bench session
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HINT = b"bench-psk"
PSK = bytes(range(48))


def _row(name, value, unit=""):
    print("  %-52s %12s %s" % (name, value, unit))


def _heap(sim):
    """Last logged live-heap figure of the board, or None."""
    m = re.findall(r"heap: live (\d+) B", sim.log_text())
    return int(m[-1]) if m else None


def _wait_log(sim, n, timeout=5.0):
    t = time.monotonic() + timeout
    while time.monotonic() < t:
        if len(re.findall(r"heap: live", sim.log_text())) >= n:
            return
        time.sleep(0.05)


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


def _count(sim):
    return len(re.findall(r"heap: live", sim.log_text()))


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
    base = _count(sim)
    q.heartbeat(s)
    _wait_log(sim, base + 1)
    one = _heap(sim)
    inner.get_measurements()         # signed: attestation inside the session
    _wait_log(sim, base + 2)
    att = max(int(x) for x in re.findall(r"heap: live (\d+) B", sim.log_text())[base:] or ["0"])
    s2 = q.open_session(0)
    q.heartbeat(s2)
    _wait_log(sim, _count(sim))
    two = _heap(sim)
    mx = re.findall(r"max (\d+)\)", sim.log_text())
    _row("board live heap, one open session", one if one is not None else "n/a", "B")
    _row("board live heap, one session + signed measurements", att or "n/a", "B (target < 80 KB)")
    _row("board live heap, two open sessions", two if two is not None else "n/a", "B")
    if mx:
        _row("board live heap, max over the whole run", mx[-1], "B")
    q.end_session(s)
    q.end_session(s2)


if __name__ == "__main__":
    run()
