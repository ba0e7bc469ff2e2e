"""SPDM flows run against the emulated Cortex-M0 board (`uspdm sim --m0`), each checked
by the host verifier, with the board's per-message figures (k-instructions, live heap
after a collection, largest free block) collected from its --m0-stats file.

Used by host_tests/test_m0_budget.py (the chip's budgets) and `make bench` (bench_m0).

    with M0Run(fw, flash) as b:             # a fresh board, stock load, default settings
        figs = b.run("attest-p384-1.3")     # raises FlowError (with the board's log) on failure
        figs["peak_live"], figs["min_free"], figs["messages"]
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

PSK = bytes(range(32))
PSK_HINT = b"lab-psk-1"

FLOWS = ("attest-p384-1.2", "attest-p384-1.3", "attest-p256-1.2", "attest-p256-1.3", "session", "psk",
         "two-requesters")
FLOW_TITLES = {
    "attest-p384-1.2": "P-384 attestation, SPDM 1.2 (VERSION .. all measurements signed)",
    "attest-p384-1.3": "P-384 attestation, SPDM 1.3",
    "attest-p256-1.2": "P-256 attestation, SPDM 1.2",
    "attest-p256-1.3": "P-256 attestation, SPDM 1.3",
    "session": "KEY_EXCHANGE, FINISH, signed GET_MEASUREMENTS in session, HEARTBEAT, KEY_UPDATE, END_SESSION",
    "psk": "PSK_EXCHANGE, PSK_FINISH, GET_MEASUREMENTS in session, HEARTBEAT, KEY_UPDATE, END_SESSION",
    "two-requesters": "two requesters (EIDs 8 and 9) interleaving: P-384 attestation + session / P-256 attestation",
}


class FlowError(Exception):
    pass


def _fast_opts(timeout=12.0):
    # A requester waits RDT (the board's estimated RP2040 signing time, seconds) before
    # RESPOND_IF_READY; the emulator is faster than that, so poll sooner (an early
    # RESPOND_IF_READY is answered ResponseNotReady again, as DSP0274 allows).
    return {"timeout": timeout, "sleep": lambda s: time.sleep(min(s, 0.2)), "rnr_retries": 600,
            "rnr_timeout": 180.0}


def provision(flash, ca):
    """A provisioned flash (P-384 + P-256 identities) and a PSK for hint lab-psk-1."""
    p = subprocess.run([sys.executable, "-m", "uspdm_tools.cli", "provision", "--flash", str(flash), "--ca-dir",
                        str(ca)], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise FlowError("provision failed: " + p.stderr[-2000:])
    d = os.path.join(str(flash), "uspdm")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "psk_%s.bin" % PSK_HINT.hex()), "wb") as f:
        f.write(PSK)
    return os.path.join(str(ca), "ca.cert.pem")


def first_boot(fw, flash, root):
    """Boot a board once on flash, as after a deploy: it measures its signing time and
    keeps it on the flash (later boots skip that).  Returns the boot records, or the
    reason it did not get ready."""
    try:
        with M0Run(fw, flash, root, copy=False) as b:
            return b.boot
    except FlowError as e:
        return str(e).split("\n")[0]


def _link(port, host_eid=8, timeout=30.0):
    from . import link as link_mod
    from .cmd_session import LinkAdapter

    raw = link_mod.SerialLink(port, host_eid=host_eid, timeout=timeout)
    return raw, LinkAdapter(raw, link_mod.Unreachable)


def flow_attest(port, root, alg, version, host_eid=8):
    from . import certs as certs_mod
    from . import link as link_mod
    from . import verifier

    raw = link_mod.SerialLink(port, host_eid=host_eid, timeout=30.0)
    try:
        t = verifier.LinkTransport(raw, link_mod.Unreachable)
        code, rep = verifier.attest(t, certs_mod.load_cert(root), version=version, algs=(alg,),
                                    requester_opts=_fast_opts())
    finally:
        raw.close()
    if code != 0:
        raise FlowError("attestation %s %s: %s: %s" % (alg, version, rep.get("verdict"), rep.get("reason")))
    if rep["challenge"]["signature"] != "valid" or rep["measurements"]["signature"] != "valid" \
            or not rep["measurements"]["blocks"]:
        raise FlowError("attestation %s %s: incomplete report" % (alg, version))
    return rep


def _nomark(name):
    pass


def flow_session(port, root, version="1.3", host_eid=8, mark=_nomark):
    from . import certs as certs_mod
    from . import requester as R
    from . import session_requester as SR
    from . import verifier

    raw, link = _link(port, host_eid)
    try:
        q = SR.SessionRequester(link, version=version, **_fast_opts())
        q.init_connection()
        digests = q.get_digests()
        buf = q.get_certificate(0)
        try:
            certs_mod.validate_chain(buf, q.hash_size, R.HASHES[q.hash][1], "p384", q.version,
                                     certs_mod.load_cert(root), digest=digests[0])
        except certs_mod.ChainError as e:
            raise FlowError("session: certificate chain: %s" % e)
        mark("connection, certificate")
        s = q.open_session(0)                     # KEY_EXCHANGE + FINISH, signature and HMACs checked
        mark("KEY_EXCHANGE + FINISH")
        m = q.in_session(s).get_measurements()    # signed inside the session
        if not m["blocks"] or not m["signature"]:
            raise FlowError("session: measurements not signed")
        mark("signed GET_MEASUREMENTS in session")
        q.heartbeat(s)
        mark("HEARTBEAT")
        q.key_update(s)
        mark("KEY_UPDATE")
        q.end_session(s)
        mark("END_SESSION")
    finally:
        raw.close()


def flow_psk(port, version="1.3", host_eid=8, mark=_nomark):
    from . import session_requester as SR

    raw, link = _link(port, host_eid)
    try:
        q = SR.SessionRequester(link, version=version, **_fast_opts())
        q.init_connection()
        mark("connection")
        s = q.psk_exchange(PSK_HINT, PSK)
        if s.psk_context:
            q.psk_finish(s)
        mark("PSK_EXCHANGE + PSK_FINISH")
        m = q.in_session(s).get_measurements(0xFF, False)
        if not m["blocks"]:
            raise FlowError("psk: no measurements")
        q.heartbeat(s)
        q.key_update(s)
        q.end_session(s)
    finally:
        raw.close()


def flow_two(port, tcp, root):
    """Requester A (EID 8, the pty): P-384 attestation then a session; requester B
    (EID 9, the TCP socket carrying the same serial line): P-256 attestation, at the same time."""
    errors = []

    def a():
        try:
            flow_attest(port, root, "p384", "1.3", host_eid=8)
            flow_session(port, root, host_eid=8)
        except Exception as e:
            errors.append("requester A (EID 8): %s: %s" % (type(e).__name__, e))

    def b():
        try:
            time.sleep(0.3)   # A's first messages first: then both have work in flight
            flow_attest("socket://" + tcp, root, "p256", "1.2", host_eid=9)
        except Exception as e:
            errors.append("requester B (EID 9): %s: %s" % (type(e).__name__, e))

    ts = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(600)
    if any(t.is_alive() for t in ts):
        raise FlowError("two requesters: a requester did not finish within 600 s")
    if errors:
        raise FlowError("; ".join(errors))


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class M0Run:
    """One fresh emulated board (its own copy of the flash), driven by flows."""

    def __init__(self, fw, flash_template, root, load="ram", extra_args=(), start_timeout=180.0, copy=True):
        """copy=False: the board uses flash_template itself (its writes stay there)."""
        from .simproc import SimProcess

        self.tmp = tempfile.mkdtemp(prefix="uspdm-m0run-")
        if copy:
            self.flash = os.path.join(self.tmp, "flash")
            shutil.copytree(str(flash_template), self.flash,
                            ignore=shutil.ignore_patterns(".uspdm-flash.lock"))
        else:
            self.flash = str(flash_template)
        self.stats = os.path.join(self.tmp, "stats.jsonl")
        self.root = root
        self.tcp = "127.0.0.1:%d" % _free_port()
        args = ["--m0", fw, "--m0-load", load, "--m0-stats", self.stats, "--tcp", self.tcp] + list(extra_args)
        self.sim = SimProcess(flash=self.flash, extra_args=args, start_timeout=start_timeout, wait_measurements=False)
        deadline = time.monotonic() + start_timeout
        why = None
        paused = None
        while True:
            log = self.sim.log_text()
            if "measurements ready" in log:
                break
            if log.count("fw: error in idle") >= 5 or "board process exited" in log:
                why = failure_reason(log) or "the board failed while preparing"
                break
            if "background work paused" in log:
                # the board backs off when its heap is short (and says so once): give it
                # a few rounds of its backoff, then call it what it is
                paused = paused or time.monotonic()
                if time.monotonic() - paused > 25:
                    why = failure_reason(log) or "background work paused: out of memory"
                    break
            if time.monotonic() > deadline or self.sim.proc.poll() is not None:
                why = "not ready within %.0f s" % start_timeout
                break
            time.sleep(0.1)
        if why:
            self.close()
            raise FlowError("the board did not get ready (%s):\n%s" % (why, log[-3000:]))
        # the board logs "measurements ready" a few slices before its background work is done
        # (the context settled, the comb table loaded): its "prepared" record comes then
        done = time.monotonic() + 30
        while not any(r.get("event") == "prepared" for r in self._records()) and time.monotonic() < done:
            if self.sim.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.boot = self._records()

    def _records(self):
        try:
            with open(self.stats) as f:
                return [json.loads(x) for x in f if x.strip()]
        except OSError:
            return []

    def log_text(self):
        return self.sim.log_text()

    def run(self, flow):
        before = len(self._records())
        marks = []

        def mark(name):
            time.sleep(0.05)
            marks.append((name, len(self._records())))

        log_before = len(self.log_text())
        t0 = time.monotonic()
        err = None
        try:
            if flow.startswith("attest-"):
                _, alg, ver = flow.split("-")
                flow_attest(self.sim.port, self.root, alg, ver)
            elif flow == "session":
                flow_session(self.sim.port, self.root, mark=mark)
            elif flow == "psk":
                flow_psk(self.sim.port, mark=mark)
            elif flow == "two-requesters":
                flow_two(self.sim.port, self.tcp, self.root)
            else:
                raise ValueError("unknown flow %r" % flow)
        except Exception as e:
            err = e
        time.sleep(0.1)
        allrecs = self._records()
        recs = [r for r in allrecs[before:] if r.get("event") == "message"]
        figs = summarize(recs)
        phases = {}
        prev = before
        for name, n in marks:
            phases[name] = sum(r["kinstr"] for r in allrecs[prev:n] if r.get("event") == "message")
            prev = n
        figs["phases"] = phases
        figs["flow"] = flow
        figs["wall_s"] = round(time.monotonic() - t0, 2)
        if err is not None:
            log = self.log_text()[log_before:]
            why = failure_reason(log)
            raise FlowError("%s failed: %s: %s%s\n--- board log ---\n%s" % (
                flow, type(err).__name__, err, (" [board: %s]" % why) if why else "", log[-4000:]))
        return figs

    def close(self):
        try:
            self.sim.stop()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def failure_reason(log):
    """The board's first complaint in a log excerpt (MemoryError lines first)."""
    lines = [x for x in log.splitlines() if "MemoryError" in x or "memory" in x.lower()]
    lines += [x for x in log.splitlines() if "fw: error" in x or "Traceback" in x or "exited" in x]
    return lines[0].split(" ", 1)[-1].strip()[:200] if lines else ""


