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
(`Length u16 | Reserved u16 | RootHash[H] | certificates`) is never built
on a board: its length, root hash and digest are derived on demand for the
negotiated hash by reading the chain from storage in 256-byte pieces and
kept (~100 B per slot and hash used); GET_CERTIFICATE reads the portion
asked for (chain_read) straight into its response.
The private key never leaves the device: there is no API that returns it in
any serialised form other than `private_key()` for the local signer.
"""
from uspdm.compat import p16, read_into_from

ALGS = ("p384", "p256")
_KEY = "uspdm/key_%s.bin"
_SLOT = "uspdm/slot%d_%s.der"
_KP = "uspdm/kp%d_%s.bin"
KEY_PAIRS = 9   # KeyPairID 1 (device key) and 2..9 (slot 0..7's own)


def _curve(alg):
    from uspdm.crypto import ec

    if alg == "p384":
        return ec.P384
    if alg == "p256":
        return ec.P256
    raise ValueError("unknown algorithm")


def _admin():
    from uspdm import identity_admin

    return identity_admin


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
        self._dig = {}   # (slot, alg, hashname) -> (length, root hash, digest) of the chain buffer
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

    # keys and slots written, and the boot-time checks: ensure_key(alg) (the device key
    # for `alg`, generated with the DRBG and stored the first time; returns X||Y),
    # set_private_key(alg, d), leaf_key(alg, der), check_keys_iter(), set_key_pair(kp,
    # alg, d, pub), drop_key_pair(kp, alg), install_chain(slot, alg, der, check_key=True,
    # at_boot=False), delete_chain(slot, alg, at_boot=False): uspdm.identity_admin's
    # functions of those names, imported when called (not resident on a board while it
    # serves; one lookup method instead of a method each keeps the class small)
    def __getattr__(self, name):
        if name not in ("ensure_key", "set_private_key", "leaf_key", "check_keys_iter", "set_key_pair",
                        "drop_key_pair", "install_chain", "delete_chain"):
            raise AttributeError(name)
        f = getattr(_admin(), name)
        return lambda *a, **k: f(self, *a, **k)

    def keys_unchecked(self):
        return bool(self._unchecked)

    # certificate chains ---------------------------------------------------
    def chain(self, slot, alg):
        if not 0 <= slot < 8:
            return None
        self._recover()
        return self.storage.read(_SLOT % (slot, alg))

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
                m = _admin().usable(self, alg, m)
            self._masks[alg] = m
        return m

    def chain_digest(self, slot, alg, hashname):
        """Hash(SPDM cert chain buffer) for DIGESTS/CHALLENGE_AUTH/KEY_EXCHANGE_RSP, or None."""
        v = self.chain_info(slot, alg, hashname)
        return v[2] if v is not None else None

    def chain_info(self, slot, alg, hashname):
        """(length, root hash, digest) of slot's SPDM cert chain buffer for the
        negotiated hash, or None.  Computed once per (slot, alg, hash) by reading
        the chain from storage in small pieces (never the whole chain nor the
        buffer on the heap) and kept: ~100 B each."""
        k = (slot, alg, hashname)
        v = self._dig.get(k)
        if v is not None:
            return v
        if not 0 <= slot < 8:
            return None
        self._recover()
        # computed once per (slot, alg, hash) by uspdm.chain_info, loaded for the call
        # and dropped again (not resident on a board while it serves)
        from uspdm import demand

        try:
            v = demand.need("chain_info").compute(self, _SLOT % (slot, alg), hashname)
        finally:
            demand.drop("chain_info", collect=False)
        if v is not None:
            self._dig[k] = v
        return v

    def _read(self, name, offset, buf):
        ri = getattr(self.storage, "read_into", None)
        if ri is not None:
            return ri(name, offset, buf)
        return read_into_from(self.storage.read(name), offset, buf)

    def chain_read(self, slot, alg, hashname, offset, buf):
        """Fill buf (writable, e.g. a memoryview of the response being built)
        with the SPDM cert chain buffer's bytes from `offset`, read from storage
        for the part asked only.  False when the chain is not there (or not as
        long as chain_info() says)."""
        v = self.chain_info(slot, alg, hashname)
        if v is None:
            return False
        total, root_hash, _ = v
        n = len(buf)
        if offset + n > total:
            return False
        o = 0
        hl = 4 + len(root_hash)
        if offset < hl:
            head = p16(total) + b"\x00\x00" + root_hash
            o = min(n, hl - offset)
            buf[0:o] = head[offset:offset + o]
        if o < n:
            mv = memoryview(buf)
            got = self._read(_SLOT % (slot, alg), offset + o - hl, mv[o:n])
            if got != n - o:
                return False
        return True

    def chain_buffer(self, slot, alg, hashname):
        """(SPDM cert chain buffer, Hash(buffer)), or None: the whole buffer, built
        for the caller (host tools and tests; a board serves GET_CERTIFICATE
        with chain_read(), a portion at a time)."""
        v = self.chain_info(slot, alg, hashname)
        if v is None:
            return None
        buf = bytearray(v[0])
        if not self.chain_read(slot, alg, hashname, 0, buf):
            return None
        return bytes(buf), v[2]
