"""The session stack loaded in idle slices (uspdm.session_gate.SessionGate, the
board's stand-in for the SessionManager, uses it): KEY_EXCHANGE and PSK_EXCHANGE
with no stack loaded become pending work that imports the stack one module per
slice, handles the request, and brings the AEAD once the handshake's EC work
is done.  A demand module: loaded for that request only (its code is not
resident with the gate).  Functions of the SessionGate `g`."""
import gc
import sys

from uspdm.compat import const
from uspdm import demand
from uspdm.session_gate import _AEAD, _AEAD_FIRST, _STACK

_PSK_EXCHANGE = const(0xE6)


def names(g):
    """The modules the first load of the stack brings later (the AEAD, uspdm.sess_fin,
    uspdm.sess_more): imported and dropped again, after uspdm.session (which they
    import), one per call, so that their names are interned now, while the heap has
    room for the qstr pool they may overflow (uspdm.session_gate._STACK).  True while
    there is one to do: `while names(g): yield`."""
    done = g._named
    if done is True:
        return False
    if done is None:
        g._named = done = []
    for leaf in (_AEAD, "sess_fin", "sess_more"):
        if leaf not in done:
            done.append(leaf)
            if not demand.loaded(leaf):
                demand.need(leaf, first=_AEAD_FIRST if leaf == _AEAD else ())
                if leaf == _AEAD:
                    g._install_tables()   # the AES kernel's 1 KB table while a 1 KB block is there
                demand.drop(leaf)
            return True
    g._named = True
    return False


def step(g, leaf, first=()):
    """One step of importing demand module `leaf` as need(leaf, first=first) does:
    the next module of `first` not imported yet, else leaf itself (what its import
    brings in goes when it is dropped).  True while there is a step to take after
    it: `while step(g, leaf, first): yield` imports one module per idle slice.
    (Not a generator: a finished generator that a live one still refers to keeps
    the objects its frame last held, a dropped module among them.)"""
    if demand.loaded(leaf):
        return False
    had = g._had
    if had is None:
        g._had = had = set(sys.modules)
    try:
        for f in first:
            if f not in sys.modules:
                gc.collect()
                __import__(f)
                return True
        gc.collect()
        demand.need(leaf)
    except BaseException:
        abort_step(g)
        raise
    g._had = None
    deps = demand._deps.setdefault(leaf, [])
    full = "uspdm." + leaf
    for k in sys.modules:
        if k not in had and k != full and k.startswith("uspdm.") and k not in deps \
                and k[6:] not in demand._cache:
            deps.append(k)
    return True


def abort_step(g):
    """A stepwise import left half-way: the modules it imported go."""
    had = g._had
    g._had = None
    if had is not None:
        for k in list(sys.modules):
            if k not in had and k.startswith("uspdm.") and k[6:] not in demand._cache:
                demand.forget(k)


def stepwise(g, conn, msg):
    """True when KEY_EXCHANGE / PSK_EXCHANGE msg is to load the stack in idle steps
    first: the stack is not loaded, the board defers such work (KEY_EXCHANGE's EC work
    in slices, as uspdm.sess_kex decides) and the request passes the checks that need
    no stack code (so a malformed one is answered at once, as before)."""
    if g.m is not None or getattr(conn, "defer_work", None) is None:
        return False
    d = g.settings.get("defer_key_exchange")
    if d is None:
        d = getattr(getattr(conn, "cfg", None), "defer_signing", False)
    if not (d and conn.version and conn.hashname and msg[0] == conn.version):
        return False
    if msg[1] == _PSK_EXCHANGE:
        # AES-256-GCM and the SPDM key schedule, a PSK mode offered and asked for
        return len(msg) >= 12 and g._psk_mode and getattr(conn, "sel_aead", 0) == 0x02 \
            and getattr(conn, "sel_ks", 0) == 0x01 and conn.req_flags & (3 << 10)
    # secp384r1, AES-256-GCM, the SPDM key schedule: the only selections sess_kex accepts
    return len(msg) >= 138 and getattr(conn, "sel_dhe", 0) == 0x10 and getattr(conn, "sel_aead", 0) == 0x02 \
        and getattr(conn, "sel_ks", 0) == 0x01


def load_iter(g, conn, msg, now, leaf):
    """KEY_EXCHANGE (leaf sess_kex) / PSK_EXCHANGE (sess_psk) as pending work
    (conn.defer_work): the session stack imported one module per idle slice (in a
    nearly full heap the whole stack at once is about 30 M instructions on the M0,
    during which the board answers nothing), then the request handled by the manager,
    whose EC work (its own pending work) continues in this one: the requester's token
    and the board's late answer stay this one's; then the AEAD, once that work's
    memory is free again (see _STACK)."""
    mine = conn.pend
    before = list(g.m.sessions) if g.m is not None else ()
    try:
        g._loading = True   # (the comb tables stay held off between its slices: release())
        g._make_room()
        yield
        # what uspdm.session imports, largest first, then it (pinned: manager())
        while step(g, "session", _STACK):
            yield
        while names(g):
            yield
        while step(g, leaf, ("uspdm.sess_hs",)):
            yield
        # the manager made and used in one slice (between slices, with no session
        # yet, the board's tick would let it go again: release())
        m = g.manager(False)
        before = list(m.sessions)
        g._loading = False
        rsp = m.handle_in_clear(conn, msg, now)
        q = conn.pend
        if q is not mine and q is not None and q.sig is None:
            # the manager deferred its EC work: it runs here, under this token
            conn.pend = mine
            gen = q.gen
            q = rsp = None
            rsp = yield from gen
        if rsp is not None and len(rsp) > 1 and rsp[1] in (0x64, 0x66) and not demand.loaded(_AEAD):
            # KEY_EXCHANGE_RSP / PSK_EXCHANGE_RSP made: its modules go, the AEAD comes
            # for the session's secured messages (one module per slice)
            g._drop_handshake()
            demand.drop("crypto._ecvar", collect=False)   # (the next tableless operation loads it again)
            gc.collect()
            yield
            while step(g, _AEAD, _AEAD_FIRST):
                yield
            g.aead()
        return rsp
    except MemoryError:
        g._end_opened(before)
        raise
    finally:
        g._loading = False
        abort_step(g)
        g.release()

