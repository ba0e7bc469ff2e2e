"""Benchmark: the whole attestation flow against the simulated board.

Provisions a fresh simulated board, then runs `uspdm attest`'s flow over its
serial port several times (P-384 and P-256, SPDM 1.3 and 1.0), printing the
time per message, the total, the certificate transfer rate, and the board's
heap during the flow as the simulator logs it (live heap after each message,
sampled after gc.collect() between messages; code compiled from .py is part
of it, see the README for the .mpy/frozen figures).
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

RUNS = 3


def _provision(flash, ca_dir):
    subprocess.run([sys.executable, "-m", "uspdm_tools.cli", "provision", "--flash", flash, "--ca-dir", ca_dir],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _heap(log):
    live = [int(m.group(1)) for m in re.finditer(r"heap: live (\d+) B", log)]
    alloc = [int(m.group(1)) for m in re.finditer(r"message allocated ~(\d+) B", log)]
    return live, alloc


def run():
    from .link import SerialLink, Unreachable
    from .simproc import SimProcess
    from .verifier import LinkTransport, attest, load_root

    print("\n== attestation flow against the simulated board (MicroPython wasm behind a pty)")
    tmp = tempfile.mkdtemp(prefix="uspdm-bench-flow-")
    try:
        flash = os.path.join(tmp, "flash")
        ca_dir = os.path.join(tmp, "ca")
        _provision(flash, ca_dir)
        root, _ = load_root(os.path.join(ca_dir, "ca.cert.pem"))
        with SimProcess(flash=flash) as sim:
            for algs, version in ((("p384",), None), (("p256",), None), (("p384",), "1.0")):
                per = {}
                totals = []
                cert_rate = []
                for _ in range(RUNS):
                    link = SerialLink(sim.port, timeout=30)
                    try:
                        t0 = time.monotonic()
                        code, rep = attest(LinkTransport(link, Unreachable), root, algs=algs, version=version)
                        totals.append(time.monotonic() - t0)
                    finally:
                        link.close()
                    if code != 0:
                        print("  flow failed: exit %d %s" % (code, rep.get("reason")))
                        break
                    cert_b = cert_s = 0.0
                    for t in rep["timings"]:
                        per.setdefault(t.name, []).append(t.seconds)
                        if t.name == "GET_CERTIFICATE":
                            cert_b += t.rsp_len
                            cert_s += t.seconds
                    if cert_s:
                        cert_rate.append(cert_b / cert_s / 1024)
                label = "%s, SPDM %s" % ("/".join(algs), version or "1.3 (highest)")
                print("  -- %s: %d runs (median)" % (label, len(totals)))
                for name, vals in per.items():
                    vals = sorted(vals)
                    print("  %-24s %9.1f ms" % (name, 1000 * vals[len(vals) // 2]))
                if totals:
                    totals.sort()
                    print("  %-24s %9.1f ms" % ("whole flow", 1000 * totals[len(totals) // 2]))
                if cert_rate:
                    cert_rate.sort()
                    print("  %-24s %9.1f KB/s" % ("certificate transfer", cert_rate[len(cert_rate) // 2]))
            live, alloc = _heap(sim.log_text())
        # the same board running .mpy files, as `uspdm deploy` installs them
        with SimProcess(flash=flash, extra_args=["--mpy"]) as sim:
            link = SerialLink(sim.port, timeout=30)
            try:
                code, rep = attest(LinkTransport(link, Unreachable), root, algs=("p384",))
            finally:
                link.close()
            live_mpy, _ = _heap(sim.log_text())
        if live_mpy:
            print("  -- board heap with the firmware as .mpy (uspdm sim --mpy), P-384 flow")
            print("  %-24s %9d B" % ("live max during flow", max(live_mpy)))
        if live:
            print("  -- board heap (simulator log, wasm MicroPython, modules compiled from .py)")
            print("  %-24s %9d B" % ("live after 1st message", live[0]))
            print("  %-24s %9d B" % ("live max during flows", max(live)))
            print("  %-24s %9d B" % ("largest message alloc", max(alloc) if alloc else 0))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
