"""uspdm attest / uspdm golden: the host verifier.

attest runs GET_VERSION, GET_CAPABILITIES, NEGOTIATE_ALGORITHMS, GET_DIGESTS,
GET_CERTIFICATE, CHALLENGE and GET_MEASUREMENTS (count, then all blocks
signed), validates the certificate chain to the trusted root and the SPDM
leaf profile, recomputes every transcript (M1, L1) itself and verifies every
signature with the `cryptography` package, then compares the measurements
with a golden file.
"""
import argparse
import datetime
import json
import os
import sys
import time

from . import certs as certs_mod
from .screen import escape, line as screen_line, say
from .requester import (
    ASYM_NAMES, ASYM_TO_ALG, CERT_MODELS, CAP_MEAS_MASK, CAP_MEAS_SIG, HASHES, MEAS_HASH_NAMES, MEAS_TYPES,
    DeadlineExceeded, ProtocolError, Requester, SpdmError, Unreachable, VerificationError, cap_names, measurement_summary,
    version_str,
)

EXIT_TRUSTED = 0
EXIT_USAGE = 1
EXIT_UNREACHABLE = 2
EXIT_PROTOCOL = 3
EXIT_UNTRUSTED = 4
EXIT_MISMATCH = 5

EXIT_TEXT = """exit status:
  0  trusted: chain valid to the root, every signature verifies, and (with
     --golden) every measurement matches.  Without --golden the measurements
     are signed and verified but reported UNCHECKED; identity alone decides.
  1  usage or local error (bad arguments, unreadable root or golden file)
  2  unreachable: the board did not answer (port missing, timeout), or the
     command did not complete within --deadline seconds
  3  protocol error: malformed/unexpected response or an SPDM ERROR
  4  untrusted identity: chain, profile, digest or signature check failed
  5  measurement mismatch: identity trusted, measurements differ from golden
  130  interrupted (Ctrl-C)
"""

GOLDEN_FORMAT = "uspdm-golden/1"
# overall bound on one attest/golden/session run: a slow honest board (signing on the M0 takes
# seconds; ResponseNotReady waits up to 60 s per request) finishes well within it, a responder that
# keeps answering without ever completing does not keep the verifier busy beyond it
DEFAULT_DEADLINE = 300


class UsageError(Exception):
    pass


# ----------------------------------------------------------------- helpers

# uspdm's standard measurement indices (lib/uspdm/measurements.py, README)
USPDM_INDEX_LABELS = {0x40: "board configuration", 0x41: "MicroPython version", 0x42: "board / hardware",
                      0x43: "security version number", 0x44: "file manifest", 0xFE: "device mode",
                      0xFD: "measurement manifest (OpenPRoT profile: every block above, concatenated)"}
MANIFEST_INDEX = 0x44


def file_names(blocks):
    """{index: path} from uspdm's file manifest (index 0x44, raw, DMTF type 4:
    lines "<index hex> <path>"), so reports can name the file behind a digest.
    Only a label: the digests themselves are what is verified."""
    for b in blocks:
        if b["index"] == MANIFEST_INDEX and b.get("raw_bitstream") and b.get("type") == 4:
            names = {}
            for line in b["value"].decode("ascii", "replace").splitlines():
                parts = line.split(" ", 1)
                try:
                    names[int(parts[0], 16)] = parts[1]
                except (ValueError, IndexError):
                    continue
            return names
    return {}


def _label(block):
    """A human label for a measurement block."""
    t = block.get("type")
    idx = block["index"]
    if idx in USPDM_INDEX_LABELS:
        name = USPDM_INDEX_LABELS[idx]
        if idx == MANIFEST_INDEX and block.get("raw_bitstream"):
            return "%s: %d files named" % (name, len(block["value"].splitlines()))
    elif block.get("file"):
        name = block["file"]
    elif 1 <= idx <= 0x3F and t == 1:
        name = "firmware file #%d" % idx
    else:
        name = MEAS_TYPES.get(t, "type %s" % t) if t is not None else "vendor-defined"
    v = block["value"]
    if block.get("raw_bitstream") and t == 7 and len(v) == 8:
        return "%s: %d" % (name, int.from_bytes(v, "little"))
    if block.get("raw_bitstream") and t == 5 and len(v) == 16:
        f = [int.from_bytes(v[i:i + 4], "little") for i in range(0, 16, 4)]
        return "%s: operational 0x%x/0x%x, device 0x%x/0x%x" % (name, f[1], f[0], f[3], f[2])
    text = _text(block)
    if text is not None:
        return "%s: %s" % (name, text)
    return name


