"""MCTP framing and reassembly throughput, CPython vs MicroPython (wasm).

Figures only.  Run: python -m uspdm_tools.bench mctp
"""
import os
import sys

from .benchutil import TIMEIT, parse_figures, run_cpython

# The same code runs on both interpreters; it prints "name value" lines.
BENCH_CODE = TIMEIT + r"""
from mctp import serial, smbus
from mctp.packet import packetize, Reassembler
from mctp.endpoint import Endpoint

def per_call(fn):
    return timeit(fn, 0.3, 1 << 20, 4, False)

MSG = bytes([5]) + bytes((i * 7) & 0xFF for i in range(4159))
PKTS = packetize(9, 8, 1, 1, MSG, 64)
PKT = bytes(PKTS[1])
FRAME = serial.encode_frame(PKT)
STREAM = b"".join(serial.encode_frame(p) for p in PKTS)
W = smbus.encode(0x1D, 0x10, PKT)

def dec_stream():
    d = serial.SerialDecoder()
    return d.feed(STREAM)

def dec_stream_chunked():
    d = serial.SerialDecoder()
    for i in range(0, len(STREAM), 32):
        d.feed(STREAM[i:i + 32])

def reasm():
    r = Reassembler(max_message=4160)
    for p in PKTS:
        m = r.feed(p, 0)
    return m

EP = Endpoint(eid=9, max_message=4160)
EP.register(5, lambda s, b: b"\x05\x00")
def endpoint_msg():
    for p in PKTS:
        EP.receive_packet(p, 0)

r = {}
r["encode_frame"] = per_call(lambda: serial.encode_frame(PKT))
r["decode_frame"] = per_call(lambda: serial.SerialDecoder().feed(FRAME))
r["decode_stream"] = per_call(dec_stream)
r["decode_stream32"] = per_call(dec_stream_chunked)
r["smbus_encode"] = per_call(lambda: smbus.encode(0x1D, 0x10, PKT))
r["smbus_decode"] = per_call(lambda: smbus.decode(W))
r["packetize"] = per_call(lambda: packetize(9, 8, 1, 1, MSG, 64))
r["reassemble"] = per_call(reasm)
r["endpoint"] = per_call(endpoint_msg)
for k in r:
    print(k, r[k])
print("stream_bytes", len(STREAM))
"""

HEAP_CODE = r"""
import gc
from mctp import serial
from mctp.packet import packetize
from mctp.endpoint import Endpoint
MSG = bytes([5]) + bytes((i * 7) & 0xFF for i in range(4159))
STREAM = b"".join(serial.encode_frame(p) for p in packetize(9, 8, 1, 1, MSG, 64))
EP = Endpoint(eid=9, max_message=4160)
EP.register(5, lambda s, b: b"\x05\x00")
D = serial.SerialDecoder()
gc.collect()
gc.disable()
a0 = gc.mem_alloc()
for i in range(0, len(STREAM), 64):
    for p in D.feed(STREAM[i:i + 64]):
        EP.receive_packet(p, 0)
a1 = gc.mem_alloc()
gc.enable()
print("alloc", a1 - a0)
"""


def _parse(out):
    return parse_figures(out, strict=True)


def _cpython():
    here = os.path.dirname(os.path.abspath(__file__))
    lib = os.path.join(os.path.dirname(os.path.dirname(here)), "lib")
    if lib not in sys.path:
        sys.path.insert(0, lib)
    return _parse(run_cpython(BENCH_CODE, {"__name__": "bench_mctp"}, "bench_mctp"))


def run():
    print("\n== MCTP framing / reassembly (64-byte MTU, 4160-byte message = 66 packets) ==")
    cp = _cpython()
    mp = None
    heap = None
    try:
        from .mpy import MicroPython

        with MicroPython() as m:
            mp = _parse(m.run(BENCH_CODE).out)
            heap = _parse(m.run(HEAP_CODE).out)
    except Exception as e:  # no node / wasm build: CPython figures only
        print("  (MicroPython unavailable: %s)" % (e,))
    stream = cp["stream_bytes"]
    rows = [
        ("encode_frame (68 B packet)", "encode_frame", 1e6, "us"),
        ("SerialDecoder, one frame", "decode_frame", 1e6, "us"),
        ("SerialDecoder, 4160 B message stream", "decode_stream", 1e3, "ms"),
        ("  same, fed in 32-byte reads", "decode_stream32", 1e3, "ms"),
        ("smbus.encode (68 B packet)", "smbus_encode", 1e6, "us"),
        ("smbus.decode", "smbus_decode", 1e6, "us"),
        ("packetize 4160 B", "packetize", 1e3, "ms"),
        ("Reassembler 4160 B", "reassemble", 1e3, "ms"),
        ("Endpoint.receive_packet x66 (+handler)", "endpoint", 1e3, "ms"),
    ]
    print("  %-40s %12s %12s %8s" % ("", "CPython", "MicroPython", "ratio"))
    for title, key, scale, unit in rows:
        c = cp[key] * scale
        if mp is not None:
            m = mp[key] * scale
            print("  %-40s %9.1f %-2s %9.1f %-2s %7.1fx" % (title, c, unit, m, unit, m / c if c else 0))
        else:
            print("  %-40s %9.1f %-2s" % (title, c, unit))
    if mp is not None:
        kbps = stream / mp["decode_stream32"] / 1024
        print("  %-40s %9.0f KB/s (serial stream, wasm MicroPython)" % ("SerialDecoder throughput", kbps))
    if heap is not None:
        print("  %-40s %9d B allocated in total (gc off; MicroPython; incl. the 64 B reads)" % (
            "heap: 4160 B message, decode+dispatch", heap["alloc"]))


if __name__ == "__main__":
    run()
