"""Issue 11.13: PSK without a responder context repeats keys.  An attacker who recorded a PSK
session (but does not know the PSK) replays its VCA and PSK_EXCHANGE until the responder picks
the recorded session-ID half again (16 bits: forced here, as a few hundred tries would), then
replays the recorded secured messages.  With the default policy (psk_mode=1 refused, PSK offered
with a responder context) nothing replays; with the lab override the attack works, which is what
the override's documentation warns about."""
import pytest

from uspdm import session as S
from uspdm_tools import session_requester as SR

import test_session_host as TSH


class Recorder(TSH.Link):
    def __init__(self, r, mgr):
        TSH.Link.__init__(self, r, mgr)
        self.plain = []

    def spdm(self, req, timeout=None):
        self.plain.append(bytes(req))
        return TSH.Link.spdm(self, req, timeout)


def record(**kw):
    mgr, r, _ = TSH.board(**kw)
    link = Recorder(r, mgr)
    q = SR.SessionRequester(link, version="1.2", algs=("p384",), sleep=lambda t: None)
    q.init_connection()
    s = q.psk_exchange(TSH.HINT, TSH.PSK)
    if s.psk_context:
        q.psk_finish(s)
    q.in_session(s).get_measurements(0, False)
    sid = s.sid
    q.end_session(s)
    return mgr, r, link, sid


def replay(mgr, r, link, sid, tries=300):
    """Replay VCA + PSK_EXCHANGE `tries` times, the responder choosing the recorded session-ID
    half on the last one; then the recorded secured messages.  -> (answered, PSK_EXCHANGE_RSPs)"""
    rsps = []
    real = mgr._new_rsp_id
    for i in range(tries):
        if i == tries - 1:
            mgr._new_rsp_id = lambda: sid >> 16
        for req in link.plain:
            rsp = r.handle(req)
            if req[1] == 0xE6:
                rsps.append(bytes(rsp))
        if i < tries - 1:
            mgr.reset()
    mgr._new_rsp_id = real
    accepted = 0
    for body in link.sent:   # PSK_FINISH (with context), GET_MEASUREMENTS, END_SESSION
        errs = mgr.stats["decrypt_errors"]
        if mgr.handle_secured(8, body, 0) is not None and mgr.stats["decrypt_errors"] == errs:
            accepted += 1
    return accepted, rsps


def test_psk_without_context_is_not_offered_by_default():
    mgr, r, _ = TSH.board(psk_mode=S.PSK_NO_CONTEXT)
    assert mgr.psk_mode == S.PSK_WITH_CONTEXT
    assert (mgr.cap_flags(0x12) >> 10) & 3 == S.PSK_WITH_CONTEXT


def test_replayed_psk_exchange_gets_fresh_keys():
    mgr, r, link, sid = record(psk_mode=S.PSK_NO_CONTEXT)   # asked for, refused
    accepted, rsps = replay(mgr, r, link, sid, tries=30)
    assert accepted == 0 and mgr.count() == 0
    assert mgr.stats["decrypt_errors"] >= 1   # the replayed PSK_FINISH fails: the session is ended
    # every PSK_EXCHANGE_RSP differs (fresh responder context), also when the session ID repeats
    assert len(set(rsps)) == len(rsps) == 30


def test_lab_override_shows_the_attack():
    mgr, r, link, sid = record(psk_mode=S.PSK_NO_CONTEXT, replayable_psk=True)
    accepted, rsps = replay(mgr, r, link, sid, tries=30)
    # the recorded GET_MEASUREMENTS and END_SESSION are accepted again under repeated keys
    assert accepted == len(link.sent) == 2
