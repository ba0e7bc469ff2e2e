"""The device: a board's transports wired to the MCTP stack and the SPDM responder.

Sans-I/O like the rest: `feed(serial_bytes)` returns the bytes to write back
on the USB serial; `idle()` advances deferred work (a signature in slices,
timers) and returns bytes to write, if any.  The board's loop (main.py) or the
simulator's host does the actual I/O.  Nothing a peer sends can raise out of
feed(): a bug shows as a log line and the device keeps serving.
"""
import gc

from mctp import serial as mserial
from mctp.endpoint import Endpoint

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

# (private const()s: compiled in, no names kept in the heap)
_MAX_REQUESTERS = const(4)      # SPDM connection states kept (one per requester EID)
_CHUNK_IDLE_MS = const(5000)    # a CHUNK_SEND transfer silent this long is dropped (as MCTP reassembly)
_BG_BACKOFF_MS = const(100)     # first wait of background work that ran out of memory
_BG_BACKOFF_MAX_MS = const(10000)  # doubling up to this (the log line below says 10 s)
EID_FILE = "uspdm/eid.bin"


# Boot-only modules, dropped from sys.modules once the SPDM context is prepared (their
# code, about 14 KB of heap with the stock load, is not needed while serving; nothing
# imports them again, except identity_admin for a new key or chain: enrolment; the
# measurements are then uspdm.meas_rec's frozen records)
BOOT_ONLY = ("spdm_setup", "boardlib", "settings", "uspdm.identity_admin", "uspdm.measurements")


# The modules the SPDM context keeps (spdm_setup's imports, leaves first), imported by
# the first background steps one at a time (see _background_step)
# ("*": the boot-only code loaded once and let go, boardlib.intern_names)
PRELOAD = ("uspdm.compat", "uspdm.demand", "uspdm.crypto._sha512v", "uspdm.crypto.sha2",
           "uspdm.transcript", "uspdm.responder", "uspdm.identity", "*", "uspdm.meas_rec", "uspdm.crypto.hmac",
           "uspdm.crypto.drbg", "uspdm.crypto.ec", "uspdm.session_gate")
BOOT_HIGH = ("spdm_setup", "uspdm.measurements", "uspdm.identity_admin")


class Prepared:
    """The SPDM context once its background preparation is done: the public
    attributes of spdm_setup.SpdmContext (identity, measurements, DRBG, the
    responder's Config, the session gate or None, ...) in a class that does not keep
    the boot-only spdm_setup module alive (spdm_setup.settle)."""
    _stages = None

    def __init__(self, ctx):
        # every public attribute (identity, measurements, drbg, config, sessions, the
        # signing-time figures workq reads, ...); the private ones are the build's state
        d = ctx.__dict__
        for k in d:
            if k[0] != "_":
                setattr(self, k, d[k])


