"""`uspdm sim --m0` diagnostics (USPDM_M0_IMPORTS=1): every first import logs the
heap it kept and the k-instructions it took, e.g.

    m0: import uspdm.crypto.sha2 kept 9312 B (own 4710 B) in 1840 k-instr, live 41230 B

kept = live heap after a collection, after the import minus before (nested imports
included); own = the same without the nested first imports.  Emulator plumbing
(staged at /rom/_m0/, not measured); each import runs two collections, so instruction
counts are a little high.  Installed by the host's boot script before anything else."""
import builtins
import gc
import sys
import time

_orig = builtins.__import__
_stack = []


def _new(name, fromlist):
    if name not in sys.modules:
        return True
    for f in fromlist or ():
        if f != "*" and (name + "." + f) not in sys.modules:
            return True
    return False


def _imp(name, *a):
    level = a[3] if len(a) > 3 else 0
    if level or not _new(name, a[2] if len(a) > 2 else None):
        return _orig(name, *a)
    before = list(sys.modules)
    gc.collect()
    m0 = gc.mem_alloc()
    t0 = time.ticks_us()
    _stack.append(0)
    try:
        return _orig(name, *a)
    finally:
        inner = _stack.pop()
        k = time.ticks_diff(time.ticks_us(), t0)
        if len(sys.modules) != len(before):
            gc.collect()
            live = gc.mem_alloc()
            kept = live - m0
            if _stack:
                _stack[-1] += kept
            new = [x for x in sys.modules if x not in before]
            top = name if name in new else new[0]
            for x in new:   # the module asked for (a submodule of a from-import when that is new)
                if x.startswith(name + "."):
                    top = x
            print("m0: import %s kept %d B (own %d B) in %d k-instr, live %d B" % (top, kept, kept - inner, k, live))


builtins.__import__ = _imp
