"""Secure sessions loaded on demand: what the board keeps while no session is open.

The session stack (uspdm.session with keysched, secured, AES-GCM: about 28 KB
of heap when its .mpy is copied to RAM) is needed only while a session exists.
SessionGate stands in for a uspdm.session.SessionManager: it advertises the
capabilities and answers what needs no session code (a secured message for an
unknown session is dropped), imports the stack with the first KEY_EXCHANGE or
PSK_EXCHANGE (uspdm.demand), and drops it again when the last session has
ended, so an attestation-only flow never holds it.

    gate = SessionGate(drbg, storage, cfg, log=log, vendor_hook=..., ticks_diff=...)
    r.sessions = gate            # as uspdm.session.attach(r, gate)

The settings are those of uspdm.session.from_board (board.config() keys,
overridden by uspdm/session.json); `keep_session_code=1` keeps the stack
loaded after the last session (faster next session, less free heap).
"""
import gc
import sys

from uspdm.compat import const
from uspdm import demand

# DSP0274 codes used here (private: compiled in, not in the module's dict)
_CAP_ENCRYPT = const(0x40)
_CAP_HANDSHAKE_IN_THE_CLEAR = const(0x8000)
_CAP_HBEAT = const(0x2000)
_CAP_KEY_EX = const(0x200)
_CAP_KEY_UPD = const(0x4000)
_CAP_MAC = const(0x80)
_ERROR = const(0x7F)
_ERR_BUSY = const(0x03)
_KEY_EXCHANGE = const(0xE4)
_V11 = const(0x11)

SESSION_CONFIG = "uspdm/session.json"
# a heap smaller than this (bytes) holds the EC comb tables off while the session stack is
# loaded (SessionGate._make_room): a 128 KB board; a 200 KB RP2040 keeps them (speed)
SMALL_HEAP = 160 * 1024
# the session stack, in the order it is loaded (a module's code is copied into the heap in
# pieces as large as its largest function: largest first, while the large free blocks last):
# uspdm.session with what it imports, then the handshake's own module (uspdm.sess_kex or
# uspdm.sess_psk, with uspdm.sess_hs) until its answer is made; then the AEAD (AES with its
# viper kernels, and GCM: KEY_EXCHANGE_RSP / PSK_EXCHANGE_RSP is sent in the clear, so the
# EC work runs without it) and, for FINISH / PSK_FINISH, uspdm.sess_fin.  uspdm.session
# and the AEAD stay while sessions live; uspdm.sess_more (rare paths) is loaded per request.
# The first load interns the names of all of them before the EC work (sess_load.names): MicroPython's
# qstr pools are never freed, and the pool that a late import would overflow is a new
# block of up to ~9 KB, which a heap fragmented by the EC work no longer has.
_STACK = ("uspdm.keysched",)
_AEAD = "crypto.gcm"
# (uspdm.secured: the secured-message framing; AES with its viper kernels, uspdm.crypto._gcmv, where
# the port has them)
_AEAD_FIRST = ("uspdm.crypto.aes", "uspdm.secured")
_HANDSHAKE = ("sess_kex", "sess_psk")   # (uspdm.sess_hs goes with them)
_PSK_EXCHANGE = const(0xE6)
# (the stepwise load: uspdm.sess_load, a demand module of its own)
_KEYS = ("max_sessions", "heartbeat", "psk_mode", "handshake_in_the_clear", "max_seq", "defer_key_exchange",
         "allow_replayable_psk", "keep_session_code", "warm_session_code")


def settings(storage, cfg=None, log=None):
    """The session settings: board.config() keys, then uspdm/session.json."""
    c = {}
    if cfg:
        for k in _KEYS:
            if k in cfg:
                c[k] = cfg[k]
    try:
        raw = storage.read(SESSION_CONFIG) if storage is not None else None
        if raw:
            import json

            c.update(json.loads(raw))
    except Exception:
        if log:
            log("session: ignoring unreadable %s" % SESSION_CONFIG)
    return c


