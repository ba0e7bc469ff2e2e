"""Crypto operations on the emulated Cortex-M0 (issue 10's per-operation rows):
exact instruction counts of MicroPython on the RP2040's instruction set
(../shared/m0, lib/ as armv6m .mpy copied into the heap as `mpremote cp`
does), against the figures before the viper kernels and the targets.

Estimated RP2040 time: 133 MHz at about 1.3 cycles per instruction, so
1 k-instr is about 9.8 us (no flash wait states or bus contention modelled).
The flow rows (attestation, sessions, boot) are the m0 bench's.

Figures only.  Run: python -m uspdm_tools.bench chip
"""
import sys

from . import native
from .benchutil import parse_figures

US_PER_KINSTR = 1.3 / 133.0 * 1000.0  # 9.77 us

# (name, label, before (k-instr, issue 10), target (k-instr))
ROWS = [
    ("sha384_1k", "SHA-384, 1 KiB", 31807, 1500),
    ("hmac384_64", "HMAC-SHA384 of 64 B (new key)", 14753, 800),
    ("hkdf384_exp", "HKDF-SHA384 expand, one block", 15093, 800),
    ("gcm_seal_1k", "AES-256-GCM seal 1 KiB", 45578, 8000),
    ("gcm_open_1k", "AES-256-GCM open 1 KiB", None, None),
    ("gcm_key", "AES-256-GCM key setup (per session key)", None, None),
    ("aes_tables", "AES T-tables + first key (once per boot)", None, None),
    ("p384_sign", "P-384 sign (RFC 6979 + hedge)", 123664, 60000),
    ("p384_ecdh", "P-384 ECDH, KEY_EXCHANGE's one-time key (peer key check)", 222169, 120000),
    ("p384_ecdh_blinded", "P-384 ECDH with scalar blinding (a long-term key)", None, None),
    ("rom_p384_sign", "P-384 sign, ROMFS deploy (larger comb table in flash)", None, 60000),
    ("p384_keygen", "P-384 public key (fixed-base comb)", None, None),
    ("rom_p384_keygen", "P-384 public key, ROMFS deploy (larger comb table)", None, None),
    ("p384_slice", "P-384 longest slice of sign/ECDH/keygen", 189315, 20000),
    ("p256_sign", "P-256 sign (RFC 6979 + hedge)", None, None),
    ("p256_ecdh", "P-256 ECDH, one-time key (peer key check)", None, None),
]

SCRIPT = r"""
import time, gc
from uspdm.crypto import sha2, hmac, hkdf, gcm, drbg, ec
T = time.ticks_us
D = time.ticks_diff
KiB = bytes((i * 13 + 7) & 255 for i in range(1024))
KEY = bytes(range(32))
IV = bytes(12)
def fig(name, t0):
    print(name, D(T(), t0))
def once(name, fn):
    gc.collect()
    t0 = T()
    r = fn()
    fig(name, t0)
    return r
print('backend', sha2.backend('sha384'))
once('sha384_1k', lambda: sha2.sha384(KiB).digest())
once('hmac384_64', lambda: hmac.hmac('sha384', KEY, KiB[:64]))
once('hkdf384_exp', lambda: hkdf.expand('sha384', KiB[:48], b'info', 48))
once('aes_tables', lambda: gcm.AesGcm(KEY))  # first key: builds the AES T-tables (once per boot)
g = once('gcm_key', lambda: gcm.AesGcm(KEY))
ct = once('gcm_seal_1k', lambda: g.seal(IV, KiB[:16], KiB))
once('gcm_open_1k', lambda: g.open(IV, KiB[:16], ct))
g = ct = None
rng = drbg.HmacDrbg(bytes(32), b'bench-nonce', b'', 'sha256')
ec.set_rng(rng.generate)
def slices(gen):
    m = 0
    t0 = T()
    try:
        while True:
            next(gen)
            t1 = T()
            m = max(m, D(t1, t0))
            t0 = t1
    except StopIteration as e:
        m = max(m, D(T(), t0))
        return e.value, m
for c in CURVES:
    curve = getattr(ec, c.upper())
    curve.table()  # the comb table is imported once per boot (firmware: at setup), not inside a slice
    d = ec.generate_private_key(curve, rng.generate)
    peer = ec.public_key(curve, ec.generate_private_key(curve, rng.generate))
    dig = KiB[:curve.size]
    mx = 0
    gc.collect(); t0 = T()
    r, m = slices(ec.public_key_iter(curve, d)); fig(c + '_keygen', t0); mx = max(mx, m)
    extra = rng.generate(32)
    gc.collect(); t0 = T()
    r, m = slices(ec.sign_iter(curve, d, dig, extra)); fig(c + '_sign', t0); mx = max(mx, m)
    gc.collect(); t0 = T()
    r, m = slices(ec.ecdh_iter(curve, d, peer, True)); fig(c + '_ecdh', t0); mx = max(mx, m)
    gc.collect(); t0 = T()
    r, m = slices(ec.ecdh_iter(curve, d, peer)); fig(c + '_ecdh_blinded', t0); mx = max(mx, m)
    print(c + '_slice', mx)
gc.collect()
print('heap_free', gc.mem_free())
"""