def _text(block):
    if block.get("raw_bitstream"):
        v = block["value"]
        try:
            s = v.decode("ascii")
        except UnicodeDecodeError:
            return None
        if s and all(32 <= ord(c) < 127 for c in s):
            return s
    return None


def block_json(b):
    d = {"index": b["index"], "type": b.get("type"), "type_name": MEAS_TYPES.get(b.get("type"), None),
         "raw_bitstream": b.get("raw_bitstream"), "value": b["value"].hex(), "label": _label(b)}
    return d


class Progress:
    """Progress bar on stderr (only when stderr is a terminal or forced)."""

    def __init__(self, label, enabled, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.t0 = time.monotonic()
        self.drawn = False

    def __call__(self, done, total):
        if not self.enabled or not total:
            return
        width = 30
        fill = int(width * done / total)
        rate = done / max(time.monotonic() - self.t0, 1e-6)
        self.stream.write("\r%s [%s%s] %5d/%d bytes %6.1f kB/s" % (
            self.label, "#" * fill, "." * (width - fill), done, total, rate / 1000))
        self.stream.flush()
        self.drawn = True

    def done(self):
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def load_golden(path):
    try:
        with open(path) as f:
            g = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError("cannot read golden file %s: %s" % (path, e))
    if not isinstance(g, dict) or not isinstance(g.get("measurements"), list):
        raise UsageError("golden file %s has no 'measurements' list" % path)
    if g.get("format") != GOLDEN_FORMAT:
        raise UsageError("golden file %s is not a uspdm golden file (format %r, expected %r: capture one with "
                         "`uspdm golden -o FILE`)" % (path, g.get("format"), GOLDEN_FORMAT))
    if not g["measurements"]:
        raise UsageError("golden file %s holds no measurements: nothing to compare against" % path)
    out = {}
    for m in g["measurements"]:
        try:
            out[int(m["index"])] = m
            bytes.fromhex(m["value"])
        except (KeyError, ValueError, TypeError):
            raise UsageError("golden file %s: bad measurement entry %r" % (path, m))
    return g, out


def compare_golden(blocks, golden):
    """-> (list of per-block verdict dicts, ok bool)."""
    rows = []
    ok = True
    seen = set()
    for b in blocks:
        g = golden.get(b["index"])
        seen.add(b["index"])
        if g is None:
            verdict, why = "UNEXPECTED", "not in golden file"
            ok = False
        elif b["value"].hex() != str(g["value"]).lower():
            verdict, why = "MISMATCH", "differs from the golden value"
            ok = False
        elif g.get("type") is not None and g.get("type") != b.get("type"):
            verdict, why = "MISMATCH", "type %s, expected %s" % (b.get("type"), g.get("type"))
            ok = False
        else:
            verdict, why = "OK", ""
        row = {"index": b["index"], "verdict": verdict, "detail": why}
        if verdict == "MISMATCH":
            row["expected"] = str(g["value"]).lower()   # in full (JSON and the text report)
        rows.append(row)
    for idx in sorted(golden):
        if idx not in seen:
            rows.append({"index": idx, "verdict": "MISSING", "detail": "in golden file, not reported by the device"})
            ok = False
    return rows, ok


def _short(hexstr, n=24):
    hexstr = str(hexstr)
    return hexstr if len(hexstr) <= n else hexstr[:n - 3] + "..."


def load_root(path):
    if path is None:
        ca = certs_mod.LabCA(certs_mod.default_ca_dir())
        path = ca.root_pem_path
        if not os.path.exists(path):
            raise UsageError("no --root given and no lab CA at %s (run `uspdm provision` first)" % path)
    try:
        return certs_mod.load_cert(path), path
    except (OSError, ValueError) as e:
        raise UsageError("cannot load root certificate %s: %s" % (path, e))


# ----------------------------------------------------------------- the flow

def attest(transport, root_cert, golden=None, version=None, slot=0, algs=("p384", "p256"),
           progress=None, requester_opts=None, golden_meta=None, session=False):
    """Run the attestation flow over `transport`. Returns (exit_code, report dict).
    session=True: the measurements are read inside an SPDM secure session
    (KEY_EXCHANGE/FINISH; the transport needs .secured(body, timeout))."""
    rep = {"verdict": None, "exit_code": None, "errors": []}
    if session:
        from .session_requester import SessionRequester

        r = SessionRequester(transport, version=version, algs=algs, **(requester_opts or {}))
    else:
        r = Requester(transport, version=version, algs=algs, **(requester_opts or {}))
    mr = r
    rep["timings"] = r.timings
    stage = "connect"
    try:
        stage = "negotiation"
        r.init_connection()
        rep["connection"] = {
            "version": version_str(r.version),
            "versions_offered": [version_str(v) for v in r.versions],
            "base_asym": ASYM_NAMES.get(r.asym, hex(r.asym)),
            "base_hash": HASHES[r.hash][0],
            "measurement_hash": MEAS_HASH_NAMES.get(r.meas_hash, hex(r.meas_hash)) if r.meas_hash else "none",
            "capabilities": cap_names(r.rsp_flags),
            "ct_exponent": r.ct_exponent,
            "data_transfer_size": r.rsp_dts,
            "max_spdm_msg_size": r.rsp_max_msg,
        }
        alg = ASYM_TO_ALG[r.asym]
        stage = "digests"
        digests = r.get_digests()
        rep["slots_provisioned"] = sorted(digests)
        if slot not in digests:
            raise ProtocolError("slot %d is not provisioned (provisioned: %s)" % (
                slot, ", ".join(str(s) for s in sorted(digests)) or "none"))
        stage = "certificate"
        buf = r.get_certificate(slot, progress=progress)
        if progress is not None and hasattr(progress, "done"):
            progress.done()
        stage = "chain"
        try:
            info = certs_mod.validate_chain(buf, r.hash_size, HASHES[r.hash][1], alg, r.version, root_cert,
                                            digest=digests[slot])
        except certs_mod.ChainError as e:
            raise VerificationError("certificate chain: %s" % e)
        key = info.pop("leaf_key")
        from cryptography.hazmat.primitives import serialization
        rep["identity"] = {
            "slot": slot,
            "subject": info["leaf_subject"],
            "device_info": info["device_info"],
            "key": "%s %s" % (ASYM_NAMES.get(r.asym), key.public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)[1:].hex()),
            "chain_bytes": len(buf),
            "chain": info["certificates"],
            "profile_notes": info["notes"],
            "root": root_cert.subject.rfc4514_string(),
        }
        kpi = r.key_pairs.get(slot) if r.mk_conn else None
        if kpi is not None:
            # SPDM 1.3 multi-key connection: what DIGESTS said of the slot (parsed
            # and checked by the requester); the uses we make of it must be allowed
            rep["identity"]["key_pair_id"] = kpi["key_pair_id"]
            rep["identity"]["cert_model"] = CERT_MODELS.get(kpi["cert_model"], kpi["cert_model"])
            rep["identity"]["key_usage"] = "0x%04X" % kpi["key_usage"]
            if kpi["cert_model"] == 0:
                raise ProtocolError("slot %d: DIGESTS says it holds no certificate (CertModel 0)" % slot)
            if not kpi["key_usage"] & 0x0002:
                raise ProtocolError("slot %d: KeyUsageMask 0x%04X does not allow CHALLENGE" % (slot, kpi["key_usage"]))
            if r.rsp_flags & CAP_MEAS_SIG and not kpi["key_usage"] & 0x0004:
                raise ProtocolError("slot %d: KeyUsageMask 0x%04X does not allow signed measurements" % (
                    slot, kpi["key_usage"]))
        stage = "challenge"
        ch = r.challenge(slot)
        rep["challenge"] = {"signature": "valid", "m1_bytes": ch["m1_len"],
                            "summary_type": ch["summary_type"],
                            "cert_chain_hash": ch["cert_chain_hash"].hex()}
        meas = None
        sess = None
        if session:
            stage = "session"
            sess = r.key_exchange(slot)
            r.finish(sess)
            mr = r.in_session(sess)
            rep["session"] = {"id": "0x%08X" % sess.sid, "handshake": "in the clear" if sess.in_clear else "encrypted",
                              "establishment_ms": round(1000 * (sess.timings.get("KEY_EXCHANGE", 0)
                                                                + sess.timings.get("FINISH", 0)), 1)}
        if r.rsp_flags & CAP_MEAS_MASK:
            stage = "measurements"
            count = mr.measurement_count(slot)
            signed = bool(r.rsp_flags & CAP_MEAS_SIG)
            meas = mr.get_measurements(0xFF, signed=signed, slot=slot)
            names = file_names(meas["blocks"])
            for b in meas["blocks"]:
                if b["index"] in names and b["index"] != MANIFEST_INDEX:
                    b["file"] = names[b["index"]]
            rep["measurements"] = {
                "count_reported": count,
                "signed": signed,
                "signature": "valid" if signed else "not signed (responder cannot sign)",
                "l1_bytes": meas.get("l1_len"),
                "content_changed": meas["content_changed"],
                "blocks": [block_json(b) for b in meas["blocks"]],
            }
            if count != len(meas["blocks"]):
                raise ProtocolError("responder reports %d measurements but sent %d blocks"
                                    % (count, len(meas["blocks"])))
            if ch["summary_hash"] is not None and ch["summary_type"] == 0xFF:
                want = measurement_summary(r.version, r.hash, meas["blocks"], 0xFF)
                if want == ch["summary_hash"]:
                    rep["challenge"]["summary_hash"] = "matches measurements"
                elif r.version <= 0x11 and measurement_summary(r.version, r.hash, meas["blocks"], 0xFF,
                                                               legacy=True) == ch["summary_hash"]:
                    rep["challenge"]["summary_hash"] = "matches measurements (SPDM 1.0/1.1.1 form)"
                else:
                    raise VerificationError("CHALLENGE_AUTH measurement summary hash does not match the measurements")
            if not signed:
                raise VerificationError("measurements are not signed (responder lacks MEAS_CAP with signature)")
        if sess is not None:
            stage = "end session"
            r.end_session(sess)
    except DeadlineExceeded as e:
        return _finish(rep, EXIT_UNREACHABLE, "DEADLINE EXCEEDED", "%s (during %s)" % (e, stage))
    except Unreachable as e:
        return _finish(rep, EXIT_UNREACHABLE, "UNREACHABLE", "%s (during %s)" % (e, stage))
    except ProtocolError as e:
        if e.code is not None:
            rep["spdm_error"] = {"code": e.code, "name": e.name, "data": e.data}
        return _finish(rep, EXIT_PROTOCOL, "PROTOCOL ERROR", "%s (during %s)" % (e, stage))
    except VerificationError as e:
        return _finish(rep, EXIT_UNTRUSTED, "UNTRUSTED", "%s (during %s)" % (e, stage))
    if golden is None:
        rep["golden"] = None
        return _finish(rep, EXIT_TRUSTED, "TRUSTED",
                       "identity verified; measurements signed but UNCHECKED (no --golden)")
    rows, ok = compare_golden(meas["blocks"] if meas else [], golden)
    rep["golden"] = rows
    if not ok:
        bad = sum(1 for x in rows if x["verdict"] != "OK")
        why = "identity verified, but %d measurement(s) differ from the golden file" % bad
        gh = (golden_meta or {}).get("measurement_hash")
        if gh and rep["connection"]["measurement_hash"] not in (gh, "none"):
            why += (" (the golden file holds %s digests, this connection negotiated %s: capture it with the "
                    "same --alg)" % (gh, rep["connection"]["measurement_hash"]))
        return _finish(rep, EXIT_MISMATCH, "MEASUREMENT MISMATCH", why)
    return _finish(rep, EXIT_TRUSTED, "TRUSTED",
                   "identity verified; all %d measurements match the golden file" % len(rows))


