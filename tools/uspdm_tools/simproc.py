"""Start and stop `uspdm sim` as a child process (tests, demo, bench).

    with SimProcess(flash="/tmp/f") as sim:
        sim.port        # the pseudo-terminal path
        sim.log_text()  # the board log so far
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time


M0_ENV = "USPDM_SIM_M0"   # set (to a firmware path, or "default"): every SimProcess runs `sim --m0`


def m0_args(extra_args=()):
    """`uspdm sim --m0 ...` arguments when $USPDM_SIM_M0 selects the emulated Cortex-M0
    (pytest --m0 sets it), for boards the wasm engine does not have to run (not --i2c/--mpy)."""
    fw = os.environ.get(M0_ENV)
    if not fw or "--m0" in extra_args or "--i2c" in extra_args or "--mpy" in extra_args:
        return []
    return ["--m0"] + ([] if fw == "default" else [fw]) + ["--m0-load", os.environ.get(M0_ENV + "_LOAD", "ram")]


class SimProcess:
    def __init__(self, flash=None, verbose=True, start_timeout=None, extra_args=(), wait_measurements=True):
        if start_timeout is None:   # the emulated board builds its image and digests its files slower
            start_timeout = 180.0 if m0_args(extra_args) or "--m0" in extra_args else 60.0
        self._tmp = tempfile.mkdtemp(prefix="uspdm-sim-")
        self._log_final = None   # the log, kept once the temporary folder is gone
        self.flash = flash or os.path.join(self._tmp, "flash")
        self.port_file = os.path.join(self._tmp, "port")
        self.log_path = os.path.join(self._tmp, "board.log")
        cmd = [sys.executable, "-m", "uspdm_tools.cli", "sim", "--flash", self.flash,
               "--port-file", self.port_file, "--log", self.log_path] + list(extra_args) + m0_args(extra_args)
        if verbose:
            cmd.append("-v")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self._wait_started(start_timeout, wait_measurements)
        except BaseException:   # Ctrl-C or a failed start: never leave the board running (it holds the flash lock)
            self.stop()
            raise

    def _wait_started(self, start_timeout, wait_measurements):
        deadline = time.monotonic() + start_timeout
        while not os.path.exists(self.port_file):
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace")
                self.stop()
                raise RuntimeError("uspdm sim exited: " + out[-2000:])
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("uspdm sim did not start within %.0f s" % start_timeout)
            time.sleep(0.05)
        with open(self.port_file) as f:
            self.port = f.read().strip()
        self.emu_addr = None   # (host, port) of the spdm-emu platform port, with --emu-port
        m = re.search(r"emu: spdm-emu platform port ([0-9.]+):([0-9]+)", self.log_text())
        if m:
            self.emu_addr = (m.group(1), int(m.group(2)))
        # The board logs "sim: board ready" once the firmware is imported and
        # "measurements ready" once it has digested its files in the
        # background (a request before that is still answered, only slower).
        want = "measurements ready" if wait_measurements else "board ready"
        while want not in self.log_text():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                break
            time.sleep(0.05)

    def log_text(self):
        if self._log_final is not None:
            return self._log_final
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            self.proc.stdout.close()
        except Exception:
            pass
        if self._log_final is None:
            self._log_final = self.log_text()
            shutil.rmtree(self._tmp, ignore_errors=True)   # port file, log (and the flash if it was ours)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
