"""Symmetric crypto core (lib/uspdm/crypto): SHA-2, copyable SHA-256
alternatives, AES/AES-GCM, HMAC/HKDF, HMAC_DRBG on MicroPython (wasm) and
CPython, plus the heap each operation allocates on MicroPython.

Figures only.  Run: python -m uspdm_tools.bench crypto
"""
import sys

from .benchutil import TIMEIT, fmt_ms, parse_figures, run_cpython

# Runs on both interpreters.  OPS maps a name to (callable, bytes per call).
BENCH_SETUP = TIMEIT + r"""
try:
    import hashlib
except ImportError:
    hashlib = None
from uspdm.crypto import sha2, hmac, hkdf, aes, gcm, drbg, _sha2py

KiB = bytes((i * 13 + 7) & 255 for i in range(1024))
KEY = bytes(range(32))
IV = bytes(12)

# --- a plain SHA-384 (textbook rotr()/ch/maj, tuple shuffle) as the reference point
_K = _sha2py._K512
def _rotr(x, n):
    return ((x >> n) | (x << (64 - n))) & 0xFFFFFFFFFFFFFFFF
def _plain_block(H, blk, off):
    M = 0xFFFFFFFFFFFFFFFF
    W = [int.from_bytes(blk[off + 8 * t:off + 8 * t + 8], 'big') for t in range(16)]
    for t in range(16, 80):
        s0 = _rotr(W[t - 15], 1) ^ _rotr(W[t - 15], 8) ^ (W[t - 15] >> 7)
        s1 = _rotr(W[t - 2], 19) ^ _rotr(W[t - 2], 61) ^ (W[t - 2] >> 6)
        W.append((W[t - 16] + s0 + W[t - 7] + s1) & M)
    a, b, c, d, e, f, g, h = H
    for t in range(80):
        S1 = _rotr(e, 14) ^ _rotr(e, 18) ^ _rotr(e, 41)
        ch = (e & f) ^ ((e ^ M) & g)
        t1 = (h + S1 + ch + _K[t] + W[t]) & M
        S0 = _rotr(a, 28) ^ _rotr(a, 34) ^ _rotr(a, 39)
        maj = (a & b) ^ (a & c) ^ (b & c)
        h, g, f, e, d, c, b, a = g, f, e, (d + t1) & M, c, b, a, (t1 + S0 + maj) & M
    for i in range(8):
        H[i] = (H[i] + (a, b, c, d, e, f, g, h)[i]) & M
def plain_sha384_1k():
    H = list(_sha2py._IV384)
    for off in range(0, 1024, 128):
        _plain_block(H, KiB, off)
    # (padding block omitted: 8 blocks timed, like 1 KiB of streaming input)
    return H

# --- copyable SHA-256 alternatives, transcript-like workload:
# 4 KiB appended in 64-byte pieces; every 512 bytes one digest() and one
# copy() whose digest() is taken (16 forks/digests in all).
class ParSha256:
    # C objects fed in lockstep; each digest()/copy() consumes one spare
    def __init__(self, n):
        self.objs = [hashlib.sha256() for _ in range(n)]
    def update(self, b):
        for o in self.objs:
            o.update(b)
    def digest(self):
        return self.objs.pop().digest()
    def copy(self):
        c = ParSha256(0)
        c.objs = [self.objs.pop()]
        return c

PIECE = KiB[:64]
def transcript(make):
    h = make()
    out = None
    for i in range(64):
        h.update(PIECE)
        if i % 8 == 7:
            out = h.digest()
            h.copy().digest()
    return out

def tr_replay():
    return transcript(lambda: sha2._Replay('sha256', hashlib.sha256))
def tr_pure():
    return transcript(lambda: sha2.pure('sha256'))
def tr_parallel():
    return transcript(lambda: ParSha256(17))

AES_P = aes.Aes(KEY, force_pure=True)
def aes_1k():
    b = KiB[:16]
    for _ in range(64):
        b = AES_P.encrypt_block(b)
    return b
G4 = gcm.AesGcm(KEY, 4, True)
G8 = gcm.AesGcm(KEY, 8, True)
CT4 = G4.seal(IV, b'', KiB)
HMAC_T = hmac.Hmac('sha384', KEY)
def hmac_tmpl():
    m = HMAC_T.copy()
    m.update(KiB[:64])
    return m.digest()
PRK = bytes(48)
DRBG = drbg.HmacDrbg(KEY, b'nonce')
DRBG384 = drbg.HmacDrbg(KEY, b'nonce', b'', 'sha384')

OPS = {
    'sha384_pure_1k': (lambda: sha2.pure('sha384', KiB).digest(), 1024),
    'sha384_plain_1k': (plain_sha384_1k, 1024),
    'sha512_pure_1k': (lambda: sha2.pure('sha512', KiB).digest(), 1024),
    'sha256_pure_1k': (lambda: sha2.pure('sha256', KiB).digest(), 1024),
    'sha256_c_1k': (lambda: hashlib.sha256(KiB).digest(), 1024),
    'sha256_default_1k': (lambda: sha2.sha256(KiB).digest(), 1024),
    'tr_replay': (tr_replay, 4096),
    'tr_pure': (tr_pure, 4096),
    'tr_parallel': (tr_parallel, 4096),
    'aes256_pure_1k': (aes_1k, 1024),
    'gcm_setup_t4': (lambda: gcm.AesGcm(KEY, 4, True), None),
    'gcm_setup_t8': (lambda: gcm.AesGcm(KEY, 8, True), None),
    'gcm_seal_1k_t4': (lambda: G4.seal(IV, b'', KiB), 1024),
    'gcm_seal_1k_t8': (lambda: G8.seal(IV, b'', KiB), 1024),
    'gcm_open_1k_t4': (lambda: G4.open(IV, b'', CT4), 1024),
    'gcm_seal_64B_t4': (lambda: G4.seal(IV, KiB[:16], KiB[:64]), 64),
    'hmac384_64B': (lambda: hmac.hmac('sha384', KEY, KiB[:64]), 64),
    'hmac384_64B_tmpl': (hmac_tmpl, 64),
    'hkdf384_expand_48B': (lambda: hkdf.expand('sha384', PRK, b'info', 48), None),
    'drbg256_gen_32B': (lambda: DRBG.generate(32), 32),
    'drbg384_gen_48B': (lambda: DRBG384.generate(48), 48),
}
"""