def _finish(rep, code, verdict, why):
    rep["exit_code"] = code
    rep["verdict"] = verdict
    rep["reason"] = why
    return code, rep


# ----------------------------------------------------------------- output

def report_json(rep):
    d = dict(rep)
    d["timings"] = [t.as_dict() for t in rep.get("timings", [])]
    return json.dumps(d, indent=2, default=lambda o: o.hex() if isinstance(o, bytes) else str(o))


def report_text(rep, out):
    # every line is escaped as a whole: device text (subjects, file names, error data) cannot move
    # the cursor, erase a line or start a line of its own
    def w(s):
        out.write(screen_line(s))
    if rep.get("transport"):
        w("Transport     %s\n" % rep["transport"])
    c = rep.get("connection")
    if c:
        w("Connection    SPDM %s (responder offers %s)\n" % (c["version"], ", ".join(c["versions_offered"])))
        w("Algorithms    %s, %s; measurement hash %s\n" % (c["base_asym"], c["base_hash"], c["measurement_hash"]))
        dts = ""
        if c.get("data_transfer_size") is not None:
            dts = "; DataTransferSize %d, MaxSPDMmsgSize %d" % (c["data_transfer_size"], c["max_spdm_msg_size"])
        w("Capabilities  %s\n" % " ".join(c["capabilities"]))
        w("              CT 2^%d us = %.1f ms (the longest the board may take to answer a signing request)%s\n"
          % (c["ct_exponent"], (1 << c["ct_exponent"]) / 1000.0, dts))
    if rep.get("session"):
        ss = rep["session"]
        w("Session       %s, handshake %s, established in %.1f ms (measurements read inside it)\n"
          % (ss["id"], ss["handshake"], ss["establishment_ms"]))
    ident = rep.get("identity")
    if ident:
        w("Identity      slot %d: %s\n" % (ident["slot"], ident["subject"]))
        if ident.get("device_info"):
            w("              device-info %s\n" % ident["device_info"])
        k = ident["key"].split(" ")
        w("              key %s %s\n" % (" ".join(k[:-1]), _short(k[-1], 32)))
        if ident.get("key_pair_id") is not None:
            w("              KeyPairID %d, %s, KeyUsageMask %s (SPDM 1.3 multi-key)\n" % (
                ident["key_pair_id"], ident["cert_model"], ident["key_usage"]))
        w("Chain         %d certificates, %d bytes, trusted root %s\n" % (
            len(ident["chain"]), ident["chain_bytes"], ident["root"]))
        for i, cc in enumerate(ident["chain"]):
            role = "root" if i == 0 else ("leaf" if i == len(ident["chain"]) - 1 else "intermediate")
            w("              %-12s %s (until %s)\n" % (role, cc["subject"], cc["not_after"][:10]))
        w("              SPDM leaf profile OK: %s\n" % "; ".join(ident["profile_notes"]))
    ch = rep.get("challenge")
    if ch:
        w("Challenge     CHALLENGE_AUTH signature valid over M1 (%d bytes)%s\n" % (
            ch["m1_bytes"], ("; summary hash " + ch["summary_hash"]) if ch.get("summary_hash") else ""))
    m = rep.get("measurements")
    if not m and ch and rep.get("exit_code") in (EXIT_TRUSTED, EXIT_MISMATCH):
        w("Measurements  none: the responder does not advertise MEAS_CAP\n")
        for g in rep.get("golden") or []:
            w("  0x%02x   %-26s %-36s %s\n" % (g["index"], "", "", "%s (%s)" % (g["verdict"], g["detail"])))
    if m:
        w("Measurements  %d blocks, %s%s\n" % (len(m["blocks"]), "signature valid over L1 (%d bytes)" % m["l1_bytes"]
                                               if m["signed"] and m.get("l1_bytes") else m["signature"],
                                               {0: "", 1: "; content CHANGED: the board says its measurements "
                                                          "changed since its previous signed MEASUREMENTS",
                                                2: "; no content change: the board says its measurements are "
                                                   "the same as in its previous signed MEASUREMENTS"}.get(
                                                   m["content_changed"], "")))
        verdicts = {}
        for g in rep.get("golden") or []:
            verdicts[g["index"]] = g
        w("  %-6s %-26s %-36s %s\n" % ("index", "measurement", "value", "verdict"))
        for b in m["blocks"]:
            name, _, txt = b["label"].partition(": ")
            val = _short(txt, 36) if txt else _short(b["value"], 32)
            if rep.get("golden") is None:
                v = "unchecked"
            else:
                g = verdicts.get(b["index"])
                v = g["verdict"] + (" (%s)" % g["detail"] if g and g["detail"] else "") if g else "?"
            w("  0x%02x   %-26s %-36s %s\n" % (b["index"], _short(name, 26), val, v))
            g = verdicts.get(b["index"])
            if g is not None and g["verdict"] == "MISMATCH":
                # never shortened: two digests that differ must look different on screen
                for tag, hx in (("got", b["value"].hex() if isinstance(b["value"], bytes) else str(b["value"])),
                                ("expected", str(g.get("expected", "")))):
                    for i in range(0, max(len(hx), 1), 64):
                        w("         %-9s%s\n" % (tag if i == 0 else "", hx[i:i + 64]))
        for g in rep.get("golden") or []:
            if g["verdict"] == "MISSING":
                w("  0x%02x   %-26s %-36s %s\n" % (g["index"], "", "", "MISSING (%s)" % g["detail"]))
    t = rep.get("timings") or []
    if t:
        w("Timings\n")
        total = 0.0
        for x in t:
            total += x.seconds
            extra = []
            if x.retries:
                extra.append("%d RESPOND_IF_READY" % x.retries)
            if x.chunks:
                extra.append("%d chunks" % x.chunks)
            w("  %-22s %9.1f ms  %5d -> %5d bytes%s\n" % (x.name, x.seconds * 1000, x.req_len, x.rsp_len,
                                                         ("  (" + ", ".join(extra) + ")") if extra else ""))
        w("  %-22s %9.1f ms\n" % ("total", total * 1000))
    w("Verdict: %s -- %s\n" % (rep["verdict"], rep["reason"]))


