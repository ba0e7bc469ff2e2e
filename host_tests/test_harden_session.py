"""Issue 11.3: half-open sessions (KEY_EXCHANGE/PSK_EXCHANGE without FINISH) expire after a few
seconds derived from CT/RDT, and one requester holds at most one of them (CPython, in process:
our responder and SessionManager against the host session requester)."""
import os

import pytest

from uspdm import session as S
from uspdm.crypto import drbg as _drbg
from uspdm.responder import Config, Responder
from uspdm_tools import requester as R
from uspdm_tools import session_requester as SR

import test_session_host as TSH
from test_spdm_common import make_identity, make_meas


def conn(mgr, eid, now):
    """Another requester's connection state on the same board (same SessionManager)."""
    c = Config()
    c.dhe_priority = [0x10]
    c.aead_priority = [0x02]
    c.key_schedule_priority = [0x01]
    r = Responder(make_identity(("p384",)), make_meas(), _drbg.from_source(os.urandom), c)
    S.attach(r, mgr)
    r.eid = eid
    link = TSH.Link(r, mgr, eid)
    link.now = now
    q = SR.SessionRequester(link, version="1.2", algs=("p384",), sleep=lambda t: None)
    q.init_connection()
    q.get_digests()
    q.get_certificate(0)
    return r, link, q


class Stub:
    """A session as the timers see it."""

    def __init__(self, conn, sid):
        self.conn, self.id = conn, sid
        self.state, self.req, self.last_rx, self.heartbeat = S.ST_HANDSHAKE, None, 0, 0

    def wipe(self):
        self.state = 0


def test_window_from_ct_and_rdt():
    mgr, r, link = TSH.board()
    r.cfg.ct_exponent = r.cfg.rdt_exponent = 20
    s = Stub(r, 0x10001)
    assert mgr.handshake_ms(s) == 2 * 2 * (1 << 20) // 1000 == 4194
    r.cfg.ct_exponent = r.cfg.rdt_exponent = 10
    assert mgr.handshake_ms(s) == S.HANDSHAKE_MIN_MS


def test_one_half_open_session_per_requester():
    mgr, r, link = TSH.board(max_sessions=2)
    _, l1, q1 = conn(mgr, 0x20, 0)
    q1.key_exchange(0)
    q1.key_exchange(0)
    q1.key_exchange(0)
    assert mgr.count() == 1          # each new handshake replaced the previous one
    _, l2, q2 = conn(mgr, 0x21, 0)
    s = q2.key_exchange(0)            # a slot is still free for someone else
    q2.finish(s)
    q2.heartbeat(s)


def test_half_open_sessions_expire():
    mgr, r, link = TSH.board(max_sessions=2)
    now = 1000
    # the attacker: two requester EIDs, KEY_EXCHANGE and PSK_EXCHANGE, never FINISH
    _, la, qa = conn(mgr, 0x20, now)
    _, lb, qb = conn(mgr, 0x21, now)
    ha = qa.key_exchange(0)
    hb = qb.psk_exchange(TSH.HINT, TSH.PSK)
    assert mgr.count() == 2
    # the victim is refused while the slots are taken ...
    _, lv, qv = conn(mgr, 0x30, now + 100)
    with pytest.raises(R.ProtocolError) as e:
        qv.key_exchange(0)
    assert e.value.code == 0x0A      # SessionLimitExceeded
    # ... but only for the handshake window (2 x (CT + RDT), here the 2 s minimum)
    window = mgr.handshake_ms(mgr.sessions[ha.sid])
    lv.now = now + window + 1
    s = qv.key_exchange(0)
    qv.finish(s)
    qv.in_session(s).get_measurements(0, False)
    assert mgr.stats["timeouts"] == 2
    # the attacker's late FINISH / PSK_FINISH go nowhere
    la.now = lb.now = lv.now
    with pytest.raises((R.Unreachable, R.ProtocolError, SR.SessionError)):
        qa.finish(ha)
    with pytest.raises((R.Unreachable, R.ProtocolError, SR.SessionError)):
        qb.psk_finish(hb)
    assert mgr.count() == 1
    qv.end_session(s)


def test_tick_expires_half_open_and_spares_a_computing_one():
    mgr, r, link = TSH.board()
    _, la, qa = conn(mgr, 0x20, 0)
    h = qa.key_exchange(0)
    s = mgr.sessions[h.sid]
    w = mgr.handshake_ms(s)
    mgr.tick(w)
    assert mgr.count() == 1
    mgr.tick(w + 1)
    assert mgr.count() == 0 and s.state == 0
    # a KEY_EXCHANGE still being computed (deferred: no keys yet) is not timed out; its
    # window starts once the response is ready
    x = Stub(r, 0x20002)
    mgr.sessions[x.id] = x
    mgr.tick(10 ** 6)
    assert mgr.count() == 1 and x.last_rx == 10 ** 6
    mgr.end(x)


def test_established_sessions_are_not_timed_out_by_the_handshake_rule():
    mgr, r, link = TSH.board(heartbeat=0)
    q = SR.SessionRequester(link, version="1.2", algs=("p384",), sleep=lambda t: None)
    q.init_connection()
    s = q.open_session(0)
    link.now = 10 ** 7
    q.in_session(s).get_measurements(0, False)
    q.end_session(s)