# The profile behind the EC rows (issue 10: "says which is not met and why, with
# the profile that shows it"), measured on the same emulated M0: the cost of one
# big-int field product and one `% p`, of a point doubling / mixed addition /
# Jacobian addition / inversion as ec.py computes them, the bytes each allocates,
# one garbage collection in a roomy and a nearly full heap, and a signature and an
# ECDH in both heaps.  The operation counts come from ec.py's own parameters.
PROFILE = r"""
import time, gc
from uspdm.crypto import ec, drbg
T = time.ticks_us
D = time.ticks_diff
def per(name, fn, n):
    gc.collect()
    gc.disable()
    m0 = gc.mem_alloc()
    t0 = T()
    for i in range(n):
        fn()
    t = D(T(), t0)
    m1 = gc.mem_alloc()
    gc.enable()
    t1 = T()
    for i in range(n):
        pass
    t -= D(T(), t1)
    print(name, t / n)
    print(name + '_bytes', (m1 - m0) / n)
rng = drbg.HmacDrbg(bytes(32), b'bench-profile', b'', 'sha256')
ec.set_rng(rng.generate)
import micropython, array
@micropython.viper
def vmul(r: ptr32, x: ptr16, y: ptr16, n: int):
    # the product alone as a viper kernel would compute it: n x n 16-bit limbs,
    # column by column, split accumulators (the M0 multiplies 32 x 32 -> 32 only)
    carry = 0
    k = 0
    while k < 2 * n - 1:
        lo = carry
        hi = 0
        i = k - n + 1
        if i < 0:
            i = 0
        j = k - i
        while i < n and j >= 0:
            t = x[i] * y[j]
            lo += t & 0xFFFF
            hi += (t >> 16) & 0xFFFF
            i += 1
            j -= 1
        lo += (hi & 0xFFFF) << 16
        r[k] = lo & 0xFFFF
        carry = ((lo >> 16) & 0xFFFF) + (hi >> 16)
        k += 1
    r[2 * n - 1] = carry
for cn in ('p384', 'p256'):
    c = getattr(ec, cn.upper())
    p = c.p
    c.table()   # sets c.comb to the table in use
    h, v, b = c.comb
    P = cn + '_'
    print(P + 'comb_h', h); print(P + 'comb_v', v); print(P + 'comb_b', b)
    print(P + 'nbits', c.nbits)
    a = int.from_bytes(rng.generate(c.size), 'big') %% p
    bb = int.from_bytes(rng.generate(c.size), 'big') %% p
    ab = a * bb
    X, Y, Z = a, bb, (a + bb) %% p
    per(P + 'mul', lambda: a * bb, 40)
    per(P + 'mod', lambda: ab %% p, 40)
    per(P + 'dbl', lambda: ec._dbl(X, Y, Z, p), 12)
    per(P + 'madd', lambda: ec._madd(X, Y, Z, bb, a, p), 12)
    per(P + 'jadd', lambda: ec._add(X, Y, Z, bb, a, Z, p), 8)
    gc.collect(); t0 = T(); ec._inv(a, p); print(P + 'inv', D(T(), t0))
    nl = c.size // 2
    va = array.array('H', a.to_bytes(c.size, 'little'))
    vb = array.array('H', bb.to_bytes(c.size, 'little'))
    vr = array.array('I', [0] * (2 * nl))
    t0 = T()
    for i in range(10):
        vmul(vr, va, vb, nl)
    print(P + 'viper_mul', D(T(), t0) / 10)
    c.table()
    d = ec.generate_private_key(c, rng.generate)
    peer = ec.public_key(c, ec.generate_private_key(c, rng.generate))
    dig = bytes(range(c.size))
    def run(name):
        gc.collect()
        print(name + '_free', gc.mem_free())
        t0 = T(); gc.collect(); print(name + '_gc', D(T(), t0))
        t0 = T(); ec.sign(c, d, dig, rng.generate(32)); print(name + '_sign', D(T(), t0))
        t0 = T(); ec.ecdh(c, d, peer, True); print(name + '_ecdh', D(T(), t0))
    run(P + 'roomy')
    junk = [bytearray(112) for i in range(%d)]
    run(P + 'full')
    junk = None
"""


