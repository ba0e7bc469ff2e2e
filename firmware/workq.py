"""Signing work answered directly within CT (defer_signing=auto on a slow board).

Loaded by Device with the first signing request on a board whose signatures
take long (more than spdm_setup.DEFER_AUTO_MS); it holds no state of its own.

A CHALLENGE, signed GET_MEASUREMENTS or KEY_EXCHANGE makes the responder start
pending work (responder._Pending: one per requester, ERROR Busy to anything
else from it meanwhile).  Its EC work runs in slices from Device.idle(),
requesters in turn, and between slices the board keeps answering MCTP
control, heartbeats and other requesters.  admit() decides how the request is
answered:

- directly, late: the ResponseNotReady the responder built is not sent; the
  response itself goes out when the work is done (finish()), as the answer to
  the request's MCTP tag.  Chosen when the estimated work of every pending job
  plus this one fits in CT_GUARD_PCT of the CT the board advertises (DSP0274:
  a responder may take up to CT for cryptographic work);
- ERROR ResponseNotReady at once, collected with RESPOND_IF_READY, when it
  would not fit (other requesters' work queued ahead), or for KEY_EXCHANGE
  with the session setting defer_key_exchange.

A direct job still unfinished when CT_GUARD_PCT of CT has passed (a board
slower than measured) answers ResponseNotReady then (overdue()) and finishes
for RESPOND_IF_READY.  The only state of a direct job is its request's tag
and arrival time on the pending work itself; its answer is built when the
work is done, from the pending work, which is let go before the MCTP packets
are made.
"""
import gc

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

CT_GUARD_PCT = const(90)
_KEY_EXCHANGE = const(0xE4)
_RESPOND_IF_READY = const(0xFF)
_UNSPECIFIED = const(0x05)
stats = {"direct": 0, "not_ready": 0, "overdue": 0, "busy": 0, "max_ms": 0}


def estimate(ctx, code):
    """Estimated ms of work of a job (request code)."""
    return ctx.kex_ms if code == _KEY_EXCHANGE else ctx.sign_ms


def _diff(dev, a, b):
    td = getattr(dev.board, "ticks_diff", None)
    return td(a, b) if td is not None else a - b


def slowed(gen, ms, board):
    """Lab/test setting slow_sign_ms: the work takes at least `ms` of board
    time, spent after the real work in slices of 10 ms (a slower chip)."""
    t0 = board.ticks_ms()
    res = yield from gen
    sleep = getattr(board, "sleep_ms", None)
    if sleep is None:
        import time

        sleep = getattr(time, "sleep_ms", None) or (lambda n: time.sleep(n / 1000))
    while board.ticks_diff(board.ticks_ms(), t0) < ms:
        sleep(10)
        yield
    return res


def admit(dev, r, p, src, rsp):
    """Responder r (requester src) just started pending work p and answered rsp
    (ERROR ResponseNotReady).  Returns the answer to send now: rsp, or None when
    the response itself is sent later by finish()."""
    ctx = dev._spdm
    if ctx.slow_ms:
        p.gen = slowed(p.gen, ctx.slow_ms, dev.board)
    if not ctx.answer_late or rsp is None or len(rsp) < 3 or rsp[1] != 0x7F or rsp[2] != 0x42:
        return rsp
    if p.code == _KEY_EXCHANGE and ctx.kex_not_ready:
        stats["not_ready"] += 1
        return rsp
    ahead = estimate(ctx, p.code)
    for k in dev.responders:
        q = dev.responders[k].pend
        if q is not None and q is not p and q.sig is None:
            ahead += estimate(ctx, q.code)
    if ahead * 100 > ctx.ct_ms * CT_GUARD_PCT:
        stats["not_ready"] += 1
        return rsp
    p.tag = dev.ep.last_tag
    p.t0 = dev._now()
    stats["direct"] += 1
    return None