# ----------------------------------------------------------------- CLI

class LinkTransport:
    """Adapts link.SerialLink to the requester's transport contract: link.Unreachable
    (no answer) becomes TimeoutError, a non-SPDM answer a ProtocolError."""

    def __init__(self, link, unreachable_exc):
        self.link = link
        self._unreachable = unreachable_exc

    def spdm(self, request, timeout):
        try:
            return self.link.spdm(request, timeout=timeout)
        except self._unreachable as e:
            raise TimeoutError(str(e))
        except ValueError as e:
            raise ProtocolError("transport: %s" % e)

    def secured(self, body, timeout):
        try:
            return self.link.secured(body, timeout=timeout)
        except self._unreachable as e:
            raise TimeoutError(str(e))
        except ValueError as e:
            raise ProtocolError("transport: %s" % e)

    def close(self):
        self.link.close()


def _open_transport(args):
    try:
        from . import link as link_mod
    except ImportError as e:
        raise UsageError("serial link support is not available: %s" % e)
    kw = {"timeout": args.timeout}
    if args.eid is not None:
        kw["eid"] = args.eid
    if getattr(args, "via_i2c", None) is not None:
        kw["via_i2c"] = args.via_i2c   # through a uspdm bridge board to this I2C address
    try:
        link = link_mod.open_link(args.port, **kw)
    except link_mod.Unreachable as e:
        raise Unreachable("%s: %s" % (e, link_mod.likely_fix(args.port)))
    except OSError as e:
        raise Unreachable("cannot open %s: %s" % (args.port, e))
    try:
        link_mod.check_reachable(link, args.port, args.timeout, "uspdm %s" % getattr(args, "command", "attest"))
    except link_mod.Unreachable as e:
        link.close()
        raise Unreachable(str(e))
    try:
        return LinkTransport(link, link_mod.Unreachable)
    except link_mod.Unreachable as e:
        raise Unreachable(str(e))
    except OSError as e:
        raise Unreachable("cannot open %s: %s" % (args.port, e))