def measure_profile(junk=700):
    """{name: value} of PROFILE on the emulated Cortex-M0 (None if absent); junk:
    how many 112-byte objects stay live for the 'full' runs (700: about 90 KB)."""
    if native.m0_reason():
        return None
    rc, out, err = native.run_m0(PROFILE % junk, timeout=600)
    if rc != 0:
        raise RuntimeError("emulated Cortex-M0 profile run failed (rc %s):\n%s\n%s" % (rc, out, err[-2000:]))
    return parse_figures(out)


def op_counts(f):
    """Point operations of a P-384 signature (fixed-base comb) and of KEY_EXCHANGE's
    ECDH (variable base, unblinded one-time key), from ec.py's parameters as the
    profile run printed them; products (M, squarings counted as products) and
    reductions (% p) per point operation as ec.py writes the formulas."""
    from uspdm.crypto import ec   # the same ec.py (its const()s are not attributes on the board)

    h, v, b = int(f["comb_h"]), int(f["comb_v"]), int(f["comb_b"])
    w, nbits = ec._W, int(f["nbits"])
    nw = (nbits + 2 + w - 1) // w
    return {
        "sign": {"dbl": b - 1, "madd": v * b - 1, "jadd": 0, "inv": 2},
        "ecdh": {"dbl": 1 + w * (nw - 1), "madd": nw - 1, "jadd": (1 << (w - 1)) - 1, "inv": 2},
    }


def _window():
    from uspdm.crypto import ec

    return ec._W


# products and reductions per point operation in ec.py's formulas
PER_OP = {"dbl": (8, 7), "madd": (11, 10), "jadd": (16, 14)}


def floor_kinstr(f, counts):
    """The field arithmetic alone: products and reductions x their measured cost
    (no allocation beyond theirs, no GC, no interpreter work between them)."""
    muls = sum(PER_OP[k][0] * counts[k] for k in PER_OP)
    mods = sum(PER_OP[k][1] * counts[k] for k in PER_OP)
    return muls, mods, muls * f["mul"] + mods * f["mod"] + counts["inv"] * f["inv"]


def _sub(f, curve):
    P = curve + "_"
    return dict((k[len(P):], v) for k, v in f.items() if k.startswith(P))


def profile_lines(f, which, target=None, curve="p384"):
    """Text lines explaining a sign ('sign') or ECDH ('ecdh') row of `curve` from
    profile f; and the floor (k-instr of field arithmetic)."""
    f = _sub(f, curve)
    counts = op_counts(f)[which]
    muls, mods, floor = floor_kinstr(f, counts)
    nbytes = counts["dbl"] * f["dbl_bytes"] + counts["madd"] * f["madd_bytes"] + counts["jadd"] * f["jadd_bytes"]
    roomy, full = f["roomy_" + which], f["full_" + which]
    ncoll_r = nbytes / max(f["roomy_free"], 1)
    ncoll_f = nbytes / max(f["full_free"], 1)
    out = [
        "%d doublings + %d mixed additions%s + %d inversions (ec.py's parameters: comb %dx%dx%d, window %d bits)"
        % (counts["dbl"], counts["madd"], (" + %d Jacobian additions" % counts["jadd"]) if counts["jadd"] else "",
           counts["inv"], int(f["comb_h"]), int(f["comb_v"]), int(f["comb_b"]), _window()),
        "= %d big-int products x %.1f k + %d reductions (%% p) x %.1f k + inversions x %.0f k = %s k-instr: "
        "the field-arithmetic floor" % (muls, f["mul"], mods, f["mod"], f["inv"], "{:,}".format(int(floor))),
        "the point operations allocate %.0f KB (doubling %d B, mixed addition %d B: every product and %% p is a "
        "new big int)" % (nbytes / 1024.0, f["dbl_bytes"], f["madd_bytes"]),
        "whole operation: %s k-instr with %.0f KB free (about %.0f collections x %.0f k), %s k-instr with %.0f KB "
        "free (about %.0f x %.0f k)" % ("{:,}".format(int(roomy)), f["roomy_free"] / 1024.0, ncoll_r, f["roomy_gc"],
                                       "{:,}".format(int(full)), f["full_free"] / 1024.0, ncoll_f, f["full_gc"]),
        "so: %.0f%% field arithmetic, %.0f%% allocation, GC and interpreter in a roomy heap (%.0f%% in the full one)"
        % (100.0 * floor / roomy, 100.0 * (roomy - floor) / roomy, 100.0 * (full - floor) / full),
    ]
    if target:
        per = f["mul"] + f["mod"]
        need = per * target / floor
        if floor > target:
            out.append("target %s: the field arithmetic alone is x%.1f over it; with this algorithm it needs a product "
                       "+ reduction of <= %.0f k-instr (big ints: %.0f k)" % ("{:,}".format(target), floor / target,
                                                                             need, per))
            if f.get("viper_mul"):
                out.append("a viper kernel does not get there: its %d x %d-limb product alone measures %.0f k-instr "
                           "here (the big-int product %.0f k, C inside MicroPython); it takes C (a native .mpy module "
                           "or the field in the firmware)" % (int(f["nbits"]) // 16, int(f["nbits"]) // 16,
                                                              f["viper_mul"], f["mul"]))
        else:
            out.append("target %s: the field arithmetic is %.0f%% of it, so it is met only if allocation, GC and "
                       "interpreter work fall to %s k-instr (%.0f%% of today's overhead in a roomy heap)"
                       % ("{:,}".format(target), 100.0 * floor / target, "{:,}".format(int(target - floor)),
                          100.0 * (target - floor) / max(roomy - floor, 1)))
    return out, floor


