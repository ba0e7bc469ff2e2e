"""GET_DIGESTS and GET_CERTIFICATE (loaded on demand by uspdm.responder).

SPDM 1.3 multi-key connection (r.mk, negotiated in NEGOTIATE_ALGORITHMS):
DIGESTS = header, Digest[n], KeyPairID[n] (u8), CertificateInfo[n] (u8),
KeyUsageMask[n] (u16), n = provisioned slots in slot order (libspdm's
layout); CERTIFICATE Param2 = the slot's CertificateInfo.  The last DIGESTS
outside a session is kept as D for the KEY_EXCHANGE transcript."""
from uspdm.compat import const, p16, u16

# DSP0274 codes used here (private: compiled in, not in the module's dict)
_CAP_CERT = const(0x02)
_CERTIFICATE = const(0x02)
_DIGESTS = const(0x01)
_ERR_INVALID_REQUEST = const(0x01)
_ERR_UNEXPECTED_REQUEST = const(0x04)
_ERR_UNSPECIFIED = const(0x05)
_GET_CERTIFICATE = const(0x82)
_GET_DIGESTS = const(0x81)
_V13 = const(0x13)

_ST_NEG = const(3)
_CERT_MODEL_DEVICE = const(1)   # CertificateInfo: DeviceCert model (no ALIAS_CERT_CAP here)
_KEY_USAGE = const(0x0007)      # KeyUsageMask: KeyExUse | ChallengeUse | MeasurementUse


def get_digests(r, msg):
    if not (r._local() & _CAP_CERT):
        return r._unsupported(_GET_DIGESTS)
    if r.state < _ST_NEG:
        return r._error(_ERR_UNEXPECTED_REQUEST)
    mask = r._slot_mask()
    v = r.version
    if not mask and v < _V13:
        # nothing provisioned for this algorithm (1.3 can say so with an empty mask)
        return r._unsupported(_GET_DIGESTS)
    parts = [bytes((v, _DIGESTS, r.cfg.supported_slots if v >= _V13 else 0, mask))]
    for s in range(8):
        if mask & (1 << s):
            cd = r.identity.chain_digest(s, r.asym, r.hashname)   # (no chain buffer on the heap)
            if cd is None:
                return r._error(_ERR_UNSPECIFIED)
            parts.append(cd)
    mk = v >= _V13 and r.mk
    if mk:
        # SPDM 1.3 multi-key connection: KeyPairID[n], CertificateInfo[n] and
        # KeyUsageMask[n] (u16) of each provisioned slot, in slot order
        slots = [s for s in range(8) if mask & (1 << s)]
        parts.append(bytes([r.identity.key_pair_of(s, r.asym) for s in slots]))
        parts.append(bytes([_CERT_MODEL_DEVICE] * len(slots)))
        parts.append(p16(_KEY_USAGE) * len(slots))
    resp = b"".join(parts)
    err = r._size_err(len(resp))
    if err is not None:
        return err
    h = r.t.fresh_m1()   # GET_DIGESTS resets B
    h.update(msg[:4])
    h.update(resp)
    r.t.commit_m1(h)
    if mk and getattr(r, "cur_session", None) is None:
        r.dig_d = resp   # D: part of the TH of the next KEY_EXCHANGE (libspdm message_d)
    return resp


def get_certificate(r, msg):
    if not (r._local() & _CAP_CERT):
        return r._unsupported(_GET_CERTIFICATE)
    if r.state < _ST_NEG:
        return r._error(_ERR_UNEXPECTED_REQUEST)
    if len(msg) < 8:
        return r._error(_ERR_INVALID_REQUEST)
    v = r.version
    slot = msg[2] & 0x0F
    if slot >= 8:
        return r._error(_ERR_INVALID_REQUEST)
    offset = u16(msg, 4)
    length = u16(msg, 6)
    provisioned = (r._slot_mask() >> slot) & 1
    if v >= _V13 and msg[3] & 0x01:  # SlotSizeRequested: size of the chain only
        if not provisioned and not (r.cfg.supported_slots >> slot) & 1:
            return r._error(_ERR_INVALID_REQUEST)
        offset = 0
        length = 0
        if not provisioned:
            resp = bytes((v, _CERTIFICATE, slot, 0, 0, 0, 0, 0))   # CertificateInfo 0: no certificate
            h = r.t.fork_m1()
            h.update(msg[:8])
            h.update(resp)
            r.t.commit_m1(h)
            return resp
    elif not provisioned:
        return r._error(_ERR_INVALID_REQUEST)
    ident = r.identity
    ci = ident.chain_info(slot, r.asym, r.hashname)   # (length, root hash, digest): kept, small
    if ci is None:
        return r._error(_ERR_UNSPECIFIED)
    total = ci[0]
    if offset >= total:
        return r._error(_ERR_INVALID_REQUEST)
    if r._chunking():
        room = min(r.req_max, r.cfg.max_spdm_msg_size) - 8
    else:
        room = r.cfg.data_transfer_size - 8
        if r.req_dts:
            room = min(room, r.req_dts - 8)
    portion = min(length, total - offset, max(room, 0))
    info = _CERT_MODEL_DEVICE if v >= _V13 and r.mk else 0   # 1.3 multi-key: CertificateInfo
    n = 8 + portion
    err = r._size_err(n)
    if err is not None:
        return err
    # built once: in the board's response buffer (the answer is sent before the next
    # request), else in one block of its own; the portion is read from storage straight
    # into it (the chain is never on the heap)
    rb = r.cfg.rsp_buffer
    if rb is not None and n <= len(rb):
        resp = memoryview(rb)[0:n]
    else:
        resp = bytearray(n)
    resp[0:4] = bytes((v, _CERTIFICATE, slot, info))
    resp[4:6] = p16(portion)
    resp[6:8] = p16(total - offset - portion)
    if not ident.chain_read(slot, r.asym, r.hashname, offset, memoryview(resp)[8:n]):
        return r._error(_ERR_UNSPECIFIED)
    h = r.t.fork_m1()
    h.update(msg[:8])
    h.update(resp)
    r.t.commit_m1(h)
    return resp
