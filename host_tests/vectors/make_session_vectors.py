"""Generate host_tests/vectors/spdm_session.txt: SPDM session key-schedule and
secured-message vectors computed with the `cryptography` package only
(HKDF-Expand, HMAC, AES-256-GCM), following DSP0274 1.1-1.3 "Key schedule"
and DSP0277/DSP0276 (MCTP: 2-byte sequence number, little-endian counter
XORed into the IV).  Inputs are pseudo-random (random.Random(274)); these
are NOT published vectors, they pin our lib/ code to an independent one.

    .venv/bin/python host_tests/vectors/make_session_vectors.py
"""
import os
import random
import struct

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

HERE = os.path.dirname(os.path.abspath(__file__))
ALG = {"sha384": (hashes.SHA384, 48), "sha256": (hashes.SHA256, 32)}


def mac(hn, key, data):
    m = hmac.HMAC(key, ALG[hn][0]())
    m.update(data)
    return m.finalize()


def exp(hn, prk, info, n):
    return HKDFExpand(ALG[hn][0](), n, info).derive(prk)


def bc(v, n, label, ctx=b""):
    return struct.pack("<H", n) + ("spdm%d.%d " % (v >> 4, v & 15)).encode() + label + ctx


def main():
    rnd = random.Random(274)
    rb = lambda n: bytes(rnd.getrandbits(8) for _ in range(n))  # noqa: E731
    out = ["# SPDM session key schedule and secured-message vectors, computed with the `cryptography`",
           "# package by host_tests/vectors/make_session_vectors.py (not published vectors).", ""]
    for hn in ("sha384", "sha256"):
        H = ALG[hn][1]
        for v in (0x11, 0x12, 0x13):
            for psk in (False, True):
                ikm = rb(48) if not psk else rb(20)
                th1, th2 = rb(H), rb(H)
                salt0 = (b"\xff" if psk and v >= 0x13 else b"\x00") * H
                hs = mac(hn, salt0, ikm)
                req_hs = exp(hn, hs, bc(v, H, b"req hs data", th1), H)
                rsp_hs = exp(hn, hs, bc(v, H, b"rsp hs data", th1), H)
                salt1 = exp(hn, hs, bc(v, H, b"derived"), H)
                master = mac(hn, salt1, b"\x00" * H)
                req_app = exp(hn, master, bc(v, H, b"req app data", th2), H)
                rsp_app = exp(hn, master, bc(v, H, b"rsp app data", th2), H)
                upd = exp(hn, req_app, bc(v, H, b"traffic upd"), H)
                rec = {
                    "ikm": ikm, "th1": th1, "th2": th2,
                    "req_finished": exp(hn, req_hs, bc(v, H, b"finished"), H),
                    "rsp_finished": exp(hn, rsp_hs, bc(v, H, b"finished"), H),
                    "req_hs_key": exp(hn, req_hs, bc(v, 32, b"key"), 32),
                    "req_hs_iv": exp(hn, req_hs, bc(v, 12, b"iv"), 12),
                    "rsp_hs_key": exp(hn, rsp_hs, bc(v, 32, b"key"), 32),
                    "rsp_hs_iv": exp(hn, rsp_hs, bc(v, 12, b"iv"), 12),
                    "req_app": req_app, "rsp_app": rsp_app,
                    "req_app_key": exp(hn, req_app, bc(v, 32, b"key"), 32),
                    "rsp_app_iv": exp(hn, rsp_app, bc(v, 12, b"iv"), 12),
                    "req_app_upd": upd,
                    "req_app_upd_key": exp(hn, upd, bc(v, 32, b"key"), 32),
                }
                out.append("[keysched %s %02x %s]" % (hn, v, "psk" if psk else "dhe"))
                for k, val in rec.items():
                    out.append("%s = %s" % (k, val.hex()))
                out.append("")
    # secured messages: session id, key, iv, counter, app data, padding -> body
    for i, (seq, n, padn) in enumerate(((0, 5, 0), (1, 40, 7), (0x1FFFF, 100, 32), (0x123456789A, 3, 1))):
        key, iv, sid = rb(32), rb(12), rnd.getrandbits(32)
        app = b"\x05" + rb(n)
        pad = rb(padn)
        nonce = bytearray(iv)
        for j in range(8):
            nonce[j] ^= (seq >> (8 * j)) & 0xFF
        pt = struct.pack("<H", len(app)) + app + pad
        hdr = struct.pack("<IHH", sid, seq & 0xFFFF, len(pt) + 16)
        body = hdr + AESGCM(key).encrypt(bytes(nonce), pt, hdr)
        mhdr = struct.pack("<IHH", sid, seq & 0xFFFF, len(app) + 16)
        mac_only = mhdr + app + AESGCM(key).encrypt(bytes(nonce), b"", mhdr + app)
        out.append("[secured %d]" % i)
        for k, val in (("key", key), ("iv", iv), ("app", app), ("pad", pad), ("body", body),
                       ("mac_only", mac_only)):
            out.append("%s = %s" % (k, val.hex()))
        out.append("sid = %08x" % sid)
        out.append("seq = %x" % seq)
        out.append("")
    with open(os.path.join(HERE, "spdm_session.txt"), "w") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    main()
