"""Build the board's SPDM context: identity, measurements, DRBG, responder config.

Measurement indices (stable; README "Measurements"):
  1..0x3E  one digest per firmware file that runs (firmware/, the board's
           files), then one per library folder (lib/mctp/, lib/uspdm/,
           lib/uspdm/crypto/, ...) over its files (measurements.files_digest:
           each framed by its path and size), in the board's walk order;
           anything beyond 0x3E shares one digest at 0x3F
  0x40     board configuration digest (DMTF type 3)
  0x41     MicroPython version string, raw (type 6)
  0x42     board / MCU description, raw (type 2)
  0x43     security version number, u64 LE raw (type 7)
  0x44     file manifest, raw (type 4): lines "<index hex> <path>" naming the
           file behind each digest above ("<folder>/ (<n> files)" for a folder)
  0xFE     device mode (type 5)
"""
import gc
import os
import sys

from uspdm.compat import p16, p32
from uspdm.identity import Identity
from uspdm.measurements import Measurements
from uspdm.responder import Config, Responder

SVN = 1
TIMING_FILE = "uspdm/sign_ms.bin"
HASH_OF = {"p384": "sha384", "p256": "sha256"}
_CHUNK = 1024


def build_measurements(board):
    m = Measurements()
    # one digest per file of the firmware and the board (firmware/device.py,
    # ...), one per library folder (lib/mctp/, lib/uspdm/, lib/uspdm/crypto/)
    # over its files: a bounded number of blocks whatever the number of
    # library modules (code loaded on demand is many small files), so
    # MEASUREMENTS stays small and so does what the board keeps
    folders = {}
    order = []   # the board's walk order (firmware/ first)
    for label, path in board.measured_files():
        key = label
        if label.startswith("lib/"):
            key = label[:label.rfind("/") + 1]
        g = folders.get(key)
        if g is None:
            g = folders[key] = []
            order.append(key)
        g.append(path)
    index = 1
    rest = []
    manifest = []
    for folder in order:
        paths = folders[folder]
        if index <= 0x3E:
            if folder.endswith("/"):
                m.add_files(index, paths)
                manifest.append("%02x %s (%d files)" % (index, folder, len(paths)))
            else:
                m.add_file(index, paths[0])
                manifest.append("%02x %s" % (index, folder))
            index += 1
        else:
            rest.extend(paths)
    if rest:
        m.add_files(0x3F, rest)
        manifest.append("3f %d more files" % len(rest))
    cfg = board.config()
    m.add_digest(0x40, 3, _config_bytes(cfg), tcb=True)
    impl = sys.implementation
    ver = "%s %s; %s" % (impl.name, ".".join(str(x) for x in impl.version[:3]), sys.version)
    m.add_raw(0x41, 6, ver.encode())
    m.add_raw(0x42, 2, ("board=%s mcu=%s" % (board.NAME, board.MCU)).encode())
    m.add_svn(0x43, cfg.get("svn", SVN))
    # which file each digest is (a label for reports; not TCB)
    m.add_raw(0x44, 4, "\n".join(manifest).encode(), tcb=False)
    m.add_device_mode()
    return m


def _config_bytes(cfg):
    keys = sorted(cfg)
    return ";".join("%s=%r" % (k, cfg[k]) for k in keys).encode()


DEFER_AUTO_MS = 250   # defer_signing=auto: signing work in slices when a signature takes longer
CT_MARGIN_PCT = 125   # CT: the longest job's estimate plus a quarter, then up to a power of two
KEX_SIGNATURES = 5    # KEY_EXCHANGE (key pair, variable-base ECDH, signature, SHA-384 key schedule
                      # and transcript) counts as this many signing times (each twice a bare signature):
                      # on the emulated Cortex-M0, P-384 KEY_EXCHANGE_RSP took 3.1 (ROMFS) to 4.1 (stock load)


def parse_versions(setting):
    """"1.0,1.1,1.2" (a settings string) or a list of ints -> [0x10, 0x11, 0x12];
    unknown entries are left out."""
    if isinstance(setting, str):
        out = []
        for part in setting.split(","):
            part = part.strip()
            if len(part) == 3 and part[1] == "." and part[0] == "1" and part[2] in "0123":
                out.append(0x10 + int(part[2]))
        return out
    return [v for v in setting if v in (0x10, 0x11, 0x12, 0x13)]