def _close(t):
    close = getattr(t, "close", None)
    if close:
        try:
            close()
        except Exception:
            pass


def _requester_opts(args):
    return {"timeout": args.timeout, "deadline": getattr(args, "deadline", DEFAULT_DEADLINE),
            "multi_key": bool(getattr(args, "multi_key", False))}


def _algs(a):
    return ("p384", "p256") if a in (None, "any") else (a,)


def _common(p):
    p.add_argument("--port", required=True, help="serial port of the board (or the simulator's pty)")
    from . import argtypes as T

    p.add_argument("--eid", type=T.eid, default=None, help="MCTP endpoint ID of the board (0 or 8-254; default: the link's)")
    p.add_argument("--via-i2c", type=T.i2c_addr, default=None, metavar="ADDR",
                   help="reach the board over I2C at ADDR through a uspdm bridge board on --port")
    p.add_argument("--root", default=None,
                   help="trusted root certificate, PEM or DER (default: the lab CA, %s)"
                   % os.path.join(certs_mod.default_ca_dir(), "ca.cert.pem"))
    p.add_argument("--version", dest="spdm_version", choices=["1.0", "1.1", "1.2", "1.3"], default=None,
                   help="SPDM version to use (default: the highest both sides support)")
    p.add_argument("--slot", type=int, default=0, choices=range(8), metavar="N", help="certificate slot (0-7)")
    p.add_argument("--alg", choices=["p384", "p256", "any"], default="any",
                   help="signature algorithm to offer (default: both, the board chooses)")
    p.add_argument("--timeout", type=T.seconds, default=5.0, help="seconds to wait for each answer (default 5)")
    p.add_argument("--deadline", type=T.seconds, default=DEFAULT_DEADLINE,
                   help="seconds the whole command may take, however the board answers (default %d)"
                   % DEFAULT_DEADLINE)


