"""The simulated boards' Device (`uspdm sim`, the lab page): firmware/device.py's
Device plus what only a host that calls it from outside needs -- hex strings in
and out, and heap figures after each message.  A real board never imports this
module, so none of it takes heap there.

    dev = SimDevice(board, verbose=False, measure_heap=True)
    out_hex = dev.feed_hex(in_hex); out_hex = dev.idle_hex()
    dev.heap_sample()   # after each answered feed/idle, as its own call (see below)
"""
import gc

from device import Device


class SimDevice(Device):
    def __init__(self, board, verbose=False, measure_heap=False, log=None):
        Device.__init__(self, board, verbose, log)
        self.measure_heap = measure_heap
        self.stats = {"messages": 0, "live_max": 0, "alloc_max": 0, "live": 0}
        self._live_prev = gc.mem_alloc() if measure_heap else 0  # CPython has no gc.mem_alloc

    def heap_sample(self):
        """Heap figures after the last feed()/idle() (measure_heap only).

        Call it as its own call from the host's top level (the simulator
        does): on the WebAssembly port gc.collect() frees nothing that was
        allocated in the same call from JS, so collecting inside feed()
        would count garbage as live.  alloc = what was allocated since the
        previous sample (garbage included: an upper bound of the peak)."""
        if not self.measure_heap:
            return ""
        a1 = gc.mem_alloc()
        gc.collect()
        live = gc.mem_alloc()
        st = self.stats
        alloc = a1 - self._live_prev
        self._live_prev = live
        if not self._answered:
            return ""
        st["messages"] += self._answered
        self._answered = 0
        st["live"] = live
        if live > st["live_max"]:
            st["live_max"] = live
        if alloc > st["alloc_max"]:
            st["alloc_max"] = alloc
        if self.verbose:
            self.log("heap: live %d B after message (max %d), message allocated %s" % (
                live, st["live_max"], ("~%d B" % alloc) if alloc >= 0 else "n/a (a collection ran)"))
        return self.stats_line()

    # -- helpers for hosts that pass hex strings (the simulator) -----------
    def feed_hex(self, h):
        return _hex(self.feed(_unhex(h)))

    def idle_hex(self):
        return _hex(self.idle())

    def stats_line(self):
        st = self.stats
        return "messages %d live %d live_max %d alloc_max %d" % (
            st["messages"], st["live"], st["live_max"], st["alloc_max"])


def _hex(b):
    # MicroPython's b''.hex() returns b'', not ''
    return b.hex() if b else ""


def _unhex(h):
    try:
        return bytes.fromhex(h)
    except Exception:
        return bytes(int(h[i:i + 2], 16) for i in range(0, len(h), 2))