def defer_policy(setting, sign_ms):
    """defer_signing setting (1/0/True/False/"auto") -> (defer, direct):
    defer: the signing work runs in idle-loop slices (the board keeps serving);
    direct: its response is sent when done, within CT, instead of ResponseNotReady.
      "auto" (default): in slices and direct when a signature takes over
             DEFER_AUTO_MS, else signed at once;
      1: ResponseNotReady, collected with RESPOND_IF_READY;  0: signed at once."""
    if setting == "auto":
        d = sign_ms > DEFER_AUTO_MS
        return d, d
    return bool(setting), False


def _exponent(us):
    """Smallest e with 2**e microseconds >= us."""
    e = 0
    while (1 << e) < us and e < 31:
        e += 1
    return e


_gc_was = None   # gc.threshold() before _tight(True), restored by _tight(False)
TIGHT_GC = 8192   # bytes allocated between collections while the boot builds what it keeps (_tight)


def _tight(on):
    """A collection after every TIGHT_GC bytes allocated (MicroPython's gc.threshold), or
    back to collecting only when the heap is full.  The GC allocates first fit from the
    bottom and never moves anything; a long-lived object made among garbage lands wherever
    the garbage has pushed the allocations to, and left there it splits the free heap when
    the garbage goes.  While the boot builds the context, the frozen records and the comb
    table, the garbage is collected often, so what they keep lands low, next to what is
    already there, and the free heap stays in one block (128 KB emulated M0, stock load:
    the largest free block at the first request 9 -> 26 KB).  Not while a signature is
    timed (_sign_ms) or the files are digested: no long-lived data there, and a collection
    every few KB of a signature's garbage would slow it down."""
    global _gc_was
    th = getattr(gc, "threshold", None)
    if th is None:
        return
    if on:
        if _gc_was is None:
            _gc_was = th()   # the port's own setting
        th(TIGHT_GC)
    elif _gc_was is not None:
        th(_gc_was)          # back as it was (not -1: that would switch a port's threshold off)
        _gc_was = None