def _usage_exit(p):
    def error(message):
        p.print_usage(sys.stderr)
        sys.stderr.write("%s: error: %s\n" % (p.prog, message))
        sys.exit(EXIT_USAGE)
    return error


def register(sub):
    p = sub.add_parser(
        "attest", help="attest a board: identity, signatures, measurements vs golden",
        description="Attest an SPDM responder: negotiate, read and validate its certificate chain to the "
                    "trusted root (SPDM leaf profile included), CHALLENGE it, read its signed measurements, "
                    "verify every signature over transcripts recomputed here, and compare the measurements "
                    "with a golden file.",
        epilog=EXIT_TEXT, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("--golden", default=None, help="golden measurements (from `uspdm golden`)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--progress", action="store_true",
                   help="always draw the certificate progress bar (default: only on a terminal)")
    p.add_argument("--multi-key", action="store_true",
                   help="SPDM 1.3: ask for a multi-key connection when the board negotiates one (its DIGESTS "
                        "then report each slot's KeyPairID, checked and shown)")
    p.add_argument("--session", action="store_true",
                   help="read the measurements inside an SPDM secure session (KEY_EXCHANGE/FINISH)")
    p.error = _usage_exit(p)
    p.set_defaults(func=cmd_attest)

    g = sub.add_parser(
        "golden", help="capture reference measurements from a known-good board (JSON on stdout)",
        description="Capture golden measurements from a known-good board. The board is attested first "
                    "(chain to the root, signatures); the signed measurements are written as JSON.",
        epilog=EXIT_TEXT, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(g)
    g.add_argument("-o", "--output", default=None, help="write to this file instead of stdout")
    g.error = _usage_exit(g)
    g.set_defaults(func=cmd_golden)


def cmd_attest(args, transport=None):
    try:
        root, root_path = load_root(args.root)
        golden_meta, golden = load_golden(args.golden) if args.golden else (None, None)
    except UsageError as e:
        return _usage_error(args, "attest", e)
    progress = Progress("certificate", getattr(args, "progress", False) or sys.stderr.isatty())
    own = transport is None
    try:
        if own:
            transport = _open_transport(args)
    except UsageError as e:
        return _usage_error(args, "attest", e)
    except Unreachable as e:
        code, rep = _finish({"errors": []}, EXIT_UNREACHABLE, "UNREACHABLE", str(e))
        _emit(args, rep)
        return code
    try:
        code, rep = attest(transport, root, golden, version=args.spdm_version, slot=args.slot,
                           algs=_algs(args.alg), progress=progress, golden_meta=golden_meta,
                           requester_opts=_requester_opts(args), session=getattr(args, "session", False))
    finally:
        progress.done()
        if own:
            _close(transport)
    rep["port"] = args.port
    rep["transport"] = transport_name(args)
    rep["root_file"] = root_path
    rep["golden_file"] = args.golden
    _emit(args, rep)
    return code


def transport_name(args):
    """How the verifier reaches the board, for the report."""
    port = str(getattr(args, "port", "") or "")
    via = getattr(args, "via_i2c", None)
    if port.startswith("socket://"):
        base = "TCP %s (the simulator's serial stream, DSP0253 framing)" % port[len("socket://"):]
    else:
        base = "serial %s (MCTP over serial, DSP0253)" % port
    if via is not None:
        return "I2C 0x%02x (MCTP over SMBus/I2C, DSP0237) via the uspdm bridge on %s" % (via, base)
    return base


def _usage_error(args, cmd, e):
    """A usage error: one line on stderr, and with --json a JSON report too
    (scripts parse stdout)."""
    print("uspdm %s: %s" % (cmd, e), file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"verdict": "USAGE ERROR", "reason": str(e), "exit_code": EXIT_USAGE}, indent=2))
    return EXIT_USAGE


