"""Live heap of a whole attestation flow on real MicroPython (wasm build).

Each request and each deferred-signing work() slice runs as a separate
MicroPython call so the interpreter's garbage collector can run in between
(inside one call the wasm port cannot collect); `gc.mem_alloc()` after
`gc.collect()` then gives the live heap.  Figures (printed with -s):
  code  = all uspdm modules imported (compiled from source here; frozen or
          .mpy on a board) including the P-384/P-256 comb table,
  state = identity (key + chain), 36 measurement blocks, responder,
  peak  = the largest live heap seen between messages / work slices.
Budget from the issue: the protocol's live heap during the flow < 64 KB
(peak - code).  The transient garbage of one step (pure-Python SHA-384 on
boards without it in hashlib) is collected by the GC and not counted.
"""
import pytest

from uspdm_tools.benchutil import IDENTITY_VECTORS, LiveHeap
from uspdm_tools.mpy import MicroPython

SETUP = """
import gc, sys, uspdm
from uspdm.responder import Responder, Config
from uspdm.identity import Identity
from uspdm.measurements import Measurements
from uspdm.storage import MemoryStorage
from uspdm.crypto.drbg import HmacDrbg
""" + IDENTITY_VECTORS + """drbg = HmacDrbg(b'\\x01' * 32, b'nonce')
ident = Identity(MemoryStorage(), drbg)
ident.set_private_key(ALG, int(blocks[ALG]['key'], 16))
ident.install_chain(0, ALG, unhex(blocks[ALG]['chain']))
meas = Measurements()
for i in range(1, 33):
    meas.add_digest(i, 1, b'firmware file %d' % i)
meas.add_raw(0x41, 6, sys.version.encode())
meas.add_raw(0x42, 2, b'board=sim')
meas.add_svn(0x43, 1)
meas.add_device_mode()
uspdm.R = Responder(ident, meas, drbg, Config(defer_signing=True, data_transfer_size=1024, max_spdm_msg_size=4096))
uspdm.RESP = None
"""


def flow(v, asym_bit):
    m = [b"\x10\x84\x00\x00",
         bytes((v, 0xE1, 0, 0, 0, 10, 0, 0)) + (0x20006).to_bytes(4, "little") + (4096).to_bytes(4, "little") * 2,
         bytes((v, 0xE3, 0, 0, 32, 0, 1, 2, asym_bit, 0, 0, 0, 3, 0, 0, 0)) + bytes(16),
         bytes((v, 0x81, 0, 0))]
    for off in (0, 400):
        m.append(bytes((v, 0x82, 0, 0)) + off.to_bytes(2, "little") + (400).to_bytes(2, "little"))
    m += [bytes((v, 0x83, 0, 0xFF)) + bytes(40),
          bytes((v, 0xE0, 0, 0)) + bytes(8),
          bytes((v, 0xE0, 1, 0xFF)) + bytes(33) + bytes(8)]
    return m


@pytest.mark.parametrize("alg,bit", [("p384", 0x80), ("p256", 0x10)])
def test_flow_live_heap(alg, bit):
    v = 0x13
    with MicroPython(mounts=[("host_tests/vectors", "/vectors")]) as mp:
        live = LiveHeap(mp).live

        mp.run("import uspdm.responder, uspdm.identity, uspdm.measurements, uspdm.storage\n"
               "from uspdm.crypto import drbg, ec\nec.sign(ec.%s, 5, bytes(48))" % alg.upper())
        code = live()
        mp.run("ALG = %r\n" % alg + SETUP)
        state = live()
        peak = state
        for msg in flow(v, bit):
            out = mp.run("import uspdm\nuspdm.RESP = uspdm.R.handle(%r)\nprint(uspdm.RESP[1], uspdm.RESP[2])" % msg).out
            peak = max(peak, live())
            code_, p2 = (int(x) for x in out.split())
            if code_ == 0x7F and p2 == 0x42:
                for _ in range(10000):
                    busy = mp.run("import uspdm\nprint(1 if uspdm.R.work() else 0)").out.strip() == "1"
                    peak = max(peak, live())
                    if not busy:
                        break
                out = mp.run("import uspdm\nuspdm.RESP = uspdm.R.handle(bytes((%d, 0xFF, %d, uspdm.RESP[6])))\n"
                             "print(uspdm.RESP[1], uspdm.RESP[2])" % (v, msg[1])).out
                peak = max(peak, live())
                code_ = int(out.split()[0])
            assert code_ != 0x7F, (msg[:2].hex(), out)
        print("\n%s: code %d B, +state %d B, flow peak %d B, protocol live peak (peak - code) %d B"
              % (alg, code, state - code, peak, peak - code))
        assert peak - code < 64 * 1024