class SpdmContext:
    def __init__(self, board, log=print, max_message=4160, staged=False, buffer_room=None):
        """staged: build in slices of at most ~15 M instructions on the
        emulated Cortex-M0 (background() advances them, finish() completes
        them at once when a request needs the context)."""
        self.board = board
        self.log = log
        self.sessions = None
        self.short_of_memory = False   # set by a background step that ran out of memory
        self._prep = None
        self._buffer_room = buffer_room
        self._max_message = max_message
        self._stages = self._build()
        if not staged:
            self.finish()

    def finish(self):
        """Complete the construction now (a request needs the context)."""
        while self._stages is not None:
            self._stage()

    def _stage(self):
        try:
            next(self._stages)
        except StopIteration:
            self._stages = None
        except BaseException:
            # (out of memory, most likely): the next attempt starts over
            self._stages = self._build()
            raise

    def _build(self):
        board = self.board
        log = self.log
        max_message = self._max_message
        self.drbg = board.drbg()
        from uspdm.crypto import ec

        ec.set_rng(self.drbg.generate)   # fresh randomness for scalar blinding
        self.identity = Identity(board.storage(), self.drbg)
        yield
        cfg = board.config()
        c = Config()
        if "asym_priority" in cfg:
            ap = cfg["asym_priority"]
            if isinstance(ap, str):   # from a settings file: "p256,p384"
                ap = [a.strip() for a in ap.split(",") if a.strip()]
            c.asym_priority = [a for a in ap if a in HASH_OF] or c.asym_priority
        if "versions" in cfg:   # e.g. "1.0,1.1,1.2"
            vs = parse_versions(cfg["versions"])
            if vs:
                c.versions = vs
        openprot = False
        if cfg.get("openprot", 0):
            # OpenPRoT responder profile: report a single SPDM version, 1.2 or later
            # (the highest allowed; openprot_version=1.2 picks another)
            want = parse_versions(str(cfg.get("openprot_version", "")))
            vs = [v for v in (want or c.versions) if v >= 0x12]
            if vs:
                c.versions = [max(vs)]
            # ... and its measurement model (OpenPRoT spdm-lib): one block at index
            # 0xFD (freeform manifest, raw) = our blocks concatenated; summary over it
            openprot = True
        # Enrolment over SPDM (GET_CSR, SET_CERTIFICATE; README "Enrolment"):
        # on by default, inside a secure session only; enroll_in_clear=1 for a
        # lab bench, lock_slot0=1 keeps slot 0 as provisioned, cert_install_reset=1
        # makes changes take effect after a reset (CERT_INSTALL_RESET_CAP).
        c.csr_cap = c.set_cert_cap = bool(cfg.get("enroll", 1))
        c.enroll_in_clear = bool(cfg.get("enroll_in_clear", 0))
        c.lock_slot0 = bool(cfg.get("lock_slot0", 0))
        c.cert_install_reset = bool(cfg.get("cert_install_reset", 0))
        # multi_key=1: SPDM 1.3 MULTI_KEY_CAP (negotiated): DIGESTS report each
        # slot's KeyPairID, GET_CSR can make a slot a key pair of its own
        c.multi_key = bool(cfg.get("multi_key", 0))
        # Requests up to one MCTP message; larger ones come by CHUNK_SEND.
        c.data_transfer_size = min(cfg.get("data_transfer_size", 1024), max_message - 1)
        c.max_spdm_msg_size = cfg.get("max_spdm_msg_size", 4096)
        # measured for the preferred curve only (measuring another would load its
        # tables into the heap for good); a P-256-first board that may still
        # negotiate P-384 counts P-384 as three times slower
        first = c.asym_priority[0]
        sign_ms = yield from self._sign_ms(first)
        if first == "p256" and "p384" in c.asym_priority:
            sign_ms *= 3
        # slow_sign_ms (lab/test): every signing job takes at least that long
        self.slow_ms = int(cfg.get("slow_sign_ms", 0) or 0)
        self.sign_ms = max(sign_ms, self.slow_ms)
        kex = sign_ms * KEX_SIGNATURES
        mf = getattr(gc, "mem_free", None)   # (MicroPython)
        if cfg.get("sessions", True) and mf is not None:
            # a session on a heap under SMALL_HEAP (a 128 KB board) runs without the EC comb
            # tables (SessionGate._make_room): its KEY_EXCHANGE then takes about 3x as long
            # (emulated M0, 128 KB, stock load: ~1.4 G instructions instead of ~0.45 G), and
            # the CT advertised covers it (session_gate is loaded for sessions anyway)
            from uspdm.session_gate import SMALL_HEAP

            if mf() + gc.mem_alloc() < SMALL_HEAP:
                kex *= 3
        self.kex_ms = max(kex, self.slow_ms)
        # A signature takes long on a small board: its work runs in slices from
        # the idle loop, so MCTP control, heartbeats and other requesters keep
        # being served, and by default (defer_signing=auto) the response itself
        # goes out when it is done, within the CT advertised below
        # (firmware/workq.py); defer_signing=1 answers ResponseNotReady instead.
        c.defer_signing, self.answer_late = defer_policy(cfg.get("defer_signing", "auto"), self.sign_ms)
        self.slow_board = bool(self.answer_late or self.slow_ms)   # Device loads workq
        # CT: the longest job (KEY_EXCHANGE) with a margin, as a power of two of
        # us; RDT: the signing time, for ResponseNotReady (the requester retries
        # after RDT and may wait up to RDTM x RDT).
        ct = cfg.get("ct_exponent")
        c.ct_exponent = int(ct) if ct is not None else _exponent(max(self.kex_ms, self.sign_ms) * CT_MARGIN_PCT * 10)
        rdt = cfg.get("rdt_exponent")
        c.rdt_exponent = int(rdt) if rdt is not None else _exponent(self.sign_ms * 1000)
        self.ct_ms = (1 << c.ct_exponent) // 1000
        c.buffer_room = self._buffer_room   # CHUNK_SEND within the device's cap
        self.config = c
        if cfg.get("sessions", True):
            # Secure sessions: the stack (about 28 KB of heap as .mpy in RAM) is
            # loaded with the first KEY_EXCHANGE/PSK_EXCHANGE and dropped after
            # the last session (uspdm.session_gate); sessions=0 leaves them out.
            from uspdm.session_gate import SessionGate

            # DHE secp384r1, AES-256-GCM, the SPDM key schedule (uspdm.session.configure)
            c.dhe_priority = [0x0010]   # DHE_SECP384R1
            c.aead_priority = [0x0002]   # AEAD_AES_256_GCM
            c.key_schedule_priority = [0x0001]   # KEY_SCHEDULE_SPDM
            self.sessions = SessionGate(self.drbg, board.storage(), cfg, log=log,
                                        vendor_hook=getattr(board, "vendor_defined", None),
                                        ticks_diff=getattr(board, "ticks_diff", None))
        self.kex_not_ready = bool(self.sessions is not None and self.sessions.settings.get("defer_key_exchange"))
        yield
        provisioned = [a for a in ("p384", "p256") if self.identity.provisioned_mask(a)]
        yield
        # the measurements last: what they hold until settle() freezes them goes above what
        # the context keeps, so their space is one block again for the frozen records
        # (and the comb table) once they go, instead of holes between kept objects
        self.measurements = build_measurements(board)
        if openprot:
            from uspdm.measurements import OPENPROT_INDEX

            self.measurements.single = OPENPROT_INDEX
        self._prep = self._prepare_steps()
        log("spdm: signing takes ~%d ms here (KEY_EXCHANGE ~%d ms): CT exponent %d (%d ms), RDT exponent %d, %s" % (
            self.sign_ms, self.kex_ms, c.ct_exponent, self.ct_ms, c.rdt_exponent,
            ("answered directly within CT (work in slices)" if self.answer_late else "deferred (ResponseNotReady)")
            if c.defer_signing else "signed at once"))
        for why in self.identity.problems.values():   # a damaged key or chain, found at boot
            log("spdm: identity problem: " + why)
        log("spdm: identity provisioned for %s; %d measurement blocks" % (
            ", ".join(provisioned) if provisioned else "nothing (run `uspdm provision`)",
            self.measurements.count()))

    def _sign_ms(self, alg):
        """The board's measured P-384/P-256 signing time in ms, measured once
        (a throwaway key) and kept on flash.  A generator (the staged build):
        the measurement runs in the signature's own slices, and counts only
        the time spent inside them."""
        st = self.board.storage()
        name = TIMING_FILE.replace(".bin", "_%s.bin" % alg)
        raw = st.read(name)
        if raw and len(raw) == 4:
            return raw[0] | raw[1] << 8 | raw[2] << 16 | raw[3] << 24
        from uspdm.crypto import ec

        curve = ec.P384 if alg == "p384" else ec.P256
        d = ec.generate_private_key(curve, self.drbg.generate)
        gen = ec.sign_iter(curve, d, bytes(curve.size))
        b = self.board
        ms = 0
        while gen is not None:
            _tight(False)   # (the signature's speed is measured)
            t0 = b.ticks_ms()
            try:
                next(gen)
            except StopIteration:
                gen = None
            ms += b.ticks_diff(b.ticks_ms(), t0)
            if gen is not None:
                yield
        ms = max(1, ms)
        # the summary hash and transcript hashing add to it: count them in
        ms = ms * 2
        try:
            st.write(name, bytes((ms & 0xFF, ms >> 8 & 0xFF, ms >> 16 & 0xFF, ms >> 24 & 0xFF)))
        except Exception:
            pass
        return ms

    def _prepare_steps(self):
        """Digest the measured files in the background, 1 KB per step, for
        the hash of each algorithm the board may negotiate, so the first
        CHALLENGE or GET_MEASUREMENTS does not stall for the whole firmware."""
        hashes = []
        for a in self.config.asym_priority:
            h = HASH_OF.get(a)
            if h and h not in hashes:
                hashes.append(h)
        if self.identity.keys_unchecked():
            # the first boot after provisioning: the leaf certificates' keys
            # against d*G, in slices (later boots find the result on the flash)
            for a in (yield from self.identity.check_keys_iter()):
                self.log("spdm: identity problem: the %s leaf certificate does not hold the device key; %s" % (
                    a, "; ".join(v for k, v in self.identity.problems.items() if k[0] == a) or "no usable slot"))
        from uspdm.crypto import sha2

        buf = bytearray(_CHUNK)
        mv = memoryview(buf)
        for h in hashes:
            for b in self.measurements.blocks:
                v = b.value
                if b.raw or h in b._digests:
                    continue
                if isinstance(v, str) and v.startswith("file:"):
                    paths, framed = (v[5:],), False
                elif isinstance(v, str) and v.startswith("files:"):
                    paths, framed = v[6:].split("\n"), True   # as measurements.files_digest
                elif isinstance(v, list):
                    paths, framed = v, True
                else:
                    continue
                while True:
                    try:
                        hh = sha2.stream(h)   # one pass (no replay buffer)
                        for p in paths:
                            if framed:
                                pb = p.encode()
                                hh.update(p16(len(pb)) + pb + p32(os.stat(p)[6]))
                            with open(p, "rb") as f:
                                while True:
                                    n = f.readinto(buf)
                                    if not n:
                                        break
                                    hh.update(mv[:n])
                                    yield
                        b._digests[h] = hh.digest()
                    except OSError:
                        pass  # computed (and reported) on demand instead
                    except MemoryError:
                        # the heap is short now: say so (the board backs off)
                        # and digest this block again from its start later
                        hh = None
                        self.short_of_memory = True
                        yield
                        continue
                    break
                yield

    def background(self):
        """One slice of background work; True while more remains."""
        if self._stages is not None:
            gc.collect()
            _tight(True)
            try:
                self._stage()
            finally:
                _tight(False)
            return True
        if self._prep is None:
            return False
        try:
            next(self._prep)
            return True
        except StopIteration:
            self._prep = None
            self.log("spdm: measurements ready")
            return False

    def new_responder(self):
        r = Responder(self.identity, self.measurements, self.drbg, self.config)
        r.sessions = self.sessions   # None, or the SessionGate (uspdm.session.attach)
        return r


