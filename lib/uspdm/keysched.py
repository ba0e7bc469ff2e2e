"""SPDM 1.1-1.3 session key schedule (DSP0274 "Key schedule"), as libspdm reads it.

    bin_concat(version, length, label, context=b'')
        = u16 LE length || "spdm1.N " || label || context

    ks = KeySchedule('sha384', 0x12)
    ks.handshake(ikm, th1_hash, psk=False)   # DHE X coordinate or the PSK
    ks.req_finished / ks.rsp_finished        # HMAC keys of the verify data
    ks.hs_keys()                             # (req (key, iv), rsp (key, iv)) handshake
    ks.application(th2_hash)                 # req/rsp application secrets
    ks.app_keys()                            # (req (key, iv), rsp (key, iv))
    ks.update_secret(secret)                 # "traffic upd" step of KEY_UPDATE
    ks.wipe()                                # overwrite every secret it holds

    d = Direction(key, iv)    # one direction's AEAD key, IV and sequence number (uspdm.secured
                              # seals and opens with it; the AEAD is imported at first use)

HandshakeSecret = HKDF-Extract(salt_0, IKM): salt_0 is H zero bytes, except
for a PSK session at SPDM 1.3 or later, where it is H bytes of 0xFF (libspdm's
device-secret sample and DSP0274 1.3).  MasterSecret = Extract(salt_1, 0^H)
with salt_1 = Expand(HandshakeSecret, BinConcat(H, "derived"), H).
Every secret is a bytearray (derived in place by hkdf.expand_into) so
wipe() can overwrite it; scrub_heap() clears what garbage still holds.
"""
from uspdm.crypto import hkdf, sha2

AEAD_KEY_SIZE = 32  # AES-256-GCM
AEAD_IV_SIZE = 12


def version_label(version):
    """b'spdm1.N ' for the negotiated SPDM version byte 0x1N."""
    return b"spdm" + bytes((0x30 + (version >> 4), 0x2E, 0x30 + (version & 0x0F), 0x20))


def bin_concat(version, length, label, context=b""):
    return bytes((length & 0xFF, (length >> 8) & 0xFF)) + version_label(version) + label + context


def wipe(buf):
    """Overwrite a bytearray in place (no-op for None / immutable bytes)."""
    if isinstance(buf, bytearray):
        buf[0:len(buf)] = bytes(len(buf))


SCRUB_MAX = 512 * 1024  # bytes: all of an RP2040's or ESP32's internal heap


def scrub_heap():
    """Overwrite the garbage of the MicroPython heap: collect, then allocate
    every free block once (the allocator zeroes what it hands out) and let
    it all go.  Copies of secrets that only garbage still holds (digests
    returned as bytes, big ints of the EC code, a C cipher object) are gone
    afterwards.  Runs at the end of a session (END_SESSION, expiry, reset);
    a no-op on CPython.  The heap is full for the moment this takes (about
    3 M instructions on the emulated Cortex-M0, ~30 ms on an RP2040):
    nothing else allocates meanwhile on a single-threaded device.  At most SCRUB_MAX bytes are allocated: the
    allocator is first-fit, so on a bigger heap (PSRAM) the low part, where
    short-lived objects live, is what gets cleared."""
    import sys

    # CPython: nothing to do; wasm: its heap grows on demand and its
    # gc.collect() inside a call frees nothing (a simulator, not a board)
    if sys.implementation.name != "micropython" or sys.platform == "webassembly":
        return
    import gc

    gc.collect()
    budget = SCRUB_MAX
    head = None
    n = 4096
    was = gc.isenabled()
    gc.disable()  # a failed allocation then fails at once instead of collecting first
    try:
        while n and budget > 0:
            try:
                head = (head, bytearray(n))
                budget -= n
            except MemoryError:
                n >>= 1
        try:
            while budget > 0:  # single blocks: the links alone
                head = (head,)
                budget -= 16
        except MemoryError:
            pass
    finally:
        head = None
        if was:
            gc.enable()
    gc.collect()


