"""Elliptic curves (lib/uspdm/crypto/ec.py): P-384 and P-256 keygen, sign,
verify and ECDH on MicroPython (wasm) and CPython, the heap of each
operation on MicroPython, the comb table's memory, the longest slice of the
incremental (*_iter) variants, and our CPython sign against python-ecdsa's
measured in the same run.

Heap columns (MicroPython):
  alloc - bytes allocated by one call with the GC disabled (total churn,
          an upper bound of the peak);
  kept  - the working set: the largest heap in use, beyond what was in use
          before, at the slice boundaries of the *_iter generator, each
          next() run as its own runner call so that the garbage really is
          collected in between (the wasm build's gc.collect() inside a run
          frees nothing, and its heap grows on demand, so neither gc
          thresholds nor a small-heap bisection can show a peak there).
          The true peak is this plus the transients of one slice: a few
          big ints and tuples (< 1 KB) for the curve arithmetic; the pure
          SHA-384 inside HMAC allocates more per step but keeps little.

Figures only.  Run: python -m uspdm_tools.bench ecc
"""
import sys

from .benchutil import TIMEIT, fmt_ms, parse_figures, run_cpython

SETUP = TIMEIT + r"""
import gc
from uspdm.crypto import ec

def best_of(fn):
    # best of 7 batches of >= 40 ms each: robust to a busy machine
    return timeit(fn, 0.04, 1 << 12, 2, True, 7)

def max_slice(gen):
    # longest single next() of a generator (best of 5 runs' maxima)
    best = None
    for _ in range(5):
        g = gen()
        m = 0
        while True:
            t0 = now()
            try:
                next(g)
            except StopIteration:
                break
            m = max(m, diff(t0, now()))
        best = m if best is None else min(best, m)
    return best

class Rng:
    def __init__(self, seed):
        self.s = seed
    def __call__(self, n):
        out = b''
        while len(out) < n:
            self.s = (self.s * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
            out += self.s.to_bytes(8, 'big')
        return out[:n]

C = {'p384': ec.P384, 'p256': ec.P256}
D = {}
PUB = {}
PEER = {}
DIG = {}
SIG = {}
for k, c in C.items():
    D[k] = ec.generate_private_key(c, Rng(1))
    PUB[k] = ec.public_key(c, D[k])
    PEER[k] = ec.public_key(c, ec.generate_private_key(c, Rng(2)))
    DIG[k] = bytes((i * 7 + 1) & 255 for i in range(c.size))
    SIG[k] = ec.sign(c, D[k], DIG[k])

def keygen(k):
    c = C[k]
    return ec.public_key(c, ec.generate_private_key(c, Rng(3)))

def nonce(k):
    for v in ec._rfc6979_iter(C[k], D[k], DIG[k], None):
        if v is not None:
            return v

OPS = {}
for _k in C:
    OPS[_k + '_keygen'] = (lambda k=_k: keygen(k))
    OPS[_k + '_sign'] = (lambda k=_k: ec.sign(C[k], D[k], DIG[k]))
    OPS[_k + '_nonce'] = (lambda k=_k: nonce(k))
    OPS[_k + '_verify'] = (lambda k=_k: ec.verify(C[k], PUB[k], DIG[k], SIG[k]))
    OPS[_k + '_ecdh'] = (lambda k=_k: ec.ecdh(C[k], D[k], PEER[k]))
ITERS = {}
for _k in C:
    ITERS[_k + '_sign'] = (lambda k=_k: ec.sign_iter(C[k], D[k], DIG[k]))
    ITERS[_k + '_verify'] = (lambda k=_k: ec.verify_iter(C[k], PUB[k], DIG[k], SIG[k]))
    ITERS[_k + '_ecdh'] = (lambda k=_k: ec.ecdh_iter(C[k], D[k], PEER[k]))
    ITERS[_k + '_keygen'] = (lambda k=_k: ec.public_key_iter(C[k], D[k]))
"""

TIME_CODE = r"""
for _name in NAMES:
    print(_name, best_of(OPS[_name]))
for _name in NAMES:
    if _name in ITERS:
        print('slice_' + _name, max_slice(ITERS[_name]))
"""

# one next() of a stored generator per run: between runs the wasm runner
# really collects garbage (a gc.collect() inside a run does not), so the heap
# in use at the start of each run is the working set kept between slices.
STEP_CODE = """import gc
from uspdm.crypto import ec
print(gc.mem_alloc())
try:
    next(ec._G)
except StopIteration:
    print('done')
"""


def _heap(mp):
    mp.run("import gc")
    return int(mp.run("import gc\nprint(gc.mem_alloc())").out.split()[0])


def _kept(mp, code):
    """Heap still in use after `code` ran (runner-level collection)."""
    before = _heap(mp)
    mp.run(code)
    return _heap(mp) - before


def _working_set(mp, name):
    base = _heap(mp)
    mp.run("from uspdm.crypto import ec\nec._G = ec._B[1][%r]()" % name)
    live, churn = 0, 0
    for _ in range(1000):
        r = mp.run(STEP_CODE, measure=True)
        live = max(live, int(r.out.split()[0]) - base)
        churn = max(churn, r.alloc)
        if "done" in r.out:
            break
    mp.run("from uspdm.crypto import ec\nec._G = None")
    return live, churn


HEAP = 256 * 1024