def overdue(dev, now):
    """Direct jobs near their CT unfinished: ERROR ResponseNotReady now (the
    requester collects the result with RESPOND_IF_READY).  Returns bytes to send."""
    ctx = dev._spdm
    out = b""
    for src in dev.responders:
        r = dev.responders[src]
        p = r.pend
        if p is not None and p.tag >= 0 and p.sig is None:
            waited = _diff(dev, now, p.t0)
            if waited * 100 >= ctx.ct_ms * CT_GUARD_PCT:
                tag = p.tag
                p.tag = -1
                stats["overdue"] += 1
                dev.log("spdm: EID %d request 0x%02x not done after %d ms (CT %d ms): ResponseNotReady" % (
                    src, p.code, waited, ctx.ct_ms))
                nr = r._not_ready()
                out += _send(dev, r, src, tag, nr, p.sess)
    if out:
        _unload(dev)
    return out


def finish(dev, r, src, p):
    """Direct job p of requester src ended (done, or its work failed): its
    answer as the request's MCTP response; returns bytes to send."""
    tag = p.tag
    p.tag = -1
    waited = _diff(dev, dev._now(), p.t0)
    if waited > stats["max_ms"]:
        stats["max_ms"] = waited
    s = p.sess
    if r.pend is not p:
        if s is not None:
            _unload(dev)
            return b""     # the session ended (its pending work went with it): nothing to answer
        msg = r._error(_UNSPECIFIED)   # the signing failed
    else:
        code, token = p.code, p.token
        n = len(p.body) + (len(p.sig) if p.sig else 0) + 8   # (sig False: it ran out of memory)
        q = p
        p = None
        from uspdm import demand

        if not demand.room_for(2 * n):
            demand.drop()   # code loaded on demand goes first (as for a request short of memory)
        r.now = dev._now()
        # the responder delivers it as for RESPOND_IF_READY (transcript, chunking of
        # a large answer; inside its session) and lets the pending work go
        rir = bytes((r.version, _RESPOND_IF_READY, code, token))
        if s is None:
            msg = r.handle(rir)    # out of memory: ERROR Busy (Responder.handle)
        else:
            try:
                msg = r.session_request(rir, s)
            except MemoryError:
                msg = r.out_of_memory()   # ERROR Busy inside the session, as for its other requests
        q.body = q.sig = q.gen = None   # (the board loop still holds the pending work)
        q = None
        if dev.verbose:
            dev.log("spdm: EID %d request 0x%02x answered after %d ms (CT %d ms)" % (
                src, code, waited, dev._spdm.ct_ms))
    out = _send(dev, r, src, tag, msg, s)
    _unload(dev)
    return out


def _unload(dev):
    """No direct job left: this module's code leaves the heap until the next one."""
    for k in dev.responders:
        q = dev.responders[k].pend
        if q is not None and q.tag >= 0:
            return
    import sys

    sys.modules.pop("workq", None)


def _send(dev, r, src, tag, msg, s=None):
    """The MCTP answer to tag: msg is the SPDM response, sent plain (the type
    byte goes into the first packet: no copy of the answer) or secured in session s.  When the heap
    cannot hold it now, what can go goes (demand-loaded code) and it is tried
    once more; then a short ERROR Busy goes instead (the requester asks again)."""
    for _ in range(2):
        try:
            return _emit(dev, src, tag, msg, s)
        except MemoryError:
            from uspdm import demand

            demand.drop()
            gc.collect()
    stats["busy"] += 1
    busy = bytes((r.version or 0x10, 0x7F, 0x03, 0))
    try:
        return _emit(dev, src, tag, busy, s)
    except MemoryError:
        return b""


def _emit(dev, src, tag, msg, s):
    if s is not None:
        # encrypted now, with the session's next response sequence number; if the
        # heap runs short before it is sent, that number is used again
        d = s.rsp
        seq = d.seq
        try:
            sec = dev._spdm.sessions._encode(s, msg)
            if sec is None:
                return b""    # the session ended (sequence numbers exhausted)
            data = dev.emit(src, dev.ep.respond(src, tag, sec, 0x06))
            sec = None
        except MemoryError:
            d.seq = seq
            raise
    else:
        data = dev.emit(src, dev.ep.respond(src, tag, msg, 0x05))
    dev._answered += 1
    return data