TIME_CODE = r"""
for _name in NAMES:
    _fn, _nb = OPS[_name]
    print(_name, timeit(_fn))
"""

ROWS = [
    # (op, label, show KB/s)
    ("sha384_pure_1k", "SHA-384 pure Python, 1 KiB", True),
    ("sha384_plain_1k", "SHA-384 plain textbook code, 1 KiB (reference)", True),
    ("sha512_pure_1k", "SHA-512 pure Python, 1 KiB", True),
    ("sha256_pure_1k", "SHA-256 pure Python, 1 KiB", True),
    ("sha256_c_1k", "SHA-256 C hashlib, 1 KiB (not copyable on MicroPython)", True),
    ("sha256_default_1k", "SHA-256 sha2.sha256() default backend, 1 KiB", True),
    ("tr_replay", "copyable SHA-256 [replay over C]: 4 KiB transcript, 16 forks", False),
    ("tr_pure", "copyable SHA-256 [pure Python]: same workload", False),
    ("tr_parallel", "copyable SHA-256 [17 C objects in lockstep]: same", False),
    ("aes256_pure_1k", "AES-256 pure Python encrypt, 64 blocks", True),
    ("gcm_setup_t4", "AES-256-GCM key setup, 4-bit GHASH table", False),
    ("gcm_setup_t8", "AES-256-GCM key setup, 8-bit GHASH table", False),
    ("gcm_seal_1k_t4", "AES-256-GCM seal 1 KiB (pure AES, 4-bit table)", True),
    ("gcm_seal_1k_t8", "AES-256-GCM seal 1 KiB (pure AES, 8-bit table)", True),
    ("gcm_open_1k_t4", "AES-256-GCM open 1 KiB (pure AES, 4-bit table)", True),
    ("gcm_seal_64B_t4", "AES-256-GCM seal 64 B + 16 B AAD (SPDM message)", False),
    ("hmac384_64B", "HMAC-SHA384 64 B (new key each call)", False),
    ("hmac384_64B_tmpl", "HMAC-SHA384 64 B (copy of keyed template)", False),
    ("hkdf384_expand_48B", "HKDF-SHA384 expand 48 B", False),
    ("drbg256_gen_32B", "HMAC_DRBG-SHA256 generate 32 B", False),
    ("drbg384_gen_48B", "HMAC_DRBG-SHA384 generate 48 B", False),
]


