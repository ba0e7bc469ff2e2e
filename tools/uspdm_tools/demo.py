"""`make demo`: provision a board and attest it, end to end.

Without --port: a simulated board with its flash under .demo/flash and a lab
CA under .demo/ca is provisioned, started behind a pseudo-terminal, attested
with `uspdm attest`, enrolled into slot 1 over SPDM itself (`uspdm enroll`:
secure session, GET_CSR, the lab CA signs, SET_CERTIFICATE, attestation of
slot 1), then stopped.  With --port (make demo PORT=/dev/ttyACM0): the real
board on that port is provisioned through mpremote, attested and enrolled.
"""
import argparse
import os
import subprocess
import sys
import time

from .paths import REPO_ROOT


def step(title):
    print("\n== %s" % title, flush=True)


def uspdm(*args, check=True):
    cmd = [sys.executable, "-m", "uspdm_tools.cli"] + list(args)
    print("$ uspdm " + " ".join(args), flush=True)
    p = subprocess.run(cmd, cwd=REPO_ROOT)
    if check and p.returncode != 0:
        raise SystemExit("demo: `uspdm %s` failed (exit %d)" % (" ".join(args), p.returncode))
    return p.returncode


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", help="a real board's serial port (default: the simulated board)")
    ap.add_argument("--dir", default=os.path.join(REPO_ROOT, ".demo"), help="where the demo keeps its CA and flash")
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    ca_dir = os.path.join(a.dir, "ca")
    root = os.path.join(ca_dir, "ca.cert.pem")
    if a.port:
        step("checking that the board on %s runs the uspdm firmware" % a.port)
        from .link import SerialLink, Unreachable

        try:
            with SerialLink(a.port, timeout=3) as link:
                cc, data = link.control(0x02)
            print("the board answers MCTP Get Endpoint ID (EID %d)" % data[0], flush=True)
        except (Unreachable, ValueError) as e:
            print("demo: the board on %s does not answer MCTP (%s).\n"
                  "Put the firmware on it first: make deploy BOARD=rp2040 PORT=%s (or BOARD=esp32)"
                  % (a.port, e, a.port), file=sys.stderr)
            return 2
        step("provisioning the board on %s (its key is generated on the board)" % a.port)
        uspdm("provision", "--port", a.port, "--ca-dir", ca_dir)
        step("attesting the board on %s" % a.port)
        rc = uspdm("attest", "--port", a.port, "--root", root, check=False)
        if rc == 0:
            step("enrolling slot 1 over SPDM (secure session, GET_CSR, lab CA, SET_CERTIFICATE, attest slot 1)")
            rc = uspdm("enroll", "--port", a.port, "--ca-dir", ca_dir, "--slot", "1", check=False)
    else:
        from .simproc import SimProcess

        flash = os.path.join(a.dir, "flash")
        step("provisioning the simulated board's flash (%s)" % flash)
        uspdm("provision", "--flash", flash, "--ca-dir", ca_dir)
        step("starting the simulated board (firmware on MicroPython)")
        with SimProcess(flash=flash) as sim:
            print("simulated board on %s (log: %s)" % (sim.port, sim.log_path), flush=True)
            step("attesting the simulated board")
            rc = uspdm("attest", "--port", sim.port, "--root", root, check=False)
            if rc == 0:
                step("enrolling slot 1 over SPDM (secure session, GET_CSR, lab CA, SET_CERTIFICATE, attest slot 1)")
                rc = uspdm("enroll", "--port", sim.port, "--ca-dir", ca_dir, "--slot", "1", check=False)
            step("stopping the simulated board")
    print("\ndemo finished in %.1f s: %s" % (time.monotonic() - t0, "device TRUSTED, slot 1 enrolled" if rc == 0
                                               else "attestation or enrolment failed (exit %d)" % rc))
    return rc


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.stderr.write("\ndemo: interrupted (the simulated board was stopped)\n")
        sys.exit(130)
