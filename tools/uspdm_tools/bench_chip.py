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
    ("p384_ecdh", "P-384 ECDH (with peer key check)", 222169, 120000),
    ("p384_keygen", "P-384 public key (fixed-base comb)", None, None),
    ("p384_slice", "P-384 longest slice of sign/ECDH/keygen", 189315, 20000),
    ("p256_sign", "P-256 sign (RFC 6979 + hedge)", None, None),
    ("p256_ecdh", "P-256 ECDH (with peer key check)", None, None),
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
    r, m = slices(ec.ecdh_iter(curve, d, peer)); fig(c + '_ecdh', t0); mx = max(mx, m)
    print(c + '_slice', mx)
gc.collect()
print('heap_free', gc.mem_free())
"""


def measure(curves=("p384", "p256")):
    """{name: k-instr} from one run on the emulated Cortex-M0 (None if absent)."""
    if native.m0_reason():
        return None
    rc, out, err = native.run_m0("CURVES = %r\n" % (curves,) + SCRIPT, timeout=600)
    if rc != 0:
        raise RuntimeError("emulated Cortex-M0 run failed (rc %s):\n%s\n%s" % (rc, out, err[-2000:]))
    return parse_figures(out)


def _ms(k):
    return "%.0f ms" % (k * US_PER_KINSTR / 1000.0) if k < 100000 else "%.2f s" % (k * US_PER_KINSTR / 1e6)


def run():
    print("\ncrypto on the emulated Cortex-M0 (../shared/m0, armv6m .mpy in the heap; k-instr = thousands of "
          "instructions,\n  exact; est. RP2040 = 133 MHz at ~1.3 cycles/instr, 1 k-instr ~ %.1f us)" % US_PER_KINSTR)
    why = native.m0_reason()
    if why:
        print("  skipped: %s" % why)
        return
    try:
        f = measure()
    except Exception as e:
        print("  failed: %s" % e)
        return
    print("  %-44s %12s %12s %12s %12s  %s" % ("operation", "before", "now", "est. RP2040", "target", ""))
    for name, label, before, target in ROWS:
        v = f.get(name)
        if v is None:
            continue
        verdict = ""
        if target:
            verdict = "met" if v <= target else "NOT met (x%.1f over)" % (v / target)
        print("  %-44s %12s %12s %12s %12s  %s" % (
            label, "{:,}".format(before) if before else "-", "{:,}".format(int(v)), _ms(v),
            "<= {:,}".format(target) if target else "-", verdict))
    if f.get("heap_free"):
        print("  (EC figures depend on the heap's state: %d B of the 200 KB heap were free after this run)"
              % f["heap_free"])
    sys.stdout.flush()


if __name__ == "__main__":
    run()