def build_context(board, log=print, max_message=4160, staged=False, buffer_room=None):
    return SpdmContext(board, log, max_message, staged, buffer_room)


def settle(dev, resident, boot_only):
    """The background preparation of device dev is done (firmware/device.py): its
    context kept in the resident class `resident`, the boot-only modules (this one
    among them) dropped, the measurement records frozen and the preferred curve's
    comb table built (code run once, so it lives here and not in device.py)."""
    ctx = dev._spdm
    gc.collect()
    _tight(True)
    try:
        _settle(dev, ctx, resident, boot_only)
    finally:
        _tight(False)


def _settle(dev, ctx, resident, boot_only):
    if ctx is not None and not isinstance(ctx, resident):
        ctx = dev._spdm = resident(ctx)
    from uspdm import demand

    for m in boot_only:
        demand.forget(m)   # (and from its package, which refers to it)
    if ctx is not None:
        # the measurement records built once, for each hash a requester can get
        # them in (SHA-384 and SHA-256: either base hash with either curve, or
        # the configured measurement hash), and the blocks let go: their
        # digests, computed among the background steps' garbage, pinned small
        # islands all over the top of the heap; the records go low and the free
        # heap is left in large blocks (the next requests load handlers there)
        gc.collect()
        meas = ctx.measurements
        mh = getattr(ctx.config, "meas_hash", None)
        if not hasattr(meas, "freeze"):
            pass   # frozen by an earlier settle that then ran out of memory
        elif meas.freeze(("sha384", "sha256") + ((mh,) if mh else ())):
            # the records alone stay (uspdm.meas_rec): the Measurements object, its
            # class and the module that declares and digests blocks go
            ctx.measurements = meas = meas.frozen
            for r in dev.responders.values():   # (made by a request before the boot was done)
                r.meas = meas
            r = None
            # each record copied after a collection: the copy takes the lowest free block
            # it fits in, where the blocks were, and the record made above the garbage of
            # its joining goes (uspdm.meas_rec.Records keeps them in _rec)
            rec = meas._rec
            for h in list(rec):
                gc.collect()
                rec[h] = rec[h][:]
            rec = None
        else:
            meas.compact()   # a hash not digested (asym_priority without p256): the blocks stay
        meas = None
        gc.collect()
        # the comb table of the preferred curve (6.5 KB for P-384, in 1.5 KB chunks),
        # which every signature needs: loaded now, low in that heap, instead of at
        # the first CHALLENGE into a heap the requests have fragmented
        try:
            from uspdm.crypto import ec

            (ec.P384 if ctx.config.asym_priority[0] == "p384" else ec.P256).table()
        except MemoryError:
            pass