def _emit(args, rep):
    if getattr(args, "json", False):
        print(report_json(rep))
    else:
        report_text(rep, sys.stdout)
    sys.stdout.flush()


def cmd_golden(args, transport=None):
    try:
        root, _ = load_root(args.root)
    except UsageError as e:
        print("uspdm golden: %s" % e, file=sys.stderr)
        return EXIT_USAGE
    own = transport is None
    try:
        if own:
            transport = _open_transport(args)
    except UsageError as e:
        print("uspdm golden: %s" % e, file=sys.stderr)
        return EXIT_USAGE
    except Unreachable as e:
        print("uspdm golden: UNREACHABLE -- %s" % e, file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        code, rep = attest(transport, root, None, version=args.spdm_version, slot=args.slot,
                           algs=_algs(args.alg), progress=Progress("certificate", sys.stderr.isatty()),
                           requester_opts=_requester_opts(args))
    finally:
        if own:
            _close(transport)
    if code != EXIT_TRUSTED:
        say("uspdm golden: %s -- %s; no golden file written" % (rep["verdict"], rep["reason"]), file=sys.stderr)
        return code
    m = rep["measurements"]
    doc = {
        "format": GOLDEN_FORMAT,
        "captured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "port": args.port,
        "device": {"subject": rep["identity"]["subject"], "device_info": rep["identity"]["device_info"]},
        "spdm_version": rep["connection"]["version"],
        "measurement_hash": rep["connection"]["measurement_hash"],
        "measurements": [{"index": b["index"], "type": b["type"], "type_name": b["type_name"],
                          "raw_bitstream": b["raw_bitstream"], "value": b["value"], "label": b["label"]}
                         for b in m["blocks"]],
    }
    text = json.dumps(doc, indent=2) + "\n"
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
        print("uspdm golden: %d measurements written to %s" % (len(doc["measurements"]), args.output),
              file=sys.stderr)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return EXIT_TRUSTED
