"""Device identity: the private key(s) and certificate chains on the board's storage.

    ident = Identity(storage, drbg)
    ident.ensure_key('p384')          # generate with the DRBG on first use, store it; returns X||Y
    ident.public_key('p384')          # X||Y (96 bytes for P-384), for the leaf certificate
    ident.private_key('p384')         # int
    ident.install_chain(0, 'p384', der_certs_root_first)   # leaf must hold the device key
    ident.chain(0, 'p384')            # DER certificates concatenated, root first, or None
    ident.provisioned_mask('p384')    # bit N set when slot N holds a chain
    ident.slot_key(N, 'p384')         # the private key slot N signs with (int)
    ident.key_pair_of(N, 'p384')      # its SPDM 1.3 KeyPairID: 1 or N + 2

`alg` is 'p384' or 'p256'.  Storage layout (see uspdm.storage):
  uspdm/key_<alg>.bin       raw big-endian private scalar (curve size bytes)
  uspdm/slot<N>_<alg>.der   DER certificates concatenated, root first, leaf last
  uspdm/kp<K>_<alg>.bin     a key pair of its own for slot K - 2 (K = 2..9), made on
                            the board by GET_CSR (SPDM 1.3 KeyPairID K): d || X || Y

Key pairs (SPDM 1.3 multi-key): KeyPairID 1 is the device key (key_<alg>.bin);
KeyPairID N + 2 is slot N's own key pair, which only slot N can use.  A slot
signs with the key its leaf certificate holds: its own key pair when the
leaf holds that one, else the device key.

The SPDM certificate-chain buffer served by GET_CERTIFICATE
(`Length u16 | Reserved u16 | RootHash[H] | certificates`) and its digest are
derived on demand for the negotiated hash and cached (small: one chain per
provisioned slot actually used).
The private key never leaves the device: there is no API that returns it in
any serialised form other than `private_key()` for the local signer.
"""
from uspdm.compat import p16

ALGS = ("p384", "p256")
_KEY = "uspdm/key_%s.bin"
_SLOT = "uspdm/slot%d_%s.der"
_KP = "uspdm/kp%d_%s.bin"
_KEYCHK = "uspdm/keychk_%s.bin"   # proof that key_<alg>.bin's d*G was checked once (see leaf_key)
# DER prefix of a leaf's SubjectPublicKeyInfo up to the uncompressed point 04||X||Y
_SPKI = {
    "p384": b"\x30\x76\x30\x10\x06\x07\x2a\x86\x48\xce\x3d\x02\x01\x06\x05\x2b\x81\x04\x00\x22"
            b"\x03\x62\x00\x04",
    "p256": b"\x30\x59\x30\x13\x06\x07\x2a\x86\x48\xce\x3d\x02\x01\x06\x08\x2a\x86\x48\xce\x3d"
            b"\x03\x01\x07\x03\x42\x00\x04",
}
KEY_PAIRS = 9   # KeyPairID 1 (device key) and 2..9 (slot 0..7's own)


def _curve(alg):
    from uspdm.crypto import ec

    if alg == "p384":
        return ec.P384
    if alg == "p256":
        return ec.P256
    raise ValueError("unknown algorithm")


def der_elements(der):
    """Split concatenated DER TLVs; return a list of (offset, length). Raises ValueError."""
    out = []
    off = 0
    n = len(der)
    while off < n:
        if n - off < 2 or der[off] != 0x30:
            raise ValueError("not a DER SEQUENCE")
        ln = der[off + 1]
        hdr = 2
        if ln & 0x80:
            k = ln & 0x7F
            if k == 0 or k > 3 or n - off < 2 + k:
                raise ValueError("bad DER length")
            ln = 0
            for i in range(k):
                ln = (ln << 8) | der[off + 2 + i]
            hdr = 2 + k
        total = hdr + ln
        if off + total > n:
            raise ValueError("truncated DER")
        out.append((off, total))
        off += total
    if not out:
        raise ValueError("empty chain")
    return out