class Device:
    def __init__(self, board, verbose=False, log=None):
        # the attributes (transports, MCTP endpoint, boot-time buffers, connection
        # states, background-work state) are set by boardlib.init_device: code run once
        # at boot, in a module that is dropped once the board serves
        import boardlib

        boardlib.init_device(self, board, verbose, log, globals().get("__file__", "?"))

    def log(self, msg):
        try:
            self._log(msg)
        except Exception:
            pass

    # -- MCTP -------------------------------------------------------------
    def _eid_changed(self, eid):
        self.log("mctp: EID set to %d" % eid)
        owner = self.ep.owner
        if not self._persist or owner == self._persisted_for:
            return
        self._persisted_for = owner
        try:
            if self.storage.read(EID_FILE) == bytes((eid,)):
                return
            self.storage.write(EID_FILE, bytes((eid,)))
        except Exception as e:
            self.log("mctp: cannot persist EID: %r" % (e,))

    def _now(self):
        return self.board.ticks_ms()

    def feed(self, data, write=None):
        """Bytes from the USB serial in; bytes to write back out.  write: a
        function that takes each serial frame of the answers as it is made (the
        board's port): nothing as large as a whole answer is then allocated, and
        feed() returns b''."""
        out = [] if write is None else None
        try:
            for pkt in self.decoder.feed(data):
                self._packet(pkt, out, write)
        except Exception as e:  # a bug, never the peer's fault: log and keep serving
            self.log("fw: error on input: %r" % (e,))
            self.decoder.reset()
        if not out:
            return b""
        try:
            return b"".join(out)
        except MemoryError:
            self.log("fw: out of memory joining the answer's frames: dropped")
            return b""

    def _packet(self, pkt, out, write=None):
        if self.i2c_routes and len(pkt) >= 4:
            self.i2c_routes.pop(pkt[2], None)  # this requester now talks over serial
        rsp = self.ep.receive_packet(pkt, self._now())
        enc = mserial.encode_frame
        for i in range(len(rsp)):
            f = enc(rsp[i])
            rsp[i] = None   # each packet goes as soon as it is framed
            if write is not None:
                write(f)
            else:
                out.append(f)
        if rsp:
            self._answered += 1

    def feed_i2c(self, src_addr, pkt):
        """One MCTP packet received on I2C from SMBus address src_addr (already
        checked by mctp.smbus).  Returns [(dest_addr7, packet)] to master-write
        back (DSP0237: a response is a write to the requester's address); the
        same Endpoint, reassembly and SPDM states serve both transports."""
        out = []
        try:
            if len(pkt) >= 4 and pkt[2] != 0xFF:
                rt = self.i2c_routes
                if pkt[2] not in rt and len(rt) >= 16:
                    rt.pop(next(iter(rt)))
                rt[pkt[2]] = src_addr
            for p in self.ep.receive_packet(pkt, self._now(), src_addr):
                out.append((src_addr, p))
            if out:
                self._answered += 1
        except Exception as e:
            self.log("fw: error on i2c input: %r" % (e,))
        return out

    def feed_smbus(self, data, own_addr):
        """A raw I2C target capture (everything after our address byte) in;
        [(dest_addr7, frame_after_address_byte)] to write out."""
        from mctp import smbus

        r = smbus.decode_target(data, own_addr)
        if r is None:
            return []
        return [(a, smbus.encode(a, own_addr, p)[1:]) for a, p in self.feed_i2c(r[0], r[1])]

    def emit(self, dest_eid, packets):
        """Route response packets produced later (deferred work) to the
        transport dest_eid used: I2C packets are queued on self.i2c_out,
        serial frames are returned as bytes."""
        a = self.i2c_routes.get(dest_eid)
        if a is not None:
            for p in packets:
                self.i2c_out.append((a, p))
            return b""
        w = self._write
        if w is not None:   # idle(write=): frame by frame, nothing as large as the answer
            for i in range(len(packets)):
                w(mserial.encode_frame(packets[i]))
                packets[i] = None
            return b""
        return b"".join(mserial.encode_frame(p) for p in packets)

    def pending(self):
        for r in self.responders.values():
            if r.pending():
                return True
        return self._background and self._bg_due()

    # -- background work, backing off when the heap is short ---------------
    def _bg_due(self):
        if not self._bg_fails:
            return True
        td = getattr(self.board, "ticks_diff", None)
        now = self._now()
        return (td(now, self._bg_at) if td is not None else now - self._bg_at) >= 0

    def _background_step(self):
        """One slice of the background preparation (the SPDM context built,
        then the measured files digested).  Out of memory, it waits and tries
        again later, waiting twice as long each time (up to _BG_BACKOFF_MAX_MS),
        and says so once in the log instead of retrying in a loop."""
        try:
            ctx = self._spdm
            if ctx is None and self._pre < len(PRELOAD):
                # the resident modules one per step, a collection before each: the
                # loading garbage of one is freed before the next one's code is
                # placed, so the code packs low instead of around that garbage
                # (128 KB stock load: a 3 KB largest free block after boot became 8 KB)
                gc.collect()
                try:
                    if PRELOAD[self._pre] == "*":
                        import boardlib

                        boardlib.intern_names(BOOT_HIGH)
                    else:
                        __import__(PRELOAD[self._pre])
                except MemoryError:
                    raise
                except Exception:
                    pass   # not on this port (the viper kernel without a native emitter): sha2 decides
                self._pre += 1
                more, short = True, False
            elif ctx is None:
                # in slices of at most ~15 M instructions on the emulated
                # Cortex-M0 (the board keeps answering MCTP meanwhile): the
                # import first, then the context in stages, then the digests
                gc.collect()
                if not self._imported:
                    # the boot-only code at the top of the free heap (boardlib.import_high):
                    # what the context keeps goes low, without the code's pieces in between,
                    # and the code's hole, once it is dropped, joins the free space above
                    # (uspdm.identity_admin too: Identity.provisioned_mask would import it
                    # in the middle of the context's data)
                    import boardlib

                    boardlib.import_high(BOOT_HIGH)
                import spdm_setup

                if self._imported:
                    ctx = self._spdm = spdm_setup.build_context(self.board, self.log, self.ep.reasm.max_message,
                                                                staged=True, buffer_room=self._buffer_room)
                self._imported = True
                more, short = True, False
            if isinstance(ctx, Prepared):
                more, short = False, False   # only its settling is left (it ran short before)
            elif ctx is not None:
                more = ctx.background()
                short = ctx.short_of_memory
                ctx.short_of_memory = False
            if not more:
                # settled (spdm_setup.settle can be run again): out of memory, the
                # background work stays on and settles on a later slice.  (ctx let go
                # first: the build's context, and what only it still holds, is freed
                # before settle places the frozen records and the comb table)
                ctx = None
                self._prepared()
        except MemoryError as e:
            more, short = True, e
        if short:
            self._bg_pause()
        elif self._bg_fails:
            self.log("fw: background work resumed after %d out-of-memory pauses" % self._bg_fails)
            self._bg_fails = 0
        self._background = more

    def _prepared(self):
        """The background preparation is done: the context kept in the resident class
        Prepared, the boot-only modules dropped (spdm_setup.settle)."""
        import spdm_setup

        spdm_setup.settle(self, Prepared, BOOT_ONLY)

    def _bg_pause(self):
        """Background work ran out of memory: free what can be freed and wait, twice as
        long each time; say so once. Nothing here needs more than a few bytes of heap
        (the log line is a constant string), so a nearly full heap cannot turn the pause
        into an error of its own."""
        from uspdm import demand

        demand.drop()
        gc.collect()
        self._bg_fails += 1
        wait = min(_BG_BACKOFF_MS << min(self._bg_fails - 1, 8), _BG_BACKOFF_MAX_MS)
        td = getattr(self.board, "ticks_add", None)
        self._bg_at = (self._now() + wait) if td is None else td(self._now(), wait)
        if self._bg_fails == 1:
            # (a constant string: nothing to allocate on a heap that just ran short)
            self.log("fw: background work paused: out of memory; retrying later (backing off up to 10 s)")

    def idle(self, write=None):
        """Advance deferred work by one slice; return bytes to send (if any).
        Signatures first; then background preparation (the SPDM context is
        built, and the measured files digested, before anyone asks).
        write: as for feed() (answers made now go to it frame by frame)."""
        self._write = write
        try:
            return self._idle()
        finally:
            self._write = None

    def _idle(self):
        try:
            # pending signatures in turn (round robin from the one after the
            # last served): requesters that keep signing cannot starve another
            # (each has at most one: its responder answers Busy meanwhile)
            rs = self.responders
            nxt = low = None
            late = False   # a request to be answered directly when its work is done (workq)
            for k in rs:
                if rs[k].pending():
                    if k > self._rr and (nxt is None or k < nxt):
                        nxt = k
                    if low is None or k < low:
                        low = k
                    if rs[k].pend.tag >= 0:
                        late = True
            if nxt is None:
                nxt = low
            out = b""
            if late:
                import workq

                out = workq.overdue(self, self._now())
            if nxt is not None:
                self._rr = nxt
                r = rs[nxt]
                p = r.pend
                r.work()
                if p.tag >= 0 and (r.pend is not p or p.sig is not None):
                    import workq

                    out += workq.finish(self, r, nxt, p)
                p = r = None
            else:
                if self._background and self._bg_due():
                    self._background_step()
            self.ep.reasm.expire(self._now())
            self._expire_chunks(self._now())
            if self._spdm is not None and self._spdm.sessions is not None:
                self._spdm.sessions.tick(self._now())   # heartbeat timeouts
            return out
        except MemoryError:
            # the heap ran short in a slice (any of them): the background work backs off as if
            # its own step had failed; a pending signature is retried at the next idle()
            try:
                if self._background:
                    self._bg_pause()
                elif not self._oom_said:
                    self._oom_said = True
                    self.log("fw: out of memory in idle(); the slice is retried at the next call")
            except MemoryError:
                pass
        except Exception as e:
            self.log("fw: error in idle: %r" % (e,))
        return b""

    # -- buffered bytes ---------------------------------------------------
    def buffered(self):
        """Bytes held for requests not complete yet: partial MCTP messages and CHUNK_SEND
        reassembly (plain and in-session), every requester together."""
        n = self.ep.reasm.buffered()
        for r in self.responders.values():
            if r.inc is not None:
                n += len(r.inc.buf)
        sess = self._spdm.sessions if self._spdm is not None else None
        if sess is not None:
            for x in sess.sessions.values():
                inc = getattr(x, "inc", None)
                if inc is not None:
                    n += len(inc.buf)
        return n

    def _buffer_room(self):
        return self.buffer_cap - self.buffered()

    def _expire_chunks(self, now):
        """Drop CHUNK_SEND transfers whose requester has been silent for _CHUNK_IDLE_MS
        (r.now: the board time of its latest message)."""
        td = getattr(self.board, "ticks_diff", None)
        for r in self.responders.values():
            if r.inc is not None:
                d = td(now, r.now) if td is not None else now - r.now
                if d < 0 or d > _CHUNK_IDLE_MS:
                    r.inc = None
        sess = self._spdm.sessions if self._spdm is not None else None
        if sess is not None:
            for x in sess.sessions.values():   # in-session transfers: the session's last message
                if getattr(x, "inc", None) is not None:
                    d = td(now, x.last_rx) if td is not None else now - x.last_rx
                    if d < 0 or d > _CHUNK_IDLE_MS:
                        x.inc = None

    # -- SPDM -------------------------------------------------------------
    def _spdm_context(self):
        ctx = self._spdm
        if ctx is None:
            from spdm_setup import build_context

            ctx = self._spdm = build_context(self.board, self.log, self.ep.reasm.max_message,
                                             buffer_room=self._buffer_room)
        elif ctx._stages is not None:
            ctx.finish()   # a request came before the background work had built it
        return ctx

    def _responder(self, src):
        r = self.responders.get(src)
        if r is None:
            ctx = self._spdm_context()
            if len(self.responders) >= _MAX_REQUESTERS:
                # make room: the least recently used connection that holds no session
                # and no pending work; never end someone's session for a newcomer
                old = None
                live = ctx.sessions.sessions.values() if ctx.sessions is not None else ()
                for e in self._order:
                    c = self.responders.get(e)
                    if c is not None and not c.pending() and not any(x.conn is c for x in live):
                        old = e
                        break
                if old is None:
                    return None
                self._order.remove(old)
                self.responders.pop(old, None)
            from uspdm.responder import Responder

            r = Responder(ctx.identity, ctx.measurements, ctx.drbg, ctx.config)
            r.sessions = ctx.sessions   # None, or the SessionGate (uspdm.session.attach)
            ctx.config.rsp_buffer = self._rbuf   # the boot-time buffers (Device.__init__)
            if ctx.sessions is not None:
                ctx.sessions.sec_buffer = self._sbuf
            r.eid = src
            if ctx.slow_board:
                r.on_defer = self._on_defer   # signing work inside a session (workq)
            self.responders[src] = r
        if src in self._order:
            self._order.remove(src)
        self._order.append(src)
        return r

    def _out_of_memory(self):
        from uspdm import demand

        demand.drop()
        gc.collect()

    def _on_spdm(self, src, body):
        try:
            r = self._responder(src)
        except MemoryError:
            # the SPDM context could not be built now (heap short): Busy, retry later
            self._out_of_memory()
            r = None
        if r is None:
            # every connection holds a session or pending work: the newcomer waits (ERROR Busy,
            # in the request's version; GET_VERSION and anything unparsable: 1.0)
            v = body[1] if len(body) > 2 and body[2] != 0x84 and 0x10 <= body[1] <= 0x1F else 0x10
            return bytes((v, 0x7F, 0x03, 0x00))
        r.now = self._now()
        before = r.pend
        r.last_exception = None
        rsp = r.handle(body[1:])
        p = r.pend
        if p is not None and p is not before and p.sig is None and self._spdm.slow_board:
            # signing work started on a slow board: answered directly when done
            # (within CT), or ResponseNotReady (firmware/workq.py)
            import workq

            rsp = workq.admit(self, r, p, src, rsp)
        p = before = None
        if self.verbose:
            e = r.last_exception
            self.log("spdm: EID %d req %02x -> %s%s" % (
                src, body[2] if len(body) > 2 else 0, ("%02x" % rsp[1]) if rsp and len(rsp) > 1 else "none",
                (" (ERROR Busy: %r)" % (e,)) if isinstance(e, MemoryError) else ""))
        return rsp

    def _on_defer(self, r, p, rsp):
        import workq

        return workq.admit(self, r, p, r.eid, rsp)

    def _on_secured(self, src, body):
        """MCTP type 0x06 (secured SPDM): routed by session ID to the session,
        and through it to its requester's connection state."""
        try:
            sessions = self._spdm_context().sessions
        except MemoryError:
            self._out_of_memory()
            return None
        if sessions is None:
            return None   # sessions=False on this board: type 0x06 is not advertised either
        out = sessions.handle_secured(src, body[1:], self._now())
        if self.verbose:
            self.log("spdm: EID %d secured message -> %s" % (src, "answer" if out is not None else "dropped"))
        return out