class SessionGate:
    def __init__(self, drbg, storage=None, cfg=None, log=None, vendor_hook=None, ticks_diff=None):
        self.drbg = drbg
        self.storage = storage
        self.log = log
        self.vendor_hook = vendor_hook
        self.ticks_diff = ticks_diff
        self.settings = c = settings(storage, cfg, log)
        self.keep = bool(c.get("keep_session_code", False))
        self.m = None   # the SessionManager while the stack is loaded
        self.sec_buffer = None   # given to the manager (uspdm.session.SessionManager.sec_buffer)
        self.stats = {"opened": 0, "ended": 0, "decrypt_errors": 0, "dropped": 0, "timeouts": 0,
                      "loads": 0}
        # what cap_flags needs, without the stack (uspdm.session.SessionManager.cap_flags)
        psk = int(c.get("psk_mode", 2))
        if psk == 1 and not c.get("allow_replayable_psk", False):
            psk = 2   # refused by the manager too: PSK with a responder context
        self._psk_mode = psk
        self._in_clear = bool(c.get("handshake_in_the_clear", True))
        self._held = False    # the comb tables held off while the stack is loaded (_make_room)
        self._loading = False  # the stack being loaded in idle slices (uspdm.sess_load)
        self._tables = None   # AES kernel tables (T0, S-box), made once, kept across loads
        self._warm = bool(c.get("warm_session_code", False))
        self._named = None    # the names of the whole stack interned (uspdm.sess_load.names)
        self._had = None      # sys.modules before a stepwise import (uspdm.sess_load.step)
        if self._warm and not self.keep:
            # (a setting, off by default: costs ~20 KB of heap to flows without sessions)
            # built while the heap is young: AES with its viper kernels stays loaded, its
            # tables made (T0: one 1 KB block), and the rest of the stack's names interned,
            # so the first KEY_EXCHANGE needs no large contiguous block (uspdm.demand.warm)
            try:
                demand.need(_AEAD, first=_AEAD_FIRST)   # a demand module: dropped when memory runs short
                # KEY_EXCHANGE's one-time key always needs the P-384 comb table (6.4 KB in
                # 1.5 KB pieces, kept once loaded): loaded now, not into a fragmented heap
                from uspdm.crypto import ec

                ec.P384.table()
            except MemoryError:
                pass
            demand.warm(("session", "sess_hs", "sess_kex", "sess_psk", "sess_fin", "sess_more"), _STACK,
                        self._install_tables)

    # ------------------------------------------------------------ the stack
    def manager(self, aead=True):
        """The SessionManager (the session stack imported if needed; aead=False: not
        the AEAD yet, the stepwise load brings it after the handshake's EC work)."""
        m = self.m
        if m is None:
            # the stack's largest modules are loaded first (uspdm.demand.need)
            self._make_room()
            if aead:
                demand.need(_AEAD, first=_AEAD_FIRST)
            s = demand.need("session", first=_STACK)
            demand.pin("session")   # live sessions hold its classes: never dropped under them
            m = s.from_settings(self.drbg, self.storage, self.settings, log=self.log,
                                vendor_hook=self.vendor_hook, ticks_diff=self.ticks_diff)
            m.sec_buffer = self.sec_buffer
            for k in m.stats:
                if k not in self.stats:
                    self.stats[k] = m.stats[k]
            m.stats = self.stats
            self.stats["loads"] += 1
            self.m = m
            if aead:
                self.aead()
        return m

    def aead(self):
        """AES-GCM (uspdm.crypto.gcm with AES and its kernels) loaded and pinned while
        the stack is: a session's directions seal and open with it."""
        if not demand.loaded(_AEAD):
            demand.need(_AEAD, first=_AEAD_FIRST)
        if self.m is not None and not demand._pins.get(_AEAD):
            demand.pin(_AEAD)   # live sessions hold its objects: never dropped under them (release())
            self._install_tables()

    def _make_room(self):
        """Before the stack comes: the handlers of the connection's first messages go
        (their room goes to it: about 35 KB of code when copied into the heap), and on a
        small heap (under SMALL_HEAP bytes: a 128 KB board) the EC comb tables too, held
        off while the stack is loaded: signatures and key generation compute without
        them (P-384's table is 6.4 KB; about 4x slower: uspdm.crypto.ec.hold_tables)."""
        for k in list(demand._cache):
            if k.startswith("rsp_") or k == "chunk":
                demand.drop(k, collect=False)
        mf = getattr(gc, "mem_free", None)   # (MicroPython)
        if not self._held and mf is not None and mf() + gc.mem_alloc() < SMALL_HEAP:
            self._hold(True)
        gc.collect()

    def _hold(self, on):
        f = getattr(sys.modules.get("uspdm.crypto.ec"), "hold_tables", None)
        if f is not None:
            f(on)
            self._held = on

    def _end_opened(self, before):
        """End the sessions opened since `before` (a request that ran out of memory)."""
        m = self.m
        if m is not None:
            for sid in list(m.sessions):
                if sid not in before:
                    m.end(m.sessions[sid], "out of memory")

    def _install_tables(self):
        """The AES kernel's tables (1.3 KB) made once and kept here, given to each
        load of the stack (the kernel module goes with it)."""
        k = sys.modules.get("uspdm.crypto._gcmv")
        if k is None:
            return
        if self._tables is not None:
            k.T, k.S = self._tables
            return
        if k.T is None:
            sys.modules["uspdm.crypto.aes"]._kernel_tables()
        self._tables = (k.T, k.S)

    def release(self):
        """Drop the session stack if no session (not even a half-open one) remains;
        else what no session needs now."""
        m = self.m
        demand.drop("sess_load", collect=False)   # (pinned while a stepwise load runs)
        if m is None:
            if self._held and not self._loading:
                self._hold(False)   # the stack did not come (out of memory)
            return False
        if self.keep:
            return False
        if m.sessions:
            # the handshake modules go once no answer to KEY_EXCHANGE / PSK_EXCHANGE is
            # being computed, uspdm.sess_fin once no handshake is in progress, the rare
            # paths after each request (room for the signed answers inside the sessions)
            hs = fin = False
            for x in m.sessions.values():
                if x.state == 1:   # uspdm.session.ST_HANDSHAKE
                    fin = True
                    if x.req is None:
                        hs = True
            if not hs:
                self._drop_handshake()
            if not fin:
                demand.drop("sess_fin", collect=False)
            demand.drop("sess_more", collect=False)
            return False
        self.m = None
        demand.unpin("session")
        demand.unpin(_AEAD)
        # the handshake modules refer to the stack's functions: they go first
        self._drop_handshake()
        demand.drop("sess_fin", collect=False)
        demand.drop("sess_more", collect=False)
        if not self._warm:
            demand.drop(_AEAD, collect=False)   # (warm_session_code keeps it until memory runs short)
        demand.drop("session")
        if self._held:
            self._hold(False)   # the next signature loads its table again
        return True

    @staticmethod
    def _drop_handshake():
        for k in _HANDSHAKE:
            demand.drop(k, collect=False)

    # ------------------------------------------- SessionManager interface
    def cap_flags(self, version):
        if version < _V11:
            return 0
        f = _CAP_ENCRYPT | _CAP_MAC | _CAP_KEY_EX | _CAP_HBEAT | _CAP_KEY_UPD
        if self._in_clear:
            f |= _CAP_HANDSHAKE_IN_THE_CLEAR
        if self._psk_mode:
            f |= (self._psk_mode & 3) << 10
        return f

    @property
    def sessions(self):
        return self.m.sessions if self.m is not None else {}

    def count(self):
        return len(self.m.sessions) if self.m is not None else 0

    def handle_in_clear(self, conn, msg, now=0):
        code = msg[1]
        if (code == _KEY_EXCHANGE or code == _PSK_EXCHANGE) and self.m is None \
                and getattr(conn, "defer_work", None) is not None:
            # the stack loaded in idle slices before the request is handled (uspdm.sess_load)
            ld = demand.need("sess_load")
            if ld.stepwise(self, conn, msg):
                return conn.defer_work(code, demand.pinned("sess_load", ld.load_iter(
                    self, conn, msg, now, "sess_kex" if code == _KEY_EXCHANGE else "sess_psk")))
            ld = None
            demand.drop("sess_load", collect=False)
        # KEY_EXCHANGE / PSK_EXCHANGE load the stack; anything else with no
        # session loads it for the manager's checks and answer, then drops it
        before = list(self.m.sessions) if self.m is not None else ()
        try:
            return self.manager().handle_in_clear(conn, msg, now)
        except MemoryError:
            # the stack could not be loaded, or the handshake ran out of memory:
            # a session this request opened is ended; the responder answers Busy
            self._end_opened(before)
            raise
        finally:
            self.release()

    def handle_secured(self, src, body, now=0):
        if self.m is None:
            self.stats["dropped"] += 1   # no session at all: an unknown session ID
            return None
        try:
            self.aead()   # (a session's first secured message, after a handshake that did not load it)
            return self.m.handle_secured(src, body, now)
        except MemoryError:
            return self._busy(body)
        finally:
            self.release()

    def _busy(self, body):
        """A secured request that ran out of memory: what it held is freed and
        the requester gets ERROR Busy inside its session (a retry, the next
        sequence number, can succeed); nothing if even that cannot be sent."""
        m = self.m
        demand.drop()
        gc.collect()
        try:
            sid = body[0] | body[1] << 8 | body[2] << 16 | body[3] << 24
            s = m.sessions.get(sid)
            if s is None or s.rsp is None:
                return None
            return m._encode(s, bytes((s.conn.version, _ERROR, _ERR_BUSY, 0)))
        except Exception:
            return None

    def tick(self, now):
        if self.m is not None:
            self.m.tick(now)
            self.release()

    def end_conn(self, conn):
        if self.m is not None:
            self.m.end_conn(conn)
            self.release()

    def reset(self):
        if self.m is not None:
            self.m.reset()
            self.release()

    def end(self, s, why=""):
        if self.m is not None:
            self.m.end(s, why)
            self.release()

    def __getattr__(self, name):
        # anything else (tests, diagnostics): the manager's own attribute
        return getattr(self.manager(), name)
