"""The rarely used half of uspdm.identity: keys and certificate slots written
(provisioning, GET_CSR/SET_CERTIFICATE), and the boot-time checks of the
provisioned keys and chains.  Identity's methods of the same names import this
module when called; a board drops it once booted (firmware/device.py BOOT_ONLY),
so it is not resident while serving (about 3 KB of heap with the stock load).

The device key as the leaf certificates hold it.  Computing d*G at every boot costs a fixed-base scalar multiplication per
curve (about 74 M + 30 M instructions on the emulated Cortex-M0), so the
boot takes the public key from the provisioned leaf certificate instead.
Whether it is d*G is checked once, in slices (check_keys_iter, the
board's background work), and the result kept on the flash as
keychk_<alg>.bin = SHA-256("uspdm-keychk" | d | X||Y)[:16]: a later
boot with the same key and leaf finds it and computes nothing.  Until
the check ran (the first boot after provisioning), slots whose leaf
holds the certificate's key count as provisioned; a leaf that does not
hold d*G only makes signatures that do not verify (nothing leaks), and
the check then reports it and takes the slots out.
"""
from uspdm.identity import _KEY, _KP, _SLOT, ALGS, KEY_PAIRS, _curve, der_elements

_KEYCHK = "uspdm/keychk_%s.bin"   # proof that key_<alg>.bin's d*G was checked once (see leaf_key)
# DER prefix of a leaf's SubjectPublicKeyInfo up to the uncompressed point 04||X||Y
_SPKI = {
    "p384": b"\x30\x76\x30\x10\x06\x07\x2a\x86\x48\xce\x3d\x02\x01\x06\x05\x2b\x81\x04\x00\x22"
            b"\x03\x62\x00\x04",
    "p256": b"\x30\x59\x30\x13\x06\x07\x2a\x86\x48\xce\x3d\x02\x01\x06\x08\x2a\x86\x48\xce\x3d"
            b"\x03\x01\x07\x03\x42\x00\x04",
}


def ensure_key(ident, alg):
    """Make sure the device key for `alg` exists (generated with the DRBG
    and stored the first time); returns its public key X||Y (never the
    private key, so a REPL echo over mpremote cannot leak it)."""
    ensure(ident, alg)
    return ident.public_key(alg)


def ensure(ident, alg):
    d = ident._keys.get(alg)
    if d is not None:
        return d
    raw = ident.storage.read(_KEY % alg)
    if raw is None:
        from uspdm.crypto import ec

        if ident.drbg is None:
            raise ValueError("no DRBG to generate a key")
        d = ec.generate_private_key(_curve(alg), ident.drbg.generate)
        ident.storage.write(_KEY % alg, d.to_bytes(_curve(alg).size, "big"))
    else:
        d = int.from_bytes(raw, "big")
    ident._keys[alg] = d
    return d


def set_private_key(ident, alg, d):
    """Provision an externally generated key (tests, or a lab that injects keys)."""
    c = _curve(alg)
    ident.storage.write(_KEY % alg, d.to_bytes(c.size, "big"))
    ident._keys[alg] = d
    ident._pubs.pop(alg, None)
    ident._unchecked.pop(alg, None)
    ident._masks.pop(alg, None)


def chk_tag(ident, alg, pub):
    from uspdm.crypto import sha2

    d = ident.private_key(alg)
    return sha2.new("sha256", b"uspdm-keychk" + d.to_bytes(_curve(alg).size, "big") + pub).digest()[:16]


def leaf_pub(ident, alg, der):
    """X||Y from the leaf's SubjectPublicKeyInfo (the last certificate of der), or None."""
    off, ln = der_elements(der)[-1]
    pre = _SPKI[alg]
    i = der.find(pre, off, off + ln)
    sz = 2 * _curve(alg).size
    if i < 0 or i + len(pre) + sz > off + ln:
        return None
    i += len(pre)
    return der[i:i + sz]


def leaf_key(ident, alg, der):
    """The device key for alg as far as boot needs it: d*G when known,
    else the leaf certificate's key (checked against d*G once, later)."""
    q = ident._pubs.get(alg)
    if q is not None:
        return q
    q = ident._unchecked.get(alg)
    if q is not None:
        return q
    q = leaf_pub(ident, alg, der)
    if q is None:
        return None
    if ident.storage.read(_KEYCHK % alg) == chk_tag(ident, alg, q):
        ident._pubs[alg] = q
    else:
        ident._unchecked[alg] = q
    return q


