"""SessionGate makes room before the session stack loads (uspdm.session_gate._make_room):
the handlers of the connection's first messages go, and on a small heap (a 128 KB
board: gc.mem_free() + gc.mem_alloc() under SMALL_HEAP) the EC comb tables are held off
while the stack is loaded (uspdm.crypto.ec.hold_tables) and let back when it goes, also
when it could not load.  CPython, in process: the heap size is what the gate's gc says,
the session is checked by the host requester (signatures, key schedule, framing with the
`cryptography` package)."""
import os

import pytest

from uspdm_tools import session_requester as SR

from uspdm import demand
from uspdm import session_gate as G
from uspdm.crypto import drbg as _drbg
from uspdm.crypto import ec
from uspdm.responder import Config, Responder
from uspdm.storage import MemoryStorage

from test_spdm_common import make_identity, make_meas  # host_tests/portable on sys.path


class Link:
    def __init__(self, r, gate):
        self.r, self.gate, self.now = r, gate, 0

    def spdm(self, req, timeout=None):
        while self.r.pending():      # the board's idle loop
            self.r.work()
        rsp = self.r.handle(bytes(req))
        if rsp is None:
            raise TimeoutError("no answer")
        return rsp

    def secured(self, body, timeout=None):
        out = self.gate.handle_secured(8, bytes(body), self.now)
        if out is None:
            raise TimeoutError("no answer")
        return bytes(out)


class Heap:
    """What the gate's `gc` reports: a heap of `size` bytes (MicroPython's mem_free/mem_alloc)."""

    def __init__(self, size):
        self.size = size

    def mem_free(self):
        return self.size // 4

    def mem_alloc(self):
        return self.size - self.size // 4

    def collect(self):
        pass


@pytest.fixture
def holds(monkeypatch):
    calls = []
    real = getattr(ec, "hold_tables", None)

    def hold_tables(on):
        calls.append(on)
        if real is not None:
            real(on)

    monkeypatch.setattr(ec, "hold_tables", hold_tables, raising=False)
    yield calls
    if real is not None:
        real(False)


def connect(heap, monkeypatch):
    monkeypatch.setattr(G, "gc", Heap(heap))
    gate = G.SessionGate(_drbg.from_source(os.urandom), MemoryStorage(), {"heartbeat": 30})
    c = Config()
    c.dhe_priority = [0x10]
    c.aead_priority = [0x02]
    c.key_schedule_priority = [0x01]
    r = Responder(make_identity(("p384",)), make_meas(), _drbg.from_source(os.urandom), c)
    r.sessions = gate
    r.eid = 8
    q = SR.SessionRequester(Link(r, gate), version="1.2", algs=("p384",), sleep=lambda t: None)
    q.init_connection()
    q.get_digests()
    q.get_certificate(0)
    return gate, q


def test_small_heap_holds_the_comb_tables_while_the_stack_is_loaded(holds, monkeypatch):
    gate, q = connect(128 * 1024, monkeypatch)
    assert demand.loaded("rsp_vca") and demand.loaded("rsp_cert")
    s = q.key_exchange(0)
    # the first messages' handlers went before the stack came; the tables are held off
    assert not demand.loaded("rsp_vca") and not demand.loaded("rsp_cert")
    assert holds == [True]
    q.finish(s)
    m = q.in_session(s).get_measurements()    # signed without the table: verified by the requester
    assert m["blocks"] and m["signature"]
    q.heartbeat(s)
    assert holds == [True]                    # held while the stack is loaded
    q.end_session(s)
    assert gate.m is None and holds == [True, False]   # the stack went: the tables may come back
    # a second session holds them again
    s = q.key_exchange(0)
    q.finish(s)
    q.end_session(s)
    assert holds == [True, False, True, False]


def test_large_heap_keeps_the_comb_tables(holds, monkeypatch):
    gate, q = connect(200 * 1024, monkeypatch)
    s = q.key_exchange(0)
    q.finish(s)
    q.end_session(s)
    assert holds == [] and gate.m is None


def test_stack_that_cannot_load_lets_the_tables_back(holds, monkeypatch):
    gate, q = connect(128 * 1024, monkeypatch)
    need = demand.need

    def short(leaf, *a, **kw):
        if leaf == "session":
            raise MemoryError("no room for the stack")
        return need(leaf, *a, **kw)

    monkeypatch.setattr(demand, "need", short)
    with pytest.raises(Exception) as e:
        q.key_exchange(0)
    assert "Busy" in str(e.value) or "0x03" in str(e.value), e.value
    # each attempt (the requester retries a Busy) held the tables and let them back
    assert gate.m is None and len(holds) >= 2 and holds == [True, False] * (len(holds) // 2)
    del holds[:]
    monkeypatch.setattr(demand, "need", need)
    s = q.key_exchange(0)                     # memory back: the session opens
    q.finish(s)
    q.end_session(s)
    assert holds == [True, False]