def summarize(recs):
    """Figures of one flow run from its per-message records."""
    per = []
    for r in recs:
        per.append((r["request"], r["kinstr"]))
    by_req = {}
    for name, k in per:
        by_req[name] = by_req.get(name, 0) + k
    lives = [r["live_max"] for r in recs if r.get("live_max")] + [r["live"] for r in recs if r.get("live")]
    frees = [r["min_free"] for r in recs if r.get("min_free")] + [r["max_free"] for r in recs if r.get("max_free")]
    return {
        "messages": len(recs),
        "kinstr": sum(k for _, k in per),
        "by_request": by_req,
        "per_message": per,
        "longest_step": max([r["max_step"] for r in recs] or [0]),
        "longest_step_at": max(recs, key=lambda r: r["max_step"])["request"] if recs else None,
        "peak_live": max(lives) if lives else None,
        "min_free": min(frees) if frees else None,
    }


def fmt_figs(f):
    parts = ", ".join("%s %s" % (k, "{:,}".format(v)) for k, v in f["by_request"].items())
    return ("%s: %d messages, %s k-instr (est. RP2040 %.2f s), peak live heap %s B, smallest largest-free-block "
            "%s B, longest step %s k-instr; per request: %s" % (
                f["flow"], f["messages"], "{:,}".format(f["kinstr"]), f["kinstr"] * 9.8 / 1e6, f["peak_live"],
                f["min_free"], "{:,}".format(f["longest_step"]), parts))