def measure(curves=("p384", "p256")):
    """{name: k-instr} from one run on the emulated Cortex-M0 (None if absent), the
    stock load; plus rom_<name> figures of P-384 from a run with the code in ROMFS."""
    if native.m0_reason():
        return None
    rc, out, err = native.run_m0("CURVES = %r\n" % (curves,) + SCRIPT, timeout=600)
    if rc != 0:
        raise RuntimeError("emulated Cortex-M0 run failed (rc %s):\n%s\n%s" % (rc, out, err[-2000:]))
    f = parse_figures(out)
    rc, out, err = native.run_m0("CURVES = ('p384',)\n" + SCRIPT, load="rom", timeout=600)
    if rc == 0:
        for k, v in parse_figures(out).items():
            f["rom_" + k] = v
    return f


def _ms(k):
    return "%.0f ms" % (k * US_PER_KINSTR / 1000.0) if k < 100000 else "%.2f s" % (k * US_PER_KINSTR / 1e6)


LAST = {}   # this run's figures, for bench_m0's issue table: {"ops": {...}, "profile": {...}}


def results():
    """(ops, profile) of this bench run, measured now if bench chip did not run."""
    if "ops" not in LAST:
        LAST["ops"] = measure()
    if "profile" not in LAST:
        LAST["profile"] = measure_profile()
    return LAST["ops"], LAST["profile"]


PROFILED = {"p384_sign": "sign", "p384_ecdh": "ecdh"}


def run():
    print("\ncrypto on the emulated Cortex-M0 (../shared/m0, armv6m .mpy in the heap; k-instr = thousands of "
          "instructions,\n  exact; est. RP2040 = 133 MHz at ~1.3 cycles/instr, 1 k-instr ~ %.1f us)" % US_PER_KINSTR)
    why = native.m0_reason()
    if why:
        print("  skipped: %s" % why)
        return
    try:
        f, prof = results()
    except Exception as e:
        print("  failed: %s" % e)
        return
    print("  %-56s %10s %10s %11s %10s  %s" % ("operation", "before", "now", "est. RP2040", "target", ""))
    why = []
    for name, label, before, target in ROWS:
        v = f.get(name)
        if v is None:
            continue
        verdict = ""
        if target:
            verdict = "MET" if v <= target else "NOT MET (x%.1f over)" % (v / target)
            if v > target and name in PROFILED:
                why.append((label, PROFILED[name], target))
        print("  %-56s %10s %10s %11s %10s  %s" % (
            label, "{:,}".format(before) if before else "-", "{:,}".format(int(v)), _ms(v),
            "<= {:,}".format(target) if target else "-", verdict))
    if f.get("heap_free"):
        print("  (EC figures depend on the heap's state: %d B of the 200 KB heap were free after this run)"
              % f["heap_free"])
    for label, which, target in why:
        print("  why %s is not met (profile measured on the emulated M0):" % label)
        for line in profile_lines(prof, which, target)[0]:
            print("    " + line)
    sys.stdout.flush()


if __name__ == "__main__":
    run()