class Identity:
    def __init__(self, storage, drbg=None):
        self.storage = storage
        self.drbg = drbg
        self._keys = {}
        self._pubs = {}     # alg -> X||Y known to be d*G (computed, or checked once: _KEYCHK)
        self._unchecked = {}  # alg -> X||Y taken from a leaf certificate, d*G not checked yet
        self._dig = {}   # (slot, alg, hashname) -> Hash(chain buffer), every slot used
        self._last = None  # (key, (chain buffer, digest)): only the last chain buffer stays on the heap
        self._masks = {}
        self._kp = {}    # (slot, alg) -> KeyPairID the slot's leaf holds
        self.problems = {}  # (alg, slot or -1 for the key) -> why it is not usable
        self._recovered = False
        self.boot_id = None  # random per boot, set by whoever needs it (CERT_INSTALL_RESET flow)

    def _recover(self):
        """Once per boot, before the first slot is read: finish or roll back
        slot writes a power cut interrupted (uspdm.enroll)."""
        if self._recovered:
            return
        self._recovered = True
        for n in self.storage.list("uspdm"):
            if n.startswith("slot") and (n.endswith(".wip") or n.endswith(".cmt") or n.endswith(".pnd")):
                self._slots("recover", "uspdm")
                return

    def _slots(self, fn, *args):
        """uspdm.enroll's power-fail-safe slot writes, imported for the call
        and dropped after it unless it was loaded already."""
        import sys

        fresh = "uspdm.enroll" not in sys.modules
        try:
            from uspdm import enroll

            return getattr(enroll, fn)(self.storage, *args)
        finally:
            if fresh:
                sys.modules.pop("uspdm.enroll", None)
                import uspdm

                try:
                    delattr(uspdm, "enroll")
                except (AttributeError, KeyError):
                    pass

    # keys -----------------------------------------------------------------
    def has_key(self, alg):
        return self.storage.exists(_KEY % alg)

    def ensure_key(self, alg):
        """Make sure the device key for `alg` exists (generated with the DRBG
        and stored the first time); returns its public key X||Y (never the
        private key, so a REPL echo over mpremote cannot leak it)."""
        self._ensure(alg)
        return self.public_key(alg)

    def _ensure(self, alg):
        d = self._keys.get(alg)
        if d is not None:
            return d
        raw = self.storage.read(_KEY % alg)
        if raw is None:
            from uspdm.crypto import ec

            if self.drbg is None:
                raise ValueError("no DRBG to generate a key")
            d = ec.generate_private_key(_curve(alg), self.drbg.generate)
            self.storage.write(_KEY % alg, d.to_bytes(_curve(alg).size, "big"))
        else:
            d = int.from_bytes(raw, "big")
        self._keys[alg] = d
        return d

    def set_private_key(self, alg, d):
        """Provision an externally generated key (tests, or a lab that injects keys)."""
        c = _curve(alg)
        self.storage.write(_KEY % alg, d.to_bytes(c.size, "big"))
        self._keys[alg] = d
        self._pubs.pop(alg, None)
        self._unchecked.pop(alg, None)
        self._masks.pop(alg, None)

    def private_key(self, alg):
        d = self._keys.get(alg)
        if d is None:
            raw = self.storage.read(_KEY % alg)
            if raw is None:
                return None
            d = int.from_bytes(raw, "big")
            self._keys[alg] = d
        return d

    def public_key(self, alg):
        q = self._pubs.get(alg)
        if q is None:
            d = self.private_key(alg)
            if d is None:
                return None
            from uspdm.crypto import ec

            q = ec.public_key(_curve(alg), d)
            self._pubs[alg] = q
        return q

    # the device key as the leaf certificates hold it ----------------------
    # Computing d*G at every boot costs a fixed-base scalar multiplication per
    # curve (about 74 M + 30 M instructions on the emulated Cortex-M0), so the
    # boot takes the public key from the provisioned leaf certificate instead.
    # Whether it is d*G is checked once, in slices (check_keys_iter, the
    # board's background work), and the result kept on the flash as
    # keychk_<alg>.bin = SHA-256("uspdm-keychk" | d | X||Y)[:16]: a later
    # boot with the same key and leaf finds it and computes nothing.  Until
    # the check ran (the first boot after provisioning), slots whose leaf
    # holds the certificate's key count as provisioned; a leaf that does not
    # hold d*G only makes signatures that do not verify (nothing leaks), and
    # the check then reports it and takes the slots out.
    def _chk_tag(self, alg, pub):
        from uspdm.crypto import sha2

        d = self.private_key(alg)
        return sha2.new("sha256", b"uspdm-keychk" + d.to_bytes(_curve(alg).size, "big") + pub).digest()[:16]

    def _leaf_pub(self, alg, der):
        """X||Y from the leaf's SubjectPublicKeyInfo (the last certificate of der), or None."""
        off, ln = der_elements(der)[-1]
        pre = _SPKI[alg]
        i = der.find(pre, off, off + ln)
        sz = 2 * _curve(alg).size
        if i < 0 or i + len(pre) + sz > off + ln:
            return None
        i += len(pre)
        return der[i:i + sz]

    def leaf_key(self, alg, der):
        """The device key for alg as far as boot needs it: d*G when known,
        else the leaf certificate's key (checked against d*G once, later)."""
        q = self._pubs.get(alg)
        if q is not None:
            return q
        q = self._unchecked.get(alg)
        if q is not None:
            return q
        q = self._leaf_pub(alg, der)
        if q is None:
            return None
        if self.storage.read(_KEYCHK % alg) == self._chk_tag(alg, q):
            self._pubs[alg] = q
        else:
            self._unchecked[alg] = q
        return q

    def keys_unchecked(self):
        return bool(self._unchecked)

    def check_keys_iter(self):
        """Check the leaf certificates' keys against d*G in slices (a
        generator: one fixed-base comb slice per next()); on a match the
        result is kept on the flash, on a mismatch the slots are rebuilt
        (self.problems says why).  Returns the algorithms that failed."""
        from uspdm.crypto import ec

        bad = []
        for alg in list(self._unchecked):
            q = self._unchecked.get(alg)
            d = self.private_key(alg)
            if q is None or d is None:
                continue
            real = yield from ec.public_key_iter(_curve(alg), d)
            self._unchecked.pop(alg, None)
            self._pubs[alg] = real
            if real == q:
                try:
                    self.storage.write(_KEYCHK % alg, self._chk_tag(alg, q))
                except Exception:
                    pass   # checked again at the next boot
            else:
                bad.append(alg)
                self._masks.pop(alg, None)
                self.provisioned_mask(alg)
        return bad

    # key pairs (SPDM 1.3 KeyPairID) ----------------------------------------
    def key_pair(self, kp, alg):
        """(d, X||Y) of slot kp - 2's own key pair, or None (kp 2..9)."""
        if not 2 <= kp <= KEY_PAIRS:
            return None
        raw = self.storage.read(_KP % (kp, alg))
        n = _curve(alg).size
        if raw is None or len(raw) != 3 * n:
            return None
        return int.from_bytes(raw[:n], "big"), bytes(raw[n:])

    def set_key_pair(self, kp, alg, d, pub):
        """Store a key pair made on the board (GET_CSR with a new KeyPairID)."""
        n = _curve(alg).size
        self.storage.write(_KP % (kp, alg), d.to_bytes(n, "big") + bytes(pub))
        self._kp.clear()
        self._masks.pop(alg, None)

    def drop_key_pair(self, kp, alg):
        """Retire slot kp - 2's own key pair (its chain no longer uses it)."""
        if 2 <= kp <= KEY_PAIRS and self.storage.exists(_KP % (kp, alg)):
            self.storage.delete(_KP % (kp, alg))
        self._kp.clear()
        self._masks.pop(alg, None)

    def key_pair_of(self, slot, alg):
        """KeyPairID slot `slot` uses: slot + 2 when its leaf holds the slot's
        own key pair, else 1 (the device key)."""
        k = self._kp.get((slot, alg))
        if k is None:
            k = 1
            own = self.key_pair(slot + 2, alg)
            if own is not None:
                der = self.chain(slot, alg)
                try:
                    off, ln = der_elements(der or b"")[-1]
                    if (b"\x04" + own[1]) in der[off:off + ln]:
                        k = slot + 2
                except ValueError:
                    pass
            self._kp[(slot, alg)] = k
        return k

    def slot_key(self, slot, alg):
        """The private key slot `slot` signs with (None: no key)."""
        if 0 <= slot < 8 and self.key_pair_of(slot, alg) != 1:
            return self.key_pair(slot + 2, alg)[0]
        return self.private_key(alg)

    # certificate chains ---------------------------------------------------
    def chain(self, slot, alg):
        if not 0 <= slot < 8:
            return None
        self._recover()
        return self.storage.read(_SLOT % (slot, alg))

    def install_chain(self, slot, alg, der, check_key=True, at_boot=False):
        """Store a chain (DER certificates concatenated, root first), power-fail
        safe (uspdm.enroll); at_boot: it takes effect at the next boot.  With
        check_key, the leaf must carry this device's public key for `alg`
        (when the device has one)."""
        if not 0 <= slot < 8 or alg not in ALGS:
            raise ValueError("bad slot or algorithm")
        der = bytes(der)
        els = der_elements(der)
        if check_key:
            pub = self.public_key(alg)
            off, ln = els[-1]
            if pub is not None and (b"\x04" + pub) not in der[off:off + ln]:
                raise ValueError("leaf certificate does not hold the device key")
        self._recover()
        try:
            self._slots("install", _SLOT % (slot, alg), der, at_boot)
        finally:
            self._drop(slot, alg)

    def delete_chain(self, slot, alg, at_boot=False):
        self._recover()
        had = self.storage.exists(_SLOT % (slot, alg))
        try:
            self._slots("erase", _SLOT % (slot, alg), at_boot)
        finally:
            self._drop(slot, alg)
        return had

    def _drop(self, slot, alg):
        self._masks.pop(alg, None)
        self._kp.pop((slot, alg), None)
        for k in list(self._dig):
            if k[0] == slot and k[1] == alg:
                del self._dig[k]
        if self._last is not None and self._last[0][0] == slot and self._last[0][1] == alg:
            self._last = None

    def provisioned_mask(self, alg):
        """Bit N set when slot N holds a chain that can be used: the key for
        `alg` is present and in range, the chain parses and its leaf holds
        that key.  A damaged slot counts as not provisioned (the reason is in
        self.problems, logged at boot) instead of failing at CHALLENGE."""
        m = self._masks.get(alg)
        if m is None:
            self._recover()
            names = self.storage.list("uspdm")
            m = 0
            for s in range(8):
                if ("slot%d_%s.der" % (s, alg)) in names:
                    m |= 1 << s
            if m:
                m = self._usable(alg, m)
            self._masks[alg] = m
        return m

    def _usable(self, alg, m):
        probs = self.problems
        for k in list(probs):
            if k[0] == alg:
                del probs[k]
        c = _curve(alg)
        raw = self.storage.read(_KEY % alg)
        why = None
        if raw is None:
            why = "missing"
        elif len(raw) != c.size:
            why = "%d bytes, not %d" % (len(raw), c.size)
        elif not 0 < int.from_bytes(raw, "big") < c.n:
            why = "not a valid private key (zero or not below the curve order)"
        if why is not None:
            probs[(alg, -1)] = "%s: %s; its slots are not usable (run `uspdm provision --new-key`)" % (
                _KEY % alg, why)
            self._keys.pop(alg, None)
            return 0
        pub = None
        for s in range(8):
            if not m & (1 << s):
                continue
            der = self.chain(s, alg) or b""
            try:
                els = der_elements(der)
                off, ln = els[-1]
                if self.key_pair_of(s, alg) == 1:   # the device key (not the slot's own pair)
                    if pub is None:
                        q = self.leaf_key(alg, der)
                        if q is None:
                            raise ValueError("its leaf certificate holds no %s key" % alg)
                        pub = b"\x04" + bytes(q)
                    if pub not in der[off:off + ln]:
                        raise ValueError("its leaf certificate does not hold the device key")
            except ValueError as e:
                probs[(alg, s)] = "%s: %s; slot %d reported as not provisioned" % (_SLOT % (s, alg), e, s)
                m &= ~(1 << s)
        return m

    def chain_digest(self, slot, alg, hashname):
        """Hash(SPDM cert chain buffer) for DIGESTS/CHALLENGE_AUTH/KEY_EXCHANGE_RSP, or None;
        kept per slot (the buffer itself is rebuilt from flash when needed)."""
        d = self._dig.get((slot, alg, hashname))
        if d is None:
            v = self.chain_buffer(slot, alg, hashname)
            return v[1] if v is not None else None
        return d

    def chain_buffer(self, slot, alg, hashname):
        """(SPDM cert chain buffer, Hash(buffer)) for the negotiated hash, or None.
        Only the last one used stays cached (a chain is ~1 KB of heap)."""
        k = (slot, alg, hashname)
        last = self._last
        if last is not None and last[0] == k:
            return last[1]
        self._last = None
        der = self.chain(slot, alg)
        if der is None:
            return None
        from uspdm.crypto import sha2

        off, ln = der_elements(der)[0]
        root_hash = sha2.new(hashname, der[off:off + ln]).digest()
        total = 4 + len(root_hash) + len(der)
        if total > 0xFFFF:
            return None
        buf = p16(total) + b"\x00\x00" + root_hash + der
        der = None
        d = self._dig.get(k)
        if d is None:
            d = self._dig[k] = sha2.new(hashname, buf).digest()
        v = (buf, d)
        self._last = (k, v)
        return v
