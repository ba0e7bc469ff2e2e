"""Secured SPDM messages (DSP0277) with the MCTP binding (DSP0276).

Wire form of one message (the body after the MCTP type byte 0x06):

    SessionID u32 | SeqNum u16 | Length u16 | AEAD{ AppDataLength u16 | AppData | pad } | MAC[16]

- AppData over MCTP is the inner MCTP message: 0x05 followed by the SPDM message.
- SeqNum is the low 16 bits of a 64-bit per-direction, per-key counter that
  starts at 0 and never wraps; the AEAD nonce is the IV with the full counter
  XORed in little endian (iv[i] ^= counter >> 8i, i = 0..7): the only
  encoding DSP0277 1.2 allows, and libspdm's default for 1.0/1.1 (which leave
  the byte order open).  Direction(big=True) XORs it big endian into the last
  8 bytes instead (libspdm's optional setting for secured-message 1.0/1.1;
  the session layer follows such a peer, like libspdm's "decode both", only
  when the session negotiated secured-message version 1.0 or 1.1).
- Length = len(ciphertext) + 16; AAD = SessionID || SeqNum || Length.
- Random padding (1..32 bytes, as libspdm's MCTP transport) is stripped by
  the receiver using AppDataLength.
- MAC-only sessions (no ENCRYPT_CAP): AAD = the header and the AppData in the
  clear, no AppDataLength, no padding.

    d = Direction(key, iv)                 # one per direction and key
    body = encode(session_id, d, app, pad) # pad = random bytes (may be b'')
    app = decode(session_id, d, body)      # SecuredError on any failure

The counter of a direction advances on every encode/decode attempt, as in
libspdm, so a failed message also consumes its sequence number.

The AEAD (uspdm.crypto.gcm, with AES and its kernels) is imported when a
direction first seals or opens a message, not with this module (on the
board uspdm.session_gate loads it as a demand module of its own).
"""
from uspdm.compat import u16
from uspdm.keysched import Direction  # noqa: F401 (a session's keys: made before this module is needed)

TAG = 16
HDR = 8          # SessionID u32 + SeqNum u16 + Length u16 (MCTP binding)
SEQ_SIZE = 2
MAX_SEQ = 0xFFFFFFFFFFFFFFFF   # (uspdm.keysched.MAX_SEQ)
MAX_PAD = 32


class SecuredError(Exception):
    """A secured message that cannot be accepted (bad size, wrong session or
    sequence number, authentication failure, counter exhausted)."""


def _hdr(session_id, seq, length):
    return bytes((session_id & 0xFF, (session_id >> 8) & 0xFF, (session_id >> 16) & 0xFF,
                  (session_id >> 24) & 0xFF, seq & 0xFF, (seq >> 8) & 0xFF, length & 0xFF, (length >> 8) & 0xFF))


def session_id_of(body):
    """SessionID of a secured message body, or None when it is too short."""
    if len(body) < 4:
        return None
    return body[0] | (body[1] << 8) | (body[2] << 16) | (body[3] << 24)


def encode(session_id, d, app, pad=b"", mac_only=False, pre=b"", buf=None):
    """The secured message carrying AppData = pre || app (pre: the MCTP
    message type byte of the inner message), built and sealed in one
    bytearray (AEAD in place: no copy of the message on the way).  buf: a
    bytearray allocated once (the board's, at boot) to build it in when it is
    large enough: the result is then a memoryview of it, valid until the next
    encode with the same buffer."""
    seq = d.seq
    if seq >= d.max_seq:
        raise SecuredError("sequence number exhausted")
    na = len(pre) + len(app)
    npt = na if mac_only else 2 + na + len(pad)
    total = HDR + npt + TAG
    if buf is not None and total <= len(buf):
        out = memoryview(buf)[0:total]
    else:
        out = bytearray(total)
    # the counter advances once the message can be built: out of memory above, the
    # requester's answer (ERROR Busy) still carries the sequence number it expects
    d.seq = seq + 1
    out[0:HDR] = _hdr(session_id, seq, npt + TAG)
    o = HDR
    if not mac_only:
        out[HDR] = na & 0xFF
        out[HDR + 1] = na >> 8
        o = HDR + 2
    out[o:o + len(pre)] = pre
    o += len(pre)
    out[o:o + len(app)] = app
    o += len(app)
    if mac_only:
        d.gcm().seal_into(d.nonce(seq), out[0:o], out, o, 0)
    else:
        out[o:o + len(pad)] = pad
        d.gcm().seal_into(d.nonce(seq), out[0:HDR], out, HDR, npt)
    return out


def decode(session_id, d, body, mac_only=False):
    seq = d.seq
    if seq >= d.max_seq:
        raise SecuredError("sequence number exhausted")
    d.seq = seq + 1
    if len(body) < HDR + TAG:
        raise SecuredError("secured message too short")
    if session_id_of(body) != session_id:
        raise SecuredError("wrong session ID")
    if u16(body, 4) != (seq & 0xFFFF):
        raise SecuredError("unexpected sequence number")
    length = u16(body, 6)
    if length < TAG or length > len(body) - HDR:
        raise SecuredError("bad Length")
    end = HDR + length
    try:
        if mac_only:
            d.gcm().open(d.nonce(seq), body[:end - TAG], body[end - TAG:end])
            return bytes(body[HDR:end - TAG])
        pt = d.gcm().open(d.nonce(seq), body[:HDR], body[HDR:end])
    except ValueError:   # uspdm.crypto.gcm.AuthenticationError
        raise SecuredError("authentication failed")
    if len(pt) < 2:
        raise SecuredError("no AppDataLength")
    n = u16(pt, 0)
    if n > len(pt) - 2:
        raise SecuredError("AppDataLength beyond the plaintext")
    return pt[2:2 + n]