def _cpython(names):
    return parse_figures(run_cpython(BENCH_SETUP + TIME_CODE, {"NAMES": names}))


def _micropython(names):
    from .mpy import MicroPython

    times, allocs = {}, {}
    with MicroPython(heap=16 * 1024 * 1024) as mp:
        # one call per operation: the wasm build frees a call's garbage only
        # after it returns, so one call timing everything grew to ~600 MB
        for n in names:
            r = mp.run("NAMES = %r\n" % ([n],) + BENCH_SETUP + TIME_CODE, timeout=600)
            times.update(parse_figures(r.out))
        # heap per op: allocation of one call with the GC off (setup subtracted)
        base = mp.run(BENCH_SETUP, measure=True).alloc
        for n in names:
            r = mp.run(BENCH_SETUP + "OPS[%r][0]()\n" % n, measure=True)
            allocs[n] = max(0, r.alloc - base)
    return times, allocs


def _fmt_kbs(t, nbytes):
    if t is None or not nbytes:
        return ""
    return "%.0f KB/s" % (nbytes / 1024.0 / t)


def run():
    names = [r[0] for r in ROWS]
    print("crypto (symmetric): pure-Python paths unless noted; MicroPython = wasm build (no cryptolib)")
    cp = _cpython(names)
    try:
        mp, alloc = _micropython(names)
    except Exception as e:  # MicroPython runner missing
        print("  MicroPython unavailable: %s" % e)
        mp, alloc = {}, {}
    head = "  %-62s %11s %10s %11s %10s %11s" % ("operation", "MicroPy", "", "CPython", "", "MPy heap")
    print(head)
    sizes = _sizes()
    for name, label, kbs in ROWS:
        m, c = mp.get(name), cp.get(name)
        print("  %-62s %11s %10s %11s %10s %11s" % (
            label,
            fmt_ms(m, 3), _fmt_kbs(m, sizes.get(name)) if kbs else "",
            fmt_ms(c, 3), _fmt_kbs(c, sizes.get(name)) if kbs else "",
            ("%d B" % alloc[name]) if name in alloc else "-"))
    p, q = mp.get("sha384_plain_1k"), mp.get("sha384_pure_1k")
    if p and q:
        print("  %-62s %11s" % ("SHA-384 pure vs plain on MicroPython (speed-up)", "x%.1f" % (p / q)))
    a, b = mp.get("tr_replay"), mp.get("tr_pure")
    if a and b:
        print("  %-62s %11s" % ("copyable SHA-256: replay vs pure on MicroPython (speed-up)", "x%.1f" % (b / a)))
    sys.stdout.flush()


def _sizes():
    return {
        "sha384_pure_1k": 1024, "sha384_plain_1k": 1024, "sha512_pure_1k": 1024, "sha256_pure_1k": 1024,
        "sha256_c_1k": 1024, "sha256_default_1k": 1024, "aes256_pure_1k": 1024, "gcm_seal_1k_t4": 1024,
        "gcm_seal_1k_t8": 1024, "gcm_open_1k_t4": 1024,
    }


if __name__ == "__main__":
    run()