ROWS = [
    ("p384_keygen", "P-384 keygen (d + public key)"),
    ("p384_sign", "P-384 sign (RFC 6979 nonce + k*G + s)"),
    ("p384_nonce", "  of which RFC 6979 nonce (HMAC-SHA384, pure SHA)"),
    ("p384_verify", "P-384 verify"),
    ("p384_ecdh", "P-384 ECDH (incl. peer key validation)"),
    ("p256_keygen", "P-256 keygen"),
    ("p256_sign", "P-256 sign"),
    ("p256_nonce", "  of which RFC 6979 nonce (HMAC-SHA256)"),
    ("p256_verify", "P-256 verify"),
    ("p256_ecdh", "P-256 ECDH"),
]


def _cpython(names):
    ns = {"NAMES": names}
    res = parse_figures(run_cpython(SETUP + TIME_CODE, ns), keep_bad=True)
    try:
        import hashlib

        import ecdsa

        sk = ecdsa.SigningKey.from_secret_exponent(ns["D"]["p384"], curve=ecdsa.NIST384p, hashfunc=hashlib.sha384)
        dig = ns["DIG"]["p384"]
        res["ecdsa_p384_sign"] = ns["best_of"](lambda: sk.sign_digest_deterministic(dig, hashfunc=hashlib.sha384))
        vk = sk.get_verifying_key()
        sig = sk.sign_digest_deterministic(dig, hashfunc=hashlib.sha384)
        res["ecdsa_p384_verify"] = ns["best_of"](lambda: vk.verify_digest(sig, dig))
        res["p384_sign_again"] = ns["best_of"](ns["OPS"]["p384_sign"])
    except ImportError:
        pass
    return res


def _micropython(names):
    from .mpy import MicroPython

    # timing with a board-sized heap, so the GC cost is like on a device
    with MicroPython(heap=HEAP) as mp:
        r = mp.run("NAMES = %r\n" % (names,) + SETUP + TIME_CODE, timeout=600)
        times = parse_figures(r.out, keep_bad=True)
    with MicroPython(heap=HEAP) as mp:
        # memory the module and each curve's table keep alive (fresh interpreter)
        mem = {}
        mem["module"] = _kept(mp, "from uspdm.crypto import ec")
        mem["p384"] = _kept(mp, "from uspdm.crypto import ec\nec.P384.table()")
        mem["p256"] = _kept(mp, "from uspdm.crypto import ec\nec.P256.table()")
        mem["hmac"] = _kept(mp, "from uspdm.crypto import hmac, sha2")
        mp.run(SETUP + "\nec._B = (OPS, ITERS)\n")
        allocs = {}
        nop = mp.run("from uspdm.crypto import ec\nec._B[0]", measure=True).alloc
        for n in names:
            r = mp.run("from uspdm.crypto import ec\nec._B[0][%r]()" % n, measure=True)
            allocs[n] = max(0, r.alloc - nop)
        peaks = {}
        for n in names:
            if n.rsplit("_", 1)[1] != "nonce":
                peaks[n], peaks["churn_" + n] = _working_set(mp, n)
    return times, allocs, peaks, mem


def _ms(t):
    return fmt_ms(t, 2)


def _kb(b):
    return "-" if b is None else "%.1f KB" % (b / 1024.0)


def run():
    names = [r[0] for r in ROWS]
    print("ecc: P-384/P-256 pure Python (lib/uspdm/crypto/ec.py); MicroPython = wasm build, %d KB heap; 1 ms here ~ 15-30 ms on an RP2040" % (HEAP // 1024))
    cp = _cpython(names)
    try:
        mp, alloc, peak, mem = _micropython(names)
    except Exception as e:  # MicroPython runner missing
        print("  MicroPython unavailable: %s" % e)
        mp, alloc, peak, mem = {}, {}, {}, {}
    fmt = "  %-50s %10s %10s %10s %10s %11s"
    print(fmt % ("operation", "MicroPy", "CPython", "MPy alloc", "MPy kept", "max slice"))
    for name, label in ROWS:
        print(fmt % (label, _ms(mp.get(name)), _ms(cp.get(name)),
                     _kb(alloc.get(name)) if name in alloc else "-",
                     _kb(peak.get(name)) if name in peak else "",
                     _ms(mp.get("slice_" + name)) if "slice_" + name in mp else ""))
    if mem:
        print("  %-50s %10s" % ("MPy heap kept by `import ec` (from .py)", _kb(mem.get("module"))))
        print("  %-50s %10s" % ("  + P-384 comb table, loaded on first use", _kb(mem.get("p384"))))
        print("  %-50s %10s" % ("  + P-256 comb table, loaded on first use", _kb(mem.get("p256"))))
        print("  %-50s %10s" % ("  + hmac, sha2 (imported by the first sign)", _kb(mem.get("hmac"))))
        print("  %-50s %10s" % ("largest alloc of one slice (sign / ECDH)", "%s / %s" % (
            _kb(peak.get("churn_p384_sign")), _kb(peak.get("churn_p384_ecdh")))))
    ours, theirs = cp.get("p384_sign_again"), cp.get("ecdsa_p384_sign")
    if ours and theirs:
        print("  %-50s %10s %10s" % ("python-ecdsa 0.19 P-384 sign (CPython, same run)", "", _ms(theirs)))
        print("  %-50s %10s %10s" % ("python-ecdsa 0.19 P-384 verify (CPython)", "", _ms(cp.get("ecdsa_p384_verify"))))
        print("  %-50s %10s %10s" % ("our sign / python-ecdsa sign (CPython)", "", "x%.2f" % (ours / theirs)))
    sys.stdout.flush()


if __name__ == "__main__":
    run()
