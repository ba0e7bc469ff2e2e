"""What the benchmarks (bench_<area>.py) and the heap tests share.

Code run on both interpreters (prepend it to a bench's code string):
  TIMEIT            now(), diff(t0, t1) in seconds (time.ticks_us on
                    MicroPython, time.perf_counter on CPython) and
                    timeit(fn, min_s=0.3, cap=1 << 16, grow=2, warm=True, rounds=1)
  IDENTITY_VECTORS  unhex(s) and blocks[section][key] read from
                    /vectors/spdm_identity.txt (mount host_tests/vectors there)
Host side:
  run_cpython(code, ns)   run bench code here, return what it printed
  parse_figures(out)      {name: float} from its `name value` lines
  fmt_ms(t)               seconds as "12.3 ms" ("-" for None)
  LiveHeap(mp)            live heap of a MicroPython runner after gc.collect()
"""

TIMEIT = r"""
import time
try:
    _t = time.ticks_us
    def now():
        return _t()
    def diff(a, b):
        return time.ticks_diff(b, a) / 1e6
except AttributeError:
    now = time.perf_counter
    def diff(a, b):
        return b - a

def timeit(fn, min_s=0.3, cap=1 << 16, grow=2, warm=True, rounds=1):
    # seconds per call: n calls per batch, n grown (times `grow`) until one
    # batch takes min_s or n reaches cap; then the best of `rounds` batches
    if warm:
        fn()
    n = 1
    while True:
        t0 = now()
        for _ in range(n):
            fn()
        dt = diff(t0, now())
        if dt >= min_s or n >= cap:
            break
        n *= grow
    best = dt / n
    for _ in range(rounds - 1):
        t0 = now()
        for _ in range(n):
            fn()
        best = min(best, diff(t0, now()) / n)
    return best
"""

IDENTITY_VECTORS = r"""def unhex(s): return bytes(int(s[i:i+2], 16) for i in range(0, len(s), 2))
blocks = {}
sec = None
for line in open('/vectors/spdm_identity.txt'):
    line = line.strip()
    if line.startswith('['):
        sec = line[1:-1]
        blocks[sec] = {}
    elif '=' in line:
        k, v = line.split('=', 1)
        blocks[sec][k.strip()] = v.strip()
"""


def run_cpython(code, ns=None, filename="<bench>"):
    """Run a bench's code string on this CPython (ns: its globals, filled in
    for the caller); returns what it printed."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, filename, "exec"), {} if ns is None else ns)
    return buf.getvalue()


def parse_figures(out, strict=False, keep_bad=False):
    """{name: float} from the `name value` lines a bench's code printed.
    Lines of another shape are passed over, and so are values that are not
    numbers (keep_bad: kept as None); strict: any such line raises ValueError."""
    res = {}
    for line in out.splitlines():
        if strict:
            k, v = line.split()
            res[k] = float(v)
            continue
        parts = line.split()
        if len(parts) == 2:
            try:
                res[parts[0]] = float(parts[1])
            except ValueError:
                if keep_bad:
                    res[parts[0]] = None
    return res


def fmt_ms(t, small_digits=1):
    """Seconds as milliseconds: small_digits decimals below 10 ms, 1 above."""
    if t is None:
        return "-"
    return "%.*f ms" % (small_digits, t * 1e3) if t < 0.01 else "%.1f ms" % (t * 1e3)


class LiveHeap:
    """Live heap of a MicroPython runner (uspdm_tools.mpy.MicroPython) in
    bytes, after gc.collect(), beyond what was in use when this was made.
    Each live() is its own runner call (the wasm port collects garbage only
    between calls); peak is the largest value live() returned."""

    def __init__(self, mp):
        self.mp = mp
        self.peak = 0
        self.mp.run("import gc, uspdm\ngc.collect(); uspdm.A0 = gc.mem_alloc()")

    def live(self):
        v = int(self.mp.run("import gc, uspdm\ngc.collect(); print(gc.mem_alloc() - uspdm.A0)").out)
        self.peak = max(self.peak, v)
        return v