class KeySchedule:
    def __init__(self, hashname, version, key_size=AEAD_KEY_SIZE, iv_size=AEAD_IV_SIZE):
        self.hashname = hashname
        self.version = version
        self.h = sha2.digest_size(hashname)
        self.key_size = key_size
        self.iv_size = iv_size
        self.hs = None          # HandshakeSecret
        self.req_hs = None
        self.rsp_hs = None
        self.req_finished = None
        self.rsp_finished = None
        self.req_app = None
        self.rsp_app = None

    def _expand(self, secret, label, context, length):
        return hkdf.expand_into(self.hashname, secret, bin_concat(self.version, length, label, context),
                                bytearray(length))

    def salt0(self, psk):
        if psk and self.version >= 0x13:
            return b"\xff" * self.h
        return bytes(self.h)

    def handshake(self, ikm, th1_hash, psk=False):
        """Derive HandshakeSecret from the DHE secret (or PSK), then the
        per-direction handshake secrets and finished keys from Hash(TH1)."""
        self.hs = bytearray(hkdf.extract(self.hashname, self.salt0(psk), ikm))
        h = self.h
        self.req_hs = self._expand(self.hs, b"req hs data", th1_hash, h)
        self.rsp_hs = self._expand(self.hs, b"rsp hs data", th1_hash, h)
        self.req_finished = self._expand(self.req_hs, b"finished", b"", h)
        self.rsp_finished = self._expand(self.rsp_hs, b"finished", b"", h)

    def key_iv(self, secret):
        return (self._expand(secret, b"key", b"", self.key_size), self._expand(secret, b"iv", b"", self.iv_size))

    def hs_keys(self):
        return self.key_iv(self.req_hs), self.key_iv(self.rsp_hs)

    def application(self, th2_hash):
        """Master secret and the application secrets from Hash(TH2); the
        handshake secrets are wiped (they are not needed any more)."""
        h = self.h
        salt1 = self._expand(self.hs, b"derived", b"", h)
        master = bytearray(hkdf.extract(self.hashname, salt1, bytes(h)))
        self.req_app = self._expand(master, b"req app data", th2_hash, h)
        self.rsp_app = self._expand(master, b"rsp app data", th2_hash, h)
        wipe(salt1)
        wipe(master)
        for b in (self.hs, self.req_hs, self.rsp_hs, self.req_finished, self.rsp_finished):
            wipe(b)
        self.hs = self.req_hs = self.rsp_hs = self.req_finished = self.rsp_finished = None

    def app_keys(self):
        return self.key_iv(self.req_app), self.key_iv(self.rsp_app)

    def update_secret(self, secret):
        """KEY_UPDATE: next application secret of one direction."""
        return self._expand(secret, b"traffic upd", b"", self.h)

    def wipe(self):
        for b in (self.hs, self.req_hs, self.rsp_hs, self.req_finished, self.rsp_finished, self.req_app,
                  self.rsp_app):
            wipe(b)
        self.hs = self.req_hs = self.rsp_hs = self.req_finished = self.rsp_finished = None
        self.req_app = self.rsp_app = None


MAX_SEQ = 0xFFFFFFFFFFFFFFFF   # a direction's sequence-number limit (DSP0277: 64 bits, never wraps)


class Direction:
    """AEAD key, IV and counter of one direction; `backup` holds the previous
    key state during a KEY_UPDATE until it is verified."""

    def __init__(self, key, iv, max_seq=MAX_SEQ, big=False):
        self.key = key
        self.iv = iv
        self.seq = 0
        self.max_seq = max_seq
        self.big = big  # counter XORed big-endian into the IV's last 8 bytes (DSP0277 1.0/1.1 peers only)
        self._gcm = None

    def gcm(self):
        if self._gcm is None:
            from uspdm.crypto.gcm import AesGcm

            self._gcm = AesGcm(self.key)
        return self._gcm

    def nonce(self, seq):
        n = bytearray(self.iv)
        last = len(n) - 1
        for i in range(8):
            if self.big:
                n[last - i] ^= (seq >> (8 * i)) & 0xFF
            else:
                n[i] ^= (seq >> (8 * i)) & 0xFF
        return bytes(n)

    def wipe(self):
        for b in (self.key, self.iv):
            if isinstance(b, bytearray):
                b[0:len(b)] = bytes(len(b))
        if self._gcm is not None:
            self._gcm.wipe()  # AES key schedule and GHASH table
        self._gcm = None