def check_keys_iter(ident):
    """Check the leaf certificates' keys against d*G in slices (a
    generator: one fixed-base comb slice per next()); on a match the
    result is kept on the flash, on a mismatch the slots are rebuilt
    (ident.problems says why).  Returns the algorithms that failed."""
    from uspdm.crypto import ec

    bad = []
    for alg in list(ident._unchecked):
        q = ident._unchecked.get(alg)
        d = ident.private_key(alg)
        if q is None or d is None:
            continue
        real = yield from ec.public_key_iter(_curve(alg), d)
        ident._unchecked.pop(alg, None)
        ident._pubs[alg] = real
        if real == q:
            try:
                ident.storage.write(_KEYCHK % alg, chk_tag(ident, alg, q))
            except Exception:
                pass   # checked again at the next boot
        else:
            bad.append(alg)
            ident._masks.pop(alg, None)
            ident.provisioned_mask(alg)
    return bad


def set_key_pair(ident, kp, alg, d, pub):
    """Store a key pair made on the board (GET_CSR with a new KeyPairID)."""
    n = _curve(alg).size
    ident.storage.write(_KP % (kp, alg), d.to_bytes(n, "big") + bytes(pub))
    ident._kp.clear()
    ident._masks.pop(alg, None)


def drop_key_pair(ident, kp, alg):
    """Retire slot kp - 2's own key pair (its chain no longer uses it)."""
    if 2 <= kp <= KEY_PAIRS and ident.storage.exists(_KP % (kp, alg)):
        ident.storage.delete(_KP % (kp, alg))
    ident._kp.clear()
    ident._masks.pop(alg, None)


def install_chain(ident, slot, alg, der, check_key=True, at_boot=False):
    """Store a chain (DER certificates concatenated, root first), power-fail
    safe (uspdm.enroll); at_boot: it takes effect at the next boot.  With
    check_key, the leaf must carry this device's public key for `alg`
    (when the device has one)."""
    if not 0 <= slot < 8 or alg not in ALGS:
        raise ValueError("bad slot or algorithm")
    der = bytes(der)
    els = der_elements(der)
    if check_key:
        pub = ident.public_key(alg)
        off, ln = els[-1]
        if pub is not None and (b"\x04" + pub) not in der[off:off + ln]:
            raise ValueError("leaf certificate does not hold the device key")
    ident._recover()
    try:
        ident._slots("install", _SLOT % (slot, alg), der, at_boot)
    finally:
        drop(ident, slot, alg)


def delete_chain(ident, slot, alg, at_boot=False):
    ident._recover()
    had = ident.storage.exists(_SLOT % (slot, alg))
    try:
        ident._slots("erase", _SLOT % (slot, alg), at_boot)
    finally:
        drop(ident, slot, alg)
    return had


def drop(ident, slot, alg):
    ident._masks.pop(alg, None)
    ident._kp.pop((slot, alg), None)
    for k in list(ident._dig):
        if k[0] == slot and k[1] == alg:
            del ident._dig[k]


def usable(ident, alg, m):
    probs = ident.problems
    for k in list(probs):
        if k[0] == alg:
            del probs[k]
    c = _curve(alg)
    raw = ident.storage.read(_KEY % alg)
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
        ident._keys.pop(alg, None)
        return 0
    pub = None
    for s in range(8):
        if not m & (1 << s):
            continue
        der = ident.chain(s, alg) or b""
        try:
            els = der_elements(der)
            off, ln = els[-1]
            if ident.key_pair_of(s, alg) == 1:   # the device key (not the slot's own pair)
                if pub is None:
                    q = leaf_key(ident, alg, der)
                    if q is None:
                        raise ValueError("its leaf certificate holds no %s key" % alg)
                    pub = b"\x04" + bytes(q)
                if pub not in der[off:off + ln]:
                    raise ValueError("its leaf certificate does not hold the device key")
        except ValueError as e:
            probs[(alg, s)] = "%s: %s; slot %d reported as not provisioned" % (_SLOT % (s, alg), e, s)
            m &= ~(1 << s)
    return m
